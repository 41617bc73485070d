// The restart steps a node agent executes for its units: check the images, prepare (cgroups, PID
// collisions), restore, and roll back a failed restart. Each returns its done event, or throws
// (then JobWork records the step's failure). A restore that may have started is never repeated.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RestartRecord, RestartStep } from '../../../domain/checkpoint-commands.js';
import { noOptions } from '../../../domain/checkpoint-coordinator.js';
import { CANCEL, RELEASE } from '../../../domain/checkpointer.js';
import type { Limits } from '../../../domain/events/job.js';
import type { RestoredProcess } from '../../../domain/events/restart.js';
import type { UnitId } from '../../../domain/identity.js';
import { holdsUnits } from '../../../domain/restart-coordinator.js';
import { killUnit, removeUnitCgroups, unitProcesses } from '../../cgroups/unit-cgroups.js';
import { readPstree } from '../../checkpointers/criu-images.js';
import { createPrivateFile, makePrivateDir, makePrivateDirs, replacePrivateFile } from '../../fs/safe-fs.js';
import { describeProblems, readManifest, realUnitImagesDir } from '../../images/image-store.js';
import { verifyVersionSized } from '../../images/verify-worker.js';
import { hostPidsByNamespacePid, pidsInUse } from '../../tracking/pids.js';
import { primaryCgroup, readCgroups, readStat } from '../../tracking/procfs.js';
import type { CheckpointWorkOptions } from '../job-work.js';
import { type Command, done, forUnit, type JobView, type StepHandler, type StepScene, type StepsOf } from './step.js';

/** One unit's part in a restart, as this node's log has it. */
interface RestartUnit {
  readonly r: RestartRecord;
  readonly unit: UnitId;
  readonly limits: Limits;
  /** Restored from: images/JOB/vN/UNIT through real directories only (never a planted link). */
  readonly imagesDir: () => string;
  /** restarts/JOB/rN/UNIT: where restore logs and the images' verdict go, never into a committed version. */
  readonly workDir: string;
  /** Makes workDir, each level a private directory of the agent's, never a planted link. */
  readonly makeWorkDir: () => void;
  readonly stillRunning: () => void;
}

export class RestartSteps implements StepsOf<RestartStep> {
  readonly #o: CheckpointWorkOptions;

  constructor(options: CheckpointWorkOptions) {
    this.#o = options;
  }

  /** Runs beside the restore step: its verdict lets the restored processes run, or not. */
  readonly 'images-verify': StepHandler<'images-verify'> = async (c, { job, progress: w }) => {
    const { r, unit, workDir, makeWorkDir, stillRunning } = this.#unit(job, w, c);
    makeWorkDir();
    try {
      stillRunning();
      const manifestSha256 = w.commands.versions[r.version]?.manifests?.[c.node];
      const options = { unit, ...(manifestSha256 && { manifestSha256 }) };
      const bytes = w.commands.versions[r.version]?.dumps[unit]?.bytes ?? Infinity;
      const checked = await verifyVersionSized(bytes, this.#o.imagesRoot, job, r.version, options);
      if (!checked.ok) throw new Error(describeProblems(this.#o.imagesRoot, job, r.version, checked.problems));
      const entry = readManifest(this.#o.imagesRoot, job, r.version)?.units.find((u) => u.unit === unit);
      if (!entry) throw new Error(`version ${r.version} of ${job} has no images of unit ${unit}`);
      try {
        createPrivateFile(join(workDir, RELEASE));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error; // released before a crash of the agent
      }
      return done(c, { files: entry.files.length, bytes: entry.bytes });
    } catch (error) {
      // The restore waiting beside this check learns the verdict first.
      replacePrivateFile(join(workDir, CANCEL), (error as Error).message);
      throw error;
    }
  };

  readonly 'restore-prepare': StepHandler<'restore-prepare'> = async (c, { job, progress: w }) => {
    const { unit, limits, imagesDir, stillRunning } = this.#unit(job, w, c);
    stillRunning();
    const started = performance.now();
    const cgroups = this.#o.restartCgroups(job, unit, c.version, limits);
    const pids = readPstree(imagesDir()).map((e) => e.pid);
    // A unit launched in its own PID namespace (root = PID 1 there): CRIU makes a new one, so
    // nothing can collide and nothing is waited for. Older images hold host PIDs: they need
    // those free, or a namespace criu itself keeps alive as init (that unit cannot be
    // checkpointed again; run it anew to get a unit that can).
    const ownNamespace = pids[0] === 1;
    const pidNamespace = ownNamespace || (await this.#pidsCollide(pids));
    if (pidNamespace && !w.state.checkpoint.nodes[this.#o.node]?.capabilities.pidNamespace) {
      throw new Error(
        ownNamespace
          ? 'the images were taken in the unit’s own PID namespace and this node cannot create PID namespaces (see its CheckpointerProbed event)'
          : 'the original PIDs are in use and this node cannot restore into a new PID namespace (see its CheckpointerProbed event)',
      );
    }
    if (pidNamespace && !ownNamespace)
      this.#o.log(
        `restoring unit ${unit} of ${job} (images without a PID namespace of their own) with criu as a new namespace's init: its original PIDs are in use; once restored this way it cannot be checkpointed again`,
      );
    return done(c, { cgroups, pidNamespace, waitedMs: performance.now() - started });
  };

  readonly restore: StepHandler<'restore'> = async (c, { job, progress: w, record }) => {
    const { r, unit, imagesDir, workDir, makeWorkDir, stillRunning } = this.#unit(job, w, c);
    stillRunning();
    const recorded = r.prepared[unit];
    if (!recorded) throw new Error(`unit ${unit} was not prepared for restart r${c.version}`);
    const prepared = { ...recorded, cgroups: this.#o.ownCgroups(job, unit, recorded.cgroups) };
    makeWorkDir();
    if (existsSync(join(workDir, 'restore.log'))) throw new Error('the node agent restarted while this unit was being restored; not restoring it twice');
    if (existsSync(join(workDir, CANCEL))) throw new Error(`the images failed their check: ${readFileSync(join(workDir, CANCEL), 'utf8')}`);
    const pids = readPstree(imagesDir()).map((e) => e.pid);
    const options = (w.state.restart.active?.restart === c.version && w.state.restart.active.options) || noOptions;
    const owner = w.state.checkpoint.job.owner;
    // Units on several nodes with established connections between them resume together.
    const active = w.state.restart.active;
    const hold = active?.restart === c.version && holdsUnits(active) ? () => this.#held(w, c, record) : undefined;
    const result = await this.#o.checkpointer.restore({
      imagesDir: imagesDir(),
      pidNamespace: prepared.pidNamespace,
      cgroups: prepared.cgroups,
      workDir,
      options,
      ...(owner && { owner }),
      ...(hold && { hold }),
    });
    // The images' PIDs are those of the unit's PID namespace: find each one's host PID.
    const hostPid = prepared.pidNamespace ? hostPidsByNamespacePid(result.rootPid, unitProcesses(prepared.cgroups)) : new Map(pids.map((p) => [p, p]));
    const was = new Map((w.commands.versions[r.version]?.captured[unit] ?? []).map((p) => [p.imagePid, p.process]));
    // A restored process may finish at once (a `sleep 0.1` of the job): only the root must be there.
    // One that ended — gone, or a zombie, which has left its cgroups (its cgroup reads as "/") — is
    // not recorded as running: its exit may have been reported before it was tracked.
    const running = (pid: number | undefined) => {
      const stat = pid === undefined ? undefined : readStat(pid);
      return stat && stat.state !== 'Z' && stat.state !== 'X' ? stat : undefined;
    };
    const processes: RestoredProcess[] = pids.flatMap((old) => {
      const pid = hostPid.get(old);
      const stat = running(pid);
      if (!stat && old === pids[0]) throw new Error(`the unit’s root (pid ${old} in the images) is not running after the restore (log: ${join(workDir, 'restore.log')})`);
      if (!stat) return [];
      const groups = readCgroups(stat.pid);
      const cgroup = groups ? primaryCgroup(groups) : undefined;
      if (old !== pids[0] && running(pid)?.startTime !== stat.startTime) return []; // ended while its cgroup was read
      const { ppid, pgid, sid, comm } = stat;
      return [
        {
          was: was.get(old) ?? { pid: old, startTime: 0 },
          now: { pid: stat.pid, startTime: stat.startTime },
          nsPid: prepared.pidNamespace ? old : null,
          ppid,
          pgid,
          sid,
          comm,
          ...(cgroup && { cgroup }),
        },
      ];
    });
    this.#o.adoptRestored(
      job,
      unit,
      processes.map((p) => p.now),
    );
    return done(c, { processes, durationMs: result.durationMs, ...(result.stats && { stats: result.stats }) });
  };

  readonly rollback: StepHandler<'rollback'> = async (c, { job, progress: w }) => {
    const { r, unit } = this.#unit(job, w, c);
    const cgroups = this.#o.ownCgroups(job, unit, r.prepared[unit]?.cgroups ?? []);
    if (cgroups.length > 0 && cgroups.some((cg) => existsSync(cg.path))) {
      await killUnit(cgroups.filter((cg) => existsSync(cg.path)));
      try {
        removeUnitCgroups(cgroups);
      } catch {
        // the agent removes them when it sees the unit end
      }
    }
    return done(c, {});
  };

  /**
   * The barrier of a restart across nodes: says this unit is restored and held, then waits until
   * every unit is (RestartReleased: true) or the restart ended meanwhile — a failure elsewhere, its
   * deadline (false: CRIU kills what it restored, nothing of it ever ran).
   */
  async #held(w: JobView, c: Command<'restore'>, record: StepScene['record']): Promise<boolean> {
    record({ type: 'UnitRestoreHeld', data: { restart: c.version, unit: c.unit!, node: c.node } });
    for (;;) {
      const a = w.state.restart.active;
      if (a?.restart !== c.version || a.phase !== 'running') return false;
      if (a.released) return true;
      await sleep(10);
    }
  }

  #unit(job: string, w: JobView, command: Command<RestartStep>): RestartUnit {
    const c = forUnit(command);
    const r = w.commands.restarts[c.version];
    const planned = r?.units.find((u) => u.unit === c.unit);
    if (!r || !planned) throw new Error(`restart r${c.version} of ${job} has no unit ${c.unit} in this node's log`);
    const unit = planned.unit;
    return {
      r,
      unit,
      limits: planned.limits,
      imagesDir: () => realUnitImagesDir(this.#o.imagesRoot, job, r.version, unit),
      workDir: join(this.#o.workRoot, job, `r${c.version}`, unit),
      makeWorkDir: () => (makePrivateDir(this.#o.workRoot), makePrivateDirs(this.#o.workRoot, job, `r${c.version}`, unit)),
      stillRunning: () => {
        const running = w.state.restart.active?.restart === c.version && w.state.restart.active.phase === 'running';
        if (!running) throw new Error(`restart r${c.version} is no longer running (${w.state.restart.active?.reason ?? 'ended'})`);
      },
    };
  }

  /**
   * For images without a PID namespace of their own (units launched before ckpt gave each unit
   * one): whether restoring `pids` needs a new PID namespace: not when they are free, nor when only
   * zombies and exiting processes hold them (PID 1 reaps orphans late: wait for that); yes when
   * a live process holds one (the original still runs — a clone — or another process took it).
   */
  async #pidsCollide(pids: readonly number[]): Promise<boolean> {
    const started = Date.now();
    for (;;) {
      const taken = pidsInUse(pids);
      if (taken.length === 0) return false;
      const alive = taken.filter((p) => readStat(p)?.state !== 'Z');
      if (alive.length > 0 && Date.now() - started > 1000) return true;
      if (Date.now() - started > 10_000) return true;
      await sleep(20);
    }
  }
}
