// Job and unit lifecycle (stream job-<id>). A job runs as units, one or more per node.

import { literals, NonEmptyString, NonNegativeInt, nullable, PositiveInt, record } from '../codecs.js';
import { JobId, NodeId, ProcessRef, UnitId } from '../identity.js';
import * as t from '../io-ts.js';
import { defineEvent } from './define.js';

/** Resource limits a unit runs under; re-imposed by cgroups at restart. */
export const Limits = record({}, { memoryBytes: PositiveInt, pids: PositiveInt, cpuWeight: PositiveInt });
export type Limits = t.TypeOf<typeof Limits>;

export const CgroupController = literals('freezer', 'memory', 'pids', 'cpu', 'cpuacct', 'unified');
export const UnitCgroup = record({ controller: CgroupController, path: NonEmptyString });
export type UnitCgroup = t.TypeOf<typeof UnitCgroup>;

/** What every checkpoint of the job may capture beyond the default (opt-in: `ckpt run --tcp-established`). */
export const JobOptions = record({}, { tcpEstablished: t.boolean, fileLocks: t.boolean });
export type JobOptions = t.TypeOf<typeof JobOptions>;

/** Who a job runs as: the submitter as the kernel saw them (the agent's gateway sets it). */
export const JobOwner = record({ uid: NonNegativeInt }, { gid: NonNegativeInt, groups: t.array(NonNegativeInt), user: t.string });
export type JobOwner = t.TypeOf<typeof JobOwner>;

export const JobSubmitted = defineEvent(
  'JobSubmitted',
  'request',
  record({ job: JobId, owner: JobOwner }, { options: JobOptions }),
  'A user submitted a job; its owner (uid, and gid and supplementary groups as the kernel gave them) may checkpoint, restart and prune it; options opt every checkpoint of it in to established TCP connections or file locks.',
);

export const UnitAssigned = defineEvent(
  'UnitAssigned',
  'decision',
  record({ unit: UnitId, node: NodeId, command: t.array(t.string), cwd: NonEmptyString, limits: Limits }, { scope: literals('tree', 'pgid', 'session', 'cgroup') }),
  'A unit of the job was placed on a node with its command, working directory and limits.',
);

export const UnitCgroupsCreated = defineEvent(
  'UnitCgroupsCreated',
  'outcome',
  record({ unit: UnitId, node: NodeId, cgroups: t.array(UnitCgroup), limits: Limits }),
  'The node agent created the unit’s cgroups (every useful hierarchy the node has) and set its limits.',
);

export const UnitLaunched = defineEvent(
  'UnitLaunched',
  'observation',
  record({ unit: UnitId, node: NodeId, root: ProcessRef, pgid: PositiveInt, sid: PositiveInt, comm: t.string, cgroup: t.string }),
  'The unit’s root process started, in a new session (held until tracked); the node agent checked that the claimed root is the requester’s own fresh process, moved it into the unit’s cgroups and recorded what it read (actor: the requester).',
);

export const UnitTracked = defineEvent(
  'UnitTracked',
  'observation',
  record({ unit: UnitId, node: NodeId, root: ProcessRef, stdio: t.array(t.string) }),
  'The node agent tracks the unit from now on; the root runs its command only after this.',
);

export const UnitLaunchFailed = defineEvent(
  'UnitLaunchFailed',
  'outcome',
  record({ unit: UnitId, node: NodeId, reason: t.string }),
  'The unit could not be started (command not found, cgroup refused, …), or its node agent refused it (reason "refused: …"): a launch into cgroups, or with a root process, that are not the unit’s own.',
);

export const UnitEnded = defineEvent(
  'UnitEnded',
  'observation',
  record({ unit: UnitId, node: NodeId, status: nullable(t.number), signal: nullable(t.number) }),
  'The last member of the unit exited; status and signal are the root process’s.',
);

export const JobEnded = defineEvent(
  'JobEnded',
  'decision',
  record({ outcome: literals('succeeded', 'failed'), status: nullable(t.number), signal: nullable(t.number) }),
  'Every unit of the job ended; succeeded when every root exited with status 0.',
);

export const jobEvents = [JobSubmitted, UnitAssigned, UnitCgroupsCreated, UnitLaunched, UnitTracked, UnitLaunchFailed, UnitEnded, JobEnded] as const;
