// What a checkpointer scope would capture of a unit, and what it would miss and why. Tree-,
// process-group-, session- and cgroup-based checkpointers each miss some members; the coordinator
// uses this to refuse a silently partial checkpoint.
import type { CheckpointScope, UnitId } from './identity.js';
import { classify, type JobMembership, type Member, runningMembers } from './membership.js';

export interface Miss {
  readonly member: Member;
  readonly why: string;
}

export interface ScopeCoverage {
  readonly unit: UnitId;
  readonly scope: CheckpointScope;
  readonly captured: readonly Member[];
  readonly missed: readonly Miss[];
}

const dependency = (m: Member) =>
  m.dependsOn && `not a descendant: shares a ${m.dependsOn.via} (${m.dependsOn.name ? `${m.dependsOn.name}, ` : ''}inode ${m.dependsOn.inode}) with member ${m.dependsOn.member}`;

/** Members reachable from the unit's root through current parent links (what `criu dump -t ROOT` takes). */
const treeOf = (root: Member | undefined, members: readonly Member[]): Set<string> => {
  const inTree = new Set<string>();
  if (root?.state !== 'running') return inTree;
  const children = new Map<number, Member[]>();
  for (const m of members) children.set(m.ppid, [...(children.get(m.ppid) ?? []), m]);
  const queue = [root];
  for (let m = queue.pop(); m; m = queue.pop()) {
    if (inTree.has(m.key)) continue;
    inTree.add(m.key);
    queue.push(...(children.get(m.pid) ?? []).filter((c) => c.node === m.node));
  }
  return inTree;
};

export const scopeCoverage = (job: JobMembership, unit: UnitId, scope: CheckpointScope): ScopeCoverage => {
  const u = job.units[unit];
  const members = runningMembers(job).filter((m) => m.unit === unit);
  const root = members.find((m) => m.key === u?.root);
  const tree = scope === 'tree' ? treeOf(root, members) : new Set<string>();
  const captured: Member[] = [];
  const missed: Miss[] = [];
  for (const m of members) {
    const why = ((): string | undefined => {
      switch (scope) {
        case 'tree':
          if (tree.has(m.key)) return undefined;
          if (!root) return 'the unit’s root process has exited, so there is no tree to dump';
          if (classify(job, m).escapes.includes('reparented')) return `re-parented to PID ${m.ppid}: outside the root’s process tree`;
          return dependency(m) ?? `not in the root’s process tree (parent PID ${m.ppid})`;
        case 'pgid':
          return m.pgid === u?.pgid ? undefined : `in process group ${m.pgid}, not the unit’s group ${u?.pgid}${m.dependsOn ? ` (${dependency(m)})` : ''}`;
        case 'session':
          return m.sid === u?.sid ? undefined : `in session ${m.sid}, not the unit’s session ${u?.sid}${m.dependsOn ? ` (${dependency(m)})` : ''}`;
        case 'cgroup':
          return m.cgroup !== undefined && m.cgroup === u?.cgroup ? undefined : `in cgroup ${m.cgroup ?? '(unknown)'}, not the unit’s ${u?.cgroup}${m.dependsOn ? ` (${dependency(m)})` : ''}`;
      }
    })();
    if (why) missed.push({ member: m, why });
    else captured.push(m);
  }
  return { unit, scope, captured, missed };
};
