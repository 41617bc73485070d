// The membership fold and the grouping strategies, given a history, without any process running.

import { from, lastValueFrom } from 'rxjs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { MemoryEventStore } from '../adapters/store/memory.js';
import type { ProposedEvent, RecordedEvent } from '../domain/event-store.js';
import { scopeCoverage } from '../domain/grouping.js';
import { classify, evolveMembership, initialMembership, type JobMembership, membersOf } from '../domain/membership.js';
import { jobMembership } from '../projections/jobs.js';
import { project } from '../projections/project.js';

const test = suite('job membership');
const node = 'n1';
const unit = 'main';
const p = (pid: number, startTime = pid * 10) => ({ pid, startTime });

/** A unit whose root (pid 100, session and group 100) runs in /ckpt/j/main. */
const launched: ProposedEvent[] = [
  { type: 'JobSubmitted', data: { job: 'j', owner: { uid: 1000 } } },
  { type: 'UnitAssigned', data: { unit, node, command: ['sh'], cwd: '/', limits: {} } },
  { type: 'UnitLaunched', data: { unit, node, root: p(100), pgid: 100, sid: 100, comm: 'sh', cgroup: '/ckpt/j/main' } },
  { type: 'UnitTracked', data: { unit, node, root: p(100), stdio: [] } },
];
const fork = (parent: number, child: number, extra: object = {}): ProposedEvent => ({ type: 'ProcessForked', data: { node, unit, parent: p(parent), child: p(child), ...extra } });
const on = (pid: number) => ({ node, unit, process: p(pid) });

const given = async (...events: ProposedEvent[]) => {
  const store = new MemoryEventStore();
  await store.append('job-j', [...launched, ...events]);
  const history = await store.readAll({ limit: 10_000 });
  const state = history.reduce(evolveMembership, initialMembership('j'));
  return { store, history, state, member: (pid: number) => membersOf(state).find((m) => m.pid === pid)! };
};
const reasonOf = (s: JobMembership, pid: number) => {
  const m = membersOf(s).find((x) => x.pid === pid)!;
  return classify(s, m);
};

test('the root, its descendants, execs and exits with status or signal', async () => {
  const { state, member } = await given(
    fork(100, 101),
    { type: 'ProcessExecd', data: { ...on(101), comm: 'worker' } },
    fork(100, 102),
    { type: 'ProcessExited', data: { ...on(101), status: 3, signal: null } },
    { type: 'ProcessExited', data: { ...on(102), status: null, signal: 9 } },
  );
  assert.equal(
    membersOf(state).map((m) => m.pid),
    [100, 101, 102],
  );
  assert.equal(reasonOf(state, 100), { reason: 'root', escapes: [] });
  assert.equal(reasonOf(state, 101), { reason: 'descendant', escapes: [] });
  assert.equal([member(101).comm, member(101).state, member(101).exitStatus, member(101).pgid, member(101).sid], ['worker', 'exited', 3, 100, 100]);
  assert.equal([member(102).state, member(102).exitStatus, member(102).signal], ['exited', null, 9]);
  assert.is(member(100).state, 'running');
  assert.is(state.phase, 'running');
  assert.equal(state.owner, { uid: 1000 });
});

test('a double-forked daemon that called setsid is still a member: escaped', async () => {
  const { state } = await given(
    fork(100, 101),
    fork(101, 102),
    { type: 'ProcessSessionChanged', data: { ...on(102), sid: 102, pgid: 102 } },
    { type: 'ProcessExited', data: { ...on(101), status: 0, signal: null } },
    { type: 'ProcessReparented', data: { ...on(102), ppid: 1 } },
  );
  assert.equal(reasonOf(state, 102), { reason: 'escaped', escapes: ['session', 'process-group', 'reparented'] });
});

test('setpgid and a cgroup move make a process escaped; it keeps its identity', async () => {
  const { state } = await given(
    fork(100, 101),
    fork(100, 103),
    { type: 'ProcessGroupChanged', data: { ...on(101), pgid: 101 } },
    { type: 'ProcessCgroupChanged', data: { ...on(103), cgroup: '/elsewhere' } },
  );
  assert.equal(reasonOf(state, 101), { reason: 'escaped', escapes: ['process-group'] });
  assert.equal(reasonOf(state, 103), { reason: 'escaped', escapes: ['cgroup'] });
});

test('a reused PID is a different member', async () => {
  const { state } = await given(
    fork(100, 200),
    { type: 'ProcessExited', data: { node, unit, process: p(200, 2000), status: 0, signal: null } },
    { type: 'ProcessForked', data: { node, unit, parent: p(100), child: p(200, 2500) } },
  );
  const twins = membersOf(state).filter((m) => m.pid === 200);
  assert.equal(
    twins.map((m) => [m.startTime, m.state]),
    [
      [2000, 'exited'],
      [2500, 'running'],
    ],
  );
});

test('facts about unknown processes change nothing; reconciliation adds and removes members', async () => {
  const { state, member } = await given(
    { type: 'ProcessExited', data: { node, unit, process: p(999), status: 0, signal: null } },
    fork(100, 101),
    { type: 'ObservationGap', data: { node, source: 'proc-connector', lost: 17, reason: 'test' } },
    { type: 'ProcessObserved', data: { ...on(105), ppid: 101, pgid: 100, sid: 100, comm: 'late', source: 'reconcile', parent: p(101) } },
    { type: 'ProcessVanished', data: on(101) },
  );
  assert.equal(
    membersOf(state).map((m) => m.pid),
    [100, 101, 105],
  );
  assert.is(member(101).state, 'vanished');
  assert.equal([member(105).comm, member(105).forkedBy], ['late', 101]);
  assert.is(state.lostEvents, 17);
});

test('a process sharing a pipe with a member is a dependent, and so are its children', async () => {
  const { state } = await given(
    fork(100, 101),
    { type: 'DependencyObserved', data: { node, unit, process: p(300), ppid: 1, pgid: 300, sid: 300, comm: 'reader', member: p(101), via: 'pipe', inode: '4242' } },
    fork(300, 301),
  );
  assert.equal(reasonOf(state, 300), { reason: 'dependent', escapes: [] });
  assert.equal(reasonOf(state, 301), { reason: 'dependent', escapes: [] });
});

test('each scope says what it would capture and why it misses the rest', async () => {
  const { state } = await given(
    fork(100, 101), // plain child
    fork(100, 102), // setpgid
    { type: 'ProcessGroupChanged', data: { ...on(102), pgid: 102 } },
    fork(100, 103), // double-forked setsid daemon
    fork(103, 104),
    { type: 'ProcessSessionChanged', data: { ...on(104), sid: 104, pgid: 104 } },
    { type: 'ProcessExited', data: { ...on(103), status: 0, signal: null } },
    { type: 'ProcessReparented', data: { ...on(104), ppid: 1 } },
    { type: 'ProcessCgroupChanged', data: { ...on(101), cgroup: '/other' } },
    { type: 'DependencyObserved', data: { node, unit, process: p(300), ppid: 1, pgid: 300, sid: 300, comm: 'reader', member: p(101), via: 'pipe', inode: '7' } },
  );
  const cover = (scope: 'tree' | 'pgid' | 'session' | 'cgroup') => {
    const c = scopeCoverage(state, unit, scope);
    return { captured: c.captured.map((m) => m.pid), missed: c.missed.map((m) => m.member.pid) };
  };
  assert.equal(cover('tree'), { captured: [100, 101, 102], missed: [104, 300] });
  assert.equal(cover('pgid'), { captured: [100, 101], missed: [102, 104, 300] });
  assert.equal(cover('session'), { captured: [100, 101, 102], missed: [104, 300] });
  // The daemon left session, group and tree, but not the unit's cgroup: that scope keeps it.
  assert.equal(cover('cgroup'), { captured: [100, 102, 104], missed: [101, 300] });
  const tree = scopeCoverage(state, unit, 'tree').missed;
  assert.match(tree[0]!.why, 're-parented to PID 1');
  assert.match(tree[1]!.why, 'not a descendant: shares a pipe (inode 7)');
  assert.match(scopeCoverage(state, unit, 'session').missed[0]!.why, 'in session 104, not the unit’s session 100');
});

test('the projection equals the plain fold, and --at shows membership as it was', async () => {
  const { store, history, state } = await given(fork(100, 101), fork(100, 102), { type: 'ProcessExited', data: { ...on(101), status: 0, signal: null } });
  const projected = await lastValueFrom(from(history as RecordedEvent[]).pipe(project(evolveMembership, initialMembership('j'))));
  assert.equal(projected, state);
  assert.equal(await jobMembership(store, 'j'), state);
  const before = await jobMembership(store, 'j', history[4]!.position);
  assert.equal(
    membersOf(before!).map((m) => [m.pid, m.state]),
    [
      [100, 'running'],
      [101, 'running'],
    ],
  );
  assert.is(await jobMembership(store, 'nope'), undefined);
});

test.run();
