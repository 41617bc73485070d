// Dependents: processes outside a job that share a pipe, a unix socket, SysV or POSIX shared
// memory or a FIFO with a member (findDependents in tracking/procfs.ts). Looking for them reads
// every process's descriptors and mappings, by far the dearest read the agent makes, so it is
// targeted (unless `adaptive` is off: then every tick, as the agent did before):
// - a scan runs one tick (1 s) after a member joined or exec'd, then ever more rarely while
//   nothing happens, doubling to MAX_INTERVAL_MS (8 s): a dependent that joins a quiet job (an
//   outsider opening a member's FIFO, connecting to its socket) is noticed within 8 s;
// - a member's own descriptors and mappings are read again when it joined or exec'd, when its
//   number of open descriptors or its mapped size changed (resourceSignature: one stat of its fd
//   directory, with its mapped size from the scan's own /proc/PID/stat read, instead of every
//   descriptor and mapping), and at the latest when MEMBER_MAX_AGE_MS (30–45 s)
//   old: a descriptor a quiet member swapped for another (dup2) is seen within that age.
import { type Dependent, findDependents, type MemberResources, type ProcStat, readMemberResources, readStat, resourceSignature, scanProcesses } from '../tracking/procfs.js';
import type { JobsView } from './coordinator-host.js';
import type { Tracked } from './process-tracker.js';

export interface DependencyScanOptions {
  readonly jobs: JobsView;
  /** The tracker's processes, members and dependents (read only here). */
  readonly tracked: ReadonlyMap<number, Tracked>;
  /** ckpt's own processes among these: never members or dependents. */
  readonly helpers: (all: readonly ProcStat[]) => Set<number>;
  /** A dependent found (alive as `stat` says): to be tracked and recorded. */
  readonly found: (member: Tracked, stat: ProcStat, d: Dependent) => void;
  readonly adaptive: boolean;
  readonly tickMs: number;
  readonly log: (line: string) => void;
}

const MAX_INTERVAL_MS = 8000;
/** How long a quiet member's resources are taken as read (plus up to 15 s, by pid, so not all expire at once). */
const MEMBER_MAX_AGE_MS = 30_000;

export class DependencyScan {
  readonly #o: DependencyScanOptions;
  /** Dependencies recorded: `PID@START VIA INODE`. */
  readonly #recorded = new Set<string>();
  /** A member joined or exec'd since the last scan. */
  #membersChanged = true;
  #due = 0;
  #interval = 0;
  /** Members' resources as last read, with their signature then, and when. */
  readonly #resources = new Map<number, { at: number; signature: string; resources: MemberResources }>();

  constructor(options: DependencyScanOptions) {
    this.#o = options;
  }

  /** A process joined or exec'd: its resources are read again, and the next tick scans. */
  changed(pid: number): void {
    this.#resources.delete(pid);
    this.#membersChanged = true;
  }

  forget(pid: number): void {
    this.#resources.delete(pid);
  }

  /** Scans when due (see the head of this file). */
  tick(): void {
    if (!this.#o.adaptive) {
      this.#scan();
      return;
    }
    const now = Date.now();
    if (this.#o.tracked.size === 0 || (!this.#membersChanged && now < this.#due)) return;
    this.#interval = this.#membersChanged ? this.#o.tickMs : Math.min(this.#interval * 2, MAX_INTERVAL_MS);
    this.#membersChanged = false;
    this.#due = now + this.#interval;
    this.#scan();
  }

  #scan() {
    const all = scanProcesses();
    const now = new Map(all.map((p) => [p.pid, p]));
    const { tracked } = this.#o;
    // Only the job's own processes make others dependents: dependency is not transitive, or a
    // shell reading a dependent's output would be pulled in, and whatever that shell touches.
    // A member whose exit is not seen yet may have left its PID to another process (after a PID
    // wrap, even to this agent): only the members still alive as themselves are read.
    const members = [...tracked.values()].filter((t) => !t.dependent && now.get(t.pid)?.startTime === t.startTime).map((t) => t.pid);
    if (members.length === 0) return;
    const stdio = new Set<string>();
    for (const job of this.#o.jobs.jobs()) for (const u of this.#o.jobs.myUnits(job)) for (const i of u.stdio) stdio.add(i);
    let dependents: Dependent[];
    try {
      const readMember = this.#o.adaptive ? (pid: number) => this.#memberResources(now.get(pid)!) : undefined;
      dependents = findDependents(members, all, { ignore: this.#o.helpers(all), readMember });
    } catch (error) {
      this.#o.log(`dependency scan failed: ${(error as Error).message}`);
      return;
    }
    for (const d of dependents) {
      // The terminal or pipe the job was started with is how the user talks to it, not a dependency.
      // (Only pipe and socket inodes are compared: a shm file's inode number may equal a pipe's.)
      const viaStdio = d.via === 'pipe' || d.via === 'unix-socket';
      if (viaStdio && (stdio.has(d.inode) || (d.memberInode && stdio.has(d.memberInode)))) continue;
      const member = tracked.get(d.member);
      const key = `${d.pid}@${d.startTime} ${d.via} ${d.inode}`;
      if (!member || tracked.has(d.pid) || this.#recorded.has(key)) continue;
      const stat = readStat(d.pid);
      if (!stat || stat.startTime !== d.startTime) continue;
      this.#recorded.add(key);
      this.#o.found(member, stat, d);
    }
  }

  /** A member's resources (`stat`: as the scan read it): as read before while it has been quiet, else from /proc. */
  #memberResources(stat: ProcStat): MemberResources | undefined {
    const { pid } = stat;
    const now = Date.now();
    const kept = this.#resources.get(pid);
    const signature = resourceSignature(stat);
    if (signature === undefined) return undefined; // gone
    if (kept && kept.signature === signature && now - kept.at < MEMBER_MAX_AGE_MS + (pid % 16) * 1000) return kept.resources;
    const resources = readMemberResources(pid);
    if (resources) this.#resources.set(pid, { at: now, signature, resources });
    else this.#resources.delete(pid);
    return resources;
  }
}
