// Which checkpoint commands of a job still wait for their outcome, and on which node: a pure fold
// of the job's stream. A node agent executes exactly these; after a crash it refolds the log and
// finds the ones it had not answered (a finished step is never repeated: its outcome is in the log).

import type { ImageFileEntry } from './checkpointer.js';
import type { RecordedEvent } from './event-store.js';
import type { EventType } from './events/catalogue.js';
import type { PlannedUnit } from './events/checkpoint.js';
import type { Limits, UnitCgroup } from './events/job.js';
import type { NodeId, ProcessRef, UnitId } from './identity.js';

export type Step = 'freeze' | 'dump' | 'verify' | 'thaw' | 'stop' | 'abort' | 'commit' | 'prune' | 'images-audit' | 'images-verify' | 'restore-prepare' | 'restore' | 'rollback';

/** Steps of a restart: their number is the restart's, not a checkpoint version. */
const restartSteps = ['images-verify', 'restore-prepare', 'restore', 'rollback'] as const satisfies readonly Step[];
export type RestartStep = (typeof restartSteps)[number];
export const RESTART_STEPS: ReadonlySet<Step> = new Set(restartSteps);

export interface PendingCommand {
  readonly key: string;
  readonly step: Step;
  /** The checkpoint version, or for restart steps the restart number. */
  readonly version: number;
  /** Every step but commit, prune and images-audit is for one unit. */
  readonly unit?: UnitId;
  /** The request an images-audit answers (several may ask about one version). */
  readonly asked?: string;
  /** Who executes it: the unit's node; a commit, each node holding units of the version (its own). */
  readonly node: NodeId;
  /** The request event: its id becomes the outcome's causationId. */
  readonly request: { readonly id: string; readonly recordedAt: string };
}

/** A process in a unit's images: its PID there, and who it was on the host. */
export interface CapturedProcess {
  readonly imagePid: number;
  readonly process: ProcessRef;
}

export interface VersionRecord {
  readonly parent: number | null;
  readonly units: readonly PlannedUnit[];
  /** UnitDumped outcomes, for the manifest. */
  readonly dumps: Readonly<Record<UnitId, { readonly durationMs: number; readonly bytes: number; readonly files: number; readonly images?: readonly ImageFileEntry[] }>>;
  /** When each unit was reported frozen. */
  readonly frozenAt: Readonly<Record<UnitId, string>>;
  /** The identities each unit's images hold (UnitVerified), by the PID the images give each
   *  (its PID in the unit's PID namespace): what restored processes were. */
  readonly captured: Readonly<Record<UnitId, readonly CapturedProcess[]>>;
  /** SHA-256 of each node's committed manifest (CheckpointCommitted): a restart checks its own. */
  readonly manifests?: Readonly<Record<NodeId, string>>;
}

export interface RestartRecord {
  readonly version: number;
  readonly units: ReadonlyArray<{ readonly unit: UnitId; readonly node: NodeId; readonly limits: Limits }>;
  /** UnitRestorePrepared outcomes: the cgroups made and whether a new PID namespace is needed. */
  readonly prepared: Readonly<Record<UnitId, { readonly cgroups: readonly UnitCgroup[]; readonly pidNamespace: boolean }>>;
}

export interface CheckpointCommands {
  readonly versions: Readonly<Record<number, VersionRecord>>;
  readonly restarts: Readonly<Record<number, RestartRecord>>;
  readonly pending: Readonly<Record<string, PendingCommand>>;
}

export const noCommands: CheckpointCommands = { versions: {}, restarts: {}, pending: {} };

/** Each step's request: what a node agent is asked to do. */
export const STEP_REQUESTS: Readonly<Record<string, Step>> = {
  UnitFreezeRequested: 'freeze',
  UnitDumpRequested: 'dump',
  UnitVerifyRequested: 'verify',
  UnitThawRequested: 'thaw',
  UnitStopRequested: 'stop',
  UnitAbortRequested: 'abort',
  UnitImagesVerifyRequested: 'images-verify',
  UnitRestorePrepareRequested: 'restore-prepare',
  UnitRestoreRequested: 'restore',
  UnitRollbackRequested: 'rollback',
};
/** Each step's two outcomes, done and failed: what a node agent answers a command with. */
export const STEP_OUTCOMES = {
  freeze: ['UnitFrozen', 'UnitFreezeFailed'],
  dump: ['UnitDumped', 'UnitDumpFailed'],
  verify: ['UnitVerified', 'UnitVerifyFailed'],
  thaw: ['UnitThawed', 'UnitThawFailed'],
  stop: ['UnitStopped', 'UnitStopFailed'],
  abort: ['UnitAborted', 'UnitAbortFailed'],
  commit: ['NodeCommitted', 'CheckpointCommitFailed'],
  prune: ['CheckpointPruned', 'ImagesPruneFailed'],
  'images-audit': ['ImagesVerified', 'ImagesVerifyFailed'],
  'images-verify': ['UnitImagesVerified', 'UnitImagesVerifyFailed'],
  'restore-prepare': ['UnitRestorePrepared', 'UnitRestorePrepareFailed'],
  restore: ['UnitRestored', 'UnitRestoreFailed'],
  rollback: ['UnitRolledBack', 'UnitRollbackFailed'],
} as const satisfies Record<Step, readonly [EventType, EventType]>;

const OUTCOMES: Readonly<Record<string, Step>> = Object.fromEntries(Object.entries(STEP_OUTCOMES).flatMap(([step, outcomes]) => outcomes.map((type) => [type, step as Step])));

export const commandKey = (step: Step, n: number, unit?: UnitId): string => `${step} ${RESTART_STEPS.has(step) ? 'r' : 'v'}${n}${unit ? ` ${unit}` : ''}`;

/** A commit is per node: its key names the node. */
export const commitKey = (version: number, node: NodeId): string => `${commandKey('commit', version)} ${node}`;

/** A prune is per node too; a check of a node's images per request as well. */
export const pruneKey = (version: number, node: NodeId): string => `${commandKey('prune', version)} ${node}`;
export const imagesAuditKey = (version: number, node: NodeId, request: string): string => `${commandKey('images-audit', version)} ${node} ${request}`;

const numberOf = (data: object): number => ('version' in data ? (data.version as number) : (data as { restart: number }).restart);

const without = (r: Readonly<Record<string, PendingCommand>>, key: string) => {
  const { [key]: _, ...rest } = r;
  return rest;
};

export const evolveCommands = (s: CheckpointCommands, e: RecordedEvent): CheckpointCommands => {
  if (e.type === 'CheckpointPlanned') {
    return { ...s, versions: { ...s.versions, [e.data.version]: { parent: e.data.parent, units: e.data.units, dumps: {}, frozenAt: {}, captured: {} } } };
  }
  if (e.type === 'UnitDumped') {
    const v = s.versions[e.data.version];
    const { durationMs, bytes, files, images } = e.data;
    if (v) s = { ...s, versions: { ...s.versions, [e.data.version]: { ...v, dumps: { ...v.dumps, [e.data.unit]: { durationMs, bytes, files, ...(images && { images }) } } } } };
  }
  if (e.type === 'UnitFrozen') {
    const v = s.versions[e.data.version];
    if (v) s = { ...s, versions: { ...s.versions, [e.data.version]: { ...v, frozenAt: { ...v.frozenAt, [e.data.unit]: e.metadata.recordedAt } } } };
  }
  if (e.type === 'UnitVerified' && e.data.processes) {
    const v = s.versions[e.data.version];
    // processes[i] is the host identity of the process the images hold as captured[i].
    const captured = e.data.processes.map((process, i) => ({ imagePid: e.data.captured[i] ?? process.pid, process }));
    if (v) s = { ...s, versions: { ...s.versions, [e.data.version]: { ...v, captured: { ...v.captured, [e.data.unit]: captured } } } };
  }
  if (e.type === 'CheckpointCommitRequested') {
    // Each node commits its own units on its own disk: nothing assumes a shared filesystem.
    const nodes = [...new Set(s.versions[e.data.version]?.units.map((u) => u.node))];
    const request = { id: e.id, recordedAt: e.metadata.recordedAt };
    const commits = nodes.map((node): PendingCommand => ({ key: commitKey(e.data.version, node), step: 'commit', version: e.data.version, node, request }));
    return { ...s, pending: { ...s.pending, ...Object.fromEntries(commits.map((c) => [c.key, c])) } };
  }
  if (e.type === 'ImagesPruneRequested' || e.type === 'ImagesVerifyRequested') {
    const { version, node } = e.data;
    const request = { id: e.id, recordedAt: e.metadata.recordedAt };
    const c: PendingCommand =
      e.type === 'ImagesPruneRequested'
        ? { key: pruneKey(version, node), step: 'prune', version, node, request }
        : { key: imagesAuditKey(version, node, e.data.request), step: 'images-audit', version, node, asked: e.data.request, request };
    return { ...s, pending: { ...s.pending, [c.key]: c } };
  }
  if ((e.type === 'CheckpointPruned' && e.data.node !== undefined) || e.type === 'ImagesPruneFailed') {
    return { ...s, pending: without(s.pending, pruneKey(e.data.version, e.data.node!)) };
  }
  if (e.type === 'ImagesVerified' || e.type === 'ImagesVerifyFailed') {
    return { ...s, pending: without(s.pending, imagesAuditKey(e.data.version, e.data.node, e.data.request)) };
  }
  if (e.type === 'NodeCommitted' || (e.type === 'CheckpointCommitFailed' && e.data.node !== undefined)) {
    return { ...s, pending: without(s.pending, commitKey(e.data.version, e.data.node!)) };
  }
  if (e.type === 'CheckpointCommitted' || e.type === 'CheckpointCommitFailed') {
    const v = s.versions[e.data.version];
    if (v && e.type === 'CheckpointCommitted') {
      // Before commits were per node, one manifest held every unit (the nodes shared a filesystem).
      const legacy = e.data.manifest;
      const manifests = e.data.nodes ? Object.fromEntries(Object.entries(e.data.nodes).map(([node, m]) => [node, m.manifest])) : legacy ? Object.fromEntries(v.units.map((u) => [u.node, legacy])) : {};
      s = { ...s, versions: { ...s.versions, [e.data.version]: { ...v, manifests } } };
    }
    const prefix = commandKey('commit', e.data.version);
    return { ...s, pending: Object.fromEntries(Object.entries(s.pending).filter(([key]) => key !== prefix && !key.startsWith(`${prefix} `))) };
  }
  if (e.type === 'RestartPlanned') {
    const units = e.data.units.map(({ unit, node, limits }) => ({ unit, node, limits }));
    return { ...s, restarts: { ...s.restarts, [e.data.restart]: { version: e.data.version, units, prepared: {} } } };
  }
  if (e.type === 'UnitRestorePrepared') {
    const r = s.restarts[e.data.restart];
    const { cgroups, pidNamespace } = e.data;
    if (r) s = { ...s, restarts: { ...s.restarts, [e.data.restart]: { ...r, prepared: { ...r.prepared, [e.data.unit]: { cgroups, pidNamespace } } } } };
  }
  const requested = STEP_REQUESTS[e.type];
  if (requested && 'unit' in e.data && 'node' in e.data) {
    const { unit, node } = e.data as { unit: UnitId; node: NodeId };
    const version = numberOf(e.data);
    const key = commandKey(requested, version, unit);
    return { ...s, pending: { ...s.pending, [key]: { key, step: requested, version, unit, node, request: { id: e.id, recordedAt: e.metadata.recordedAt } } } };
  }
  const answered = OUTCOMES[e.type];
  if (answered && 'unit' in e.data) {
    const { unit } = e.data as { unit: UnitId };
    return { ...s, pending: without(s.pending, commandKey(answered, numberOf(e.data), unit)) };
  }
  return s;
};

/** The commands waiting for `node`, oldest first. */
export const pendingOn = (s: CheckpointCommands, node: NodeId): PendingCommand[] => Object.values(s.pending).filter((c) => c.node === node);
