// A node agent's part in checkpoints and restarts, driven only by the log:
// - the job's coordinator (checkpoint and restart deciders) runs here as a projection: after each event of a job it decides,
//   and appends the decisions with the stream revision it decided on, after checking that no
//   decision for that cause is in the log yet. Every agent runs it; for each cause exactly one
//   append wins, and a restarted agent decides what was left undecided.
// - the commands addressed to this node are executed exactly once: a command whose outcome is
//   in the log is never repeated. After a crash the idempotent steps (freeze, verify, thaw,
//   stop, abort, commit; images check, prepare, rollback) simply run again; a dump or a restore
//   that may have started is not — it is answered as failed, so the checkpoint or restart ends
//   cleanly instead of running twice.
import { existsSync, mkdirSync, readFileSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CANCEL, RELEASE, type Checkpointer, type UnitTarget } from '../../domain/checkpointer.js';
import { evolveCommands, noCommands, pendingOn, RESTART_STEPS, type CheckpointCommands, type PendingCommand } from '../../domain/checkpoint-commands.js';
import { decideJobCoordinator, type JobCoordinatorState } from '../../domain/job-coordinator.js';
import { noOptions } from '../../domain/checkpoint-coordinator.js';
import type { Limits, UnitCgroup } from '../../domain/events/job.js';
import type { RestoredProcess } from '../../domain/events/restart.js';
import { WrongExpectedRevisionError, type EventStore, type ProposedEvent, type RecordedEvent } from '../../domain/event-store.js';
import { jobStream, type NodeId, type ProcessRef, type UnitId } from '../../domain/identity.js';
import { getIn } from '../../domain/persistent-map.js';
import { requestDeadline } from '../../domain/requests.js';
import { criuWritingTo } from '../checkpointers/criu-checkpointer.js';
import { classifyCriuFailure } from '../checkpointers/criu-failure.js';
import { readPstree } from '../checkpointers/criu-images.js';
import { freezerOf, inUnit, killUnit, removeUnitCgroups, thawUnit, unitFreezeState, unitProcesses } from '../cgroups/unit-cgroups.js';
import { createPrivateFile, makePrivateDir, makePrivateDirs, replacePrivateFile } from '../fs/safe-fs.js';
import { commitVersion, describeProblems, hashFile, ImageStoreError, manifestPath, readManifest, realUnitImagesDir, unitImagesDir, verifyVersion } from '../images/image-store.js';
import { verifyVersionOffThread } from '../images/verify-worker.js';
import { FreezeGuard } from './freeze-guard.js';
import { hostPidsByNamespacePid, pidsInUse } from '../tracking/pids.js';
import { primaryCgroup, readCgroups, readStat, scanProcesses } from '../tracking/procfs.js';

export interface CheckpointWorkOptions {
  readonly store: EventStore;
  readonly node: NodeId;
  readonly checkpointer: Checkpointer;
  readonly imagesRoot: string;
  /** The agent's ordered outbox: an outcome lands after the observations made before it. */
  readonly emit: (job: string, event: ProposedEvent) => void;
  /** Makes every process now in the unit a member (a fork just before the freeze may be queued). */
  readonly reconcileUnit: (job: string, unit: UnitId) => void;
  /** The processes the agent tracks in a unit: pid → start time. */
  readonly tracked: (job: string, unit: UnitId) => ReadonlyMap<number, number>;
  /** Creates the cgroups a unit is restored into (with its limits). */
  readonly restartCgroups: (job: string, unit: UnitId, restart: number, limits: Limits) => UnitCgroup[];
  /** The unit's cgroups as the agent derives them from the ones the log records; throws (a failure of
   *  class permission) when the log names cgroups the agent did not create. */
  readonly ownCgroups: (job: string, unit: UnitId, recorded: readonly UnitCgroup[]) => UnitCgroup[];
  /** Starts tracking restored processes at once (before their first fork can be missed). */
  readonly adoptRestored: (job: string, unit: UnitId, processes: ReadonlyArray<{ pid: number; startTime: number }>) => void;
  /** Where restore logs go: never into a committed version. */
  readonly workRoot: string;
  readonly log: (line: string) => void;
}

/** A cause whose decisions are not yet recorded, with what the coordinator decided on it. */
interface Undecided {
  readonly cause: RecordedEvent;
  readonly decisions: ProposedEvent[];
}

type RequestEvent = RecordedEvent & { type: 'CheckpointRequested' | 'RestartRequested'; data: { request: string; timeoutMs: number } };
const isRequest = (e: RecordedEvent): e is RequestEvent => e.type === 'CheckpointRequested' || e.type === 'RestartRequested';

interface JobProgress {
  state: JobCoordinatorState;
  commands: CheckpointCommands;
  /** Revision of the last event of the job stream folded. */
  revision: number;
  /** Causes whose decisions are not in the log yet, in log order. */
  undecided: Undecided[];
  appending: boolean;
}

const FAILED: Record<PendingCommand['step'], string> = {
  freeze: 'UnitFreezeFailed', dump: 'UnitDumpFailed', verify: 'UnitVerifyFailed', thaw: 'UnitThawFailed',
  stop: 'UnitStopFailed', abort: 'UnitAbortFailed', commit: 'CheckpointCommitFailed',
  'images-verify': 'UnitImagesVerifyFailed', 'restore-prepare': 'UnitRestorePrepareFailed', restore: 'UnitRestoreFailed', rollback: 'UnitRollbackFailed',
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A checkpoint whose DeadlineScheduled is not folded yet (it is decided with the plan): the CLI's default timeout. */
const DEFAULT_DEADLINE_MS = 120_000;

/** Images smaller than this are checked on the agent's own thread (~25 ms at most). */
const OFF_THREAD_BYTES = 32 << 20;

export class JobWork {
  readonly #o: CheckpointWorkOptions;
  readonly #jobs = new Map<string, JobProgress>();
  /** Commands this process started (answered or not yet): never started twice. */
  readonly #started = new Set<string>();
  /** One step at a time per unit: an abort waits for a dump in progress. */
  readonly #unitQueue = new Map<string, Promise<void>>();
  /** When this process froze a unit (for frozenMs; after a restart the UnitFrozen event's time). */
  readonly #frozenAt = new Map<string, number>();
  /** The guard of each unit this process froze (job/unit): it thaws the unit if this process cannot. */
  readonly #guards = new Map<string, FreezeGuard>();
  /** Units thawed because the log could not be written (job/unit → why): not dumped afterwards. */
  readonly #released = new Map<string, string>();
  #live = false;

  constructor(options: CheckpointWorkOptions) {
    this.#o = options;
  }

  /** Called for every event of a job's stream, with the coordinator state folded up to it. */
  fold(job: string, state: JobCoordinatorState, e: RecordedEvent): void {
    let w = this.#jobs.get(job);
    if (!w) this.#jobs.set(job, (w = { state, commands: noCommands, revision: -1, undecided: [], appending: false }));
    w.state = state;
    const commands = w.commands;
    w.commands = evolveCommands(commands, e);
    w.revision = e.revision;
    const cause = e.metadata.decidedAt !== undefined ? e.metadata.causationId : undefined;
    if (cause !== undefined) w.undecided = w.undecided.filter((u) => u.cause.id !== cause);
    // An expired request is never planned: its refusal is decided from the RequestExpired instead.
    if (e.type === 'RequestExpired') w.undecided = w.undecided.filter((u) => !isRequest(u.cause) || u.cause.data.request !== e.data.request);
    const decisions = decideJobCoordinator(state, e);
    if (decisions.length > 0) w.undecided.push({ cause: e, decisions });
    // Most events are process observations of a running job: nothing to decide, no new command.
    if (this.#live && (w.undecided.length > 0 || w.commands !== commands)) this.#drive(job, w);
  }

  /** Node streams change what the coordinator may plan with; job states are updated by the caller. */
  updateState(job: string, state: JobCoordinatorState): void {
    const w = this.#jobs.get(job);
    if (w) w.state = state;
  }

  /** After the agent caught up with the log: no unit left frozen by accident, then everything pending. */
  goLive(): void {
    this.#live = true;
    for (const [job, w] of this.#jobs) {
      this.#thawForgotten(job, w);
      this.#drive(job, w);
    }
  }

  #drive(job: string, w: JobProgress) {
    void this.#decide(job, w);
    for (const command of pendingOn(w.commands, this.#o.node)) {
      if (this.#started.has(`${job} ${command.key}`)) continue;
      this.#started.add(`${job} ${command.key}`);
      // One step at a time per unit — but the images check runs beside the restore it releases.
      const queueKey = `${job}/${command.unit ?? ''}${command.step === 'images-verify' ? '/check' : ''}`;
      const run = (this.#unitQueue.get(queueKey) ?? Promise.resolve()).then(() => this.#execute(job, command));
      this.#unitQueue.set(queueKey, run.catch(() => {}));
    }
  }

  // ── the coordinator ───────────────────────────────────────────────────────────────────────

  /** Check-and-append: decisions for the oldest undecided cause, with the revision last folded. */
  async #decide(job: string, w: JobProgress): Promise<void> {
    const next = w.undecided[0];
    if (w.appending || !next) return;
    w.appending = true;
    const metadata = {
      actor: { kind: 'coordinator' as const, node: this.#o.node },
      causationId: next.cause.id,
      decidedAt: next.cause.position,
      ...(next.cause.metadata.correlationId !== undefined && { correlationId: next.cause.metadata.correlationId }),
    };
    const revision = w.revision;
    const expired = this.#expired(next);
    try {
      await this.#o.store.append(jobStream(job), expired ? [expired] : next.decisions.map((d) => ({ ...d, metadata })), { expectedRevision: revision });
      w.appending = false;
      // The next cause may have been folded while this append was under way: its decision is due
      // now, not at the next event (which may be minutes away). Until the fold has seen this
      // append, the attempt fails on the revision and waits for the fold.
      if (w.undecided.length > 0) return this.#decide(job, w);
    } catch (error) {
      w.appending = false;
      if (error instanceof WrongExpectedRevisionError) {
        // Someone appended first (maybe this very decision, from another agent). Once the fold
        // has gone past what it decided on, it knows whether the decision is still missing.
        if (w.revision !== revision) return this.#decide(job, w);
        return;
      }
      this.#o.log(`could not record the coordinator's decision for ${job}: ${(error as Error).message}; retrying`);
      await sleep(1000);
      return this.#decide(job, w);
    }
  }

  /**
   * The runtime's side of a request's deadline (the coordinator, being pure, cannot see the clock):
   * a plan for a request whose deadline has passed — an agent paused, down or stuck behind other
   * work — is not recorded; the clock's reading is (RequestExpired), and the coordinator refuses
   * the request from it. Check-and-append like any decision: another agent's plan may win first.
   */
  #expired({ cause, decisions }: Undecided): ProposedEvent | undefined {
    if (!isRequest(cause) || !decisions.some((d) => d.type === 'CheckpointPlanned' || d.type === 'RestartPlanned')) return undefined;
    const deadline = requestDeadline(cause);
    if (Date.now() <= Date.parse(deadline)) return undefined;
    const command = cause.type === 'CheckpointRequested' ? 'checkpoint' : 'restart';
    this.#o.log(`${command} request ${cause.data.request} of ${cause.stream.slice(4)} expired at ${deadline}, before it was planned: not planning it`);
    return {
      type: 'RequestExpired',
      data: { request: cause.data.request, command, deadline },
      metadata: { actor: { kind: 'node', node: this.#o.node }, causationId: cause.id, ...(cause.metadata.correlationId !== undefined && { correlationId: cause.metadata.correlationId }) },
    };
  }

  // ── commands for this node ────────────────────────────────────────────────────────────────

  async #execute(job: string, c: PendingCommand): Promise<void> {
    const w = this.#jobs.get(job)!;
    const step = RESTART_STEPS.has(c.step) ? { restart: c.version, unit: c.unit, node: c.node } : c.unit ? { version: c.version, unit: c.unit, node: c.node } : { version: c.version };
    const answer = (type: string, data: object) =>
      this.#o.emit(job, { type, data: { ...step, ...data }, metadata: { causationId: c.request.id } } as ProposedEvent);
    try {
      if (c.step === 'commit') return answer('CheckpointCommitted', await this.#commit(job, w, c));
      if (RESTART_STEPS.has(c.step)) return await this.#restartStep(job, w, c, answer);
      const u = this.#target(job, w, c);
      const running = () => w.state.checkpoint.active?.version === c.version && w.state.checkpoint.active.phase === 'running';
      const key = `${job}/${c.unit}`;
      switch (c.step) {
        case 'freeze': {
          if (!running()) throw new Error(`checkpoint v${c.version} is no longer running (${w.state.checkpoint.active?.reason ?? 'ended'})`);
          const deadline = this.#beforeDeadline(w, c, 'freeze');
          // What the unit holds is judged before it is frozen: a refusal leaves the job running.
          await this.#o.checkpointer.preflight(u, w.state.checkpoint.nodes[this.#o.node]);
          // Armed first: should this process die or stall mid-freeze, the guard still thaws the unit.
          // A guard left from an earlier checkpoint (its thaw failed) must not thaw this one's cut.
          this.#disarm(key);
          if (freezerOf(u.cgroups)) this.#guards.set(key, await FreezeGuard.arm(u.cgroups, deadline));
          this.#released.delete(key);
          try {
            const frozen = await this.#o.checkpointer.freeze(u);
            this.#frozenAt.set(key, performance.now() - frozen.durationMs);
            return answer('UnitFrozen', frozen);
          } catch (error) {
            this.#disarm(key); // freezeForDump thawed the unit again
            throw error;
          }
        }
        case 'dump': {
          if (!running()) throw new Error(`checkpoint v${c.version} is no longer running (${w.state.checkpoint.active?.reason ?? 'ended'})`);
          this.#beforeDeadline(w, c, 'dump');
          const released = this.#released.get(key);
          if (released) throw new Error(`the unit was thawed before its dump because the log could not be written (${released}); not dumping a running unit`);
          if (existsSync(u.imagesDir)) {
            await this.#waitForCriu(u.imagesDir);
            throw new Error('the node agent restarted while this unit was being dumped; the images cannot be trusted and are not dumped again');
          }
          try {
            const dumped = await this.#o.checkpointer.dump(u);
            const thawedMeanwhile = this.#released.get(key);
            if (thawedMeanwhile) throw new Error(`the unit was thawed during its dump because the log could not be written (${thawedMeanwhile}); the images are not a consistent cut`);
            return answer('UnitDumped', dumped);
          } catch (error) {
            const full = this.#imagesDiskFull(error);
            // Locally first: the unit runs again and its partial images are gone before the
            // failure is recorded (the log may be the very thing that is full).
            await this.#cleanUp(job, key, u);
            throw full ?? error;
          }
        }
        case 'verify': {
          // captured: the PIDs the images hold (in the unit's PID namespace); processes: the host
          // identities of the same processes, in that order — what a restart links them to.
          const { images, processes } = await this.#verify(job, w, c, u);
          return answer('UnitVerified', { captured: images, processes });
        }
        case 'thaw': {
          await this.#o.checkpointer.thaw(u);
          this.#disarm(key);
          const since = this.#frozenAt.get(key);
          const frozenMs = since !== undefined ? performance.now() - since : Math.max(0, Date.now() - Date.parse(w.commands.versions[c.version]?.frozenAt[c.unit!] ?? c.request.recordedAt));
          return answer('UnitThawed', { frozenMs });
        }
        case 'stop':
          // Committed: if this process goes now, the guard kills the unit rather than thaw it.
          this.#guards.get(key)?.stopping();
          await this.#o.checkpointer.stop(u);
          this.#disarm(key);
          return answer('UnitStopped', {});
        case 'abort': {
          await this.#waitForCriu(u.imagesDir);
          const aborted = await this.#o.checkpointer.abort(u);
          this.#disarm(key);
          return answer('UnitAborted', aborted);
        }
      }
    } catch (error) {
      const reason = (error as Error).message;
      const failure = this.#o.checkpointer.explain(error);
      this.#o.log(`${c.key} of ${job} failed: ${reason} [${failure.class}]`);
      answer(FAILED[c.step], { reason, failure });
    }
  }

  /**
   * The runtime's side of deadlines (the coordinator, being pure, cannot see the clock): no freeze
   * or dump once the checkpoint's recorded deadline has passed — an agent that was paused or slow
   * answers the step as failed, saying so. Returns the deadline (ms since the epoch).
   */
  #beforeDeadline(w: JobProgress, c: PendingCommand, step: 'freeze' | 'dump'): number {
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

  /** The guard of a unit that is thawed, stopped or aborted: it has nothing left to do. */
  #disarm(key: string) {
    this.#guards.get(key)?.disarm();
    this.#guards.delete(key);
  }

  /** A failed dump: thaw the unit and remove its partial images now, not when the abort is recorded. */
  async #cleanUp(job: string, key: string, u: UnitTarget) {
    try {
      await this.#waitForCriu(u.imagesDir);
      await this.#o.checkpointer.abort(u);
      this.#disarm(key);
    } catch (error) {
      this.#o.log(`could not clean up unit ${u.unit} of ${job} after its failed dump: ${(error as Error).message} (its guard thaws it by the deadline)`);
    }
  }

  /**
   * The log cannot be written: hold nothing frozen meanwhile. Every unit this process froze is
   * thawed now; its dump, should one be asked for later, is refused (the cut is gone).
   */
  releaseFrozen(why: string): void {
    for (const [key, guard] of this.#guards) {
      const [job, unit] = key.split('/') as [string, string];
      const cgroups = this.#jobs.get(job)?.state.checkpoint.job.units[unit]?.cgroups;
      if (!cgroups || this.#released.has(key)) continue;
      this.#released.set(key, why);
      this.#o.log(`thawing unit ${unit} of ${job}: the log cannot be written (${why})`);
      thawUnit(cgroups)
        .then(() => {
          guard.disarm();
          if (this.#guards.get(key) === guard) this.#guards.delete(key);
        })
        .catch((error: Error) => this.#o.log(`could not thaw unit ${unit} of ${job}: ${error.message} (its guard thaws it by the deadline)`));
    }
  }

  #target(job: string, w: JobProgress, c: PendingCommand): UnitTarget {
    const unit = w.state.checkpoint.job.units[c.unit!];
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
      throw Object.assign(new Error(message), { failure: { class: 'permission' as const, message, hint: 'the event log holds an event this node agent did not write: check who appends to the store (ckpt log --json)' } });
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

  // ── restart steps ─────────────────────────────────────────────────────────────────────────

  async #restartStep(job: string, w: JobProgress, c: PendingCommand, answer: (type: string, data: object) => void): Promise<void> {
    const r = w.commands.restarts[c.version];
    const planned = r?.units.find((u) => u.unit === c.unit);
    if (!r || !planned) throw new Error(`restart r${c.version} of ${job} has no unit ${c.unit} in this node's log`);
    const unit = planned.unit;
    // Restored from: images/JOB/vN/UNIT through real directories only (never a planted link).
    const imagesDir = () => realUnitImagesDir(this.#o.imagesRoot, job, r.version, unit);
    const workDir = join(this.#o.workRoot, job, `r${c.version}`, unit);
    // restarts/JOB/rN/UNIT: each level a private directory of the agent's, never a planted link.
    const makeWorkDir = () => (makePrivateDir(this.#o.workRoot), makePrivateDirs(this.#o.workRoot, job, `r${c.version}`, unit));
    const running = () => w.state.restart.active?.restart === c.version && w.state.restart.active.phase === 'running';
    const stillRunning = () => {
      if (!running()) throw new Error(`restart r${c.version} is no longer running (${w.state.restart.active?.reason ?? 'ended'})`);
    };
    switch (c.step) {
      case 'images-verify': {
        // Runs beside the restore step: its verdict lets the restored processes run, or not.
        makeWorkDir();
        try {
          stillRunning();
          const manifestSha256 = w.commands.versions[r.version]?.manifest;
          const options = { unit, ...(manifestSha256 && { manifestSha256 }) };
          // A worker thread costs ~40 ms to start: worth it only when hashing would hold the agent longer.
          const bytes = w.commands.versions[r.version]?.dumps[unit]?.bytes ?? Infinity;
          const checked = bytes < OFF_THREAD_BYTES ? verifyVersion(this.#o.imagesRoot, job, r.version, options) : await verifyVersionOffThread(this.#o.imagesRoot, job, r.version, options);
          if (!checked.ok) throw new Error(describeProblems(this.#o.imagesRoot, job, r.version, checked.problems));
          const entry = readManifest(this.#o.imagesRoot, job, r.version)?.units.find((u) => u.unit === unit);
          if (!entry) throw new Error(`version ${r.version} of ${job} has no images of unit ${unit}`);
          try {
            createPrivateFile(join(workDir, RELEASE));
          } catch (error) {
            if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error; // released before a crash of the agent
          }
          return answer('UnitImagesVerified', { files: entry.files.length, bytes: entry.bytes });
        } catch (error) {
          replacePrivateFile(join(workDir, CANCEL), (error as Error).message);
          throw error;
        }
      }
      case 'restore-prepare': {
        stillRunning();
        const started = performance.now();
        const cgroups = this.#o.restartCgroups(job, unit, c.version, planned.limits);
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
        if (pidNamespace && !ownNamespace) this.#o.log(`restoring unit ${unit} of ${job} (images without a PID namespace of their own) with criu as a new namespace's init: its original PIDs are in use; once restored this way it cannot be checkpointed again`);
        return answer('UnitRestorePrepared', { cgroups, pidNamespace, waitedMs: performance.now() - started });
      }
      case 'restore': {
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
        const result = await this.#o.checkpointer.restore({ imagesDir: imagesDir(), pidNamespace: prepared.pidNamespace, cgroups: prepared.cgroups, workDir, options, ...(owner && { owner }) });
        // The images' PIDs are those of the unit's PID namespace: find each one's host PID.
        const hostPid = prepared.pidNamespace ? hostPidsByNamespacePid(result.rootPid, unitProcesses(prepared.cgroups)) : new Map(pids.map((p) => [p, p]));
        const was = new Map((w.commands.versions[r.version]?.captured[unit] ?? []).map((p) => [p.imagePid, p.process]));
        // A restored process may finish at once (a `sleep 0.1` of the job): only the root must be there.
        const processes: RestoredProcess[] = pids.flatMap((old) => {
          const pid = hostPid.get(old);
          const stat = pid === undefined ? undefined : readStat(pid);
          if (!stat && old === pids[0]) throw new Error(`the unit’s root (pid ${old} in the images) is not running after the restore (log: ${join(workDir, 'restore.log')})`);
          if (!stat) return [];
          const groups = readCgroups(stat.pid);
          const cgroup = groups ? primaryCgroup(groups) : undefined;
          const { ppid, pgid, sid, comm } = stat;
          return [{ was: was.get(old) ?? { pid: old, startTime: 0 }, now: { pid: stat.pid, startTime: stat.startTime }, nsPid: prepared.pidNamespace ? old : null, ppid, pgid, sid, comm, ...(cgroup && { cgroup }) }];
        });
        this.#o.adoptRestored(job, unit, processes.map((p) => p.now));
        return answer('UnitRestored', { processes, durationMs: result.durationMs, ...(result.stats && { stats: result.stats }) });
      }
      case 'rollback': {
        const cgroups = this.#o.ownCgroups(job, unit, r.prepared[unit]?.cgroups ?? []);
        if (cgroups.length > 0 && cgroups.some((cg) => existsSync(cg.path))) {
          await killUnit(cgroups.filter((cg) => existsSync(cg.path)));
          try {
            removeUnitCgroups(cgroups);
          } catch {
            // the agent removes them when it sees the unit end
          }
        }
        return answer('UnitRolledBack', {});
      }
    }
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

  /**
   * The cut is what the frozen cgroup holds: the images must hold exactly the unit — every process
   * in its (frozen) cgroup, each a member the log knows — plus the zombies among them (exited,
   * not yet reaped by a parent frozen with them: out of the cgroup, yet in the tree CRIU dumps).
   * A process born after the plan and before the freeze is a member by now (reconciled here); a
   * planned one gone before the freeze is simply not in the cut. Returns the PIDs the images hold
   * (`images`, in the unit's PID namespace), the host PIDs of the same processes (`captured`) and
   * their identities (`processes`).
   */
  async #verify(job: string, w: JobProgress, c: PendingCommand, u: UnitTarget): Promise<{ images: number[]; captured: number[]; processes: ProcessRef[] }> {
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

  /** Writes the manifest (fsynced) once every unit is dumped; after a crash, finds a manifest already written. */
  async #commit(job: string, w: JobProgress, c: PendingCommand) {
    const a = w.state.checkpoint.active;
    if (a?.version !== c.version || a.phase !== 'committing') throw new Error(`checkpoint v${c.version} is no longer committing (${a?.reason ?? 'ended'})`);
    const v = w.commands.versions[c.version]!;
    const units = v.units.map((u) => {
      const dump = v.dumps[u.unit];
      return { unit: u.unit, node: u.node, durationMs: dump?.durationMs ?? 0, ...(dump?.images && { files: dump.images }) };
    });
    try {
      const done = commitVersion(this.#o.imagesRoot, { job, version: c.version, parent: v.parent, units, createdAt: c.request.recordedAt });
      return { files: done.manifest.files, bytes: done.manifest.bytes, durationMs: done.durationMs, manifest: done.manifestSha256 };
    } catch (error) {
      const manifest = error instanceof ImageStoreError ? readManifest(this.#o.imagesRoot, job, c.version) : undefined;
      if (!manifest) throw error;
      // Committed by this node before a crash, the outcome not yet recorded.
      return { files: manifest.files, bytes: manifest.bytes, durationMs: 0, manifest: hashFile(manifestPath(this.#o.imagesRoot, job, c.version)).sha256 };
    }
  }

  async #waitForCriu(imagesDir: string) {
    for (let i = 0; criuWritingTo(imagesDir).length > 0; i++) {
      if (i % 50 === 0) this.#o.log(`waiting for criu (pids ${criuWritingTo(imagesDir).join(' ')}) still writing ${imagesDir}`);
      await sleep(100);
    }
  }

  /** A unit frozen while no checkpoint of its job is under way (a crash at the wrong moment): thaw it. */
  #thawForgotten(job: string, w: JobProgress) {
    if (w.state.checkpoint.active) return; // the abort or thaw commands of the checkpoint will
    for (const unit of Object.values(w.state.checkpoint.job.units)) {
      if (unit.node !== this.#o.node || unit.phase !== 'running') continue;
      try {
        const cgroups = this.#o.ownCgroups(job, unit.unit, unit.cgroups);
        if (!freezerOf(cgroups) || unitFreezeState(cgroups) === 'thawed') continue;
        this.#o.log(`unit ${unit.unit} of ${job} was frozen with no checkpoint under way: thawing it`);
        thawUnit(cgroups).catch((error: Error) => this.#o.log(`could not thaw unit ${unit.unit} of ${job}: ${error.message}`));
      } catch (error) {
        this.#o.log(`could not check whether unit ${unit.unit} of ${job} is frozen: ${(error as Error).message}`);
      }
    }
  }
}
