// The RestartCoordinator: a decider like the checkpoint one, over the same job stream.
//
//   RestartRequested → RestartPlanned (version, unit placement, limits) + deadline
//   → UnitRestorePrepareRequested (cgroups with the unit's limits; PIDs free, or a new PID
//     namespace) → all prepared → UnitImagesVerifyRequested + UnitRestoreRequested: every file is
//     checked against the manifest's SHA-256 while CRIU restores, and the restored processes are
//     held (CRIU's post-restore notification) until the check has passed — a changed byte means they never
//     run — → all verified and restored → RestartCommitted. A restart whose units on several nodes
//     hold established TCP connections also waits at a barrier: each unit, restored with its
//     connections still locked, reports UnitRestoreHeld; once all have, RestartReleased lets them
//     unlock and resume together (a unit resumed alone would retransmit to a peer not restored yet,
//     and that host's kernel would reset the connection).
//   Any failure, or the deadline → RestartAbortRequested → UnitRollbackRequested (stop what was
//   restored, remove its cgroups) → all rolled back → RestartFailed.

import { type CheckpointState, withFailure } from './checkpoint-coordinator.js';
import type { ProposedEvent, RecordedEvent } from './event-store.js';
import type { CheckpointOptions } from './events/checkpoint.js';
import type { Failure } from './failure.js';
import type { NodeId, UnitId } from './identity.js';
import { authorize, reject, rejectExpired, requestDeadline } from './requests.js';

type UnitPhase = 'preparing' | 'prepared' | 'restoring' | 'restored' | 'rolling-back' | 'rolled-back';

export interface ActiveRestart {
  readonly restart: number;
  readonly version: number;
  readonly deadline: string;
  readonly phase: 'running' | 'aborting';
  /** The version's options (from its plan): restored the way they were dumped. */
  readonly options?: CheckpointOptions;
  readonly units: Readonly<Record<UnitId, { readonly node: NodeId; readonly phase: UnitPhase; readonly verified: boolean; readonly held?: boolean }>>;
  /** Every unit was held restored and the restart let them resume (RestartReleased). */
  readonly released?: boolean;
  readonly reason?: string;
  /** The failing step's class, message and hint, when its outcome carried one. */
  readonly failure?: Failure;
  /** The event (a failure, the deadline) that ended the restart: the one the abort answers. */
  readonly abortCause?: string;
}

export interface RestartState {
  /** Committed versions still on disk, with the node each unit was dumped on. */
  readonly versions: Readonly<Record<number, readonly { readonly unit: UnitId; readonly node: NodeId }[]>>;
  /** Planned versions, until committed (or forgotten when aborted). */
  readonly planned: Readonly<Record<number, readonly { readonly unit: UnitId; readonly node: NodeId }[]>>;
  /** Options of the versions planned with any (established TCP, file locks). */
  readonly options: Readonly<Record<number, CheckpointOptions>>;
  readonly lastRestart: number;
  /** Committed versions a node's agent last found damaged or gone (ImagesVerifyFailed): a prune keeps N others. */
  readonly damaged?: Readonly<Record<number, true>>;
  /** Requests not planned or refused yet. */
  readonly requests: readonly string[];
  readonly active?: ActiveRestart;
}

export const initialRestartState: RestartState = { versions: {}, planned: {}, options: {}, lastRestart: 0, requests: [] };

export const restartDeadlineId = (restart: number): string => `restart-r${restart}`;

const setUnit = (a: ActiveRestart, unit: UnitId, change: Partial<ActiveRestart['units'][UnitId]>): ActiveRestart =>
  a.units[unit] ? { ...a, units: { ...a.units, [unit]: { ...a.units[unit]!, ...change } } } : a;

/** A step moves a unit forward only while the restart is in that step's phase (see checkpoint-coordinator). */
const step = (s: RestartState, e: { data: { restart: number; unit: UnitId } }, during: ActiveRestart['phase'], change: Partial<ActiveRestart['units'][UnitId]>): RestartState =>
  s.active && s.active.restart === e.data.restart && s.active.phase === during ? { ...s, active: setUnit(s.active, e.data.unit, change) } : s;

export const evolveRestart = (s: RestartState, e: RecordedEvent): RestartState => {
  switch (e.type) {
    case 'CheckpointPlanned': {
      const planned = { ...s.planned, [e.data.version]: e.data.units.map(({ unit, node }) => ({ unit, node })) };
      return e.data.options ? { ...s, planned, options: { ...s.options, [e.data.version]: e.data.options } } : { ...s, planned };
    }
    case 'CheckpointCommitted':
      return s.planned[e.data.version] ? { ...s, versions: { ...s.versions, [e.data.version]: s.planned[e.data.version]! } } : s;
    case 'CheckpointPruned': {
      const { [e.data.version]: _, ...versions } = s.versions;
      return { ...s, versions };
    }
    case 'ImagesVerifyFailed':
      return s.versions[e.data.version] ? { ...s, damaged: { ...s.damaged, [e.data.version]: true } } : s;
    case 'ImagesVerified': {
      // Every node's part must verify: one node's good part does not undo another's damage, so
      // only a version whose only node answered is cleared (the conservative side: kept longer).
      const nodes = new Set((s.versions[e.data.version] ?? []).map((u) => u.node));
      if (!s.damaged?.[e.data.version] || nodes.size !== 1) return s;
      const { [e.data.version]: _, ...damaged } = s.damaged;
      return { ...s, damaged };
    }
    case 'PrunePlanned':
      // Decided pruned: not restorable from here on, whichever node has removed its part yet.
      return { ...s, versions: Object.fromEntries(Object.entries(s.versions).filter(([v]) => !e.data.versions.includes(Number(v)))) };
    case 'RestartRequested':
      return { ...s, requests: [...s.requests, e.data.request] };
    case 'RequestRejected':
      return e.data.command === 'restart' ? { ...s, requests: s.requests.filter((r) => r !== e.data.request) } : s;
    case 'RestartPlanned':
      return {
        ...s,
        requests: s.requests.filter((r) => r !== e.data.request),
        lastRestart: e.data.restart,
        active: {
          restart: e.data.restart,
          version: e.data.version,
          deadline: '',
          phase: 'running',
          ...(e.data.options && { options: e.data.options }),
          units: Object.fromEntries(e.data.units.map((u) => [u.unit, { node: u.node, phase: 'preparing' as UnitPhase, verified: false }])),
        },
      };
    case 'DeadlineScheduled':
      return s.active && e.data.deadline === restartDeadlineId(s.active.restart) ? { ...s, active: { ...s.active, deadline: e.data.at } } : s;
    case 'UnitImagesVerified':
      return step(s, e, 'running', { verified: true });
    case 'UnitRestorePrepared':
      return step(s, e, 'running', { phase: 'prepared' });
    case 'UnitRestoreRequested':
      return step(s, e, 'running', { phase: 'restoring' });
    case 'UnitRestored':
      return step(s, e, 'running', { phase: 'restored' });
    case 'UnitRestoreHeld':
      return step(s, e, 'running', { held: true });
    case 'RestartReleased':
      return s.active?.restart === e.data.restart ? { ...s, active: { ...s.active, released: true } } : s;
    case 'UnitImagesVerifyFailed':
    case 'UnitRestorePrepareFailed':
    case 'UnitRestoreFailed':
    case 'DeadlineReached': {
      // The first failure (or the deadline) ends the restart in the fold itself (see checkpoint-coordinator).
      const a = s.active;
      const ends = a?.phase === 'running' && (e.type === 'DeadlineReached' ? e.data.deadline === restartDeadlineId(a.restart) : e.data.restart === a.restart);
      if (!ends) return s;
      const reason = e.type === 'DeadlineReached' ? `the deadline ${a.deadline} passed before every unit was restored` : `${e.type} on unit ${e.data.unit}: ${e.data.reason}`;
      return { ...s, active: { ...a, phase: 'aborting', reason, ...withFailure(e), abortCause: e.id } };
    }
    case 'RestartAbortRequested':
      return s.active?.restart === e.data.restart ? { ...s, active: { ...s.active, phase: 'aborting', reason: e.data.reason, ...withFailure(e) } } : s;
    case 'UnitRollbackRequested':
      return step(s, e, 'aborting', { phase: 'rolling-back' });
    case 'UnitRolledBack':
    case 'UnitRollbackFailed':
      return step(s, e, 'aborting', { phase: 'rolled-back' });
    case 'RestartCommitted':
    case 'RestartFailed':
      return s.active?.restart === e.data.restart ? { ...s, active: undefined } : s;
    default:
      return s;
  }
};

/** Whether a restart holds every restored unit until all are (established connections across nodes). */
export const holdsUnits = (a: ActiveRestart): boolean => !!a.options?.tcpEstablished && new Set(Object.values(a.units).map((u) => u.node)).size > 1;

const every = (a: ActiveRestart, phase: UnitPhase) => Object.values(a.units).every((u) => u.phase === phase);
const verified = (a: ActiveRestart) => Object.values(a.units).every((u) => u.verified);
const each = (a: ActiveRestart, type: string) => Object.entries(a.units).map(([unit, u]) => ({ type, data: { restart: a.restart, unit, node: u.node } }) as ProposedEvent);

const abort = (a: ActiveRestart, reason: string): ProposedEvent[] => [
  { type: 'RestartAbortRequested', data: { restart: a.restart, reason, ...(a.failure && { failure: a.failure }) } },
  ...each(a, 'UnitRollbackRequested'),
];

/** What must happen after `event`: `checkpoint` is the checkpoint coordinator's state at the same point. */
export const decideRestart = (s: RestartState, checkpoint: CheckpointState, event: RecordedEvent): ProposedEvent[] => {
  const a = s.active;
  switch (event.type) {
    case 'RestartRequested': {
      const { request, version: asked, placement } = event.data;
      const job = checkpoint.job;
      const refused = authorize(job, event, 'restart');
      if (refused) return reject(request, 'restart', 'unauthorized', refused);
      if (a) return reject(request, 'restart', 'busy', `restart r${a.restart} of ${job.job} is still in progress`);
      if (s.requests[0] !== request) return reject(request, 'restart', 'busy', `restart request ${s.requests[0]} of ${job.job} is being planned`);
      if (checkpoint.active) return reject(request, 'restart', 'busy', `checkpoint v${checkpoint.active.version} of ${job.job} is in progress`);
      const committed = Object.keys(s.versions).map(Number);
      const version = asked ?? (committed.length > 0 ? Math.max(...committed) : undefined);
      if (version === undefined) return reject(request, 'restart', 'not-found', `job ${job.job} has no committed checkpoint to restart from (ckpt checkpoint ${job.job} --wait)`);
      const units = s.versions[version];
      if (!units) return reject(request, 'restart', 'not-found', `version ${version} of ${job.job} is not a committed checkpoint on disk (ckpt checkpoints ${job.job} lists them)`);
      const unknown = placement.filter((p) => !units.some((u) => u.unit === p.unit));
      if (unknown.length > 0) return reject(request, 'restart', 'invalid', `version ${version} has no unit ${unknown.map((p) => p.unit).join(', ')}`);
      const placed = units.map((u) => ({ unit: u.unit, node: placement.find((p) => p.unit === u.unit)?.node ?? u.node }));
      const options = s.options[version];
      for (const u of placed) {
        const node = checkpoint.nodes[u.node];
        if (!node?.usable) return reject(request, 'restart', 'unsupported', `node ${u.node} has no usable checkpointer${node ? `: ${node.problems.join('; ')}` : ' (is its agent running?)'}`);
      }
      const restart = s.lastRestart + 1;
      const planned = placed.map((u) => ({ ...u, images: `${job.job}/v${version}/${u.unit}`, limits: job.units[u.unit]?.limits ?? {} }));
      return [
        { type: 'RestartPlanned', data: { restart, request, version, units: planned, ...(options && { options }) } },
        { type: 'DeadlineScheduled', data: { deadline: restartDeadlineId(restart), at: requestDeadline(event), purpose: `restart r${restart} of ${job.job}` } },
        ...planned.map((u): ProposedEvent => ({ type: 'UnitRestorePrepareRequested', data: { restart, unit: u.unit, node: u.node } })),
      ];
    }
    case 'UnitRestorePrepared':
      // The check and the restore run together; the restored processes wait for the check.
      if (a?.phase !== 'running' || !every(a, 'prepared')) return [];
      return Object.entries(a.units).flatMap(([unit, u]) =>
        ['UnitImagesVerifyRequested', 'UnitRestoreRequested'].map((type) => ({ type, data: { restart: a.restart, unit, node: u.node } }) as ProposedEvent),
      );
    case 'UnitRestoreHeld':
      return a?.phase === 'running' && !a.released && event.data.restart === a.restart && Object.values(a.units).every((u) => u.held)
        ? [{ type: 'RestartReleased', data: { restart: a.restart } }]
        : [];
    case 'UnitImagesVerified':
    case 'UnitRestored':
      return a?.phase === 'running' && every(a, 'restored') && verified(a)
        ? [
            { type: 'RestartCommitted', data: { restart: a.restart, version: a.version } },
            { type: 'DeadlineCancelled', data: { deadline: restartDeadlineId(a.restart), reason: 'completed' } },
          ]
        : [];
    case 'UnitImagesVerifyFailed':
    case 'UnitRestorePrepareFailed':
    case 'UnitRestoreFailed':
    case 'DeadlineReached':
      return a?.abortCause === event.id ? abort(a, a.reason ?? 'aborted') : [];
    case 'RequestExpired':
      return event.data.command === 'restart' && s.requests.includes(event.data.request) ? rejectExpired(event.data.request, 'restart', event.data.deadline) : [];
    case 'UnitRolledBack':
    case 'UnitRollbackFailed':
      return a?.phase === 'aborting' && every(a, 'rolled-back')
        ? [
            { type: 'RestartFailed', data: { restart: a.restart, reason: a.reason ?? 'aborted', ...(a.failure && { failure: a.failure }) } },
            { type: 'DeadlineCancelled', data: { deadline: restartDeadlineId(a.restart), reason: 'aborted' } },
          ]
        : [];
    default:
      return [];
  }
};
