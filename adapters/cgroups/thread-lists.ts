// Which cgroup a process is in, from the cgroup's side: the kernel lists the threads of every
// cgroup (v1 `tasks`, cgroup2 `cgroup.threads`), so one read of a cgroup's list answers for all
// its processes, where /proc/PID/cgroup answers for one. A process whose main thread (tid = pid)
// is listed in cgroup C of the hierarchy primaryCgroup reads is in C, exactly as its
// /proc/PID/cgroup would say; one not listed (moved, or a list that cannot be read) needs its own
// file read to say where it went.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { primaryCgroup, primaryHierarchy, readCgroups } from '../tracking/procfs.js';
import { parseMountinfo } from './unit-cgroups.js';

/**
 * Where cgroup `path` (as /proc/PID/cgroup shows it) of `hierarchy` (as primaryHierarchy names
 * it) lists its threads: on a mount of the hierarchy's root; undefined when none is mounted here.
 */
export const threadListAt = (hierarchy: string, mountinfo: string): ((path: string) => string) | undefined => {
  const v2 = hierarchy === 'unified';
  const mount = parseMountinfo(mountinfo).find((m) => m.root === '/' && (v2 ? m.fstype === 'cgroup2' : m.fstype === 'cgroup' && m.superOptions.includes(hierarchy)));
  if (!mount) return undefined;
  const file = v2 ? 'cgroup.threads' : 'tasks';
  return (path) => join(mount.mountPoint, path, file);
};

/** The numbers of a thread list (one per line). */
const parseIds = (text: string): Set<number> => {
  const ids = new Set<number>();
  let id = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x0a) ids.add(id), (id = 0);
    else id = id * 10 + (c - 0x30);
  }
  return ids;
};

/** A path the kernel would print: absolute, no `.` or `..` segment (never taken from elsewhere). */
const canonical = (path: string): boolean => path.startsWith('/') && !path.split('/').some((s) => s === '.' || s === '..');

/**
 * The thread lists of the cgroups asked about, each read again once older than `maxAgeMs` (a list
 * of 1,000 threads costs what ~30 /proc/PID/cgroup reads do). Disabled (every answer "cannot
 * tell") when the primary hierarchy is not mounted here, or the agent does not find itself where
 * /proc/self/cgroup says it is.
 */
export class CgroupThreadLists {
  readonly #maxAgeMs: number;
  readonly #listOf: ((path: string) => string) | undefined;
  readonly #lists = new Map<string, { at: number; threads: ReadonlySet<number> }>();

  constructor(maxAgeMs: number, mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')) {
    this.#maxAgeMs = maxAgeMs;
    const own = readCgroups(process.pid);
    const hierarchy = own && primaryHierarchy(own);
    const listOf = hierarchy === undefined ? undefined : threadListAt(hierarchy, mountinfo);
    this.#listOf = listOf && this.#read(listOf(primaryCgroup(own!))).has(process.pid) ? listOf : undefined;
  }

  /**
   * True when `pid`'s main thread is listed in `cgroup` (its primary cgroup, as primaryCgroup
   * gives it) as of at most maxAgeMs before `now`; false: not listed, or no list to tell.
   */
  holds(cgroup: string, pid: number, now: number): boolean {
    if (!this.#listOf || !canonical(cgroup)) return false;
    let list = this.#lists.get(cgroup);
    if (!list || now - list.at > this.#maxAgeMs) this.#lists.set(cgroup, (list = { at: now, threads: this.#read(this.#listOf(cgroup)) }));
    // Lists of cgroups no longer asked about are let go with the next read.
    if (this.#lists.size > 64) for (const [c, l] of this.#lists) if (now - l.at > this.#maxAgeMs) this.#lists.delete(c);
    return list.threads.has(pid);
  }

  /** A list, or none when it cannot be read (the cgroup removed, ...): its processes are then read one by one. */
  #read(file: string): ReadonlySet<number> {
    try {
      return parseIds(readFileSync(file, 'latin1'));
    } catch {
      return new Set();
    }
  }
}
