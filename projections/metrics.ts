// The log's operational figures, for Prometheus (adapters/agent/metrics-endpoint.ts serves them):
// how many checkpoints and restores ended and how, histograms of their durations, frozen windows
// and sizes, and the observation gaps per node. A pure fold of the whole log, so the totals are the
// log's, not a process's: an agent that restarts folds them again (from the `metrics` snapshot).
// The figures of each operation are the ones `ckpt checkpoints` and `ckpt audit` show: each job's
// events go through the checkpoints and restarts folds, and an operation is counted when its
// summary there ends. A job is kept only while one of its operations is under way, so the state
// stays small however long the history.
import type { RecordedEvent } from '../domain/event-store.js';
import { jobOfStream } from '../domain/identity.js';
import type { JobMembership } from '../domain/membership.js';
import { valuesOf } from '../domain/persistent-map.js';
import { type CheckpointSummary, type CheckpointsState, checkpointSummaries, evolveCheckpoints, initialCheckpoints } from './checkpoints.js';
import type { ReadModel } from './read-model.js';
import { evolveRestarts, initialRestarts, type RestartsState } from './restarts.js';

/** A histogram as Prometheus keeps it: the count of each bucket (not cumulative; the last is +Inf), sum and count. */
export interface Histogram {
  readonly buckets: readonly number[];
  readonly sum: number;
  readonly count: number;
}

/** Upper bounds of the buckets (the unit in each name), fixed: the snapshot's counts are per bucket. */
export const BOUNDS = {
  checkpointSeconds: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
  frozenSeconds: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  sizeBytes: [2 ** 16, 2 ** 18, 2 ** 20, 2 ** 22, 2 ** 24, 2 ** 26, 2 ** 28, 2 ** 30, 2 ** 32, 2 ** 34],
  restoreSeconds: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
} as const;

export interface LogMetrics {
  readonly checkpoints: { readonly committed: number; readonly aborted: number };
  readonly restores: { readonly restored: number; readonly failed: number };
  /** Request to completion of committed checkpoints (thawed or stopped). */
  readonly checkpointSeconds: Histogram;
  /** The longest frozen window of each checkpoint that froze (any outcome: the job waited either way). */
  readonly frozenSeconds: Histogram;
  /** Image bytes of committed checkpoints. */
  readonly sizeBytes: Histogram;
  /** Request to commit of restored restarts. */
  readonly restoreSeconds: Histogram;
  /** ObservationGap events per node (bounded by the nodes of the store). */
  readonly gaps: Readonly<Record<string, number>>;
  /** The jobs with an operation under way, in the folds the figures come from. */
  readonly underWay: Readonly<Record<string, { readonly checkpoints: CheckpointsState; readonly restarts: RestartsState }>>;
}

const emptyHistogram = (bounds: readonly number[]): Histogram => ({ buckets: bounds.map(() => 0).concat(0), sum: 0, count: 0 });

export const initialMetrics: LogMetrics = {
  checkpoints: { committed: 0, aborted: 0 },
  restores: { restored: 0, failed: 0 },
  checkpointSeconds: emptyHistogram(BOUNDS.checkpointSeconds),
  frozenSeconds: emptyHistogram(BOUNDS.frozenSeconds),
  sizeBytes: emptyHistogram(BOUNDS.sizeBytes),
  restoreSeconds: emptyHistogram(BOUNDS.restoreSeconds),
  gaps: {},
  underWay: {},
};

/** The histogram with one more value (in the first bucket whose bound holds it, else +Inf). */
export const observe = (h: Histogram, bounds: readonly number[], value: number): Histogram => {
  const at = bounds.findIndex((b) => value <= b);
  const buckets = h.buckets.slice();
  buckets[at === -1 ? bounds.length : at]! += 1;
  return { buckets, sum: h.sum + value, count: h.count + 1 };
};

/** The entries an event changed in a fold's list, before and after it. */
const changed = <T>(before: readonly T[], after: readonly T[]): Array<readonly [T | undefined, T]> => after.flatMap((entry, i) => (entry === before[i] ? [] : [[before[i], entry] as const]));

/** One entry of the checkpoints fold with its derived figures (checkpointSummaries of just it). */
const summaryOf = (s: CheckpointsState, draft: CheckpointsState['list'][number]): CheckpointSummary => checkpointSummaries({ ...s, list: [draft] })[0]!;

const countCheckpoints = (m: LogMetrics, before: CheckpointsState, after: CheckpointsState): LogMetrics => {
  if (after === before) return m;
  for (const [draft, next] of changed(before.list, after.list)) {
    const was = draft && summaryOf(before, draft);
    const c = summaryOf(after, next);
    // Counted when committed (the version exists, whatever its thaw does) or aborted; a refused request was no operation.
    if ((c.outcome === 'committed' || c.outcome === 'aborted') && was?.outcome !== c.outcome) {
      m = { ...m, checkpoints: { ...m.checkpoints, [c.outcome]: m.checkpoints[c.outcome] + 1 } };
      if (c.outcome === 'committed') m = { ...m, sizeBytes: observe(m.sizeBytes, BOUNDS.sizeBytes, c.bytes) };
    }
    // Its durations once it ended: every unit thawed (or stopped), or the abort done.
    if (c.endedAt === undefined || was?.endedAt !== undefined) continue;
    if (c.frozenMs !== undefined) m = { ...m, frozenSeconds: observe(m.frozenSeconds, BOUNDS.frozenSeconds, c.frozenMs / 1000) };
    if (c.outcome === 'committed' && c.durationMs !== undefined) m = { ...m, checkpointSeconds: observe(m.checkpointSeconds, BOUNDS.checkpointSeconds, c.durationMs / 1000) };
  }
  return m;
};

const countRestarts = (m: LogMetrics, before: RestartsState, after: RestartsState): LogMetrics => {
  if (after === before) return m;
  for (const [was, r] of changed(before.list, after.list)) {
    if ((r.outcome !== 'restored' && r.outcome !== 'failed') || was?.outcome === r.outcome) continue;
    m = { ...m, restores: { ...m.restores, [r.outcome]: m.restores[r.outcome] + 1 } };
    if (r.outcome === 'restored' && r.durationMs !== undefined) m = { ...m, restoreSeconds: observe(m.restoreSeconds, BOUNDS.restoreSeconds, r.durationMs / 1000) };
  }
  return m;
};

const allEnded = (list: ReadonlyArray<{ readonly endedAt?: string }>): boolean => list.every((entry) => entry.endedAt !== undefined);

/** An own entry of a record read back from JSON (a job or node named "constructor" is not Object's). */
const own = <V>(record: Readonly<Record<string, V>>, key: string): V | undefined => (Object.hasOwn(record, key) ? record[key] : undefined);

/** One event of the log into its figures (pure: time only from the events' recordedAt). */
export const evolveMetrics = (m: LogMetrics, e: RecordedEvent): LogMetrics => {
  if (e.type === 'ObservationGap') return { ...m, gaps: { ...m.gaps, [e.data.node]: (own(m.gaps, e.data.node) ?? 0) + 1 } };
  if (!e.stream.startsWith('job-')) return m;
  const job = e.stream.slice('job-'.length);
  let was = own(m.underWay, job);
  if (was === undefined) {
    // Nothing of the job under way: only a request starts something (both folds ignore the rest
    // until one), so the bulk of a log, its process events, costs a lookup.
    if ((e.type !== 'CheckpointRequested' && e.type !== 'RestartRequested') || jobOfStream(e.stream) === undefined) return m;
    was = { checkpoints: initialCheckpoints, restarts: initialRestarts };
  }
  const now = { checkpoints: evolveCheckpoints(was.checkpoints, e), restarts: evolveRestarts(was.restarts, e) };
  if (now.checkpoints === was.checkpoints && now.restarts === was.restarts) return m;
  const counted = countRestarts(countCheckpoints(m, was.checkpoints, now.checkpoints), was.restarts, now.restarts);
  // Nothing under way: the job leaves the state (its next request starts from empty folds).
  const { [job]: _, ...others } = m.underWay;
  const underWay = allEnded(now.checkpoints.list) && allEnded(now.restarts.list) ? others : { ...m.underWay, [job]: now };
  return { ...counted, underWay };
};

export const foldMetrics = (events: Iterable<RecordedEvent>): LogMetrics => {
  let m = initialMetrics;
  for (const e of events) m = evolveMetrics(m, e);
  return m;
};

/**
 * The running members of each job on one node: what its agent tracks now. Only jobs with a running
 * member there appear, so a label per job stays bounded by what runs, not by the history.
 */
export const trackedProcesses = (memberships: Iterable<JobMembership>, node: string): Record<string, number> => {
  const tracked: Record<string, number> = {};
  for (const m of memberships) {
    let running = 0;
    for (const member of valuesOf(m.members)) if (member.node === node && member.state === 'running') running++;
    if (running > 0) tracked[m.job] = running;
  }
  return tracked;
};

/** The figures as a snapshot of the whole log (key ''): JSON as they are. */
export const metricsModel: ReadModel<LogMetrics> = {
  name: 'metrics',
  version: 2,
  initial: () => initialMetrics,
  evolve: evolveMetrics,
  encode: (m) => m,
  decode: (encoded) => {
    const m = encoded as LogMetrics;
    const histograms = [m?.checkpointSeconds, m?.frozenSeconds, m?.sizeBytes, m?.restoreSeconds];
    if (typeof m?.checkpoints !== 'object' || typeof m.restores !== 'object' || typeof m.gaps !== 'object' || typeof m.underWay !== 'object' || histograms.some((h) => !Array.isArray(h?.buckets))) {
      throw new Error('metrics: expected checkpoints, restores, gaps, underWay and four histograms');
    }
    return m;
  },
};
