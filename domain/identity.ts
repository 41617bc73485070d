// Identities of the domain. A process is (node, pid, start time), never a bare PID: PIDs are
// reused, and after a restore in a new PID namespace the host PID differs from the namespace PID.

import { literals, Name, NonNegativeInt, PositiveInt, record } from './codecs.js';
import * as t from './io-ts.js';

export const JobId = Name;
export const NodeId = Name;
export const UnitId = Name;
export type JobId = string;
export type NodeId = string;
export type UnitId = string;

/** A process on a known node: its PID and its start time (clock ticks after boot, /proc/PID/stat field 22). */
export const ProcessRef = record({ pid: PositiveInt, startTime: NonNegativeInt });
export type ProcessRef = t.TypeOf<typeof ProcessRef>;

export const processKey = (node: NodeId, p: ProcessRef): string => `${node}/${p.pid}@${p.startTime}`;

/**
 * Who asked for something: a user, a node agent, or the coordinator acting on its own. A user's
 * uid, gid and pid are the kernel's (SO_PEERCRED on the agent's socket), never what a client says.
 */
export const Actor = t.union([
  record({ kind: t.literal('user'), uid: NonNegativeInt }, { gid: NonNegativeInt, pid: PositiveInt, user: t.string }),
  record({ kind: t.literal('node'), node: NodeId }),
  record({ kind: t.literal('coordinator') }, { node: NodeId }),
]);
export type Actor = t.TypeOf<typeof Actor>;

export const CheckpointScope = literals('tree', 'pgid', 'session', 'cgroup');
export type CheckpointScope = t.TypeOf<typeof CheckpointScope>;

export const jobStream = (job: JobId): string => `job-${job}`;
/** The job a `job-<id>` stream is of; undefined for other streams and for a name that is not a valid
 *  job name (a stream anyone could append to must not lead a path or a cgroup elsewhere). */
export const jobOfStream = (stream: string): JobId | undefined => {
  const job = stream.startsWith('job-') ? stream.slice(4) : undefined;
  return job !== undefined && JobId.is(job) ? job : undefined;
};
export const nodeStream = (node: NodeId): string => `node-${node}`;

/**
 * Why a new unit may not take this name, or undefined. A restart's cgroups are the unit's name
 * with "-rN" appended, so a unit named "main-r1" beside "main" would share them: new units may
 * not end so (histories that have one still decode).
 */
export const newUnitNameProblem = (unit: string): string | undefined =>
  /-r[1-9][0-9]*$/.test(unit) ? `unit name "${unit}" ends like a restart of another unit (-rN): choose another name` : undefined;
