// The common checkpointer interface: what a node agent asks of a system-specific checkpointer
// (CRIU first) for one unit. Capabilities are probed, never assumed, and recorded as an event
// (CheckpointerProbed); the coordinator plans only with what the probe says works.
import type { CheckpointOptions, DumpStats } from './events/checkpoint.js';
import type { UnitCgroup } from './events/job.js';
import type { CheckpointerProbed } from './events/node.js';
import type { RestoreStats } from './events/restart.js';
import type { Failure } from './failure.js';
import type { CheckpointScope, ProcessRef, UnitId } from './identity.js';
import type { NodeCheckpointerFacts } from './preflight.js';

/** An image file as the manifest lists it: path under vN (UNIT/…), size, SHA-256. */
export interface ImageFileEntry {
  readonly path: string;
  readonly bytes: number;
  readonly sha256: string;
}

export type CheckpointerProbe = Omit<(typeof CheckpointerProbed)['codec']['_A'], 'node'>;

/**
 * Whose processes a unit's are (JobSubmitted.owner): the checkpointer dumps and restores a
 * non-root unit acting as this user, not as root. gid and groups, when the log lacks them, are
 * read from the unit's root at dump time and from the images at restore time.
 */
export interface UnitOwner {
  readonly uid: number;
  readonly gid?: number;
  readonly groups?: readonly number[];
}

/** One unit of one checkpoint version, as the plan and the log describe it. */
export interface UnitTarget {
  readonly job: string;
  readonly unit: UnitId;
  readonly version: number;
  readonly scope: CheckpointScope;
  /** The unit's first process (its init): the root of the one tree dumped; unknown once it ended. */
  readonly root?: ProcessRef;
  readonly cgroups: readonly UnitCgroup[];
  /** Where this unit's images go (created by the checkpointer, 0700). */
  readonly imagesDir: string;
  /** What the plan fixed for this version: established TCP connections, file locks. */
  readonly options: CheckpointOptions;
  /** The checkpoint stops the job once committed (--stop): established connections then stay
   *  locked from the dump on, so that the peer sees nothing until the restart repairs them. */
  readonly stop: boolean;
  /** How long the unit may take to freeze cleanly (CheckpointRequested.freezeBudgetMs, else the default). */
  readonly freezeBudgetMs?: number;
  /** The job's owner; unknown (an old history): the root process's credentials decide. */
  readonly owner?: UnitOwner;
}

/** A restore: its images, cgroups and work directory, and the options the version was dumped with. */
export interface RestoreTarget {
  readonly imagesDir: string;
  readonly pidNamespace: boolean;
  readonly cgroups: readonly UnitCgroup[];
  readonly workDir: string;
  readonly options: CheckpointOptions;
  /** The job's owner: the images' credentials must be theirs; unknown: the images' decide. */
  readonly owner?: UnitOwner;
  /**
   * Called once every process is restored, none running and the connections still locked; they
   * unlock and run when it resolves true, and are killed (the restore fails) when false. Absent:
   * they run at once. A restore that cannot stop there calls it before it starts.
   */
  readonly hold?: () => Promise<boolean>;
}

/**
 * How long freezing a unit may take before the checkpoint fails with class 'timeout', naming the
 * tasks that held it up. A cgroup2 freeze of a busy fork loop took 0.3 ms median, 51 ms at most
 * (300 measured here), and retrying a freeze that caught a vfork costs a few ms: 3 s is far above
 * what a healthy unit needs, and far below the 10 s CRIU itself would wait on a task it cannot seize.
 */
export const DEFAULT_FREEZE_BUDGET_MS = 3000;

export interface Checkpointer {
  readonly name: string;
  /** What a failed step's error means: class, the checkpointer's own message, a hint. */
  explain(error: unknown): Failure;
  probe(): Promise<CheckpointerProbe>;
  /** Before anything is frozen: throws an Error with a `failure` (domain/failure.ts) when the unit
   *  holds what this checkpointer cannot take with the unit's options on this node (established
   *  TCP without --tcp-established, file locks, a unix socket to an outside process, …). */
  preflight(u: UnitTarget, node: NodeCheckpointerFacts | undefined): Promise<void>;
  /** Stops every process of the unit (nothing forks or exits until thaw). Idempotent. */
  freeze(u: UnitTarget): Promise<{ processes: number; durationMs: number }>;
  /** Writes the unit's images, leaving the processes frozen, each file hashed and fsynced. Not
   *  repeatable: one dump per version. */
  dump(u: UnitTarget): Promise<{ files: number; bytes: number; durationMs: number; images: ImageFileEntry[]; stats?: DumpStats }>;
  /** The processes the images hold (PIDs as dumped): compared with what was planned. */
  captured(u: UnitTarget): Promise<number[]>;
  /** Lets the unit run again. Idempotent. */
  thaw(u: UnitTarget): Promise<{ durationMs: number }>;
  /** Ends every process of the unit (after a committed checkpoint with --stop). Idempotent. */
  stop(u: UnitTarget): Promise<void>;
  /** Undoes a failed checkpoint: thaw, delete the partial images. Idempotent. */
  abort(u: UnitTarget): Promise<{ thawed: boolean; imagesRemoved: boolean }>;
  /** Brings a unit back from its images, into the given cgroups (logs go to workDir, never into
   *  the committed images); in a new PID namespace when the original PIDs are taken. The restored
   *  processes resume only once workDir/RELEASE exists (the images passed their check); CANCEL
   *  there makes the restore fail without them ever running. */
  restore(u: RestoreTarget): Promise<{ rootPid: number; durationMs: number; stats?: RestoreStats }>;
}

/** Files in a restore's work directory that let the restored processes run, or not. */
export const RELEASE = 'images.ok';
export const CANCEL = 'images.bad';
