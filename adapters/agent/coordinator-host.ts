// The node agent's coordinator host: follows the log, folds each job's coordinator state (its
// membership included) and the probes of every node's checkpointer, and feeds them to the job's
// work (adapters/agent/job-work.ts: deciders and this node's commands) and to the deadline timer.
// The rest of the agent reads jobs through it (JobsView), and hears of a job's change once live.
import type { Subscription } from 'rxjs';
import type { EventStore, ProposedEvent, RecordedEvent } from '../../domain/event-store.js';
import { NAME_PATTERN } from '../../domain/codecs.js';
import { jobOfStream, type NodeId } from '../../domain/identity.js';
import { evolveCheckpoint, initialCheckpointState, type NodeCheckpointer } from '../../domain/checkpoint-coordinator.js';
import { evolveJobCoordinator, initialJobCoordinator, type JobCoordinatorState } from '../../domain/job-coordinator.js';
import type { JobMembership, Unit } from '../../domain/membership.js';
import type { Checkpointer } from '../../domain/checkpointer.js';
import { DeadlineTimer } from '../timer/deadline-timer.js';
import { JobWork, type CheckpointWorkOptions } from './job-work.js';

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
  /** During the first catch-up, every PROGRESS_EVERY events (and once at its end). */
  readonly progress?: (p: CatchUpProgress) => void;
  readonly log: (line: string) => void;
}

const RETRY_MS = 1000;
const PROGRESS_EVERY = 10_000;

export class CoordinatorHost implements JobsView {
  readonly #o: CoordinatorHostOptions;
  /** Each job's coordinator state (its membership included), folded from the log. */
  readonly #jobs = new Map<string, JobCoordinatorState>();
  /** The latest probe of every node's checkpointer (node streams), for jobs seen later. */
  #nodes: Record<string, NodeCheckpointer> = {};
  readonly #badStreams = new Set<string>();
  readonly work: JobWork;
  readonly #deadlines: DeadlineTimer;
  #subscription: Subscription | undefined;
  #position = 0;
  #caughtUp = false;
  #stopped = false;
  #folded = 0;
  #head = 0;

  constructor(options: CoordinatorHostOptions) {
    this.#o = options;
    const { store, node, checkpointer, imagesRoot, workRoot, emit, units, log } = options;
    this.work = new JobWork({ store, node, checkpointer, imagesRoot, workRoot, emit, log, ...units });
    // Deadlines are events: every agent runs a timer, fed from its own reading of the log; a
    // deadline is recorded reached once (check-and-append).
    this.#deadlines = new DeadlineTimer({ store, log });
  }

  /** Folds the whole log; resolves once caught up (nothing is acted on before goLive). */
  async catchUp(): Promise<void> {
    this.#head = await this.#o.store.headPosition();
    this.#o.progress?.({ folded: 0, position: 0, head: this.#head });
    await new Promise<void>((resolve, reject) => this.#follow(1, resolve, reject));
    this.#o.progress?.({ folded: this.#folded, position: this.#position, head: Math.max(this.#head, this.#position) });
  }

  /** From now on decisions are made, commands executed and deadlines armed. */
  goLive(): void {
    this.#caughtUp = true;
    this.work.goLive();
    this.#deadlines.goLive();
  }

  stop(): void {
    this.#stopped = true;
    this.#subscription?.unsubscribe();
    this.#deadlines.stop();
  }

  jobs(): Iterable<string> {
    return this.#jobs.keys();
  }

  membership(job: string): JobMembership | undefined {
    return this.#jobs.get(job)?.checkpoint.job;
  }

  myUnits(job: string): Unit[] {
    const state = this.membership(job);
    return state ? Object.values(state.units).filter((u) => u.node === this.#o.node) : [];
  }

  /**
   * Follows the log from a position. If the store goes away later (a PostgreSQL restart), the
   * agent keeps tracking — observations wait in the outbox — and follows again from the last
   * position it folded, so no event is applied twice.
   */
  #follow(from: number, caughtUp?: () => void, failed?: (error: Error) => void) {
    this.#subscription = this.#o.store.subscribeAll({ from, onCaughtUp: caughtUp }).subscribe({
      next: (e) => this.#onLogEvent(e),
      error: (error: Error) => {
        if (failed && !this.#caughtUp) return failed(error);
        this.#o.log(`lost the event store (${error.message}); following it again in ${RETRY_MS} ms`);
        setTimeout(() => this.#stopped || this.#follow(this.#position + 1), RETRY_MS);
      },
    });
  }

  #onLogEvent(e: RecordedEvent) {
    this.#position = e.position;
    if (!this.#caughtUp && ++this.#folded % PROGRESS_EVERY === 0) this.#o.progress?.({ folded: this.#folded, position: e.position, head: Math.max(this.#head, e.position) });
    this.#deadlines.observe(e);
    if (e.type === 'CheckpointerProbed') {
      for (const [job, state] of this.#jobs) {
        this.#jobs.set(job, evolveJobCoordinator(state, e));
        this.work.updateState(job, this.#jobs.get(job)!);
      }
      this.#nodes = evolveCheckpoint({ ...initialCheckpointState(''), nodes: this.#nodes }, e).nodes;
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
    const fresh = initialJobCoordinator(job);
    const state = evolveJobCoordinator(this.#jobs.get(job) ?? { ...fresh, checkpoint: { ...fresh.checkpoint, nodes: this.#nodes } }, e);
    this.#jobs.set(job, state);
    this.work.fold(job, state, e);
    if (this.#caughtUp) this.#o.changed(job, e);
  }
}
