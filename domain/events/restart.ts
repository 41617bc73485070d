// Restart phases (stream job-<id>). A restart is numbered per job and restores one committed version.

import { NonEmptyString, NonNegativeInt, NonNegativeNumber, nullable, PositiveInt, record } from '../codecs.js';
import { Failure } from '../failure.js';
import { NodeId, ProcessRef, UnitId } from '../identity.js';
import * as t from '../io-ts.js';
import { CheckpointOptions, unitPhase } from './checkpoint.js';
import { defineEvent } from './define.js';
import { Limits, UnitCgroup } from './job.js';

const restart = { restart: PositiveInt };
const unitStep = { restart: PositiveInt, unit: UnitId, node: NodeId };

/** A restored process: who it was at checkpoint time, who it is now (host view), its PID inside a
 *  new PID namespace, and what the agent saw of it right after the restore. */
export const RestoredProcess = record(
  { was: ProcessRef, now: ProcessRef, nsPid: nullable(PositiveInt) },
  { ppid: NonNegativeInt, pgid: NonNegativeInt, sid: NonNegativeInt, comm: t.string, cgroup: t.string },
);
export type RestoredProcess = t.TypeOf<typeof RestoredProcess>;

export const RestartRequested = defineEvent(
  'RestartRequested',
  'request',
  record({
    request: NonEmptyString,
    version: nullable(PositiveInt),
    placement: t.array(record({ unit: UnitId, node: NodeId })),
    timeoutMs: PositiveInt,
  }),
  'Someone asked to restart the job from a version (null: the latest committed), units placed on nodes.',
);
export const RestartPlanned = defineEvent(
  'RestartPlanned',
  'decision',
  record(
    {
      ...restart,
      request: NonEmptyString,
      version: PositiveInt,
      units: t.array(record({ unit: UnitId, node: NodeId, images: NonEmptyString, limits: Limits })),
    },
    { options: CheckpointOptions },
  ),
  'The coordinator fixed which version each unit restores from, where, and under which limits (and the version’s options, when any is on).',
);

export const [UnitImagesVerifyRequested, UnitImagesVerified, UnitImagesVerifyFailed] = unitPhase(
  'ImagesVerify',
  'UnitImagesVerified',
  unitStep,
  { files: NonNegativeInt, bytes: NonNegativeInt },
  'check every image file against the manifest (size and SHA-256)',
);
export const [UnitRestorePrepareRequested, UnitRestorePrepared, UnitRestorePrepareFailed] = unitPhase(
  'RestorePrepare',
  'UnitRestorePrepared',
  unitStep,
  { cgroups: t.array(UnitCgroup), pidNamespace: t.boolean, waitedMs: NonNegativeNumber },
  'create the unit’s cgroups with its limits and make sure restored PIDs cannot collide',
);
/** CRIU's own account of a restore (its stats-restore image): times in ms, memory in pages. */
export const RestoreStats = record({
  forkingMs: NonNegativeNumber,
  restoreMs: NonNegativeNumber,
  pagesRestored: NonNegativeInt,
  pagesCompared: NonNegativeInt,
  pagesSkippedCow: NonNegativeInt,
});
export type RestoreStats = t.TypeOf<typeof RestoreStats>;
export const [UnitRestoreRequested, UnitRestored, UnitRestoreFailed] = unitPhase(
  'Restore',
  'UnitRestored',
  unitStep,
  { processes: t.array(RestoredProcess), durationMs: NonNegativeNumber },
  'restore the unit’s processes and report each one’s new identity',
  { stats: RestoreStats },
);
export const [UnitRollbackRequested, UnitRolledBack, UnitRollbackFailed] = unitPhase('Rollback', 'UnitRolledBack', unitStep, {}, 'stop what was restored of a failed restart');

export const UnitRestoreHeld = defineEvent(
  'UnitRestoreHeld',
  'outcome',
  record(unitStep),
  'The unit’s processes are restored but none runs, its established connections still locked: it waits for every unit of the restart (units talking over TCP resume together).',
);
export const RestartReleased = defineEvent('RestartReleased', 'decision', record(restart), 'Every unit is restored and held: each unlocks its connections and resumes.');

export const RestartCommitted = defineEvent(
  'RestartCommitted',
  'decision',
  record({ ...restart, version: PositiveInt }),
  'Every unit was restored: the job runs again, tracked under its new identities.',
);
export const RestartAbortRequested = defineEvent(
  'RestartAbortRequested',
  'decision',
  record({ ...restart, reason: t.string }, { failure: Failure }),
  'A unit failed or a deadline passed: every restored part is to be rolled back.',
);
export const RestartFailed = defineEvent(
  'RestartFailed',
  'decision',
  record({ ...restart, reason: t.string }, { failure: Failure }),
  'The restart failed as a whole and was rolled back; the reason says why.',
);

export const restartEvents = [
  RestartRequested,
  RestartPlanned,
  UnitImagesVerifyRequested,
  UnitImagesVerified,
  UnitImagesVerifyFailed,
  UnitRestorePrepareRequested,
  UnitRestorePrepared,
  UnitRestorePrepareFailed,
  UnitRestoreRequested,
  UnitRestoreHeld,
  RestartReleased,
  UnitRestored,
  UnitRestoreFailed,
  RestartCommitted,
  RestartAbortRequested,
  UnitRollbackRequested,
  UnitRolledBack,
  UnitRollbackFailed,
  RestartFailed,
] as const;
