// The checkpoints of a job, as a read model of its stream: every request (refused or planned),
// every version with its phases, per-unit figures, outcome and reason. `ckpt checkpoint --wait`
// reports from it, `ckpt checkpoints` lists it (and `ckpt audit` will).
import type { EventStore, RecordedEvent } from '../domain/event-store.js';
import type { DumpStats } from '../domain/events/checkpoint.js';
import type { Failure } from '../domain/failure.js';
import type { Actor } from '../domain/identity.js';
import { jobStream } from '../domain/identity.js';
import { type RequestList, readWholeStream, withEntry, withRequest } from './project.js';
import type { ReadModel } from './read-model.js';
import { type Steps, type StepTimes, stepAfter, unitStepOf, withStepEvent } from './steps.js';

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
  /** Each step's request and answer by the log's clock (freeze, dump, verify, thaw, stop, abort). */
  readonly steps?: Steps;
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
  /** SHA-256 of the manifest when one node holds every unit; `manifests` has each node's. */
  readonly manifest?: string;
  readonly manifests?: Readonly<Record<string, string>>;
  /** Decided pruned (PrunePlanned), and the nodes that removed their part so far (CheckpointPruned). */
  readonly pruned?: { readonly nodes: readonly string[] };
  readonly commitMs?: number;
  /** The commit step by the log's clock (CheckpointCommitRequested to its outcome). */
  readonly commit?: StepTimes;
  /** Request to completion (or abort), by the log's clock. */
  readonly durationMs?: number;
  /** Longest time any unit stayed frozen. */
  readonly frozenMs?: number;
  /** The job ran on (thawed) or was stopped (--stop). */
  readonly completed?: 'thawed' | 'stopped';
  readonly endedAt?: string;
}

type Draft = Omit<CheckpointSummary, 'frozenMs' | 'durationMs'>;

/** The fold's state: every request in order, found by request id and by version. JSON as it is. */
export interface CheckpointsState extends RequestList<Draft> {
  readonly byVersion: Readonly<Record<number, number>>;
}

export const initialCheckpoints: CheckpointsState = { list: [], byRequest: {}, byVersion: {} };

const withDraft = (s: CheckpointsState, index: number | undefined, change: (d: Draft) => Draft): CheckpointsState => withEntry<CheckpointsState, Draft>(s, index, change);

const withUnit = (s: CheckpointsState, version: number, unit: string, change: Partial<UnitFigures>): CheckpointsState =>
  withDraft(s, s.byVersion[version], (d) => (d.units.some((u) => u.unit === unit) ? { ...d, units: d.units.map((u) => (u.unit === unit ? { ...u, ...change } : u)) } : d));

/** A unit step's request or answer, or the commit's, into the step times of its version. */
const withStepTimes = (s: CheckpointsState, e: RecordedEvent): CheckpointsState => {
  const version = (e.data as { version?: number }).version;
  if (version === undefined) return s;
  // The version's commit: from the request to the last node's (CheckpointCommitted) or a failure.
  if (e.type === 'CheckpointCommitRequested' || e.type === 'CheckpointCommitted' || e.type === 'CheckpointCommitFailed') {
    const edge = e.type === 'CheckpointCommitRequested' ? 'requested' : e.type === 'CheckpointCommitted' ? 'done' : 'failed';
    return withDraft(s, s.byVersion[version], (d) => ({ ...d, commit: stepAfter(d.commit, edge, e) }));
  }
  const unit = (e.data as { unit?: string }).unit;
  if (unit === undefined || !unitStepOf(e.type)) return s;
  return withDraft(s, s.byVersion[version], (d) =>
    d.units.some((u) => u.unit === unit) ? { ...d, units: d.units.map((u) => (u.unit === unit ? { ...u, steps: withStepEvent(u.steps, e) } : u)) } : d,
  );
};

/**
 * A deadline's abort names who kept everyone waiting: the units (and their nodes) that had not
 * answered their step — a host cut off, an agent gone. Derived here, on the read side, so recorded
 * decisions (whose reason is the deadline's) re-derive unchanged.
 */
const withStragglers = (d: Draft, reason: string): string => {
  if (!reason.startsWith('the deadline')) return reason;
  const waiting = d.units.flatMap((u) => {
    const open = (Object.entries(u.steps ?? {}) as Array<[string, StepTimes]>).filter(([, t]) => !t.result).sort(([, a], [, b]) => b.requested - a.requested);
    return open.length > 0 ? [`unit ${u.unit} on ${u.node} (${open[0]![0]})`] : [];
  });
  return waiting.length === 0 ? reason : `${reason}: no answer from ${waiting.join(', ')}`;
};

/** One event of a job's stream into its checkpoints (a pure evolve: nothing is changed in place). */
export const evolveCheckpoints = (s: CheckpointsState, e: RecordedEvent): CheckpointsState => withStepTimes(evolveFigures(s, e), e);

const evolveFigures = (s: CheckpointsState, e: RecordedEvent): CheckpointsState => {
  switch (e.type) {
    case 'CheckpointRequested': {
      const draft: Draft = {
        request: e.data.request,
        requestedBy: e.metadata.actor,
        requestedAt: e.metadata.recordedAt,
        stop: e.data.stop,
        timeoutMs: e.data.timeoutMs,
        version: null,
        parent: null,
        outcome: 'in progress',
        phase: 'requested',
        reason: null,
        units: [],
        files: 0,
        bytes: 0,
      };
      return withRequest<CheckpointsState, Draft>(s, e.data.request, draft);
    }
    case 'RequestRejected':
      if (e.data.command !== 'checkpoint') return s;
      return withDraft(s, s.byRequest[e.data.request], (d) => ({ ...d, outcome: 'rejected', phase: 'rejected', reason: e.data.reason, endedAt: e.metadata.recordedAt }));
    case 'CheckpointPlanned': {
      const index = s.byRequest[e.data.request];
      if (index === undefined) return s;
      const planned = withDraft(s, index, (d) => ({
        ...d,
        version: e.data.version,
        parent: e.data.parent,
        phase: 'planned',
        units: e.data.units.map((u) => ({ unit: u.unit, node: u.node, scope: u.scope, planned: u.targets.length })),
      }));
      return { ...planned, byVersion: { ...s.byVersion, [e.data.version]: index } };
    }
    case 'UnitFrozen':
      return withUnit(s, e.data.version, e.data.unit, { frozen: e.data.processes });
    case 'UnitDumped':
      return withUnit(s, e.data.version, e.data.unit, { files: e.data.files, bytes: e.data.bytes, dumpMs: e.data.durationMs, ...(e.data.stats && { stats: e.data.stats }) });
    case 'UnitVerified':
      return withUnit(s, e.data.version, e.data.unit, { captured: e.data.captured });
    case 'UnitThawed':
      return withUnit(s, e.data.version, e.data.unit, { frozenMs: e.data.frozenMs });
    case 'UnitFreezeFailed':
    case 'UnitDumpFailed':
    case 'UnitVerifyFailed':
    case 'UnitThawFailed':
    case 'UnitStopFailed':
    case 'UnitAbortFailed':
      return withUnit(s, e.data.version, e.data.unit, { failed: `${e.type}: ${e.data.reason}`, ...(e.data.failure && { failure: e.data.failure }) });
    case 'CheckpointCommitted': {
      const { manifest, nodes } = e.data;
      const manifests = nodes && Object.fromEntries(Object.entries(nodes).map(([node, m]) => [node, m.manifest]));
      return withDraft(s, s.byVersion[e.data.version], (d) => ({
        ...d,
        outcome: 'committed',
        phase: 'committed',
        files: e.data.files,
        bytes: e.data.bytes,
        ...(manifest && { manifest }),
        ...(manifests && { manifests }),
        commitMs: e.data.durationMs,
      }));
    }
    case 'PrunePlanned': {
      let next = s;
      for (const version of e.data.versions) next = withDraft(next, s.byVersion[version], (d) => ({ ...d, pruned: d.pruned ?? { nodes: [] } }));
      return next;
    }
    case 'CheckpointPruned':
      return withDraft(s, s.byVersion[e.data.version], (d) => ({ ...d, pruned: { nodes: e.data.node === undefined ? (d.pruned?.nodes ?? []) : [...(d.pruned?.nodes ?? []), e.data.node] } }));
    case 'CheckpointAbortRequested':
      return withDraft(s, s.byVersion[e.data.version], (d) => ({ ...d, phase: 'aborting', reason: withStragglers(d, e.data.reason), ...(e.data.failure && { failure: e.data.failure }) }));
    case 'CheckpointAborted':
      return withDraft(s, s.byVersion[e.data.version], (d) => ({
        ...d,
        outcome: 'aborted',
        phase: 'aborted',
        reason: e.data.reason,
        ...(e.data.failure && { failure: e.data.failure }),
        endedAt: e.metadata.recordedAt,
      }));
    case 'CheckpointCompleted':
      return withDraft(s, s.byVersion[e.data.version], (d) => ({ ...d, phase: 'completed', completed: e.data.outcome, endedAt: e.metadata.recordedAt }));
    default: {
      // Progress of the remaining phases, for `--wait`.
      const phase = e.type === 'UnitDumpRequested' ? 'frozen' : e.type === 'UnitVerifyRequested' ? 'dumped' : e.type === 'CheckpointCommitRequested' ? 'verified' : undefined;
      if (!phase) return s;
      return withDraft(s, s.byVersion[(e.data as { version: number }).version], (d) => (d.outcome === 'in progress' && d.phase !== 'aborting' ? { ...d, phase } : d));
    }
  }
};

/** The checkpoints of the state, oldest first, with the figures derived from it. */
export const checkpointSummaries = (s: CheckpointsState): CheckpointSummary[] =>
  s.list.map((d) => {
    const frozen = d.units.map((u) => u.frozenMs).filter((m): m is number => m !== undefined);
    return {
      ...d,
      ...(frozen.length > 0 && { frozenMs: Math.max(...frozen) }),
      ...(d.endedAt && { durationMs: Date.parse(d.endedAt) - Date.parse(d.requestedAt) }),
    };
  });

/** Folds a job's stream into its checkpoints, oldest first. */
export const foldCheckpoints = (events: Iterable<RecordedEvent>): CheckpointSummary[] => {
  let state = initialCheckpoints;
  for (const e of events) state = evolveCheckpoints(state, e);
  return checkpointSummaries(state);
};

/** A job's checkpoints as a read model of its stream, kept as a snapshot. */
export const checkpointsModel: ReadModel<CheckpointsState> = {
  name: 'checkpoints',
  version: 3,
  stream: jobStream,
  initial: () => initialCheckpoints,
  evolve: evolveCheckpoints,
  encode: (s) => s,
  decode: (encoded) => {
    const s = encoded as CheckpointsState;
    if (!Array.isArray(s?.list) || typeof s.byRequest !== 'object' || typeof s.byVersion !== 'object') throw new Error('checkpoints: list, byRequest or byVersion missing');
    return s;
  },
};

/** A job's stream, in order (undefined when the job is unknown). */
export const readJobStream = async (store: EventStore, job: string): Promise<RecordedEvent[] | undefined> => {
  const events = await readWholeStream(store, jobStream(job));
  return events.length > 0 ? events : undefined;
};
