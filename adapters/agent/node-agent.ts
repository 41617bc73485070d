// The node agent's process tracker: turns the system-wide proc connector stream into events
// about the processes of this node's jobs, and keeps them true with /proc:
// - a fork whose parent is tracked makes the child a member (identity: pid + start time);
// - setpgid has no kernel event, and re-parenting happens silently: tracked processes are
//   re-read from /proc periodically and after every exit of a parent;
// - lost kernel events (ENOBUFS) are recorded as ObservationGap and followed by a /proc
//   reconciliation over the unit's cgroups and the descendants of known members;
// - processes outside the job that share a pipe, unix socket or SysV shm with a member are
//   recorded as dependents;
// - ckpt's own processes (this agent and its helpers: proc connector, criu, unshare) are never either.
// It also serves the launch protocol of `ckpt run`: UnitAssigned → cgroups created,
// UnitLaunched (root held at a gate) → tracked → UnitTracked, after which the root may exec.
import { readFileSync } from 'node:fs';
import { arch, hostname, release } from 'node:os';
import type { Subscription } from 'rxjs';
import type { EventStore, ProposedEvent, RecordedEvent } from '../../domain/event-store.js';
import { InvalidEventError } from '../../domain/events/decode.js';
import { NAME_PATTERN } from '../../domain/codecs.js';
import { jobOfStream, jobStream, nodeStream, processKey, type NodeId, type ProcessRef, type UnitId } from '../../domain/identity.js';
import { evolveCheckpoint, initialCheckpointState, type NodeCheckpointer } from '../../domain/checkpoint-coordinator.js';
import { evolveJobCoordinator, initialJobCoordinator, type JobCoordinatorState } from '../../domain/job-coordinator.js';
import { runningMembers, type Unit } from '../../domain/membership.js';
import { CriuCheckpointer } from '../checkpointers/criu-checkpointer.js';
import { DeadlineTimer } from '../timer/deadline-timer.js';
import { JobWork } from './job-work.js';
import { RequestGateway } from './request-gateway.js';
import { locateCriu } from '../checkpointers/criu.js';
import { createUnitCgroups, detectCgroups, inUnit, ownUnitCgroups, removeUnitCgroups, unitCgroupPath, unitProcesses, type CgroupLayout } from '../cgroups/unit-cgroups.js';
import type { UnitCgroup } from '../../domain/events/job.js';
import { watchKernelProcessEvents, type KernelProcessEvent } from '../tracking/proc-connector.js';
import {
  clockTicksPerSecond,
  descendantsOf,
  findDependents,
  openResources,
  primaryCgroup,
  readCgroups,
  readCmdline,
  readStat,
  scanProcesses,
  type ProcStat,
} from '../tracking/procfs.js';

export interface NodeAgentOptions {
  /** The store, opened with this node as its default actor. */
  readonly store: EventStore;
  readonly node: NodeId;
  readonly version: string;
  /** Unit cgroups go to PREFIX/JOB/UNIT in each hierarchy; one prefix per store, so two stores'
   *  jobs of the same name never share a cgroup. */
  readonly cgroupPrefix: string;
  /** $CKPT_HOME/images: where this node's units are dumped and versions committed. */
  readonly imagesRoot: string;
  /** Where restore logs go ($CKPT_HOME/restarts). */
  readonly workRoot: string;
  /** Where CRIU's functional probe results are cached ($CKPT_HOME/criu-probe.json); none: probed on every start. */
  readonly criuProbeCache?: string;
  /** Proc connector receive buffer (bytes); tests force a tiny one to provoke overruns. */
  readonly rcvbuf?: number;
  /** How often tracked processes are re-read from /proc (pgid, sid, parent, cgroup). */
  readonly rescanMs?: number;
  /** How often dependents (shared pipes, sockets, shm) are looked for. */
  readonly dependencyScanMs?: number;
  readonly log?: (line: string) => void;
}

/** A process this agent tracks, as last seen. */
interface Tracked {
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
const RETRY_MS = 1000;
const MAX_RETRY_MS = 30_000;

export class NodeAgent {
  readonly #o: NodeAgentOptions;
  readonly #ticksPerNs: number;
  readonly #tracked = new Map<number, Tracked>();
  /** Each job's coordinator state (its membership included), folded from the log. */
  readonly #jobs = new Map<string, JobCoordinatorState>();
  /** The latest probe of every node's checkpointer (node streams), for jobs seen later. */
  #nodes: Record<string, NodeCheckpointer> = {};
  #work: JobWork | undefined;
  #deadlines: DeadlineTimer | undefined;
  /** Units whose cgroups / tracking this agent already asked for (before its own events come back). */
  readonly #handled = new Set<string>();
  readonly #rootExits = new Map<string, { status: number | null; signal: number | null }>();
  readonly #dependencies = new Set<string>();
  readonly #outbox = new Map<string, ProposedEvent[]>();
  #flushing: Promise<void> = Promise.resolve();
  #flushScheduled = false;
  /** The outbox's next retry delay: doubles while appends fail (up to MAX_RETRY_MS), reset by a success. */
  #retryMs = RETRY_MS / 2;
  #layout: CgroupLayout | undefined;
  #kernel: Subscription | undefined;
  #log: Subscription | undefined;
  #timers: NodeJS.Timeout[] = [];
  #caughtUp = false;
  #lostReported = 0;
  #reconcileTimer: NodeJS.Timeout | undefined;
  #self: ProcessRef | undefined;
  #gateway: RequestGateway | undefined;

  constructor(options: NodeAgentOptions) {
    this.#o = options;
    this.#ticksPerNs = clockTicksPerSecond() / 1e9;
  }

  /** Resolves once the kernel stream is live, the log is caught up and /proc reconciled. */
  async start(): Promise<void> {
    const { store, node } = this.#o;
    this.#layout = detectCgroups();
    const self = readStat(process.pid)!;
    this.#self = { pid: self.pid, startTime: self.startTime };

    // Kernel events first (buffered until the log is caught up), so nothing falls in between.
    const buffered: KernelProcessEvent[] = [];
    await new Promise<void>((resolve, reject) => {
      this.#kernel = watchKernelProcessEvents({ rcvbuf: this.#o.rcvbuf }).subscribe({
        next: (e) => {
          if (e.e === 'ready') return resolve();
          if (this.#caughtUp) this.#onKernel(e);
          else buffered.push(e);
        },
        error: (error: Error) => {
          reject(error);
          this.#fatal(`the proc connector stopped: ${error.message}`);
        },
      });
    });

    const checkpointer = new CriuCheckpointer(locateCriu(), this.#o.imagesRoot, this.#o.criuProbeCache);
    this.#work = new JobWork({
      store,
      node,
      checkpointer,
      imagesRoot: this.#o.imagesRoot,
      emit: (job, e) => this.#emit(job, e),
      reconcileUnit: () => this.#reconcile('reconcile'),
      tracked: (job, unit) => new Map([...this.#tracked.values()].filter((t) => t.job === job && t.unit === unit && !t.dependent).map((t) => [t.pid, t.startTime])),
      restartCgroups: (job, unit, restart, limits) => createUnitCgroups(this.#layout!, unitCgroupPath(this.#o.cgroupPrefix, job, unit, restart), limits),
      ownCgroups: (job, unit, recorded) => this.#own(job, unit, recorded),
      adoptRestored: (job, unit, processes) => this.#adoptRestored(job, unit, processes),
      workRoot: this.#o.workRoot,
      log: (line) => this.#o.log?.(line),
    });
    // Deadlines are events: every agent runs a timer, fed from its own reading of the log; a
    // deadline is recorded reached once (check-and-append).
    this.#deadlines = new DeadlineTimer({ store, log: (line) => this.#o.log?.(line) });
    await new Promise<void>((resolve, reject) => this.#follow(1, resolve, reject));
    this.#caughtUp = true;
    this.#adoptRunningMembers();
    this.#reconcile('scan');
    for (const e of buffered) this.#onKernel(e);
    for (const job of this.#jobs.keys()) this.#actOn(job);
    this.#work.goLive();
    this.#deadlines.goLive();

    // What this node's checkpointer can really do, probed, not assumed: the coordinator plans from it.
    const probe = await checkpointer.probe();
    if (!probe.usable) this.#o.log?.(`CRIU cannot be used on this node: ${probe.problems.join('; ')}`);
    await store.append(nodeStream(node), [
      { type: 'NodeRegistered', data: { node, hostname: hostname(), kernel: release(), bootId: bootId(), arch: arch() } },
      { type: 'NodeAgentStarted', data: { node, agent: this.#self, version: this.#o.version } },
      { type: 'CheckpointerProbed', data: { node, ...probe } },
    ]).catch((error) => this.#o.log?.(`could not register the node: ${error.message}`));

    this.#every(this.#o.rescanMs ?? 100, () => this.#rescan());
    this.#every(this.#o.dependencyScanMs ?? 1000, () => this.#scanDependencies());
  }

  /**
   * Opens the request gateway (adapters/agent/request-gateway.ts) on a socket: once this process
   * holds the node's agent lock for the store, so a stale socket it replaces is no one's.
   */
  async openGateway(socket: string): Promise<void> {
    const gateway = new RequestGateway({ store: this.#o.store, node: this.#o.node, socket, imagesRoot: this.#o.imagesRoot, ownCgroups: (job, unit, recorded) => this.#own(job, unit, recorded), log: this.#o.log });
    await gateway.open();
    this.#gateway = gateway;
  }

  #stopped = false;

  async stop(reason: string): Promise<void> {
    this.#stopped = true;
    await this.#gateway?.close();
    for (const t of this.#timers) clearInterval(t);
    clearTimeout(this.#reconcileTimer);
    this.#kernel?.unsubscribe();
    this.#log?.unsubscribe();
    this.#deadlines?.stop();
    await this.#flush();
    if (this.#self) {
      await this.#o.store
        .append(nodeStream(this.#o.node), [{ type: 'NodeAgentStopped', data: { node: this.#o.node, agent: this.#self, reason } }])
        .catch(() => {});
    }
  }

  #every(ms: number, fn: () => void) {
    this.#timers.push(setInterval(fn, ms));
  }

  #fatal(message: string) {
    this.#o.log?.(message);
    process.exitCode = 1;
    void this.stop(message).finally(() => process.exit(1));
  }

  // ── the log: job state, and the agent's part of the launch protocol ─────────────────────────

  #position = 0;

  /**
   * Follows the log from a position. If the store goes away later (a PostgreSQL restart), the
   * agent keeps tracking — observations wait in the outbox — and follows again from the last
   * position it folded, so no event is applied twice.
   */
  #follow(from: number, caughtUp?: () => void, failed?: (error: Error) => void) {
    this.#log = this.#o.store.subscribeAll({ from, onCaughtUp: caughtUp }).subscribe({
      next: (e) => this.#onLogEvent(e),
      error: (error: Error) => {
        if (failed && !this.#caughtUp) return failed(error);
        this.#o.log?.(`lost the event store (${error.message}); following it again in ${RETRY_MS} ms`);
        setTimeout(() => this.#stopped || this.#follow(this.#position + 1), RETRY_MS);
      },
    });
  }

  #onLogEvent(e: RecordedEvent) {
    this.#position = e.position;
    this.#deadlines!.observe(e);
    if (e.type === 'CheckpointerProbed') {
      for (const [job, state] of this.#jobs) {
        this.#jobs.set(job, evolveJobCoordinator(state, e));
        this.#work!.updateState(job, this.#jobs.get(job)!);
      }
      this.#nodes = evolveCheckpoint({ ...initialCheckpointState(''), nodes: this.#nodes }, e).nodes;
      return;
    }
    const job = jobOfStream(e.stream);
    if (!job) {
      if (e.stream.startsWith('job-') && !this.#badStreams.has(e.stream)) {
        this.#badStreams.add(e.stream);
        this.#o.log?.(`ignoring stream ${JSON.stringify(e.stream)}: its job name is not a valid name (${NAME_PATTERN.source}); nothing in it is acted on`);
      }
      return;
    }
    const fresh = initialJobCoordinator(job);
    const state = evolveJobCoordinator(this.#jobs.get(job) ?? { ...fresh, checkpoint: { ...fresh.checkpoint, nodes: this.#nodes } }, e);
    this.#jobs.set(job, state);
    this.#work!.fold(job, state, e);
    // Forks of restored processes between criu's return and their adoption: in the unit's new cgroups.
    if (e.type === 'UnitRestored' && e.data.node === this.#o.node && this.#caughtUp) this.#reconcile('reconcile');
    if (this.#caughtUp) this.#actOn(job);
  }

  readonly #badStreams = new Set<string>();

  #membership(job: string) {
    return this.#jobs.get(job)?.checkpoint.job;
  }

  /** Restored processes are tracked from the moment criu returns; a reconcile catches forks since. */
  #adoptRestored(job: string, unit: UnitId, processes: ReadonlyArray<ProcessRef>) {
    const key = unitKey(job, unit);
    this.#handled.delete(`ended ${key}`);
    this.#rootExits.delete(key);
    for (const p of processes) {
      const stat = readStat(p.pid);
      const groups = readCgroups(p.pid);
      if (stat && stat.startTime === p.startTime) this.#track(job, unit, stat, groups ? primaryCgroup(groups) : undefined);
    }
  }

  #myUnits(job: string): Unit[] {
    const state = this.#membership(job);
    return state ? Object.values(state.units).filter((u) => u.node === this.#o.node) : [];
  }

  /** Idempotent: does what the job's current state asks of this node and has not been done. */
  #actOn(job: string) {
    for (const unit of this.#myUnits(job)) {
      const key = unitKey(job, unit.unit);
      if ((unit.phase === 'assigned' || unit.phase === 'launched') && !this.#handled.has(`refused ${key}`)) {
        try {
          this.#own(job, unit.unit, unit.cgroups);
        } catch (error) {
          // A launch into cgroups this agent did not make: refused, on record, before anything is tracked.
          this.#handled.add(`refused ${key}`).add(`track ${key}`);
          this.#emit(job, { type: 'UnitLaunchFailed', data: { unit: unit.unit, node: this.#o.node, reason: (error as Error).message } });
          continue;
        }
      }
      if (unit.phase === 'assigned' && unit.cgroups.length === 0 && !this.#handled.has(`cgroups ${key}`)) {
        this.#handled.add(`cgroups ${key}`);
        this.#createCgroups(job, unit);
      }
      if (unit.phase === 'launched' && !this.#handled.has(`track ${key}`)) {
        this.#handled.add(`track ${key}`);
        this.#trackRoot(job, unit);
      }
    }
  }

  /** The unit's cgroups as this agent derives them; throws a ForeignCgroupError when the log names others. */
  #own(job: string, unit: UnitId, recorded: readonly UnitCgroup[]): UnitCgroup[] {
    return ownUnitCgroups(this.#layout!, this.#o.cgroupPrefix, job, unit, recorded);
  }

  /** The unit's own cgroups, or none (logged) when the log names foreign ones: their refusal is on record. */
  #ownOrNone(job: string, unit: Unit): UnitCgroup[] {
    try {
      return this.#own(job, unit.unit, unit.cgroups);
    } catch (error) {
      this.#o.log?.((error as Error).message);
      return [];
    }
  }

  #createCgroups(job: string, unit: Unit) {
    const { node } = this.#o;
    try {
      const cgroups = createUnitCgroups(this.#layout!, unitCgroupPath(this.#o.cgroupPrefix, job, unit.unit), unit.limits);
      this.#emit(job, { type: 'UnitCgroupsCreated', data: { unit: unit.unit, node, cgroups, limits: unit.limits } });
    } catch (error) {
      this.#emit(job, { type: 'UnitLaunchFailed', data: { unit: unit.unit, node, reason: (error as Error).message } });
    }
  }

  #trackRoot(job: string, unit: Unit) {
    const state = this.#membership(job);
    const root = state && runningMembers(state).find((m) => m.key === unit.root);
    if (!root) return;
    const stat = readStat(root.pid);
    if (!stat || stat.startTime !== root.startTime) {
      this.#emit(job, { type: 'UnitLaunchFailed', data: { unit: unit.unit, node: this.#o.node, reason: 'the root process was gone before it could be tracked' } });
      return;
    }
    // Only a process in the unit's own cgroups (checked in the kernel's lists) becomes its root.
    if (!inUnit(this.#ownOrNone(job, unit), root)) {
      const reason = `refused: process ${root.pid} (${stat.comm}) named as the root of unit ${unit.unit} is not in the cgroups this agent created for the unit; it is not tracked, frozen, dumped or killed`;
      this.#o.log?.(reason);
      this.#emit(job, { type: 'UnitLaunchFailed', data: { unit: unit.unit, node: this.#o.node, reason } });
      return;
    }
    const groups = readCgroups(root.pid);
    const t = this.#track(job, unit.unit, stat, groups ? primaryCgroup(groups) : root.cgroup);
    // UnitLaunched does not say who the root's parent is: the process that made its PID namespace
    // has exited by now and left it to PID 1 (or a subreaper).
    if (stat.ppid !== root.ppid) this.#emit(job, { type: 'ProcessReparented', data: { ...this.#on(t), ppid: stat.ppid } });
    const resources = openResources(root.pid);
    const stdio = resources ? [...resources.pipes, ...resources.unixSockets] : [];
    this.#emit(job, { type: 'UnitTracked', data: { unit: unit.unit, node: this.#o.node, root: { pid: root.pid, startTime: root.startTime }, stdio } });
  }

  /** After a restart of the agent: the running members of this node's units, as the log knows them. */
  #adoptRunningMembers() {
    for (const [job, { checkpoint: { job: state } }] of this.#jobs) {
      const own = new Map<UnitId, UnitCgroup[]>();
      for (const m of runningMembers(state)) {
        const unit = state.units[m.unit];
        if (m.node !== this.#o.node || unit?.phase !== 'running') continue;
        if (!own.has(m.unit)) own.set(m.unit, this.#ownOrNone(job, unit));
        // A live member is adopted only from the unit's own cgroups: a process the log claims that
        // lives elsewhere is never tracked. One gone meanwhile is, to be recorded vanished; a
        // dependent is outside by nature.
        const now = readStat(m.pid);
        const alive = now?.startTime === m.startTime && now.state !== 'Z'; // a zombie has left its cgroups
        if (alive && !m.dependsOn && !inUnit(own.get(m.unit)!, m)) {
          this.#o.log?.(`not adopting process ${m.pid} of ${job}/${m.unit}: the log has it as a member, but it is not in the unit's own cgroups`);
          continue;
        }
        this.#tracked.set(m.pid, { pid: m.pid, startTime: m.startTime, job, unit: m.unit, ppid: m.ppid, pgid: m.pgid, sid: m.sid, comm: m.comm, cgroup: m.cgroup, dependent: !!m.dependsOn });
      }
    }
  }

  #track(job: string, unit: UnitId, stat: ProcStat, cgroup: string | undefined): Tracked {
    const t: Tracked = { pid: stat.pid, startTime: stat.startTime, job, unit, ppid: stat.ppid, pgid: stat.pgid, sid: stat.sid, comm: stat.comm, cgroup };
    this.#tracked.set(stat.pid, t);
    return t;
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
        const child = this.#track(parent.job, parent.unit, stat ?? { pid: e.pid, startTime, ppid: e.ptgid, pgid: parent.pgid, sid: parent.sid, comm: parent.comm, state: 'R', threads: 1 }, parent.cgroup);
        child.ppid = e.ptgid;
        child.dependent = parent.dependent;
        this.#emit(parent.job, {
          type: 'ProcessForked',
          data: { node: this.#o.node, unit: parent.unit, parent: this.#ref(parent), child: this.#ref(child), pgid: child.pgid, sid: child.sid, comm: child.comm, ...(child.cgroup ? { cgroup: child.cgroup } : {}) },
        });
        return;
      }
      case 'exec': {
        const t = e.pid === e.tgid ? this.#tracked.get(e.pid) : undefined;
        if (!t) return;
        const stat = readStat(e.pid);
        if (stat && stat.startTime === t.startTime) t.comm = stat.comm;
        const argv = readCmdline(e.pid);
        this.#emit(t.job, { type: 'ProcessExecd', data: { ...this.#on(t), comm: t.comm, ...(argv ? { argv } : {}) } });
        return;
      }
      case 'exit': {
        const t = e.pid === e.tgid ? this.#tracked.get(e.pid) : undefined;
        if (!t) return;
        this.#exited(t, { status: e.status, signal: e.termsig, coreDumped: e.termsig !== null && (e.code & 0x80) !== 0 });
        return;
      }
      case 'sid': {
        const t = e.pid === e.tgid ? this.#tracked.get(e.pid) : undefined;
        const stat = t && readStat(e.pid);
        if (!t || !stat || stat.startTime !== t.startTime) return;
        t.sid = stat.sid;
        t.pgid = stat.pgid;
        this.#emit(t.job, { type: 'ProcessSessionChanged', data: { ...this.#on(t), sid: t.sid, pgid: t.pgid } });
        return;
      }
      case 'comm': {
        const t = e.pid === e.tgid ? this.#tracked.get(e.pid) : undefined;
        if (!t || t.comm === e.comm) return;
        t.comm = e.comm;
        this.#emit(t.job, { type: 'ProcessRenamed', data: { ...this.#on(t), comm: e.comm } });
        return;
      }
      case 'overrun': {
        const lost = (e.lost ?? e.count) - this.#lostReported;
        this.#lostReported = e.lost ?? e.count;
        const jobs = new Set([...this.#tracked.values()].map((t) => t.job));
        for (const job of jobs) {
          this.#emit(job, { type: 'ObservationGap', data: { node: this.#o.node, source: 'proc-connector', lost: Math.max(lost, 0), reason: 'the kernel dropped process events (receive buffer full)' } });
        }
        // Reconcile once the burst is over, not on every dropped batch.
        clearTimeout(this.#reconcileTimer);
        this.#reconcileTimer = setTimeout(() => this.#reconcile('reconcile'), 50);
        return;
      }
    }
  }

  #exited(t: Tracked, how: { status: number | null; signal: number | null; coreDumped: boolean } | 'vanished') {
    this.#tracked.delete(t.pid);
    this.#missing.delete(t.pid);
    if (how === 'vanished') this.#emit(t.job, { type: 'ProcessVanished', data: this.#on(t) });
    else this.#emit(t.job, { type: 'ProcessExited', data: { ...this.#on(t), status: how.status, signal: how.signal, ...(how.coreDumped ? { coreDumped: true } : {}) } });
    const unit = this.#membership(t.job)?.units[t.unit];
    if (unit?.root === processKey(this.#o.node, this.#ref(t))) {
      this.#rootExits.set(unitKey(t.job, t.unit), how === 'vanished' ? { status: null, signal: null } : { status: how.status, signal: how.signal });
    }
    // The kernel re-parented the children before reporting the exit: read their new parent now.
    for (const child of this.#tracked.values()) {
      if (child.ppid !== t.pid) continue;
      const stat = readStat(child.pid);
      if (stat && stat.startTime === child.startTime && stat.ppid !== child.ppid) {
        child.ppid = stat.ppid;
        this.#emit(child.job, { type: 'ProcessReparented', data: { ...this.#on(child), ppid: stat.ppid } });
      }
    }
    this.#endUnitIfEmpty(t.job, t.unit);
  }

  #endUnitIfEmpty(job: string, unit: UnitId) {
    for (const t of this.#tracked.values()) if (t.job === job && t.unit === unit) return;
    const key = unitKey(job, unit);
    if (this.#handled.has(`ended ${key}`)) return;
    this.#handled.add(`ended ${key}`);
    const root = this.#rootExits.get(key) ?? { status: null, signal: null };
    this.#emit(job, { type: 'UnitEnded', data: { unit, node: this.#o.node, ...root } });
    const recorded = this.#membership(job)?.units[unit];
    const cgroups = recorded ? this.#ownOrNone(job, recorded) : [];
    try {
      if (cgroups.length > 0) removeUnitCgroups(cgroups, { emptyParents: 2 }); // the job's and the store's directories, once empty
    } catch (error) {
      this.#o.log?.(`could not remove the cgroups of ${key}: ${(error as Error).message}`);
    }
    // Single-node jobs end here; units on other nodes report their own end.
    const state = this.#membership(job);
    const others = state ? Object.values(state.units).filter((u) => u.unit !== unit) : [];
    if (others.every((u) => u.phase === 'ended' || u.phase === 'failed')) {
      const roots = [root, ...others.map((u) => ({ status: u.exitStatus, signal: u.signal }))];
      const succeeded = roots.every((r) => r.status === 0);
      this.#emit(job, { type: 'JobEnded', data: { outcome: succeeded ? 'succeeded' : 'failed', status: root.status, signal: root.signal } });
    }
  }

  // ── /proc: rescans, reconciliation, dependents ──────────────────────────────────────────────

  #rescanCount = 0;
  /** Tracked processes missing from /proc, and since when: their exit event may still be queued. */
  readonly #missing = new Map<number, number>();

  #rescan() {
    const readCgroup = ++this.#rescanCount % 10 === 0;
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

  #observeChanges(t: Tracked, stat: ProcStat, readCgroup: boolean) {
    if (stat.sid !== t.sid) {
      t.sid = stat.sid;
      t.pgid = stat.pgid;
      this.#emit(t.job, { type: 'ProcessSessionChanged', data: { ...this.#on(t), sid: t.sid, pgid: t.pgid } });
    } else if (stat.pgid !== t.pgid) {
      t.pgid = stat.pgid;
      this.#emit(t.job, { type: 'ProcessGroupChanged', data: { ...this.#on(t), pgid: t.pgid } });
    }
    if (stat.ppid !== t.ppid) {
      t.ppid = stat.ppid;
      this.#emit(t.job, { type: 'ProcessReparented', data: { ...this.#on(t), ppid: t.ppid } });
    }
    if (readCgroup) {
      const groups = readCgroups(t.pid);
      const cgroup = groups && primaryCgroup(groups);
      if (cgroup && cgroup !== t.cgroup) {
        t.cgroup = cgroup;
        this.#emit(t.job, { type: 'ProcessCgroupChanged', data: { ...this.#on(t), cgroup } });
      }
    }
  }

  /**
   * Restores the truth from /proc: members are the processes in a unit's cgroups and the
   * descendants of its known members; known members that are gone have vanished.
   */
  #reconcile(source: 'scan' | 'reconcile') {
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
    for (const job of this.#jobs.keys()) {
      for (const unit of this.#myUnits(job)) {
        if (unit.phase !== 'running' && unit.phase !== 'launched') continue;
        const own = this.#ownOrNone(job, unit);
        const inCgroups = new Set(own.length > 0 ? safe(() => unitProcesses(own), []) : []);
        // From the members alive as themselves: a PID some member left behind is someone else's now.
        const queue = [...this.#tracked.values()].filter((t) => t.job === job && t.unit === unit.unit && byPid.get(t.pid)?.startTime === t.startTime).map((t) => t.pid);
        const found = new Set<number>(inCgroups);
        for (let pid = queue.pop(); pid !== undefined; pid = queue.pop()) {
          for (const c of children.get(pid) ?? []) if (!found.has(c.pid)) (found.add(c.pid), queue.push(c.pid));
        }
        // A zombie has exited already (its exit seen, or lost): never a new member. A checkpoint's
        // cut may hold one (a parent frozen before reaping it); verify accepts it as such.
        const fresh = [...found].map((pid) => byPid.get(pid)).filter((p): p is ProcStat => !!p && p.state !== 'Z' && !this.#tracked.has(p.pid) && !helpers.has(p.pid));
        for (const p of fresh.sort((a, b) => a.startTime - b.startTime || a.pid - b.pid)) {
          const parent = this.#tracked.get(p.ppid);
          const groups = readCgroups(p.pid);
          const t = this.#track(job, unit.unit, p, groups ? primaryCgroup(groups) : undefined);
          this.#emit(job, {
            type: 'ProcessObserved',
            data: { ...this.#on(t), ppid: p.ppid, pgid: p.pgid, sid: p.sid, comm: p.comm, source, ...(parent ? { parent: this.#ref(parent) } : {}), ...(t.cgroup ? { cgroup: t.cgroup } : {}) },
          });
        }
      }
    }
  }

  #scanDependencies() {
    const all = scanProcesses();
    const now = new Map(all.map((p) => [p.pid, p.startTime]));
    // Only the job's own processes make others dependents: dependency is not transitive, or a
    // shell reading a dependent's output would be pulled in, and whatever that shell touches.
    // A member whose exit is not seen yet may have left its PID to another process (after a PID
    // wrap, even to this agent): only the members still alive as themselves are read.
    const members = [...this.#tracked.values()].filter((t) => !t.dependent && now.get(t.pid) === t.startTime).map((t) => t.pid);
    if (members.length === 0) return;
    const stdio = new Set<string>();
    for (const [job] of this.#jobs) for (const u of this.#myUnits(job)) for (const i of u.stdio) stdio.add(i);
    let dependents;
    try {
      dependents = findDependents(members, all, { ignore: this.#helpers(all) });
    } catch (error) {
      this.#o.log?.(`dependency scan failed: ${(error as Error).message}`);
      return;
    }
    for (const d of dependents) {
      // The terminal or pipe the job was started with is how the user talks to it, not a dependency.
      // (Only pipe and socket inodes are compared: a shm file's inode number may equal a pipe's.)
      const viaStdio = d.via === 'pipe' || d.via === 'unix-socket';
      if (viaStdio && (stdio.has(d.inode) || (d.memberInode && stdio.has(d.memberInode)))) continue;
      const member = this.#tracked.get(d.member);
      const key = `${d.pid}@${d.startTime} ${d.via} ${d.inode}`;
      if (!member || this.#tracked.has(d.pid) || this.#dependencies.has(key)) continue;
      const stat = readStat(d.pid);
      if (!stat || stat.startTime !== d.startTime) continue;
      this.#dependencies.add(key);
      const t = this.#track(member.job, member.unit, stat, undefined);
      t.dependent = true;
      this.#emit(member.job, {
        type: 'DependencyObserved',
        data: { ...this.#on(t), ppid: stat.ppid, pgid: stat.pgid, sid: stat.sid, comm: stat.comm, member: this.#ref(member), via: d.via, inode: d.inode, ...(d.name && { name: d.name }) },
      });
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

  // ── appending: one batch per job stream per tick, in order ──────────────────────────────────

  #emit(job: string, event: ProposedEvent) {
    const stream = jobStream(job);
    const pending = this.#outbox.get(stream);
    if (pending) pending.push(event);
    else this.#outbox.set(stream, [event]);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => void this.#flush());
    }
  }

  #flush(): Promise<void> {
    this.#flushScheduled = false;
    // The queue is taken when this flush's turn comes, after the previous one: a batch that
    // previous flush put back stays ahead of newer events of its stream.
    this.#flushing = this.#flushing.then(() => {
      const batches = [...this.#outbox];
      this.#outbox.clear();
      return Promise.all(batches.map(([stream, events]) => this.#store(stream, events))).then(() => undefined);
    });
    return this.#flushing;
  }

  /**
   * A store that is away (a PostgreSQL restart, a locked file) must not cost observations: the
   * batch goes back to the front of its stream's queue and is tried again. Only a batch the
   * catalogue rejects — a bug, it would never succeed — is dropped, loudly.
   */
  async #store(stream: string, events: ProposedEvent[]): Promise<void> {
    try {
      await this.#o.store.append(stream, events);
    } catch (error) {
      if (error instanceof InvalidEventError) {
        this.#o.log?.(`dropped ${events.length} events for ${stream}: ${error.message}`);
        return;
      }
      // Nothing stays frozen while the log is away (a full disk, a store gone): the units thaw now.
      this.#work?.releaseFrozen((error as Error).message);
      const delay = (this.#retryMs = Math.min(this.#retryMs * 2, MAX_RETRY_MS));
      this.#o.log?.(`could not append ${events.length} events to ${stream} (${(error as Error).message}); retrying in ${delay} ms`);
      this.#outbox.set(stream, [...events, ...(this.#outbox.get(stream) ?? [])]);
      setTimeout(() => void this.#flush(), delay).unref();
      return;
    }
    this.#retryMs = RETRY_MS / 2;
  }
}

const bootId = (): string => safe(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), 'unknown');

const safe = <T>(fn: () => T, fallback: T): T => {
  try {
    return fn();
  } catch {
    return fallback;
  }
};
