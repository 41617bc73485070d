// Which committed versions a prune removes is a decision from the log, not from one node's disk:
// all but the newest N committed versions (a version a node found damaged does not count as one of
// them), never one a restart in progress uses. Each node holding
// units of a removed version is asked to remove its own part (ImagesPruneRequested) and answers
// with CheckpointPruned {node}; from the decision on, the version cannot be restarted (the restart
// coordinator forgets it at PrunePlanned), so no version is half removed yet restorable.
import type { ProposedEvent, RecordedEvent } from './event-store.js';
import type { NodeId } from './identity.js';
import type { JobMembership } from './membership.js';
import { authorize, reject } from './requests.js';
import type { RestartState } from './restart-coordinator.js';

export const decidePrune = (s: RestartState, job: JobMembership, event: RecordedEvent): ProposedEvent[] => {
  // A request without a timeout is from before prunes were decided: its agent pruned on its own.
  if (event.type !== 'PruneRequested' || event.data.timeoutMs === undefined) return [];
  const { request, keep } = event.data;
  const refused = authorize(job, event, 'prune');
  if (refused) return reject(request, 'prune', 'unauthorized', refused);
  const newestFirst = Object.keys(s.versions)
    .map(Number)
    .sort((a, b) => b - a);
  // The newest N that are not known damaged are kept (a damaged version cannot be restored, so it
  // never counts as one of them); damaged ones newer than the oldest kept stay, for a look.
  const kept: number[] = [];
  for (let sound = 0, i = 0; sound < keep && i < newestFirst.length; i++) {
    kept.push(newestFirst[i]!);
    if (!s.damaged?.[newestFirst[i]!]) sound++;
  }
  const inUse = s.active?.version;
  if (inUse !== undefined && s.versions[inUse] && !kept.includes(inUse)) kept.push(inUse);
  kept.sort((a, b) => b - a);
  const versions = newestFirst.filter((v) => !kept.includes(v)).reverse();
  return [
    { type: 'PrunePlanned', data: { request, versions, kept: kept.slice().reverse() } },
    ...versions.flatMap((version) => nodesOf(s, version).map((node): ProposedEvent => ({ type: 'ImagesPruneRequested', data: { version, node } }))),
  ];
};

/** The nodes holding units of a committed version, by name. */
export const nodesOf = (s: RestartState, version: number): NodeId[] => [...new Set((s.versions[version] ?? []).map((u) => u.node))].sort();

/** What came of a prune request so far: a pure fold of the job stream after it, for whoever waits. */
export interface PruneProgress {
  readonly request: string;
  readonly refused?: string;
  readonly planned?: { readonly versions: readonly number[]; readonly kept: readonly number[] };
  /** Each version's nodes still to remove their part. */
  readonly waiting: Readonly<Record<number, readonly NodeId[]>>;
  /** Each version's parts removed: bytes per node. */
  readonly removed: Readonly<Record<number, Readonly<Record<NodeId, number>>>>;
  /** Parts a node could not remove, and why. */
  readonly failed: ReadonlyArray<{ readonly version: number; readonly node: NodeId; readonly reason: string }>;
}

export const pruneProgress = (request: string): PruneProgress => ({ request, waiting: {}, removed: {}, failed: [] });

const answered = (p: PruneProgress, version: number, node: NodeId): PruneProgress['waiting'] => ({ ...p.waiting, [version]: (p.waiting[version] ?? []).filter((n) => n !== node) });

export const evolvePruneProgress = (p: PruneProgress, e: RecordedEvent): PruneProgress => {
  switch (e.type) {
    case 'RequestRejected':
      return e.data.command === 'prune' && e.data.request === p.request ? { ...p, refused: e.data.reason } : p;
    case 'PrunePlanned':
      return e.data.request === p.request && !p.planned ? { ...p, planned: { versions: e.data.versions, kept: e.data.kept } } : p;
    case 'ImagesPruneRequested':
      // The decisions of the plan follow it in the same append.
      return p.planned?.versions.includes(e.data.version) ? { ...p, waiting: { ...p.waiting, [e.data.version]: [...(p.waiting[e.data.version] ?? []), e.data.node] } } : p;
    case 'CheckpointPruned': {
      const { version, node, bytes } = e.data;
      if (node === undefined || !p.waiting[version]?.includes(node)) return p;
      return { ...p, waiting: answered(p, version, node), removed: { ...p.removed, [version]: { ...p.removed[version], [node]: bytes } } };
    }
    case 'ImagesPruneFailed': {
      const { version, node, reason } = e.data;
      if (!p.waiting[version]?.includes(node)) return p;
      return { ...p, waiting: answered(p, version, node), failed: [...p.failed, { version, node, reason }] };
    }
    default:
      return p;
  }
};

/** Decided, and every node answered (or it was refused). */
export const pruneSettled = (p: PruneProgress): boolean =>
  p.refused !== undefined ||
  // Every pruned version has a node to ask (its units'): settled once each was asked and answered.
  (p.planned?.versions.every((v) => p.waiting[v] !== undefined) === true && Object.values(p.waiting).every((nodes) => nodes.length === 0));
