// Waiting on the log for what other nodes answer: a pure fold of one stream from a revision on,
// until it says it is settled or the wait's time is up. The log is the only channel between hosts,
// so an answer that does not come in time is reported as such (the state folded so far), not awaited forever.
import type { EventStore, RecordedEvent } from '../../domain/event-store.js';

export interface AwaitedFold<S> {
  readonly state: S;
  /** The time was up before the fold settled. */
  readonly timedOut: boolean;
}

export const awaitFold = <S>(
  store: EventStore,
  stream: string,
  from: number,
  fold: { readonly initial: S; readonly evolve: (s: S, e: RecordedEvent) => S; readonly settled: (s: S) => boolean },
  timeoutMs: number,
): Promise<AwaitedFold<S>> =>
  new Promise((resolve, reject) => {
    let state = fold.initial;
    let done = false;
    const finish = (timedOut: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      subscription.unsubscribe();
      resolve({ state, timedOut });
    };
    const timer = setTimeout(() => finish(true), timeoutMs);
    const subscription = store.subscribeStream(stream, { from }).subscribe({
      next: (e) => {
        state = fold.evolve(state, e);
        if (fold.settled(state)) queueMicrotask(() => finish(false));
      },
      error: (error: Error) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        reject(error);
      },
    });
    if (done) subscription.unsubscribe();
  });
