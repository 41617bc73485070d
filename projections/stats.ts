// Analytics of checkpoints and restarts (`ckpt stats`): one row per operation with what its events
// carry (durations by step, frozen time, bytes, CRIU's pages, processes, units, nodes, outcome,
// failure class) and aggregates per job and per node. Pure: derived from the checkpoints and
// restarts read models, times by the log's clock.
import type { CheckpointSummary } from './checkpoints.js';
import type { RestartSummary } from './restarts.js';
import { frozenWindow, stepMs, stepSpans, type UnitStep } from './steps.js';

export type StatsPhase = UnitStep | 'commit';

export interface StatsRow {
  readonly job: string;
  readonly kind: 'checkpoint' | 'restart';
  /** The checkpoint's version, or the restart's number (null: refused before it got one). */
  readonly number: number | null;
  /** The version written (checkpoint) or restored (restart). */
  readonly version: number | null;
  readonly requestedAt: string;
  readonly outcome: string;
  readonly failureClass: string | null;
  /** Request to completion, by the log. */
  readonly durationMs: number | null;
  /** Each step, from the first unit's request to the last unit's answer. */
  readonly phases: Readonly<Partial<Record<StatsPhase, number>>>;
  /** The longest a unit stayed frozen: its agent's measure when it thawed, else by the log. */
  readonly frozenMs: number | null;
  /** The committed images (checkpoint; for an abort, what units wrote before it), the verified images (restart). */
  readonly bytes: number;
  /** CRIU's pages written (dump) or restored (restore), when it reported them. */
  readonly pages: number | null;
  readonly processes: number;
  readonly units: number;
  readonly nodes: readonly string[];
}

/** One unit's part of a row, for the per-node aggregates. */
interface UnitPart {
  readonly node: string;
  readonly frozenMs: number | null;
  readonly bytes: number;
}

interface Figures {
  readonly row: StatsRow;
  readonly units: readonly UnitPart[];
}

const sum = (ns: readonly number[]) => ns.reduce((a, b) => a + b, 0);
const maxOf = (ns: readonly number[]): number | null => (ns.length === 0 ? null : ns.reduce((a, b) => Math.max(a, b)));
const distinct = (ns: readonly string[]) => [...new Set(ns)].sort();

const checkpointFigures = (job: string, c: CheckpointSummary): Figures => {
  const units = c.units.map((u) => ({ node: u.node, frozenMs: u.frozenMs ?? frozenWindow(u.steps)?.ms ?? null, bytes: u.bytes ?? 0 }));
  const stats = c.units.flatMap((u) => (u.stats ? [u.stats.pagesWritten] : []));
  const commit = c.commit && stepMs(c.commit);
  return {
    units,
    row: {
      job,
      kind: 'checkpoint',
      number: c.version,
      version: c.version,
      requestedAt: c.requestedAt,
      outcome: c.outcome,
      failureClass: c.failure?.class ?? (c.outcome === 'aborted' ? (c.units.find((u) => u.failure)?.failure?.class ?? null) : null),
      durationMs: c.durationMs ?? null,
      phases: { ...stepSpans(c.units), ...(commit !== undefined && { commit }) },
      frozenMs: maxOf(units.flatMap((u) => (u.frozenMs === null ? [] : [u.frozenMs]))),
      bytes: c.outcome === 'committed' ? c.bytes : sum(units.map((u) => u.bytes)),
      pages: stats.length > 0 ? sum(stats) : null,
      processes: sum(c.units.map((u) => u.captured?.length ?? u.frozen ?? u.planned)),
      units: c.units.length,
      nodes: distinct(c.units.map((u) => u.node)),
    },
  };
};

const restartFigures = (job: string, r: RestartSummary): Figures => {
  const stats = r.units.flatMap((u) => (u.stats ? [u.stats.pagesRestored] : []));
  return {
    units: r.units.map((u) => ({ node: u.node, frozenMs: null, bytes: u.bytes ?? 0 })),
    row: {
      job,
      kind: 'restart',
      number: r.restart,
      version: r.version,
      requestedAt: r.requestedAt,
      outcome: r.outcome,
      failureClass: r.failure?.class ?? (r.outcome === 'failed' ? (r.units.find((u) => u.failure)?.failure?.class ?? null) : null),
      durationMs: r.durationMs ?? null,
      phases: stepSpans(r.units),
      frozenMs: null,
      bytes: sum(r.units.map((u) => u.bytes ?? 0)),
      pages: stats.length > 0 ? sum(stats) : null,
      processes: r.processes.length,
      units: r.units.length,
      nodes: distinct(r.units.map((u) => u.node)),
    },
  };
};

/** The p-th percentile (nearest rank) of some values; null for none. */
export const percentile = (values: readonly number[], p: number): number | null => {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
};

/** Successes of the attempts that finished (refused and unfinished ones are not attempts yet). */
const rate = (succeeded: number, failed: number): number | null => (succeeded + failed === 0 ? null : succeeded / (succeeded + failed));

export interface Aggregate {
  readonly checkpoints: number;
  readonly committed: number;
  readonly aborted: number;
  /** committed / (committed + aborted). */
  readonly checkpointSuccessRate: number | null;
  readonly restarts: number;
  readonly restored: number;
  readonly failedRestarts: number;
  /** restored / (restored + failed). */
  readonly restartSuccessRate: number | null;
  readonly frozenP50Ms: number | null;
  readonly frozenP95Ms: number | null;
}

export interface JobAggregate extends Aggregate {
  readonly job: string;
  /** Bytes of each committed version, oldest first. */
  readonly bytesByVersion: ReadonlyArray<{ readonly version: number; readonly bytes: number }>;
  /** Failed operations by failure class. */
  readonly failureClasses: Readonly<Record<string, number>>;
}

export interface NodeAggregate extends Aggregate {
  readonly node: string;
  /** Bytes the node's units hold in committed versions. */
  readonly committedBytes: number;
}

const aggregate = (rows: readonly StatsRow[], frozen: readonly number[]): Aggregate => {
  const count = (kind: string, outcome?: string) => rows.filter((r) => r.kind === kind && r.outcome !== 'rejected' && (outcome === undefined || r.outcome === outcome)).length;
  const committed = count('checkpoint', 'committed');
  const aborted = count('checkpoint', 'aborted');
  const restored = count('restart', 'restored');
  const failedRestarts = count('restart', 'failed');
  return {
    checkpoints: count('checkpoint'),
    committed,
    aborted,
    checkpointSuccessRate: rate(committed, aborted),
    restarts: count('restart'),
    restored,
    failedRestarts,
    restartSuccessRate: rate(restored, failedRestarts),
    frozenP50Ms: percentile(frozen, 50),
    frozenP95Ms: percentile(frozen, 95),
  };
};

export interface Stats {
  readonly rows: readonly StatsRow[];
  readonly jobs: readonly JobAggregate[];
  readonly nodes: readonly NodeAggregate[];
}

export interface JobOperations {
  readonly job: string;
  readonly checkpoints: readonly CheckpointSummary[];
  readonly restarts: readonly RestartSummary[];
}

/** Rows (by request time) and aggregates of the jobs' operations requested at or after `since` (ISO time). */
export const stats = (jobs: readonly JobOperations[], since?: string): Stats => {
  const from = since === undefined ? -Infinity : Date.parse(since);
  const figures = jobs
    .flatMap((j) => [...j.checkpoints.map((c) => checkpointFigures(j.job, c)), ...j.restarts.map((r) => restartFigures(j.job, r))])
    .filter((f) => Date.parse(f.row.requestedAt) >= from)
    .sort((a, b) => a.row.requestedAt.localeCompare(b.row.requestedAt) || a.row.job.localeCompare(b.row.job));
  const rows = figures.map((f) => f.row);
  const frozenOf = (fs: readonly Figures[]) => fs.flatMap((f) => (f.row.frozenMs === null ? [] : [f.row.frozenMs]));

  const byJob = jobs.map((j) => {
    const mine = figures.filter((f) => f.row.job === j.job);
    const failed = mine.filter((f) => f.row.failureClass !== null).map((f) => f.row.failureClass!);
    return {
      job: j.job,
      ...aggregate(
        mine.map((f) => f.row),
        frozenOf(mine),
      ),
      bytesByVersion: mine.flatMap((f) => (f.row.kind === 'checkpoint' && f.row.outcome === 'committed' ? [{ version: f.row.version!, bytes: f.row.bytes }] : [])),
      failureClasses: Object.fromEntries(distinct(failed).map((c) => [c, failed.filter((x) => x === c).length])),
    };
  });
  const byNode = distinct(figures.flatMap((f) => f.row.nodes)).map((node) => {
    const involved = figures.filter((f) => f.row.nodes.includes(node));
    const parts = involved.flatMap((f) => f.units.filter((u) => u.node === node).map((u) => ({ row: f.row, unit: u })));
    return {
      node,
      ...aggregate(
        involved.map((f) => f.row),
        parts.flatMap((p) => (p.unit.frozenMs === null ? [] : [p.unit.frozenMs])),
      ),
      committedBytes: sum(parts.filter((p) => p.row.kind === 'checkpoint' && p.row.outcome === 'committed').map((p) => p.unit.bytes)),
    };
  });
  return { rows, jobs: byJob, nodes: byNode };
};

/** The columns of a row as a flat record (CSV, tables): every step a column, in lifecycle order. */
export const PHASE_COLUMNS: readonly StatsPhase[] = ['freeze', 'dump', 'verify', 'commit', 'thaw', 'stop', 'abort', 'restore-prepare', 'images-verify', 'restore', 'rollback'];
