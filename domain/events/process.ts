// Process observations (stream job-<id>): what the node agent saw of the job's processes, from
// the proc connector, /proc and cgroups. Appended as observed, without an expected revision.

import { literals, NonEmptyString, NonNegativeInt, nullable, PositiveInt, record } from '../codecs.js';
import { NodeId, ProcessRef, UnitId } from '../identity.js';
import * as t from '../io-ts.js';
import { defineEvent } from './define.js';

const on = { node: NodeId, unit: UnitId, process: ProcessRef };

export const ProcessForked = defineEvent(
  'ProcessForked',
  'observation',
  record({ node: NodeId, unit: UnitId, parent: ProcessRef, child: ProcessRef }, { pgid: PositiveInt, sid: PositiveInt, comm: t.string, cgroup: t.string }),
  'A member forked a child (pgid, sid, comm, cgroup as read from /proc when the child was seen).',
);

export const ProcessExecd = defineEvent('ProcessExecd', 'observation', record(on, { comm: t.string, argv: t.array(t.string), exe: t.string }), 'A member replaced its program (execve).');

export const ProcessExited = defineEvent(
  'ProcessExited',
  'observation',
  record(on, { status: nullable(NonNegativeInt), signal: nullable(PositiveInt), coreDumped: t.boolean }),
  'A member exited: with an exit status, or killed by a signal.',
);

export const ProcessSessionChanged = defineEvent(
  'ProcessSessionChanged',
  'observation',
  record({ ...on, sid: PositiveInt, pgid: PositiveInt }),
  'A member called setsid: it leads a new session (and process group).',
);

export const ProcessGroupChanged = defineEvent(
  'ProcessGroupChanged',
  'observation',
  record({ ...on, pgid: PositiveInt }),
  'A member moved to another process group (setpgid), seen in /proc/PID/stat.',
);

export const ProcessReparented = defineEvent(
  'ProcessReparented',
  'observation',
  record({ ...on, ppid: NonNegativeInt }),
  'A member’s parent exited and the kernel gave it a new parent (PID 1 or a subreaper).',
);

export const ProcessCgroupChanged = defineEvent('ProcessCgroupChanged', 'observation', record({ ...on, cgroup: t.string }), 'A member moved to another cgroup (/proc/PID/cgroup).');

export const ProcessRenamed = defineEvent('ProcessRenamed', 'observation', record({ ...on, comm: t.string }), 'A member changed its command name (prctl PR_SET_NAME, or exec).');

export const ProcessObserved = defineEvent(
  'ProcessObserved',
  'observation',
  record({ ...on, ppid: NonNegativeInt, pgid: PositiveInt, sid: NonNegativeInt, comm: t.string, source: literals('scan', 'reconcile') }, { parent: ProcessRef, cgroup: t.string }),
  'A /proc scan (at agent start, or reconciling after a gap) found a member as it is now.',
);

export const ProcessVanished = defineEvent('ProcessVanished', 'observation', record(on), 'A /proc scan found a member gone without its exit being seen; its exit status is unknown.');

export const ObservationGap = defineEvent(
  'ObservationGap',
  'observation',
  record({ node: NodeId, source: NonEmptyString, lost: NonNegativeInt, reason: t.string }),
  'The node agent lost kernel events (e.g. proc connector ENOBUFS); a reconciliation follows.',
);

export const DependencyObserved = defineEvent(
  'DependencyObserved',
  'observation',
  record(
    {
      ...on,
      ppid: NonNegativeInt,
      pgid: NonNegativeInt,
      sid: NonNegativeInt,
      comm: t.string,
      member: ProcessRef,
      via: literals('pipe', 'unix-socket', 'sysv-shm', 'shared-memory', 'posix-shm', 'memfd', 'fifo'),
      inode: NonEmptyString,
    },
    {
      /** posix-shm and fifo: the path the member opened; memfd: "memfd:NAME". */
      name: NonEmptyString,
    },
  ),
  'A process outside the job (process) shares a pipe, unix socket, shared memory (SysV, /dev/shm, memfd) or named FIFO with a member.',
);

export const processEvents = [
  ProcessForked,
  ProcessExecd,
  ProcessExited,
  ProcessSessionChanged,
  ProcessGroupChanged,
  ProcessReparented,
  ProcessCgroupChanged,
  ProcessRenamed,
  ProcessObserved,
  ProcessVanished,
  ObservationGap,
  DependencyObserved,
] as const;
