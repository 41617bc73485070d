// The agent's part of the launch protocol of `ckpt run`, and the end of a unit: UnitAssigned →
// the unit's cgroups created (UnitCgroupsCreated); UnitLaunched (the root held at a gate) → the
// root tracked (UnitTracked), after which it may exec; the unit's last process gone → UnitEnded,
// its cgroups removed, and JobEnded once every unit of the job has ended.
// Cgroups are only ever this agent's own: derived from the job and unit names under its prefix,
// never taken from an event (a launch into others is refused, on record).
import type { ProposedEvent } from '../../domain/event-store.js';
import type { UnitCgroup } from '../../domain/events/job.js';
import type { NodeId, ProcessRef, UnitId } from '../../domain/identity.js';
import { runningMembers, type Unit } from '../../domain/membership.js';
import { type CgroupLayout, createUnitCgroups, inUnit, ownUnitCgroups, removeUnitCgroups, unitCgroupPath } from '../cgroups/unit-cgroups.js';
import { openResources, primaryCgroup, readCgroups, readStat } from '../tracking/procfs.js';
import type { JobsView } from './coordinator-host.js';
import type { ProcessTracker, RootExit } from './process-tracker.js';

export interface LaunchProtocolOptions {
  readonly node: NodeId;
  readonly layout: CgroupLayout;
  /** Unit cgroups go to PREFIX/JOB/UNIT in each hierarchy. */
  readonly cgroupPrefix: string;
  readonly jobs: JobsView;
  readonly tracker: () => ProcessTracker;
  readonly emit: (job: string, event: ProposedEvent) => void;
  readonly log: (line: string) => void;
}

const unitKey = (job: string, unit: UnitId) => `${job}/${unit}`;

export class LaunchProtocol {
  readonly #o: LaunchProtocolOptions;
  /** Steps this agent already took for a unit (before its own events come back): `STEP JOB/UNIT`. */
  readonly #handled = new Set<string>();

  constructor(options: LaunchProtocolOptions) {
    this.#o = options;
  }

  /** Idempotent: does what the job's current state asks of this node and has not been done. */
  actOn(job: string): void {
    for (const unit of this.#o.jobs.myUnits(job)) {
      const key = unitKey(job, unit.unit);
      if ((unit.phase === 'assigned' || unit.phase === 'launched') && !this.#handled.has(`refused ${key}`)) {
        try {
          this.own(job, unit.unit, unit.cgroups);
        } catch (error) {
          // A launch into cgroups this agent did not make: refused, on record, before anything is tracked.
          this.#handled.add(`refused ${key}`).add(`track ${key}`);
          this.#o.emit(job, { type: 'UnitLaunchFailed', data: { unit: unit.unit, node: this.#o.node, reason: (error as Error).message } });
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
  own(job: string, unit: UnitId, recorded: readonly UnitCgroup[]): UnitCgroup[] {
    return ownUnitCgroups(this.#o.layout, this.#o.cgroupPrefix, job, unit, recorded);
  }

  /** The unit's own cgroups, or none (logged) when the log names foreign ones: their refusal is on record. */
  ownOrNone(job: string, unit: Unit): UnitCgroup[] {
    try {
      return this.own(job, unit.unit, unit.cgroups);
    } catch (error) {
      this.#o.log((error as Error).message);
      return [];
    }
  }

  /** The cgroups a unit is restored into (with its limits). */
  restartCgroups(job: string, unit: UnitId, restart: number, limits: Unit['limits']): UnitCgroup[] {
    return createUnitCgroups(this.#o.layout, unitCgroupPath(this.#o.cgroupPrefix, job, unit, restart), limits);
  }

  /** The job settled: what was noted for its units goes (a restart would launch nothing anew: it restores). */
  forget(job: string): void {
    for (const key of this.#handled) if (key.slice(key.indexOf(' ') + 1).startsWith(`${job}/`)) this.#handled.delete(key);
  }

  /** A restored unit lives again: its end will be recorded anew. */
  reopen(job: string, unit: UnitId): void {
    this.#handled.delete(`ended ${unitKey(job, unit)}`);
  }

  /** The unit's last process is gone: UnitEnded (once), its cgroups removed, JobEnded when it was the last unit. */
  ended(job: string, unit: UnitId, root: RootExit): void {
    const key = unitKey(job, unit);
    if (this.#handled.has(`ended ${key}`)) return;
    this.#handled.add(`ended ${key}`);
    this.#o.emit(job, { type: 'UnitEnded', data: { unit, node: this.#o.node, ...root } });
    const state = this.#o.jobs.membership(job);
    const recorded = state?.units[unit];
    const cgroups = recorded ? this.ownOrNone(job, recorded) : [];
    try {
      if (cgroups.length > 0) removeUnitCgroups(cgroups, { emptyParents: 2 }); // the job's and the store's directories, once empty
    } catch (error) {
      this.#o.log(`could not remove the cgroups of ${key}: ${(error as Error).message}`);
    }
    // Single-node jobs end here; units on other nodes report their own end.
    const others = state ? Object.values(state.units).filter((u) => u.unit !== unit) : [];
    if (others.every((u) => u.phase === 'ended' || u.phase === 'failed')) {
      const roots = [root, ...others.map((u) => ({ status: u.exitStatus, signal: u.signal }))];
      const succeeded = roots.every((r) => r.status === 0);
      this.#o.emit(job, { type: 'JobEnded', data: { outcome: succeeded ? 'succeeded' : 'failed', status: root.status, signal: root.signal } });
    }
  }

  #createCgroups(job: string, unit: Unit) {
    const { node } = this.#o;
    try {
      const cgroups = createUnitCgroups(this.#o.layout, unitCgroupPath(this.#o.cgroupPrefix, job, unit.unit), unit.limits);
      this.#o.emit(job, { type: 'UnitCgroupsCreated', data: { unit: unit.unit, node, cgroups, limits: unit.limits } });
    } catch (error) {
      this.#o.emit(job, { type: 'UnitLaunchFailed', data: { unit: unit.unit, node, reason: (error as Error).message } });
    }
  }

  #trackRoot(job: string, unit: Unit) {
    const state = this.#o.jobs.membership(job);
    const root = state && runningMembers(state).find((m) => m.key === unit.root);
    if (!root) return;
    const stat = readStat(root.pid);
    if (!stat || stat.startTime !== root.startTime) {
      this.#o.emit(job, { type: 'UnitLaunchFailed', data: { unit: unit.unit, node: this.#o.node, reason: 'the root process was gone before it could be tracked' } });
      return;
    }
    // Only a process in the unit's own cgroups (checked in the kernel's lists) becomes its root.
    if (!inUnit(this.ownOrNone(job, unit), root)) {
      const reason = `refused: process ${root.pid} (${stat.comm}) named as the root of unit ${unit.unit} is not in the cgroups this agent created for the unit; it is not tracked, frozen, dumped or killed`;
      this.#o.log(reason);
      this.#o.emit(job, { type: 'UnitLaunchFailed', data: { unit: unit.unit, node: this.#o.node, reason } });
      return;
    }
    const groups = readCgroups(root.pid);
    const tracker = this.#o.tracker();
    const process: ProcessRef = { pid: root.pid, startTime: root.startTime };
    tracker.track(job, unit.unit, stat, groups ? primaryCgroup(groups) : root.cgroup);
    const on = { node: this.#o.node, unit: unit.unit, process };
    // UnitLaunched does not say who the root's parent is: the process that made its PID namespace
    // has exited by now and left it to PID 1 (or a subreaper).
    if (stat.ppid !== root.ppid) this.#o.emit(job, { type: 'ProcessReparented', data: { ...on, ppid: stat.ppid } });
    const resources = openResources(root.pid);
    const stdio = resources ? [...resources.pipes, ...resources.unixSockets] : [];
    this.#o.emit(job, { type: 'UnitTracked', data: { unit: unit.unit, node: this.#o.node, root: process, stdio } });
  }
}
