// Catch up, then stay live: one loop shared by every store adapter. It reads pages from a cursor
// until a short page, then waits for a wake-up (a local append, a NOTIFY, a poll that saw a
// change) and reads again. The cursor only moves past delivered events, so nothing is skipped
// or delivered twice, whatever the wake-ups do.
import type { RecordedEvent, SubscribeOptions } from '../../domain/event-store.js';
import { Observable } from '../../domain/rx.js';
import { PAGE_SIZE } from './batch.js';

export interface LiveReadOptions<E> {
  /** Up to `pageSize` events at or after the cursor, in order. */
  readonly readPage: (cursor: number, pageSize: number) => Promise<readonly E[]> | readonly E[];
  /** The cursor just after an event (its position or revision + 1). */
  readonly after: (event: E) => number;
  readonly from: number;
  /** Emits whenever new events may have been committed. */
  readonly wakeups: Observable<unknown>;
  readonly pageSize: number;
  readonly onCaughtUp?: () => void;
}

export const catchUpThenLive = <E>(options: LiveReadOptions<E>): Observable<E> =>
  new Observable<E>((subscriber) => {
    const { readPage, after, wakeups, pageSize, onCaughtUp } = options;
    let cursor = options.from;
    let reading = false;
    let wokenWhileReading = false;
    let caughtUp = false;

    const pump = async (): Promise<void> => {
      if (reading) {
        wokenWhileReading = true;
        return;
      }
      reading = true;
      try {
        do {
          wokenWhileReading = false;
          for (;;) {
            const page = await readPage(cursor, pageSize);
            for (const event of page) {
              if (subscriber.closed) return;
              subscriber.next(event);
              cursor = after(event);
            }
            if (page.length < pageSize) break;
          }
          if (!caughtUp) {
            caughtUp = true;
            onCaughtUp?.();
          }
        } while (wokenWhileReading && !subscriber.closed);
      } catch (error) {
        subscriber.error(error);
      } finally {
        reading = false;
      }
    };

    // The store closing completes the wake-ups, and with them every subscription.
    const subscription = wakeups.subscribe({ next: () => void pump(), error: (e) => subscriber.error(e), complete: () => subscriber.complete() });
    void pump();
    return () => subscription.unsubscribe();
  });

type Page = (from: number, limit: number) => Promise<readonly RecordedEvent[]> | readonly RecordedEvent[];

/** subscribeAll for any store: pages by global position. */
export const subscribeAllWith = (readPage: Page, wakeups: Observable<unknown>, options: SubscribeOptions = {}): Observable<RecordedEvent> =>
  catchUpThenLive({ readPage, after: (e) => e.position + 1, from: options.from ?? 1, wakeups, pageSize: PAGE_SIZE, onCaughtUp: options.onCaughtUp });

/** subscribeStream for any store: pages by stream revision. */
export const subscribeStreamWith = (readPage: Page, wakeups: Observable<unknown>, options: SubscribeOptions = {}): Observable<RecordedEvent> =>
  catchUpThenLive({ readPage, after: (e) => e.revision + 1, from: options.from ?? 0, wakeups, pageSize: PAGE_SIZE, onCaughtUp: options.onCaughtUp });
