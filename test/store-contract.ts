// The EventStore contract: one suite, run against every adapter (memory, SQLite, PostgreSQL, KurrentDB).
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { firstValueFrom, take, toArray } from 'rxjs';
import type { Test } from 'uvu';
import * as assert from 'uvu/assert';
import { type AppendContext, defaultAppendContext } from '../adapters/store/batch.js';
import { chainDigest, contentDigest, GENESIS, verifyChain } from '../adapters/store/chain.js';
import { openEventStore } from '../adapters/store/open.js';
import { type EventStore, type LeaseHolder, LeaseRefusedError, type LeaseStore, type RecordedEvent, WrongExpectedRevisionError } from '../domain/event-store.js';
import { InvalidEventError } from '../domain/events/decode.js';
import { forked, marker, markerOf } from './support/events.js';
import { until as wait } from './support/wait.js';

/** Cross-process waits get a generous bound. */
const until = (what: string, condition: () => boolean) => wait(what, condition, 30_000, 5);

export interface StoreSubject {
  /** URL of a new, empty store. */
  fresh(): Promise<string>;
  /** Whether a reopened store and other processes see the same log (false for memory:). */
  readonly shared: boolean;
  /** Whether it keeps liveness leases (default true; KurrentDB keeps none). */
  readonly leases?: boolean;
}

const WORKER = fileURLToPath(new URL('./support/store-worker.js', import.meta.url));
const CLI = fileURLToPath(new URL('../adapters/cli/main.js', import.meta.url));

/** A child process whose stdout lines are collected as they come. */
const spawnLines = (args: string[]) => {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  createInterface({ input: child.stdout! }).on('line', (l) => lines.push(l));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, lines, exited, stderr: () => stderr };
};

const readEverything = async (store: EventStore): Promise<RecordedEvent[]> => {
  const all: RecordedEvent[] = [];
  for (let page = await store.readAll({ limit: 500 }); page.length > 0; page = await store.readAll({ from: page[page.length - 1]!.position + 1, limit: 500 })) {
    all.push(...page);
  }
  return all;
};

const assertGlobalOrder = (events: readonly RecordedEvent[]) => {
  for (let i = 1; i < events.length; i++) {
    assert.ok(events[i]!.position > events[i - 1]!.position, `position ${events[i]!.position} after ${events[i - 1]!.position}`);
  }
};

export const storeContract = (test: Test, subject: StoreSubject): void => {
  let store: EventStore;
  let url: string;
  const open = (context?: AppendContext) => openEventStore(url, context);

  test.before.each(async () => {
    url = await subject.fresh();
    store = open();
  });
  test.after.each(async () => {
    await store.close();
  });

  test('appends a batch and reads the stream forwards and backwards', async () => {
    const result = await store.append('job-a', [forked(10), forked(11), forked(12)], { expectedRevision: 'no_stream' });
    assert.is(result.revision, 2);
    const forwards = await store.readStream('job-a');
    assert.equal(
      forwards.map((e) => e.revision),
      [0, 1, 2],
    );
    assert.equal(
      forwards.map((e) => (e.data as { child: { pid: number } }).child.pid),
      [10, 11, 12],
    );
    assert.is(result.position, forwards[2]!.position);
    assert.equal(
      (await store.readStream('job-a', { direction: 'backwards' })).map((e) => e.revision),
      [2, 1, 0],
    );
    assert.equal(
      (await store.readStream('job-a', { from: 1, limit: 1 })).map((e) => e.revision),
      [1],
    );
    assert.equal(
      (await store.readStream('job-a', { direction: 'backwards', from: 1 })).map((e) => e.revision),
      [1, 0],
    );
    assert.equal(await store.readStream('job-none'), []);
    assert.is(await store.streamRevision('job-none'), undefined);
    assert.is(await store.streamRevision('job-a'), 2);
    assert.is(forwards[0]!.type, 'ProcessForked');
    assert.is(forwards[0]!.schemaVersion, 1);
    assert.is(forwards[0]!.stream, 'job-a');
  });

  test('expected revisions: a mismatch is a typed conflict and writes nothing', async () => {
    await store.append('s', [marker('0')], { expectedRevision: 'no_stream' });
    await store.append('s', [marker('1')], { expectedRevision: 0 });
    await store.append('s', [marker('2')], { expectedRevision: 'stream_exists' });
    await store.append('s', [marker('3')], { expectedRevision: 'any' });
    await store.append('t', [marker('t0')], { expectedRevision: 'any' });
    const head = await store.headPosition();
    const attempts: Array<[string, 'no_stream' | 'stream_exists' | number, number | 'no_stream']> = [
      ['s', 'no_stream', 3],
      ['s', 1, 3],
      ['s', 4, 3],
      ['u', 'stream_exists', 'no_stream'],
      ['u', 0, 'no_stream'],
    ];
    for (const [stream, expected, actual] of attempts) {
      try {
        await store.append(stream, [marker('x'), marker('y')], { expectedRevision: expected });
        assert.unreachable(`append to ${stream} expecting ${expected} should conflict`);
      } catch (error) {
        assert.instance(error, WrongExpectedRevisionError);
        const conflict = error as WrongExpectedRevisionError;
        assert.equal([conflict.stream, conflict.expected, conflict.actual], [stream, expected, actual]);
        assert.match(conflict.message, 'nothing was written');
      }
    }
    assert.is(await store.headPosition(), head);
    assert.equal((await store.readStream('s')).map(markerOf), ['0', '1', '2', '3']);
    assert.equal(await store.readStream('u'), []);
  });

  test('a bad event rejects the whole batch, naming the event type, the field and the value', async () => {
    await store.append('job-a', [forked(10)]);
    const bad = { type: 'ProcessExited', data: { node: 'n1', unit: 'u1', process: { pid: 'x', startTime: 1 }, status: 0 } } as never;
    try {
      await store.append('job-a', [forked(11), bad, forked(12)]);
      assert.unreachable('a bad event must be rejected');
    } catch (error) {
      assert.instance(error, InvalidEventError);
      assert.match((error as Error).message, 'ProcessExited (event 2 of 3)');
      assert.match((error as Error).message, 'data.process.pid: expected integer ≥ 1, got "x"');
    }
    for (const [event, text] of [
      [{ type: 'NoSuchEvent', data: {} }, 'expected an event type of the catalogue'],
      [{ type: 'ProcessForked' }, 'data: expected'],
      [{ ...forked(5), id: 'not-a-uuid' }, 'id: expected a UUID'],
      [{ ...forked(5), metadata: { actor: { kind: 'martian' } } }, 'metadata'],
    ] as const) {
      await store.append('job-a', [event as never]).then(
        () => assert.unreachable(`${JSON.stringify(event)} must be rejected`),
        (error: Error) => {
          assert.instance(error, InvalidEventError);
          assert.match(error.message, text);
        },
      );
    }
    await store.append('bad stream name', [forked(5)]).then(
      () => assert.unreachable('a stream name with spaces must be rejected'),
      (error: Error) => assert.match(error.message, 'stream: expected a stream name'),
    );
    await store.append('job-a', [forked(5)], { expectedRevision: -1 as never }).then(
      () => assert.unreachable('a negative expected revision must be rejected'),
      (error: Error) => assert.match(error.message, 'expected revision must be'),
    );
    assert.equal((await readEverything(store)).length, 1);
  });

  test('metadata: actor, correlation, causation, decidedAt, recordedAt from the adapter clock, given ids kept', async () => {
    await store.close();
    const clock = new Date('2026-03-04T05:06:07.089Z');
    store = open({ ...defaultAppendContext({ kind: 'node', node: 'n7' }), now: () => clock });
    const id = '3f0c7a52-95c4-4b7e-9d0e-2a4c1b7e6f10';
    await store.append('job-a', [
      { ...marker('a'), id, metadata: { correlationId: 'corr-1', causationId: 'cause-1', decidedAt: 41 } },
      { ...marker('b'), metadata: { actor: { kind: 'user', uid: 1000, user: 'ann' } } },
    ]);
    const [a, b] = await store.readStream('job-a');
    assert.is(a!.id, id);
    assert.equal(a!.metadata, { actor: { kind: 'node', node: 'n7' }, correlationId: 'corr-1', causationId: 'cause-1', decidedAt: 41, recordedAt: clock.toISOString() });
    assert.equal(b!.metadata.actor, { kind: 'user', uid: 1000, user: 'ann' });
    assert.match(b!.id, /^[0-9a-f-]{36}$/);
    assert.is.not(b!.id, a!.id);
  });

  test('readStream pages a long stream backwards from its end, and forwards from any revision', async () => {
    for (let i = 0; i < 25; i++)
      await store.append(
        'job-long',
        Array.from({ length: 100 }, (_, j) => marker(`${i * 100 + j}`)),
      );
    await store.append('job-other', [marker('other')]);
    const backwards: number[] = [];
    for (let page = await store.readStream('job-long', { direction: 'backwards', limit: 700 }); page.length > 0; ) {
      backwards.push(...page.map((e) => e.revision));
      const from = page[page.length - 1]!.revision - 1;
      page = from < 0 ? [] : await store.readStream('job-long', { direction: 'backwards', from, limit: 700 });
    }
    assert.equal(
      backwards,
      Array.from({ length: 2500 }, (_, i) => 2499 - i),
    );
    assert.equal((await store.readStream('job-long', { direction: 'backwards', limit: 3 })).map(markerOf), ['2499', '2498', '2497']);
    assert.equal(
      (await store.readStream('job-long', { direction: 'backwards', from: 10, limit: 2 })).map((e) => e.revision),
      [10, 9],
    );
    assert.equal(
      (await store.readStream('job-long', { direction: 'backwards', from: 9999, limit: 2 })).map((e) => e.revision),
      [2499, 2498],
    );
    assert.equal(
      (await store.readStream('job-long', { from: 2498, limit: 10 })).map((e) => e.revision),
      [2498, 2499],
    );
    assert.equal(await store.readStream('job-nothing', { direction: 'backwards', limit: 5 }), []);
  });

  test('readAll pages through interleaved streams in global order', async () => {
    for (let round = 0; round < 5; round++) {
      for (const stream of ['job-a', 'job-b', 'node-n1']) await store.append(stream, [marker(`${stream} ${round} 0`), marker(`${stream} ${round} 1`)]);
    }
    const all = await readEverything(store);
    assert.is(all.length, 30);
    assertGlobalOrder(all);
    assert.is(markerOf(all[0]!), 'job-a 0 0');
    assert.is(markerOf(all[29]!), 'node-n1 4 1');
    assert.is(await store.headPosition(), all[29]!.position);
    const page = await store.readAll({ from: all[10]!.position, limit: 7 });
    assert.equal(
      page.map((e) => e.position),
      all.slice(10, 17).map((e) => e.position),
    );
    for (const stream of ['job-a', 'job-b', 'node-n1']) {
      assert.equal(
        all.filter((e) => e.stream === stream).map((e) => e.revision),
        [...Array(10).keys()],
      );
    }
  });

  test('concurrent appends from one process: every stream contiguous, positions unique', async () => {
    await Promise.all(Array.from({ length: 40 }, (_, i) => store.append(`job-${i % 4}`, [marker(`${i} a`), marker(`${i} b`), marker(`${i} c`)])));
    const all = await readEverything(store);
    assert.is(all.length, 120);
    assertGlobalOrder(all);
    for (let s = 0; s < 4; s++) {
      const stream = all.filter((e) => e.stream === `job-${s}`);
      assert.equal(
        stream.map((e) => e.revision),
        [...Array(30).keys()],
      );
      // A batch stays together and in order within its stream.
      for (let i = 0; i < 30; i += 3)
        assert.equal(
          stream.slice(i, i + 3).map((e) => markerOf(e).split(' ')[1]),
          ['a', 'b', 'c'],
        );
    }
  });

  test('appends issued together succeed or fail each on its own', async () => {
    await store.append('job-taken', [marker('first')]);
    const outcomes = await Promise.allSettled([
      store.append('job-1', [marker('1a'), marker('1b')]),
      store.append('job-taken', [marker('conflict')], { expectedRevision: 'no_stream' }),
      store.append('job-2', [marker('2a')], { expectedRevision: 'no_stream' }),
      store.append('job-1', [{ type: 'ProcessForked', data: {} } as never]),
      store.append('job-1', [marker('1c')], { expectedRevision: 1 }),
    ]);
    assert.equal(
      outcomes.map((o) => o.status),
      ['fulfilled', 'rejected', 'fulfilled', 'rejected', 'fulfilled'],
    );
    assert.instance((outcomes[1] as PromiseRejectedResult).reason, WrongExpectedRevisionError);
    assert.instance((outcomes[3] as PromiseRejectedResult).reason, InvalidEventError);
    assert.equal((await store.readStream('job-1')).map(markerOf), ['1a', '1b', '1c']);
    assert.equal((await store.readStream('job-taken')).map(markerOf), ['first']);
    assert.equal((await store.readStream('job-2')).map(markerOf), ['2a']);
  });

  test('subscribeAll catches up, then stays live, in order, without gaps or duplicates', async () => {
    for (let i = 0; i < 1500; i += 250)
      await store.append(
        `job-${i % 3}`,
        Array.from({ length: 250 }, (_, k) => marker(`old ${i + k}`)),
      );
    let caughtUpAfter = -1;
    const received: RecordedEvent[] = [];
    const done = new Promise<void>((resolve, reject) => {
      const sub = store.subscribeAll({ from: 101, onCaughtUp: () => (caughtUpAfter = received.length) }).subscribe({
        next: (e) => {
          received.push(e);
          if (received.length === 1400 + 300) {
            sub.unsubscribe();
            resolve();
          }
        },
        error: reject,
      });
    });
    await until('catch-up', () => caughtUpAfter >= 0);
    assert.is(caughtUpAfter, 1400);
    for (let i = 0; i < 300; i += 30) {
      await Promise.all([
        store.append(
          'job-live',
          Array.from({ length: 15 }, (_, k) => marker(`new ${i + k}`)),
        ),
        store.append(
          'job-other',
          Array.from({ length: 15 }, (_, k) => marker(`new ${i + 15 + k}`)),
        ),
      ]);
    }
    await done;
    assertGlobalOrder(received);
    assert.equal(
      received.map((e) => e.position),
      (await readEverything(store)).slice(100).map((e) => e.position),
    );
  });

  test('subscribeStream delivers one stream by revision, from a revision, then live', async () => {
    await store.append('job-a', [marker('a0'), marker('a1'), marker('a2')]);
    await store.append('job-b', [marker('b0')]);
    const events = firstValueFrom(store.subscribeStream('job-a', { from: 1 }).pipe(take(4), toArray()));
    await store.append('job-b', [marker('b1')]);
    await store.append('job-a', [marker('a3'), marker('a4')]);
    assert.equal((await events).map(markerOf), ['a1', 'a2', 'a3', 'a4']);
  });

  test('every event carries a digest chained to the previous event of its stream; the chain check finds the log intact', async () => {
    // Concurrent appends to different streams, batches of several sizes, some with their own metadata.
    await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        for (let b = 0; b < 5; b++) {
          const events = Array.from({ length: 1 + ((i + b) % 4) }, (_, k) => marker(`s${i} b${b} e${k}`));
          if (b === 2) events[0] = { ...events[0]!, metadata: { correlationId: `c${i}`, decidedAt: 3 } };
          await store.append(`job-chain-${i}`, events);
        }
      }),
    );
    const all = await readEverything(store);
    const previous = new Map<string, string>();
    for (const e of all) {
      // Recomputed here from the event as read back: what was stored is what was chained.
      const content = contentDigest({ stream: e.stream, id: e.id, type: e.type, schemaVersion: e.schemaVersion, data: e.data, metadata: e.metadata });
      assert.is(e.digest, chainDigest(previous.get(e.stream) ?? GENESIS, content, e.revision), `digest of ${e.stream}#${e.revision}`);
      previous.set(e.stream, e.digest!);
    }
    const rows = await store.chain.rows('job-chain-3', 1, 2);
    assert.equal(
      rows.map((r) => [r.revision, r.previous]),
      [
        [1, all.find((e) => e.stream === 'job-chain-3' && e.revision === 0)!.digest],
        [2, rows[0]!.digest],
      ],
    );
    const report = await verifyChain(store);
    assert.equal(
      { events: report.events, streams: report.streams, problem: report.problem, damagedStreams: report.damagedStreams },
      { events: all.length, streams: 6, problem: undefined, damagedStreams: 0 },
    );
    assert.is(report.chainedByMigration, undefined, 'a log written with the chain needs no migration');
    const withHeads = await verifyChain(store, { heads: true });
    assert.equal(
      withHeads.heads!.map((h) => [h.stream, h.digest]),
      [...previous].sort(([a], [b]) => (a < b ? -1 : 1)),
    );
  });

  /** Records an agent start on the node, as an agent does before it renews, and the holder it names. */
  const registered = async (node: string, pid: number): Promise<LeaseHolder> => {
    await store.append(`node-${node}`, [{ type: 'NodeAgentStarted', data: { node, agent: { pid, startTime: pid * 10 }, version: 'test' } }]);
    return { pid, startTime: pid * 10, bootId: 'boot-1', hostname: `host-${node}` };
  };
  const leasesOf = (s: EventStore): LeaseStore => {
    assert.ok(s.leases, `${s.location} keeps leases`);
    return s.leases;
  };
  const refusal = (promise: Promise<unknown>): Promise<Error> =>
    promise.then(
      () => assert.unreachable('the renewal must be refused') as never,
      (error: Error) => error,
    );

  if (subject.leases === false) {
    test('keeps no liveness leases (ckpt nodes judges without them)', () => {
      assert.is(store.leases, undefined);
    });
  } else {
    test('leases: renewed by the agent the log records, listed by node, expire after their ttl by the store clock, renewed again, released', async () => {
      const leases = leasesOf(store);
      const a = await registered('n1', 101);
      const b = await registered('n2', 202);
      const first = await leases.renew('n1', a, 60_000);
      assert.equal([first.node, first.holder, first.expired], ['n1', a, false]);
      assert.ok(Date.parse(first.expiresAt) > Date.parse(first.renewedAt));
      const again = await leases.renew('n1', a, 60_000);
      assert.ok(Date.parse(again.renewedAt) >= Date.parse(first.renewedAt), 'a renewal moves the lease on');
      await leases.renew('n2', b, 200);
      const lapsed = await wait('the short lease to expire', async () => (await leases.list()).find((l) => l.node === 'n2' && l.expired) && (await leases.list()), 30_000, 20);
      assert.equal(
        lapsed.map((l) => [l.node, l.expired]),
        [
          ['n1', false],
          ['n2', true],
        ],
        'one row per node, by name; only the short one expired',
      );
      const n2 = lapsed[1]!;
      assert.equal(n2.holder, b);
      assert.ok(Date.parse(n2.asOf) >= Date.parse(n2.expiresAt), 'judged by the store clock, at or past its expiry');
      const renewed = await leases.renew('n2', b, 60_000);
      assert.is(renewed.expired, false);
      assert.equal(
        (await leases.list()).map((l) => [l.node, l.expired]),
        [
          ['n1', false],
          ['n2', false],
        ],
        'a lost node renewing is alive again',
      );
      await leases.release('n1');
      assert.equal(
        (await leases.list()).map((l) => l.node),
        ['n2'],
        'released on a clean stop',
      );
      await leases.release('n1'); // twice is harmless
      assert.is((await store.readAll()).length, 2, 'renewals and releases leave the log as it was');
    });

    test('leases: refused for a node whose agent start the log does not record, for another holder, and for bad input', async () => {
      const leases = leasesOf(store);
      const unregistered = await refusal(leases.renew('nowhere', { pid: 1, startTime: 10, bootId: 'b', hostname: 'h' }, 1000));
      assert.instance(unregistered, LeaseRefusedError);
      assert.match(unregistered.message, 'the log records no agent start on nowhere');
      const holder = await registered('n1', 101);
      const older = await refusal(leases.renew('n1', { ...holder, pid: 99, startTime: 990 }, 1000));
      assert.instance(older, LeaseRefusedError);
      assert.match(older.message, 'pid 101');
      for (const [node, ttl, expected] of [
        ['N 1', 1000, 'node name "N 1" is not valid'],
        ['n1', 0, 'ttl must be'],
        ['n1', 1.5, 'ttl must be'],
      ] as const) {
        const bad = await refusal(leases.renew(node, holder, ttl));
        assert.instance(bad, LeaseRefusedError);
        assert.match(bad.message, expected);
      }
      assert.equal(await leases.list(), [], 'nothing refused was kept');
    });

    if (subject.shared) {
      test('leases: another connection sees the lease and its release', async () => {
        const holder = await registered('n1', 101);
        await leasesOf(store).renew('n1', holder, 60_000);
        const other = open();
        try {
          assert.equal(
            (await leasesOf(other).list()).map((l) => [l.node, l.holder, l.expired]),
            [['n1', holder, false]],
          );
          await leasesOf(store).release('n1');
          assert.equal(await leasesOf(other).list(), []);
        } finally {
          await other.close();
        }
      });
    }
  }

  if (!subject.shared) return;

  test('a reopened store sees every committed event', async () => {
    await store.append('job-a', [marker('kept')]);
    await store.close();
    store = open();
    assert.equal((await store.readStream('job-a')).map(markerOf), ['kept']);
  });

  test('two processes race to create the same streams: exactly one wins each', async () => {
    const start = String(Date.now() + 500);
    const racers = [0, 1].map(() => spawnLines([WORKER, url, 'race', 'race', '50', start]));
    const codes = await Promise.all(racers.map((r) => r.exited));
    assert.equal(codes, [0, 0], racers.map((r) => r.stderr()).join('\n'));
    for (let k = 0; k < 50; k++) {
      const wins = racers.filter((r) => r.lines.includes(`won ${k}`)).length;
      const losses = racers.filter((r) => r.lines.includes(`lost ${k}`)).length;
      assert.equal([wins, losses], [1, 1], `stream race-${k}`);
      assert.is((await store.readStream(`race-${k}`)).length, 1);
    }
  });

  test('two processes append with exact revisions while a third follows `ckpt log --follow --json`', async () => {
    await store.append('job-shared', [marker('first')]);
    const follower = spawnLines([CLI, 'log', '--follow', '--json', '--store', url]);
    try {
      const writers = ['left', 'right'].map((tag) => spawnLines([WORKER, url, 'exact', 'job-shared', '150', tag]));
      const codes = await Promise.all(writers.map((w) => w.exited));
      assert.equal(codes, [0, 0], writers.map((w) => w.stderr()).join('\n'));
      const stream = await store.readStream('job-shared', { limit: 1000 });
      assert.is(stream.length, 301);
      assert.equal(
        stream.map((e) => e.revision),
        [...Array(301).keys()],
      );
      for (const tag of ['left', 'right']) {
        assert.equal(
          stream.filter((e) => markerOf(e).startsWith(tag)).map(markerOf),
          Array.from({ length: 150 }, (_, i) => `${tag} ${i}`),
        );
      }
      await until('the follower to print every event', () => follower.lines.length >= 301);
      follower.child.kill('SIGTERM');
      assert.is(await follower.exited, 0, follower.stderr());
      const followed = follower.lines.map((l) => JSON.parse(l) as { position: number; revision: number });
      assert.equal(
        followed.map((e) => e.position),
        stream.map((e) => e.position),
      );
    } finally {
      follower.child.kill('SIGKILL');
    }
  });

  test('kill -9 during appends loses no committed event and never leaves half a batch', async () => {
    const size = 400;
    const committed = new Set<string>();
    for (let round = 0; round < 4; round++) {
      const writer = spawnLines([WORKER, url, 'batches', 'job-crash', String(size), `r${round}`]);
      await until('two committed batches', () => writer.lines.length >= 2);
      await new Promise((r) => setTimeout(r, Math.random() * 40));
      writer.child.kill('SIGKILL');
      await writer.exited;
      for (const line of writer.lines) committed.add(`r${round} ${line.split(' ')[1]}`);
    }
    const stream = await store.readStream('job-crash', { limit: 100_000 });
    assert.equal(
      stream.map((e) => e.revision),
      [...Array(stream.length).keys()],
    );
    const perBatch = new Map<string, number>();
    for (const e of stream) {
      const [round, batch] = markerOf(e).split(' ');
      perBatch.set(`${round} ${batch}`, (perBatch.get(`${round} ${batch}`) ?? 0) + 1);
    }
    for (const [batch, count] of perBatch) assert.is(count, size, `batch ${batch} is whole`);
    for (const batch of committed) assert.ok(perBatch.has(batch), `committed batch ${batch} survived`);
  });
};
