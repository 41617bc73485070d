// The node agent's coordinator host: follows the log, folds the agent's state (projections/
// agent-state.ts: each job's coordinator state with its membership, its commands and undecided
// causes; every node's checkpointer; pending deadlines), and feeds it to the jobs' work
// (adapters/agent/job-work.ts: deciders and this node's commands) and to the deadline timer.
// It starts from the state's snapshot and folds only what the log got since; while it runs it
// saves a new snapshot every SAVE_EVERY events. The rest of the agent reads jobs through it
// (JobsView), and hears of a job's change once live.
import type { Subscription } from 'rxjs';
import type { Checkpointer } from '../../domain/checkpointer.js';
import { NAME_PATTERN } from '../../domain/codecs.js';
import type { EventStore, ProposedEvent, RecordedEvent } from '../../domain/event-store.js';
import { jobOfStream, jobStream, type NodeId } from '../../domain/identity.js';
import type { JobMembership, Unit } from '../../domain/membership.js';
import { entriesOf, getIn, keysOf } from '../../domain/persistent-map.js';
import { type AgentState, agentModel, evolveAgentState, initialAgentState, settledJob, withJobHistory } from '../../projections/agent-state.js';
import { readWholeStream } from '../../projections/project.js';
import { readModel, saveModel } from '../../projections/read-model.js';
import { DeadlineTimer } from '../timer/deadline-timer.js';
import { type CheckpointWorkOptions, JobWork } from './job-work.js';

/** What the agent's other rooms read of the jobs the log describes. */
export interface JobsView {
  jobs(): Iterable<string>;
  membership(job: string): JobMembership | undefined;
  /** The job's units on this node. */
  myUnits(job: string): Unit[];
}

/** How far the first catch-up has come: events folded, and the log's head when it began. */
export interface CatchUpProgress {
  readonly folded: number;
  readonly position: number;
  readonly head: number;
}

export interface CoordinatorHostOptions {
  readonly store: EventStore;
  readonly node: NodeId;
  readonly checkpointer: Checkpointer;
  readonly imagesRoot: string;
  readonly workRoot: string;
  readonly emit: (job: string, event: ProposedEvent) => void;
  /** What the job's work asks of the tracker and the launch protocol. */
  readonly units: Pick<CheckpointWorkOptions, 'reconcileUnit' | 'tracked' | 'restartCgroups' | 'ownCgroups' | 'adoptRestored'>;
  /** After the catch-up: a job's state changed (its event folded). */
  readonly changed: (job: string, e: RecordedEvent) => void;
  /** A job settled (ended, nothing under way) and left the state: what is kept for it may go. */
  readonly settled?: (job: string) => void;
  /** During the first catch-up, every PROGRESS_EVERY events (and once at its end). */
  readonly progress?: (p: CatchUpProgress) => void;
  readonly log: (line: string) => void;
}

const RETRY_MS = 1000;
const PROGRESS_EVERY = 10_000;
/** Events folded while live between two snapshots of the agent's state. */
const SAVE_EVERY = 20_000;

export class CoordinatorHost implements JobsView {
  readonly #o: CoordinatorHostOptions;
  #state: AgentState = initialAgentState;
  readonly #badStreams = new Set<string>();
  readonly work: JobWork;
  readonly #deadlines: DeadlineTimer;
  #subscription: Subscription | undefined;
  #position = 0;
  #caughtUp = false;
  #stopped = false;
  #folded = 0;
  #head = 0;
  #unsaved = 0;
  #saving: Promise<void> | undefined;
  #last: RecordedEvent | undefined;
  #waiting: RecordedEvent[] = [];
  /** The last position the subscription delivered. */
  #received = 0;
  #whenDrained: (() => void) | undefined;

  constructor(options: CoordinatorHostOptions) {
    this.#o = options;
    const { store, node, checkpointer, imagesRoot, workRoot, emit, units, log } = options;
    this.work = new JobWork({ store, node, checkpointer, imagesRoot, workRoot, emit, log, ...units });
    // Deadlines are events: every agent runs a timer, fed from its own reading of the log; a
    // deadline is recorded reached once (check-and-append).
    this.#deadlines = new DeadlineTimer({ store, log });
  }

  /** Folds the log from the state's snapshot on; resolves once caught up (nothing is acted on before goLive). */
  async catchUp(): Promise<void> {
    const { store, progress, log } = this.#o;
    this.#head = await store.headPosition();
    progress?.({ folded: 0, position: 0, head: this.#head });
    let reported = 0;
    const read = await readModel(store, agentModel, '', {
      prepare: (state, e) => {
        const job = settledJob(state, e);
        return job === undefined ? undefined : this.#unsettle(state, job, e);
      },
      progress: (folded, position) => {
        if (folded - reported < PROGRESS_EVERY) return;
        reported = folded;
        progress?.({ folded, position, head: Math.max(this.#head, position) });
      },
    });
    if (read.folded > 0 || read.notes.some((n) => n.includes('rebuilt'))) for (const note of read.notes) log(note);
    this.#state = read.state;
    this.#position = read.position;
    this.#folded = read.folded;
    this.#unsaved = read.saved ? 0 : read.folded;
    for (const [job, w] of entriesOf(this.#state.jobs)) this.work.updateState(job, w);
    this.#deadlines.resume(this.#state.deadlines);
    // What was appended while the snapshot was read and folded.
    await new Promise<void>((resolve, reject) => this.#follow(this.#position + 1, resolve, reject));
    progress?.({ folded: this.#folded, position: this.#position, head: Math.max(this.#head, this.#position) });
  }

  /** From now on decisions are made, commands executed and deadlines armed. */
  goLive(): void {
    this.#caughtUp = true;
    this.work.goLive();
    this.#deadlines.goLive();
  }

  /** Stops following the log; what was folded since the last snapshot is saved, for the next start. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#subscription?.unsubscribe();
    this.#deadlines.stop();
    await this.#saving;
    if (this.#unsaved > 0 && this.#last) await this.#save(this.#last);
  }

  jobs(): Iterable<string> {
    return keysOf(this.#state.jobs);
  }

  /** The last log position folded. */
  get position(): number {
    return this.#position;
  }

  membership(job: string): JobMembership | undefined {
    return getIn(this.#state.jobs, job)?.state.checkpoint.job;
  }

  myUnits(job: string): Unit[] {
    const state = this.membership(job);
    return state ? Object.values(state.units).filter((u) => u.node === this.#o.node) : [];
  }

  /**
   * Follows the log from a position. If the store goes away later (a PostgreSQL restart), the
   * agent keeps tracking — observations wait in the outbox — and follows again from the last
   * position it received (folded, or waiting behind a settled job's history), so no event is
   * applied twice.
   */
  #follow(from: number, caughtUp?: () => void, failed?: (error: Error) => void) {
    this.#received = from - 1;
    const onCaughtUp = caughtUp && (() => (this.#waiting.length > 0 ? (this.#whenDrained = caughtUp) : caughtUp()));
    this.#subscription = this.#o.store.subscribeAll({ from, onCaughtUp }).subscribe({
      next: (e) => {
        this.#received = e.position;
        if (this.#waiting.length === 0 && settledJob(this.#state, e) === undefined) this.#onLogEvent(e);
        else this.#wait(e);
      },
      error: (error: Error) => {
        if (failed && !this.#caughtUp) return failed(error);
        this.#o.log(`lost the event store (${error.message}); following it again in ${RETRY_MS} ms`);
        setTimeout(() => this.#stopped || this.#follow(this.#received + 1), RETRY_MS);
      },
    });
  }

  /** Events behind one whose settled job is being folded again from its stream: in order, after it. */
  #wait(e: RecordedEvent) {
    this.#waiting.push(e);
    if (this.#waiting.length > 1) return;
    void (async () => {
      while (this.#waiting.length > 0 && !this.#stopped) {
        const next = this.#waiting[0]!;
        const job = settledJob(this.#state, next);
        if (job !== undefined) {
          try {
            this.#state = await this.#unsettle(this.#state, job, next);
          } catch (error) {
            this.#o.log(`could not read the history of job ${job} (${(error as Error).message}); trying again in ${RETRY_MS} ms`);
            await new Promise((r) => setTimeout(r, RETRY_MS));
            continue;
          }
        }
        this.#waiting.shift();
        this.#onLogEvent(next);
      }
      const drained = this.#whenDrained;
      this.#whenDrained = undefined;
      drained?.();
    })();
  }

  /** A settled job's stream goes on: the job as it settled, from the events before this one. */
  async #unsettle(state: AgentState, job: string, e: RecordedEvent): Promise<AgentState> {
    const before = (await readWholeStream(this.#o.store, jobStream(job))).filter((x) => x.revision < e.revision);
    return withJobHistory(state, job, before);
  }

  #onLogEvent(e: RecordedEvent) {
    this.#position = e.position;
    this.#last = e;
    this.#state = evolveAgentState(this.#state, e);
    this.#deadlines.observe(e);
    if (!this.#caughtUp && ++this.#folded % PROGRESS_EVERY === 0) this.#o.progress?.({ folded: this.#folded, position: e.position, head: Math.max(this.#head, e.position) });
    if (++this.#unsaved >= SAVE_EVERY) this.#save(e);
    if (e.type === 'CheckpointerProbed') {
      for (const [job, w] of entriesOf(this.#state.jobs)) this.work.updateState(job, w);
      return;
    }
    const job = jobOfStream(e.stream);
    if (!job) {
      if (e.stream.startsWith('job-') && !this.#badStreams.has(e.stream)) {
        this.#badStreams.add(e.stream);
        this.#o.log(`ignoring stream ${JSON.stringify(e.stream)}: its job name is not a valid name (${NAME_PATTERN.source}); nothing in it is acted on`);
      }
      return;
    }
    const progress = getIn(this.#state.jobs, job);
    if (progress) this.work.fold(job, progress);
    else {
      this.work.forget(job);
      this.#o.settled?.(job);
    }
    if (this.#caughtUp) this.#o.changed(job, e);
  }

  /** The state is immutable: it is encoded and saved beside the fold, which goes on. */
  #save(last: RecordedEvent): Promise<void> | undefined {
    if (this.#saving || !this.#o.store.snapshots) return this.#saving;
    this.#unsaved = 0;
    this.#saving = saveModel(this.#o.store.snapshots, agentModel, '', this.#state, last)
      .then((what) => void (what.startsWith('saved') || this.#o.log(`agent state ${what}`)))
      .catch((error: Error) => this.#o.log(`could not save the agent state's snapshot: ${error.message}`))
      .finally(() => (this.#saving = undefined));
    return this.#saving;
  }
}
