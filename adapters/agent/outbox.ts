// The node agent's outbox: everything the agent observes or answers goes to the log through here,
// one batch per job stream per tick, in order. A store that is away must not cost observations:
// a failed batch goes back to the front of its stream's queue and is tried again, with backoff.
import type { EventStore, ProposedEvent } from '../../domain/event-store.js';
import { InvalidEventError } from '../../domain/events/decode.js';
import { jobStream } from '../../domain/identity.js';

export interface OutboxOptions {
  readonly store: EventStore;
  /** Called on every failed append, before the retry: nothing may stay frozen while the log is away. */
  readonly appendFailed: (why: string) => void;
  readonly log?: (line: string) => void;
}

const RETRY_MS = 1000;
const MAX_RETRY_MS = 30_000;

export class Outbox {
  readonly #o: OutboxOptions;
  readonly #queued = new Map<string, ProposedEvent[]>();
  #flushing: Promise<void> = Promise.resolve();
  #flushScheduled = false;
  /** The next retry delay: doubles while appends fail (up to MAX_RETRY_MS), reset by a success. */
  #retryMs = RETRY_MS / 2;

  constructor(options: OutboxOptions) {
    this.#o = options;
  }

  /** Queues an event for the job's stream; appended on the next tick, after those queued before it. */
  emit(job: string, event: ProposedEvent): void {
    const stream = jobStream(job);
    const pending = this.#queued.get(stream);
    if (pending) pending.push(event);
    else this.#queued.set(stream, [event]);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => void this.flush());
    }
  }

  /** Appends what is queued; resolves when this flush (and every one before it) is done. */
  flush(): Promise<void> {
    this.#flushScheduled = false;
    // The queue is taken when this flush's turn comes, after the previous one: a batch that
    // previous flush put back stays ahead of newer events of its stream.
    this.#flushing = this.#flushing.then(() => {
      const batches = [...this.#queued];
      this.#queued.clear();
      return Promise.all(batches.map(([stream, events]) => this.#append(stream, events))).then(() => undefined);
    });
    return this.#flushing;
  }

  /**
   * Only a batch the catalogue rejects — a bug, it would never succeed — is dropped, loudly;
   * any other failure (a PostgreSQL restart, a locked file, a full disk) is retried.
   */
  async #append(stream: string, events: ProposedEvent[]): Promise<void> {
    try {
      await this.#o.store.append(stream, events);
    } catch (error) {
      if (error instanceof InvalidEventError) {
        this.#o.log?.(`dropped ${events.length} events for ${stream}: ${error.message}`);
        return;
      }
      this.#o.appendFailed((error as Error).message);
      const delay = (this.#retryMs = Math.min(this.#retryMs * 2, MAX_RETRY_MS));
      this.#o.log?.(`could not append ${events.length} events to ${stream} (${(error as Error).message}); retrying in ${delay} ms`);
      this.#queued.set(stream, [...events, ...(this.#queued.get(stream) ?? [])]);
      setTimeout(() => void this.flush(), delay).unref();
      return;
    }
    this.#retryMs = RETRY_MS / 2;
  }
}
