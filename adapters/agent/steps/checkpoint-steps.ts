// The checkpoint steps a node agent executes for its units (freeze, dump, verify, thaw, stop,
// abort) and the commit of a version: each returns its done event, or throws (then JobWork records
// the step's failure). After a crash the idempotent ones simply run again; a dump that may have
// started is not repeated (see dump).

import { existsSync, statfsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { noOptions } from '../../../domain/checkpoint-coordinator.js';
import type { UnitTarget } from '../../../domain/checkpointer.js';
import type { ProcessRef } from '../../../domain/identity.js';
import { getIn } from '../../../domain/persistent-map.js';
import { freezerOf, inUnit, unitProcesses } from '../../cgroups/unit-cgroups.js';
import { criuWritingTo } from '../../checkpointers/criu-checkpointer.js';
import { classifyCriuFailure } from '../../checkpointers/criu-failure.js';
import { commitVersion, hashFile, ImageStoreError, manifestPath, readManifest, removeVersion, unitImagesDir } from '../../images/image-store.js';
import { hostPidsByNamespacePid } from '../../tracking/pids.js';
import { readStat, scanProcesses } from '../../tracking/procfs.js';
import { FreezeGuard } from '../freeze-guard.js';
import type { CheckpointWorkOptions } from '../job-work.js';
import { type FrozenUnits, unitKey } from './frozen-units.js';
import { type CheckpointStep, type Command, done, forUnit, type JobView, type StepHandler, type StepsOf, type UnitCommand } from './step.js';

/** A checkpoint whose DeadlineScheduled is not folded yet (it is decided with the plan): the CLI's default timeout. */
const DEFAULT_DEADLINE_MS = 120_000;

export class CheckpointSteps implements StepsOf<CheckpointStep> {
  readonly #o: CheckpointWorkOptions;
  readonly #frozen: FrozenUnits;

  constructor(options: CheckpointWorkOptions, frozen: FrozenUnits) {
    this.#o = options;
    this.#frozen = frozen;
  }

  readonly freeze: StepHandler<'freeze'> = async (command, { job, progress: w, onFailure }) => {
    const c = forUnit(command);
    const u = this.#target(job, w, c);
    this.#stillRunning(w, c);
    const deadline = this.#beforeDeadline(w, c, 'freeze');
    // What the unit holds is judged before it is frozen: a refusal leaves the job running.
    await this.#o.checkpointer.preflight(u, w.state.checkpoint.nodes[this.#o.node]);
    const key = unitKey(job, c.unit);
    // Armed first: should this process die or stall mid-freeze, the guard still thaws the unit.
    // A guard left from an earlier checkpoint (its thaw failed) must not thaw this one's cut.
    this.#frozen.disarm(key);
    if (freezerOf(u.cgroups)) this.#frozen.guards.set(key, await FreezeGuard.arm(u.cgroups, deadline));
    this.#frozen.released.delete(key);
    onFailure(() => this.#frozen.disarm(key)); // a failed freeze thawed the unit again
    const frozen = await this.#o.checkpointer.freeze(u);
    this.#frozen.frozenAt.set(key, performance.now() - frozen.durationMs);
    return done(c, frozen);
  };

  readonly dump: StepHandler<'dump'> = async (command, { job, progress: w, onFailure }) => {
    const c = forUnit(command);
    const u = this.#target(job, w, c);
    this.#stillRunning(w, c);
    this.#beforeDeadline(w, c, 'dump');
    const key = unitKey(job, c.unit);
    const released = this.#frozen.released.get(key);
    if (released) throw new Error(`the unit was thawed before its dump because the log could not be written (${released}); not dumping a running unit`);
    if (existsSync(u.imagesDir)) {
      await this.#waitForCriu(u.imagesDir);
      throw new Error('the node agent restarted while this unit was being dumped; the images cannot be trusted and are not dumped again');
    }
    // Locally first: the unit runs again and its partial images are gone before the failure is
    // recorded (the log may be the very thing that is full).
    onFailure(() => this.#cleanUp(job, key, u));
    try {
      const dumped = await this.#o.checkpointer.dump(u);
      const thawedMeanwhile = this.#frozen.released.get(key);
      if (thawedMeanwhile) throw new Error(`the unit was thawed during its dump because the log could not be written (${thawedMeanwhile}); the images are not a consistent cut`);
      return done(c, dumped);
    } catch (error) {
      throw this.#imagesDiskFull(error) ?? error; // judged before the clean-up frees the space
    }
  };

  readonly verify: StepHandler<'verify'> = async (command, { job, progress: w }) => {
    const c = forUnit(command);
    const u = this.#target(job, w, c);
    // captured: the PIDs the images hold (in the unit's PID namespace); processes: the host
    // identities of the same processes, in that order — what a restart links them to.
    const { images, processes } = await this.#verify(job, w, c, u);
    return done(c, { captured: images, processes });
  };

  readonly thaw: StepHandler<'thaw'> = async (command, { job, progress: w }) => {
    const c = forUnit(command);
    const u = this.#target(job, w, c);
    const key = unitKey(job, c.unit);
    await this.#o.checkpointer.thaw(u);
    this.#frozen.disarm(key);
    const since = this.#frozen.frozenAt.get(key);
    const frozenMs = since !== undefined ? performance.now() - since : Math.max(0, Date.now() - Date.parse(w.commands.versions[c.version]?.frozenAt[c.unit] ?? c.request.recordedAt));
    return done(c, { frozenMs });
  };

  readonly stop: StepHandler<'stop'> = async (command, { job, progress: w }) => {
    const c = forUnit(command);
    const u = this.#target(job, w, c);
    const key = unitKey(job, c.unit);
    // Committed: if this process goes now, the guard kills the unit rather than thaw it.
    this.#frozen.guards.get(key)?.stopping();
    await this.#o.checkpointer.stop(u);
    this.#frozen.disarm(key);
    return done(c, {});
  };

  readonly abort: StepHandler<'abort'> = async (command, { job, progress: w }) => {
    const c = forUnit(command);
    const u = this.#target(job, w, c);
    await this.#waitForCriu(u.imagesDir);
    // This node committed its units but another node could not: the version as a whole never was
    // committed, so this node's part goes, manifest first (never a committed-looking leftover).
    const a = w.state.checkpoint.active;
    if (a?.version === c.version && a.phase === 'aborting' && existsSync(manifestPath(this.#o.imagesRoot, job, c.version))) removeVersion(this.#o.imagesRoot, job, c.version);
    const aborted = await this.#o.checkpointer.abort(u);
    this.#frozen.disarm(unitKey(job, c.unit));
    return done(c, aborted);
  };

  /**
   * Makes this node's units of the version durable (fsync) under a manifest. On its own disk a node
   * sees only its units' images and commits them. Where nodes share the images' filesystem it sees
   * every unit's: then the node of the plan's first unit writes one manifest for all, and the
   * others report that manifest once it is there. After a crash, a manifest already written is
   * reported as it is.
   */
  readonly commit: StepHandler<'commit'> = async (c, { job, progress: w }) => {
    const root = this.#o.imagesRoot;
    const committing = () => w.state.checkpoint.active?.version === c.version && w.state.checkpoint.active.phase === 'committing';
    if (!committing()) throw new Error(`checkpoint v${c.version} is no longer committing (${w.state.checkpoint.active?.reason ?? 'ended'})`);
    const v = w.commands.versions[c.version]!;
    const visible = v.units.filter((u) => u.node === c.node || existsSync(unitImagesDir(root, job, c.version, u.unit)));
    const writer = visible[0]!.node;
    const written = () => {
      const manifest = readManifest(root, job, c.version);
      return manifest && { units: manifest.units.map((u) => u.unit), files: manifest.files, bytes: manifest.bytes, durationMs: 0, manifest: hashFile(manifestPath(root, job, c.version)).sha256 };
    };
    if (writer !== c.node) {
      for (;;) {
        const found = written();
        if (found) return done(c, found);
        if (!committing()) throw new Error(`checkpoint v${c.version} ended before ${writer} wrote the manifest this node shares (${w.state.checkpoint.active?.reason ?? 'ended'})`);
        await sleep(20);
      }
    }
    const units = visible.map((u) => {
      const dump = v.dumps[u.unit];
      return { unit: u.unit, node: u.node, durationMs: dump?.durationMs ?? 0, ...(dump?.images && { files: dump.images }) };
    });
    try {
      const committed = commitVersion(root, { job, version: c.version, parent: v.parent, units, createdAt: c.request.recordedAt });
      return done(c, { units: units.map((u) => u.unit), files: committed.manifest.files, bytes: committed.manifest.bytes, durationMs: committed.durationMs, manifest: committed.manifestSha256 });
    } catch (error) {
      const found = error instanceof ImageStoreError ? written() : undefined;
      if (!found) throw error;
      return done(c, found); // committed by this node before a crash, the outcome not yet recorded
    }
  };

  #stillRunning(w: JobView, c: Command<'freeze' | 'dump'>) {
    const running = w.state.checkpoint.active?.version === c.version && w.state.checkpoint.active.phase === 'running';
    if (!running) throw new Error(`checkpoint v${c.version} is no longer running (${w.state.checkpoint.active?.reason ?? 'ended'})`);
  }

  /**
   * The runtime's side of deadlines (the coordinator, being pure, cannot see the clock): no freeze
   * or dump once the checkpoint's recorded deadline has passed — an agent that was paused or slow
   * answers the step as failed, saying so. Returns the deadline (ms since the epoch).
   */
  #beforeDeadline(w: JobView, c: Command<'freeze' | 'dump'>, step: 'freeze' | 'dump'): number {
    const recorded = w.state.checkpoint.active?.version === c.version ? w.state.checkpoint.active.deadline : '';
    const deadline = recorded ? Date.parse(recorded) : Date.parse(c.request.recordedAt) + DEFAULT_DEADLINE_MS;
    const late = Date.now() - deadline;
    if (late >= 0) {
      const message = `the checkpoint's deadline ${new Date(deadline).toISOString()} had passed ${(late / 1000).toFixed(1)} s before this node could ${step} the unit; not doing it`;
      throw Object.assign(new Error(message), { failure: { class: 'timeout', message, hint: 'the node agent was paused or overloaded: retry, or give a longer --timeout' } });
    }
    return deadline;
  }

  /**
   * A dump that failed with no byte left where the images go failed for space, whatever else
   * CRIU managed to say: its own log, on that same disk, is cut short then.
   */
  #imagesDiskFull(error: unknown): Error | undefined {
    if (/No space left|ENOSPC/i.test((error as Error).message)) return undefined;
    try {
      const fs = statfsSync(this.#o.imagesRoot);
      if (fs.bavail > 0) return undefined;
    } catch {
      return undefined;
    }
    const message = `No space left on device: the filesystem of ${this.#o.imagesRoot} was full (0 bytes free) when the dump failed; ${(error as Error).message}`;
    return Object.assign(new Error(message), { failure: { ...classifyCriuFailure({ message: 'No space left on device' }), message } });
  }

  /** A failed dump: thaw the unit and remove its partial images now, not when the abort is recorded. */
  async #cleanUp(job: string, key: string, u: UnitTarget) {
    try {
      await this.#waitForCriu(u.imagesDir);
      await this.#o.checkpointer.abort(u);
      this.#frozen.disarm(key);
    } catch (error) {
      this.#o.log(`could not clean up unit ${u.unit} of ${job} after its failed dump: ${(error as Error).message} (its guard thaws it by the deadline)`);
    }
  }

  async #waitForCriu(imagesDir: string) {
    for (let i = 0; criuWritingTo(imagesDir).length > 0; i++) {
      if (i % 50 === 0) this.#o.log(`waiting for criu (pids ${criuWritingTo(imagesDir).join(' ')}) still writing ${imagesDir}`);
      await sleep(100);
    }
  }

  #target(job: string, w: JobView, c: UnitCommand<CheckpointStep>): UnitTarget {
    const unit = w.state.checkpoint.job.units[c.unit];
    const planned = w.commands.versions[c.version]?.units.find((p) => p.unit === c.unit);
    const root = unit?.root ? getIn(w.state.checkpoint.job.members, unit.root) : undefined;
    if (!unit || !planned) throw new Error(`unit ${c.unit} of ${job} is not known to this node's log (no plan for it)`);
    const active = w.state.checkpoint.active;
    const freezeBudgetMs = active?.version === c.version ? active.freezeBudgetMs : undefined;
    const cgroups = this.#o.ownCgroups(job, unit.unit, unit.cgroups);
    // The root a tree is dumped from must be the unit's own: in its cgroups, with its start time.
    // (One that has exited is left to the checkpointer, which says the unit has ended.)
    if (root && readStat(root.pid)?.startTime === root.startTime && !inUnit(cgroups, root)) {
      const message = `refused: process ${root.pid}, recorded as the root of unit ${unit.unit}, is not in the unit’s cgroups; it is not frozen, dumped or killed`;
      throw Object.assign(new Error(message), {
        failure: { class: 'permission' as const, message, hint: 'the event log holds an event this node agent did not write: check who appends to the store (ckpt log --json)' },
      });
    }
    return {
      job,
      unit: unit.unit,
      version: c.version,
      scope: planned.scope,
      ...(root && { root: { pid: root.pid, startTime: root.startTime } }),
      cgroups,
      imagesDir: unitImagesDir(this.#o.imagesRoot, job, c.version, unit.unit),
      // Fixed by the plan: the active checkpoint's (its outcomes may land after it ended: then none).
      options: (w.state.checkpoint.active?.version === c.version && w.state.checkpoint.active.options) || noOptions,
      stop: w.state.checkpoint.active?.version === c.version && w.state.checkpoint.active.stop,
      ...(freezeBudgetMs !== undefined && { freezeBudgetMs }),
      ...(w.state.checkpoint.job.owner && { owner: w.state.checkpoint.job.owner }),
    };
  }

  /**
   * The cut is what the frozen cgroup holds: the images must hold exactly the unit — every process
   * in its (frozen) cgroup, each a member the log knows — plus the zombies among them (exited,
   * not yet reaped by a parent frozen with them: out of the cgroup, yet in the tree CRIU dumps).
   * A process born after the plan and before the freeze is a member by now (reconciled here); a
   * planned one gone before the freeze is simply not in the cut. Returns the PIDs the images hold
   * (`images`, in the unit's PID namespace), the host PIDs of the same processes (`captured`) and
   * their identities (`processes`).
   */
  async #verify(job: string, w: JobView, c: Command<'verify'>, u: UnitTarget): Promise<{ images: number[]; captured: number[]; processes: ProcessRef[] }> {
    if (w.state.checkpoint.active?.version !== c.version || w.state.checkpoint.active.phase !== 'running') throw new Error(`checkpoint v${c.version} is no longer running`);
    const images = [...new Set(await this.#o.checkpointer.captured(u))].sort((a, b) => a - b);
    this.#o.reconcileUnit(job, u.unit);
    const problems: string[] = [];
    const captured = this.#inHostPids(job, u, images, problems);
    const inImages = new Set(captured);
    const stat = new Map(captured.map((pid) => [pid, readStat(pid)]));
    const zombie = (pid: number) => stat.get(pid)?.state === 'Z' && inImages.has(stat.get(pid)!.ppid);
    const comm = (pid: number) => readStat(pid)?.comm ?? '?';
    if (u.scope === 'cgroup' || freezerOf(u.cgroups)) {
      const inUnit = unitProcesses(u.cgroups);
      const missed = inUnit.filter((pid) => !inImages.has(pid));
      if (missed.length > 0) problems.push(`the images miss ${missed.map((p) => `${p} ${comm(p)}`).join(', ')}, which are in the unit’s cgroup`);
      const outside = captured.filter((pid) => !inUnit.includes(pid) && !zombie(pid));
      if (outside.length > 0) problems.push(`the images hold ${outside.map((p) => `${p} ${comm(p)}`).join(', ')}, which are not in the unit’s cgroup (nor zombies of it)`);
    }
    const tracked = this.#o.tracked(job, u.unit);
    const unknown = captured.filter((pid) => !tracked.has(pid) && !zombie(pid));
    if (unknown.length > 0) problems.push(`the images hold ${unknown.map((p) => `${p} ${comm(p)}`).join(', ')}, which the log does not know as members`);
    const planned = w.commands.versions[c.version]?.units.find((p) => p.unit === u.unit)?.targets ?? [];
    const lost = planned.filter((t) => readStat(t.pid)?.startTime === t.startTime && !inImages.has(t.pid));
    if (lost.length > 0) problems.push(`planned processes ${lost.map((t) => `${t.pid} ${comm(t.pid)}`).join(', ')} are alive but not in the images`);
    if (problems.length > 0) throw new Error(`the images of unit ${u.unit} do not match the plan: ${problems.join('; ')}`);
    const processes = captured.map((pid) => ({ pid, startTime: tracked.get(pid) ?? stat.get(pid)?.startTime ?? 0 }));
    return { images, captured, processes };
  }

  /**
   * The host PIDs of the processes the images hold by their PIDs in the unit's PID namespace
   * (PID 1 there is the unit's init): found among the unit's cgroup and its tracked members.
   * A PID no process of the unit has there is a problem.
   */
  #inHostPids(job: string, u: UnitTarget, images: readonly number[], problems: string[]): number[] {
    if (!u.root) return [...images];
    const unit = new Set([...unitProcesses(u.cgroups), ...this.#o.tracked(job, u.unit).keys()]);
    // Zombies left the cgroup but are in the images with their frozen parent: their children too.
    for (const p of scanProcesses()) if (p.state === 'Z' && unit.has(p.ppid)) unit.add(p.pid);
    const hostPid = hostPidsByNamespacePid(u.root.pid, unit);
    const strangers = images.filter((pid) => !hostPid.has(pid));
    if (strangers.length > 0) problems.push(`the images hold ${strangers.join(', ')} (PIDs in the unit’s namespace), which no process of the unit has`);
    return images.flatMap((pid) => hostPid.get(pid) ?? []);
  }
}
