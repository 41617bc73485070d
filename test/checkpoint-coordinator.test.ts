// The CheckpointCoordinator decider, given histories (no process runs here: node agents'
// outcomes are appended by the test), and `rederive`, which `ckpt verify` uses.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { type CheckpointState, checkpointDecider, decideCheckpoint } from '../domain/checkpoint-coordinator.js';
import { type Decider, rederive } from '../domain/decider.js';
import type { ProposedEvent, RecordedEvent } from '../domain/event-store.js';
import { requestDeadline } from '../domain/requests.js';
import { probe, worldOf } from './support/coordinator.js';

const test = suite('checkpoint coordinator');

import { p } from './support/coordinator.js';

const coordinator = checkpointDecider('j');
const world = worldOf(coordinator);

const request = (stop = false): ProposedEvent => ({ type: 'CheckpointRequested', data: { request: 'r1', stop, timeoutMs: 30_000 } });
const step = (type: string, unit: string, node: string, extra: object = {}): ProposedEvent => ({ type, data: { version: 1, unit, node, ...extra } }) as ProposedEvent;

test('a committed checkpoint: plan from membership, freeze, dump, verify, commit, thaw', async () => {
  const w = await world(['n1']);
  await w.said(request());
  const plan = await w.last('CheckpointPlanned');
  assert.ok(plan, (await w.types()).join(' '));
  const unit = (plan!.data as { units: Array<{ targets: Array<{ pid: number }>; scope: string; images: string }> }).units[0]!;
  assert.equal(
    unit.targets.map((t) => t.pid),
    [100, 101, 102],
    'the escaped daemon is planned too',
  );
  assert.is(unit.scope, 'cgroup');
  assert.is(unit.images, 'j/v1/u0');
  assert.equal((await w.last('DeadlineScheduled'))!.data, {
    deadline: 'checkpoint-v1',
    at: new Date(Date.parse((await w.last('CheckpointRequested'))!.metadata.recordedAt) + 30_000).toISOString(),
    purpose: 'checkpoint v1 of j',
  });
  assert.ok(await w.last('UnitFreezeRequested'));
  await w.said(step('UnitFrozen', 'u0', 'n1', { processes: 3, durationMs: 2 }));
  assert.ok(await w.last('UnitDumpRequested'));
  await w.said(step('UnitDumped', 'u0', 'n1', { files: 9, bytes: 1000, durationMs: 50 }));
  assert.ok(await w.last('UnitVerifyRequested'));
  await w.said(step('UnitVerified', 'u0', 'n1', { captured: [100, 101, 102] }));
  assert.ok(await w.last('CheckpointCommitRequested'));
  await w.said({ type: 'CheckpointCommitted', data: { version: 1, files: 10, bytes: 1100, durationMs: 60, manifest: 'a'.repeat(64) } });
  assert.ok(await w.last('UnitThawRequested'));
  await w.said(step('UnitThawed', 'u0', 'n1', { frozenMs: 55 }));
  assert.equal((await w.last('CheckpointCompleted'))!.data, { version: 1, outcome: 'thawed' });
  assert.equal((await w.last('DeadlineCancelled'))!.data, { deadline: 'checkpoint-v1', reason: 'completed' });
  assert.is(w.state.s.active, undefined);
  assert.is(w.state.s.lastCommitted, 1);
  // Every decision records the position it was decided on.
  const decisions = (await w.store.readStream('job-j', { limit: 1000 })).filter((e) => e.metadata.decidedAt !== undefined);
  assert.ok(decisions.length >= 8);
  assert.equal(rederive(coordinator, await w.store.readAll({ limit: 10_000 })).differences, []);
  // The next checkpoint is v2, with v1 as its parent.
  await w.said({ type: 'CheckpointRequested', data: { request: 'r2', stop: false, timeoutMs: 1000 } });
  assert.equal([(await w.last('CheckpointPlanned'))!.data.version, (await w.last('CheckpointPlanned'))!.data.parent], [2, 1]);
});

test('--stop stops the units after the commit instead of thawing them', async () => {
  const w = await world(['n1']);
  await w.said(request(true));
  await w.said(step('UnitFrozen', 'u0', 'n1', { processes: 3, durationMs: 2 }));
  await w.said(step('UnitDumped', 'u0', 'n1', { files: 9, bytes: 1000, durationMs: 50 }));
  await w.said(step('UnitVerified', 'u0', 'n1', { captured: [100, 101, 102] }));
  await w.said({ type: 'CheckpointCommitted', data: { version: 1, files: 10, bytes: 1100, durationMs: 60, manifest: 'b'.repeat(64) } });
  assert.ok(await w.last('UnitStopRequested'));
  assert.not.ok(await w.last('UnitThawRequested'));
  await w.said(step('UnitStopped', 'u0', 'n1'));
  assert.equal((await w.last('CheckpointCompleted'))!.data, { version: 1, outcome: 'stopped' });
});

test('four units on four nodes are frozen and dumped in parallel and committed together', async () => {
  const nodes = ['n1', 'n2', 'n3', 'n4'];
  const w = await world(nodes);
  await w.said(request());
  assert.is((await w.types()).filter((t) => t === 'UnitFreezeRequested').length, 4);
  for (const [i, node] of nodes.entries()) {
    assert.not.ok(await w.last('UnitDumpRequested'), 'no dump before every unit is frozen');
    await w.said(step('UnitFrozen', `u${i}`, node, { processes: 3, durationMs: 1 }));
  }
  assert.is((await w.types()).filter((t) => t === 'UnitDumpRequested').length, 4);
  for (const [i, node] of nodes.entries()) await w.said(step('UnitDumped', `u${i}`, node, { files: 1, bytes: 1, durationMs: 1 }));
  for (const [i, node] of nodes.entries()) {
    assert.not.ok(await w.last('CheckpointCommitRequested'));
    await w.said(step('UnitVerified', `u${i}`, node, { captured: [] }));
  }
  assert.is((await w.types()).filter((t) => t === 'CheckpointCommitRequested').length, 1);
});

test('a failed dump aborts: every unit is told to thaw and clean up; then the checkpoint is aborted', async () => {
  const w = await world(['n1', 'n2']);
  await w.said(request());
  await w.said(step('UnitFrozen', 'u0', 'n1', { processes: 3, durationMs: 1 }), step('UnitFrozen', 'u1', 'n2', { processes: 3, durationMs: 1 }));
  await w.said(step('UnitDumpFailed', 'u1', 'n2', { reason: 'criu dump: established TCP connection' }));
  assert.equal((await w.last('CheckpointAbortRequested'))!.data, { version: 1, reason: 'UnitDumpFailed on unit u1: criu dump: established TCP connection' });
  assert.is((await w.types()).filter((t) => t === 'UnitAbortRequested').length, 2);
  // A late success of the other unit changes nothing.
  await w.said(step('UnitDumped', 'u0', 'n1', { files: 1, bytes: 1, durationMs: 1 }));
  assert.not.ok(await w.last('UnitVerifyRequested'));
  await w.said(step('UnitAborted', 'u0', 'n1', { thawed: true, imagesRemoved: true }));
  assert.not.ok(await w.last('CheckpointAborted'));
  await w.said(step('UnitAborted', 'u1', 'n2', { thawed: true, imagesRemoved: true }));
  assert.equal((await w.last('CheckpointAborted'))!.data, { version: 1, reason: 'UnitDumpFailed on unit u1: criu dump: established TCP connection' });
  assert.is(w.state.s.lastCommitted, null);
  assert.equal(rederive(coordinator, await w.store.readAll({ limit: 10_000 })).differences, []);
});

test('the failing step’s class, message and hint travel into the abort and the aborted checkpoint', async () => {
  const w = await world(['n1']);
  await w.said(request());
  const failure = { class: 'connection' as const, message: 'pid 101 (sh) 127.0.0.1:5000 → 127.0.0.1:41234', hint: 'checkpoint with --tcp-established' };
  await w.said(step('UnitFreezeFailed', 'u0', 'n1', { reason: 'established TCP connection', failure }));
  assert.equal((await w.last('CheckpointAbortRequested'))!.data, { version: 1, reason: 'UnitFreezeFailed on unit u0: established TCP connection', failure });
  await w.said(step('UnitAborted', 'u0', 'n1', { thawed: true, imagesRemoved: true }));
  assert.equal((await w.last('CheckpointAborted'))!.data, { version: 1, reason: 'UnitFreezeFailed on unit u0: established TCP connection', failure });
  assert.equal(rederive(coordinator, await w.store.readAll({ limit: 10_000 })).differences, []);
});

test('two failures before the abort is decided: one abort, not two (the first failure ends the checkpoint in the fold)', async () => {
  const w = await world(['n1', 'n2']);
  await w.said(request());
  await w.said(step('UnitFrozen', 'u0', 'n1', { processes: 3, durationMs: 1 }), step('UnitFrozen', 'u1', 'n2', { processes: 3, durationMs: 1 }));
  await w.said(step('UnitDumpFailed', 'u0', 'n1', { reason: 'disk full' }), step('UnitDumpFailed', 'u1', 'n2', { reason: 'disk full' }));
  const count = async (type: string) => (await w.types()).filter((t) => t === type).length;
  assert.equal([await count('CheckpointAbortRequested'), await count('UnitAbortRequested')], [1, 2]);
  await w.said(step('UnitAborted', 'u0', 'n1', { thawed: true, imagesRemoved: true }), step('UnitAborted', 'u1', 'n2', { thawed: true, imagesRemoved: true }));
  assert.equal((await w.last('CheckpointAborted'))!.data.reason, 'UnitDumpFailed on unit u0: disk full');
  assert.equal(rederive(coordinator, await w.store.readAll({ limit: 10_000 })).differences, []);
});

test('only the owner or root may checkpoint: another user is refused, on record', async () => {
  const w = await world(['n1']);
  await w.said({ ...request(), metadata: { actor: { kind: 'user', uid: 2000, user: 'mallory' } } } as ProposedEvent);
  const refused = await w.last('RequestRejected');
  assert.equal([refused!.data.code, refused!.data.reason], ['unauthorized', 'mallory (uid 2000) may not checkpoint job j: only its owner (uid 1000) or root may']);
  await w.said({ type: 'CheckpointRequested', data: { request: 'r2', stop: false, timeoutMs: 1000 }, metadata: { actor: { kind: 'user', uid: 1000 } } });
  assert.ok(await w.last('CheckpointPlanned'), 'the owner may');
});

test('a deadline reached (an agent died) aborts; a deadline of another checkpoint does not', async () => {
  const w = await world(['n1']);
  await w.said(request());
  await w.said({ type: 'DeadlineReached', data: { deadline: 'checkpoint-v9' } });
  assert.not.ok(await w.last('CheckpointAbortRequested'));
  await w.said({ type: 'DeadlineReached', data: { deadline: 'checkpoint-v1' } });
  assert.match((await w.last('CheckpointAbortRequested'))!.data.reason as string, 'deadline');
});

test('refusals: busy, no running process, a process the plan would miss, no usable checkpointer', async () => {
  let w = await world(['n1']);
  await w.said(request());
  await w.said({ type: 'CheckpointRequested', data: { request: 'r2', stop: false, timeoutMs: 1000 } });
  assert.equal((await w.last('RequestRejected'))!.data, { request: 'r2', command: 'checkpoint', code: 'busy', reason: 'checkpoint v1 of j is still in progress' });

  w = await world(['n1']);
  await w.said({ type: 'DependencyObserved', data: { node: 'n1', unit: 'u0', process: p(900), ppid: 1, pgid: 900, sid: 900, comm: 'reader', member: p(101), via: 'pipe', inode: '77' } }, request());
  const refusal = (await w.last('RequestRejected'))!.data as { code: string; reason: string };
  assert.is(refusal.code, 'unsupported');
  assert.match(refusal.reason, 'would miss 1 process(es) — 900 reader');
  assert.not.ok(await w.last('CheckpointPlanned'), 'never a silently partial checkpoint');

  w = await world(['n1'], [probe('n1', false)]);
  await w.said(request());
  assert.match((await w.last('RequestRejected'))!.data.reason as string, 'cannot be used: criu check failed: vdso');

  w = await world(['n1'], []);
  await w.said(request());
  assert.match((await w.last('RequestRejected'))!.data.reason as string, 'has not reported a checkpointer');

  // Without a cgroup freezer the tree scope is used; once the daemon is re-parented it refuses.
  w = await world(['n1'], [probe('n1', true, false)]);
  await w.said(
    { type: 'ProcessExited', data: { node: 'n1', unit: 'u0', process: p(101), status: 0, signal: null } },
    { type: 'ProcessReparented', data: { node: 'n1', unit: 'u0', process: p(102), ppid: 1 } },
    request(),
  );
  assert.match((await w.last('RequestRejected'))!.data.reason as string, 'a tree checkpoint would miss 1 process(es) — 102');

  w = await world(['n1']);
  await w.said(...[100, 101, 102].map((pid): ProposedEvent => ({ type: 'ProcessExited', data: { node: 'n1', unit: 'u0', process: p(pid), status: 0, signal: null } })), request());
  assert.is((await w.last('RequestRejected'))!.data.code, 'invalid');
});

test('rederive catches a decider change that alters a recorded decision', async () => {
  const w = await world(['n1']);
  await w.said(request());
  await w.said(step('UnitFrozen', 'u0', 'n1', { processes: 3, durationMs: 2 }));
  const history = await w.store.readAll({ limit: 10_000 });
  const { checked, differences } = rederive(coordinator, history);
  assert.equal([checked, differences.length], [2, 0]);
  // A "new version" of the coordinator that plans with a longer deadline.
  const changed: Decider<CheckpointState> = {
    ...coordinator,
    decide: (s, e) => decideCheckpoint(s, e).map((d) => (d.type === 'DeadlineScheduled' ? { ...d, data: { ...d.data, at: new Date(Date.parse(d.data.at) + 1000).toISOString() } } : d)),
  };
  const found = rederive(changed, history).differences;
  assert.is(found.length, 1);
  assert.is(found[0]!.cause.type, 'CheckpointRequested');
  assert.equal(
    found[0]!.recorded.map((d) => d.type),
    ['CheckpointPlanned', 'DeadlineScheduled', 'UnitFreezeRequested'],
  );
});

test('a request the runtime saw expire before its plan was recorded is refused as expired; a planned one is not', async () => {
  const w = await world(['n1']);
  // What adapters/agent/job-work.ts records instead of the plan when the request's deadline passed.
  await w.store.append('job-j', [request()]);
  const requested = (await w.store.readStream('job-j', { limit: 1000 })).at(-1)!;
  const deadline = requestDeadline(requested as RecordedEvent & { data: { timeoutMs: number } });
  assert.is(deadline, new Date(Date.parse(requested.metadata.recordedAt) + 30_000).toISOString());
  await w.store.append('job-j', [{ type: 'RequestExpired', data: { request: 'r1', command: 'checkpoint', deadline } }]);
  const history = await w.store.readAll({ limit: 10_000 });
  const expired = history.at(-1)!;
  const s = history.filter(coordinator.concerns).reduce(coordinator.evolve, coordinator.initial);
  const [refusal, ...more] = decideCheckpoint(s, expired);
  assert.is(more.length, 0);
  assert.equal({ ...refusal!.data, reason: undefined }, { request: 'r1', command: 'checkpoint', code: 'expired', reason: undefined });
  assert.match((refusal!.data as { reason: string }).reason, `its deadline ${deadline} passed before it could be planned`);
  assert.equal(decideCheckpoint(s, { ...expired, data: { request: 'r1', command: 'restart', deadline } } as RecordedEvent), [], 'a restart’s expiry is the restart coordinator’s');
  // Recorded as the runtime does, the history re-derives: the request itself has no decision.
  await w.store.append('job-j', [{ ...refusal!, metadata: { decidedAt: expired.position, causationId: expired.id, actor: { kind: 'coordinator' } } }]);
  const recorded = await w.store.readAll({ limit: 10_000 });
  assert.equal(rederive(coordinator, recorded), { checked: 1, differences: [] });
  // Once planned (in time), a late RequestExpired from another agent refuses nothing.
  const planned = await world(['n1']);
  await planned.said(request());
  assert.ok(await planned.last('CheckpointPlanned'));
  const late = { ...expired, id: 'late', position: expired.position + 100 };
  assert.equal(decideCheckpoint(coordinator.evolve(planned.state.s, late), late), []);
});

test.run();
