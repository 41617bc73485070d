// The only place where the wall clock meets deadlines: folds the log's pending deadlines, and
// when the clock passes one, appends DeadlineReached to its stream. Several timers may run (one
// per node agent): each checks the stream and appends with the revision it checked, so a
// deadline is reached exactly once.
import type { Subscription } from 'rxjs';
import { type Deadlines, deadlineKey, evolveDeadlines, noDeadlines, type PendingDeadline, pendingDeadlines } from '../../domain/deadlines.js';
import { type EventStore, type RecordedEvent, WrongExpectedRevisionError } from '../../domain/event-store.js';
import { getIn } from '../../domain/persistent-map.js';

export interface DeadlineTimerOptions {
  readonly store: EventStore;
  readonly now?: () => number;
  readonly log?: (line: string) => void;
}

/** setTimeout's limit; later deadlines are re-armed when it fires. */
const MAX_DELAY_MS = 2 ** 31 - 1;

export class DeadlineTimer {
  readonly #o: DeadlineTimerOptions;
  #deadlines: Deadlines = noDeadlines;
  readonly #armed = new Map<string, NodeJS.Timeout>();
  #subscription: Subscription | undefined;

  constructor(options: DeadlineTimerOptions) {
    this.#o = options;
  }

  #live = false;

  /** Resolves once the log is caught up and every pending deadline is armed (past ones fire now). */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#subscription = this.#o.store
        .subscribeAll({
          onCaughtUp: () => {
            this.goLive();
            resolve();
          },
        })
        .subscribe({
          next: (e) => this.observe(e),
          error: (error: Error) => (this.#live ? this.#o.log?.(`deadline timer lost the event store: ${error.message}`) : reject(error)),
        });
    });
  }

  /** For a caller that folded the log up to here already (the node agent, from its snapshot). */
  resume(deadlines: Deadlines): void {
    this.#deadlines = deadlines;
  }

  /** For a caller that already follows the log (the node agent): every event, in order. */
  observe(e: RecordedEvent): void {
    if (e.type !== 'DeadlineScheduled' && e.type !== 'DeadlineReached' && e.type !== 'DeadlineCancelled') return;
    this.#deadlines = evolveDeadlines(this.#deadlines, e);
    const key = deadlineKey({ stream: e.stream, deadline: e.data.deadline });
    if (e.type === 'DeadlineScheduled') {
      if (this.#live) this.#arm(getIn(this.#deadlines, key)!);
    } else {
      clearTimeout(this.#armed.get(key));
      this.#armed.delete(key);
    }
  }

  /** Once caught up: arms every pending deadline (past ones fire now), and each new one as it comes. */
  goLive(): void {
    this.#live = true;
    for (const d of pendingDeadlines(this.#deadlines)) this.#arm(d);
  }

  stop(): void {
    this.#subscription?.unsubscribe();
    for (const t of this.#armed.values()) clearTimeout(t);
    this.#armed.clear();
  }

  #arm(d: PendingDeadline) {
    const key = deadlineKey(d);
    clearTimeout(this.#armed.get(key));
    const delay = Date.parse(d.at) - (this.#o.now ?? Date.now)();
    const fire = () => void this.#reach(d).catch((error: Error) => this.#o.log?.(`could not record deadline ${d.deadline}: ${error.message}`));
    this.#armed.set(key, delay > MAX_DELAY_MS ? setTimeout(() => this.#arm(d), MAX_DELAY_MS) : setTimeout(fire, Math.max(0, delay)));
  }

  /** Check-and-append: only if the stream has no DeadlineReached/Cancelled for it since it was scheduled. */
  async #reach(d: PendingDeadline): Promise<void> {
    for (;;) {
      const revision = await this.#o.store.streamRevision(d.stream);
      const since = await this.#o.store.readStream(d.stream, { from: d.revision + 1, limit: 100_000 });
      if (since.some((e) => (e.type === 'DeadlineReached' || e.type === 'DeadlineCancelled') && e.data.deadline === d.deadline)) return;
      try {
        await this.#o.store.append(d.stream, [{ type: 'DeadlineReached', data: { deadline: d.deadline } }], { expectedRevision: revision ?? 'no_stream' });
        return;
      } catch (error) {
        if (!(error instanceof WrongExpectedRevisionError)) throw error;
      }
    }
  }
}
