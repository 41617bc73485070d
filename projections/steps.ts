// The steps of a checkpoint or restart unit by the log's clock: when the coordinator asked for a
// step (Unit…Requested) and when the node agent answered (the done or failed outcome), with the
// positions of both. Shared by the checkpoints and restarts folds, `ckpt explain` and `ckpt stats`.
// Pure: times are the events' recordedAt, never the clock.
import { STEP_OUTCOMES, STEP_REQUESTS, type Step } from '../domain/checkpoint-commands.js';
import type { RecordedEvent } from '../domain/event-store.js';

/** A unit's step (every step but the node's part of a version: commit, prune, images-audit). */
type NodeStep = 'commit' | 'prune' | 'images-audit';
export type UnitStep = Exclude<Step, NodeStep>;
const NODE_STEPS: ReadonlySet<Step> = new Set<NodeStep>(['commit', 'prune', 'images-audit']);

export type StepEdge = 'requested' | 'done' | 'failed';

type Edge = { readonly step: UnitStep; readonly edge: StepEdge };
/** Each unit step's request and outcomes, from the domain's tables of them. */
const EDGES = new Map<string, Edge>(
  Object.entries(STEP_REQUESTS).flatMap(([type, step]): Array<[string, Edge]> => (NODE_STEPS.has(step) ? [] : [[type, { step: step as UnitStep, edge: 'requested' }]])),
);
for (const [step, [done, failed]] of Object.entries(STEP_OUTCOMES) as Array<[Step, readonly [string, string]]>) {
  if (NODE_STEPS.has(step)) continue;
  EDGES.set(done, { step: step as UnitStep, edge: 'done' });
  EDGES.set(failed, { step: step as UnitStep, edge: 'failed' });
}

/** Which unit step an event type starts or ends, if any. */
export const unitStepOf = (type: string) => EDGES.get(type);

/** One step of one unit (or the checkpoint's commit), by the log's clock. */
export interface StepTimes {
  readonly requestedAt: string;
  /** Position of the request. */
  readonly requested: number;
  readonly endedAt?: string;
  readonly ended?: number;
  readonly result?: 'done' | 'failed';
}

export type Steps = Readonly<Partial<Record<UnitStep, StepTimes>>>;

/** The step after an event that starts or ends it (a first answer counts; a late second one does not). */
export const stepAfter = (times: StepTimes | undefined, edge: StepEdge, e: RecordedEvent): StepTimes | undefined => {
  if (edge === 'requested') return { requestedAt: e.metadata.recordedAt, requested: e.position };
  if (!times || times.result) return times;
  return { ...times, endedAt: e.metadata.recordedAt, ended: e.position, result: edge };
};

/** The steps with one event folded in (the same object when it changes nothing). */
export const withStepEvent = (steps: Steps | undefined, e: RecordedEvent): Steps | undefined => {
  const edge = unitStepOf(e.type);
  if (!edge) return steps;
  const next = stepAfter(steps?.[edge.step], edge.edge, e);
  return next === steps?.[edge.step] ? steps : { ...steps, [edge.step]: next };
};

export const stepMs = (s: StepTimes): number | undefined => (s.endedAt === undefined ? undefined : Date.parse(s.endedAt) - Date.parse(s.requestedAt));

/**
 * How long each step took for the whole operation: from the first unit's request to the last
 * unit's answer (units work in parallel, so this is what the step cost the job). A step some unit
 * has not answered has no duration.
 */
export const stepSpans = (units: ReadonlyArray<{ readonly steps?: Steps }>): Partial<Record<UnitStep, number>> => {
  const spans: Partial<Record<UnitStep, number>> = {};
  const all = units.flatMap((u) => Object.entries(u.steps ?? {}) as Array<[UnitStep, StepTimes]>);
  for (const step of new Set(all.map(([s]) => s))) {
    const times = all.filter(([s]) => s === step).map(([, t]) => t);
    if (times.some((t) => t.endedAt === undefined)) continue;
    spans[step] = Math.max(...times.map((t) => Date.parse(t.endedAt!))) - Math.min(...times.map((t) => Date.parse(t.requestedAt)));
  }
  return spans;
};

/** When a unit was frozen, by the log: from its UnitFrozen to the end of its thaw, stop or abort. */
export interface FrozenWindow {
  readonly from: string;
  readonly to?: string;
  readonly ms?: number;
  /** The step that ended it. */
  readonly endedBy?: 'thaw' | 'stop' | 'abort';
}

export const frozenWindow = (steps: Steps | undefined): FrozenWindow | undefined => {
  const freeze = steps?.freeze;
  if (freeze?.result !== 'done') return undefined;
  const from = freeze.endedAt!;
  const end = (['thaw', 'stop', 'abort'] as const).find((s) => steps?.[s]?.endedAt !== undefined);
  if (!end) return { from };
  const to = steps![end]!.endedAt!;
  return { from, to, ms: Date.parse(to) - Date.parse(from), endedBy: end };
};
