// The restarts of a job, as a read model of its stream: who asked, which version, where each unit
// went, whether its PIDs needed a new namespace, every process's old and new identity, outcome.
import type { RecordedEvent } from '../domain/event-store.js';
import type { RestoreStats } from '../domain/events/restart.js';
import type { Failure } from '../domain/failure.js';
import type { Actor, ProcessRef } from '../domain/identity.js';

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

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
type Draft = Omit<Mutable<RestartSummary>, 'units' | 'processes'> & { units: Array<Mutable<RestartUnitFigures>>; processes: RestoredFigure[] };

export const foldRestarts = (events: Iterable<RecordedEvent>): RestartSummary[] => {
  const byRequest = new Map<string, Draft>();
  const byRestart = new Map<number, Draft>();
  const unitOf = (restart: number, unit: string) => byRestart.get(restart)?.units.find((u) => u.unit === unit);
  const end = (d: Draft | undefined, change: Partial<Draft>, at: string) => d && Object.assign(d, change, { endedAt: at, durationMs: Date.parse(at) - Date.parse(d.requestedAt) });
  for (const e of events) {
    switch (e.type) {
      case 'RestartRequested':
        byRequest.set(e.data.request, {
          request: e.data.request, requestedBy: e.metadata.actor, requestedAt: e.metadata.recordedAt, restart: null, version: e.data.version,
          outcome: 'in progress', phase: 'requested', reason: null, units: [], processes: [],
        });
        break;
      case 'RequestRejected':
        if (e.data.command === 'restart') end(byRequest.get(e.data.request), { outcome: 'rejected', phase: 'rejected', reason: e.data.reason }, e.metadata.recordedAt);
        break;
      case 'RestartPlanned': {
        const d = byRequest.get(e.data.request);
        if (!d) break;
        Object.assign(d, { restart: e.data.restart, version: e.data.version, phase: 'planned', units: e.data.units.map((u) => ({ unit: u.unit, node: u.node })) });
        byRestart.set(e.data.restart, d);
        break;
      }
      case 'UnitImagesVerified': {
        const u = unitOf(e.data.restart, e.data.unit);
        if (u) Object.assign(u, { files: e.data.files, bytes: e.data.bytes });
        byRestart.get(e.data.restart) && (byRestart.get(e.data.restart)!.phase = 'images verified');
        break;
      }
      case 'UnitRestorePrepared': {
        const u = unitOf(e.data.restart, e.data.unit);
        if (u) Object.assign(u, { pidNamespace: e.data.pidNamespace, waitedMs: e.data.waitedMs });
        byRestart.get(e.data.restart) && (byRestart.get(e.data.restart)!.phase = 'prepared');
        break;
      }
      case 'UnitRestored': {
        const u = unitOf(e.data.restart, e.data.unit);
        if (u) Object.assign(u, { restoreMs: e.data.durationMs, ...(e.data.stats && { stats: e.data.stats }) });
        byRestart.get(e.data.restart)?.processes.push(...e.data.processes.map((p) => ({ unit: e.data.unit, ...p })));
        break;
      }
      case 'UnitImagesVerifyFailed':
      case 'UnitRestorePrepareFailed':
      case 'UnitRestoreFailed':
      case 'UnitRollbackFailed': {
        const u = unitOf(e.data.restart, e.data.unit);
        if (u) Object.assign(u, { failed: `${e.type}: ${e.data.reason}`, ...(e.data.failure && { failure: e.data.failure }) });
        break;
      }
      case 'RestartAbortRequested': {
        const d = byRestart.get(e.data.restart);
        if (d) Object.assign(d, { phase: 'rolling back', reason: e.data.reason, ...(e.data.failure && { failure: e.data.failure }) });
        break;
      }
      case 'RestartCommitted':
        end(byRestart.get(e.data.restart), { outcome: 'restored', phase: 'restored' }, e.metadata.recordedAt);
        break;
      case 'RestartFailed':
        end(byRestart.get(e.data.restart), { outcome: 'failed', phase: 'failed', reason: e.data.reason, ...(e.data.failure && { failure: e.data.failure }) }, e.metadata.recordedAt);
        break;
      default:
    }
  }
  return [...byRequest.values()];
};
