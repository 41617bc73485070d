// The RestartCoordinator (with the checkpoint one, as the job's coordinator), given histories:
// node agents' outcomes are appended by the test, decisions by a loop playing the coordinator.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { rederive } from '../domain/decider.js';
import type { ProposedEvent } from '../domain/event-store.js';
import { jobCoordinator } from '../domain/job-coordinator.js';
import { p, worldOf } from './support/coordinator.js';

const test = suite('restart coordinator');
const coordinator = jobCoordinator('j');
const world = worldOf(coordinator);

const ck = (type: string, extra: object = {}): ProposedEvent => ({ type, data: { version: 1, unit: 'u0', node: 'n1', ...extra } }) as ProposedEvent;
const rs = (type: string, extra: object = {}): ProposedEvent => ({ type, data: { restart: 1, unit: 'u0', node: 'n1', ...extra } }) as ProposedEvent;
const restartRequest = (extra: object = {}): ProposedEvent => ({ type: 'RestartRequested', data: { request: 'r1', version: null, placement: [], timeoutMs: 30_000, ...extra } }) as ProposedEvent;

/** A job on n1 with a committed checkpoint v1. */
const committed = async () => {
  const w = await world(['n1']);
  await w.said({ type: 'CheckpointRequested', data: { request: 'c1', stop: false, timeoutMs: 30_000 } });
  await w.said(ck('UnitFrozen', { processes: 3, durationMs: 1 }));
  await w.said(ck('UnitDumped', { files: 3, bytes: 100, durationMs: 5 }));
  await w.said(ck('UnitVerified', { captured: [100, 101, 102], processes: [p(100), p(101), p(102)] }));
  await w.said({ type: 'CheckpointCommitted', data: { version: 1, files: 3, bytes: 100, durationMs: 1, manifest: 'b'.repeat(64) } });
  await w.said(ck('UnitThawed', { frozenMs: 9 }));
  return w;
};
const count = async (w: Awaited<ReturnType<typeof world>>, type: string) => (await w.types()).filter((t) => t === type).length;

test('a restart: plan from the latest committed version, prepare, then check and restore side by side, commit', async () => {
  const w = await committed();
  await w.said(restartRequest());
  assert.equal((await w.last('RestartPlanned'))!.data, { restart: 1, request: 'r1', version: 1, units: [{ unit: 'u0', node: 'n1', images: 'j/v1/u0', limits: {} }] });
  assert.equal((await w.last('DeadlineScheduled'))!.data.deadline, 'restart-r1');
  assert.ok(await w.last('UnitRestorePrepareRequested'));
  assert.not.ok(await w.last('UnitRestoreRequested'), 'nothing restored before every unit is prepared');
  await w.said(rs('UnitRestorePrepared', { cgroups: [], pidNamespace: false, waitedMs: 3 }));
  assert.equal([await count(w, 'UnitImagesVerifyRequested'), await count(w, 'UnitRestoreRequested')], [1, 1]);
  await w.said(rs('UnitRestored', { processes: [{ was: p(100), now: p(100), nsPid: null }], durationMs: 50 }));
  assert.not.ok(await w.last('RestartCommitted'), 'not committed before the images passed their check');
  await w.said(rs('UnitImagesVerified', { files: 3, bytes: 100 }));
  assert.equal((await w.last('RestartCommitted'))!.data, { restart: 1, version: 1 });
  assert.equal((await w.last('DeadlineCancelled'))!.data, { deadline: 'restart-r1', reason: 'completed' });
  assert.equal(rederive(coordinator, await w.store.readAll({ limit: 10_000 })).differences, []);
});

test('units on two nodes with established connections: each is held restored until both are, then released together; a deadline meanwhile releases none', async () => {
  const w = await world(['n1', 'n2']);
  const unitOf = (node: string) => (node === 'n1' ? 'u0' : 'u1');
  await w.said({ type: 'CheckpointRequested', data: { request: 'c1', stop: false, timeoutMs: 30_000, options: { tcpEstablished: true } } });
  for (const node of ['n1', 'n2']) await w.said(ck('UnitFrozen', { unit: unitOf(node), node, processes: 1, durationMs: 1 }));
  for (const node of ['n1', 'n2']) await w.said(ck('UnitDumped', { unit: unitOf(node), node, files: 3, bytes: 100, durationMs: 5 }));
  for (const node of ['n1', 'n2']) await w.said(ck('UnitVerified', { unit: unitOf(node), node, captured: [100], processes: [p(100)] }));
  for (const node of ['n1', 'n2']) await w.said({ type: 'NodeCommitted', data: { version: 1, node, units: [unitOf(node)], files: 3, bytes: 100, durationMs: 1, manifest: node[1]!.repeat(64) } });
  assert.equal((await w.last('CheckpointCommitted'))!.data.nodes, {
    n1: { units: ['u0'], files: 3, bytes: 100, manifest: '1'.repeat(64) },
    n2: { units: ['u1'], files: 3, bytes: 100, manifest: '2'.repeat(64) },
  });
  for (const node of ['n1', 'n2']) await w.said(ck('UnitThawed', { unit: unitOf(node), node, frozenMs: 9 }));

  const restartOnce = async (n: number) => {
    await w.said(restartRequest({ request: `r${n}` }));
    for (const node of ['n1', 'n2']) await w.said(rs('UnitRestorePrepared', { restart: n, unit: unitOf(node), node, cgroups: [], pidNamespace: false, waitedMs: 3 }));
    await w.said(rs('UnitRestoreHeld', { restart: n, unit: 'u0', node: 'n1' }));
  };
  await restartOnce(1);
  assert.not.ok(await w.last('RestartReleased'), 'one unit held: the other is not restored yet');
  await w.said(rs('UnitRestoreHeld', { restart: 1, unit: 'u1', node: 'n2' }));
  assert.equal((await w.last('RestartReleased'))!.data, { restart: 1 });
  for (const node of ['n1', 'n2'])
    await w.said(
      rs('UnitImagesVerified', { restart: 1, unit: unitOf(node), node, files: 3, bytes: 100 }),
      rs('UnitRestored', { restart: 1, unit: unitOf(node), node, processes: [{ was: p(100), now: p(200), nsPid: null }], durationMs: 50 }),
    );
  assert.equal((await w.last('RestartCommitted'))!.data, { restart: 1, version: 1 });

  // The second restart's deadline passes with one unit held: no release, an abort instead.
  await restartOnce(2);
  await w.said({ type: 'DeadlineReached', data: { deadline: 'restart-r2' } });
  assert.equal(await count(w, 'RestartReleased'), 1, 'never released');
  assert.ok(await w.last('RestartAbortRequested'));
  assert.equal(rederive(coordinator, await w.store.readAll({ limit: 10_000 })).differences, []);
});

test('two failures before the abort is decided: one rollback per unit, then failed with the first reason', async () => {
  const w = await committed();
  await w.said(restartRequest());
  await w.said(rs('UnitRestorePrepared', { cgroups: [], pidNamespace: false, waitedMs: 3 }));
  await w.said(rs('UnitImagesVerifyFailed', { reason: 'u0/pages-1.img: SHA-256 differs' }), rs('UnitRestoreFailed', { reason: 'the images failed their check' }));
  assert.equal([await count(w, 'RestartAbortRequested'), await count(w, 'UnitRollbackRequested')], [1, 1]);
  await w.said(rs('UnitRolledBack'));
  assert.equal((await w.last('RestartFailed'))!.data, { restart: 1, reason: 'UnitImagesVerifyFailed on unit u0: u0/pages-1.img: SHA-256 differs' });
  assert.equal(rederive(coordinator, await w.store.readAll({ limit: 10_000 })).differences, []);
});

test('refusals: nothing committed, an unknown unit to place, a checkpoint in progress, not the owner', async () => {
  let w = await world(['n1']);
  await w.said(restartRequest());
  assert.equal((await w.last('RequestRejected'))!.data.code, 'not-found');
  w = await committed();
  await w.said(restartRequest({ placement: [{ unit: 'nope', node: 'n1' }] }));
  assert.equal((await w.last('RequestRejected'))!.data.code, 'invalid');
  await w.said({ type: 'CheckpointRequested', data: { request: 'c2', stop: false, timeoutMs: 30_000 } });
  await w.said(restartRequest({ request: 'r2' }));
  assert.match((await w.last('RequestRejected'))!.data.reason, /checkpoint v2 of j is in progress/);
  await w.said({ ...restartRequest({ request: 'r3' }), metadata: { actor: { kind: 'user', uid: 2000 } } } as ProposedEvent);
  assert.equal((await w.last('RequestRejected'))!.data.code, 'unauthorized');
  assert.equal(rederive(coordinator, await w.store.readAll({ limit: 10_000 })).differences, []);
});

test.run();
