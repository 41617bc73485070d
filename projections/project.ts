// A projection is a pure fold of events into state: `scan` over an `evolve` function, so its
// result equals `events.reduce(evolve, initial)`. No clocks, no randomness, no I/O here.
import type { EventStore, Position, RecordedEvent } from '../domain/event-store.js';
import { type OperatorFunction, scan } from '../domain/rx.js';

export type Evolve<S, E = RecordedEvent> = (state: S, event: E) => S;

/** The projection as an operator: every event in, the state after it out. */
export const project = <S, E = RecordedEvent>(evolve: Evolve<S, E>, initial: S): OperatorFunction<E, S> => scan(evolve, initial);

export interface Replayed<S> {
  readonly state: S;
  /** Position of the last event folded (0 if none). */
  readonly position: Position;
  readonly events: number;
}

/**
 * Folds the log from a position up to what was committed when the catch-up ended, through the
 * same subscription a live projection uses (pages read and folded synchronously).
 */
export const replay = <S>(store: EventStore, evolve: Evolve<S>, initial: S, from: Position = 1): Promise<Replayed<S>> =>
  new Promise((resolve, reject) => {
    let state = initial;
    let position = 0;
    let events = 0;
    let done = false;
    const subscription = store
      .subscribeAll({
        from,
        onCaughtUp: () => {
          done = true;
          subscription?.unsubscribe();
          resolve({ state, position, events });
        },
      })
      .subscribe({
        next: (event) => {
          state = evolve(state, event);
          position = event.position;
          events++;
        },
        error: reject,
      });
    if (done) subscription.unsubscribe();
  });

/** Folds one stream, page by page, from its start: the state and how many events it had
 *  (progress: after each page, the events folded so far and the position reached). */
export const foldStream = async <S>(
  store: EventStore,
  stream: string,
  evolve: Evolve<S>,
  initial: S,
  progress?: (folded: number, position: Position) => void,
): Promise<{ state: S; events: number }> => {
  let state = initial;
  let events = 0;
  for (let from = 0; ; ) {
    const page = await store.readStream(stream, { from, limit: 1000 });
    for (const e of page) state = evolve(state, e);
    events += page.length;
    if (page.length > 0) progress?.(events, page[page.length - 1]!.position);
    if (page.length < 1000) return { state, events };
    from = page[page.length - 1]!.revision + 1;
  }
};

/** Every event of one stream, in order (empty for a stream that does not exist). */
export const readWholeStream = async (store: EventStore, stream: string): Promise<RecordedEvent[]> =>
  (await foldStream<RecordedEvent[]>(store, stream, (events, e) => (events.push(e), events), [])).state;

/** A fold's requests in order, found by request id (checkpoints, restarts). */
export interface RequestList<T> {
  readonly list: readonly T[];
  readonly byRequest: Readonly<Record<string, number>>;
}

/** The state with one entry changed (a copy); the same state when there is no such entry. */
export const withEntry = <S extends RequestList<T>, T>(s: S, index: number | undefined, change: (entry: T) => T): S => {
  if (index === undefined) return s;
  const list = s.list.slice();
  list[index] = change(list[index]!);
  return { ...s, list };
};

/** The state with a request's entry added (or replaced, for a request id seen before). */
export const withRequest = <S extends RequestList<T>, T>(s: S, request: string, entry: T): S => {
  const known = s.byRequest[request];
  if (known !== undefined) return withEntry(s, known, () => entry);
  return { ...s, list: [...s.list, entry], byRequest: { ...s.byRequest, [request]: s.list.length } };
};
