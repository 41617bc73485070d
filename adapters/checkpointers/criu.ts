// CRIU building blocks: find a working criu, run it as a command (probes), and its errors. What
// a criu can do on this node: criu-probe.ts. Waiting for PIDs: tracking/pids.ts. Dumps and
// restores go over CRIU's RPC interface: criu-dump.ts, criu-restore.ts (criu-rpc.ts is the
// client); criu-restore-pidns.ts restores into a new PID namespace with criu as its init.
//
// Facts measured on kernel 6.18 with criu 4.1.1 (see docs/criu.md):
//  - CRIU < 4.1 fails on kernels ≥ 6.13 (vDSO/vvar layout); every run logs a harmless
//    "rlimit: Can't setup RLIMIT_NOFILE" error line: judge by the exit code, never by that line.
//  - restore fails with "Can't fork for PID: File exists" while any dumped PID is still used as a
//    pid, pgid or sid (including an unreaped zombie): waitPidsGone (tracking/pids.ts), or restore in
//    a new PID namespace. A unit's tree is rooted in its own PID namespace's init (ckpt-unit-init)
//    since launch: CRIU then recreates that namespace at every restore and nothing collides.
//
// criu is always run from an argument array (never a shell string), with stdin closed and its own
// output piped. Node cannot close fds it inherited without FD_CLOEXEC in a child: start the agent
// without stray fds (the processes to dump must not have any either: CRIU dumps pipes whose other
// end is outside the tree and cannot dump unix sockets connected to the outside).
import { execFileSync, spawn } from 'node:child_process';
import { accessSync, constants, readFileSync, realpathSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

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

export const isExecutable = (path: string): boolean => {
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
export const candidatesOnPath = (name: string, env: NodeJS.ProcessEnv): string[] => {
  const dirs = (env.PATH ?? '')
    .split(':')
    .filter((d) => d.startsWith('/'))
    .concat(SYSTEM_DIRS);
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
 * The criu to use: $CKPT_CRIU as is (even if it does not exist: probeCriu then says so), else
 * `<repoRoot>/.criu/bin/criu` (what scripts/install-criu.sh installs) if executable, else a system
 * criu reporting ≥ 4.1; undefined when there is none.
 */
export const locateCriu = (env: NodeJS.ProcessEnv = process.env, repoRoot: string = DEFAULT_REPO_ROOT): string | undefined => {
  const explicit = env.CKPT_CRIU;
  if (explicit !== undefined && explicit !== '') return explicit;
  // scripts/install-criu.sh installs into .criu only when no system criu passed its functional
  // probe: when it is there, it wins over whatever the system has.
  const own = join(repoRoot, '.criu', 'bin', 'criu');
  if (isExecutable(own)) return own;
  for (const c of candidatesOnPath('criu', env)) {
    const v = criuVersion(c);
    if (v !== undefined && compareVersions(v, MIN_CRIU_VERSION) >= 0) return c;
  }
  return undefined;
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

export const signalNumber = (signal: NodeJS.Signals | null): number => (signal === null ? 0 : (osConstants.signals[signal] ?? 0));

const HARMLESS = [/RLIMIT_NOFILE/, /Can't keep kdat cache/];

/** The error lines of a criu log or output, without timestamps and without the known-harmless ones. */
export const criuErrorLines = (text: string, max = 8): string[] =>
  text
    .split('\n')
    .filter((l) => /\bError\b|Can't|Unexpected process|\bfailed\b/i.test(l) && !HARMLESS.some((re) => re.test(l)))
    .map((l) => l.replace(/^\(\d+\.\d+\)\s*/, '').trim())
    .filter((l, i, all) => l !== '' && all.indexOf(l) === i)
    .slice(-max);

export const readLog = (file: string): string => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
};

export interface CriuErrorDetails {
  readonly command: string;
  /** criu's exit status (0 when it exited well but its work is unusable). */
  readonly code: number;
  readonly log?: string;
  /** The log's error lines (cr_errmsg is often generic: these say what went wrong). */
  readonly errorLines: readonly string[];
  /** From CRIU's RPC response: its errno (cr_errno) and message (cr_errmsg), when it gave them
   *  (cr_errmsg is CRIU's first error line: left out when that is a known-harmless one). */
  readonly criuErrno?: number;
  readonly criuErrmsg?: string;
}

/** A failed criu run: the command, exit code, log file, CRIU's own error and the lines that explain it. */
export class CriuError extends Error {
  override readonly name = 'CriuError';
  constructor(
    message: string,
    readonly details: CriuErrorDetails,
  ) {
    super(message);
  }

  get criuErrno(): number | undefined {
    return this.details.criuErrno;
  }

  get criuErrmsg(): string | undefined {
    return this.details.criuErrmsg;
  }
}
