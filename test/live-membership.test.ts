// The live membership fold (what the coordinator keeps: running members, unit roots, what kept
// checkpoints captured) against the fold of everything: the same decisions at every event, while
// memory follows what runs. No process runs here: histories are appended by the test.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { ProposedEvent, RecordedEvent } from '../domain/event-store.js';
import { decideJobCoordinator, evolveJobCoordinator, type JobCoordinatorState, jobCoordinator } from '../domain/job-coordinator.js';
import { evolveLiveMembership, evolveMembership, initialMembership, type JobMembership, memberOf, RECENT_EXITS, runningMembers } from '../domain/membership.js';
import { emptyMap, entriesOf, getIn, removeIn, setIn, valuesOf } from '../domain/persistent-map.js';
import { decodeMembership, encodeMembership } from '../projections/jobs.js';
import { p, worldOf } from './support/coordinator.js';

const test = suite('live membership');
const coordinator = jobCoordinator('j');
const world = worldOf(coordinator);

const ck = (type: string, extra: object = {}): ProposedEvent => ({ type, data: { version: 1, unit: 'u0', node: 'n1', ...extra } }) as ProposedEvent;
const rs = (type: string, extra: object = {}): ProposedEvent => ({ type, data: { restart: 1, unit: 'u0', node: 'n1', ...extra } }) as ProposedEvent;
const on = (pid: number) => ({ node: 'n1', unit: 'u0', process: p(pid) });
const fork = (parent: number, child: number): ProposedEvent => ({ type: 'ProcessForked', data: { node: 'n1', unit: 'u0', parent: p(parent), child: p(child) } });
const exit = (pid: number): ProposedEvent => ({ type: 'ProcessExited', data: { ...on(pid), status: 0, signal: null } });

/**
 * Folds a history both ways and, at every event, checks what decisions read (running members,
 * unit roots, captured members) agrees, and that deciding with the whole membership swapped in
 * gives exactly the live fold's decisions.
 */
const agree = (history: readonly RecordedEvent[]) => {
  let state: JobCoordinatorState = coordinator.initial;
  let full: JobMembership = initialMembership('j');
  for (const e of history) {
    if (!coordinator.concerns(e)) continue;
    state = evolveJobCoordinator(state, e);
    if (e.stream === 'job-j') full = evolveMembership(full, e);
    const live = state.checkpoint.job;
    const decisions = decideJobCoordinator(state, e);
    // Running members compared where something may be decided (a storm's forks and exits are not).
    if (decisions.length > 0 || !e.type.startsWith('Process') || e === history.at(-1)) {
      const keys = (m: JobMembership) => runningMembers(m).map((x) => JSON.stringify(x));
      assert.equal(keys(live), keys(full), `running members after ${e.type} at ${e.position}`);
    }
    assert.equal(live.units, full.units, `units after ${e.type}`);
    for (const u of Object.values(live.units)) if (u.root) assert.equal(getIn(live.members, u.root), getIn(full.members, u.root), 'the unit root is kept');
    const withFull = { ...state, checkpoint: { ...state.checkpoint, job: full } };
    assert.equal(decisions, decideJobCoordinator(withFull, e), `decisions on ${e.type} at ${e.position}`);
  }
  return { live: state.checkpoint.job, full };
};

test('a fork storm: the live fold keeps what runs, the full one everything; they decide alike', async () => {
  const w = await world(['n1']);
  // 102 forks a child that exits, 1,000 times over (a shell loop); one child (9999) keeps running.
  const storm: ProposedEvent[] = [];
  for (let i = 0; i < 1000; i++) storm.push(fork(102, 1000 + i), exit(1000 + i));
  storm.push(fork(102, 9999));
  await w.store.append('job-j', storm);
  await w.said({ type: 'CheckpointRequested', data: { request: 'c1', stop: false, timeoutMs: 30_000 } });
  const { live, full } = agree(await w.store.readAll({ limit: 100_000 }));
  assert.is(full.members.size, 3 + 1001);
  assert.is(live.members.size, 4, 'root, its child, the daemon and the running 9999');
  assert.is(live.live!.departed, 1000);
  const types = (await w.store.readStream('job-j', { limit: 100_000 })).map((e) => e.type);
  assert.ok(types.includes('CheckpointPlanned'), `planned from the live fold: ${types.slice(-3).join(' ')}`);
  // Let go, not forgotten: a late observation of a departed process does not revive it.
  const late = { type: 'ProcessObserved', data: { ...on(1999), ppid: 102, pgid: 100, sid: 100, comm: 'sh', source: 'reconcile' } } as ProposedEvent;
  await w.store.append('job-j', [late]);
  const again = agree(await w.store.readAll({ limit: 100_000 }));
  assert.is(memberOf(again.live, 'n1', p(1999)), undefined);
  assert.is(memberOf(again.full, 'n1', p(1999))!.state, 'exited');
});

test('what a kept checkpoint captured stays until the version is pruned: a restore links to it', async () => {
  const w = await world(['n1']);
  await w.store.append('job-j', [fork(102, 103)]);
  await w.said({ type: 'CheckpointRequested', data: { request: 'c1', stop: false, timeoutMs: 30_000 } });
  await w.said(ck('UnitFrozen', { processes: 4, durationMs: 1 }));
  await w.said(ck('UnitDumped', { files: 3, bytes: 100, durationMs: 5 }));
  // An older agent's event: captured by PID only.
  await w.said(ck('UnitVerified', { captured: [100, 101, 102, 103] }));
  await w.said({ type: 'CheckpointCommitted', data: { version: 1, files: 3, bytes: 100, durationMs: 1, manifest: 'b'.repeat(64) } });
  await w.said(ck('UnitThawed', { frozenMs: 9 }));
  // The job is killed: every process exits; the captured ones (and the unit's root) are kept.
  await w.store.append('job-j', [exit(103), exit(102), exit(101), exit(100)]);
  await w.said({ type: 'RestartRequested', data: { request: 'r1', version: null, placement: [], timeoutMs: 30_000 } });
  await w.said(rs('UnitRestorePrepared', { cgroups: [], pidNamespace: false, waitedMs: 3 }));
  const restored = [100, 101, 102, 103].map((pid) => ({ was: p(pid), now: p(pid + 5000), nsPid: null }));
  await w.said(rs('UnitRestored', { processes: restored, durationMs: 50 }));
  await w.said(rs('UnitImagesVerified', { files: 3, bytes: 100 }));
  assert.ok(await w.last('RestartCommitted'));
  let { live, full } = agree(await w.store.readAll({ limit: 10_000 }));
  // Restored members carry over who forked them and how they belong, as in the whole fold.
  for (const pid of [5101, 5102, 5103]) assert.equal(memberOf(live, 'n1', p(pid)), memberOf(full, 'n1', p(pid)));
  assert.is(memberOf(live, 'n1', p(103))!.state, 'exited', 'captured by v1: kept');
  // Pruned: what only v1 kept is let go; the old root stays (it is no longer the unit's, but was).
  await w.said({ type: 'CheckpointPruned', data: { version: 1, bytes: 100 } });
  ({ live, full } = agree(await w.store.readAll({ limit: 10_000 })));
  assert.is(memberOf(live, 'n1', p(103)), undefined);
  assert.is(memberOf(full, 'n1', p(103))!.state, 'exited');
  assert.is(live.members.size, 4, 'the four restored processes');
});

test('an aborted checkpoint keeps nothing', async () => {
  const w = await world(['n1']);
  await w.said({ type: 'CheckpointRequested', data: { request: 'c1', stop: false, timeoutMs: 30_000 } });
  await w.said(ck('UnitFrozen', { processes: 3, durationMs: 1 }));
  await w.said(ck('UnitDumped', { files: 3, bytes: 100, durationMs: 5 }));
  await w.said(ck('UnitVerified', { captured: [100, 101, 102], processes: [p(100), p(101), p(102)] }));
  await w.said({ type: 'CheckpointCommitFailed', data: { version: 1, reason: 'disk full' } });
  await w.said(ck('UnitAborted', { thawed: true, imagesRemoved: true }));
  assert.ok(await w.last('CheckpointAborted'));
  await w.store.append('job-j', [exit(102), exit(101)]);
  const { live } = agree(await w.store.readAll({ limit: 10_000 }));
  assert.equal([...valuesOf(live.members)].map((m) => m.pid).sort(), [100]);
  assert.equal(live.live!.captured, {});
});

/** A membership as JSON it can be compared by: members and the live maps as sorted entries. */
const comparable = (m: JobMembership) => {
  const sorted = <V>(map: Parameters<typeof entriesOf<V>>[0]) => [...entriesOf(map)].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const live = m.live && { ...m.live, pins: sorted(m.live.pins), recent: sorted(m.live.recent), ring: sorted(m.live.ring) };
  return JSON.parse(JSON.stringify({ ...m, members: sorted(m.members), live }));
};
const throughSnapshot = (m: JobMembership) => decodeMembership(JSON.parse(JSON.stringify(encodeMembership(m))));

test('a live membership through its snapshot encoding folds on and decides as the one never encoded', async () => {
  // Every kind of bookkeeping: departed storm children, pins and captures of a kept version,
  // a restore linked to them, a prune that lets them go.
  const w = await world(['n1']);
  const storm: ProposedEvent[] = [];
  for (let i = 0; i < 300; i++) storm.push(fork(102, 1000 + i), exit(1000 + i));
  await w.store.append('job-j', [...storm, fork(102, 103)]);
  await w.said({ type: 'CheckpointRequested', data: { request: 'c1', stop: false, timeoutMs: 30_000 } });
  await w.said(ck('UnitFrozen', { processes: 4, durationMs: 1 }));
  await w.said(ck('UnitDumped', { files: 3, bytes: 100, durationMs: 5 }));
  await w.said(ck('UnitVerified', { captured: [100, 101, 102, 103], processes: [p(100), p(101), p(102), p(103)] }));
  await w.said({ type: 'CheckpointCommitted', data: { version: 1, files: 3, bytes: 100, durationMs: 1, manifest: 'b'.repeat(64) } });
  await w.said(ck('UnitThawed', { frozenMs: 9 }));
  await w.store.append('job-j', [exit(103), exit(102), exit(101), exit(100)]);
  await w.said({ type: 'RestartRequested', data: { request: 'r1', version: null, placement: [], timeoutMs: 30_000 } });
  await w.said(rs('UnitRestorePrepared', { cgroups: [], pidNamespace: false, waitedMs: 3 }));
  await w.said(rs('UnitRestored', { processes: [100, 101, 102, 103].map((pid) => ({ was: p(pid), now: p(pid + 5000), nsPid: null })), durationMs: 50 }));
  await w.said(rs('UnitImagesVerified', { files: 3, bytes: 100 }));
  await w.store.append('job-j', [fork(5102, 6000), exit(6000), fork(5102, 6001)]);
  await w.said({ type: 'CheckpointPruned', data: { version: 1, bytes: 100 } });
  const history = (await w.store.readAll({ limit: 100_000 })).filter((e) => coordinator.concerns(e));
  // Cut the fold at points where the bookkeeping holds something, snapshot it, fold on both ways.
  const cuts = history.map((_, i) => i).filter((i) => i % 40 === 0 || !history[i]!.type.startsWith('Process'));
  let checked = 0;
  for (const cut of cuts) {
    let plain: JobCoordinatorState = coordinator.initial;
    for (const e of history.slice(0, cut + 1)) plain = evolveJobCoordinator(plain, e);
    let restored: JobCoordinatorState = { ...plain, checkpoint: { ...plain.checkpoint, job: throughSnapshot(plain.checkpoint.job) } };
    assert.equal(comparable(restored.checkpoint.job), comparable(plain.checkpoint.job), `decoded as encoded after ${history[cut]!.type} at ${history[cut]!.position}`);
    for (const e of history.slice(cut + 1)) {
      plain = evolveJobCoordinator(plain, e);
      restored = evolveJobCoordinator(restored, e);
      assert.equal(decideJobCoordinator(restored, e), decideJobCoordinator(plain, e), `decisions on ${e.type} at ${e.position}, snapshot after ${cut}`);
    }
    assert.equal(comparable(restored.checkpoint.job), comparable(plain.checkpoint.job), `folded on from the snapshot after ${history[cut]!.type}`);
    checked++;
  }
  const end = agree(history).live;
  assert.ok(end.live!.departed > 300 && checked > 10, `departed ${end.live!.departed}, ${checked} cuts`);
  assert.ok(Object.keys(end.live!.captured).length === 0 && (await w.last('RestartCommitted')), 'restarted, then pruned');
  // A full fold's snapshot (no live bookkeeping) still decodes as it did.
  const full = history.filter((e) => e.stream === 'job-j').reduce(evolveMembership, initialMembership('j'));
  assert.is(encodeMembership(full).live, undefined);
  assert.equal(comparable(throughSnapshot(full)), comparable(full));
});

test('departed processes are remembered for the last RECENT_EXITS only (bounded), in order', () => {
  let s = initialMembership('j');
  let position = 0;
  const at = (type: string, data: object) =>
    ({ type, data, stream: 'job-j', revision: position, position: ++position, id: String(position), metadata: { recordedAt: '2026-01-01T00:00:00.000Z' } }) as unknown as RecordedEvent;
  s = evolveLiveMembership(s, at('UnitAssigned', { unit: 'u0', node: 'n1', command: ['x'], cwd: '/', limits: {} }));
  s = evolveLiveMembership(s, at('UnitLaunched', { unit: 'u0', node: 'n1', root: p(1), pgid: 1, sid: 1, comm: 'x', cgroup: '/c' }));
  const n = RECENT_EXITS + 10;
  for (let i = 0; i < n; i++) {
    s = evolveLiveMembership(s, at('ProcessForked', { node: 'n1', unit: 'u0', parent: p(1), child: p(100 + i) }));
    s = evolveLiveMembership(s, at('ProcessExited', { ...on(100 + i), status: 0, signal: null }));
  }
  assert.is(s.members.size, 1);
  assert.is(s.live!.recent.size, RECENT_EXITS);
  assert.is(getIn(s.live!.recent, 'n1/100@1000'), undefined, 'the oldest is forgotten');
  assert.ok(getIn(s.live!.recent, `n1/${100 + n - 1}@${(100 + n - 1) * 10}`) !== undefined, 'the newest is remembered');
});

test('removeIn: a persistent map without a key, the original unchanged', () => {
  let m = emptyMap<number>();
  for (let i = 0; i < 5000; i++) m = setIn(m, `k${i}`, i);
  let n = m;
  for (let i = 0; i < 5000; i += 2) n = removeIn(n, `k${i}`);
  assert.is(n.size, 2500);
  assert.is(m.size, 5000);
  assert.is(getIn(n, 'k2'), undefined);
  assert.is(getIn(n, 'k3'), 3);
  assert.is(getIn(m, 'k2'), 2);
  assert.is(removeIn(n, 'k2'), n, 'removing what is not there changes nothing');
  assert.equal([...valuesOf(n)].sort((a, b) => a - b).slice(0, 3), [1, 3, 5]);
});

test.run();
