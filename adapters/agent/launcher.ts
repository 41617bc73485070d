// Launching a job unit on this node so that no process escapes tracking:
//   1. JobSubmitted + UnitAssigned (expected revision: no stream, so a job id is taken once);
//   2. the node agent creates the unit's cgroups → UnitCgroupsCreated;
//   3. the root starts in a new session and (where the node can) as PID 1 of a new PID namespace,
//      held at a gate (it reports its host PID on fd 3, then waits there before it forks the command);
//   4. the launcher claims it (UnitLaunched, a request to the node agent's gateway); the agent checks
//      it is the caller's, moves it into the cgroups and records UnitLaunched; it tracks it → UnitTracked;
//   5. the gate opens: fds above 2 are closed, the gate too (none reaches the job: CRIU needs that)
//      and the command is exec'd. Everything it forks from then on is seen by the agent.
// A foreground launch learns the command's end from the log, as the agent recorded it: the job
// holds nothing that leads back to the launcher, so it can be checkpointed while it waits.
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { type EventStore, type ProposedEvent, type RecordedEvent, WrongExpectedRevisionError } from '../../domain/event-store.js';
import type { JobOptions, Limits } from '../../domain/events/job.js';
import { jobStream, type NodeId, type ProcessRef } from '../../domain/identity.js';
import { filter, firstValueFrom, timeout } from '../../domain/rx.js';
import { jobInfo } from '../../projections/jobs.js';
import { readStat } from '../tracking/procfs.js';

export const MAIN_UNIT = 'main';

/**
 * The unit's init (adapters/agent/unit-init.c): PID 1 of the unit's own PID namespace (where the
 * node can make one) and a child subreaper. It reports its host PID on fd 3 ("root PID"), waits
 * for the launcher's go there, closes every descriptor above 2 (fd 3, and any the launcher
 * inherited without close-on-exec: libuv does not close those), forks the command and stays the
 * unit's first process, so processes that daemonize are re-parented to it and the unit remains
 * one tree whose root is a namespace init. The command is the init's first and only fork. The
 * process spawned here is not that init: it only makes the namespace, reports the init and exits.
 */
export const unitInitPath: string = fileURLToPath(new URL('../../native/ckpt-unit-init', import.meta.url));

/** PATH lookup as the shell would do it, so a missing command fails before anything is recorded. */
export const resolveCommand = (command: string, path = process.env.PATH ?? ''): string | undefined => {
  const candidates = command.includes('/')
    ? [command]
    : path
        .split(delimiter)
        .filter(Boolean)
        .map((dir) => join(dir, command));
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
  /** The unit's name (default MAIN_UNIT). */
  readonly unit?: string;
  /** Add the unit to the job if the job exists already (a job of several units, on several nodes). */
  readonly join?: boolean;
  readonly node: NodeId;
  readonly owner: { uid: number; user?: string };
  readonly command: readonly string[];
  readonly cwd: string;
  readonly limits: Limits;
  /** Options of every checkpoint of the job (recorded in JobSubmitted; ignored when joining a job). */
  readonly options?: JobOptions;
  /** stdio of the root: inherited (foreground) or file descriptors (detached). */
  readonly stdio: ['inherit' | 'ignore' | number, 'inherit' | number, 'inherit' | number];
  /** Follow the command's end in the log (foreground): see Launched.ended. */
  readonly reportEnd?: boolean;
  readonly agentTimeoutMs?: number;
  readonly onProgress?: (what: string) => void;
}

/** How the command ended: its exit status, or the signal that killed it. */
export type CommandEnd = { readonly exit: number } | { readonly signal: number };

export interface Launched {
  readonly child: ChildProcess;
  /** Foreground launches: resolves when the command's exit is recorded (its daemons may live on
   *  in the unit). A checkpoint --stop or kill -9 of the job ends it too ({signal: 9}); a restart
   *  of the job is another process: it is not followed. */
  readonly ended?: Promise<CommandEnd>;
  /** The unit's root (its init) as the host sees it: PID 1 of the unit's PID namespace inside. */
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
  const unit = r.unit ?? MAIN_UNIT;
  const assigned: ProposedEvent = { type: 'UnitAssigned', data: { unit, node: r.node, command: [...r.command], cwd: r.cwd, limits: r.limits } };
  const { revision } = await r.store
    .append(jobStream(r.job), [{ type: 'JobSubmitted', data: { job: r.job, owner: r.owner, ...(r.options && Object.values(r.options).some(Boolean) && { options: r.options }) } }, assigned], {
      expectedRevision: 'no_stream',
    })
    .catch(async (error) => {
      if (!(error instanceof WrongExpectedRevisionError) || !r.join) throw error;
      const job = await jobInfo(r.store, r.job);
      if (job?.units[unit]) throw new LaunchError(`job ${r.job} already has a unit ${unit} (on ${job.units[unit].node}): choose another --unit`);
      if (job?.phase === 'ended') throw new LaunchError(`job ${r.job} has ended: units cannot join it`);
      return r.store.append(jobStream(r.job), [assigned], { expectedRevision: 'stream_exists' });
    });
  r.onProgress?.('waiting for the node agent to create the unit’s cgroups');
  const created = await waitFor(r.store, r.job, revision + 1, (e) => (e.type === 'UnitCgroupsCreated' || e.type === 'UnitLaunchFailed') && e.data.unit === unit, 'create the unit’s cgroups', ms);
  if (created.type === 'UnitLaunchFailed') throw new LaunchError(created.data.reason);

  if (!existsSync(unitInitPath)) throw new LaunchError(`${unitInitPath} is missing: build ckpt with a C compiler (npm run build)`);
  const child = spawn(unitInitPath, [...r.command], { cwd: r.cwd, detached: true, stdio: [...r.stdio, 'pipe'] });
  // Node's 'pipe' for fd 3 is a unix socket pair: the init reports its PID on it, then reads the go.
  const gate = child.stdio[3] as Duplex | null;
  let rootPid: number | undefined;
  const fail = async (reason: string): Promise<never> => {
    for (const pid of [rootPid, child.pid]) {
      try {
        if (pid !== undefined) process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    await r.store.append(jobStream(r.job), [{ type: 'UnitLaunchFailed', data: { unit, node: r.node, reason } }]);
    throw new LaunchError(reason);
  };
  if (!child.pid || !gate) return fail(`could not start ${unitInitPath} for the unit`);
  rootPid = await reportedRoot(gate).catch((error: Error) => fail(error.message));
  // Before the go, the root has forked nothing: moving it alone moves the whole unit. The agent
  // moves it (a user cannot write to the unit's cgroups), once it checked the process is ours,
  // and records UnitLaunched from what it reads itself: of this claim only unit and root count.
  const stat = readStat(rootPid);
  if (!stat) return fail('the root process exited before it was launched');
  const root = { pid: stat.pid, startTime: stat.startTime };
  const launched = await r.store
    .append(jobStream(r.job), [{ type: 'UnitLaunched', data: { unit, node: r.node, root, pgid: stat.pgid, sid: stat.sid, comm: stat.comm, cgroup: '' } }])
    .catch((error: Error) => fail(error.message));
  r.onProgress?.('waiting for the node agent to track the unit');
  const tracked = await waitFor(r.store, r.job, launched.revision + 1, (e) => (e.type === 'UnitTracked' || e.type === 'UnitLaunchFailed') && e.data.unit === unit, 'track the unit', ms).catch(
    (error: Error) => fail(error.message),
  );
  if (tracked.type === 'UnitLaunchFailed') return fail(tracked.data.reason);
  const ended = r.reportEnd ? commandEnd(r.store, r.job, unit, root, tracked.revision + 1) : undefined;
  gate.end('go\n');
  return { child, pid: stat.pid, startTime: stat.startTime, ...(ended && { ended }) };
};

/** The init's first line on fd 3: "root PID" (its host PID: a new PID namespace's PID 1, or itself). */
const reportedRoot = (gate: Duplex): Promise<number> =>
  new Promise((resolve, reject) => {
    let text = '';
    const done = (error?: Error, pid?: number) => {
      gate.off('data', onData).off('end', onEnd).off('error', done);
      gate.pause();
      if (error) reject(error);
      else resolve(pid!);
    };
    const onData = (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const newline = text.indexOf('\n');
      if (newline === -1) return;
      const m = /^root (\d+)$/.exec(text.slice(0, newline));
      done(m ? undefined : new Error(`${unitInitPath} said "${text.slice(0, newline)}" instead of its root's PID`), Number(m?.[1]));
    };
    const onEnd = () => done(new Error(`${unitInitPath} ended before it reported the unit’s root`));
    gate.on('data', onData).once('end', onEnd).once('error', done);
  });

/**
 * The command's end as the node agent recorded it: the command is the root's first fork after
 * the unit is tracked (the init forks nothing else), and its ProcessExited says how it ended
 * (ProcessVanished: unknown, 125). Should the root end before that fork is seen (the command
 * could not be forked, or the agent missed it), the root's own end counts.
 */
const commandEnd = (store: EventStore, job: string, unit: string, root: ProcessRef, from: number): Promise<CommandEnd> => {
  let command: ProcessRef | undefined;
  const isEnd = (e: RecordedEvent) => e.type === 'ProcessExited' || e.type === 'ProcessVanished';
  return firstValueFrom(
    store.subscribeStream(jobStream(job), { from }).pipe(
      filter((e) => {
        const data = e.data as { unit?: string; parent?: ProcessRef; child?: ProcessRef; process?: ProcessRef };
        if (data.unit !== unit) return false;
        if (!command && e.type === 'ProcessForked' && sameProcess(data.parent, root)) command = data.child;
        return isEnd(e) && (sameProcess(data.process, root) || (command !== undefined && sameProcess(data.process, command)));
      }),
    ),
  )
    .then((e): CommandEnd => {
      const { status, signal } = e.data as { status?: number | null; signal?: number | null };
      return signal ? { signal } : { exit: status ?? 125 };
    })
    .catch((): CommandEnd => ({ exit: 125 }));
};
const sameProcess = (a: unknown, b: ProcessRef) => (a as ProcessRef | undefined)?.pid === b.pid && (a as ProcessRef).startTime === b.startTime;
