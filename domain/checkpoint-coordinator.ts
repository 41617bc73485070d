// The CheckpointCoordinator: a decider. Its state is a fold of a job's stream and of the node
// streams (checkpointer probes); `decideCheckpoint(state, event)` says what must happen next,
// as events. Same history in, same decisions out: `ckpt verify` re-derives each recorded
// decision from the history up to the position it was decided on.
//
//   CheckpointRequested → CheckpointPlanned (+ deadline) → UnitFreezeRequested (every unit)
//   all frozen → UnitDumpRequested → all dumped → UnitVerifyRequested → all verified →
//   CheckpointCommitRequested → every node holding units NodeCommitted → CheckpointCommitted → UnitThawRequested (or UnitStopRequested, --stop)
//   → all done → CheckpointCompleted. Any failure, or the deadline → CheckpointAbortRequested →
//   UnitAbortRequested (thaw, delete partial images) → all aborted → CheckpointAborted.

import type { Decider } from './decider.js';
import type { ProposedEvent, RecordedEvent } from './event-store.js';
import type { CheckpointOptions, NodeManifest, PlannedUnit } from './events/checkpoint.js';
import type { Capabilities } from './events/node.js';
import type { Failure } from './failure.js';
import { scopeCoverage } from './grouping.js';
import type { CheckpointScope, NodeId, UnitId } from './identity.js';
import { evolveLiveMembership, initialMembership, type JobMembership, runningMembers } from './membership.js';
import { authorize, reject, rejectExpired, requestDeadline } from './requests.js';

export interface NodeCheckpointer {
  readonly checkpointer: string;
  readonly usable: boolean;
  readonly problems: readonly string[];
  readonly capabilities: Capabilities;
}

type UnitPhase = 'freezing' | 'frozen' | 'dumping' | 'dumped' | 'verifying' | 'verified' | 'finishing' | 'finished' | 'aborting' | 'aborted';

export interface ActiveCheckpoint {
  readonly version: number;
  readonly request: string;
  readonly stop: boolean;
  /** What the plan fixed (the job's options or the request's): the dump and the restart use them. */
  readonly options: CheckpointOptions;
  /** From the request: how long each unit may take to freeze (absent: the node's default). */
  readonly freezeBudgetMs?: number;
  readonly deadline: string;
  readonly phase: 'running' | 'committing' | 'finishing' | 'aborting';
  readonly units: Readonly<Record<UnitId, { readonly node: NodeId; readonly phase: UnitPhase }>>;
  readonly reason?: string;
  /** The failing step's class, message and hint, when its outcome carried one. */
  readonly failure?: Failure;
  /** The event (a failure, the deadline) that ended the checkpoint: the one the abort answers. */
  readonly abortCause?: string;
  /** What each node committed of its units (NodeCommitted), while committing. */
  readonly committed?: Readonly<Record<NodeId, NodeManifest & { readonly durationMs: number }>>;
}

export interface CheckpointState {
  readonly job: JobMembership;
  readonly nodes: Readonly<Record<NodeId, NodeCheckpointer>>;
  readonly lastVersion: number;
  readonly lastCommitted: number | null;
  /** Options of every checkpoint of the job (ckpt run --tcp-established, --file-locks). */
  readonly jobOptions: CheckpointOptions;
  /** Requests not planned yet: whether each asked to stop the job afterwards, its own options and freeze budget. */
  readonly requests: Readonly<Record<string, { readonly stop: boolean; readonly options: CheckpointOptions; readonly freezeBudgetMs?: number }>>;
  readonly active?: ActiveCheckpoint;
  /** A restart in progress (its number): no checkpoint meanwhile. */
  readonly restarting?: number;
}

export const noOptions: CheckpointOptions = { tcpEstablished: false, fileLocks: false };

export const initialCheckpointState = (job: string): CheckpointState => ({ job: initialMembership(job), nodes: {}, lastVersion: 0, lastCommitted: null, jobOptions: noOptions, requests: {} });

/** The options a plan fixes: each one on when the job or the request asks for it. */
export const effectiveOptions = (job: CheckpointOptions, request: CheckpointOptions): CheckpointOptions => ({
  tcpEstablished: job.tcpEstablished || request.tcpEstablished,
  fileLocks: job.fileLocks || request.fileLocks,
});

/** Recorded in a plan only when one is on: plans from before options existed re-derive unchanged. */
export const anyOption = (o: CheckpointOptions): boolean => o.tcpEstablished || o.fileLocks;

const setUnit = (a: ActiveCheckpoint, unit: UnitId, phase: UnitPhase): ActiveCheckpoint => (a.units[unit] ? { ...a, units: { ...a.units, [unit]: { ...a.units[unit]!, phase } } } : a);

/**
 * A step moves a unit forward only while the checkpoint is in the phase that step belongs to:
 * decisions and outcomes may land after an abort was decided (racing writers), and must not
 * undo it. Outcomes of another version are ignored.
 */
const step = (a: ActiveCheckpoint | undefined, e: { data: { version: number; unit: UnitId } }, during: ActiveCheckpoint['phase'], phase: UnitPhase) =>
  a && a.version === e.data.version && a.phase === during ? setUnit(a, e.data.unit, phase) : a;

/** Which events belong to this decider: its job's stream and every node stream. */
export const concernsCheckpoint = (job: string, e: RecordedEvent): boolean => e.stream === `job-${job}` || e.stream.startsWith('node-');

export const evolveCheckpoint = (s: CheckpointState, e: RecordedEvent): CheckpointState => {
  if (e.type === 'CheckpointerProbed') {
    const { node, checkpointer, usable, problems, capabilities } = e.data;
    return { ...s, nodes: { ...s.nodes, [node]: { checkpointer, usable, problems, capabilities } } };
  }
  if (!e.stream.startsWith('job-')) return s;
  const job = evolveLiveMembership(s.job, e);
  const a = s.active;
  switch (e.type) {
    case 'CheckpointPlanned':
      return {
        ...s,
        job,
        requests: without(s.requests, e.data.request),
        lastVersion: e.data.version,
        active: {
          version: e.data.version,
          request: e.data.request,
          stop: s.requests[e.data.request]?.stop ?? false,
          options: e.data.options ?? noOptions,
          ...(s.requests[e.data.request]?.freezeBudgetMs !== undefined && { freezeBudgetMs: s.requests[e.data.request]!.freezeBudgetMs }),
          deadline: '',
          phase: 'running',
          units: Object.fromEntries(e.data.units.map((u) => [u.unit, { node: u.node, phase: 'freezing' as UnitPhase }])),
        },
      };
    case 'DeadlineScheduled':
      return a && e.data.deadline === deadlineId(a.version) ? { ...s, job, active: { ...a, deadline: e.data.at } } : { ...s, job };
    case 'JobSubmitted':
      return { ...s, job, jobOptions: { tcpEstablished: e.data.options?.tcpEstablished ?? false, fileLocks: e.data.options?.fileLocks ?? false } };
    case 'CheckpointRequested': {
      const options = { tcpEstablished: e.data.options?.tcpEstablished ?? false, fileLocks: e.data.options?.fileLocks ?? false };
      const budget = e.data.freezeBudgetMs !== undefined ? { freezeBudgetMs: e.data.freezeBudgetMs } : {};
      return { ...s, job, requests: { ...s.requests, [e.data.request]: { stop: e.data.stop, options, ...budget } } };
    }
    case 'RestartPlanned':
      return { ...s, job, restarting: e.data.restart };
    case 'RestartCommitted':
    case 'RestartFailed':
      return { ...s, job, restarting: undefined };
    case 'RequestRejected':
      return e.data.command === 'checkpoint' ? { ...s, job, requests: without(s.requests, e.data.request) } : { ...s, job };
    case 'UnitFrozen':
      return { ...s, job, active: step(a, e, 'running', 'frozen') };
    case 'UnitDumpRequested':
      return { ...s, job, active: step(a, e, 'running', 'dumping') };
    case 'UnitDumped':
      return { ...s, job, active: step(a, e, 'running', 'dumped') };
    case 'UnitVerifyRequested':
      return { ...s, job, active: step(a, e, 'running', 'verifying') };
    case 'UnitVerified':
      return { ...s, job, active: step(a, e, 'running', 'verified') };
    case 'CheckpointCommitRequested':
      return { ...s, job, active: a?.version === e.data.version && a.phase === 'running' ? { ...a, phase: 'committing' } : a };
    case 'NodeCommitted': {
      if (a?.version !== e.data.version || a.phase !== 'committing') return { ...s, job };
      const { node, units, files, bytes, manifest, durationMs } = e.data;
      return { ...s, job, active: { ...a, committed: { ...a.committed, [node]: { units, files, bytes, manifest, durationMs } } } };
    }
    case 'CheckpointCommitted':
      return a?.version === e.data.version && a.phase === 'committing' ? { ...s, job, lastCommitted: e.data.version, active: { ...a, phase: 'finishing' } } : { ...s, job };
    case 'UnitThawRequested':
    case 'UnitStopRequested':
      return { ...s, job, active: step(a, e, 'finishing', 'finishing') };
    case 'UnitThawed':
    case 'UnitStopped':
    case 'UnitThawFailed': // the version is committed either way; the failure is on record
    case 'UnitStopFailed':
      return { ...s, job, active: step(a, e, 'finishing', 'finished') };
    case 'UnitFreezeFailed':
    case 'UnitDumpFailed':
    case 'UnitVerifyFailed':
    case 'CheckpointCommitFailed':
    case 'DeadlineReached': {
      // The first failure (or the deadline) ends the checkpoint at once, in the fold itself: a second
      // failure landing before the abort decision must not decide a second abort.
      const ends = a && (a.phase === 'running' || a.phase === 'committing') && (e.type === 'DeadlineReached' ? e.data.deadline === deadlineId(a.version) : e.data.version === a.version);
      return ends ? { ...s, job, active: { ...a, phase: 'aborting', reason: endReason(a, e), ...withFailure(e), abortCause: e.id } } : { ...s, job };
    }
    case 'CheckpointAbortRequested':
      return { ...s, job, active: a?.version === e.data.version ? { ...a, phase: 'aborting', reason: e.data.reason, ...withFailure(e) } : a };
    case 'UnitAbortRequested':
      return { ...s, job, active: step(a, e, 'aborting', 'aborting') };
    case 'UnitAborted':
    case 'UnitAbortFailed':
      return { ...s, job, active: step(a, e, 'aborting', 'aborted') };
    case 'CheckpointCompleted':
    case 'CheckpointAborted':
      return { ...s, job, active: undefined };
    default:
      return { ...s, job };
  }
};

const without = <V>(r: Readonly<Record<string, V>>, key: string): Record<string, V> => {
  const { [key]: _, ...rest } = r;
  return rest;
};

const endReason = (a: ActiveCheckpoint, e: RecordedEvent): string =>
  e.type === 'DeadlineReached'
    ? `the deadline ${a.deadline} passed before every unit answered`
    : `${e.type}${'unit' in e.data ? ` on unit ${e.data.unit}` : ''}: ${(e.data as { reason: string }).reason}`;

/** The failure an outcome carried (recorded before failures existed: none, so old decisions re-derive the same). */
export const withFailure = (e: RecordedEvent): { failure?: Failure } => {
  const failure = (e.data as { failure?: Failure }).failure;
  return failure ? { failure } : {};
};

export const deadlineId = (version: number): string => `checkpoint-v${version}`;

/**
 * How each unit is captured: the unit's cgroup is frozen (so nothing forks or exits meanwhile)
 * and every subtree is dumped; without a cgroup freezer, a tree dump only if the tree misses
 * nothing. Processes outside the unit's cgroup (dependents, moved processes) cannot be frozen
 * with it: the plan refuses rather than take a silently partial checkpoint.
 */
export const planUnits = (s: CheckpointState, version: number): { units: PlannedUnit[] } | { refused: string } => {
  const units: PlannedUnit[] = [];
  for (const unit of Object.values(s.job.units)) {
    const node = s.nodes[unit.node];
    if (!node) return { refused: `node ${unit.node} has not reported a checkpointer yet (is its agent running?)` };
    if (!node.usable) return { refused: `the checkpointer on ${unit.node} cannot be used: ${node.problems.join('; ')}` };
    const scopes: CheckpointScope[] = node.capabilities.freezeCgroup && node.capabilities.scopes.includes('cgroup') ? ['cgroup'] : ['tree'];
    const scope = scopes[0]!;
    const coverage = scopeCoverage(s.job, unit.unit, scope);
    if (coverage.missed.length > 0) {
      const misses = coverage.missed.map((m) => `${m.member.pid} ${m.member.comm}: ${m.why}`).join('; ');
      return { refused: `unit ${unit.unit}: a ${scope} checkpoint would miss ${coverage.missed.length} process(es) — ${misses}` };
    }
    if (coverage.captured.length === 0) return { refused: `unit ${unit.unit} has no running process` };
    units.push({
      unit: unit.unit,
      node: unit.node,
      checkpointer: node.checkpointer,
      scope,
      strategy: scope === 'cgroup' ? 'freeze the unit cgroup, dump each subtree' : 'dump the process tree',
      targets: coverage.captured.map((m) => ({ pid: m.pid, startTime: m.startTime })),
      images: `${s.job.job}/v${version}/${unit.unit}`,
    });
  }
  return units.length > 0 ? { units } : { refused: 'the job has no units' };
};

const everyUnit = (a: ActiveCheckpoint, phase: UnitPhase) => Object.values(a.units).every((u) => u.phase === phase);
const eachUnit = (a: ActiveCheckpoint, make: (unit: UnitId, node: NodeId) => ProposedEvent) => Object.entries(a.units).map(([unit, u]) => make(unit, u.node));

/**
 * The version is committed once every node holding units has committed them. Nodes sharing the
 * images' filesystem report the one manifest they share: it is counted once.
 */
const committedEverywhere = (a: ActiveCheckpoint): ProposedEvent[] => {
  const nodes = [...new Set(Object.values(a.units).map((u) => u.node))];
  const committed = a.committed ?? {};
  if (!nodes.every((n) => committed[n])) return [];
  const manifests = [...new Map(nodes.map((n) => [committed[n]!.manifest, committed[n]!])).values()];
  return [
    {
      type: 'CheckpointCommitted',
      data: {
        version: a.version,
        files: manifests.reduce((sum, m) => sum + m.files, 0),
        bytes: manifests.reduce((sum, m) => sum + m.bytes, 0),
        // The nodes commit side by side: the commit took as long as the slowest.
        durationMs: Math.max(...nodes.map((n) => committed[n]!.durationMs)),
        ...(manifests.length === 1 && { manifest: manifests[0]!.manifest }),
        nodes: Object.fromEntries(nodes.map((n) => [n, { units: committed[n]!.units, files: committed[n]!.files, bytes: committed[n]!.bytes, manifest: committed[n]!.manifest }])),
      },
    },
  ];
};

const abort = (a: ActiveCheckpoint, reason: string): ProposedEvent[] => [
  { type: 'CheckpointAbortRequested', data: { version: a.version, reason, ...(a.failure && { failure: a.failure }) } },
  ...eachUnit(a, (unit, node) => ({ type: 'UnitAbortRequested', data: { version: a.version, unit, node } })),
];

/** What must happen after `event`, given the state folded up to and including it. */
export const decideCheckpoint = (s: CheckpointState, event: RecordedEvent): ProposedEvent[] => {
  const a = s.active;
  switch (event.type) {
    case 'CheckpointRequested': {
      const { request } = event.data;
      const refused = authorize(s.job, event, 'checkpoint');
      if (refused) return reject(request, 'checkpoint', 'unauthorized', refused);
      if (a) return reject(request, 'checkpoint', 'busy', `checkpoint v${a.version} of ${s.job.job} is still in progress`);
      if (s.restarting !== undefined) return reject(request, 'checkpoint', 'busy', `restart r${s.restarting} of ${s.job.job} is in progress`);
      // Requests are planned one at a time, in log order: a second one before the first's plan
      // would otherwise be planned as the same version.
      const earlier = Object.keys(s.requests).find((r) => r !== request);
      if (earlier) return reject(request, 'checkpoint', 'busy', `checkpoint request ${earlier} of ${s.job.job} is being planned`);
      if (s.job.phase !== 'running' || runningMembers(s.job).length === 0) return reject(request, 'checkpoint', 'invalid', `job ${s.job.job} has no running processes to checkpoint`);
      const version = s.lastVersion + 1;
      const options = effectiveOptions(s.jobOptions, s.requests[request]?.options ?? noOptions);
      // Whether the node can honour them is judged by the agent before the freeze, against what
      // the unit holds then (domain/preflight.ts): an option with nothing to take refuses nothing.
      const plan = planUnits(s, version);
      if ('refused' in plan) return reject(request, 'checkpoint', 'unsupported', plan.refused);
      return [
        { type: 'CheckpointPlanned', data: { version, request, parent: s.lastCommitted, units: plan.units, ...(anyOption(options) && { options }) } },
        { type: 'DeadlineScheduled', data: { deadline: deadlineId(version), at: requestDeadline(event), purpose: `checkpoint v${version} of ${s.job.job}` } },
        ...plan.units.map((u): ProposedEvent => ({ type: 'UnitFreezeRequested', data: { version, unit: u.unit, node: u.node } })),
      ];
    }
    case 'UnitFrozen':
      return a?.phase === 'running' && everyUnit(a, 'frozen') ? eachUnit(a, (unit, node) => ({ type: 'UnitDumpRequested', data: { version: a.version, unit, node } })) : [];
    case 'UnitDumped':
      return a?.phase === 'running' && everyUnit(a, 'dumped') ? eachUnit(a, (unit, node) => ({ type: 'UnitVerifyRequested', data: { version: a.version, unit, node } })) : [];
    case 'UnitVerified':
      return a?.phase === 'running' && everyUnit(a, 'verified') ? [{ type: 'CheckpointCommitRequested', data: { version: a.version } }] : [];
    case 'NodeCommitted':
      return a?.phase === 'committing' && event.data.version === a.version ? committedEverywhere(a) : [];
    case 'CheckpointCommitted': {
      if (a?.phase !== 'finishing') return [];
      return eachUnit(a, (unit, node) => ({ type: a.stop ? 'UnitStopRequested' : 'UnitThawRequested', data: { version: a.version, unit, node } }) as ProposedEvent);
    }
    case 'UnitThawed':
    case 'UnitStopped':
    case 'UnitThawFailed':
    case 'UnitStopFailed':
      if (a?.phase !== 'finishing' || !everyUnit(a, 'finished')) return [];
      return [
        { type: 'CheckpointCompleted', data: { version: a.version, outcome: a.stop ? 'stopped' : 'thawed' } },
        { type: 'DeadlineCancelled', data: { deadline: deadlineId(a.version), reason: 'completed' } },
      ];
    case 'UnitFreezeFailed':
    case 'UnitDumpFailed':
    case 'UnitVerifyFailed':
    case 'CheckpointCommitFailed':
    case 'DeadlineReached':
      return a?.abortCause === event.id ? abort(a, a.reason ?? 'aborted') : [];
    case 'RequestExpired':
      return event.data.command === 'checkpoint' && s.requests[event.data.request] ? rejectExpired(event.data.request, 'checkpoint', event.data.deadline) : [];
    case 'UnitAborted':
    case 'UnitAbortFailed':
      if (a?.phase !== 'aborting' || !everyUnit(a, 'aborted')) return [];
      return [
        { type: 'CheckpointAborted', data: { version: a.version, reason: a.reason ?? 'aborted', ...(a.failure && { failure: a.failure }) } },
        { type: 'DeadlineCancelled', data: { deadline: deadlineId(a.version), reason: 'aborted' } },
      ];
    default:
      return [];
  }
};

/** The coordinator of one job as a Decider: what the runtime runs and `ckpt verify` re-derives. */
export const checkpointDecider = (job: string): Decider<CheckpointState> => ({
  initial: initialCheckpointState(job),
  evolve: evolveCheckpoint,
  decide: decideCheckpoint,
  concerns: (e) => concernsCheckpoint(job, e),
});
