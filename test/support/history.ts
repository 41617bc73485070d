// A job's history as the agents record it, without running anything: submitted, launched, forks
// and exits, a committed checkpoint, an aborted one, a refused request, a restart that restored
// the job, one that failed, and a prune — in `phase`s, so a test can append part of it, read,
// and append the rest. Used by the read-model tests and scripts/bench/reads.ts.
import { openEventStore } from '../../adapters/store/open.js';
import type { ProposedEvent, RecordedEvent } from '../../domain/event-store.js';

const node = 'n1';
const unit = 'main';
const p = (pid: number) => ({ pid, startTime: pid * 10 });
const on = (pid: number) => ({ node, unit, process: p(pid) });
const user = { kind: 'user' as const, uid: 1000, gid: 1000, user: 'alice' };
const other = { kind: 'user' as const, uid: 2000, gid: 2000 };
const agent = { kind: 'coordinator' as const, node };

/** `count` short-lived children of `parent`, pids from `first`: forked, exec'd, exited. */
export const forkStorm = (first: number, count: number, parent = 100): ProposedEvent[] =>
  Array.from({ length: count }, (_, i): ProposedEvent[] => [
    { type: 'ProcessForked', data: { node, unit, parent: p(parent), child: p(first + i) } },
    { type: 'ProcessExecd', data: { ...on(first + i), comm: 'true' } },
    { type: 'ProcessExited', data: { ...on(first + i), status: 0, signal: null } },
  ]).flat();

/** `count` children of `parent`, pids from `first`, that keep running. */
export const longLived = (first: number, count: number, parent = 100): ProposedEvent[] =>
  Array.from({ length: count }, (_, i): ProposedEvent => ({ type: 'ProcessForked', data: { node, unit, parent: p(parent), child: p(first + i) } }));

export const submitted = (job: string, owner = 1000): ProposedEvent[] => [
  { type: 'JobSubmitted', data: { job, owner: { uid: owner, gid: owner } }, metadata: { actor: { ...user, uid: owner, gid: owner } } },
  { type: 'UnitAssigned', data: { unit, node, command: ['sh', '-c', 'loop'], cwd: '/', limits: {} } },
  { type: 'UnitCgroupsCreated', data: { unit, node, cgroups: [{ controller: 'unified', path: `/ckpt/s/${job}/${unit}` }], limits: {} } },
  { type: 'UnitLaunched', data: { unit, node, root: p(100), pgid: 100, sid: 100, comm: 'sh', cgroup: `/ckpt/s/${job}/${unit}` } },
  { type: 'UnitTracked', data: { unit, node, root: p(100), stdio: [] } },
  { type: 'ProcessForked', data: { node, unit, parent: p(100), child: p(101) } },
  { type: 'ProcessForked', data: { node, unit, parent: p(101), child: p(102) } },
  { type: 'ProcessSessionChanged', data: { ...on(102), sid: 102, pgid: 102 } },
];

const planned = (version: number, request: string, parent: number | null): ProposedEvent => ({
  type: 'CheckpointPlanned',
  data: { version, request, parent, units: [{ unit, node, checkpointer: 'criu', scope: 'cgroup', strategy: 'freeze-cgroup', targets: [p(100), p(101), p(102)], images: `/images/v${version}` }] },
  metadata: { actor: agent },
});
const step = (version: number) => ({ version, unit, node });

/** A committed checkpoint (v1), an aborted one (v2) and a refused request, in that order. */
export const checkpoints = (): ProposedEvent[] => [
  { type: 'CheckpointRequested', data: { request: 'c1', stop: false, timeoutMs: 60_000 }, metadata: { actor: user } },
  planned(1, 'c1', null),
  { type: 'UnitFreezeRequested', data: step(1) },
  { type: 'UnitFrozen', data: { ...step(1), processes: 3, durationMs: 4 } },
  { type: 'UnitDumpRequested', data: step(1) },
  {
    type: 'UnitDumped',
    data: {
      ...step(1),
      files: 12,
      bytes: 4096,
      durationMs: 150,
      stats: { freezingMs: 1, frozenMs: 160, memdumpMs: 20, memwriteMs: 30, pagesScanned: 100, pagesSkippedParent: 0, pagesWritten: 90, pagesLazy: 0 },
    },
  },
  { type: 'UnitVerifyRequested', data: step(1) },
  { type: 'UnitVerified', data: { ...step(1), captured: [100, 101, 102] } },
  { type: 'CheckpointCommitRequested', data: { version: 1 } },
  { type: 'CheckpointCommitted', data: { version: 1, files: 12, bytes: 4096, durationMs: 9, manifest: 'a'.repeat(64) } },
  { type: 'UnitThawRequested', data: step(1) },
  { type: 'UnitThawed', data: { ...step(1), frozenMs: 180 } },
  { type: 'CheckpointCompleted', data: { version: 1, outcome: 'thawed' } },
  { type: 'CheckpointRequested', data: { request: 'c2', stop: false, timeoutMs: 60_000 }, metadata: { actor: user } },
  planned(2, 'c2', 1),
  { type: 'UnitFreezeRequested', data: step(2) },
  { type: 'UnitFreezeFailed', data: { ...step(2), reason: 'a vfork parent', failure: { class: 'timeout', message: 'a vfork parent', hint: 'try again' } } },
  { type: 'CheckpointAbortRequested', data: { version: 2, reason: 'UnitFreezeFailed on unit main: a vfork parent' } },
  { type: 'UnitAbortRequested', data: step(2) },
  { type: 'UnitAborted', data: { ...step(2), thawed: true, imagesRemoved: true } },
  { type: 'CheckpointAborted', data: { version: 2, reason: 'UnitFreezeFailed on unit main: a vfork parent' } },
  { type: 'CheckpointRequested', data: { request: 'c3', stop: false, timeoutMs: 60_000 }, metadata: { actor: other } },
  { type: 'RequestRejected', data: { request: 'c3', command: 'checkpoint', code: 'unauthorized', reason: 'uid 2000 does not own job' }, metadata: { actor: agent } },
];

const rstep = (restart: number) => ({ restart, unit, node });

/** The job killed, restored from v1 (a new PID namespace: new PIDs), then a restart that fails, and a prune. */
export const restarts = (): ProposedEvent[] => [
  { type: 'ProcessExited', data: { ...on(102), status: null, signal: 9 } },
  { type: 'ProcessExited', data: { ...on(101), status: null, signal: 9 } },
  { type: 'ProcessExited', data: { ...on(100), status: null, signal: 9 } },
  { type: 'UnitEnded', data: { unit, node, status: null, signal: 9 } },
  { type: 'RestartRequested', data: { request: 'r1', version: null, placement: [], timeoutMs: 60_000 }, metadata: { actor: user } },
  { type: 'RestartPlanned', data: { restart: 1, request: 'r1', version: 1, units: [{ unit, node, images: '/images/v1', limits: {} }] } },
  { type: 'UnitImagesVerifyRequested', data: rstep(1) },
  { type: 'UnitImagesVerified', data: { ...rstep(1), files: 12, bytes: 4096 } },
  { type: 'UnitRestorePrepareRequested', data: rstep(1) },
  { type: 'UnitRestorePrepared', data: { ...rstep(1), cgroups: [{ controller: 'unified', path: '/ckpt/s/j/main-r1' }], pidNamespace: true, waitedMs: 0 } },
  { type: 'UnitRestoreRequested', data: rstep(1) },
  {
    type: 'UnitRestored',
    data: {
      ...rstep(1),
      durationMs: 70,
      processes: [
        { was: p(100), now: p(500), nsPid: 1, pgid: 500, sid: 500, comm: 'sh' },
        { was: p(101), now: p(501), nsPid: 2 },
        { was: p(102), now: p(502), nsPid: 3 },
      ],
    },
  },
  { type: 'RestartCommitted', data: { restart: 1, version: 1 } },
  { type: 'RestartRequested', data: { request: 'r2', version: 1, placement: [], timeoutMs: 60_000 }, metadata: { actor: user } },
  { type: 'RestartPlanned', data: { restart: 2, request: 'r2', version: 1, units: [{ unit, node, images: '/images/v1', limits: {} }] } },
  { type: 'UnitImagesVerifyRequested', data: rstep(2) },
  { type: 'UnitImagesVerifyFailed', data: { ...rstep(2), reason: 'core-1.img: size differs', failure: { class: 'images', message: 'size differs' } } },
  { type: 'RestartAbortRequested', data: { restart: 2, reason: 'UnitImagesVerifyFailed on unit main' } },
  { type: 'RestartFailed', data: { restart: 2, reason: 'UnitImagesVerifyFailed on unit main' } },
  { type: 'PruneRequested', id: '00000000-0000-4000-8000-000000000001', data: { request: 'p1', keep: 1 }, metadata: { actor: user } },
  { type: 'CheckpointPruned', data: { version: 1, bytes: 4096 }, metadata: { causationId: '00000000-0000-4000-8000-000000000001' } },
];

/** The whole history of one job, in the phases a test appends one by one. */
export const jobPhases = (job: string, forks = 50): ProposedEvent[][] => [
  submitted(job),
  forkStorm(1000, forks, 101),
  checkpoints(),
  forkStorm(1000 + forks, forks, 101),
  restarts(),
  forkStorm(2000 + 2 * forks, forks, 501),
];

/** Recorded events appended one by one with their recorded clock, ids and metadata: the store's streams are the recording's. */
export const storeRecorded = async (url: string, events: readonly RecordedEvent[]): Promise<void> => {
  let now = new Date();
  const store = openEventStore(url, {
    actor: { kind: 'node', node: 'rec' },
    now: () => now,
    newId: () => {
      throw new Error('every event has its id');
    },
  });
  try {
    for (const e of events) {
      now = new Date(e.metadata.recordedAt);
      const { recordedAt: _, ...metadata } = e.metadata;
      await store.append(e.stream, [{ id: e.id, type: e.type, data: e.data, metadata } as ProposedEvent]);
    }
  } finally {
    await store.close();
  }
};
