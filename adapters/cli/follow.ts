// Following a request through the job's stream until its outcome: `ckpt checkpoint --wait`,
// `ckpt restart --wait`. The summary is refolded from the request's own events on each one.
import type { EventStore, ProposedEvent, RecordedEvent } from '../../domain/event-store.js';
import { jobStream } from '../../domain/identity.js';

/** Default deadline of a checkpoint or restart (--timeout). */
export const DEFAULT_TIMEOUT_MS = 120_000;
/**
 * After the deadline, how long ckpt still waits for the outcome: a live agent records the abort
 * within a few hundred ms; past this ckpt returns with the phase reached (no agent may be alive).
 */
const DEADLINE_GRACE_MS = 2_000;
/** Without --wait: how long the coordinator may take to plan or refuse. */
export const PLAN_WAIT_MS = 15_000;

export interface Followed<S> {
  readonly summary: S;
  readonly timedOut: boolean;
}

const followRequest = <S>(o: {
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

/**
 * Records a request (its correlationId is its request id) and follows it: until it is planned
 * (or refused) — or, with `wait`, until its outcome — showing progress on stderr.
 */
export const submitRequest = async <S>(o: {
  store: EventStore;
  job: string;
  event: ProposedEvent & { data: { request: string; timeoutMs: number } };
  relevant: (e: RecordedEvent) => boolean;
  summarize: (events: readonly RecordedEvent[]) => S;
  planned: (s: S) => boolean;
  final: (s: S) => boolean;
  wait: boolean;
  json: boolean;
  line: (s: S) => string;
}): Promise<Followed<S>> => {
  const { request, timeoutMs } = o.event.data;
  const appended = await o.store.append(jobStream(o.job), [{ ...o.event, metadata: { correlationId: request } }]);
  const [recorded] = await o.store.readStream(jobStream(o.job), { from: appended.revision, limit: 1 });
  const progress = progressWriter(o.json);
  const followed = await followRequest({
    store: o.store,
    job: o.job,
    request: recorded!,
    relevant: o.relevant,
    summarize: o.summarize,
    done: o.wait ? o.final : (s) => o.planned(s) || o.final(s),
    // The deadline counts from the request as recorded (what the coordinator schedules it from).
    limitMs: o.wait ? Math.max(0, Date.parse(recorded!.metadata.recordedAt) + timeoutMs - Date.now()) + DEADLINE_GRACE_MS : PLAN_WAIT_MS,
    progress: (s) => progress.show(o.line(s)),
    line: o.line,
  });
  progress.clear();
  return followed;
};
