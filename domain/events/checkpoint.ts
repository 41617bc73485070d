// Checkpoint phases (stream job-<id>). A checkpoint is identified by its version, numbered per job.
// The coordinator decides *Requested events; node agents answer with done / failed outcomes.

import { NonEmptyString, NonNegativeInt, NonNegativeNumber, nullable, PositiveInt, record, Sha256 } from '../codecs.js';
import { Failure } from '../failure.js';
import { CheckpointScope, NodeId, ProcessRef, UnitId } from '../identity.js';
import * as t from '../io-ts.js';
import { defineEvent } from './define.js';
import { JobOptions } from './job.js';

const version = { version: PositiveInt };
const unitStep = { version: PositiveInt, unit: UnitId, node: NodeId };

export const PlannedUnit = record({
  unit: UnitId,
  node: NodeId,
  checkpointer: NonEmptyString,
  scope: CheckpointScope,
  /** How the scope's misses are covered, e.g. freeze the cgroup and dump each subtree. */
  strategy: NonEmptyString,
  targets: t.array(ProcessRef),
  images: NonEmptyString,
});
export type PlannedUnit = t.TypeOf<typeof PlannedUnit>;

/** What a version captures beyond the default: established TCP connections (TCP repair, the
 *  network locked meanwhile) and file locks. A restart of the version restores them the same way. */
export const CheckpointOptions = record({ tcpEstablished: t.boolean, fileLocks: t.boolean });
export type CheckpointOptions = t.TypeOf<typeof CheckpointOptions>;

export const CheckpointRequested = defineEvent(
  'CheckpointRequested',
  'request',
  record(
    { request: NonEmptyString, stop: t.boolean, timeoutMs: PositiveInt },
    /** options: as the job's (JobSubmitted), or-ed with them by the plan. freezeBudgetMs: how long
     *  each unit may take to freeze cleanly; absent: the default (DEFAULT_FREEZE_BUDGET_MS). */
    { options: JobOptions, freezeBudgetMs: PositiveInt },
  ),
  'Someone asked for a checkpoint of the job (leave it running, or --stop it for migration), maybe with options (established TCP connections, file locks) or a freeze budget.',
  [
    {
      change: 'tcpEstablished and fileLocks moved into options, the shape JobSubmitted and CheckpointPlanned give them.',
      up: ({ tcpEstablished, fileLocks, ...rest }) =>
        tcpEstablished === undefined && fileLocks === undefined
          ? rest
          : { ...rest, options: { ...(tcpEstablished !== undefined && { tcpEstablished }), ...(fileLocks !== undefined && { fileLocks }) } },
    },
  ],
);
export const CheckpointPlanned = defineEvent(
  'CheckpointPlanned',
  'decision',
  record({ ...version, request: NonEmptyString, parent: nullable(PositiveInt), units: t.array(PlannedUnit) }, { options: CheckpointOptions }),
  'The coordinator fixed the target set of every unit from membership at the position it decided on (and the options, the job’s or the request’s, when any is on).',
);

/** A unit step: the coordinator's request, the agent's done outcome, and its failure. */
// biome-ignore lint/complexity/noBannedTypes: {} is io-ts's empty Props (no optional fields), as t.partial({}) takes it
export const unitPhase = <P extends string, D extends string, DP extends t.Props, S extends t.Props, DO extends t.Props = {}>(
  phase: P,
  done: D,
  step: S,
  doneData: DP,
  what: string,
  doneOptional?: DO,
) =>
  [
    defineEvent(`Unit${phase}Requested` as `Unit${P}Requested`, 'decision', record(step), `The coordinator asked a node agent to ${what}.`),
    defineEvent(done, 'outcome', record({ ...step, ...doneData }, doneOptional ?? ({} as DO)), `The node agent did: ${what}.`),
    defineEvent(
      `Unit${phase}Failed` as `Unit${P}Failed`,
      'outcome',
      record({ ...step, reason: t.string }, { failure: Failure }),
      `The node agent could not ${what}; the reason (and its failure class and hint) says why.`,
    ),
  ] as const;

export const [UnitFreezeRequested, UnitFrozen, UnitFreezeFailed] = unitPhase(
  'Freeze',
  'UnitFrozen',
  unitStep,
  { processes: NonNegativeInt, durationMs: NonNegativeNumber },
  'freeze every target of the unit',
);
/** One image file: its path under the version directory (UNIT/…), size and SHA-256. */
export const ImageFile = record({ path: NonEmptyString, bytes: NonNegativeInt, sha256: Sha256 });

/** CRIU's own account of a dump (its stats-dump image): times in ms, memory in pages. */
export const DumpStats = record({
  freezingMs: NonNegativeNumber,
  frozenMs: NonNegativeNumber,
  memdumpMs: NonNegativeNumber,
  memwriteMs: NonNegativeNumber,
  pagesScanned: NonNegativeInt,
  pagesSkippedParent: NonNegativeInt,
  pagesWritten: NonNegativeInt,
  pagesLazy: NonNegativeInt,
});
export type DumpStats = t.TypeOf<typeof DumpStats>;
export const [UnitDumpRequested, UnitDumped, UnitDumpFailed] = unitPhase(
  'Dump',
  'UnitDumped',
  unitStep,
  { files: NonNegativeInt, bytes: NonNegativeInt, durationMs: NonNegativeNumber },
  'dump the unit’s images (hashed and fsynced as they were written)',
  { images: t.array(ImageFile), stats: DumpStats },
);
export const [UnitVerifyRequested, UnitVerified, UnitVerifyFailed] = unitPhase(
  'Verify',
  'UnitVerified',
  unitStep,
  { captured: t.array(PositiveInt) },
  'check that the images hold exactly the planned processes',
  { processes: t.array(ProcessRef) },
);
export const [UnitThawRequested, UnitThawed, UnitThawFailed] = unitPhase('Thaw', 'UnitThawed', unitStep, { frozenMs: NonNegativeNumber }, 'thaw the unit so the job continues');
export const [UnitStopRequested, UnitStopped, UnitStopFailed] = unitPhase('Stop', 'UnitStopped', unitStep, {}, 'stop the unit’s processes after a committed checkpoint (--stop)');
export const [UnitAbortRequested, UnitAborted, UnitAbortFailed] = unitPhase(
  'Abort',
  'UnitAborted',
  unitStep,
  { thawed: t.boolean, imagesRemoved: t.boolean },
  'undo a failed checkpoint: thaw and delete partial images',
);

export const CheckpointCommitRequested = defineEvent(
  'CheckpointCommitRequested',
  'decision',
  record(version),
  'Every unit is dumped and verified: each node holding units writes their manifest and makes them durable.',
);
/** What one node committed: its units' manifest, on its own disk. */
const nodeManifest = { units: t.array(UnitId), files: NonNegativeInt, bytes: NonNegativeInt, manifest: Sha256 };
export const NodeManifest = record(nodeManifest);
export type NodeManifest = t.TypeOf<typeof NodeManifest>;
export const NodeCommitted = defineEvent(
  'NodeCommitted',
  'outcome',
  record({ ...version, node: NodeId, durationMs: NonNegativeNumber, ...nodeManifest }),
  'A node made its units’ images of the version durable (fsync) on its own disk, with a manifest of every file’s size and SHA-256.',
);
export const CheckpointCommitted = defineEvent(
  'CheckpointCommitted',
  'outcome',
  record(
    { ...version, files: NonNegativeInt, bytes: NonNegativeInt, durationMs: NonNegativeNumber },
    /** manifest: the SHA-256 of the one manifest when one node holds every unit; nodes: each node's
     *  manifest (absent before commits were per node: then manifest names the only one). */
    { manifest: Sha256, nodes: t.record(NodeId, NodeManifest) },
  ),
  'The version is durable: every node that holds units committed them (decided once the last NodeCommitted is in; recorded by the node itself before commits were per node).',
);
export const CheckpointCommitFailed = defineEvent(
  'CheckpointCommitFailed',
  'outcome',
  record({ ...version, reason: t.string }, { failure: Failure, node: NodeId }),
  'A node could not make its units’ images of the version durable.',
);
export const CheckpointAbortRequested = defineEvent(
  'CheckpointAbortRequested',
  'decision',
  record({ ...version, reason: t.string }, { failure: Failure }),
  'A failure or a deadline ends the checkpoint: every unit is to be thawed and partial images removed.',
);
export const CheckpointAborted = defineEvent(
  'CheckpointAborted',
  'decision',
  record({ ...version, reason: t.string }, { failure: Failure }),
  'Every unit was cleaned up after an abort; no partial checkpoint remains.',
);
export const CheckpointCompleted = defineEvent(
  'CheckpointCompleted',
  'decision',
  record({ ...version, outcome: t.union([t.literal('thawed'), t.literal('stopped')]) }),
  'The committed checkpoint finished: the job runs on (thawed) or was stopped (--stop).',
);
export const PruneRequested = defineEvent(
  'PruneRequested',
  'request',
  /** timeoutMs: how long the asker waits for every node to remove its part; with it, the coordinator
   *  decides what goes (PrunePlanned) and each node removes its own part. Without it (older histories)
   *  the agent that recorded it pruned its own images root. */
  record({ request: NonEmptyString, keep: NonNegativeInt }, { timeoutMs: PositiveInt }),
  'Someone asked to keep only the newest N committed versions.',
);
export const CheckpointPruned = defineEvent(
  'CheckpointPruned',
  'outcome',
  /** node: whose part was removed (absent: the images root of the agent that recorded it, before prunes were per node). */
  record({ ...version, bytes: NonNegativeInt }, { node: NodeId }),
  'A committed version’s images were removed from disk (from one node’s, when node is given).',
);

export const checkpointEvents = [
  CheckpointRequested,
  CheckpointPlanned,
  UnitFreezeRequested,
  UnitFrozen,
  UnitFreezeFailed,
  UnitDumpRequested,
  UnitDumped,
  UnitDumpFailed,
  UnitVerifyRequested,
  UnitVerified,
  UnitVerifyFailed,
  CheckpointCommitRequested,
  NodeCommitted,
  CheckpointCommitted,
  CheckpointCommitFailed,
  UnitThawRequested,
  UnitThawed,
  UnitThawFailed,
  UnitStopRequested,
  UnitStopped,
  UnitStopFailed,
  CheckpointAbortRequested,
  UnitAbortRequested,
  UnitAborted,
  UnitAbortFailed,
  CheckpointAborted,
  CheckpointCompleted,
  PruneRequested,
  CheckpointPruned,
] as const;
