// PIDs as /proc shows them: whether some are still in use, waiting until they are free, and
// translating the PIDs of a unit's own PID namespace (what CRIU's images hold) to host PIDs.
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { scanProcesses } from './procfs.js';

/** PIDs (of `pids`) still in use as a pid (zombies and thread ids included), pgid or sid. */
export const pidsInUse = (pids: readonly number[]): number[] => {
  const wanted = new Set(pids);
  const used = new Set<number>();
  for (const pid of wanted) if (existsSync(`/proc/${pid}`)) used.add(pid);
  if (used.size < wanted.size) {
    for (const p of scanProcesses()) {
      if (wanted.has(p.pgid)) used.add(p.pgid);
      if (wanted.has(p.sid)) used.add(p.sid);
    }
  }
  return [...used].sort((a, b) => a - b);
};

/**
 * Resolves when none of `pids` exists as a process (zombies count: PID 1 reaps orphans 1–2 s late
 * here), thread, process group or session; rejects after timeoutMs naming the ones still in use.
 */
export const waitPidsGone = async (pids: readonly number[], timeoutMs = 10_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const used = pidsInUse(pids);
    if (used.length === 0) return;
    if (Date.now() > deadline) {
      const detail = used.map((p) => `${p}${describeUse(p)}`).join(', ');
      throw new Error(`PIDs still in use after ${timeoutMs} ms: ${detail}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
};

const describeUse = (pid: number): string => {
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8')
      .replace(/^.*\)\s+/, '')
      .split(' ')[0];
    return state === 'Z' ? ' (zombie: its parent has not reaped it)' : ' (running)';
  } catch {
    return ' (as a pgid/sid of another process)';
  }
};

/** The PID namespace of a process, e.g. "pid:[4026531836]" (undefined when it is gone). */
export const pidNamespaceOf = (pid: number | 'self'): string | undefined => {
  try {
    return readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return undefined;
  }
};

/** A process's PID in each PID namespace it belongs to, outermost (ours) first (NSpid). */
export const namespacePids = (pid: number): number[] | undefined => {
  try {
    return /^NSpid:\s+(.*)$/m
      .exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
      ?.trim()
      .split(/\s+/)
      .map(Number);
  } catch {
    return undefined;
  }
};

/**
 * Host PID of each of `candidates` (host PIDs), by its PID in the PID namespace of `root` (the
 * unit's init, PID 1 there when the unit has its own namespace). When root shares our namespace
 * the map is the identity. Candidates outside root's namespace, or gone, are left out.
 */
export const hostPidsByNamespacePid = (root: number, candidates: Iterable<number>): Map<number, number> => {
  const level = (namespacePids(root)?.length ?? 1) - 1;
  const rootNamespace = pidNamespaceOf(root);
  const map = new Map<number, number>();
  for (const pid of candidates) {
    const ns = namespacePids(pid);
    const inner = ns?.[level];
    // At root's depth it must be root's namespace itself (not a sibling's); deeper, it was made inside it.
    if (inner === undefined || (ns!.length - 1 === level && pidNamespaceOf(pid) !== rootNamespace)) continue;
    map.set(inner, pid);
  }
  return map;
};
