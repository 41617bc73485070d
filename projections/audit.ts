// The audit trail of a job: every checkpoint, restart and prune request, who asked, when, what
// came of it, and which processes the job had at that moment — one pass over its stream.
import type { RecordedEvent } from '../domain/event-store.js';
import type { Actor } from '../domain/identity.js';
import { jobStream, processKey } from '../domain/identity.js';
import { classify, evolveMembership, initialMembership, type JobMembership, runningMembers } from '../domain/membership.js';
import { removeIn, valuesOf } from '../domain/persistent-map.js';
import { type CheckpointSummary, type CheckpointsState, checkpointSummaries, checkpointsModel, evolveCheckpoints, initialCheckpoints } from './checkpoints.js';
import { decodeMembership, encodeMembership } from './jobs.js';
import type { ReadModel } from './read-model.js';
import { evolveRestarts, initialRestarts, type RestartSummary, type RestartsState, restartsModel } from './restarts.js';

export interface MemberAtRequest {
  readonly unit: string;
  readonly node: string;
  readonly pid: number;
  readonly startTime: number;
  readonly comm: string;
  readonly reason: string;
}

export type AuditEntry =
  | ({ readonly kind: 'checkpoint'; readonly membership: readonly MemberAtRequest[] } & CheckpointSummary)
  | ({ readonly kind: 'restart'; readonly membership: readonly MemberAtRequest[] } & RestartSummary)
  | {
      readonly kind: 'prune';
      readonly request: string;
      readonly requestedBy?: Actor;
      readonly requestedAt: string;
      readonly keep: number;
      readonly outcome: 'pruned' | 'rejected';
      readonly reason: string | null;
      /** nodes: bytes each node removed (prunes decided per node; absent before). */
      readonly pruned: ReadonlyArray<{ readonly version: number; readonly bytes: number; readonly nodes?: Readonly<Record<string, number>> }>;
    };

type Prune = Extract<AuditEntry, { kind: 'prune' }>;

/** The fold's state: the job's membership (for who ran at each request), its checkpoints, restarts and prunes. */
export interface AuditState {
  /**
   * The members that run, and those that ran while a checkpoint was taken (a restart links its
   * restored processes to them); the others are forgotten when they end, so the audit grows with
   * what runs and what was checkpointed, not with every process the job ever had.
   */
  readonly membership: JobMembership;
  readonly checkpointed: Readonly<Record<string, true>>;
  readonly checkpoints: CheckpointsState;
  readonly restarts: RestartsState;
  /** Running members when each checkpoint or restart was requested. */
  readonly at: Readonly<Record<string, readonly MemberAtRequest[]>>;
  readonly prunes: readonly Prune[];
  /** CheckpointPruned is caused by (causationId) the PruneRequested event: event id → request. */
  readonly pruneByEvent: Readonly<Record<string, string>>;
}

export const initialAudit = (job: string): AuditState => ({
  membership: initialMembership(job),
  checkpointed: {},
  checkpoints: initialCheckpoints,
  restarts: initialRestarts,
  at: {},
  prunes: [],
  pruneByEvent: {},
});

const withPrune = (s: AuditState, request: string | undefined, change: (p: Prune) => Prune): AuditState => {
  const index = request === undefined ? -1 : s.prunes.findIndex((p) => p.request === request);
  if (index < 0) return s;
  const prunes = s.prunes.slice();
  prunes[index] = change(prunes[index]!);
  return { ...s, prunes };
};

/** Whom a checkpoint can hold: the members running from its plan to its dump. */
const CHECKPOINTING = new Set(['CheckpointPlanned', 'UnitFrozen', 'UnitDumped']);

const remembered = (s: AuditState, e: RecordedEvent): Pick<AuditState, 'membership' | 'checkpointed'> => {
  let { checkpointed } = s;
  if (e.type === 'ProcessExited' || e.type === 'ProcessVanished') {
    const key = processKey(e.data.node, e.data.process);
    // What the membership fold would mark ended, and this one forgets at once.
    if (!checkpointed[key]) return { membership: { ...s.membership, members: removeIn(s.membership.members, key), position: e.position }, checkpointed };
  }
  const membership = evolveMembership(s.membership, e);
  if (CHECKPOINTING.has(e.type)) {
    const running = [...valuesOf(membership.members)].filter((m) => m.state === 'running' && !checkpointed[m.key]);
    if (running.length > 0) checkpointed = { ...checkpointed, ...Object.fromEntries(running.map((m) => [m.key, true] as const)) };
  }
  return { membership, checkpointed };
};

export const evolveAudit = (s: AuditState, e: RecordedEvent): AuditState => {
  const { membership, checkpointed } = remembered(s, e);
  const checkpoints = evolveCheckpoints(s.checkpoints, e);
  const restarts = evolveRestarts(s.restarts, e);
  const next = { ...s, membership, checkpointed, checkpoints, restarts };
  switch (e.type) {
    case 'CheckpointRequested':
    case 'RestartRequested': {
      const running = runningMembers(membership).map((m) => ({ unit: m.unit, node: m.node, pid: m.pid, startTime: m.startTime, comm: m.comm, reason: classify(membership, m).reason }));
      return { ...next, at: { ...s.at, [e.data.request]: running } };
    }
    case 'PruneRequested': {
      const prune: Prune = {
        kind: 'prune',
        request: e.data.request,
        requestedBy: e.metadata.actor,
        requestedAt: e.metadata.recordedAt,
        keep: e.data.keep,
        outcome: 'pruned',
        reason: null,
        pruned: [],
      };
      const known = s.prunes.some((p) => p.request === e.data.request);
      return withPrune({ ...next, pruneByEvent: { ...s.pruneByEvent, [e.id]: e.data.request }, prunes: known ? s.prunes : [...s.prunes, prune] }, e.data.request, () => prune);
    }
    case 'RequestRejected':
      return e.data.command === 'prune' ? withPrune(next, e.data.request, (p) => ({ ...p, outcome: 'rejected', reason: e.data.reason })) : next;
    case 'PrunePlanned':
      return withPrune(next, e.data.request, (p) => ({ ...p, pruned: e.data.versions.map((version) => ({ version, bytes: 0, nodes: {} })) }));
    case 'CheckpointPruned': {
      const { version, bytes, node } = e.data;
      if (node !== undefined) {
        // A node's part of a version the coordinator decided to prune (PrunePlanned).
        const request = [...s.prunes].reverse().find((p) => p.pruned.some((v) => v.version === version && v.nodes))?.request;
        return withPrune(next, request, (p) => ({ ...p, pruned: p.pruned.map((v) => (v.version === version ? { ...v, bytes: v.bytes + bytes, nodes: { ...v.nodes, [node]: bytes } } : v)) }));
      }
      const request = e.metadata.causationId === undefined ? undefined : s.pruneByEvent[e.metadata.causationId];
      return withPrune(next, request, (p) => ({ ...p, pruned: [...p.pruned, { version, bytes }] }));
    }
    default:
      return next;
  }
};

/** The audit trail of the state: every request, by when it was made. */
export const auditEntries = (s: AuditState): AuditEntry[] => {
  const entries: AuditEntry[] = [
    ...checkpointSummaries(s.checkpoints).map((c) => ({ kind: 'checkpoint' as const, ...c, membership: s.at[c.request] ?? [] })),
    ...s.restarts.list.map((r) => ({ kind: 'restart' as const, ...r, membership: s.at[r.request] ?? [] })),
    ...s.prunes,
  ];
  return entries.sort((a, b) => a.requestedAt.localeCompare(b.requestedAt));
};

export const foldAudit = (job: string, events: readonly RecordedEvent[]): AuditEntry[] => auditEntries(events.reduce(evolveAudit, initialAudit(job)));

/** A job's audit trail as a read model of its stream, kept as a snapshot (with the part of the membership it needs). */
export const auditModel: ReadModel<AuditState> = {
  name: 'audit',
  version: 4,
  stream: jobStream,
  initial: initialAudit,
  evolve: evolveAudit,
  encode: (s) => ({ ...s, membership: encodeMembership(s.membership), checkpoints: checkpointsModel.encode(s.checkpoints), restarts: restartsModel.encode(s.restarts) }),
  decode: (encoded, job) => {
    const s = encoded as AuditState;
    if (typeof s?.at !== 'object' || !Array.isArray(s.prunes) || typeof s.pruneByEvent !== 'object' || typeof s.checkpointed !== 'object')
      throw new Error('audit: at, prunes, pruneByEvent or checkpointed missing');
    return { ...s, membership: decodeMembership(s.membership), checkpoints: checkpointsModel.decode(s.checkpoints, job), restarts: restartsModel.decode(s.restarts, job) };
  },
};
