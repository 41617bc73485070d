// The audit trail of a job: every checkpoint, restart and prune request, who asked, when, what
// came of it, and which processes the job had at that moment — one pass over its stream.
import type { RecordedEvent } from '../domain/event-store.js';
import type { Actor } from '../domain/identity.js';
import { classify, evolveMembership, initialMembership, runningMembers } from '../domain/membership.js';
import { foldCheckpoints, type CheckpointSummary } from './checkpoints.js';
import { foldRestarts, type RestartSummary } from './restarts.js';

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
      readonly pruned: ReadonlyArray<{ readonly version: number; readonly bytes: number }>;
    };

export const foldAudit = (job: string, events: readonly RecordedEvent[]): AuditEntry[] => {
  let membership = initialMembership(job);
  const at = new Map<string, MemberAtRequest[]>();
  const prunes = new Map<string, Extract<AuditEntry, { kind: 'prune' }> & { pruned: Array<{ version: number; bytes: number }> }>();
  /** CheckpointPruned is caused by (causationId) the PruneRequested event. */
  const pruneByEvent = new Map<string, string>();
  for (const e of events) {
    membership = evolveMembership(membership, e);
    if (e.type === 'CheckpointRequested' || e.type === 'RestartRequested') {
      at.set(e.data.request, runningMembers(membership).map((m) => ({ unit: m.unit, node: m.node, pid: m.pid, startTime: m.startTime, comm: m.comm, reason: classify(membership, m).reason })));
    } else if (e.type === 'PruneRequested') {
      pruneByEvent.set(e.id, e.data.request);
      prunes.set(e.data.request, { kind: 'prune', request: e.data.request, requestedBy: e.metadata.actor, requestedAt: e.metadata.recordedAt, keep: e.data.keep, outcome: 'pruned', reason: null, pruned: [] });
    } else if (e.type === 'RequestRejected' && e.data.command === 'prune') {
      const p = prunes.get(e.data.request);
      if (p) prunes.set(e.data.request, { ...p, outcome: 'rejected', reason: e.data.reason });
    } else if (e.type === 'CheckpointPruned') {
      const request = e.metadata.causationId === undefined ? undefined : pruneByEvent.get(e.metadata.causationId);
      if (request) prunes.get(request)?.pruned.push({ version: e.data.version, bytes: e.data.bytes });
    }
  }
  const entries: AuditEntry[] = [
    ...foldCheckpoints(events).map((c) => ({ kind: 'checkpoint' as const, ...c, membership: at.get(c.request) ?? [] })),
    ...foldRestarts(events).map((r) => ({ kind: 'restart' as const, ...r, membership: at.get(r.request) ?? [] })),
    ...prunes.values(),
  ];
  return entries.sort((a, b) => a.requestedAt.localeCompare(b.requestedAt));
};
