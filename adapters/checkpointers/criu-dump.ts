// Dumping a process tree over CRIU's RPC interface.
//
// `dump` with freeze_cgroup only WARNS "Unexpected process N in the freezer cgroup" for processes
// of the cgroup outside the dumped tree and still succeeds: dumpTree turns that into a failure.
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { DumpStats } from '../../domain/events/checkpoint.js';
import { CriuError, criuErrorLines, readLog } from './criu.js';
import { type ImageFile, imageFiles, readPstree } from './criu-images.js';
import { sealForRoot } from './criu-owner.js';
import { type CriuCall, type CriuIdentity, callCriu, type NotifyHandler, replyError } from './criu-rpc.js';
import { readDumpStats } from './criu-stats.js';

/** How CRIU locks the network while it dumps established TCP connections. */
export type NetworkLock = 'nftables' | 'iptables';

export interface DumpOptions {
  readonly criu: string;
  /** Root of the tree to dump (a pid in our PID namespace). */
  readonly pid: number;
  /** Created with mode 0700; must not hold a dump already. dump.log and stats-dump go there too. */
  readonly imagesDir: string;
  /** Keep the tree running after the dump (otherwise CRIU kills it once dumped). */
  readonly leaveRunning: boolean;
  /** Leave the tree stopped after the dump (established connections stay locked in repair). */
  readonly leaveStopped?: boolean;
  /** Needed when the root is not a session leader (it then shares a session/tty with an outsider). */
  readonly shellJob?: boolean;
  /** Freeze the tree with this cgroup (v1 freezer dir or v2 cgroup) instead of ptrace-stopping it. */
  readonly freezeCgroup?: string;
  /** Dump established TCP connections (TCP repair); the network is locked meanwhile. */
  readonly tcpEstablished?: boolean;
  readonly networkLock?: NetworkLock;
  /** Dump file locks the tree holds. */
  readonly fileLocks?: boolean;
  /** CRIU's notifications (pre-dump, network-lock, network-unlock, post-dump), answered in-process. */
  readonly onNotify?: NotifyHandler;
  readonly timeoutMs?: number;
  /** criu acts as this user (criu-owner.ts: dumpIdentity); the images are root's 0600 afterwards. */
  readonly runAs?: CriuIdentity;
}

export interface DumpResult {
  readonly files: ImageFile[];
  readonly bytes: number;
  readonly durationMs: number;
  /** PIDs of the dumped processes (pstree.img, as seen in the tree's PID namespace), root first. */
  readonly pids: number[];
  /** Path of dump.log. */
  readonly log: string;
  /** CRIU's stats-dump (undefined if it wrote none). */
  readonly stats?: DumpStats;
  /** The notifications CRIU sent, in order. */
  readonly notified: readonly string[];
}

/** Creates DIR (mode 0700), refusing one that already holds a dump. */
const prepareImagesDir = (dir: string): void => {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  if (existsSync(join(dir, 'pstree.img'))) throw new Error(`${dir} already holds a CRIU dump (pstree.img): use a new directory per dump`);
};

/**
 * Dumps the tree rooted at `pid` into `imagesDir` (log: dump.log there, level 4). Throws a
 * CriuError with CRIU's cr_errno/cr_errmsg and the log's error lines when it fails, and also when
 * it succeeded but warned "Unexpected process … in the freezer cgroup": processes of that cgroup
 * are then missing from the images, and ckpt never accepts a silently partial dump.
 */
export const dumpTree = async (options: DumpOptions): Promise<DumpResult> => {
  const dir = resolve(options.imagesDir);
  prepareImagesDir(dir);
  const log = join(dir, 'dump.log');
  const call: CriuCall = {
    criu: options.criu,
    type: 'DUMP',
    imagesDir: dir,
    opts: {
      pid: options.pid,
      leaveRunning: options.leaveRunning,
      ...(options.leaveStopped && { leaveStopped: true }),
      logFile: 'dump.log',
      logLevel: 4,
      ...(options.shellJob && { shellJob: true }),
      ...(options.freezeCgroup !== undefined && { freezeCgroup: options.freezeCgroup }),
      ...(options.tcpEstablished && { tcpEstablished: true }),
      ...(options.networkLock && { networkLock: options.networkLock === 'nftables' ? 'NFTABLES' : 'IPTABLES' }),
      ...(options.fileLocks && { fileLocks: true }),
    },
    ...(options.onNotify && { onNotify: options.onNotify }),
    ...(options.timeoutMs !== undefined && { timeoutMs: options.timeoutMs }),
    ...(options.runAs && { runAs: options.runAs }),
  };
  const reply = await callCriu(call);
  if (options.runAs) sealForRoot(dir);
  if (reply.response?.success !== true || reply.problem !== undefined) throw replyError(`criu dump of pid ${options.pid}`, call, reply, log);
  const unexpected = readLog(log)
    .split('\n')
    .filter((l) => l.includes('Unexpected process'));
  if (unexpected.length > 0) {
    const lines = criuErrorLines(unexpected.join('\n'));
    throw new CriuError(
      `criu dump of pid ${options.pid} is incomplete: the freezer cgroup ${options.freezeCgroup ?? ''} holds processes outside the dumped tree, ` +
        `which CRIU left out (it only warns): ${lines.join(' | ')}. The images in ${dir} must not be used` +
        (options.leaveRunning ? '.' : '; the dumped tree itself was killed, the processes left out keep running.'),
      { command: 'criu swrk (dump over RPC)', code: reply.code, log, errorLines: lines },
    );
  }
  const files = imageFiles(dir);
  const stats = readDumpStats(dir);
  return {
    files,
    bytes: files.reduce((s, f) => s + f.bytes, 0),
    durationMs: reply.durationMs,
    pids: readPstree(dir).map((e) => e.pid),
    log,
    ...(stats && { stats }),
    notified: reply.notified,
  };
};
