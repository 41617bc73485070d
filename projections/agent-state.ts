// What a node agent knows of the log, as one pure fold of all of it: each job's coordinator state
// (its live membership included), the commands its checkpoints and restarts gave, the causes whose
// decisions are not recorded yet, every node's checkpointer, and the deadlines still pending.
// Nothing in it depends on which node folds it, so every agent of a store folds the same state and
// one snapshot (model `agent`) serves them all: an agent starts from it and folds only what came
// after, instead of the whole history. The agent's runtime (coordinator-host, job-work) acts on it.
// A job that ended and has nothing under way (no checkpoint, restart, request, command or decision
// pending) leaves the state: it costs nothing however many jobs the log holds. Should its stream
// get another event (a restart, a prune, a late request), the job is folded again from its stream
// first (`settledJob`, `withJobHistory`): the state it left with, exactly.

import { type CheckpointCommands, evolveCommands, noCommands } from '../domain/checkpoint-commands.js';
import { evolveCheckpoint, initialCheckpointState, type NodeCheckpointer } from '../domain/checkpoint-coordinator.js';
import { type Deadlines, deadlineKey, evolveDeadlines, noDeadlines, type PendingDeadline } from '../domain/deadlines.js';
import type { ProposedEvent, RecordedEvent } from '../domain/event-store.js';
import { jobOfStream, type NodeId } from '../domain/identity.js';
import { decideJobCoordinator, evolveJobCoordinator, initialJobCoordinator, type JobCoordinatorState } from '../domain/job-coordinator.js';
import { emptyMap, entriesOf, getIn, mapOf, type PersistentMap, removeIn, setIn, valuesOf } from '../domain/persistent-map.js';
import { decodeMembership, encodeMembership } from './jobs.js';
import type { ReadModel } from './read-model.js';

/** A cause whose decisions are not yet recorded, with what the coordinator decided on it. */
export interface Undecided {
  readonly cause: RecordedEvent;
  readonly decisions: readonly ProposedEvent[];
}

/** One job as its coordinator sees it. */
export interface JobProgress {
  readonly state: JobCoordinatorState;
  readonly commands: CheckpointCommands;
  /** Revision of the last event of the job stream folded. */
  readonly revision: number;
  /** Causes whose decisions are not in the log yet, in log order. */
  readonly undecided: readonly Undecided[];
}

export interface AgentState {
  readonly jobs: PersistentMap<JobProgress>;
  /** The latest probe of every node's checkpointer, for jobs submitted later. */
  readonly nodes: Readonly<Record<NodeId, NodeCheckpointer>>;
  readonly deadlines: Deadlines;
}

export const initialAgentState: AgentState = { jobs: emptyMap(), nodes: {}, deadlines: noDeadlines };

type RequestEvent = RecordedEvent & { type: 'CheckpointRequested' | 'RestartRequested'; data: { request: string } };
export const isRequest = (e: RecordedEvent): e is RequestEvent => e.type === 'CheckpointRequested' || e.type === 'RestartRequested';

const newJob = (job: string, nodes: AgentState['nodes']): JobProgress => {
  const fresh = initialJobCoordinator(job);
  return { state: { ...fresh, checkpoint: { ...fresh.checkpoint, nodes } }, commands: noCommands, revision: -1, undecided: [] };
};

/** An event of the job's stream: the coordinator folds it and decides on it. */
export const evolveJobProgress = (w: JobProgress, e: RecordedEvent): JobProgress => {
  const state = evolveJobCoordinator(w.state, e);
  let undecided = w.undecided;
  const decided = e.metadata.decidedAt !== undefined ? e.metadata.causationId : undefined;
  if (decided !== undefined) undecided = undecided.filter((u) => u.cause.id !== decided);
  // An expired request is never planned: its refusal is decided from the RequestExpired instead.
  if (e.type === 'RequestExpired') undecided = undecided.filter((u) => !isRequest(u.cause) || u.cause.data.request !== e.data.request);
  const decisions = decideJobCoordinator(state, e);
  if (decisions.length > 0) undecided = [...undecided, { cause: e, decisions }];
  return { state, commands: evolveCommands(w.commands, e), revision: e.revision, undecided };
};

export const evolveAgentState = (s: AgentState, e: RecordedEvent): AgentState => {
  const deadlines = evolveDeadlines(s.deadlines, e);
  if (e.type === 'CheckpointerProbed') {
    // What a node's checkpointer can do changes what every job's coordinator may plan.
    let jobs = s.jobs;
    for (const [job, w] of entriesOf(s.jobs)) jobs = setIn(jobs, job, { ...w, state: evolveJobCoordinator(w.state, e) });
    const nodes = evolveCheckpoint({ ...initialCheckpointState(''), nodes: s.nodes }, e).nodes;
    return { jobs, nodes, deadlines };
  }
  const job = jobOfStream(e.stream);
  if (!job) return deadlines === s.deadlines ? s : { ...s, deadlines };
  const w = evolveJobProgress(getIn(s.jobs, job) ?? newJob(job, s.nodes), e);
  return { ...s, deadlines, jobs: isSettled(w) ? removeIn(s.jobs, job) : setIn(s.jobs, job, w) };
};

/** Ended, and nothing of it under way or undecided: nothing can happen to it but a new event of its stream. */
const isSettled = (w: JobProgress): boolean => {
  const { checkpoint, restart } = w.state;
  return (
    checkpoint.job.phase === 'ended' &&
    !checkpoint.active &&
    !restart.active &&
    w.undecided.length === 0 &&
    Object.keys(w.commands.pending).length === 0 &&
    Object.keys(checkpoint.requests).length === 0 &&
    restart.requests.length === 0
  );
};

/** The job whose stream `e` continues although the state let it go when it settled: fold it again first. */
export const settledJob = (s: AgentState, e: RecordedEvent): string | undefined => {
  const job = e.revision > 0 ? jobOfStream(e.stream) : undefined;
  return job !== undefined && getIn(s.jobs, job) === undefined ? job : undefined;
};

/**
 * A settled job back, from its stream's events up to the one that follows them (`settledJob`): as it
 * was when it settled. Nothing was undecided then, so nothing is decided again here.
 */
export const withJobHistory = (s: AgentState, job: string, events: readonly RecordedEvent[]): AgentState => {
  let w = newJob(job, s.nodes);
  for (const e of events) w = { ...w, state: evolveJobCoordinator(w.state, e), commands: evolveCommands(w.commands, e), revision: e.revision };
  return { ...s, jobs: setIn(s.jobs, job, w) };
};

// ── the snapshot's encoding ────────────────────────────────────────────────────────────────────

const encodeJob = ([job, w]: readonly [string, JobProgress]) => {
  const { nodes: _, job: membership, ...checkpoint } = w.state.checkpoint;
  return { job, checkpoint: { ...checkpoint, job: encodeMembership(membership) }, restart: w.state.restart, commands: w.commands, revision: w.revision, undecided: w.undecided };
};

type EncodedJob = ReturnType<typeof encodeJob>;

const decodeJob = (j: EncodedJob, nodes: AgentState['nodes']): readonly [string, JobProgress] => {
  if (typeof j?.job !== 'string' || typeof j.revision !== 'number' || !Array.isArray(j.undecided)) throw new Error('agent: a job without its name, revision or undecided causes');
  const checkpoint = { ...j.checkpoint, nodes, job: decodeMembership(j.checkpoint.job) };
  return [j.job, { state: { checkpoint, restart: j.restart }, commands: j.commands, revision: j.revision, undecided: j.undecided }];
};

/** The agent's state, as a snapshot of the whole log (key ''). */
export const agentModel: ReadModel<AgentState> = {
  name: 'agent',
  version: 5,
  initial: () => initialAgentState,
  evolve: evolveAgentState,
  encode: (s) => ({ nodes: s.nodes, deadlines: [...valuesOf(s.deadlines)], jobs: [...entriesOf(s.jobs)].map(encodeJob) }),
  decode: (encoded) => {
    const e = encoded as { nodes: AgentState['nodes']; deadlines: PendingDeadline[]; jobs: EncodedJob[] };
    if (typeof e?.nodes !== 'object' || !Array.isArray(e.deadlines) || !Array.isArray(e.jobs)) throw new Error('agent: expected nodes, deadlines and jobs');
    return {
      nodes: e.nodes,
      deadlines: mapOf(e.deadlines.map((d) => [deadlineKey(d), d] as const)),
      jobs: mapOf(e.jobs.map((j) => decodeJob(j, e.nodes))),
    };
  },
};
