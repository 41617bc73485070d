// Launching a job unit on this node so that no process escapes tracking:
//   1. JobSubmitted + UnitAssigned (expected revision: no stream, so a job id is taken once);
//   2. the node agent creates the unit's cgroups → UnitCgroupsCreated;
//   3. the root starts in a new session, held at a gate (it waits on fd 3 before exec);
//   4. it is moved into the cgroups → UnitLaunched; the agent tracks it → UnitTracked;
//   5. the gate opens: fds above 2 are closed (none reaches the job: CRIU needs that) and the
//      command is exec'd. Everything it forks from then on is seen by the agent.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { filter, firstValueFrom, timeout } from 'rxjs';
import type { EventStore, RecordedEvent } from '../../domain/event-store.js';
import type { Limits, UnitCgroup } from '../../domain/events/job.js';
import { jobStream, type NodeId } from '../../domain/identity.js';
import { addProcess } from '../cgroups/unit-cgroups.js';
import { primaryCgroup, readCgroups, readStat } from '../tracking/procfs.js';

export const MAIN_UNIT = 'main';

/**
 * The gate: wait for the launcher's go on fd 3, then close every descriptor above 2 — fd 3 and
 * any the launcher itself inherited without close-on-exec (libuv does not close those) — and
 * become the command. The glob is expanded by the shell itself: no fork before the exec. bash,
 * because dash cannot name descriptors above 9 in a redirection.
 */
const GATE_SHELL = existsSync('/bin/bash') ? '/bin/bash' : '/bin/sh';
const GATE = 'read -r go <&3 || exit 125; for f in /proc/self/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done; exec "$@"';

/** PATH lookup as the shell would do it, so a missing command fails before anything is recorded. */
export const resolveCommand = (command: string, path = process.env.PATH ?? ''): string | undefined => {
  const candidates = command.includes('/') ? [command] : path.split(delimiter).filter(Boolean).map((dir) => join(dir, command));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
};

export interface LaunchRequest {
  readonly store: EventStore;
  readonly job: string;
  readonly node: NodeId;
  readonly owner: { uid: number; user?: string };
  readonly command: readonly string[];
  readonly cwd: string;
  readonly limits: Limits;
  /** stdio of the root: inherited (foreground) or file descriptors (detached). */
  readonly stdio: ['inherit' | 'ignore' | number, 'inherit' | number, 'inherit' | number];
  readonly agentTimeoutMs?: number;
  readonly onProgress?: (what: string) => void;
}

export interface Launched {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly startTime: number;
}

export class LaunchError extends Error {
  override readonly name = 'LaunchError';
}

const waitFor = (store: EventStore, job: string, from: number, wanted: (e: RecordedEvent) => boolean, what: string, ms: number) =>
  firstValueFrom(store.subscribeStream(jobStream(job), { from }).pipe(filter(wanted), timeout({ first: ms }))).catch((error: Error) => {
    throw new LaunchError(error.name === 'TimeoutError' ? `the node agent did not ${what} within ${ms / 1000} s (see ckpt agent status)` : error.message);
  });

export const launchUnit = async (r: LaunchRequest): Promise<Launched> => {
  const ms = r.agentTimeoutMs ?? 15_000;
  const unit = MAIN_UNIT;
  const { revision } = await r.store.append(
    jobStream(r.job),
    [
      { type: 'JobSubmitted', data: { job: r.job, owner: r.owner } },
      { type: 'UnitAssigned', data: { unit, node: r.node, command: [...r.command], cwd: r.cwd, limits: r.limits } },
    ],
    { expectedRevision: 'no_stream' },
  );
  r.onProgress?.('waiting for the node agent to create the unit’s cgroups');
  const created = await waitFor(r.store, r.job, revision + 1, (e) => (e.type === 'UnitCgroupsCreated' || e.type === 'UnitLaunchFailed') && e.data.unit === unit, 'create the unit’s cgroups', ms);
  if (created.type === 'UnitLaunchFailed') throw new LaunchError(created.data.reason);
  const cgroups = (created.data as { cgroups: UnitCgroup[] }).cgroups;

  const child = spawn(GATE_SHELL, ['-c', GATE, 'ckpt-gate', ...r.command], { cwd: r.cwd, detached: true, stdio: [...r.stdio, 'pipe'] });
  const gate = child.stdio[3] as NodeJS.WritableStream | null;
  const fail = async (reason: string): Promise<never> => {
    child.kill('SIGKILL');
    await r.store.append(jobStream(r.job), [{ type: 'UnitLaunchFailed', data: { unit, node: r.node, reason } }]);
    throw new LaunchError(reason);
  };
  if (!child.pid || !gate) return fail(`could not start ${GATE_SHELL} for the unit’s root`);
  try {
    addProcess(cgroups, child.pid);
  } catch (error) {
    return fail(`could not move the root into the unit’s cgroups: ${(error as Error).message}`);
  }
  const stat = readStat(child.pid);
  const groups = readCgroups(child.pid);
  if (!stat || !groups) return fail('the root process exited before it was launched');
  const launched = await r.store.append(jobStream(r.job), [
    { type: 'UnitLaunched', data: { unit, node: r.node, root: { pid: stat.pid, startTime: stat.startTime }, pgid: stat.pgid, sid: stat.sid, comm: stat.comm, cgroup: primaryCgroup(groups) } },
  ]);
  r.onProgress?.('waiting for the node agent to track the unit');
  const tracked = await waitFor(r.store, r.job, launched.revision + 1, (e) => (e.type === 'UnitTracked' || e.type === 'UnitLaunchFailed') && e.data.unit === unit, 'track the unit', ms).catch((error: Error) => fail(error.message));
  if (tracked.type === 'UnitLaunchFailed') return fail(tracked.data.reason);
  gate.end('go\n');
  return { child, pid: stat.pid, startTime: stat.startTime };
};
