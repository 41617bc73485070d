// The node agent's step table (adapters/agent/steps): every command the coordinator can ask of a
// node is answered through the same outcome constructors the agent records with, and the
// coordinator and the agent's own fold of pending commands take those outcomes as the answer.
// The agent is played by the test (no process runs): what is checked is the contract between the
// handlers' outcomes, the event catalogue and the deciders, for every step kind.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { FrozenUnits } from '../adapters/agent/steps/frozen-units.js';
import { type Command, done, failed, handlerFor, type Outcome } from '../adapters/agent/steps/step.js';
import { stepTable } from '../adapters/agent/steps/step-table.js';
import { CriuCheckpointer } from '../adapters/checkpointers/criu-checkpointer.js';
import { MemoryEventStore } from '../adapters/store/memory.js';
import { evolveCommands, noCommands, type PendingCommand, pendingOn, STEP_OUTCOMES, type Step } from '../domain/checkpoint-commands.js';
import { decodeEvent } from '../domain/events/decode.js';
import type { Failure } from '../domain/failure.js';
import { jobCoordinator } from '../domain/job-coordinator.js';
import { worldOf } from './support/coordinator.js';

const test = suite('job steps');
const world = worldOf(jobCoordinator('j'));
type World = Awaited<ReturnType<typeof world>>;

const failure: Failure = { class: 'internal', message: 'criu said no' };
/** How the played agent answers each step (a step left out is not expected in that scenario). */
type Answers = { readonly [S in Step]?: (c: Command<S>) => Outcome<S> };

const pendingIn = async (w: World): Promise<PendingCommand[]> => {
  const events = await w.store.readStream('job-j', { limit: 10_000 });
  return pendingOn(events.reduce(evolveCommands, noCommands), 'n1');
};

/** Answers what the coordinator asks of n1 until nothing is pending; returns the steps answered. */
const play = async (w: World, answers: Answers): Promise<Step[]> => {
  const answered: Step[] = [];
  for (let c = (await pendingIn(w))[0]; c; c = (await pendingIn(w))[0]) {
    const answer = answers[c.step] as ((c: PendingCommand) => Outcome<Step>) | undefined;
    if (!answer) assert.unreachable(`the coordinator asked for ${c.key}, which this scenario does not expect`);
    const outcome = answer!(c);
    assert.ok(STEP_OUTCOMES[c.step].includes(outcome.type as never), `${outcome.type} answers ${c.step}`);
    // Recorded as the agent records it: it must decode with the catalogue's codec, identity and all.
    const decoded = decodeEvent(outcome.type, outcome.data);
    if (E.isLeft(decoded)) assert.unreachable(`${c.key}: ${decoded.left.message}`);
    await w.said({ ...outcome, metadata: { causationId: c.request.id } });
    assert.not.ok(
      (await pendingIn(w)).some((p) => p.key === c!.key),
      `${outcome.type} answers ${c.key}`,
    );
    answered.push(c.step);
  }
  return answered;
};

const checkpointRequest = (stop: boolean) => ({ type: 'CheckpointRequested' as const, data: { request: 'r1', stop, timeoutMs: 30_000 } });
const dumpedAndCommitted: Answers = {
  freeze: (c) => done(c, { processes: 3, durationMs: 1 }),
  dump: (c) => done(c, { files: 3, bytes: 100, durationMs: 5 }),
  verify: (c) => done(c, { captured: [100, 101, 102] }),
  commit: (c) => done(c, { units: ['u1'], files: 3, bytes: 100, durationMs: 1, manifest: 'b'.repeat(64) }),
};
const seen = new Set<Step>();

test('a committed checkpoint, then a restart whose images fail their check and is rolled back', async () => {
  const w = await world(['n1']);
  await w.said(checkpointRequest(false));
  const checkpoint = await play(w, { ...dumpedAndCommitted, thaw: (c) => done(c, { frozenMs: 9 }) });
  assert.equal(checkpoint, ['freeze', 'dump', 'verify', 'commit', 'thaw']);
  assert.equal((await w.last('CheckpointCompleted'))!.data, { version: 1, outcome: 'thawed' });
  await w.said({ type: 'RestartRequested', data: { request: 'r2', version: null, placement: [], timeoutMs: 30_000 } });
  const restart = await play(w, {
    'restore-prepare': (c) => done(c, { cgroups: [], pidNamespace: false, waitedMs: 3 }),
    'images-verify': (c) => failed(c, 'u0/pages-1.img: SHA-256 differs', failure),
    restore: (c) => failed(c, 'the images failed their check', failure),
    rollback: (c) => done(c, {}),
  });
  assert.equal(restart, ['restore-prepare', 'images-verify', 'restore', 'rollback']);
  assert.match((await w.last('RestartFailed'))!.data.reason, 'SHA-256 differs');
  for (const s of [...checkpoint, ...restart]) seen.add(s);
});

test('a restart that succeeds, and a --stop checkpoint that stops the unit', async () => {
  const w = await world(['n1']);
  await w.said(checkpointRequest(true));
  const checkpoint = await play(w, { ...dumpedAndCommitted, stop: (c) => done(c, {}) });
  assert.equal(checkpoint, ['freeze', 'dump', 'verify', 'commit', 'stop']);
  assert.equal((await w.last('CheckpointCompleted'))!.data, { version: 1, outcome: 'stopped' });
  await w.said({ type: 'RestartRequested', data: { request: 'r2', version: null, placement: [], timeoutMs: 30_000 } });
  const restart = await play(w, {
    'restore-prepare': (c) => done(c, { cgroups: [], pidNamespace: true, waitedMs: 0 }),
    'images-verify': (c) => done(c, { files: 3, bytes: 100 }),
    restore: (c) => done(c, { processes: [{ was: { pid: 100, startTime: 1000 }, now: { pid: 4100, startTime: 9000 }, nsPid: 1 }], durationMs: 40 }),
  });
  assert.equal(restart, ['restore-prepare', 'images-verify', 'restore']);
  assert.ok(await w.last('RestartCommitted'));
  for (const s of [...checkpoint, ...restart]) seen.add(s);
});

test('a failed freeze and a failed abort end the checkpoint aborted, each answered with its own failure', async () => {
  const w = await world(['n1']);
  await w.said(checkpointRequest(false));
  const steps = await play(w, { freeze: (c) => failed(c, 'the unit did not freeze in time', { class: 'timeout', message: 'froze too slowly' }), abort: (c) => failed(c, 'could not thaw', failure) });
  assert.equal(steps, ['freeze', 'abort']);
  assert.equal((await w.types()).filter((t) => t === 'UnitAbortFailed').length, 1);
  for (const s of steps) seen.add(s);
});

test('two committed checkpoints, an images check asked through the log, then a prune: each node answers its own part', async () => {
  const w = await world(['n1']);
  for (const request of ['r1', 'r2']) {
    await w.said({ ...checkpointRequest(false), data: { ...checkpointRequest(false).data, request } });
    assert.equal(await play(w, { ...dumpedAndCommitted, thaw: (c) => done(c, { frozenMs: 7 }) }), ['freeze', 'dump', 'verify', 'commit', 'thaw']);
  }
  await w.said({ type: 'ImagesVerifyRequested', data: { request: 'a1', version: 1, node: 'n1' } });
  assert.equal(await play(w, { 'images-audit': (c) => done(c, { files: 3, bytes: 100 }) }), ['images-audit']);
  await w.said({ type: 'PruneRequested', data: { request: 'p1', keep: 1, timeoutMs: 30_000 } });
  assert.equal(await play(w, { prune: (c) => done(c, { bytes: 100 }) }), ['prune']);
  assert.equal((await w.last('CheckpointPruned'))!.data, { version: 1, bytes: 100, node: 'n1' });
  for (const s of ['images-audit', 'prune'] as const) seen.add(s);
});

test('the scenarios above answered every step kind there is', () => {
  assert.equal([...seen].sort(), Object.keys(STEP_OUTCOMES).sort());
});

test('the agent has a handler for every step; a step it does not know is refused, saying which and what to do', () => {
  const home = mkdtempSync(join(tmpdir(), 'ckpt-steps-'));
  try {
    const unused = () => {
      throw new Error('not called: this test only looks handlers up');
    };
    const table = stepTable(
      {
        store: new MemoryEventStore(),
        node: 'n1',
        checkpointer: new CriuCheckpointer(undefined, join(home, 'images')),
        imagesRoot: join(home, 'images'),
        workRoot: join(home, 'restarts'),
        emit: unused,
        reconcileUnit: unused,
        tracked: unused,
        restartCgroups: unused,
        ownCgroups: unused,
        adoptRestored: unused,
        log: () => {},
      },
      new FrozenUnits(() => {}),
    );
    for (const step of Object.keys(STEP_OUTCOMES) as Step[]) assert.type(handlerFor(table, step), 'function', step);
    for (const unknown of ['migrate', 'toString', '__proto__', 'constructor']) {
      assert.throws(
        () => handlerFor(table, unknown as Step),
        (e: Error) => e.message.includes(`no handler for step '${unknown}'`) && e.message.includes('upgrade the agent'),
        unknown,
      );
    }
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test.run();
