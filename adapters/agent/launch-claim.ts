// A unit's root as a client claims it (UnitLaunched through the request gateway): before the node
// agent moves it into the unit's cgroups, it checks the process is one the caller may launch.
import { readFileSync, readlinkSync } from 'node:fs';
import type { ProcessRef } from '../../domain/identity.js';
import { readCgroups, readStat } from '../tracking/procfs.js';
import type { Caller } from './peer-credentials.js';

/**
 * Why a claimed unit root is not one the caller may launch, or undefined: it must exist with
 * that start time, run as the caller (every uid: real, effective, saved, fs — root excepted),
 * be in no unit's cgroup yet, and be PID 1 of its PID namespace when it has one of its own.
 */
export const rootProblem = (caller: Caller, root: ProcessRef): string | undefined => {
  const stat = readStat(root.pid);
  if (!stat || stat.startTime !== root.startTime || stat.state === 'Z') return `(pid ${root.pid}, start time ${root.startTime}) does not exist`;
  const status = procStatus(root.pid);
  const uids = status?.Uid?.split(/\s+/).map(Number);
  if (!uids || uids.length !== 4) return `(pid ${root.pid}) could not be read`;
  if (caller.uid !== 0 && uids.some((uid) => uid !== caller.uid)) return `(pid ${root.pid}) runs as uid ${uids.join('/')}, not as uid ${caller.uid} who claims it`;
  const groups = readCgroups(root.pid);
  const inUnit = groups && [...Object.values(groups.v1), groups.unified ?? ''].find((path) => /(^|\/)ckpt\//.test(path));
  if (inUnit) return `(pid ${root.pid}) is in a unit's cgroup already (${inUnit})`;
  const nsPids = status?.NSpid?.split(/\s+/).map(Number) ?? [];
  const ownNamespace = safeReadlink(`/proc/${root.pid}/ns/pid`) !== safeReadlink('/proc/self/ns/pid');
  if (ownNamespace && nsPids[nsPids.length - 1] !== 1) return `(pid ${root.pid}) is in another PID namespace but not its PID 1`;
  return undefined;
};

const procStatus = (pid: number): Record<string, string> | undefined => {
  try {
    const fields: Record<string, string> = {};
    for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
      const colon = line.indexOf(':');
      if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1).trim();
    }
    return fields;
  } catch {
    return undefined;
  }
};

const safeReadlink = (path: string): string | undefined => {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
};
