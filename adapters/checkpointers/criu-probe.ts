// What CRIU can do on this node, probed, not assumed: version, `criu check`, the kernel features
// CRIU uses (`criu check --feature`), the cgroups, and — by really dumping and restoring a small
// process (criu-functional-probe.ts) — inet sockets, established TCP, the network lock and file
// locks. The agent records the result as CheckpointerProbed; the coordinator plans from it.
import { existsSync } from 'node:fs';
import { release } from 'node:os';
import type * as t from 'io-ts';
import type { Capabilities, CheckpointerProbed } from '../../domain/events/node.js';
import type { CheckpointScope } from '../../domain/identity.js';
import { type CgroupLayout, canFreeze, describeCgroups, detectCgroups } from '../cgroups/unit-cgroups.js';
import { compareVersions, criuErrorLines, criuVersion, isExecutable, MIN_CRIU_VERSION, runCriu } from './criu.js';
import { onPath, probeFunctionsCached } from './criu-functional-probe.js';

/** The data of a CheckpointerProbed event, without the node (the agent adds it). */
export type CheckpointerProbeData = Omit<t.TypeOf<(typeof CheckpointerProbed)['codec']>, 'node'>;

/** Kernels from this release on split the vvar area; CRIU handles that since 4.1. */
const VDSO_SPLIT_KERNEL = '6.13';
const INSTALL_HINT = 'run scripts/install-criu.sh (as root) or set CKPT_CRIU to the path of a criu ≥ 4.2';

export interface ProbeOptions {
  /**
   * Where the functional results are cached (JSON, mode 0600), keyed by the criu's real path and
   * mtime, its version, the kernel release and the boot id; without it they are probed every time.
   */
  readonly cacheFile?: string;
  /** The probe target (default: dist/native/ckpt-criu-probe-target). */
  readonly target?: string;
}

const checkFeature = async (criu: string, feature: string): Promise<boolean> => (await runCriu(criu, ['check', '--feature', feature], { timeoutMs: 60_000 })).code === 0;

/** Can this node run a process in a new PID namespace? Tried for real (unshare, ~5 ms). */
const probePidNamespace = async (): Promise<boolean> => {
  if (!existsSync('/proc/self/ns/pid')) return false;
  const unshare = onPath('unshare');
  if (unshare === undefined) return false;
  const run = await runCriu(unshare, ['--pid', '--fork', '--mount-proc', 'true'], { timeoutMs: 10_000 });
  return run.code === 0;
};

/** Why this criu version cannot be used on this kernel, or undefined when it can. */
export const criuVersionProblem = (version: string, kernel: string, path = 'criu'): string | undefined => {
  if (compareVersions(version, MIN_CRIU_VERSION) >= 0) return undefined;
  return compareVersions(kernel, VDSO_SPLIT_KERNEL) >= 0
    ? `criu ${version} at ${path} is too old: the vDSO layout of kernels ≥ ${VDSO_SPLIT_KERNEL} (this one is ${kernel}) needs CRIU ≥ ${MIN_CRIU_VERSION}; run scripts/install-criu.sh`
    : `criu ${version} at ${path} is older than the ${MIN_CRIU_VERSION} ckpt needs; run scripts/install-criu.sh`;
};

const noCapabilities: Capabilities = {
  scopes: [],
  leaveRunning: false,
  incremental: false,
  lazyPages: false,
  pidNamespace: false,
  freezeCgroup: false,
};

/**
 * Probes a criu (from locateCriu) on this node. Never throws for a missing or broken criu:
 * `usable` is false and `problems` says why in plain words. Capabilities are what works here (none
 * when not usable). softDirty and lazyPages come from `criu check --feature` (mem_dirty_track,
 * uffd-noncoop); inetSockets, tcpEstablished, networkLock and fileLocks from a real dump and
 * restore (cached, see ProbeOptions). A criu that fails only those stays usable — for jobs that
 * hold no socket or lock — and `problems` says what it cannot do and how to get one that can.
 */
export const probeCriu = async (path: string | undefined, options: ProbeOptions = {}): Promise<CheckpointerProbeData> => {
  const kernel = release();
  let layout: CgroupLayout = { v1: [] };
  const problems: string[] = [];
  try {
    layout = detectCgroups();
  } catch (err) {
    problems.push(`cannot detect cgroups: ${err instanceof Error ? err.message : String(err)}`);
  }
  const cgroups = describeCgroups(layout);
  const base = { checkpointer: 'criu', kernel, cgroups };
  const unusable = (problem: string): CheckpointerProbeData => ({
    ...base,
    version: null,
    usable: false,
    problems: [...problems, problem],
    capabilities: noCapabilities,
    softDirty: false,
  });

  if (path === undefined) return unusable(`no criu found (CKPT_CRIU unset, no system criu ≥ ${MIN_CRIU_VERSION}, no <repo>/.criu/bin/criu): ${INSTALL_HINT}`);
  if (!existsSync(path)) return unusable(`criu not found at ${path}: ${INSTALL_HINT}`);
  if (!isExecutable(path)) return unusable(`${path} is not executable (chmod +x it, or ${INSTALL_HINT})`);

  const version = criuVersion(path) ?? null;
  let usable = true;
  if (version === null) {
    usable = false;
    problems.push(`'${path} --version' failed or did not print a version: it does not look like a working criu; ${INSTALL_HINT}`);
  } else {
    const tooOld = criuVersionProblem(version, kernel, path);
    if (tooOld !== undefined) {
      usable = false;
      problems.push(tooOld);
    }
  }

  // Not something that failed --version: `X check` of an arbitrary program could do anything.
  const check = version === null ? undefined : await runCriu(path, ['check'], { timeoutMs: 60_000 });
  if (check !== undefined && check.code !== 0) {
    usable = false;
    const lines = criuErrorLines(`${check.stdout}\n${check.stderr}`);
    const detail = lines.length > 0 ? lines : `${check.stdout}\n${check.stderr}`.trim().split('\n').slice(-5);
    problems.push(`'criu check' failed (exit ${check.code})${process.getuid?.() === 0 ? '' : ' — criu needs root'}: ${detail.join(' | ')}`);
  }

  const [softDirty, uffd, pidNamespace, functional] = await Promise.all([
    usable ? checkFeature(path, 'mem_dirty_track') : Promise.resolve(false),
    usable ? checkFeature(path, 'uffd-noncoop') : Promise.resolve(false),
    probePidNamespace(),
    usable && version !== null ? probeFunctionsCached(path, version, options.cacheFile, options.target) : Promise.resolve(undefined),
  ]);
  if (!usable || functional === undefined) return { ...base, version, usable, problems, capabilities: noCapabilities, softDirty };
  const freeze = canFreeze(layout);
  const scopes: CheckpointScope[] = freeze ? ['tree', 'cgroup'] : ['tree'];
  const capabilities: Capabilities = {
    scopes,
    leaveRunning: true,
    incremental: softDirty,
    lazyPages: uffd,
    pidNamespace,
    freezeCgroup: freeze,
    inetSockets: functional.inetSockets,
    tcpEstablished: functional.tcpEstablished,
    networkLock: functional.networkLock,
    fileLocks: functional.fileLocks,
  };
  return { ...base, version, usable, problems: [...problems, ...functional.problems], capabilities, softDirty };
};
