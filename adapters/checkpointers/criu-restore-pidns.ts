// Restoring a tree that was NOT started in its own PID namespace into a new one (exec based).
//
// This works only if criu itself stays alive as that namespace's init (PID 1): `unshare --pid
// --fork --mount-proc criu restore -d` reports success, but criu (PID 1 of the new namespace)
// exits right after detaching and the kernel kills the just-restored tree with it. So criu runs
// WITHOUT -d as the namespace init: it reaps every process of the namespace (its reap_zombies
// loop) and exits when the last one is gone. The restored processes keep their original PIDs
// inside the namespace; on the host they get new PIDs (rootPid). A dump whose root is pid 1
// needs none of this: CRIU recreates that namespace itself (criu-restore.ts).

import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { scanProcesses } from '../tracking/procfs.js';
import { CriuError, candidatesOnPath, criuErrorLines, inCgroups, readLog, signalNumber } from './criu.js';
import { sealForRoot } from './criu-owner.js';
import type { RestoreResult } from './criu-restore.js';
import { type CriuIdentity, swrkBridgePath } from './criu-rpc.js';

const PID_CLASH = /Can't fork for \d+: File exists/;
export const PID_CLASH_HINT = 'a process with an original PID still exists or is an unreaped zombie: wait until they are gone, or restore into a new PID namespace';
/** The hint for a restore that failed because an original PID is taken. */
export const pidClashHint = (lines: readonly string[]): string | undefined => (lines.some((l) => PID_CLASH.test(l)) ? PID_CLASH_HINT : undefined);

const restoreError = (what: string, code: number, log: string, text: string, command: string): CriuError => {
  const lines = criuErrorLines(text);
  const hint = pidClashHint(lines);
  return new CriuError(`${what} failed (exit ${code}): ${lines.join(' | ') || 'no error in the log'}${hint ? `; ${hint}` : ''} (log: ${log})`, {
    command,
    code,
    log,
    errorLines: lines,
  });
};

const readPidFile = (file: string): number | undefined => {
  try {
    const m = /^\s*(\d+)\s*$/.exec(readFileSync(file, 'utf8'));
    return m?.[1] === undefined ? undefined : Number(m[1]);
  } catch {
    return undefined;
  }
};

const removeIfThere = (file: string): void => {
  try {
    unlinkSync(file);
  } catch {
    /* not there */
  }
};

const statusField = (pid: number, field: string): string[] | undefined => {
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith(`${field}:`));
    return line
      ?.slice(field.length + 1)
      .trim()
      .split(/\s+/);
  } catch {
    return undefined;
  }
};

/**
 * `unshare --pid --fork --mount-proc --propagation slave criu restore -D DIR …` (not detached:
 * criu stays the namespace's init). `tail`: further criu arguments (-W, --manage-cgroups, …).
 */
export const restoreInNewPidNamespace = async (
  criu: string,
  dir: string,
  work: string,
  tail: readonly string[],
  timeoutMs: number,
  cgroups: readonly string[] | undefined,
  runAs?: CriuIdentity,
): Promise<RestoreResult> => {
  const unshare = candidatesOnPath('unshare', process.env)[0];
  if (unshare === undefined) throw new Error('restoring into a new PID namespace needs unshare (util-linux), which is not installed');
  const log = join(work, 'restore.log');
  const pidfile = join(work, 'restore.pid');
  removeIfThere(log);
  removeIfThere(pidfile);
  // As a user: unshare (root) makes the namespace and its /proc, the bridge becomes the user, criu runs.
  const as = runAs && ['--exec', '--user', String(runAs.uid), '--group', String(runAs.gid), '--groups', runAs.groups.join(','), '--caps', runAs.caps.join(','), '--'];
  const restore = [criu, 'restore', '-D', dir, '-o', 'restore.log', '-v4', '--pidfile', pidfile, ...tail, ...(as ? ['--unprivileged'] : [])];
  const args = ['--pid', '--fork', '--mount-proc', '--propagation', 'slave', '--', ...(as ? [swrkBridgePath, ...as] : []), ...restore];
  const command = `unshare ${args.join(' ')}`;
  const started = performance.now();
  // criu outlives this call (and maybe this process): its output goes to a file, never to a pipe
  // whose reader could vanish (SIGPIPE would kill the namespace init and the restored tree).
  const outFile = join(work, 'restore-init.log');
  const out = openSync(outFile, 'w', 0o600);
  let exit: number | undefined;
  const [command0, argv] = inCgroups(cgroups, unshare, args);
  const child = spawn(command0, argv, { stdio: ['ignore', out, out], detached: true });
  closeSync(out);
  child.on('exit', (code, signal) => {
    exit = code ?? 128 + signalNumber(signal);
  });
  child.on('error', () => {
    exit = 127;
  });
  child.unref();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = readLog(log);
    const nsRootPid = readPidFile(pidfile);
    if (nsRootPid !== undefined && text.includes('Restore finished successfully')) {
      const durationMs = performance.now() - started;
      const unsharePid = child.pid ?? -1;
      const procs = scanProcesses();
      const nsInitPid = procs.find((p) => p.ppid === unsharePid)?.pid;
      const root = procs.find((p) => p.ppid === nsInitPid && statusField(p.pid, 'NSpid')?.at(-1) === String(nsRootPid));
      if (nsInitPid === undefined || root === undefined) {
        throw new CriuError(`criu restored ${dir} into a new PID namespace but the root (pid ${nsRootPid} there) is already gone (log: ${log})`, {
          command,
          code: 0,
          log,
          errorLines: criuErrorLines(text),
        });
      }
      if (runAs) sealForRoot(work);
      return { rootPid: root.pid, nsRootPid, nsInitPid, durationMs, log };
    }
    if (exit !== undefined) throw restoreError(`criu restore from ${dir} in a new PID namespace`, exit, log, text || readLog(outFile), command);
    if (Date.now() > deadline) {
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      throw restoreError(`criu restore from ${dir} in a new PID namespace (timed out after ${timeoutMs} ms)`, 137, log, text, command);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
};
