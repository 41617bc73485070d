// The restarts of a job, as a read model of its stream: who asked, which version, where each unit
// went, whether its PIDs needed a new namespace, every process's old and new identity, outcome.
import type { RecordedEvent } from '../domain/event-store.js';
import type { RestoreStats } from '../domain/events/restart.js';
import type { Failure } from '../domain/failure.js';
import { type Actor, jobStream, type ProcessRef } from '../domain/identity.js';
import { type RequestList, withEntry, withRequest } from './project.js';
import type { ReadModel } from './read-model.js';
import { type Steps, unitStepOf, withStepEvent } from './steps.js';

export interface RestartUnitFigures {
  readonly unit: string;
  readonly node: string;
  readonly files?: number;
  readonly bytes?: number;
  readonly pidNamespace?: boolean;
  readonly waitedMs?: number;
  readonly restoreMs?: number;
  /** CRIU's own account of the unit's restore (its stats-restore), when the checkpointer gave one. */
  readonly stats?: RestoreStats;
  readonly failed?: string;
  readonly failure?: Failure;
  /** Each step's request and answer by the log's clock (images, prepare, restore, rollback). */
  readonly steps?: Steps;
}

export interface RestoredFigure {
  readonly unit: string;
  readonly was: ProcessRef;
  readonly now: ProcessRef;
  readonly nsPid: number | null;
}

export interface RestartSummary {
  readonly request: string;
  readonly requestedBy?: Actor;
  readonly requestedAt: string;
  readonly restart: number | null;
  readonly version: number | null;
  readonly outcome: 'rejected' | 'in progress' | 'restored' | 'failed';
  readonly phase: string;
  readonly reason: string | null;
  /** Why it failed: the failing step's class, message and hint (when recorded). */
  readonly failure?: Failure;
  readonly units: readonly RestartUnitFigures[];
  readonly processes: readonly RestoredFigure[];
  readonly durationMs?: number;
  readonly endedAt?: string;
}

/** The fold's state: every request in order, found by request id and by restart number. JSON as it is. */
export interface RestartsState extends RequestList<RestartSummary> {
  readonly byRestart: Readonly<Record<number, number>>;
}

export const initialRestarts: RestartsState = { list: [], byRequest: {}, byRestart: {} };

const withDraft = (s: RestartsState, index: number | undefined, change: (d: RestartSummary) => RestartSummary): RestartsState => withEntry<RestartsState, RestartSummary>(s, index, change);

const withUnit = (s: RestartsState, restart: number, unit: string, change: Partial<RestartUnitFigures>, phase?: string): RestartsState =>
  withDraft(s, s.byRestart[restart], (d) => ({
    ...d,
    ...(phase && { phase }),
    units: d.units.map((u) => (u.unit === unit ? { ...u, ...change } : u)),
  }));

const ended = (d: RestartSummary, change: Partial<RestartSummary>, at: string): RestartSummary => ({ ...d, ...change, endedAt: at, durationMs: Date.parse(at) - Date.parse(d.requestedAt) });

/** A unit step's request or answer into the step times of its restart. */
const withStepTimes = (s: RestartsState, e: RecordedEvent): RestartsState => {
  const { restart, unit } = e.data as { restart?: number; unit?: string };
  if (restart === undefined || unit === undefined || !unitStepOf(e.type)) return s;
  return withDraft(s, s.byRestart[restart], (d) => ({ ...d, units: d.units.map((u) => (u.unit === unit ? { ...u, steps: withStepEvent(u.steps, e) } : u)) }));
};

/** One event of a job's stream into its restarts (a pure evolve: nothing is changed in place). */
export const evolveRestarts = (s: RestartsState, e: RecordedEvent): RestartsState => withStepTimes(evolveFigures(s, e), e);

const evolveFigures = (s: RestartsState, e: RecordedEvent): RestartsState => {
  switch (e.type) {
    case 'RestartRequested': {
      const draft: RestartSummary = {
        request: e.data.request,
        requestedBy: e.metadata.actor,
        requestedAt: e.metadata.recordedAt,
        restart: null,
        version: e.data.version,
        outcome: 'in progress',
        phase: 'requested',
        reason: null,
        units: [],
        processes: [],
      };
      return withRequest<RestartsState, RestartSummary>(s, e.data.request, draft);
    }
    case 'RequestRejected':
      if (e.data.command !== 'restart') return s;
      return withDraft(s, s.byRequest[e.data.request], (d) => ended(d, { outcome: 'rejected', phase: 'rejected', reason: e.data.reason }, e.metadata.recordedAt));
    case 'RestartPlanned': {
      const index = s.byRequest[e.data.request];
      if (index === undefined) return s;
      const planned = withDraft(s, index, (d) => ({ ...d, restart: e.data.restart, version: e.data.version, phase: 'planned', units: e.data.units.map((u) => ({ unit: u.unit, node: u.node })) }));
      return { ...planned, byRestart: { ...s.byRestart, [e.data.restart]: index } };
    }
    case 'UnitImagesVerified':
      return withUnit(s, e.data.restart, e.data.unit, { files: e.data.files, bytes: e.data.bytes }, 'images verified');
    case 'UnitRestorePrepared':
      return withUnit(s, e.data.restart, e.data.unit, { pidNamespace: e.data.pidNamespace, waitedMs: e.data.waitedMs }, 'prepared');
    case 'UnitRestored': {
      const restored = withUnit(s, e.data.restart, e.data.unit, { restoreMs: e.data.durationMs, ...(e.data.stats && { stats: e.data.stats }) });
      return withDraft(restored, s.byRestart[e.data.restart], (d) => ({ ...d, processes: [...d.processes, ...e.data.processes.map((p) => ({ unit: e.data.unit, ...p }))] }));
    }
    case 'UnitImagesVerifyFailed':
    case 'UnitRestorePrepareFailed':
    case 'UnitRestoreFailed':
    case 'UnitRollbackFailed':
      return withUnit(s, e.data.restart, e.data.unit, { failed: `${e.type}: ${e.data.reason}`, ...(e.data.failure && { failure: e.data.failure }) });
    case 'RestartAbortRequested':
      return withDraft(s, s.byRestart[e.data.restart], (d) => ({ ...d, phase: 'rolling back', reason: e.data.reason, ...(e.data.failure && { failure: e.data.failure }) }));
    case 'RestartCommitted':
      return withDraft(s, s.byRestart[e.data.restart], (d) => ended(d, { outcome: 'restored', phase: 'restored' }, e.metadata.recordedAt));
    case 'RestartFailed':
      return withDraft(s, s.byRestart[e.data.restart], (d) =>
        ended(d, { outcome: 'failed', phase: 'failed', reason: e.data.reason, ...(e.data.failure && { failure: e.data.failure }) }, e.metadata.recordedAt),
      );
    default:
      return s;
  }
};

export const foldRestarts = (events: Iterable<RecordedEvent>): RestartSummary[] => {
  let state = initialRestarts;
  for (const e of events) state = evolveRestarts(state, e);
  return [...state.list];
};

/** A job's restarts as a read model of its stream, kept as a snapshot. */
export const restartsModel: ReadModel<RestartsState> = {
  name: 'restarts',
  version: 3,
  stream: jobStream,
  initial: () => initialRestarts,
  evolve: evolveRestarts,
  encode: (s) => s,
  decode: (encoded) => {
    const s = encoded as RestartsState;
    if (!Array.isArray(s?.list) || typeof s.byRequest !== 'object' || typeof s.byRestart !== 'object') throw new Error('restarts: list, byRequest or byRestart missing');
    return s;
  },
};
