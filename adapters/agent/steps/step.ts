// A command for this node and what it is answered with. Each step has a handler that returns the
// step's own done event; a handler that throws has failed, and the one place that records outcomes
// (JobWork) turns the error into the step's failed event. The types tie each step to its two
// outcomes (domain/checkpoint-commands.ts STEP_OUTCOMES): a freeze cannot answer UnitThawed.
import { type CheckpointCommands, type PendingCommand, RESTART_STEPS, type RestartStep, STEP_OUTCOMES, type Step } from '../../../domain/checkpoint-commands.js';
import type { ProposedEvent } from '../../../domain/event-store.js';
import type { EventNamed } from '../../../domain/events/catalogue.js';
import type { Failure } from '../../../domain/failure.js';
import type { UnitId } from '../../../domain/identity.js';
import type { JobCoordinatorState } from '../../../domain/job-coordinator.js';

/** A version's part on one node, as a whole: removed when pruned, checked when another node asks. */
export type ImageStep = 'prune' | 'images-audit';
export type CheckpointStep = Exclude<Step, RestartStep | ImageStep>;

export type Command<S extends Step> = PendingCommand & { readonly step: S };
/** Every step but commit is for one unit. */
export type UnitCommand<S extends Step> = Command<S> & { readonly unit: UnitId };

export type Done<S extends Step> = EventNamed<(typeof STEP_OUTCOMES)[S][0]>;
export type Failed<S extends Step> = EventNamed<(typeof STEP_OUTCOMES)[S][1]>;
export type Outcome<S extends Step> = Done<S> | Failed<S>;

/** Which command an outcome answers: checkpoint version or restart number, unit, node. */
type StepIdentity = 'version' | 'restart' | 'unit' | 'node' | 'request';
/** What a step found or did: its done event's data beyond the command's identity. */
export type Facts<S extends Step> = Omit<Done<S>['data'], StepIdentity>;

/** The job as last folded: it moves on while a step runs (a step rechecks what it must). */
export interface JobView {
  readonly state: JobCoordinatorState;
  readonly commands: CheckpointCommands;
}

/** The job a step runs for, and what a failure must undo before it is recorded. */
export interface StepScene {
  readonly job: string;
  readonly progress: JobView;
  /** Undone locally, last registered first, before the failure is recorded (the log may be the
   *  very thing that fails): e.g. a failed dump thaws its unit and removes its partial images. */
  onFailure(undo: () => Promise<void> | void): void;
  /** Records an event of the step on its way (caused by the command), before its outcome. */
  record(event: ProposedEvent): void;
}

export type StepHandler<S extends Step> = (c: Command<S>, scene: StepScene) => Promise<Done<S>>;
/** Handlers for some steps, each answering its own step's outcome. */
export type StepsOf<K extends Step> = { readonly [S in K]: StepHandler<S> };
/** One handler for every step: a missing one, or one answering another step's outcome, does not compile. */
export type StepTable = StepsOf<Step>;

const identity = (c: PendingCommand) =>
  RESTART_STEPS.has(c.step)
    ? { restart: c.version, unit: c.unit, node: c.node }
    : c.unit
      ? { version: c.version, unit: c.unit, node: c.node }
      : { ...(c.asked !== undefined && { request: c.asked }), version: c.version, node: c.node };

export const done = <S extends Step>(c: Command<S>, facts: Facts<S>): Done<S> => ({ type: STEP_OUTCOMES[c.step][0], data: { ...identity(c), ...facts } }) as Done<S>;

export const failed = <S extends Step>(c: Command<S>, reason: string, failure: Failure): Failed<S> => ({ type: STEP_OUTCOMES[c.step][1], data: { ...identity(c), reason, failure } }) as Failed<S>;

/** The unit a unit step is for (the fold of the log gives every one but commit a unit). */
export const forUnit = <S extends Step>(c: Command<S>): UnitCommand<S> => {
  if (c.unit === undefined) throw new Error(`${c.key}: a ${c.step} step names no unit`);
  return c as UnitCommand<S>;
};

/** The handler of a step; a step this agent does not know (a newer coordinator's) is refused, saying so. */
export const handlerFor = <S extends Step>(table: StepTable, step: S): StepHandler<S> => {
  const handler = Object.hasOwn(table, step) ? table[step] : undefined;
  if (typeof handler !== 'function') {
    throw new Error(`no handler for step '${step}': this node agent knows ${Object.keys(table).join(', ')}; upgrade the agent to the version of the coordinator that asked for it`);
  }
  return handler;
};
