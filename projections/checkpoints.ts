// The checkpoints of a job, as a read model of its stream: every request (refused or planned),
// every version with its phases, per-unit figures, outcome and reason. `ckpt checkpoint --wait`
// reports from it, `ckpt checkpoints` lists it (and `ckpt audit` will).
import type { EventStore, RecordedEvent } from '../domain/event-store.js';
import type { DumpStats } from '../domain/events/checkpoint.js';
import type { Failure } from '../domain/failure.js';
import type { Actor } from '../domain/identity.js';
import { jobStream } from '../domain/identity.js';
import { readWholeStream } from './project.js';

export interface UnitFigures {
  readonly unit: string;
  readonly node: string;
  readonly scope: string;
  /** Processes the plan targeted. */
  readonly planned: number;
  /** Processes in the unit when it was frozen. */
  readonly frozen?: number;
  /** PIDs the images hold, once verified. */
  readonly captured?: readonly number[];
  readonly files?: number;
  readonly bytes?: number;
  readonly dumpMs?: number;
  readonly frozenMs?: number;
  /** CRIU's own account of the unit's dump (its stats-dump), when the checkpointer gave one. */
  readonly stats?: DumpStats;
  /** The unit's failure, if it failed a step: the event and reason, and its class and hint. */
  readonly failed?: string;
  readonly failure?: Failure;
}

export type CheckpointOutcome = 'rejected' | 'in progress' | 'committed' | 'aborted';

export interface CheckpointSummary {
  readonly request: string;
  readonly requestedBy?: Actor;
  readonly requestedAt: string;
  readonly stop: boolean;
  readonly timeoutMs: number;
  readonly version: number | null;
  readonly parent: number | null;
  readonly outcome: CheckpointOutcome;
  /** The last phase reached: requested, planned, frozen, dumped, verified, committed, completed, aborting, aborted. */
  readonly phase: string;
  readonly reason: string | null;
  /** Why it was aborted: the failing step's class, message and hint (when recorded). */
  readonly failure?: Failure;
  readonly units: readonly UnitFigures[];
  readonly files: number;
  readonly bytes: number;
  readonly manifest?: string;
  readonly commitMs?: number;
  /** Request to completion (or abort), by the log's clock. */
  readonly durationMs?: number;
  /** Longest time any unit stayed frozen. */
  readonly frozenMs?: number;
  /** The job ran on (thawed) or was stopped (--stop). */
  readonly completed?: 'thawed' | 'stopped';
  readonly endedAt?: string;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] extends readonly (infer U)[] ? U[] : T[K] };
type Draft = Mutable<Omit<CheckpointSummary, 'units'>> & { units: Array<Mutable<UnitFigures>> };

/** Folds a job's stream into its checkpoints, oldest first. */
export const foldCheckpoints = (events: Iterable<RecordedEvent>): CheckpointSummary[] => {
  const byRequest = new Map<string, Draft>();
  const byVersion = new Map<number, Draft>();
  const unitOf = (d: Draft | undefined, unit: string) => d?.units.find((u) => u.unit === unit);
  for (const e of events) {
    switch (e.type) {
      case 'CheckpointRequested':
        byRequest.set(e.data.request, {
          request: e.data.request, requestedBy: e.metadata.actor, requestedAt: e.metadata.recordedAt, stop: e.data.stop, timeoutMs: e.data.timeoutMs,
          version: null, parent: null, outcome: 'in progress', phase: 'requested', reason: null, units: [], files: 0, bytes: 0,
        });
        break;
      case 'RequestRejected': {
        const d = e.data.command === 'checkpoint' ? byRequest.get(e.data.request) : undefined;
        if (d) Object.assign(d, { outcome: 'rejected', phase: 'rejected', reason: e.data.reason, endedAt: e.metadata.recordedAt });
        break;
      }
      case 'CheckpointPlanned': {
        const d = byRequest.get(e.data.request);
        if (!d) break;
        Object.assign(d, { version: e.data.version, parent: e.data.parent, phase: 'planned' });
        d.units = e.data.units.map((u) => ({ unit: u.unit, node: u.node, scope: u.scope, planned: u.targets.length }));
        byVersion.set(e.data.version, d);
        break;
      }
      case 'UnitFrozen': {
        const u = unitOf(byVersion.get(e.data.version), e.data.unit);
        if (u) u.frozen = e.data.processes;
        break;
      }
      case 'UnitDumped': {
        const u = unitOf(byVersion.get(e.data.version), e.data.unit);
        if (u) Object.assign(u, { files: e.data.files, bytes: e.data.bytes, dumpMs: e.data.durationMs, ...(e.data.stats && { stats: e.data.stats }) });
        break;
      }
      case 'UnitVerified': {
        const u = unitOf(byVersion.get(e.data.version), e.data.unit);
        if (u) u.captured = e.data.captured;
        break;
      }
      case 'UnitThawed': {
        const u = unitOf(byVersion.get(e.data.version), e.data.unit);
        if (u) u.frozenMs = e.data.frozenMs;
        break;
      }
      case 'UnitFreezeFailed':
      case 'UnitDumpFailed':
      case 'UnitVerifyFailed':
      case 'UnitThawFailed':
      case 'UnitStopFailed':
      case 'UnitAbortFailed': {
        const u = unitOf(byVersion.get(e.data.version), e.data.unit);
        if (u) Object.assign(u, { failed: `${e.type}: ${e.data.reason}`, ...(e.data.failure && { failure: e.data.failure }) });
        break;
      }
      case 'CheckpointCommitted': {
        const d = byVersion.get(e.data.version);
        if (d) Object.assign(d, { outcome: 'committed', phase: 'committed', files: e.data.files, bytes: e.data.bytes, manifest: e.data.manifest, commitMs: e.data.durationMs });
        break;
      }
      case 'CheckpointAbortRequested': {
        const d = byVersion.get(e.data.version);
        if (d) Object.assign(d, { phase: 'aborting', reason: e.data.reason, ...(e.data.failure && { failure: e.data.failure }) });
        break;
      }
      case 'CheckpointAborted': {
        const d = byVersion.get(e.data.version);
        if (d) Object.assign(d, { outcome: 'aborted', phase: 'aborted', reason: e.data.reason, ...(e.data.failure && { failure: e.data.failure }), endedAt: e.metadata.recordedAt });
        break;
      }
      case 'CheckpointCompleted': {
        const d = byVersion.get(e.data.version);
        if (d) Object.assign(d, { phase: 'completed', completed: e.data.outcome, endedAt: e.metadata.recordedAt });
        break;
      }
      default: {
        // Progress of the remaining phases, for `--wait`.
        const d = 'version' in e.data && typeof e.data.version === 'number' ? byVersion.get(e.data.version) : undefined;
        if (d?.outcome === 'in progress' && d.phase !== 'aborting') {
          if (e.type === 'UnitDumpRequested') d.phase = 'frozen';
          else if (e.type === 'UnitVerifyRequested') d.phase = 'dumped';
          else if (e.type === 'CheckpointCommitRequested') d.phase = 'verified';
        }
      }
    }
  }
  return [...byRequest.values()].map((d) => {
    const frozen = d.units.map((u) => u.frozenMs).filter((m): m is number => m !== undefined);
    return {
      ...d,
      ...(frozen.length > 0 && { frozenMs: Math.max(...frozen) }),
      ...(d.endedAt && { durationMs: Date.parse(d.endedAt) - Date.parse(d.requestedAt) }),
    };
  });
};

/** A job's stream, in order (undefined when the job is unknown). */
export const readJobStream = async (store: EventStore, job: string): Promise<RecordedEvent[] | undefined> => {
  const events = await readWholeStream(store, jobStream(job));
  return events.length > 0 ? events : undefined;
};
