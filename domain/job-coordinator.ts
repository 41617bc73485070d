// The coordinator of a job: the checkpoint and restart deciders over one state, as one Decider —
// what the node agents run and what `ckpt verify` re-derives. One cause, one batch of decisions.

import { type CheckpointState, concernsCheckpoint, decideCheckpoint, evolveCheckpoint, initialCheckpointState } from './checkpoint-coordinator.js';
import type { Decider } from './decider.js';
import type { RecordedEvent } from './event-store.js';
import { decidePrune } from './prune.js';
import { decideRestart, evolveRestart, initialRestartState, type RestartState } from './restart-coordinator.js';

export interface JobCoordinatorState {
  readonly checkpoint: CheckpointState;
  readonly restart: RestartState;
}

export const initialJobCoordinator = (job: string): JobCoordinatorState => ({ checkpoint: initialCheckpointState(job), restart: initialRestartState });

export const evolveJobCoordinator = (s: JobCoordinatorState, e: RecordedEvent): JobCoordinatorState => ({
  checkpoint: evolveCheckpoint(s.checkpoint, e),
  restart: e.stream.startsWith('job-') ? evolveRestart(s.restart, e) : s.restart,
});

export const decideJobCoordinator = (s: JobCoordinatorState, e: RecordedEvent) => [
  ...decideCheckpoint(s.checkpoint, e),
  ...decideRestart(s.restart, s.checkpoint, e),
  ...decidePrune(s.restart, s.checkpoint.job, e),
];

export const jobCoordinator = (job: string): Decider<JobCoordinatorState> => ({
  initial: initialJobCoordinator(job),
  evolve: evolveJobCoordinator,
  decide: decideJobCoordinator,
  concerns: (e) => concernsCheckpoint(job, e),
});
