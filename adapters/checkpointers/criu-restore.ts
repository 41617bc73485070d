// Restoring a process tree over CRIU's RPC interface.
//
// CRIU restores detached under `criu swrk`, which exits after its answer: the tree is re-parented
// as with `criu restore -d`, and the response carries the root's pid (no pid file). CRIU enters
// the unit's cgroups before it starts (the bridge moves it), so what it restores is born there.
// A root that was pid 1 when dumped was a PID namespace init: CRIU recreates that namespace
// itself, and the response's pid is the root's pid on the host.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { RestoreStats } from '../../domain/events/restart.js';
import type { NetworkLock } from './criu-dump.js';
import { readPstree } from './criu-images.js';
import { sealForRoot } from './criu-owner.js';
import { pidClashHint, restoreInNewPidNamespace } from './criu-restore-pidns.js';
import { type CriuCall, type CriuIdentity, callCriu, type NotifyHandler, replyError } from './criu-rpc.js';
import { readRestoreStats } from './criu-stats.js';

export interface RestoreOptions {
  readonly criu: string;
  readonly imagesDir: string;
  readonly shellJob?: boolean;
  /** Restore established TCP connections (dumped with tcpEstablished); the network is locked until resume. */
  readonly tcpEstablished?: boolean;
  readonly networkLock?: NetworkLock;
  readonly fileLocks?: boolean;
  /**
   * Restore into a new PID namespace, so the original PIDs cannot collide with live processes
   * (criu-restore-pidns.ts: exec based, criu stays the namespace's init; no notifications there).
   * Not needed for a dump whose root was already a PID namespace init (pid 1 in pstree.img):
   * CRIU recreates that namespace by itself.
   */
  readonly pidNamespace?: boolean;
  /** The call returns once the tree runs; criu does not stay the tree's parent (except as ns init). */
  readonly detach: true;
  /** Where restore.log and stats-restore go (default: the images directory, which must then be
   *  writable — a committed version's directory should not change: pass another one). */
  readonly workDir?: string;
  /** Restore into these cgroup directories (criu enters them first; manage_cgroups IGNORE). */
  readonly cgroups?: readonly string[];
  /**
   * CRIU's notifications (pre-restore, setup-namespaces, post-setup-namespaces, post-restore,
   * network-unlock, pre-resume, post-resume), answered in-process. false at post-restore (every
   * process restored, none resumed) makes CRIU kill what it restored: nothing ever runs. CRIU
   * (4.1, 4.2) only logs a failed pre-resume answer and resumes the tree all the same.
   */
  readonly onNotify?: NotifyHandler;
  readonly timeoutMs?: number;
  /** criu acts as this user (criu-owner.ts: restoreIdentity); its logs are root's 0600 afterwards. */
  readonly runAs?: CriuIdentity;
}

export interface RestoreResult {
  /** Host PID of the restored root (the PID in our namespace). */
  readonly rootPid: number;
  /** The root's PID inside the new PID namespace (its original PID), when one was created. */
  readonly nsRootPid?: number;
  /** Host PID of the criu process acting as the new namespace's init, when ckpt made one. */
  readonly nsInitPid?: number;
  readonly durationMs: number;
  /** Path of restore.log. */
  readonly log: string;
  /** CRIU's stats-restore (undefined if it wrote none). */
  readonly stats?: RestoreStats;
  /** The notifications CRIU sent, in order. */
  readonly notified?: readonly string[];
}

/** Restores the tree of `imagesDir`. Throws a CriuError with CRIU's cr_errno/cr_errmsg and the log's error lines. */
export const restoreTree = async (options: RestoreOptions): Promise<RestoreResult> => {
  const dir = resolve(options.imagesDir);
  const work = resolve(options.workDir ?? dir);
  const log = join(work, 'restore.log');
  if (!existsSync(join(dir, 'pstree.img'))) throw new Error(`${dir} holds no CRIU dump (no pstree.img)`);
  const ownNamespace = readPstree(dir)[0]?.pid === 1;
  if (options.pidNamespace === true && !ownNamespace) {
    const tail = [
      ...(options.workDir ? ['-W', work] : []),
      ...(options.cgroups ? ['--manage-cgroups=ignore'] : []),
      ...(options.shellJob ? ['--shell-job'] : []),
      ...(options.tcpEstablished ? ['--tcp-established'] : []),
      ...(options.networkLock ? ['--network-lock', options.networkLock] : []),
      ...(options.fileLocks ? ['--file-locks'] : []),
    ];
    const r = await restoreInNewPidNamespace(options.criu, dir, work, tail, options.timeoutMs ?? 120_000, options.cgroups, options.runAs);
    return { ...r, ...withStats(work) };
  }
  const call: CriuCall = {
    criu: options.criu,
    type: 'RESTORE',
    imagesDir: dir,
    ...(options.workDir !== undefined && { workDir: work }),
    opts: {
      logFile: 'restore.log',
      logLevel: 4,
      ...(options.cgroups && { manageCgroupsMode: 'IGNORE' }),
      ...(options.shellJob && { shellJob: true }),
      ...(options.tcpEstablished && { tcpEstablished: true }),
      ...(options.networkLock && { networkLock: options.networkLock === 'nftables' ? 'NFTABLES' : 'IPTABLES' }),
      ...(options.fileLocks && { fileLocks: true }),
    },
    ...(options.cgroups && { cgroups: options.cgroups }),
    ...(options.onNotify && { onNotify: options.onNotify }),
    ...(options.timeoutMs !== undefined && { timeoutMs: options.timeoutMs }),
    ...(options.runAs && { runAs: options.runAs }),
  };
  const reply = await callCriu(call);
  if (options.runAs) sealForRoot(work);
  const rootPid = reply.response?.restore?.pid;
  if (reply.response?.success !== true || reply.problem !== undefined || rootPid === undefined || rootPid <= 0) {
    throw replyError(`criu restore from ${dir}`, call, reply, log, pidClashHint);
  }
  return {
    rootPid,
    ...(ownNamespace && { nsRootPid: 1 }),
    durationMs: reply.durationMs,
    log,
    ...withStats(work),
    notified: reply.notified,
  };
};

const withStats = (work: string): { stats?: RestoreStats } => {
  const stats = readRestoreStats(work);
  return stats ? { stats } : {};
};
