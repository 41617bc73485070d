// A unit's root as a client claims it (UnitLaunched through the request gateway): before the node
// agent moves it into the unit's cgroups, it checks the process is one the caller may launch.

import type { ProcessRef } from '../../domain/identity.js';
import { isUnitCgroupPath } from '../cgroups/unit-cgroups.js';
import { namespacePids, pidNamespaceOf } from '../tracking/pids.js';
import { readCgroups, readCredentials, readStat } from '../tracking/procfs.js';
import type { Caller } from './peer-credentials.js';

/**
 * Why a claimed unit root is not one the caller may launch, or undefined: it must exist with
 * that start time, run as the caller (every uid: real, effective, saved, fs — root excepted),
 * be in no unit's cgroup yet, and be PID 1 of its PID namespace when it has one of its own.
 */
export const rootProblem = (caller: Caller, root: ProcessRef): string | undefined => {
  const stat = readStat(root.pid);
  if (!stat || stat.startTime !== root.startTime || stat.state === 'Z') return `(pid ${root.pid}, start time ${root.startTime}) does not exist`;
  const uids = readCredentials(root.pid)?.uids;
  if (!uids) return `(pid ${root.pid}) could not be read`;
  if (caller.uid !== 0 && uids.some((uid) => uid !== caller.uid)) return `(pid ${root.pid}) runs as uid ${uids.join('/')}, not as uid ${caller.uid} who claims it`;
  const groups = readCgroups(root.pid);
  const inUnit = groups && [...Object.values(groups.v1), groups.unified ?? ''].find(isUnitCgroupPath);
  if (inUnit) return `(pid ${root.pid}) is in a unit's cgroup already (${inUnit})`;
  const ownNamespace = pidNamespaceOf(root.pid) !== pidNamespaceOf('self');
  if (ownNamespace && namespacePids(root.pid)?.at(-1) !== 1) return `(pid ${root.pid}) is in another PID namespace but not its PID 1`;
  return undefined;
};
