// Following a request through the job's stream until its outcome: `ckpt checkpoint --wait`,
// `ckpt restart --wait`. The summary is refolded from the request's own events on each one.
import type { EventStore, RecordedEvent } from '../../domain/event-store.js';
import { jobStream } from '../../domain/identity.js';

export interface Followed<S> {
  readonly summary: S;
  readonly timedOut: boolean;
}

export const followRequest = <S>(o: {
  store: EventStore;
  job: string;
  /** The request event, as recorded. */
  request: RecordedEvent;
  /** Which events can change the summary (others are skipped). */
  relevant: (e: RecordedEvent) => boolean;
  summarize: (events: readonly RecordedEvent[]) => S;
  done: (s: S) => boolean;
  limitMs: number;
  /** Called when the summary's progress line changes. */
  progress: (s: S) => void;
  line: (s: S) => string;
}): Promise<Followed<S>> =>
  new Promise((resolve, reject) => {
    const events: RecordedEvent[] = [o.request];
    let last = o.summarize(events);
    let shown = o.line(last);
    const timer = setTimeout(() => finish(true), o.limitMs);
    const subscription = o.store.subscribeStream(jobStream(o.job), { from: o.request.revision + 1 }).subscribe({
      next: (e) => {
        if (!o.relevant(e)) return;
        events.push(e);
        last = o.summarize(events);
        const line = o.line(last);
        if (line !== shown) o.progress(last);
        shown = line;
        if (o.done(last)) finish(false);
      },
      error: (error: Error) => {
        clearTimeout(timer);
        reject(error);
      },
    });
    function finish(timedOut: boolean) {
      clearTimeout(timer);
      subscription.unsubscribe();
      resolve({ summary: last, timedOut });
    }
  });

/** Progress on stderr: one rewritten line on a terminal, a line per change otherwise (not with --json). */
export const progressWriter = (json: boolean) => {
  const tty = process.stderr.isTTY;
  return {
    show: (line: string) => {
      if (tty) process.stderr.write(`\r\x1b[K${line}`);
      else if (!json) process.stderr.write(`${line}\n`);
    },
    clear: () => tty && process.stderr.write('\r\x1b[K'),
  };
};
