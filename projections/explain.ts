// One checkpoint or restart of a job, explained from its stream (`ckpt explain`): each unit's steps
// by the log's clock, the frozen window per unit, every decision the coordinator made with the
// event that caused it, and — when it failed — the chain of causes back to its root, the steps it
// was still waiting for, and each unit's failure with its class, message and hint.
// A pure fold: the figures come from the checkpoints and restarts folds, the causes from the
// events' causationId, times from recordedAt; no clock.
import { deadlineId } from '../domain/checkpoint-coordinator.js';
import type { RecordedEvent } from '../domain/event-store.js';
import { definitionOf } from '../domain/events/catalogue.js';
import { checkpointEvents } from '../domain/events/checkpoint.js';
import { restartEvents } from '../domain/events/restart.js';
import type { Failure } from '../domain/failure.js';
import type { Actor } from '../domain/identity.js';
import { emptyMap, getIn, type PersistentMap, setIn } from '../domain/persistent-map.js';
import { restartDeadlineId } from '../domain/restart-coordinator.js';
import { type CheckpointsState, checkpointSummaries, evolveCheckpoints, initialCheckpoints } from './checkpoints.js';
import { evolveRestarts, initialRestarts, type RestartsState } from './restarts.js';
import { type FrozenWindow, frozenWindow, type Steps, type StepTimes, stepMs, type UnitStep, unitStepOf } from './steps.js';

export type Operation = { readonly kind: 'checkpoint'; readonly version: number } | { readonly kind: 'restart'; readonly restart: number };

export interface ExplainState {
  readonly target: Operation;
  readonly checkpoints: CheckpointsState;
  readonly restarts: RestartsState;
  /** Requests of the target's kind not planned yet, by request id: one of them may become the target. */
  readonly unplanned: Readonly<Record<string, RecordedEvent>>;
  /** The target's own events, in order (its request first). */
  readonly events: readonly RecordedEvent[];
  /** Every event from the first request that could be the target's until the target ended, by id:
   *  what its events were caused by (a cause always comes before its effect). */
  readonly window: PersistentMap<RecordedEvent>;
  readonly phase: 'before' | 'open' | 'ended';
}

export const initialExplain = (target: Operation): ExplainState => ({
  target,
  checkpoints: initialCheckpoints,
  restarts: initialRestarts,
  unplanned: {},
  events: [],
  window: emptyMap(),
  phase: 'before',
});

const CHECKPOINT_TYPES = new Set<string>(checkpointEvents.map((d) => d.type).filter((t) => t !== 'PruneRequested' && t !== 'CheckpointPruned'));
const RESTART_TYPES = new Set<string>(restartEvents.map((d) => d.type));
const DEADLINE_TYPES = new Set(['DeadlineScheduled', 'DeadlineReached', 'DeadlineCancelled']);

const kindOf = (op: Operation) =>
  op.kind === 'checkpoint'
    ? {
        requested: 'CheckpointRequested',
        planned: 'CheckpointPlanned',
        ends: ['CheckpointCompleted', 'CheckpointAborted'],
        types: CHECKPOINT_TYPES,
        key: 'version',
        number: op.version,
        deadline: deadlineId(op.version),
      }
    : {
        requested: 'RestartRequested',
        planned: 'RestartPlanned',
        ends: ['RestartCommitted', 'RestartFailed'],
        types: RESTART_TYPES,
        key: 'restart',
        number: op.restart,
        deadline: restartDeadlineId(op.restart),
      };

const field = (e: RecordedEvent, name: string): unknown => (e.data as Record<string, unknown>)[name];

/** Whether an event is one of the operation's own (its steps, decisions and deadline). */
const belongs = (op: Operation, e: RecordedEvent): boolean => {
  const k = kindOf(op);
  if (DEADLINE_TYPES.has(e.type)) return field(e, 'deadline') === k.deadline;
  return k.types.has(e.type) && field(e, k.key) === k.number;
};

export const evolveExplain = (s: ExplainState, e: RecordedEvent): ExplainState => {
  const k = kindOf(s.target);
  let next: ExplainState = { ...s, checkpoints: evolveCheckpoints(s.checkpoints, e), restarts: evolveRestarts(s.restarts, e) };
  if (s.phase === 'before') {
    if (e.type === k.requested) next = { ...next, unplanned: { ...s.unplanned, [field(e, 'request') as string]: e } };
    const request = field(e, 'request');
    if (e.type === k.planned && field(e, k.key) === k.number) {
      const requested = next.unplanned[request as string];
      return { ...next, unplanned: {}, phase: 'open', events: requested ? [requested, e] : [e], window: setIn(next.window, e.id, e) };
    }
    // A request leaves the pending ones when it is planned (as another operation), refused, or expired unplanned.
    if (typeof request === 'string' && request in next.unplanned && (e.type === k.planned || e.type === 'RequestRejected' || e.type === 'RequestExpired')) {
      const { [request]: _, ...unplanned } = next.unplanned;
      next = { ...next, unplanned };
    }
    // Nothing pending that could become the target: nothing before this can have caused it.
    const pending = Object.keys(next.unplanned).length > 0;
    return { ...next, window: pending ? setIn(next.window, e.id, e) : next.window.size > 0 ? emptyMap() : next.window };
  }
  if (!belongs(s.target, e)) return s.phase === 'open' ? { ...next, window: setIn(next.window, e.id, e) } : next;
  return {
    ...next,
    events: [...s.events, e],
    window: s.phase === 'open' ? setIn(next.window, e.id, e) : s.window,
    phase: k.ends.includes(e.type) ? 'ended' : s.phase,
  };
};

/** An event named by where it is in the log. */
export interface EventRef {
  readonly position: number;
  readonly type: string;
  readonly recordedAt: string;
  readonly unit?: string;
  readonly node?: string;
}

export interface ExplainedStep {
  readonly step: UnitStep | 'commit';
  readonly requestedAt: string;
  /** Position of the coordinator's request. */
  readonly requested: number;
  readonly endedAt: string | null;
  readonly ended: number | null;
  readonly result: 'done' | 'failed' | 'unanswered';
  readonly durationMs: number | null;
}

export interface UnitFailure extends EventRef {
  readonly step: UnitStep;
  readonly reason: string;
  readonly failure: Failure | null;
  /** The coordinator's request the node agent was answering. */
  readonly command: EventRef | null;
}

export interface ExplainedUnit {
  readonly unit: string;
  readonly node: string;
  readonly steps: readonly ExplainedStep[];
  /** From its UnitFrozen to the end of its thaw, stop or abort (log times), and the agent's own measure. */
  readonly frozen: (FrozenWindow & { readonly measuredMs: number | null }) | null;
  readonly failures: readonly UnitFailure[];
}

export interface Decision extends EventRef {
  /** The log position the coordinator decided from. */
  readonly decidedAt: number | null;
  readonly data: unknown;
  /** The event it was decided on (its causationId), when that is in the job's stream. */
  readonly cause: EventRef | null;
}

export interface WaitingStep {
  readonly unit: string;
  readonly node: string;
  readonly step: UnitStep;
  readonly command: EventRef;
}

export interface CauseChain {
  /** From the decision that ended the operation back, cause by cause (causationId), to the first. */
  readonly chain: ReadonlyArray<EventRef & { readonly data: unknown }>;
  /** The steps no unit had answered when a deadline was reached: what the operation waited for. */
  readonly waitingFor: readonly WaitingStep[];
  /** Every failed unit step, with the checkpointer's class, message and hint. */
  readonly failures: readonly UnitFailure[];
}

export interface Explanation {
  readonly kind: 'checkpoint' | 'restart';
  readonly version: number | null;
  readonly restart: number | null;
  readonly request: string;
  readonly requestedBy: Actor | null;
  readonly requestedAt: string;
  readonly endedAt: string | null;
  readonly durationMs: number | null;
  readonly outcome: string;
  readonly reason: string | null;
  readonly failure: Failure | null;
  readonly units: readonly ExplainedUnit[];
  /** The checkpoint's commit step (null for a restart, or before it). */
  readonly commit: ExplainedStep | null;
  readonly decisions: readonly Decision[];
  /** Why it failed (null when nothing failed). */
  readonly cause: CauseChain | null;
}

const ref = (e: RecordedEvent): EventRef => {
  const unit = field(e, 'unit');
  const node = field(e, 'node');
  return { position: e.position, type: e.type, recordedAt: e.metadata.recordedAt, ...(typeof unit === 'string' && { unit }), ...(typeof node === 'string' && { node }) };
};

const explainedStep = (step: UnitStep | 'commit', t: StepTimes): ExplainedStep => ({
  step,
  requestedAt: t.requestedAt,
  requested: t.requested,
  endedAt: t.endedAt ?? null,
  ended: t.ended ?? null,
  result: t.result ?? 'unanswered',
  durationMs: stepMs(t) ?? null,
});

const stepsOf = (steps: Steps | undefined): ExplainedStep[] =>
  (Object.entries(steps ?? {}) as Array<[UnitStep, StepTimes]>).map(([step, t]) => explainedStep(step, t)).sort((a, b) => a.requested - b.requested);

/** The versions (or restart numbers) the stream has, for an error that names them. */
export const knownOperations = (s: ExplainState): number[] =>
  Object.keys(s.target.kind === 'checkpoint' ? s.checkpoints.byVersion : s.restarts.byRestart)
    .map(Number)
    .sort((a, b) => a - b);

/** The explanation of the folded target, or undefined when the stream has no such operation. */
export const explanation = (s: ExplainState): Explanation | undefined => {
  if (s.phase === 'before') return undefined;
  const lookup = (id: string | undefined) => (id === undefined ? undefined : (getIn(s.window, id) ?? s.events.find((e) => e.id === id)));
  const summary = s.target.kind === 'checkpoint' ? checkpointSummaries(s.checkpoints)[s.checkpoints.byVersion[s.target.version]!]! : s.restarts.list[s.restarts.byRestart[s.target.restart]!]!;

  const failures: UnitFailure[] = s.events.flatMap((e) => {
    if (unitStepOf(e.type)?.edge !== 'failed') return [];
    const d = e.data as { reason: string; failure?: Failure };
    const command = lookup(e.metadata.causationId);
    return [{ ...ref(e), step: unitStepOf(e.type)!.step, reason: d.reason, failure: d.failure ?? null, command: command ? ref(command) : null }];
  });
  const units: ExplainedUnit[] = summary.units.map((u) => {
    const window = frozenWindow(u.steps);
    const measuredMs = 'frozenMs' in u && typeof u.frozenMs === 'number' ? u.frozenMs : null;
    return { unit: u.unit, node: u.node, steps: stepsOf(u.steps), frozen: window ? { ...window, measuredMs } : null, failures: failures.filter((f) => f.unit === u.unit) };
  });
  const decisions: Decision[] = s.events
    .filter((e) => definitionOf(e.type)?.kind === 'decision')
    .map((e) => {
      const cause = lookup(e.metadata.causationId);
      return { ...ref(e), decidedAt: e.metadata.decidedAt ?? null, data: e.data, cause: cause ? ref(cause) : null };
    });

  const ends = s.target.kind === 'checkpoint' ? ['CheckpointAbortRequested', 'CheckpointCommitFailed', 'CheckpointAborted'] : ['RestartAbortRequested', 'RestartFailed'];
  const terminal = ends.map((t) => s.events.find((e) => e.type === t)).find((e) => e !== undefined);
  const chain: RecordedEvent[] = [];
  for (let e = terminal; e && !chain.includes(e); e = lookup(e.metadata.causationId)) chain.push(e);
  const root = chain[chain.length - 1];
  const waitingFor: WaitingStep[] =
    root?.type === 'DeadlineReached'
      ? summary.units.flatMap((u) =>
          (Object.entries(u.steps ?? {}) as Array<[UnitStep, StepTimes]>)
            .filter(([, t]) => t.requested < root.position && (t.ended === undefined || t.ended > root.position))
            .flatMap(([step, t]) => {
              const command = s.events.find((e) => e.position === t.requested);
              return command ? [{ unit: u.unit, node: u.node, step, command: ref(command) }] : [];
            }),
        )
      : [];

  return {
    kind: s.target.kind,
    version: summary.version,
    restart: s.target.kind === 'restart' ? s.target.restart : null,
    request: summary.request,
    requestedBy: summary.requestedBy ?? null,
    requestedAt: summary.requestedAt,
    endedAt: summary.endedAt ?? null,
    durationMs: summary.durationMs ?? null,
    outcome: summary.outcome,
    reason: summary.reason,
    failure: summary.failure ?? null,
    units,
    commit: 'commit' in summary && summary.commit ? explainedStep('commit', summary.commit) : null,
    decisions,
    cause: chain.length > 0 || failures.length > 0 ? { chain: chain.map((e) => ({ ...ref(e), data: e.data })), waitingFor, failures } : null,
  };
};

/** Folds a job's stream and explains one of its checkpoints or restarts. */
export const foldExplain = (target: Operation, events: Iterable<RecordedEvent>): ExplainState => {
  let state = initialExplain(target);
  for (const e of events) state = evolveExplain(state, e);
  return state;
};
