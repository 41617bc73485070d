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
//   Each step is a handler in one table (steps/): it returns its step's done event; #execute
//   records every outcome, a failure once what the handler registered to undo is undone.

import { noCommands, type PendingCommand, pendingOn, type Step } from '../../domain/checkpoint-commands.js';
import type { Checkpointer } from '../../domain/checkpointer.js';
import { type EventStore, type ProposedEvent, WrongExpectedRevisionError } from '../../domain/event-store.js';
import type { Limits, UnitCgroup } from '../../domain/events/job.js';
import { jobStream, type NodeId, type UnitId } from '../../domain/identity.js';
import { requestDeadline } from '../../domain/requests.js';
import { isRequest, type JobProgress, type Undecided } from '../../projections/agent-state.js';
import { freezerOf, thawUnit, unitFreezeState } from '../cgroups/unit-cgroups.js';
import { FrozenUnits } from './steps/frozen-units.js';
import { failed, handlerFor, type JobView, type Outcome, type StepHandler, type StepTable } from './steps/step.js';
import { stepTable } from './steps/step-table.js';

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

/** A job's progress as the host last folded it, and whether a decision is being appended. */
interface JobWorkState {
  progress: JobProgress;
  appending: boolean;
  /** What a step sees: always the latest fold (the job moves on while a step runs). */
  readonly view: JobView;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class JobWork {
  readonly #o: CheckpointWorkOptions;
  readonly #jobs = new Map<string, JobWorkState>();
  /** Commands this process started (answered or not yet): never started twice. */
  readonly #started = new Set<string>();
  /** One step at a time per unit: an abort waits for a dump in progress. */
  readonly #unitQueue = new Map<string, Promise<void>>();
  /** The units this process froze: their guards, and which were thawed because the log failed. */
  readonly #frozen: FrozenUnits;
  readonly #steps: StepTable;
  #live = false;

  constructor(options: CheckpointWorkOptions) {
    this.#o = options;
    this.#frozen = new FrozenUnits(options.log);
    this.#steps = stepTable(options, this.#frozen);
  }

  /** After every event of a job's stream, with the job's progress folded up to it. */
  fold(job: string, progress: JobProgress): void {
    const commands = this.#jobs.get(job)?.progress.commands ?? noCommands;
    const w = this.#job(job, progress);
    w.progress = progress;
    // Most events are process observations of a running job: nothing to decide, no new command.
    if (this.#live && (progress.undecided.length > 0 || progress.commands !== commands)) this.#drive(job, w);
  }

  /** The job settled (ended, nothing under way): nothing of it is kept. */
  forget(job: string): void {
    if (!this.#jobs.delete(job)) return;
    for (const key of this.#started) if (key.startsWith(`${job} `)) this.#started.delete(key);
    for (const key of this.#unitQueue.keys()) if (key.startsWith(`${job}/`)) this.#unitQueue.delete(key);
  }

  /** A change from outside the job's stream (a node's probe): nothing to act on by itself. */
  updateState(job: string, progress: JobProgress): void {
    this.#job(job, progress).progress = progress;
  }

  #job(job: string, progress: JobProgress): JobWorkState {
    let w = this.#jobs.get(job);
    if (!w) {
      const state: Omit<JobWorkState, 'view'> = { progress, appending: false };
      w = Object.assign(state, {
        view: {
          get state() {
            return state.progress.state;
          },
          get commands() {
            return state.progress.commands;
          },
        },
      });
      this.#jobs.set(job, w);
    }
    return w;
  }

  /** After the agent caught up with the log: no unit left frozen by accident, then everything pending. */
  goLive(): void {
    this.#live = true;
    for (const [job, w] of this.#jobs) {
      this.#thawForgotten(job, w);
      this.#drive(job, w);
    }
  }

  #drive(job: string, w: JobWorkState) {
    void this.#decide(job, w);
    for (const command of pendingOn(w.progress.commands, this.#o.node)) {
      if (this.#started.has(`${job} ${command.key}`)) continue;
      this.#started.add(`${job} ${command.key}`);
      // One step at a time per unit — but the images check runs beside the restore it releases.
      const queueKey = `${job}/${command.unit ?? ''}${command.step === 'images-verify' ? '/check' : ''}`;
      const run = (this.#unitQueue.get(queueKey) ?? Promise.resolve()).then(() => this.#execute(job, command));
      this.#unitQueue.set(
        queueKey,
        run.catch(() => {}),
      );
    }
  }

  // ── the coordinator ───────────────────────────────────────────────────────────────────────

  /** Check-and-append: decisions for the oldest undecided cause, with the revision last folded. */
  async #decide(job: string, w: JobWorkState): Promise<void> {
    const next = w.progress.undecided[0];
    if (w.appending || !next) return;
    w.appending = true;
    const metadata = {
      actor: { kind: 'coordinator' as const, node: this.#o.node },
      causationId: next.cause.id,
      decidedAt: next.cause.position,
      ...(next.cause.metadata.correlationId !== undefined && { correlationId: next.cause.metadata.correlationId }),
    };
    const revision = w.progress.revision;
    const expired = this.#expired(next);
    try {
      await this.#o.store.append(jobStream(job), expired ? [expired] : next.decisions.map((d) => ({ ...d, metadata })), { expectedRevision: revision });
      w.appending = false;
      // The next cause may have been folded while this append was under way: its decision is due
      // now, not at the next event (which may be minutes away). Until the fold has seen this
      // append, the attempt fails on the revision and waits for the fold.
      if (w.progress.undecided.length > 0) return this.#decide(job, w);
    } catch (error) {
      w.appending = false;
      if (error instanceof WrongExpectedRevisionError) {
        // Someone appended first (maybe this very decision, from another agent). Once the fold
        // has gone past what it decided on, it knows whether the decision is still missing.
        if (w.progress.revision !== revision) return this.#decide(job, w);
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

  /** The one place a command's outcome is recorded: its handler's done event, or its failure once
   *  what the failure must undo locally is undone. */
  async #execute(job: string, c: PendingCommand): Promise<void> {
    let handler: StepHandler<Step>;
    try {
      handler = handlerFor(this.#steps, c.step);
    } catch (error) {
      // No outcome to answer with: the command stays pending for an agent that knows the step.
      this.#o.log(`${c.key} of ${job} refused: ${(error as Error).message}`);
      return;
    }
    const undo: Array<() => Promise<void> | void> = [];
    let outcome: Outcome<Step>;
    try {
      const record = (e: ProposedEvent) => this.#o.emit(job, { ...e, metadata: { causationId: c.request.id } });
      outcome = await handler(c, { job, progress: this.#jobs.get(job)!.view, onFailure: (u) => undo.push(u), record });
    } catch (error) {
      for (const u of undo.reverse()) {
        try {
          await u();
        } catch (undoError) {
          this.#o.log(`${c.key} of ${job}: could not undo after its failure: ${(undoError as Error).message}`);
        }
      }
      const reason = (error as Error).message;
      const failure = this.#o.checkpointer.explain(error);
      this.#o.log(`${c.key} of ${job} failed: ${reason} [${failure.class}]`);
      outcome = failed(c, reason, failure);
    }
    this.#o.emit(job, { ...outcome, metadata: { causationId: c.request.id } });
  }

  /**
   * The log cannot be written: hold nothing frozen meanwhile. Every unit this process froze is
   * thawed now; its dump, should one be asked for later, is refused (the cut is gone).
   */
  releaseFrozen(why: string): void {
    this.#frozen.releaseAll(why, (job, unit) => this.#jobs.get(job)?.progress.state.checkpoint.job.units[unit]?.cgroups);
  }

  /** A unit frozen while no checkpoint of its job is under way (a crash at the wrong moment): thaw it. */
  #thawForgotten(job: string, w: JobWorkState) {
    if (w.progress.state.checkpoint.active) return; // the abort or thaw commands of the checkpoint will
    for (const unit of Object.values(w.progress.state.checkpoint.job.units)) {
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
