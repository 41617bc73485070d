// A client of CRIU's RPC interface (`criu swrk`), as go-criu and pycriu drive it: one request,
// CRIU's notify messages answered in-process, one response with structured errors.
//
// CRIU's socket is SOCK_SEQPACKET, which Node cannot make: dist/native/ckpt-criu-swrk
// (criu-swrk.c) makes the socketpair, runs `criu swrk FD` and frames each packet on its stdio as a
// 32-bit little-endian length and the message. CRIU resolves images_dir_fd and work_dir_fd as
// /proc/PEER/fd/N, PEER being the bridge: the directories are handed to the bridge as its fds 3
// and 4. Messages are encoded with protobufjs from proto/criu-rpc.proto (a subset of CRIU's).
import { spawn } from 'node:child_process';
import { closeSync, constants, existsSync, openSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { CriuError, criuErrorLines, readLog } from './criu.js';

/** The bridge binary built by scripts/build-native.sh. */
export const swrkBridgePath: string = fileURLToPath(new URL('../../native/ckpt-criu-swrk', import.meta.url));
/** The .proto files: in the source tree, next to this module's source (dist/… → ../../../adapters/…). */
export const protoDir: string = fileURLToPath(new URL('../../../adapters/checkpointers/proto/', import.meta.url));

let rpcRoot: protobuf.Root | undefined;
const rpc = (): { req: protobuf.Type; resp: protobuf.Type } => {
  rpcRoot ??= protobuf.loadSync(join(protoDir, 'criu-rpc.proto'));
  return { req: rpcRoot.lookupType('criu_req'), resp: rpcRoot.lookupType('criu_resp') };
};

/** criu_opts as ckpt sets them (protobufjs names: camelCase of CRIU's field names). */
export interface CriuOpts {
  readonly pid?: number;
  readonly leaveRunning?: boolean;
  readonly leaveStopped?: boolean;
  readonly tcpEstablished?: boolean;
  readonly shellJob?: boolean;
  readonly fileLocks?: boolean;
  readonly logLevel?: number;
  readonly logFile?: string;
  readonly manageCgroupsMode?: 'IGNORE' | 'CG_NONE' | 'PROPS' | 'SOFT' | 'FULL' | 'STRICT' | 'DEFAULT';
  readonly freezeCgroup?: string;
  readonly networkLock?: 'IPTABLES' | 'NFTABLES' | 'SKIP';
}

/** criu_resp, decoded (enums as their names). */
export interface CriuResponse {
  readonly type: string;
  readonly success: boolean;
  readonly dump?: { readonly restored?: boolean };
  readonly restore?: { readonly pid: number };
  readonly notify?: { readonly script?: string; readonly pid?: number };
  readonly crErrno?: number;
  readonly crErrmsg?: string;
}

/**
 * Called for each NOTIFY CRIU sends (notify_scripts): the action's name ("pre-dump", "post-dump",
 * "pre-restore", "pre-resume", "post-resume", "network-lock", "network-unlock", …) and, for some
 * actions, the restored root's pid. false (or a throw) answers failure: CRIU then fails the call
 * (at post-restore it kills what it restored; a failed pre-resume answer it only logs).
 */
export type NotifyHandler = (script: string, pid: number | undefined) => boolean | Promise<boolean>;

/** Whom criu acts as instead of root: the owner's credentials and the capabilities it keeps. */
export interface CriuIdentity {
  readonly uid: number;
  readonly gid: number;
  readonly groups: readonly number[];
  /** Capability numbers (linux/capability.h) criu keeps, as ambient capabilities. */
  readonly caps: readonly number[];
}

export interface CriuCall {
  readonly criu: string;
  readonly type: 'DUMP' | 'RESTORE';
  readonly opts: CriuOpts;
  /** Passed as images_dir_fd. */
  readonly imagesDir: string;
  /** Passed as work_dir_fd (logs, stats-*): default the images directory. */
  readonly workDir?: string;
  /** CRIU enters these cgroup directories before it starts. */
  readonly cgroups?: readonly string[];
  /** criu runs as this user with these capabilities (and --unprivileged); without it, as root. */
  readonly runAs?: CriuIdentity;
  /** Without it, notify_scripts is off. */
  readonly onNotify?: NotifyHandler;
  /** SIGKILL of the bridge and CRIU after this long (default 5 minutes). */
  readonly timeoutMs?: number;
}

export interface CriuReply {
  /** CRIU's final response; undefined when CRIU ended without one (see code and stderr). */
  readonly response?: CriuResponse;
  /** Exit status of criu (through the bridge): 127 cannot run, 126 cannot enter a cgroup or act as the owner, 128+N signal N. */
  readonly code: number;
  readonly stderr: string;
  readonly durationMs: number;
  /** The notify actions CRIU sent, in order. */
  readonly notified: readonly string[];
  /** Why the call ended early (timeout, a notify handler's error), if it did. */
  readonly problem?: string;
}

const IMAGES_FD = 3;
const WORK_FD = 4;
const MAX_STDERR = 1 << 16;

const frame = (payload: Uint8Array): Buffer => {
  const out = Buffer.allocUnsafe(4 + payload.length);
  out.writeUInt32LE(payload.length, 0);
  out.set(payload, 4);
  return out;
};

const openDir = (dir: string): number => openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);

/**
 * Sends one request to a fresh `criu swrk` and answers its notifications until the final
 * response. Never rejects for what CRIU does (the reply says it); throws only when criu or the
 * bridge is missing or a directory cannot be opened.
 */
export const callCriu = async (call: CriuCall): Promise<CriuReply> => {
  if (!existsSync(swrkBridgePath)) throw new Error(`${swrkBridgePath} is missing: run npm run build (it builds the native helpers; needs a C compiler)`);
  if (!existsSync(call.criu)) throw new Error(`criu not found at ${call.criu}: install CRIU ≥ 4.1 (bash scripts/install-criu.sh) or set CKPT_CRIU to its path`);
  const { req, resp } = rpc();
  const fds = [openDir(call.imagesDir)];
  try {
    if (call.workDir !== undefined) fds.push(openDir(call.workDir));
  } catch (error) {
    closeSync(fds[0]!);
    throw error;
  }
  const opts = {
    ...call.opts,
    imagesDirFd: IMAGES_FD,
    ...(call.workDir !== undefined && { workDirFd: WORK_FD }),
    ...(call.onNotify !== undefined && { notifyScripts: true }),
  };
  const request = req.encode(req.fromObject({ type: call.type, opts })).finish();
  const as = call.runAs;
  const identity = as ? ['--user', String(as.uid), '--group', String(as.gid), '--groups', as.groups.join(','), '--caps', as.caps.join(',')] : [];
  const args = [...(call.cgroups ?? []).flatMap((dir) => ['--cgroup', dir]), ...identity, '--', call.criu];
  const started = performance.now();
  // Its own process group: a timeout kills the bridge and criu together.
  const child = spawn(swrkBridgePath, args, { stdio: ['pipe', 'pipe', 'pipe', ...fds], detached: true, cwd: call.workDir ?? call.imagesDir });
  for (const fd of fds) closeSync(fd);
  const { stdin, stdout, stderr: errors } = child as unknown as { stdin: Writable; stdout: Readable; stderr: Readable };

  return new Promise<CriuReply>((resolvePromise) => {
    const notified: string[] = [];
    let response: CriuResponse | undefined;
    let problem: string | undefined;
    let stderr = '';
    let pending: Buffer = Buffer.alloc(0);
    let chain = Promise.resolve();
    const stop = (why: string): void => {
      problem ??= why;
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    };
    const timer = setTimeout(() => stop(`criu ${call.type.toLowerCase()} killed after ${call.timeoutMs ?? 300_000} ms (timeout)`), call.timeoutMs ?? 300_000);
    const answer = (message: CriuResponse): void => {
      const script = message.notify?.script ?? '';
      notified.push(script);
      // Answered in order, one at a time: CRIU waits for each answer before it goes on.
      chain = chain.then(async () => {
        let ok = true;
        try {
          ok = (await call.onNotify?.(script, message.notify?.pid)) ?? true;
        } catch (error) {
          ok = false;
          problem ??= `the ${script} callback failed: ${error instanceof Error ? error.message : String(error)}`;
        }
        if (!stdin.destroyed) stdin.write(frame(req.encode(req.fromObject({ type: 'NOTIFY', notifySuccess: ok })).finish()));
      });
    };
    stdout.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32LE(0)) {
        const size = pending.readUInt32LE(0);
        const message = resp.toObject(resp.decode(pending.subarray(4, 4 + size)), { enums: String, longs: Number }) as CriuResponse;
        pending = pending.subarray(4 + size);
        if (message.type === 'NOTIFY') answer(message);
        else {
          response = message;
          stdin.end(); // nothing more to say: the bridge lets criu finish and exits with it
        }
      }
    });
    errors.setEncoding('utf8').on('data', (s: string) => {
      if (stderr.length < MAX_STDERR) stderr += s;
    });
    stdin.on('error', () => {
      /* the bridge ended first: its exit status says why */
    });
    child.on('error', (error) => stop(`cannot run ${swrkBridgePath}: ${error.message}`));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const status = code ?? 128 + (signal === null ? 0 : (osConstants.signals[signal] ?? 0));
      resolvePromise({
        ...(response !== undefined && { response }),
        code: status,
        stderr,
        durationMs: performance.now() - started,
        notified,
        ...(problem !== undefined && { problem }),
      });
    });
    stdin.write(frame(request));
  });
};

/**
 * The CriuError of a call that did not succeed: CRIU's cr_errno and cr_errmsg, the log's error
 * lines (cr_errmsg is often generic, the log says what went wrong), and what the bridge said.
 */
export const replyError = (what: string, call: CriuCall, reply: CriuReply, log: string, hint?: (lines: readonly string[]) => string | undefined): CriuError => {
  const lines = criuErrorLines(readLog(log) || reply.stderr);
  const { crErrno, crErrmsg } = reply.response ?? {};
  // cr_errmsg is CRIU's FIRST error line, which here is often the harmless RLIMIT_NOFILE one.
  const errmsg = crErrmsg === undefined ? [] : criuErrorLines(crErrmsg);
  const said = [
    reply.problem,
    errmsg.length > 0 && `${errmsg.join(' | ')}${crErrno ? ` (errno ${crErrno})` : ''}`,
    lines.join(' | ') || (reply.response === undefined ? reply.stderr.trim() : '') || 'no error in the log',
  ].filter(Boolean);
  const extra = hint?.(lines);
  return new CriuError(`${what} failed (exit ${reply.code}): ${said.join('; ')}${extra ? `; ${extra}` : ''} (log: ${log})`, {
    command: `criu swrk (${call.type.toLowerCase()} over RPC)`,
    code: reply.code,
    log,
    errorLines: lines,
    ...(crErrno !== undefined && { criuErrno: crErrno }),
    // Left out when it is only that harmless line: it would read as a permission problem.
    ...(errmsg.length > 0 && { criuErrmsg: crErrmsg!.trim() }),
  });
};
