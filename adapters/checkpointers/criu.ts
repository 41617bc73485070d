// CRIU building blocks: find a working criu, run it, dump a process tree, restore one, and wait
// until a dump's PIDs are free again. What a criu can do on this node: criu-probe.ts.
//
// Facts measured on kernel 6.18 with criu 4.1.1 (see docs/criu.md):
//  - CRIU < 4.1 fails on kernels ≥ 6.13 (vDSO/vvar layout); every run logs a harmless
//    "rlimit: Can't setup RLIMIT_NOFILE" error line: judge by the exit code, never by that line.
//  - `dump --freeze-cgroup` only WARNS "Unexpected process N in the freezer cgroup" for processes of
//    the cgroup outside the dumped tree and still exits 0: dumpTree turns that into a failure.
//  - restore fails with "Can't fork for PID: File exists" while any dumped PID is still used as a
//    pid, pgid or sid (including an unreaped zombie): waitPidsGone (tracking/pids.ts), or restore in
//    a new PID namespace. A unit's tree is rooted in its own PID namespace's init (ckpt-unit-init)
//    since launch: CRIU then recreates that namespace at every restore and nothing collides.
//  - Restoring a tree that was NOT started in its own PID namespace into a new one works only if
//    criu itself stays alive as that namespace's init (PID 1): `unshare --pid --fork --mount-proc
//    criu restore -d` reports success, but criu (PID 1 of the new namespace) exits right after
//    detaching and the kernel kills the just-restored tree with it. So restoreTree with
//    pidNamespace runs criu WITHOUT -d as the namespace init: criu reaps every process of the
//    namespace (its reap_zombies loop) and exits when the last one is gone. The restored processes
//    keep their original PIDs inside the namespace; on the host they get new PIDs (rootPid).
//
// criu is always run from an argument array (never a shell string), with stdin closed and its own
// output piped. Node cannot close fds it inherited without FD_CLOEXEC in a child: start the agent
// without stray fds (the processes to dump must not have any either: CRIU dumps pipes whose other
// end is outside the tree and cannot dump unix sockets connected to the outside).
import { execFileSync, spawn } from 'node:child_process';
import { accessSync, chmodSync, closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, realpathSync, unlinkSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { scanProcesses } from '../tracking/procfs.js';
import { imageFiles, readPstree, type ImageFile } from './criu-images.js';

export const MIN_CRIU_VERSION = '4.1';

/** The repository root, from this module's place: dist/adapters/checkpointers/criu.js → ../../.. */
export const DEFAULT_REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

// ---------------------------------------------------------------------------------------------
// Versions and locating criu

/** Compares dotted numeric versions ("4.1.1" vs "4.1"): -1, 0 or 1. Missing parts count as 0. */
export const compareVersions = (a: string, b: string): number => {
  const pa = a.split('.').map((x) => Number.parseInt(x, 10) || 0);
  const pb = b.split('.').map((x) => Number.parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
};

/** `criu --version` → "4.1.1"; undefined when it cannot be run or does not say. */
export const criuVersion = (path: string): string | undefined => {
  try {
    const out = execFileSync(path, ['--version'], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000, encoding: 'utf8' });
    return /^Version:\s*(\d+(?:\.\d+)*)/m.exec(out)?.[1];
  } catch {
    return undefined;
  }
};

const isExecutable = (path: string): boolean => {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

const realOr = (path: string): string => {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
};

const SYSTEM_DIRS = ['/usr/sbin', '/usr/local/sbin', '/sbin', '/usr/bin', '/usr/local/bin'];

/** Finds `name` on PATH (then the usual sbin dirs): every executable candidate, deduplicated. */
const candidatesOnPath = (name: string, env: NodeJS.ProcessEnv): string[] => {
  const dirs = (env.PATH ?? '').split(':').filter((d) => d.startsWith('/')).concat(SYSTEM_DIRS);
  const seen = new Set<string>();
  const out: string[] = [];
  for (const dir of dirs) {
    const p = join(dir, name);
    if (!isExecutable(p)) continue;
    const real = realOr(p);
    if (seen.has(real)) continue;
    seen.add(real);
    out.push(p);
  }
  return out;
};

/**
 * The criu to use: $CKPT_CRIU as is (even if it does not exist: probeCriu then says so), else a
 * system criu reporting ≥ 4.1, else `<repoRoot>/.criu/bin/criu` (what scripts/install-criu.sh
 * installs) if executable; undefined when there is none.
 */
export const locateCriu = (env: NodeJS.ProcessEnv = process.env, repoRoot: string = DEFAULT_REPO_ROOT): string | undefined => {
  const explicit = env.CKPT_CRIU;
  if (explicit !== undefined && explicit !== '') return explicit;
  const own = join(repoRoot, '.criu', 'bin', 'criu');
  const ownReal = realOr(own);
  for (const c of candidatesOnPath('criu', env)) {
    if (realOr(c) === ownReal || realOr(c).startsWith(`${realOr(join(repoRoot, '.criu'))}/`)) continue;
    const v = criuVersion(c);
    if (v !== undefined && compareVersions(v, MIN_CRIU_VERSION) >= 0) return c;
  }
  return isExecutable(own) ? own : undefined;
};

// ---------------------------------------------------------------------------------------------
// Running criu

export interface CriuRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly durationMs: number;
}

export interface RunCriuOptions {
  /** Adds `-o LOGFILE -v4` (relative names land in the images dir given with -D). */
  readonly logFile?: string;
  readonly cwd?: string;
  /** SIGKILL after this long (default 5 minutes); the result then has code 128 + 9. */
  readonly timeoutMs?: number;
  /** Cgroup directories criu is moved into before it starts: what it restores is born there. */
  readonly cgroups?: readonly string[];
}

/**
 * `sh -c ENTER_CGROUPS ckpt-enter N DIR… COMMAND ARGS…`: writes its own pid into each DIR's
 * cgroup.procs, then execs COMMAND, so the command and everything it forks start in those cgroups.
 */
const ENTER_CGROUPS = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1/cgroup.procs" || exit 126; shift; n=$((n - 1)); done; exec "$@"';
export const inCgroups = (cgroups: readonly string[] | undefined, command: string, args: readonly string[]): [string, string[]] =>
  cgroups && cgroups.length > 0 ? ['/bin/sh', ['-c', ENTER_CGROUPS, 'ckpt-enter', String(cgroups.length), ...cgroups, command, ...args]] : [command, [...args]];

const MAX_OUTPUT = 1 << 20;

/**
 * Runs criu with an argument array: stdin /dev/null, stdout/stderr collected (up to 1 MB each).
 * Never rejects: a criu that cannot be started yields code 127 and the reason in stderr; a signal
 * yields 128 + its number.
 */
export const runCriu = (path: string, args: readonly string[], options: RunCriuOptions = {}): Promise<CriuRun> =>
  new Promise((resolvePromise) => {
    const started = performance.now();
    const fullArgs = options.logFile === undefined ? [...args] : [...args, '-o', options.logFile, '-v4'];
    const [command, argv] = inCgroups(options.cgroups, path, fullArgs);
    const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'], cwd: options.cwd });
    let stdout = '';
    let stderr = '';
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (code: number, extra = ''): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr: stderr + extra, durationMs: performance.now() - started });
    };
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      if (stdout.length < MAX_OUTPUT) stdout += s;
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      if (stderr.length < MAX_OUTPUT) stderr += s;
    });
    const timeoutMs = options.timeoutMs ?? 300_000;
    timer = setTimeout(() => {
      child.kill('SIGKILL');
      stderr += `\nckpt: criu ${fullArgs[0] ?? ''} killed after ${timeoutMs} ms (timeout)\n`;
    }, timeoutMs);
    child.on('error', (err) => finish(127, `ckpt: cannot run ${path}: ${err.message}\n`));
    child.on('close', (code, signal) => finish(code ?? 128 + signalNumber(signal)));
  });

const signalNumber = (signal: NodeJS.Signals | null): number => (signal === null ? 0 : (osConstants.signals[signal] ?? 0));

const HARMLESS = [/RLIMIT_NOFILE/, /Can't keep kdat cache/];

/** The error lines of a criu log or output, without timestamps and without the known-harmless ones. */
export const criuErrorLines = (text: string, max = 8): string[] =>
  text
    .split('\n')
    .filter((l) => /\bError\b|Can't|Unexpected process|\bfailed\b/i.test(l) && !HARMLESS.some((re) => re.test(l)))
    .map((l) => l.replace(/^\(\d+\.\d+\)\s*/, '').trim())
    .filter((l, i, all) => l !== '' && all.indexOf(l) === i)
    .slice(-max);

const readLog = (file: string): string => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
};

/** A failed criu run: the command, exit code, log file and the error lines that explain it. */
export class CriuError extends Error {
  override readonly name = 'CriuError';
  constructor(
    message: string,
    readonly details: { readonly command: string; readonly code: number; readonly log?: string; readonly errorLines: readonly string[] },
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// Dump

export interface DumpOptions {
  readonly criu: string;
  /** Root of the tree to dump (a pid in our PID namespace). */
  readonly pid: number;
  /** Created with mode 0700; must not hold a dump already. */
  readonly imagesDir: string;
  /** Keep the tree running after the dump (otherwise CRIU kills it once dumped). */
  readonly leaveRunning: boolean;
  /** Needed when the root is not a session leader (it then shares a session/tty with an outsider). */
  readonly shellJob?: boolean;
  /** Freeze the tree with this cgroup (v1 freezer dir or v2 cgroup) instead of ptrace-stopping it. */
  readonly freezeCgroup?: string;
  readonly extraArgs?: readonly string[];
  readonly timeoutMs?: number;
  /** Dump established TCP connections (TCP repair), the network locked meanwhile. */
  readonly tcpEstablished?: boolean;
  /** How the network is locked during the dump (CRIU's default, iptables, is often not installed). */
  readonly networkLock?: 'nftables' | 'iptables';
  /** Dump the file locks the tree holds. */
  readonly fileLocks?: boolean;
}

export interface DumpResult {
  readonly files: ImageFile[];
  readonly bytes: number;
  readonly durationMs: number;
  /** PIDs of the dumped processes (pstree.img, as seen in the tree's PID namespace), root first. */
  readonly pids: number[];
  /** Path of dump.log. */
  readonly log: string;
}

/** Creates DIR (mode 0700), refusing one that already holds a dump. */
const prepareImagesDir = (dir: string): void => {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  if (existsSync(join(dir, 'pstree.img'))) throw new Error(`${dir} already holds a CRIU dump (pstree.img): use a new directory per dump`);
};

/**
 * `criu dump -t PID -D DIR -o dump.log -v4 [--leave-running] [--shell-job] [--freeze-cgroup PATH]`.
 * Throws a CriuError with the log's last error lines when criu fails, and also when it exits 0
 * but warned "Unexpected process … in the freezer cgroup": processes of that cgroup are then
 * missing from the images, and ckpt never accepts a silently partial dump.
 */
export const dumpTree = async (options: DumpOptions): Promise<DumpResult> => {
  const dir = resolve(options.imagesDir);
  prepareImagesDir(dir);
  const args = ['dump', '-t', String(options.pid), '-D', dir];
  if (options.leaveRunning) args.push('--leave-running');
  if (options.shellJob) args.push('--shell-job');
  if (options.freezeCgroup !== undefined) args.push('--freeze-cgroup', options.freezeCgroup);
  args.push(...(options.extraArgs ?? []));
  args.push(...connectionArgs(options));
  const log = join(dir, 'dump.log');
  const run = await runCriu(options.criu, args, { logFile: 'dump.log', timeoutMs: options.timeoutMs });
  const text = readLog(log);
  const command = `criu ${args.join(' ')}`;
  if (run.code !== 0) {
    const lines = criuErrorLines(text === '' ? run.stderr : text);
    throw new CriuError(
      `criu dump of pid ${options.pid} failed (exit ${run.code}): ${lines.join(' | ') || run.stderr.trim() || 'no error in the log'} (log: ${log})`,
      { command, code: run.code, log, errorLines: lines },
    );
  }
  const unexpected = text.split('\n').filter((l) => l.includes('Unexpected process'));
  if (unexpected.length > 0) {
    const lines = criuErrorLines(unexpected.join('\n'));
    throw new CriuError(
      `criu dump of pid ${options.pid} is incomplete: the freezer cgroup ${options.freezeCgroup ?? ''} holds processes outside the dumped tree, ` +
        `which CRIU left out (it only warns): ${lines.join(' | ')}. The images in ${dir} must not be used` +
        (options.leaveRunning ? '.' : '; the dumped tree itself was killed, the processes left out keep running.'),
      { command, code: run.code, log, errorLines: lines },
    );
  }
  const files = imageFiles(dir);
  return {
    files,
    bytes: files.reduce((s, f) => s + f.bytes, 0),
    durationMs: run.durationMs,
    pids: readPstree(dir).map((e) => e.pid),
    log,
  };
};

// ---------------------------------------------------------------------------------------------
// Restore

export interface RestoreOptions {
  readonly criu: string;
  readonly imagesDir: string;
  readonly shellJob?: boolean;
  /**
   * Restore into a new PID namespace, so the original PIDs cannot collide with live processes.
   * criu then runs as that namespace's init (PID 1, not detached) for as long as the restored
   * processes live; see the file comment. Not needed for a dump whose root was already a PID
   * namespace init (pid 1 in pstree.img): CRIU recreates that namespace by itself.
   */
  readonly pidNamespace?: boolean;
  /** The call returns once the tree runs; criu does not stay the tree's parent (except as ns init). */
  readonly detach: true;
  /** Where restore.log and the pid file go (default: the images directory, which must then be
   *  writable — a committed version's directory should not change: pass another one). */
  readonly workDir?: string;
  /** Restore into these cgroup directories (criu enters them first; --manage-cgroups=ignore). */
  readonly cgroups?: readonly string[];
  readonly extraArgs?: readonly string[];
  readonly timeoutMs?: number;
  /** The images hold established TCP connections (dumped with tcpEstablished): repair them. */
  readonly tcpEstablished?: boolean;
  readonly networkLock?: 'nftables' | 'iptables';
  /** The images hold file locks: take them again. */
  readonly fileLocks?: boolean;
}

/** The options shared by dump and restore for connections and locks. */
const connectionArgs = (o: { tcpEstablished?: boolean; networkLock?: 'nftables' | 'iptables'; fileLocks?: boolean }): string[] => [
  ...(o.tcpEstablished ? ['--tcp-established'] : []),
  ...(o.tcpEstablished && o.networkLock ? ['--network-lock', o.networkLock] : []),
  ...(o.fileLocks ? ['--file-locks'] : []),
];

export interface RestoreResult {
  /** Host PID of the restored root (the PID in our namespace). */
  readonly rootPid: number;
  /** The root's PID inside the new PID namespace (its original PID), when one was created. */
  readonly nsRootPid?: number;
  /** Host PID of the criu process acting as the new namespace's init, when one was created. */
  readonly nsInitPid?: number;
  readonly durationMs: number;
  /** Path of restore.log. */
  readonly log: string;
}

const PID_CLASH = /Can't fork for \d+: File exists/;
const PID_CLASH_HINT =
  'a process with an original PID still exists or is an unreaped zombie: wait until they are gone, or restore into a new PID namespace';

const restoreError = (what: string, code: number, log: string, text: string, command: string): CriuError => {
  const lines = criuErrorLines(text);
  const hint = lines.some((l) => PID_CLASH.test(l)) ? `; ${PID_CLASH_HINT}` : '';
  return new CriuError(`${what} failed (exit ${code}): ${lines.join(' | ') || 'no error in the log'}${hint} (log: ${log})`, {
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

/**
 * `criu restore -D DIR -o restore.log -v4 -d --pidfile DIR/restore.pid [--shell-job]`, or with
 * pidNamespace `unshare --pid --fork --mount-proc --propagation slave criu restore …` (not
 * detached: criu stays the namespace's init). Throws a CriuError with the log's error lines.
 */
export const restoreTree = async (options: RestoreOptions): Promise<RestoreResult> => {
  const dir = resolve(options.imagesDir);
  const work = resolve(options.workDir ?? dir);
  const log = join(work, 'restore.log');
  const pidfile = join(work, 'restore.pid');
  removeIfThere(pidfile);
  const tail = [
    ...(options.workDir ? ['-W', work] : []),
    ...(options.cgroups ? ['--manage-cgroups=ignore'] : []),
    ...(options.shellJob ? ['--shell-job'] : []),
    ...(options.extraArgs ?? []),
    ...connectionArgs(options),
  ];
  if (!existsSync(join(dir, 'pstree.img'))) throw new Error(`${dir} holds no CRIU dump (no pstree.img)`);
  // A root with pid 1 was a PID namespace init when dumped: CRIU recreates that namespace itself
  // (then -d works and the pidfile holds the host pid).
  const ownNamespace = readPstree(dir)[0]?.pid === 1;
  if (options.pidNamespace !== true || ownNamespace) {
    const args = ['restore', '-D', dir, '-d', '--pidfile', pidfile, ...tail];
    const run = await runCriu(options.criu, args, { logFile: 'restore.log', timeoutMs: options.timeoutMs, ...(options.cgroups && { cgroups: options.cgroups }) });
    const command = `criu ${args.join(' ')}`;
    if (run.code !== 0) throw restoreError(`criu restore from ${dir}`, run.code, log, readLog(log) || run.stderr, command);
    const rootPid = readPidFile(pidfile);
    if (rootPid === undefined) throw new CriuError(`criu restore from ${dir} exited 0 but wrote no pid to ${pidfile}`, { command, code: 0, log, errorLines: [] });
    return ownNamespace ? { rootPid, nsRootPid: 1, durationMs: run.durationMs, log } : { rootPid, durationMs: run.durationMs, log };
  }
  return restoreInNewPidNamespace(options.criu, dir, work, log, pidfile, tail, options.timeoutMs ?? 120_000, options.cgroups);
};

const statusField = (pid: number, field: string): string[] | undefined => {
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith(`${field}:`));
    return line?.slice(field.length + 1).trim().split(/\s+/);
  } catch {
    return undefined;
  }
};

const restoreInNewPidNamespace = async (
  criu: string,
  dir: string,
  work: string,
  log: string,
  pidfile: string,
  tail: readonly string[],
  timeoutMs: number,
  cgroups: readonly string[] | undefined,
): Promise<RestoreResult> => {
  const unshare = candidatesOnPath('unshare', process.env)[0];
  if (unshare === undefined) throw new Error('restoring into a new PID namespace needs unshare (util-linux), which is not installed');
  removeIfThere(log);
  const args = ['--pid', '--fork', '--mount-proc', '--propagation', 'slave', '--', criu, 'restore', '-D', dir, '-o', 'restore.log', '-v4', '--pidfile', pidfile, ...tail];
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
