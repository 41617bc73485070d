// What a criu can really do here, found by doing it: ckpt-criu-probe-target (criu-probe-target.c)
// is started holding what jobs hold, dumped, restored, and asked over TCP whether each thing still
// works. `criu check` cannot tell: Debian 13's criu 4.1.1 passes it, yet cannot dump any TCP or UDP
// socket on kernels ≥ 6.16 (getsockopt(SO_PASSCRED/SO_PASSSEC) on inet sockets answers EOPNOTSUPP).
//
// Each target runs as the init of its own PID namespace (`unshare --pid --fork`): CRIU then dumps
// the namespace and recreates it at restore, so the restore never collides with a live PID and
// never waits for the dumped process to be reaped. The results are cached (see readCache).
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdirSync, mkdtempSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { release, tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { criuErrorLines, runCriu } from './criu.js';

/** The functional capabilities (the optional fields of Capabilities) and why any is missing. */
export interface FunctionalProbe {
  readonly inetSockets: boolean;
  readonly tcpEstablished: boolean;
  readonly networkLock: 'nftables' | 'iptables' | null;
  readonly fileLocks: boolean;
  readonly problems: readonly string[];
  /** False when a target could not even be started: nothing learnt about criu, not worth caching. */
  readonly conclusive?: boolean;
}

export const probeTargetPath: string = fileURLToPath(new URL('../../native/ckpt-criu-probe-target', import.meta.url));

const INSTALL_NEWER = 'install CRIU ≥ 4.2 with scripts/install-criu.sh (as root), or set CKPT_CRIU to one';

// ---------------------------------------------------------------------------------------------
// Running the target

interface Target {
  /** Its pid here (it is PID 1 of its own namespace). */
  readonly pid: number;
  /** Its TCP port on 127.0.0.1 (0 without --tcp). */
  readonly port: number;
}

/** The first executable `name` on PATH (then the usual bin dirs). */
export const onPath = (name: string): string | undefined =>
  (process.env.PATH ?? '')
    .split(delimiter)
    .concat(['/usr/bin', '/bin', '/usr/sbin', '/sbin'])
    .map((dir) => join(dir, name))
    .find((p) => {
      try {
        accessSync(p, constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });

/**
 * Starts the target in a new PID namespace, in `cwd`, and resolves once it printed "ready PORT
 * HOSTPID". Each target needs its own cwd: dumping a process whose PID namespace is not the one
 * of /proc, CRIU's parasite mounts a proc at a fixed name in the process's cwd, and two dumps at
 * once in one cwd then fail ("Can't create a directory (-17)", measured).
 */
const startTarget = (target: string, flags: readonly string[], cwd: string): Promise<Target> =>
  new Promise((resolve, reject) => {
    const unshare = onPath('unshare');
    if (unshare === undefined) return reject(new Error('unshare (util-linux) is not installed: apt-get install util-linux'));
    const child = spawn(unshare, ['--pid', '--fork', target, ...flags], { stdio: ['ignore', 'pipe', 'pipe'], cwd });
    let out = '';
    let err = '';
    const timer = setTimeout(() => fail('it did not say ready within 10 s'), 10_000);
    const fail = (why: string) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`the probe target ${target} did not start: ${why} ${err.trim()}`.trim()));
    };
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      err += s;
    });
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      const m = /^ready (\d+) (\d+)$/m.exec(out);
      if (m === null) return;
      clearTimeout(timer);
      resolve({ port: Number(m[1]), pid: Number(m[2]) });
    });
    child.on('error', (e) => fail(e.message));
    child.on('exit', (code, signal) => {
      if (!/^ready /m.test(out)) fail(`it exited (${code ?? signal})`);
    });
  });

const kill = (pid: number): void => {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
};

/** The target's one-line answer on its TCP port (e.g. "probe udp=ok established=ok"). */
const ask = (port: number): Promise<string> =>
  new Promise((resolve) => {
    let line = '';
    const socket = connect({ host: '127.0.0.1', port });
    socket.setTimeout(5000, () => socket.destroy(new Error('no answer within 5 s')));
    socket.setEncoding('utf8').on('data', (s: string) => {
      line += s;
    });
    socket.on('error', (e) => resolve(`no answer (${e.message})`));
    socket.on('close', () => resolve(line.trim() || 'no answer (closed)'));
  });

/** Is a flock on `file` held by `pid` (our pid for it)? From /proc/locks, by inode. */
const holdsFlock = (pid: number, file: string): boolean => {
  const ino = statSync(file).ino;
  return readFileSync('/proc/locks', 'utf8')
    .split('\n')
    .some((l) => {
      const f = l.trim().split(/\s+/);
      return f[1] === 'FLOCK' && f[3] === 'WRITE' && f[4] === String(pid) && f[5]?.endsWith(`:${ino}`) === true;
    });
};

// ---------------------------------------------------------------------------------------------
// The one place the probe runs criu (exec today; CRIU's RPC can take its place)

type Attempt = { readonly ok: true; readonly restoredPid: number } | { readonly ok: false; readonly step: 'dump' | 'restore'; readonly errors: string[] };

/**
 * `criu dump -t PID -D DIR/img …dumpArgs` (which kills the target), then
 * `criu restore -D DIR/img -d --pidfile … …restoreArgs`: the restored target's pid, or the step
 * that failed with criu's error lines. Never throws. `DIR/img` must exist.
 */
const dumpAndRestore = async (criu: string, pid: number, dir: string, dumpArgs: readonly string[], restoreArgs: readonly string[]): Promise<Attempt> => {
  const images = join(dir, 'img');
  const dump = await runCriu(criu, ['dump', '-t', String(pid), '-D', images, ...dumpArgs], { logFile: 'dump.log', timeoutMs: 60_000, cwd: dir });
  if (dump.code !== 0) return { ok: false, step: 'dump', errors: errorsOf(readOr(join(images, 'dump.log'), dump.stderr)) };
  const pidfile = join(dir, 'restored.pid');
  const restore = await runCriu(criu, ['restore', '-D', images, '-d', '--pidfile', pidfile, ...restoreArgs], { logFile: 'restore.log', timeoutMs: 60_000, cwd: dir });
  if (restore.code !== 0) return { ok: false, step: 'restore', errors: errorsOf(readOr(join(images, 'restore.log'), restore.stderr)) };
  const restoredPid = Number.parseInt(readOr(pidfile, ''), 10);
  return Number.isInteger(restoredPid) && restoredPid > 1 ? { ok: true, restoredPid } : { ok: false, step: 'restore', errors: [`exit 0 but no pid in ${pidfile}`] };
};

/** criu's first two error lines, without "Error (file.c:123):" and the final "…FAILED." summary. */
const errorsOf = (log: string): string[] =>
  criuErrorLines(log, 20)
    .filter((l) => !/FAILED\.?$|failed with -?\d+$/.test(l))
    .map((l) => l.replace(/^(\d+: )?Error \([^)]*\): /, ''))
    .slice(0, 2);

const readOr = (file: string, fallback: string): string => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return fallback;
  }
};

// ---------------------------------------------------------------------------------------------
// The checks

/** `startFailed`: the target itself did not start, so nothing was learnt about criu. */
type Check = { readonly works: true } | { readonly works: false; readonly why: string; readonly startFailed?: true };

/**
 * Starts the target with `flags`, dumps and restores it, and asks the restored one (`verify`):
 * works, or why not in words (the failing step and criu's first errors).
 */
const tryOnce = async (
  criu: string,
  target: string,
  flags: readonly string[],
  dumpArgs: readonly string[],
  restoreArgs: readonly string[],
  verify: (restored: Target, dir: string) => Promise<string | undefined>,
): Promise<Check> => {
  const dir = mkdtempSync(join(tmpdir(), 'ckpt-criu-probe-'));
  mkdirSync(join(dir, 'img'), { mode: 0o700 });
  const started = await startTarget(
    target,
    flags.map((f) => f.replace('{dir}', dir)),
    dir,
  ).catch((e: Error) => e);
  if (started instanceof Error) {
    rmSync(dir, { recursive: true, force: true });
    return { works: false, why: started.message, startFailed: true };
  }
  try {
    const attempt = await dumpAndRestore(criu, started.pid, dir, dumpArgs, restoreArgs);
    if (!attempt.ok) {
      kill(started.pid); // a failed dump leaves it running
      return { works: false, why: `criu ${attempt.step} failed: ${attempt.errors.join('; ') || 'no error in its log'}` };
    }
    // The dump killed the original (never signal its pid again: it may be reused).
    try {
      const wrong = await verify({ pid: attempt.restoredPid, port: started.port }, dir);
      return wrong === undefined ? { works: true } : { works: false, why: `restored, but ${wrong}` };
    } finally {
      kill(attempt.restoredPid);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
};

/** Verifies the answer of a restored target: undefined when it is `expected`. */
const answers = (expected: string) => async (restored: Target) => {
  const line = await ask(restored.port);
  return line === expected ? undefined : `it answered "${line}" instead of "${expected}"`;
};

/** The kernel ≥ 6.16 change that CRIU < 4.2 cannot dump, in words a user can act on. */
const inetProblem = (why: string, version: string): string =>
  /Can't get 1:(16|34) opt/.test(why)
    ? `criu ${version} cannot checkpoint any process holding a TCP or UDP socket on this kernel (${release()}): since Linux 6.16 ` +
      `getsockopt(SO_PASSCRED/SO_PASSSEC) on inet sockets fails with EOPNOTSUPP, which CRIU < 4.2 treats as fatal — ${INSTALL_NEWER} (${why})`
    : `criu ${version} could not checkpoint a process holding a listening TCP socket and a UDP socket — jobs holding sockets cannot be checkpointed (${why})`;

/**
 * Runs the functional checks (in parallel, ~0.3 s): inet sockets (TCP listen + UDP, with a unix
 * socket pair and a pipe), established TCP with the network locked by nftables (else the default,
 * iptables), and file locks (--file-locks with a held flock).
 */
export const probeFunctions = async (criu: string, version: string, target: string = probeTargetPath): Promise<FunctionalProbe> => {
  const problems: string[] = [];
  try {
    accessSync(target, constants.X_OK);
  } catch {
    return {
      inetSockets: false,
      tcpEstablished: false,
      networkLock: null,
      fileLocks: false,
      conclusive: false,
      problems: [`the probe target ${target} is missing: run npm run build (it needs a C compiler: apt-get install gcc libc6-dev); socket, connection and file-lock support were not probed`],
    };
  }
  const established = (lock: readonly string[]) => tryOnce(criu, target, ['--established'], ['--tcp-established', ...lock], ['--tcp-established'], answers('probe established=ok'));
  const [inet, nftables, locks] = await Promise.all([
    tryOnce(criu, target, ['--tcp', '--udp', '--socketpair', '--pipe'], [], [], answers('probe udp=ok socketpair=ok pipe=ok')),
    established(['--network-lock', 'nftables']),
    tryOnce(criu, target, ['--flock', '{dir}/lock', '--pipe'], ['--file-locks'], ['--file-locks'], async (restored, dir) =>
      holdsFlock(restored.pid, join(dir, 'lock')) ? undefined : 'the restored process no longer holds its flock (/proc/locks)',
    ),
  ]);
  if (!inet.works) problems.push(inetProblem(inet.why, version));
  let networkLock: FunctionalProbe['networkLock'] = null;
  if (nftables.works) networkLock = 'nftables';
  else if (inet.works) {
    const iptables = await established([]);
    if (iptables.works) networkLock = 'iptables';
    else {
      problems.push(
        `criu ${version} could not checkpoint an established TCP connection (--tcp-established) with the network locked by nftables (${nftables.why}) ` +
          `nor by iptables (${iptables.why}): jobs cannot keep live connections across a restart (a criu built with nftables, e.g. Debian's 4.2, needs no iptables)`,
      );
    }
  }
  if (!locks.works) problems.push(`criu ${version} could not checkpoint a process holding a file lock (--file-locks): ${locks.why}`);
  const conclusive = ![inet, nftables, locks].some((c) => !c.works && c.startFailed === true);
  return { inetSockets: inet.works, tcpEstablished: networkLock !== null, networkLock, fileLocks: locks.works, problems, conclusive };
};

// ---------------------------------------------------------------------------------------------
// The cache

/** What the functional results depend on: the criu binary, the kernel and this boot. */
export interface ProbeCacheKey {
  readonly criu: string;
  readonly mtimeMs: number;
  readonly version: string;
  readonly kernel: string;
  readonly bootId: string;
}

export const probeCacheKey = (criu: string, version: string): ProbeCacheKey => {
  let real = criu;
  let mtimeMs = 0;
  try {
    real = realpathSync(criu);
    mtimeMs = statSync(real).mtimeMs;
  } catch {
    /* keyed by the path alone */
  }
  return { criu: real, mtimeMs, version, kernel: release(), bootId: readOr('/proc/sys/kernel/random/boot_id', 'unknown').trim() };
};

interface CacheFile {
  readonly key: ProbeCacheKey;
  readonly result: FunctionalProbe;
}

const sameKey = (a: ProbeCacheKey, b: ProbeCacheKey): boolean => a.criu === b.criu && a.mtimeMs === b.mtimeMs && a.version === b.version && a.kernel === b.kernel && a.bootId === b.bootId;

/** The cached result for `key`, or undefined when there is none, it is unreadable or the key differs. */
export const readCache = (file: string, key: ProbeCacheKey): FunctionalProbe | undefined => {
  try {
    const cached = JSON.parse(readFileSync(file, 'utf8')) as Partial<CacheFile>;
    const r = cached.result;
    const valid =
      cached.key !== undefined &&
      r !== undefined &&
      typeof r.inetSockets === 'boolean' &&
      typeof r.tcpEstablished === 'boolean' &&
      typeof r.fileLocks === 'boolean' &&
      (r.networkLock === null || r.networkLock === 'nftables' || r.networkLock === 'iptables') &&
      Array.isArray(r.problems);
    return valid && sameKey(cached.key!, key) ? r : undefined;
  } catch {
    return undefined;
  }
};

/** Writes the cache (mode 0600, via a rename so a reader never sees half of it). Best effort. */
export const writeCache = (file: string, key: ProbeCacheKey, result: FunctionalProbe): void => {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeFileSync(tmp, `${JSON.stringify({ key, result } satisfies CacheFile, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, file);
  } catch {
    rmSync(tmp, { force: true });
  }
};

/** probeFunctions, answered from `cacheFile` when the key is unchanged (then ~1 ms instead of ~0.3 s). */
export const probeFunctionsCached = async (criu: string, version: string, cacheFile: string | undefined, target?: string): Promise<FunctionalProbe & { readonly cached: boolean }> => {
  const key = probeCacheKey(criu, version);
  const hit = cacheFile === undefined ? undefined : readCache(cacheFile, key);
  if (hit !== undefined) return { ...hit, cached: true };
  const { conclusive, ...result } = await probeFunctions(criu, version, target);
  if (cacheFile !== undefined && conclusive !== false) writeCache(cacheFile, key, result);
  return { ...result, cached: false };
};
