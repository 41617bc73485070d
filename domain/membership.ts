// Membership of a job: every process that belongs to it, derived from the job's whole history,
// so a process that left its session, process group or cgroup, or was re-parented, is still
// known to belong. A pure fold: `events.reduce(evolveMembership, initialMembership(job))`.
import type { Position, RecordedEvent } from './event-store.js';
import type { Limits, UnitCgroup } from './events/job.js';
import type { RestoredProcess } from './events/restart.js';
import { type NodeId, type ProcessRef, processKey, type UnitId } from './identity.js';
import { emptyMap, getIn, type PersistentMap, removeIn, setIn, valuesOf } from './persistent-map.js';

export type MemberReason = 'root' | 'descendant' | 'escaped' | 'dependent';
export type Escape = 'session' | 'process-group' | 'cgroup' | 'reparented';
export type MemberState = 'running' | 'exited' | 'vanished';

export interface Member {
  readonly key: string;
  readonly node: NodeId;
  readonly unit: UnitId;
  readonly pid: number;
  readonly startTime: number;
  /** Current parent PID (after re-parenting: 1 or a subreaper). */
  readonly ppid: number;
  /** PID of the parent that forked it, when the fork was seen. */
  readonly forkedBy?: number;
  readonly pgid: number;
  readonly sid: number;
  readonly comm: string;
  readonly cgroup?: string;
  readonly state: MemberState;
  readonly exitStatus: number | null;
  readonly signal: number | null;
  /** Set for processes that are not descendants but share something with a member. */
  readonly dependsOn?: { readonly member: string; readonly via: string; readonly inode: string; readonly name?: string };
  /** A restored process: the member (key) it was when the checkpoint was taken. */
  readonly restoredFrom?: string;
  readonly since: Position;
  readonly until?: Position;
}

export type UnitPhase = 'assigned' | 'launched' | 'running' | 'ended' | 'failed';

export interface Unit {
  readonly unit: UnitId;
  readonly node: NodeId;
  readonly command: readonly string[];
  readonly cwd: string;
  readonly limits: Limits;
  readonly cgroups: readonly UnitCgroup[];
  readonly phase: UnitPhase;
  readonly root?: string;
  readonly pgid?: number;
  readonly sid?: number;
  readonly cgroup?: string;
  /** Pipe/socket inodes of the root's stdin/out/err at launch: the user's terminal, not dependencies. */
  readonly stdio: readonly string[];
  readonly exitStatus: number | null;
  readonly signal: number | null;
  readonly reason?: string;
  /** Cgroups prepared by a restart in progress; they become the unit's when it is restored. */
  readonly restoreCgroups?: readonly UnitCgroup[];
  /** Session, group and cgroup of the unit's earlier incarnations (before restarts): its members
   *  of then are judged against them, not against the restored unit's. */
  readonly former?: ReadonlyArray<{ readonly sid?: number; readonly pgid?: number; readonly cgroup?: string }>;
}

export type JobPhase = 'new' | 'submitted' | 'running' | 'ended';

export interface JobMembership {
  readonly job: string;
  readonly phase: JobPhase;
  readonly owner?: { readonly uid: number; readonly user?: string };
  readonly outcome?: 'succeeded' | 'failed';
  readonly units: Readonly<Record<UnitId, Unit>>;
  readonly members: PersistentMap<Member>;
  /** Kernel events lost on this job's nodes (reconciled from /proc afterwards). */
  readonly lostEvents: number;
  readonly position: Position;
  readonly submittedAt?: string;
  /** Only in a live fold (evolveLiveMembership): what it keeps of the members that left. */
  readonly live?: LiveBookkeeping;
}

/** How a live fold stays as small as what runs, yet decides exactly as a fold of everything. */
export interface LiveBookkeeping {
  /** Members that exited (or vanished) and were let go, in all and per unit. */
  readonly departed: number;
  readonly departedByUnit: Readonly<Record<UnitId, number>>;
  /** Member keys each checkpoint version's verified units captured: a restore links to them. */
  readonly captured: Readonly<Record<number, readonly string[]>>;
  /** How many kept versions captured each member (kept while > 0, even after it exited). */
  readonly pins: PersistentMap<number>;
  /** The last RECENT_EXITS members let go (key → slot and slot → key): a late observation of one
   *  must not bring it back as a running member. */
  readonly recent: PersistentMap<number>;
  readonly ring: PersistentMap<string>;
  /** Only in evolveShownMembership's fold: who forked whom among the kept members. */
  readonly forks?: ForkTree;
}

/**
 * Who forked whom, as `ckpt ps` draws it: a member's parent is the member of its unit and node
 * with the pid it was forked by that ran when it appeared (the first such by when it was seen).
 */
export interface ForkTree {
  /** Running members by `node/pid` (a missed exit can leave two on one pid). */
  readonly running: PersistentMap<readonly string[]>;
  /** Each kept member's parent. */
  readonly parent: PersistentMap<string>;
  /** How many kept members each member forked: while any is kept, so is it. */
  readonly children: PersistentMap<number>;
}

export const initialMembership = (job: string): JobMembership => ({
  job,
  phase: 'new',
  units: {},
  members: emptyMap(),
  lostEvents: 0,
  position: 0,
});

const keyOf = (node: NodeId, p: ProcessRef) => processKey(node, p);

const withMember = (s: JobMembership, m: Member): JobMembership => ({ ...s, members: setIn(s.members, m.key, m) });

const withUnit = (s: JobMembership, unit: UnitId, change: Partial<Unit>): JobMembership => {
  const current = s.units[unit];
  return current ? { ...s, units: { ...s.units, [unit]: { ...current, ...change } } } : s;
};

/** Applies a change to a known member; facts about unknown processes change nothing. */
const updateMember = (s: JobMembership, node: NodeId, p: ProcessRef, change: Partial<Member>): JobMembership => {
  const current = getIn(s.members, keyOf(node, p));
  return current ? withMember(s, { ...current, ...change }) : s;
};

/** A member as first seen. One literal with every field, so all members share one shape (fast folds). */
const newMember = (
  node: NodeId,
  unit: UnitId,
  p: ProcessRef,
  since: Position,
  f: { ppid: number; pgid: number; sid: number; comm: string; cgroup?: string; forkedBy?: number; dependsOn?: Member['dependsOn']; restoredFrom?: string },
): Member => ({
  key: keyOf(node, p),
  node,
  unit,
  pid: p.pid,
  startTime: p.startTime,
  ppid: f.ppid,
  forkedBy: f.forkedBy,
  pgid: f.pgid,
  sid: f.sid,
  comm: f.comm,
  cgroup: f.cgroup,
  state: 'running',
  exitStatus: null,
  signal: null,
  dependsOn: f.dependsOn,
  restoredFrom: f.restoredFrom,
  since,
  until: undefined,
});

export const evolveMembership = (state: JobMembership, event: RecordedEvent): JobMembership => {
  const next = apply(state, event);
  // Every event moves the position; `apply` already made a fresh copy when anything else changed.
  if (next === state) return { ...state, position: event.position };
  (next as { position: Position }).position = event.position;
  return next;
};

const apply = (s: JobMembership, event: RecordedEvent): JobMembership => {
  switch (event.type) {
    case 'JobSubmitted':
      return { ...s, phase: 'submitted', owner: event.data.owner, submittedAt: event.metadata.recordedAt };
    case 'UnitAssigned': {
      const { unit, node, command, cwd, limits } = event.data;
      return { ...s, units: { ...s.units, [unit]: { unit, node, command, cwd, limits, cgroups: [], phase: 'assigned', stdio: [], exitStatus: null, signal: null } } };
    }
    case 'UnitCgroupsCreated':
      return withUnit(s, event.data.unit, { cgroups: event.data.cgroups });
    case 'UnitLaunched': {
      const { unit, node, root, pgid, sid, comm, cgroup } = event.data;
      const launched = withUnit({ ...s, phase: 'running' }, unit, { phase: 'launched', root: keyOf(node, root), pgid, sid, cgroup });
      return withMember(launched, newMember(node, unit, root, event.position, { ppid: 0, pgid, sid, comm, cgroup }));
    }
    case 'UnitTracked':
      return withUnit(s, event.data.unit, { phase: 'running', stdio: event.data.stdio });
    case 'UnitLaunchFailed':
      return withUnit(s, event.data.unit, { phase: 'failed', reason: event.data.reason });
    case 'UnitEnded':
      return withUnit(s, event.data.unit, { phase: 'ended', exitStatus: event.data.status, signal: event.data.signal });
    case 'JobEnded':
      return { ...s, phase: 'ended', outcome: event.data.outcome };
    case 'ProcessForked': {
      const { node, unit, parent, child } = event.data;
      // Only a running parent passes on what the event leaves out (one that left may be let go).
      const from = running(getIn(s.members, keyOf(node, parent)));
      return withMember(
        s,
        newMember(node, unit, child, event.position, {
          ppid: parent.pid,
          forkedBy: parent.pid,
          pgid: event.data.pgid ?? from?.pgid ?? 0,
          sid: event.data.sid ?? from?.sid ?? 0,
          comm: event.data.comm ?? from?.comm ?? '',
          cgroup: event.data.cgroup ?? from?.cgroup,
          dependsOn: from?.dependsOn,
        }),
      );
    }
    case 'ProcessExecd':
      return event.data.comm === undefined ? s : updateMember(s, event.data.node, event.data.process, { comm: event.data.comm });
    case 'ProcessRenamed':
      return updateMember(s, event.data.node, event.data.process, { comm: event.data.comm });
    case 'ProcessExited':
      return updateMember(s, event.data.node, event.data.process, {
        state: 'exited',
        exitStatus: event.data.status ?? null,
        signal: event.data.signal ?? null,
        until: event.position,
      });
    case 'ProcessVanished':
      return updateMember(s, event.data.node, event.data.process, { state: 'vanished', until: event.position });
    case 'ProcessSessionChanged':
      return updateMember(s, event.data.node, event.data.process, { sid: event.data.sid, pgid: event.data.pgid });
    case 'ProcessGroupChanged':
      return updateMember(s, event.data.node, event.data.process, { pgid: event.data.pgid });
    case 'ProcessReparented':
      return updateMember(s, event.data.node, event.data.process, { ppid: event.data.ppid });
    case 'ProcessCgroupChanged':
      return updateMember(s, event.data.node, event.data.process, { cgroup: event.data.cgroup });
    case 'ProcessObserved': {
      const { node, unit, process, ppid, pgid, sid, comm, cgroup, parent } = event.data;
      const known = getIn(s.members, keyOf(node, process));
      if (known) return withMember(s, { ...known, ppid, pgid, sid, comm, cgroup: cgroup ?? known.cgroup });
      return withMember(s, newMember(node, unit, process, event.position, { ppid, forkedBy: parent?.pid, pgid, sid, comm, cgroup }));
    }
    case 'DependencyObserved': {
      const { node, unit, process, member, via, inode, name, ppid, pgid, sid, comm } = event.data;
      if (getIn(s.members, keyOf(node, process))) return s;
      return withMember(s, newMember(node, unit, process, event.position, { ppid, pgid, sid, comm, dependsOn: { member: keyOf(node, member), via, inode, ...(name && { name }) } }));
    }
    case 'ObservationGap':
      return { ...s, lostEvents: s.lostEvents + event.data.lost };
    case 'UnitRestorePrepared':
      return withUnit(s, event.data.unit, { restoreCgroups: event.data.cgroups });
    case 'UnitRestored':
      return restored(s, event.data.unit, event.data.node, event.data.processes, event.position);
    default:
      return s;
  }
};

const running = (m: Member | undefined): Member | undefined => (m?.state === 'running' ? m : undefined);

// ---------------------------------------------------------------------------------------------
// The live fold: what the coordinator (node agents, `ckpt verify`) keeps

/** How many departed members a live fold still recognises (a late observation of one is ignored). */
export const RECENT_EXITS = 4096;

const noBookkeeping: LiveBookkeeping = { departed: 0, departedByUnit: {}, captured: {}, pins: emptyMap(), recent: emptyMap(), ring: emptyMap() };
const withForkTree: LiveBookkeeping = { ...noBookkeeping, forks: { running: emptyMap(), parent: emptyMap(), children: emptyMap() } };

/**
 * The membership as decisions need it, in memory that follows what runs, not the history: a
 * member that exits is let go unless it is a unit's root or a kept checkpoint captured it (a
 * restore links its processes to those). Decisions read only running members, unit roots and
 * captured members, so they are the same as over evolveMembership; `ps --all`, `history` and the
 * audit fold everything with evolveMembership.
 */
export const evolveLiveMembership = (state: JobMembership, event: RecordedEvent): JobMembership => evolveLive(state, event, noBookkeeping);

/**
 * What `ckpt ps` draws by default: the live fold, that also keeps every exited member a kept
 * member was forked by — so the running processes and the exited ones they descend from, each
 * under whoever forked it. Members let go are counted per unit (the tree's "N exited processes
 * not shown"). A chain of exited ancestors is kept as long as what runs at its end.
 */
export const evolveShownMembership = (state: JobMembership, event: RecordedEvent): JobMembership => evolveLive(state, event, withForkTree);

const evolveLive = (state: JobMembership, event: RecordedEvent, initial: LiveBookkeeping): JobMembership => {
  let live = state.live ?? initial;
  if ((event.type === 'ProcessObserved' || event.type === 'DependencyObserved') && getIn(live.recent, keyOf(event.data.node, event.data.process)) !== undefined) {
    return { ...state, position: event.position }; // it left: evolveMembership would not revive it either
  }
  const next = evolveMembership(state, event);
  if (live.forks) live = { ...live, forks: followForks(state, next, live.forks, event) };
  switch (event.type) {
    case 'ProcessExited':
    case 'ProcessVanished':
      return letGo(next, live, [keyOf(event.data.node, event.data.process)]);
    case 'UnitVerified': {
      const { version, unit, node } = event.data;
      const keys = event.data.processes?.map((p) => keyOf(node, p)) ?? capturedByPid(next, unit, event.data.captured);
      const known = keys.filter((k) => getIn(next.members, k) !== undefined);
      let pins = live.pins;
      for (const k of known) pins = setIn(pins, k, (getIn(pins, k) ?? 0) + 1);
      return { ...next, live: { ...live, pins, captured: { ...live.captured, [version]: [...(live.captured[version] ?? []), ...known] } } };
    }
    case 'CheckpointAborted':
    case 'CheckpointPruned': {
      const keys = live.captured[event.data.version];
      if (!keys) return live === state.live ? next : { ...next, live };
      let pins = live.pins;
      for (const k of keys) {
        const n = (getIn(pins, k) ?? 1) - 1;
        pins = n > 0 ? setIn(pins, k, n) : removeIn(pins, k);
      }
      const { [event.data.version]: _, ...captured } = live.captured;
      return letGo(next, { ...live, pins, captured }, keys);
    }
    case 'JobEnded':
      // Every unit ended with its cgroup empty: nothing of the job runs to be observed late. The
      // departures it remembers (up to RECENT_EXITS keys) would only cost memory for as long as
      // the log is kept; a restart brings processes of new identities.
      if (live.ring.size > 0) live = { ...live, recent: emptyMap(), ring: emptyMap() };
      return live === state.live ? next : { ...next, live };
    default:
      return live === state.live ? next : { ...next, live };
  }
};

/** The processes an event may start, end or replace (the fork tree follows those). */
const touched = (e: RecordedEvent): readonly string[] => {
  switch (e.type) {
    case 'UnitLaunched':
      return [keyOf(e.data.node, e.data.root)];
    case 'ProcessForked':
      return [keyOf(e.data.node, e.data.child)];
    case 'ProcessObserved':
    case 'DependencyObserved':
    case 'ProcessExited':
    case 'ProcessVanished':
      return [keyOf(e.data.node, e.data.process)];
    case 'UnitRestored':
      return e.data.processes.map((p) => keyOf(e.data.node, p.now));
    default:
      return [];
  }
};

/**
 * The fork tree after `event` took `before` to `after`: a member that stopped running leaves the
 * pid index, a new one enters it and is linked to its parent. A member replaced by a new one of
 * the same identity keeps its links: keeping more than ps draws is harmless, less is not.
 */
const followForks = (before: JobMembership, after: JobMembership, tree: ForkTree, event: RecordedEvent): ForkTree => {
  let { running, parent, children } = tree;
  const pidOf = (m: Member) => `${m.node}/${m.pid}`;
  const born: Member[] = [];
  for (const key of touched(event)) {
    const was = getIn(before.members, key);
    const now = getIn(after.members, key);
    if (was === now) continue;
    if (was && was.until === undefined && (now === undefined || now.until !== undefined || now.since !== was.since)) {
      const rest = (getIn(running, pidOf(was)) ?? []).filter((k) => k !== key);
      running = rest.length > 0 ? setIn(running, pidOf(was), rest) : removeIn(running, pidOf(was));
    }
    if (now && (!was || now.since !== was.since)) {
      running = setIn(running, pidOf(now), [...(getIn(running, pidOf(now)) ?? []), key]);
      born.push(now);
    }
  }
  // Linked once all are indexed: processes restored together are each other's parents.
  for (const m of born) {
    if (m.forkedBy === undefined || getIn(parent, m.key) !== undefined) continue;
    let first: Member | undefined;
    for (const k of getIn(running, `${m.node}/${m.forkedBy}`) ?? []) {
      const c = getIn(after.members, k);
      if (c && c.unit === m.unit && c.since <= m.since && (!first || c.since < first.since)) first = c;
    }
    if (!first) continue;
    parent = setIn(parent, m.key, first.key);
    children = setIn(children, first.key, (getIn(children, first.key) ?? 0) + 1);
  }
  return { running, parent, children };
};

/** Lets go of those of `keys` that no longer run and nothing keeps, and of the parents only they kept. */
const letGo = (s: JobMembership, live: LiveBookkeeping, keys: readonly string[]): JobMembership => {
  let { members } = s;
  let { departed, departedByUnit, recent, ring, forks } = live;
  const roots = new Set(Object.values(s.units).map((u) => u.root));
  for (const queue = [...keys]; queue.length > 0; ) {
    const key = queue.pop()!;
    const m = getIn(members, key);
    if (!m || m.state === 'running' || getIn(live.pins, key) !== undefined || roots.has(key) || (forks && getIn(forks.children, key) !== undefined)) continue;
    members = removeIn(members, key);
    const slot = departed % RECENT_EXITS;
    const evicted = getIn(ring, String(slot));
    if (evicted !== undefined) recent = removeIn(recent, evicted);
    ring = setIn(ring, String(slot), key);
    recent = setIn(recent, key, slot);
    departed++;
    departedByUnit = { ...departedByUnit, [m.unit]: (departedByUnit[m.unit] ?? 0) + 1 };
    const up = forks && getIn(forks.parent, key);
    if (forks && up !== undefined) {
      const n = getIn(forks.children, up)! - 1;
      forks = { ...forks, parent: removeIn(forks.parent, key), children: n > 0 ? setIn(forks.children, up, n) : removeIn(forks.children, up) };
      if (n === 0) queue.push(up);
    }
  }
  return { ...s, members, live: { ...live, departed, departedByUnit, recent, ring, forks } };
};

/** Older UnitVerified events name captured processes by PID only: the unit's running members. */
const capturedByPid = (s: JobMembership, unit: UnitId, pids: readonly number[]): string[] => {
  const wanted = new Set(pids);
  return [...valuesOf(s.members)].filter((m) => m.unit === unit && m.state === 'running' && wanted.has(m.pid)).map((m) => m.key);
};

/**
 * A unit back from its images: each restored process is a new member (new identity, maybe a new
 * node and PID) linked to the member it was at checkpoint time, as the agent saw it right after
 * the restore (the first one is the unit's root); who forked it is carried over (through the old → new PID map), so escapees stay
 * escaped. The unit runs again, rooted at its restored init, in its new cgroups.
 */
const restored = (s: JobMembership, unit: UnitId, node: NodeId, processes: ReadonlyArray<RestoredProcess>, position: Position): JobMembership => {
  const u = s.units[unit];
  if (!u) return s;
  const newPid = new Map(processes.map((p) => [p.was.pid, p.now.pid]));
  let next: JobMembership = { ...s, phase: 'running', outcome: undefined };
  let root: Member | undefined;
  for (const p of processes) {
    const was = keyOf(u.node, p.was);
    const old = getIn(s.members, was);
    const m = newMember(node, unit, p.now, position, {
      ppid: p.ppid ?? old?.ppid ?? 0,
      pgid: p.pgid ?? old?.pgid ?? 0,
      sid: p.sid ?? old?.sid ?? 0,
      comm: p.comm ?? old?.comm ?? '',
      cgroup: p.cgroup ?? old?.cgroup,
      forkedBy: old?.forkedBy === undefined ? undefined : (newPid.get(old.forkedBy) ?? old.forkedBy),
      dependsOn: old?.dependsOn,
      restoredFrom: was,
    });
    next = withMember(next, m);
    root ??= m; // CRIU restores the unit's one tree: its root (the unit's init) comes first
  }
  return withUnit(next, unit, {
    phase: 'running',
    node,
    root: root?.key ?? u.root,
    pgid: root?.pgid ?? u.pgid,
    sid: root?.sid ?? u.sid,
    cgroup: root?.cgroup ?? u.cgroup,
    former: [...(u.former ?? []), { sid: u.sid, pgid: u.pgid, cgroup: u.cgroup }],
    cgroups: u.restoreCgroups ?? u.cgroups,
    restoreCgroups: undefined,
    exitStatus: null,
    signal: null,
  });
};

/** Why a member belongs to the job, and how it escaped its unit's session / group / cgroup / tree. */
export const classify = (job: JobMembership, m: Member): { reason: MemberReason; escapes: Escape[] } => {
  const unit = job.units[m.unit];
  if (unit?.root === m.key) return { reason: 'root', escapes: [] };
  if (m.dependsOn) return { reason: 'dependent', escapes: [] };
  const escapes: Escape[] = [];
  // Against the unit as it was when the member lived: now, or an incarnation before a restart.
  const was = [unit, ...(unit?.former ?? [])];
  if (unit?.sid !== undefined && was.every((u) => m.sid !== u?.sid)) escapes.push('session');
  if (unit?.pgid !== undefined && was.every((u) => m.pgid !== u?.pgid)) escapes.push('process-group');
  if (unit?.cgroup !== undefined && m.cgroup !== undefined && was.every((u) => m.cgroup !== u?.cgroup)) escapes.push('cgroup');
  if (m.forkedBy !== undefined && m.ppid !== m.forkedBy) escapes.push('reparented');
  return { reason: escapes.length > 0 ? 'escaped' : 'descendant', escapes };
};

/** Members sorted by unit, then by when they were first seen. */
export const membersOf = (job: JobMembership): Member[] => [...valuesOf(job.members)].sort((a, b) => (a.unit === b.unit ? a.since - b.since || a.pid - b.pid : a.unit < b.unit ? -1 : 1));

export const runningMembers = (job: JobMembership): Member[] => membersOf(job).filter((m) => m.state === 'running');

export const memberOf = (job: JobMembership, node: NodeId, p: ProcessRef): Member | undefined => getIn(job.members, keyOf(node, p));
