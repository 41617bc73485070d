// The node agent's process tracker: turns the system-wide proc connector stream into events
// about the processes of this node's jobs, and keeps them true with /proc:
// - a fork whose parent is tracked makes the child a member (identity: pid + start time);
// - what the kernel reports (fork, exec, exit, setsid, comm) is taken from its events;
// - what it does not report is found by re-reading /proc, targeted (RereadSchedule): a process
//   is re-read soon after it forked, exec'd or changed, a quiet one ever more rarely. How soon a
//   change is noticed:
//     setsid, exec, comm, exit ............ at once (kernel events; uid/gid changes and ptrace
//                                           attaches make the process re-read soon);
//     reparenting ......................... at once: every exit event, of a member or of any other
//                                           parent of one, re-reads the exited process's children;
//     setpgid, a cgroup move .............. within REREAD.minMs (100 ms) during the REREAD.hotMs
//                                           (1 s) after a fork, exec or change; then within the
//                                           process's interval, doubling to REREAD.maxMs (3.2 s),
//                                           when all quiet ones are re-read in one round (a quiet
//                                           one's cgroup move from its cgroup's list, read once a
//                                           round: seen within 3.2 s + REREAD.hotMs);
//                                           later only when more than REREAD.budget are due at once;
//     an exit the kernel stream lost ...... VANISH_GRACE_MS after the re-read that missed it;
// - lost kernel events (ENOBUFS) are recorded as ObservationGap and followed by a /proc
//   reconciliation over the unit's cgroups and the descendants of known members;
// - processes outside the job that share a pipe, unix socket or SysV shm with a member are
//   recorded as dependents (dependency-scan.ts: how often, and how soon one is noticed);
// - ckpt's own processes (this agent and its helpers: proc connector, criu, unshare) are never either.
import type { Subscription } from 'rxjs';
import type { ProposedEvent } from '../../domain/event-store.js';
import type { UnitCgroup } from '../../domain/events/job.js';
import { type NodeId, type ProcessRef, processKey, type UnitId } from '../../domain/identity.js';
import { runningMembers, type Unit } from '../../domain/membership.js';
import { CgroupThreadLists } from '../cgroups/thread-lists.js';
import { inUnit, unitProcesses } from '../cgroups/unit-cgroups.js';
import { type KernelProcessEvent, watchKernelProcessEvents } from '../tracking/proc-connector.js';
import { clockTicksPerSecond, descendantsOf, HeldStatFiles, type ProcStat, primaryCgroup, readCgroups, readCmdline, readStat, scanProcesses } from '../tracking/procfs.js';
import type { JobsView } from './coordinator-host.js';
import { DependencyScan } from './dependency-scan.js';
import { RereadSchedule } from './reread-schedule.js';

/** How a unit's root process ended (null, null: its exit was not seen). */
export interface RootExit {
  readonly status: number | null;
  readonly signal: number | null;
}

/**
 * How tracked processes are re-read from /proc: `adaptive` (the default, see the head of this
 * file) or `fixed`, every one every tick (`tickMs`), its cgroup every 10th, and dependents looked
 * for every dependencyScanMs — what the agent did before; kept so a benchmark can set the two
 * side by side (CKPT_TRACKING_REREADS=fixed).
 */
export type Rereads = 'adaptive' | 'fixed';

export interface ProcessTrackerOptions {
  readonly node: NodeId;
  readonly jobs: JobsView;
  readonly emit: (job: string, event: ProposedEvent) => void;
  /** The unit's own cgroups (none when the log names foreign ones). */
  readonly ownCgroups: (job: string, unit: Unit) => UnitCgroup[];
  /** The unit's last tracked process is gone. */
  readonly unitEmpty: (job: string, unit: UnitId, root: RootExit) => void;
  /** Proc connector receive buffer (bytes); tests force a tiny one to provoke overruns. */
  readonly rcvbuf?: number;
  /** The initial network namespace as a file, for an agent outside it (see proc-connector.ts). */
  readonly initialNetns?: string;
  /** The re-read tick, and the shortest interval (default 100 ms). */
  readonly tickMs?: number;
  readonly rereads?: Rereads;
  /** How often dependents (shared pipes, sockets, shm) are looked for (default 1 s). */
  readonly dependencyScanMs?: number;
  /** The kernel stream failed: the agent cannot go on. */
  readonly fatal: (message: string) => void;
  readonly log: (line: string) => void;
}

/** A process this agent tracks, as last seen. */
export interface Tracked {
  readonly pid: number;
  readonly startTime: number;
  readonly job: string;
  readonly unit: UnitId;
  ppid: number;
  pgid: number;
  sid: number;
  comm: string;
  cgroup?: string;
  /** Not of the job, but sharing something with a member: never makes others dependents. */
  dependent?: boolean;
}

const unitKey = (job: string, unit: UnitId) => `${job}/${unit}`;
/** How long a process may be missing from /proc before its exit counts as lost (see #suspectGone). */
const VANISH_GRACE_MS = 2000;
/** Adaptive re-reads: every 100 ms for 1 s after activity, then doubling to 3.2 s; at most 200 per tick (2,000/s). */
const REREAD = { minMs: 100, hotMs: 1000, maxMs: 3200, budget: 200 };

export class ProcessTracker {
  readonly #o: ProcessTrackerOptions;
  readonly #ticksPerNs = clockTicksPerSecond() / 1e9;
  readonly #tracked = new Map<number, Tracked>();
  /** Tracked processes by their parent's pid: an exit re-reads its children without a full pass. */
  readonly #byParent = new Map<number, Set<Tracked>>();
  readonly #schedule: RereadSchedule;
  /** Whether a quiet process is still in its cgroup, from the cgroup's own list: read once a round of quiet re-reads. */
  readonly #cgroupLists = new CgroupThreadLists(REREAD.hotMs);
  /** Quiet processes' /proc/PID/stat, held open (one pread a re-read) until they leave. */
  readonly #statFiles = new HeldStatFiles();
  readonly #rootExits = new Map<string, RootExit>();
  /** Tracked processes missing from /proc, and since when: their exit event may still be queued. */
  readonly #missing = new Map<number, number>();
  #kernel: Subscription | undefined;
  #buffered: KernelProcessEvent[] | undefined = [];
  #timers: NodeJS.Timeout[] = [];
  #reconcileTimer: NodeJS.Timeout | undefined;
  #lostReported = 0;
  #ticks = 0;
  readonly #dependencies: DependencyScan;

  constructor(options: ProcessTrackerOptions) {
    this.#o = options;
    const tick = options.tickMs ?? REREAD.minMs;
    this.#schedule = new RereadSchedule({ ...REREAD, minMs: tick });
    this.#dependencies = new DependencyScan({
      jobs: options.jobs,
      tracked: this.#tracked,
      helpers: (all) => this.#helpers(all),
      found: (member, stat, d) => {
        const t = this.track(member.job, member.unit, stat, undefined);
        t.dependent = true;
        this.#o.emit(member.job, {
          type: 'DependencyObserved',
          data: { ...this.#on(t), ppid: stat.ppid, pgid: stat.pgid, sid: stat.sid, comm: stat.comm, member: this.#ref(member), via: d.via, inode: d.inode, ...(d.name && { name: d.name }) },
        });
      },
      adaptive: options.rereads !== 'fixed',
      tickMs: options.dependencyScanMs ?? 1000,
      log: options.log,
    });
  }

  /** Subscribes to the kernel's process events; resolves once the kernel acknowledged. Events are held until goLive. */
  watchKernel(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#kernel = watchKernelProcessEvents({ rcvbuf: this.#o.rcvbuf, initialNetns: this.#o.initialNetns }).subscribe({
        next: (e) => {
          if (e.e === 'ready') return resolve();
          if (this.#buffered) this.#buffered.push(e);
          else this.#onKernel(e);
        },
        error: (error: Error) => {
          reject(error);
          this.#o.fatal(`the proc connector stopped: ${error.message}`);
        },
      });
    });
  }

  /**
   * The log is caught up: adopt the members it names, reconcile with /proc, then apply the
   * kernel events held meanwhile (so nothing falls in between).
   */
  goLive(): void {
    this.#adoptRunningMembers();
    this.reconcile('scan');
    const held = this.#buffered ?? [];
    this.#buffered = undefined;
    for (const e of held) this.#onKernel(e);
  }

  /** Starts the periodic re-reads and dependency scans. */
  startScans(): void {
    const tick = this.#o.tickMs ?? REREAD.minMs;
    this.#timers.push(setInterval(() => (this.#o.rereads === 'fixed' ? this.#rescanAll() : this.#reread()), tick));
    this.#timers.push(setInterval(() => this.#dependencies.tick(), this.#o.dependencyScanMs ?? 1000));
  }

  stop(): void {
    for (const t of this.#timers) clearInterval(t);
    clearTimeout(this.#reconcileTimer);
    this.#kernel?.unsubscribe();
    this.#statFiles.releaseAll();
  }

  /** The processes tracked in a unit (dependents aside): pid → start time. */
  members(job: string, unit: UnitId): Map<number, number> {
    const out = new Map<number, number>();
    for (const t of this.#tracked.values()) if (t.job === job && t.unit === unit && !t.dependent) out.set(t.pid, t.startTime);
    return out;
  }

  track(job: string, unit: UnitId, stat: ProcStat, cgroup: string | undefined): Tracked {
    return this.#add({ pid: stat.pid, startTime: stat.startTime, job, unit, ppid: stat.ppid, pgid: stat.pgid, sid: stat.sid, comm: stat.comm, cgroup });
  }

  /** Restored processes are tracked from the moment criu returns; a reconcile catches forks since. */
  adoptRestored(job: string, unit: UnitId, processes: ReadonlyArray<ProcessRef>): void {
    this.#rootExits.delete(unitKey(job, unit));
    for (const p of processes) {
      const stat = readStat(p.pid);
      const groups = readCgroups(p.pid);
      if (stat && stat.startTime === p.startTime) this.track(job, unit, stat, groups ? primaryCgroup(groups) : undefined);
    }
  }

  #add(t: Tracked): Tracked {
    const old = this.#tracked.get(t.pid);
    if (old) this.#byParent.get(old.ppid)?.delete(old);
    this.#statFiles.release(t.pid); // a file held for another process
    this.#tracked.set(t.pid, t);
    this.#childrenOf(t.ppid).add(t);
    this.#schedule.soon(t.pid, Date.now());
    this.#dependencies.changed(t.pid);
    return t;
  }

  #remove(t: Tracked) {
    this.#tracked.delete(t.pid);
    this.#missing.delete(t.pid);
    this.#schedule.forget(t.pid);
    this.#statFiles.release(t.pid);
    this.#dependencies.forget(t.pid);
    const siblings = this.#byParent.get(t.ppid);
    siblings?.delete(t);
    if (siblings?.size === 0) this.#byParent.delete(t.ppid);
  }

  #childrenOf(ppid: number): Set<Tracked> {
    let set = this.#byParent.get(ppid);
    if (!set) this.#byParent.set(ppid, (set = new Set()));
    return set;
  }

  #reparent(t: Tracked, ppid: number) {
    const siblings = this.#byParent.get(t.ppid);
    siblings?.delete(t);
    if (siblings?.size === 0) this.#byParent.delete(t.ppid);
    t.ppid = ppid;
    this.#childrenOf(ppid).add(t);
    this.#o.emit(t.job, { type: 'ProcessReparented', data: { ...this.#on(t), ppid } });
  }

  /** After a restart of the agent: the running members of this node's units, as the log knows them. */
  #adoptRunningMembers() {
    for (const job of this.#o.jobs.jobs()) {
      const state = this.#o.jobs.membership(job)!;
      const own = new Map<UnitId, UnitCgroup[]>();
      for (const m of runningMembers(state)) {
        const unit = state.units[m.unit];
        if (m.node !== this.#o.node || unit?.phase !== 'running') continue;
        if (!own.has(m.unit)) own.set(m.unit, this.#o.ownCgroups(job, unit));
        // A live member is adopted only from the unit's own cgroups: a process the log claims that
        // lives elsewhere is never tracked. One gone meanwhile is, to be recorded vanished; a
        // dependent is outside by nature.
        const now = readStat(m.pid);
        const alive = now?.startTime === m.startTime && now.state !== 'Z'; // a zombie has left its cgroups
        if (alive && !m.dependsOn && !inUnit(own.get(m.unit)!, m)) {
          this.#o.log(`not adopting process ${m.pid} of ${job}/${m.unit}: the log has it as a member, but it is not in the unit's own cgroups`);
          continue;
        }
        this.#add({ pid: m.pid, startTime: m.startTime, job, unit: m.unit, ppid: m.ppid, pgid: m.pgid, sid: m.sid, comm: m.comm, cgroup: m.cgroup, dependent: !!m.dependsOn });
      }
    }
  }

  // ── kernel events ────────────────────────────────────────────────────────────────────────────

  #ref = (t: Tracked): ProcessRef => ({ pid: t.pid, startTime: t.startTime });
  #on = (t: Tracked) => ({ node: this.#o.node, unit: t.unit, process: this.#ref(t) });

  #onKernel(e: KernelProcessEvent) {
    switch (e.e) {
      case 'fork': {
        if (e.pid !== e.tgid) return; // a thread
        const parent = this.#tracked.get(e.ptgid);
        if (!parent || this.#tracked.has(e.pid)) return;
        const stat = readStat(e.pid);
        // A child that already exited cannot be read: its start time comes from the event's clock.
        const startTime = stat?.startTime ?? Math.floor(e.ts * this.#ticksPerNs);
        const child = this.track(
          parent.job,
          parent.unit,
          { ...(stat ?? { pid: e.pid, startTime, pgid: parent.pgid, sid: parent.sid, comm: parent.comm, state: 'R', threads: 1 }), ppid: e.ptgid },
          parent.cgroup,
        );
        child.dependent = parent.dependent;
        this.#o.emit(parent.job, {
          type: 'ProcessForked',
          data: {
            node: this.#o.node,
            unit: parent.unit,
            parent: this.#ref(parent),
            child: this.#ref(child),
            pgid: child.pgid,
            sid: child.sid,
            comm: child.comm,
            ...(child.cgroup ? { cgroup: child.cgroup } : {}),
          },
        });
        return;
      }
      case 'exec': {
        const t = e.pid === e.tgid ? this.#tracked.get(e.pid) : undefined;
        if (!t) return;
        const stat = readStat(e.pid);
        if (stat && stat.startTime === t.startTime) t.comm = stat.comm;
        const argv = readCmdline(e.pid);
        this.#o.emit(t.job, { type: 'ProcessExecd', data: { ...this.#on(t), comm: t.comm, ...(argv ? { argv } : {}) } });
        this.#schedule.soon(t.pid, Date.now()); // a shell's child often changes its group around exec
        this.#dependencies.changed(t.pid); // and its descriptors
        return;
      }
      case 'exit': {
        if (e.pid !== e.tgid) return;
        const t = this.#tracked.get(e.pid);
        if (t) this.#exited(t, { status: e.status, signal: e.termsig, coreDumped: e.termsig !== null && (e.code & 0x80) !== 0 });
        // Not a member, but the parent of some (a launcher, a double fork's middle process): its
        // children were re-parented before the exit was reported.
        else this.#rereadChildren(e.pid);
        return;
      }
      case 'sid': {
        const t = e.pid === e.tgid ? this.#tracked.get(e.pid) : undefined;
        const stat = t && readStat(e.pid);
        if (!t || !stat || stat.startTime !== t.startTime) return;
        t.sid = stat.sid;
        t.pgid = stat.pgid;
        this.#o.emit(t.job, { type: 'ProcessSessionChanged', data: { ...this.#on(t), sid: t.sid, pgid: t.pgid } });
        this.#schedule.soon(t.pid, Date.now());
        return;
      }
      case 'comm': {
        const t = e.pid === e.tgid ? this.#tracked.get(e.pid) : undefined;
        if (!t || t.comm === e.comm) return;
        t.comm = e.comm;
        this.#o.emit(t.job, { type: 'ProcessRenamed', data: { ...this.#on(t), comm: e.comm } });
        return;
      }
      case 'uid':
      case 'gid':
      case 'ptrace': {
        // Nothing recorded of these; but a process that changes credentials or is attached to is
        // busy (a daemon dropping privileges around setsid, a debugger): re-read it soon.
        const t = e.pid === e.tgid ? this.#tracked.get(e.pid) : undefined;
        if (t) this.#schedule.soon(t.pid, Date.now());
        return;
      }
      case 'overrun': {
        const lost = (e.lost ?? e.count) - this.#lostReported;
        this.#lostReported = e.lost ?? e.count;
        const jobs = new Set([...this.#tracked.values()].map((t) => t.job));
        for (const job of jobs) {
          this.#o.emit(job, {
            type: 'ObservationGap',
            data: { node: this.#o.node, source: 'proc-connector', lost: Math.max(lost, 0), reason: 'the kernel dropped process events (receive buffer full)' },
          });
        }
        // Reconcile once the burst is over, not on every dropped batch.
        clearTimeout(this.#reconcileTimer);
        this.#reconcileTimer = setTimeout(() => this.reconcile('reconcile'), 50);
        return;
      }
    }
  }

  #exited(t: Tracked, how: { status: number | null; signal: number | null; coreDumped: boolean } | 'vanished') {
    this.#remove(t);
    if (how === 'vanished') this.#o.emit(t.job, { type: 'ProcessVanished', data: this.#on(t) });
    else this.#o.emit(t.job, { type: 'ProcessExited', data: { ...this.#on(t), status: how.status, signal: how.signal, ...(how.coreDumped ? { coreDumped: true } : {}) } });
    const unit = this.#o.jobs.membership(t.job)?.units[t.unit];
    if (unit?.root === processKey(this.#o.node, this.#ref(t))) {
      this.#rootExits.set(unitKey(t.job, t.unit), how === 'vanished' ? { status: null, signal: null } : { status: how.status, signal: how.signal });
    }
    this.#rereadChildren(t.pid);
    this.#endUnitIfEmpty(t.job, t.unit);
  }

  /** The kernel re-parented the children of an exited process before reporting the exit: read their new parent now. */
  #rereadChildren(pid: number) {
    const children = this.#byParent.get(pid);
    if (!children) return;
    const now = Date.now();
    for (const child of [...children]) {
      const stat = readStat(child.pid);
      if (stat && stat.startTime === child.startTime && stat.ppid !== child.ppid) this.#reparent(child, stat.ppid);
      this.#schedule.soon(child.pid, now);
    }
  }

  #endUnitIfEmpty(job: string, unit: UnitId) {
    for (const t of this.#tracked.values()) if (t.job === job && t.unit === unit) return;
    this.#o.unitEmpty(job, unit, this.#rootExits.get(unitKey(job, unit)) ?? { status: null, signal: null });
  }

  // ── /proc: re-reads, reconciliation, dependents ─────────────────────────────────────────────

  /**
   * Adaptive: only the processes due (see the head of this file), their cgroup with them. A quiet
   * one's stat is read through its file held open, and its cgroup from the cgroup's list of
   * threads, read once a round for all of them; only one no longer listed there has its own
   * /proc/PID/cgroup read, to say where it went.
   */
  #reread() {
    const now = Date.now();
    for (const pid of this.#schedule.take(now)) {
      const t = this.#tracked.get(pid);
      if (!t) {
        this.#schedule.forget(pid);
        continue;
      }
      const stat = this.#statFiles.read(pid, this.#schedule.isQuiet(pid));
      if (!stat || stat.startTime !== t.startTime) {
        this.#suspectGone(t);
        if (this.#tracked.has(pid)) this.#schedule.after(pid, now, VANISH_GRACE_MS);
      } else if (stat.state === 'Z' || stat.state === 'X') {
        // Exited: its exit event is queued, or came before it was tracked (a process restored
        // and ended at once) — then, after the grace period, it has vanished.
        this.#suspectGone(t);
        if (this.#tracked.has(pid)) this.#schedule.after(pid, now, VANISH_GRACE_MS);
      } else if (this.#observeChanges(t, stat, !this.#stillListed(t, now))) this.#schedule.soon(pid, now);
      else this.#schedule.quiet(pid, now);
    }
  }

  /** A quiet process its cgroup still lists (else its own cgroup file is read). */
  #stillListed(t: Tracked, now: number): boolean {
    return t.cgroup !== undefined && this.#schedule.isQuiet(t.pid) && this.#cgroupLists.holds(t.cgroup, t.pid, now);
  }

  /** Fixed: every tracked process every tick, its cgroup every 10th tick. */
  #rescanAll() {
    const readCgroup = ++this.#ticks % 10 === 0;
    for (const t of [...this.#tracked.values()]) {
      const stat = readStat(t.pid);
      if (!stat || stat.startTime !== t.startTime) this.#suspectGone(t);
      else if (stat.state !== 'Z' && stat.state !== 'X') this.#observeChanges(t, stat, readCgroup);
    }
  }

  /**
   * A process /proc no longer shows has exited, but the kernel stream may be a little behind:
   * its exit (and the forks before it) can still be queued. Only when no exit event came within
   * the grace period was the exit lost: then it has vanished.
   */
  #suspectGone(t: Tracked) {
    const since = this.#missing.get(t.pid);
    if (since === undefined) this.#missing.set(t.pid, Date.now());
    else if (Date.now() - since >= VANISH_GRACE_MS) this.#exited(t, 'vanished');
  }

  /** Records what changed since the process was last seen; true when something did. */
  #observeChanges(t: Tracked, stat: ProcStat, readCgroup: boolean): boolean {
    let changed = false;
    if (stat.sid !== t.sid) {
      t.sid = stat.sid;
      t.pgid = stat.pgid;
      this.#o.emit(t.job, { type: 'ProcessSessionChanged', data: { ...this.#on(t), sid: t.sid, pgid: t.pgid } });
      changed = true;
    } else if (stat.pgid !== t.pgid) {
      t.pgid = stat.pgid;
      this.#o.emit(t.job, { type: 'ProcessGroupChanged', data: { ...this.#on(t), pgid: t.pgid } });
      changed = true;
    }
    if (stat.ppid !== t.ppid) {
      this.#reparent(t, stat.ppid);
      changed = true;
    }
    if (readCgroup) {
      const groups = readCgroups(t.pid);
      const cgroup = groups && primaryCgroup(groups);
      if (cgroup && cgroup !== t.cgroup) {
        t.cgroup = cgroup;
        this.#o.emit(t.job, { type: 'ProcessCgroupChanged', data: { ...this.#on(t), cgroup } });
        changed = true;
      }
    }
    return changed;
  }

  /**
   * Restores the truth from /proc: members are the processes in a unit's cgroups and the
   * descendants of its known members; known members that are gone have vanished.
   */
  reconcile(source: 'scan' | 'reconcile'): void {
    const all = scanProcesses();
    const byPid = new Map(all.map((p) => [p.pid, p]));
    for (const t of [...this.#tracked.values()]) {
      const now = byPid.get(t.pid);
      if (!now || now.startTime !== t.startTime) this.#suspectGone(t);
      else this.#observeChanges(t, now, true);
    }
    const children = new Map<number, ProcStat[]>();
    for (const p of all) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p]);
    // criu restoring into a unit's cgroups (and the shell that moves it there) is not the unit's.
    const helpers = this.#helpers(all);
    for (const job of this.#o.jobs.jobs()) {
      for (const unit of this.#o.jobs.myUnits(job)) {
        if (unit.phase !== 'running' && unit.phase !== 'launched') continue;
        const own = this.#o.ownCgroups(job, unit);
        const inCgroups = new Set(own.length > 0 ? safe(() => unitProcesses(own), []) : []);
        // From the members alive as themselves: a PID some member left behind is someone else's now.
        const queue = [...this.#tracked.values()].filter((t) => t.job === job && t.unit === unit.unit && byPid.get(t.pid)?.startTime === t.startTime).map((t) => t.pid);
        const found = new Set<number>(inCgroups);
        for (let pid = queue.pop(); pid !== undefined; pid = queue.pop()) {
          for (const c of children.get(pid) ?? []) if (!found.has(c.pid)) found.add(c.pid), queue.push(c.pid);
        }
        // A zombie has exited already (its exit seen, or lost): never a new member. A checkpoint's
        // cut may hold one (a parent frozen before reaping it); verify accepts it as such.
        const fresh = [...found].map((pid) => byPid.get(pid)).filter((p): p is ProcStat => !!p && p.state !== 'Z' && !this.#tracked.has(p.pid) && !helpers.has(p.pid));
        for (const p of fresh.sort((a, b) => a.startTime - b.startTime || a.pid - b.pid)) {
          const parent = this.#tracked.get(p.ppid);
          const groups = readCgroups(p.pid);
          const t = this.track(job, unit.unit, p, groups ? primaryCgroup(groups) : undefined);
          this.#o.emit(job, {
            type: 'ProcessObserved',
            data: { ...this.#on(t), ppid: p.ppid, pgid: p.pgid, sid: p.sid, comm: p.comm, source, ...(parent ? { parent: this.#ref(parent) } : {}), ...(t.cgroup ? { cgroup: t.cgroup } : {}) },
          });
        }
      }
    }
  }

  /**
   * ckpt's own processes: this agent and what it runs (the proc-connector helper, criu, the
   * shell that moves criu into a unit's cgroups, unshare), never members or dependents of a job.
   * Found by descent from the agent, not through a tracked member: what criu restores is the
   * job's as soon as it is adopted, though criu is still its parent.
   */
  #helpers(all: readonly ProcStat[]): Set<number> {
    const members = new Set([...this.#tracked.values()].map((t) => `${t.pid}@${t.startTime}`));
    const table = all.filter((p) => p.pid === process.pid || !members.has(`${p.pid}@${p.startTime}`));
    return new Set([process.pid, ...descendantsOf([process.pid], table).map((p) => p.pid)]);
  }
}

const safe = <T>(fn: () => T, fallback: T): T => {
  try {
    return fn();
  } catch {
    return fallback;
  }
};
