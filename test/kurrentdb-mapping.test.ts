// KurrentDB's mapping (adapters/store/kurrentdb-mapping.ts), without a server: URLs, stream names,
// expected states, positions, metadata and pointers. Runs everywhere; the store itself runs the
// contract in store-kurrentdb.test.ts when KURRENTDB_URL names a server.
import { type AddressInfo, createServer } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultAppendContext, encodeBatch, storedEvent } from '../adapters/store/batch.js';
import { chainDigest, contentDigest, GENESIS, verifyChain } from '../adapters/store/chain.js';
import {
  actualRevision,
  ckptStream,
  exactState,
  headOf,
  KURRENT_URL_FORM,
  type KurrentRecord,
  kurrentStream,
  POINTER_TYPE,
  parseKurrentUrl,
  planAppend,
  pointerData,
  pointerOf,
  pointerRevision,
  positionsStream,
  revisionOf,
  rowOf,
  rowsOfRun,
  runsOf,
  toKurrentMetadata,
} from '../adapters/store/kurrentdb-mapping.js';
import { openEventStore } from '../adapters/store/open.js';
import { StoreUrlError } from '../adapters/store/url.js';
import { type ChainedRow, CorruptEventError, WrongExpectedRevisionError } from '../domain/event-store.js';
import { InvalidEventError } from '../domain/events/decode.js';
import { forked, marker } from './support/events.js';

const test = suite('KurrentDB mapping (no server)');

test('store URLs: the client gets its connection string, ckpt keeps the prefix, esdb is spelled kurrentdb', () => {
  assert.equal(parseKurrentUrl('kurrentdb://localhost:2113?tls=false'), { connectionString: 'kurrentdb://localhost:2113?tls=false', prefix: 'ckpt', location: 'kurrentdb://localhost:2113?tls=false' });
  assert.equal(parseKurrentUrl('esdb://db1:2113,db2:2113?tls=false&prefix=lab_7&nodePreference=leader'), {
    connectionString: 'kurrentdb://db1:2113,db2:2113?tls=false&nodePreference=leader',
    prefix: 'lab_7',
    location: 'esdb://db1:2113,db2:2113?tls=false&prefix=lab_7&nodePreference=leader',
  });
  assert.equal(parseKurrentUrl('kurrentdb+discover://cluster.example/?prefix=p').connectionString, 'kurrentdb+discover://cluster.example/');
  assert.equal(
    parseKurrentUrl('kurrentdb://db1?tlsCAFile=/etc/ckpt/ca.pem&prefix=p&keepAliveInterval=10000').connectionString,
    'kurrentdb://db1?tlsCAFile=/etc/ckpt/ca.pem&keepAliveInterval=10000',
    'the client’s options as written',
  );
  assert.equal(parseKurrentUrl('esdb+discover://db.example:2113').connectionString, 'kurrentdb+discover://db.example:2113');
  assert.equal(
    parseKurrentUrl('kurrentdb://db1?TLS=false&node_preference=follower').connectionString,
    'kurrentdb://db1?TLS=false&node_preference=follower',
    'option names as loosely as the client reads them',
  );
  const withPassword = parseKurrentUrl('kurrentdb://admin:changeit@db1:2113?tls=false');
  assert.is(withPassword.location, 'kurrentdb://admin:***@db1:2113?tls=false', 'a password never shows in messages');
  assert.is(withPassword.connectionString, 'kurrentdb://admin:changeit@db1:2113?tls=false', 'but reaches the client');
});

test('a bad KurrentDB URL is refused saying what is wrong and what to write', () => {
  for (const [url, says] of [
    ['kurrentdb://', 'names no host'],
    ['kurrentdb://admin:secret@?tls=false', 'names no host'],
    ['kurrentdb://db1:99999', '"db1:99999" is not HOST or HOST:PORT'],
    ['kurrentdb://db1:2113,', '"" is not HOST or HOST:PORT'],
    ['kurrentdb://db1:2113/ckpt', 'KurrentDB has no databases to name in a path; keep stores apart with ?prefix=NAME'],
    ['kurrentdb://db1?prefix=my-jobs', 'prefix must be 1–64 letters, digits or _'],
    ['kurrentdb://db1?prefix=', 'prefix must be'],
    ['kurrentdb://db1?prefix=a&prefix=b', 'gives prefix 2 times'],
    ['eventstore://db1', 'is not a KurrentDB URL: use kurrentdb://HOST:PORT'],
    ['kurrentdb://[::1]:2113', '"[::1]:2113" is not HOST or HOST:PORT'],
    ['kurrentdb://admin:secret@db1?tls=false&tlsverify=false', 'unknown option "tlsverify": the KurrentDB client takes tls, tlsVerifyCert,'],
  ] as const) {
    try {
      parseKurrentUrl(url);
      assert.unreachable(`${url} must be refused`);
    } catch (error) {
      assert.instance(error, StoreUrlError, url);
      assert.match((error as Error).message, says, url);
    }
  }
  const secret = (() => {
    try {
      parseKurrentUrl('kurrentdb://admin:hunter2@db1:2113/x');
    } catch (error) {
      return (error as Error).message;
    }
  })();
  assert.ok(secret && !secret.includes('hunter2') && secret.includes('admin:***@'), 'the refusal shows the URL redacted');
  // What the client's own parser refuses is a StoreUrlError too, without the URL's text.
  assert.throws(
    () => openEventStore('kurrentdb://admin:hunter2@db1?tls=maybe'),
    (e: Error) =>
      e instanceof StoreUrlError && e.message === 'store URL "kurrentdb://admin:***@db1?tls=maybe": the KurrentDB client cannot read it (it expected true or false): use ' + KURRENT_URL_FORM,
  );
  // openEventStore sends these URLs here, before the client library is loaded.
  assert.throws(
    () => openEventStore('esdb://db1:2113/events'),
    (e: Error) => e instanceof StoreUrlError && /no databases/.test(e.message),
  );
  assert.throws(
    () => openEventStore('kurrentdb+gossip://db1'),
    (e: Error) => e instanceof StoreUrlError && /unknown store URL .*kurrentdb:\/\/HOST:PORT/.test(e.message),
  );
});

test('stream names: PREFIX-STREAM both ways, the positions stream apart from every store stream', () => {
  assert.is(kurrentStream('ckpt', 'job-nightly'), 'ckpt-job-nightly');
  assert.is(ckptStream('ckpt', 'ckpt-job-nightly'), 'job-nightly');
  assert.is(ckptStream('ckpt', 'ckpt2-job'), undefined, 'another store’s stream');
  assert.is(ckptStream('ckpt', 'ckpt-'), undefined);
  assert.is(ckptStream('ckpt', positionsStream('ckpt')), undefined);
  assert.is(positionsStream('lab'), 'lab.positions');
  // A stream named like the positions stream stays a store stream.
  assert.is.not(kurrentStream('ckpt', '.positions'), positionsStream('ckpt'));
  assert.is(ckptStream('a', kurrentStream('a', 'b-c')), 'b-c');
  assert.is(ckptStream('a_b', kurrentStream('a', 'b-c')), undefined, 'prefixes cannot hold "-", so stores never share a stream');
});

test('revisions ↔ expected stream state, and positions ↔ pointer revisions', () => {
  assert.is(exactState(undefined), 'no_stream');
  assert.is(exactState(0), 0n);
  assert.is(exactState(41), 41n);
  assert.is(actualRevision(7n), 7);
  assert.is(actualRevision('no_stream'), 'no_stream');
  assert.is(actualRevision(-5n), 'no_stream', 'a deleted stream reads as no stream');
  assert.is(revisionOf(12n), 12);
  assert.throws(() => revisionOf(2n ** 60n), /beyond what ckpt counts/);
  assert.is(headOf(undefined), 0, 'no positions stream: an empty log');
  assert.is(headOf(0), 1);
  assert.is(headOf(1499), 1500);
  assert.is(pointerRevision(1), 0n);
  assert.is(pointerRevision(101), 100n);
  assert.is(pointerRevision(0), 0n, 'from 0 reads from the start, as from 1');
});

/** What the client hands back for an event written with these fields: JSON data and metadata parsed. */
const asRead = (streamId: string, revision: number, e: { id: string; type: string; data: string }, metadata: Record<string, string>): KurrentRecord => ({
  streamId,
  id: e.id,
  revision: BigInt(revision),
  type: e.type,
  data: JSON.parse(e.data),
  metadata: JSON.parse(JSON.stringify(metadata)),
});

test('metadata round trip: what encodeBatch wrote reads back equal, with its digest chain intact', () => {
  const clock = new Date('2026-05-06T07:08:09.010Z');
  const context = { ...defaultAppendContext({ kind: 'node', node: 'n3' }), now: () => clock };
  const encoded = encodeBatch(
    'job-a',
    [{ ...forked(10), metadata: { correlationId: 'corr-1', causationId: 'cause-1', decidedAt: 41 } }, { ...marker('b'), metadata: { actor: { kind: 'user', uid: 1000, user: 'ann' } } }, marker('c')],
    context,
  );
  let previous = GENESIS;
  const written = encoded.map((e, i) => {
    const digest = chainDigest(previous, e.content, i);
    const metadata = toKurrentMetadata(e.metadata, { position: 20 + i, schemaVersion: e.schemaVersion, digest, previous });
    previous = digest;
    return { e, metadata };
  });
  const first = written[0]!.metadata;
  assert.is(first.$correlationId, 'corr-1', 'correlation under KurrentDB’s own key');
  assert.is(first.$causationId, 'cause-1');
  assert.is(first.decidedAt, '41');
  assert.is(first.position, '20');
  assert.ok(
    Object.values(first).every((v) => typeof v === 'string'),
    'flat strings: what a multi-stream append takes',
  );
  assert.is(written[2]!.metadata.$correlationId, undefined);

  let chained = GENESIS;
  written.forEach(({ e, metadata }, i) => {
    const row = rowOf('ckpt', asRead('ckpt-job-a', i, e, metadata));
    assert.equal([row.position, row.stream, row.revision, row.id, row.type, row.schemaVersion], [20 + i, 'job-a', i, e.id, e.type, e.schemaVersion]);
    assert.equal(JSON.parse(row.metadata), JSON.parse(e.metadata), `event ${i}: ckpt's metadata as it was written`);
    assert.equal(JSON.parse(row.data), JSON.parse(e.data));
    const event = storedEvent(row.position, row.stream, row.revision, row.id, row.type, row.schemaVersion, row.data, row.metadata, row.digest);
    const content = contentDigest({ stream: event.stream, id: event.id, type: event.type, schemaVersion: event.schemaVersion, data: event.data, metadata: event.metadata });
    assert.is(content, e.content, `event ${i}: the content digest recomputed from what was read`);
    assert.is(row.previous, chained);
    assert.is(row.digest, chainDigest(chained, content, i));
    chained = row.digest!;
  });
  assert.equal(JSON.parse(rowOf('ckpt', asRead('ckpt-job-a', 0, encoded[0]!, written[0]!.metadata)).metadata), {
    actor: { kind: 'node', node: 'n3' },
    correlationId: 'corr-1',
    causationId: 'cause-1',
    decidedAt: 41,
    recordedAt: clock.toISOString(),
  });
  assert.throws(
    () => toKurrentMetadata('{"actor":{"kind":"user","uid":0},"recordedAt":"x","tenant":"t1"}', { position: 1, schemaVersion: 1, digest: GENESIS, previous: GENESIS }),
    /metadata field tenant has no place/,
  );
});

test('an event written behind the store’s back: no position, no chain, and reading it names it', () => {
  const row = rowOf('ckpt', { streamId: 'ckpt-job-x', id: '3f0c7a52-95c4-4b7e-9d0e-2a4c1b7e6f10', revision: 3n, type: 'DeadlineScheduled', data: marker('z').data, metadata: undefined });
  assert.equal([row.position, row.digest, row.previous, row.stream, row.revision], [0, null, null, 'job-x', 3]);
  const bytes = rowOf('ckpt', {
    streamId: 'ckpt-job-x',
    id: 'i',
    revision: 0n,
    type: 'T',
    data: new TextEncoder().encode('{"a":1}'),
    metadata: new TextEncoder().encode('{"position":"5","actor":"{\\"kind\\":\\"user\\",\\"uid\\":0}","recordedAt":"r"}'),
  });
  assert.equal([bytes.position, bytes.data, JSON.parse(bytes.metadata)], [5, '{"a":1}', { actor: { kind: 'user', uid: 0 }, recordedAt: 'r' }], 'bytes are read as the JSON they hold');
  const damaged = rowOf('ckpt', { streamId: 'ckpt-job-x', id: 'i', revision: 0n, type: 'DeadlineScheduled', data: marker('z').data, metadata: { position: '9', actor: 'not json', recordedAt: 'r' } });
  assert.throws(
    () => storedEvent(damaged.position, damaged.stream, damaged.revision, damaged.id, damaged.type, 1, damaged.data, damaged.metadata).metadata,
    (e: Error) => e instanceof CorruptEventError && /position 9 \(stream job-x, revision 0, type DeadlineScheduled\): field metadata: expected an object with actor/.test(e.message),
  );
});

test('pointers: one per event, gap-free positions, read back in runs of one stream', () => {
  assert.equal(pointerData('job-a', 4), { stream: 'job-a', revision: 4 });
  assert.equal(pointerOf({ revision: 9n, type: POINTER_TYPE, data: pointerData('job-a', 4) }), { position: 10, stream: 'job-a', revision: 4 });
  const bytes = new TextEncoder().encode(JSON.stringify(pointerData('job-a', 4)));
  assert.equal(pointerOf({ revision: 9n, type: POINTER_TYPE, data: bytes }), { position: 10, stream: 'job-a', revision: 4 }, 'the same pointer, should it come back as bytes');
  for (const [type, data] of [
    ['SomethingElse', pointerData('job-a', 4)],
    [POINTER_TYPE, { stream: 'job-a', revision: -1 }],
    [POINTER_TYPE, { stream: 7, revision: 1 }],
    [POINTER_TYPE, 'text'],
  ] as const) {
    const result = pointerOf({ revision: 2n, type, data });
    assert.ok('problem' in result && /position 3: the positions stream holds a .* event that is not a ckpt pointer/.test(result.problem), JSON.stringify(data));
  }
  const pointers = [
    { position: 1, stream: 'a', revision: 0 },
    { position: 2, stream: 'a', revision: 1 },
    { position: 3, stream: 'b', revision: 0 },
    { position: 4, stream: 'a', revision: 2 },
    { position: 5, stream: 'a', revision: 3 },
    { position: 6, stream: 'a', revision: 5 },
  ];
  assert.equal(runsOf(pointers), [
    { stream: 'a', from: 0, count: 2, position: 1 },
    { stream: 'b', from: 0, count: 1, position: 3 },
    { stream: 'a', from: 2, count: 2, position: 4 },
    { stream: 'a', from: 5, count: 1, position: 6 },
  ]);
  assert.equal(runsOf([]), []);
});

test('an append planned from the heads read: exact states, chained to the stream head, placed after the log head; read back, the chain check passes', async () => {
  const context = { ...defaultAppendContext({ kind: 'node', node: 'n1' }), now: () => new Date('2026-01-02T03:04:05.000Z') };
  let ids = 0;
  const newId = () => `00000000-0000-4000-8000-${String(++ids).padStart(12, '0')}`;
  const first = encodeBatch('job-a', [marker('a0'), { ...marker('a1'), metadata: { correlationId: 'c1', decidedAt: 0 } }], context);
  const plan1 = planAppend('job-a', 'no_stream', first, undefined, undefined, newId);
  assert.equal([plan1.stream.state, plan1.positions.state, plan1.result], ['no_stream', 'no_stream', { revision: 1, position: 2 }]);
  assert.equal(
    plan1.positions.events.map((p) => [p.type, p.data, p.id]),
    [
      [POINTER_TYPE, { stream: 'job-a', revision: 0 }, '00000000-0000-4000-8000-000000000001'],
      [POINTER_TYPE, { stream: 'job-a', revision: 1 }, '00000000-0000-4000-8000-000000000002'],
    ],
  );
  assert.equal(
    plan1.stream.events.map((e) => [e.id, e.type, e.metadata!.position, e.metadata!.previous === GENESIS]),
    [
      [first[0]!.id, 'DeadlineScheduled', '1', true],
      [first[1]!.id, 'DeadlineScheduled', '2', false],
    ],
  );
  const rows = plan1.stream.events.map((e, i) => rowOf('ckpt', asRead('ckpt-job-a', i, { ...e, data: JSON.stringify(e.data) }, e.metadata!)));
  // Other streams took positions 3 and 4 (pointer revisions 2 and 3) since.
  const second = encodeBatch('job-a', [marker('a2'), marker('a3')], context);
  const plan2 = planAppend('job-a', 1, second, rows[1], 3, newId);
  assert.equal([plan2.stream.state, plan2.positions.state, plan2.result], [1n, 3n, { revision: 3, position: 6 }]);
  assert.is(plan2.stream.events[0]!.metadata!.previous, rows[1]!.digest, 'chained to the head that was read');
  rows.push(...plan2.stream.events.map((e, i) => rowOf('ckpt', asRead('ckpt-job-a', 2 + i, { ...e, data: JSON.stringify(e.data) }, e.metadata!))));
  assert.equal(
    rows.map((r) => [r.revision, r.position]),
    [
      [0, 1],
      [1, 2],
      [2, 5],
      [3, 6],
    ],
  );

  // The chain check of every store (chain.ts), over the rows as the KurrentDB store reads them.
  const log = (stored: ChainedRow[]) => ({
    streamRevision: async () => 3,
    chain: {
      streams: async (after: string | undefined) => (after === undefined ? [{ name: 'job-a', revision: 3 }] : []),
      rows: async (_: string, from: number, limit: number) => stored.slice(from, from + limit),
      strayRow: async () => undefined,
      chainedByMigration: async () => undefined,
    },
  });
  const intact = await verifyChain(log(rows));
  assert.equal([intact.events, intact.problem], [4, undefined]);
  const altered = rows.map((r) => (r.revision === 2 ? { ...r, data: r.data.replace('a2', 'a9') } : r));
  assert.equal((await verifyChain(log(altered))).problem?.kind, 'altered');

  // An expectation that does not hold is refused before anything is planned; an empty batch only reads.
  assert.throws(
    () => planAppend('job-a', 'no_stream', second, rows[3], 5, newId),
    (e: Error) => e instanceof WrongExpectedRevisionError && e.actual === 3,
  );
  assert.throws(
    () => planAppend('job-b', 'stream_exists', second, undefined, 5, newId),
    (e: Error) => e instanceof WrongExpectedRevisionError && e.actual === 'no_stream',
  );
  assert.equal(planAppend('job-a', 'any', [], rows[3], 5, newId).result, { revision: 3, position: 6 });
  assert.equal(planAppend('job-new', 'any', [], undefined, undefined, newId).result, { revision: -1, position: 0 });
});

test('a run of pointers read back: each event where its pointer says, or the damage named by position', () => {
  const row = (revision: number, position: number): ChainedRow => ({
    position,
    stream: 'job-a',
    revision,
    id: 'i',
    type: 'T',
    schemaVersion: 1,
    data: '{}',
    metadata: '{}',
    digest: null,
    previous: null,
  });
  const run = { stream: 'job-a', from: 4, count: 2, position: 10 };
  assert.equal(
    rowsOfRun(run, [row(4, 10), row(5, 11)]).map((r) => r.position),
    [10, 11],
  );
  assert.throws(
    () => rowsOfRun(run, [row(4, 10)]),
    (e: Error) => e instanceof CorruptEventError && /position 11 \(stream job-a, revision 5, type \?\): the positions stream points at this event, and it is not in its stream/.test(e.message),
  );
  assert.throws(
    () => rowsOfRun(run, [row(4, 10), row(5, 12)]),
    (e: Error) => e instanceof CorruptEventError && /position 11 .*metadata: position 12, but the positions stream has it at 11/.test(e.message),
  );
  assert.throws(
    () => rowsOfRun(run, [row(4, 0), row(5, 11)]),
    (e: Error) => e instanceof CorruptEventError && /position 10 .*metadata: no position: the event was not written by ckpt/.test(e.message),
  );
});

test('the client, where no server answers: each call fails naming the store, the step and what to check', async () => {
  // A port that was just free: connecting is refused at once.
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  const store = openEventStore(`kurrentdb://admin:hunter2@127.0.0.1:${port}?tls=false&maxDiscoverAttempts=1&prefix=nowhere`);
  try {
    assert.is(store.location, `kurrentdb://admin:***@127.0.0.1:${port}?tls=false&maxDiscoverAttempts=1&prefix=nowhere`);
    // A batch refused before anything is sent is a rejection (Promise.allSettled over appends relies on it), not a throw.
    const refused = store.append('bad stream name', [marker('a')]);
    assert.instance(
      await refused.then(
        () => undefined,
        (e: Error) => e,
      ),
      InvalidEventError,
    );
    for (const [call, step] of [
      [() => store.headPosition(), /reading nowhere\.positions/],
      // An append reads both heads at once: whichever read fails first is named.
      [() => store.append('job-a', [marker('a')]), /reading nowhere(-job-a|\.positions)/],
      [() => store.readAll(), /reading nowhere\.positions/],
    ] as const) {
      const error = await (call as () => Promise<unknown>)().then(
        () => undefined,
        (e: Error) => e,
      );
      assert.instance(error, Error, step.source);
      assert.match(error!.message, `kurrentdb://admin:***@127.0.0.1:${port}`);
      assert.match(error!.message, new RegExp(`${step.source}: no KurrentDB server answers there`));
      assert.not.match(error!.message, 'hunter2');
    }
  } finally {
    await store.close();
  }
});

test.run();
