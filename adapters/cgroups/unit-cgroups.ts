// The cgroups of a job unit: one directory per useful hierarchy this node has (detected from
// /proc/self/mountinfo, never assumed), the unit's limits written into them, and the operations the
// node agent needs on a unit: add a process, list its processes, freeze/thaw, kill, remove.
//
// Layouts handled:
//  - cgroup v1 hierarchies (freezer, memory, pids, cpu, cpuacct; co-mounted ones such as
//    cpu,cpuacct share one directory), possibly next to a cgroup2 mount with no controllers
//    (hybrid, e.g. /sys/fs/cgroup/unified) that still offers cgroup.freeze / cgroup.kill;
//  - pure cgroup v2: limits in memory.max / pids.max / cpu.weight, with the controllers enabled in
//    every ancestor's cgroup.subtree_control first.
// A limit goes to the v1 controller when that is mounted (a controller bound to v1 cannot be used in
// v2), else to v2. A limit the node cannot enforce is an error, never silently dropped.
//
// All filesystem calls are synchronous (cgroupfs answers in microseconds); only waiting for a freeze
// to complete or for killed processes to leave is asynchronous.
import { mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Limits, UnitCgroup } from '../../domain/events/job.js';
import type { Failure } from '../../domain/failure.js';
import { readStat } from '../tracking/procfs.js';

/** v1 controllers a unit gets a directory in, in order of preference for naming a co-mounted one. */
export const V1_UNIT_CONTROLLERS = ['freezer', 'memory', 'pids', 'cpu', 'cpuacct'] as const;
export type V1UnitController = (typeof V1_UNIT_CONTROLLERS)[number];

export interface V1Hierarchy {
  /** Where it is mounted, e.g. /sys/fs/cgroup/memory. */
  readonly mountPoint: string;
  /** Controllers bound to it (from the mount's super options), e.g. ['cpu', 'cpuacct']. */
  readonly controllers: readonly string[];
  /** `name=` of a named hierarchy without controllers (e.g. 'systemd'), if any. */
  readonly name?: string;
}

export interface V2Hierarchy {
  readonly mountPoint: string;
  /** Controllers available at the mount root (its cgroup.controllers); empty in hybrid setups. */
  readonly controllers: readonly string[];
  /** Non-root cgroups have cgroup.freeze (Linux ≥ 5.2). */
  readonly freeze: boolean;
  /** Non-root cgroups have cgroup.kill (Linux ≥ 5.14). */
  readonly kill: boolean;
}

export interface CgroupLayout {
  /** Every v1 hierarchy mounted (one entry per hierarchy, including named ones). */
  readonly v1: readonly V1Hierarchy[];
  /** The cgroup2 mount, if any. */
  readonly v2?: V2Hierarchy;
}

export type FreezeState = 'frozen' | 'thawed' | 'freezing';

// ---------------------------------------------------------------------------------------------
// Errors

const HINTS: Record<string, string> = {
  EACCES: 'permission denied: needs root (or write access delegated to this cgroup subtree)',
  EPERM: 'operation not permitted: needs root (or write access delegated to this cgroup subtree)',
  EROFS: 'the cgroup filesystem is mounted read-only (in a container? mount it read-write or run on the host)',
  ENOENT: 'no such cgroup or file (removed meanwhile, or the kernel lacks this feature)',
  ESRCH: 'no such process (did it exit already?)',
  EBUSY: 'the kernel says busy (processes or child cgroups remain, or usage is above the new limit)',
  EINVAL: 'the kernel rejected the value',
  ENOTEMPTY: 'the cgroup still has child cgroups',
  EOPNOTSUPP: 'not supported by this kernel or cgroup mode (e.g. controllers in a threaded subtree)',
};

const codeOf = (err: unknown): string | undefined => (typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined);

const fsError = (what: string, err: unknown): Error => {
  const code = codeOf(err);
  const hint = (code && HINTS[code]) ?? (err instanceof Error ? err.message : String(err));
  return new Error(`${what}: ${code ? `${code}: ` : ''}${hint}`, { cause: err });
};

const readText = (file: string, what: string): string => {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw fsError(`${what}: cannot read ${file}`, err);
  }
};

/** Writes to an existing cgroup interface file (flag r+: never creates a file). */
const writeText = (file: string, value: string, what: string): void => {
  try {
    writeFileSync(file, value, { flag: 'r+' });
  } catch (err) {
    throw fsError(`${what}: writing "${value.trim()}" to ${file} failed`, err);
  }
};

const exists = (path: string): boolean => {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
};

// ---------------------------------------------------------------------------------------------
// Detection

interface MountEntry {
  readonly root: string;
  readonly mountPoint: string;
  readonly fstype: string;
  readonly superOptions: readonly string[];
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
const unescapeMount = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));

export const parseMountinfo = (text: string): MountEntry[] =>
  text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .flatMap((line) => {
      const [left, right] = line.split(' - ');
      if (left === undefined || right === undefined) return [];
      const l = left.split(' ');
      const r = right.split(' ');
      const root = l[3];
      const mountPoint = l[4];
      const fstype = r[0];
      if (root === undefined || mountPoint === undefined || fstype === undefined) return [];
      return [{ root: unescapeMount(root), mountPoint: unescapeMount(mountPoint), fstype, superOptions: (r[2] ?? '').split(',') }];
    });

/** Names of the controllers this kernel knows (first column of /proc/cgroups). */
const knownSubsystems = (): Set<string> | undefined => {
  try {
    const names = readFileSync('/proc/cgroups', 'utf8')
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('#'))
      .flatMap((l) => l.split(/\s+/).slice(0, 1));
    return new Set(names);
  } catch {
    return undefined;
  }
};

const NOT_CONTROLLERS = new Set(['rw', 'ro', 'noprefix', 'clone_children', 'xattr', 'cpuset_v2_mode', 'none', 'all']);

/** Does a non-root cgroup of this cgroup2 mount have `file`? Looks at our own cgroup, then any
 *  existing child, and as a last resort creates and removes a probe directory. */
const v2Feature = (mountPoint: string, file: string): boolean => {
  const candidates: string[] = [];
  try {
    const own = readFileSync('/proc/self/cgroup', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('0::'))
      ?.slice(3);
    if (own && own !== '/') candidates.push(join(mountPoint, own));
  } catch {
    /* no /proc/self/cgroup: fall through */
  }
  try {
    const child = readdirSync(mountPoint, { withFileTypes: true }).find((d) => d.isDirectory());
    if (child) candidates.push(join(mountPoint, child.name));
  } catch {
    /* unreadable mount: fall through */
  }
  for (const dir of candidates) if (exists(join(dir, 'cgroup.procs'))) return exists(join(dir, file));
  const probe = join(mountPoint, `.ckpt-probe-${process.pid}`);
  try {
    mkdirSync(probe);
  } catch {
    return false;
  }
  try {
    return exists(join(probe, file));
  } finally {
    try {
      rmdirSync(probe);
    } catch {
      /* best effort */
    }
  }
};

/** Which cgroup hierarchies this node has, from /proc/self/mountinfo. */
export const detectCgroups = (mountinfo: string = readText('/proc/self/mountinfo', 'detecting cgroups')): CgroupLayout => {
  const mounts = parseMountinfo(mountinfo);
  const subsystems = knownSubsystems();
  const isController = (o: string) => (subsystems ? subsystems.has(o) : !o.includes('=') && !NOT_CONTROLLERS.has(o));
  // Prefer a mount of the hierarchy's root ('/') over a bind mount of a subdirectory.
  const ordered = [...mounts].sort((a, b) => Number(b.root === '/') - Number(a.root === '/'));

  const v1: V1Hierarchy[] = [];
  const seen = new Set<string>();
  for (const m of ordered.filter((m) => m.fstype === 'cgroup')) {
    const controllers = m.superOptions.filter(isController).sort();
    const name = m.superOptions.find((o) => o.startsWith('name='))?.slice(5);
    const key = `${controllers.join(',')}|${name ?? ''}`;
    if (seen.has(key)) continue;
    seen.add(key);
    v1.push(name === undefined ? { mountPoint: m.mountPoint, controllers } : { mountPoint: m.mountPoint, controllers, name });
  }
  // Keep mountinfo order for readability.
  v1.sort((a, b) => mounts.findIndex((m) => m.mountPoint === a.mountPoint) - mounts.findIndex((m) => m.mountPoint === b.mountPoint));

  const v2mount = ordered.find((m) => m.fstype === 'cgroup2');
  if (!v2mount) return { v1 };
  let controllers: string[] = [];
  try {
    controllers = readFileSync(join(v2mount.mountPoint, 'cgroup.controllers'), 'utf8').trim().split(/\s+/).filter(Boolean);
  } catch {
    /* no controllers readable */
  }
  return {
    v1,
    v2: {
      mountPoint: v2mount.mountPoint,
      controllers,
      freeze: v2Feature(v2mount.mountPoint, 'cgroup.freeze'),
      kill: v2Feature(v2mount.mountPoint, 'cgroup.kill'),
    },
  };
};

/** Controller names for a probe event. v2 lists its controllers plus the core features 'freeze'
 *  and 'kill' when available (no v2 controller has those names). */
export const describeCgroups = (layout: CgroupLayout): { v1: string[]; v2: string[] } => ({
  v1: [...new Set(layout.v1.flatMap((h) => h.controllers))].sort(),
  v2: layout.v2 ? [...layout.v2.controllers].sort().concat(layout.v2.freeze ? ['freeze'] : [], layout.v2.kill ? ['kill'] : []) : [],
});

/** Can this node freeze a unit (v1 freezer or v2 cgroup.freeze)? */
export const canFreeze = (layout: CgroupLayout): boolean => v1MountOf(layout, 'freezer') !== undefined || layout.v2?.freeze === true;

const v1MountOf = (layout: CgroupLayout, controller: string): string | undefined => layout.v1.find((h) => h.controllers.includes(controller))?.mountPoint;

// ---------------------------------------------------------------------------------------------
// Creation and limits

const SEGMENT = /^[A-Za-z0-9_@:+-][A-Za-z0-9._@:+-]*$/;

const validateRelativePath = (relativePath: string): void => {
  const bad = (why: string) => new Error(`invalid unit cgroup path "${relativePath}": ${why} (expected a relative path like 'ckpt/job-x/unit-1')`);
  if (relativePath === '') throw bad('empty');
  if (relativePath.startsWith('/')) throw bad('must be relative to the hierarchy root, not absolute');
  for (const seg of relativePath.split('/')) {
    if (seg === '') throw bad('empty path segment');
    if (seg === '.' || seg === '..') throw bad(`'${seg}' segments are not allowed`);
    if (!SEGMENT.test(seg)) throw bad(`segment "${seg}" has characters outside [A-Za-z0-9._@:+-] or starts with '.'`);
    if (seg.startsWith('cgroup.')) throw bad(`segment "${seg}" would clash with cgroup interface files`);
  }
};

type LimitName = keyof Limits;
type Target = { kind: 'v1'; mount: string } | { kind: 'v2'; mount: string };
const LIMIT_CONTROLLER: Record<LimitName, string> = { memoryBytes: 'memory', pids: 'pids', cpuWeight: 'cpu' };

const MIN_MEMORY_BYTES = 1 << 20;

const validateLimits = (limits: Limits): void => {
  for (const [name, value] of Object.entries(limits) as Array<[LimitName, number | undefined]>) {
    if (value === undefined) continue;
    if (!(name in LIMIT_CONTROLLER)) throw new Error(`unknown limit "${String(name)}" (known: memoryBytes, pids, cpuWeight)`);
    if (!Number.isSafeInteger(value) || value < 1) throw new Error(`limit ${name}=${value} must be an integer ≥ 1`);
  }
  if (limits.memoryBytes !== undefined && limits.memoryBytes < MIN_MEMORY_BYTES)
    throw new Error(`limit memoryBytes=${limits.memoryBytes} is below ${MIN_MEMORY_BYTES} (1 MiB): no process can run in it (the kernel rounds down to whole pages, 10 becomes 0)`);
  if (limits.cpuWeight !== undefined && limits.cpuWeight > 10_000) throw new Error(`limit cpuWeight=${limits.cpuWeight} is out of range: cgroup cpu weights are 1..10000 (100 is the default)`);
};

/** Where a limit's controller lives on this node: v1 if mounted there, else v2; throws if neither. */
const targetFor = (layout: CgroupLayout, name: LimitName, value: number): Target => {
  const controller = LIMIT_CONTROLLER[name];
  const v1 = v1MountOf(layout, controller);
  if (v1) return { kind: 'v1', mount: v1 };
  if (layout.v2?.controllers.includes(controller)) return { kind: 'v2', mount: layout.v2.mountPoint };
  const v2why = layout.v2 ? `the cgroup2 mount at ${layout.v2.mountPoint} does not offer it in cgroup.controllers (offers: ${layout.v2.controllers.join(' ') || 'none'})` : 'there is no cgroup2 mount';
  throw new Error(
    `limit ${name}=${value} cannot be enforced on this node: the '${controller}' cgroup controller is missing ` +
      `(no cgroup v1 hierarchy has it mounted and ${v2why}); mount/enable the ${controller} controller or drop the limit`,
  );
};

/** v1 cpu.shares from a v2-style weight, as systemd maps CPUWeight= (100 ↔ 1024). */
export const weightToShares = (weight: number): number => Math.max(2, Math.round((weight * 1024) / 100));

/** cgroup v2: enable `controllers` in the subtree_control of every ancestor of `unitDir`. */
const enableV2Controllers = (mount: string, relativePath: string, controllers: readonly string[]): void => {
  if (controllers.length === 0) return;
  const segments = relativePath.split('/');
  let dir = mount;
  for (let i = 0; i < segments.length; i++) {
    if (i > 0 && !exists(dir)) {
      try {
        mkdirSync(dir);
      } catch (err) {
        if (codeOf(err) !== 'EEXIST') throw fsError(`creating cgroup ${dir}`, err);
      }
    }
    const file = join(dir, 'cgroup.subtree_control');
    const enabled = readText(file, 'enabling cgroup v2 controllers').trim().split(/\s+/);
    const missing = controllers.filter((c) => !enabled.includes(c));
    if (missing.length > 0)
      writeText(
        file,
        missing.map((c) => `+${c}`).join(' '),
        `enabling cgroup v2 controller(s) ${missing.join(', ')} for ${relativePath} (a cgroup with processes of its own cannot delegate controllers; use a path whose ancestors hold no processes)`,
      );
    dir = join(dir, segments[i] as string);
  }
};

/** Writes memory limits (v1) keeping memory.memsw.limit_in_bytes ≥ memory.limit_in_bytes at each step. */
const applyV1Memory = (dir: string, value: string): void => {
  const limit = join(dir, 'memory.limit_in_bytes');
  const memsw = join(dir, 'memory.memsw.limit_in_bytes');
  const what = `setting memory limit of ${dir}`;
  if (!exists(memsw)) {
    writeText(limit, value, what);
    return;
  }
  try {
    writeText(limit, value, what);
    writeText(memsw, value, what);
  } catch (first) {
    if (!/EINVAL/.test(String(first))) throw first;
    writeText(memsw, value, what);
    writeText(limit, value, what);
  }
};

/** Writes `value` (or `reset` when the limit is absent and the file exists). */
const setOrReset = (file: string, value: string | undefined, reset: string, what: string): void => {
  if (value !== undefined) writeText(file, value, what);
  else if (exists(file)) writeText(file, reset, what);
};

/**
 * Creates the unit's cgroup in every useful hierarchy (v1 freezer, memory, pids, cpu, cpuacct;
 * the cgroup2 one) and applies `limits`. Idempotent: existing directories are reused and limits
 * re-applied (a limit absent from `limits` is reset to unlimited/default). Throws, before creating
 * anything, for a limit the node cannot enforce.
 */
export const createUnitCgroups = (layout: CgroupLayout, relativePath: string, limits: Limits): UnitCgroup[] => {
  validateRelativePath(relativePath);
  validateLimits(limits);
  const targets = new Map<LimitName, Target>();
  for (const name of ['memoryBytes', 'pids', 'cpuWeight'] as const) {
    const value = limits[name];
    if (value !== undefined) targets.set(name, targetFor(layout, name, value));
  }

  const cgroups = unitCgroupsAt(layout, relativePath);
  if (cgroups.length === 0) throw new Error('no usable cgroup hierarchy on this node (neither v1 freezer/memory/pids/cpu/cpuacct nor cgroup2 is mounted; see /proc/self/mountinfo)');

  const created: string[] = [];
  try {
    if (layout.v2) {
      const needed = [...targets.entries()].filter(([, t]) => t.kind === 'v2').map(([n]) => LIMIT_CONTROLLER[n]);
      enableV2Controllers(layout.v2.mountPoint, relativePath, needed);
    }
    for (const cg of cgroups) {
      if (exists(cg.path)) continue;
      try {
        mkdirSync(cg.path, { recursive: true });
        created.push(cg.path);
      } catch (err) {
        throw fsError(`creating unit cgroup ${cg.path}`, err);
      }
    }

    const v1dir = (controller: string) => {
      const mount = v1MountOf(layout, controller);
      return mount === undefined ? undefined : join(mount, relativePath);
    };
    const v2dir = layout.v2 ? join(layout.v2.mountPoint, relativePath) : undefined;
    const { memoryBytes, pids, cpuWeight } = limits;

    const memDir = v1dir('memory');
    if (memDir) applyV1Memory(memDir, memoryBytes === undefined ? '-1' : String(memoryBytes));
    else if (v2dir) setOrReset(join(v2dir, 'memory.max'), memoryBytes?.toString(), 'max', `setting memory limit of ${v2dir}`);

    const pidsDir = v1dir('pids') ?? v2dir;
    if (pidsDir) setOrReset(join(pidsDir, 'pids.max'), pids?.toString(), 'max', `setting pids limit of ${pidsDir}`);

    const cpuDir = v1dir('cpu');
    if (cpuDir) setOrReset(join(cpuDir, 'cpu.shares'), cpuWeight === undefined ? undefined : String(weightToShares(cpuWeight)), '1024', `setting cpu shares of ${cpuDir}`);
    else if (v2dir) setOrReset(join(v2dir, 'cpu.weight'), cpuWeight?.toString(), '100', `setting cpu weight of ${v2dir}`);
  } catch (err) {
    for (const dir of created.reverse()) {
      try {
        rmdirSync(dir);
      } catch {
        /* best effort: leave it for removeUnitCgroups */
      }
    }
    throw err;
  }
  return cgroups;
};

// ---------------------------------------------------------------------------------------------
// Ownership: the agent acts only on cgroups it derives itself

/** Where a unit's cgroups go in each hierarchy: PREFIX/JOB/UNIT, or PREFIX/JOB/UNIT-rN for restart N. */
export const unitCgroupPath = (prefix: string, job: string, unit: string, restart?: number): string => {
  if (restart !== undefined && (!Number.isSafeInteger(restart) || restart < 1)) throw new Error(`invalid restart number ${restart}: expected an integer ≥ 1`);
  const path = `${prefix}/${job}/${restart === undefined ? unit : `${unit}-r${restart}`}`;
  validateRelativePath(path);
  return path;
};

/**
 * Is this cgroup path (as /proc/PID/cgroup shows it) a unit's cgroup made by some ckpt agent:
 * /ckpt/STORE/JOB/UNIT (or below it), STORE the 8 hex digits of the store's id? Exact, so a process that merely
 * runs under a cgroup someone else named "ckpt" (a CI runner, a service) is not mistaken for one.
 */
export const isUnitCgroupPath = (path: string): boolean => /^\/ckpt\/[0-9a-f]{8}\/[^/]+\/[^/]+(\/|$)/.test(path);

/** The unit's cgroups at `relativePath` on this node (one per useful hierarchy), computed, not created. */
export const unitCgroupsAt = (layout: CgroupLayout, relativePath: string): UnitCgroup[] => {
  validateRelativePath(relativePath);
  const cgroups: UnitCgroup[] = [];
  for (const h of layout.v1) {
    const controller = V1_UNIT_CONTROLLERS.find((c) => h.controllers.includes(c));
    if (controller) cgroups.push({ controller, path: join(h.mountPoint, relativePath) });
  }
  if (layout.v2) cgroups.push({ controller: 'unified', path: join(layout.v2.mountPoint, relativePath) });
  return cgroups;
};

/** The log names cgroups this agent did not derive for the unit: nothing is done to them. */
export class ForeignCgroupError extends Error {
  override readonly name = 'ForeignCgroupError';
  readonly failure: Failure;
  constructor(
    readonly job: string,
    readonly unit: string,
    readonly foreign: readonly UnitCgroup[],
    expected: string,
  ) {
    const message =
      `refused: the log names cgroup${foreign.length === 1 ? '' : 's'} ${foreign.map((c) => `${c.controller} ${c.path}`).join(', ')} for unit ${unit} of ${job}, ` +
      `which this agent did not create (its cgroups for the unit are ${expected}); nothing there was frozen, dumped, killed or removed`;
    super(message);
    this.failure = { class: 'permission', message, hint: 'the event log holds an event this node agent did not write: check who appends to the store (ckpt log --json)' };
  }
}

/**
 * The unit's cgroups as this agent derives them from (layout, prefix, job, unit[, restart]) — the
 * only cgroups it freezes, kills, reads members from or removes. `recorded` (what the log says)
 * picks the restart number, and every entry must be one of the derived cgroups; else a
 * ForeignCgroupError. An empty record gives no cgroups.
 */
export const ownUnitCgroups = (layout: CgroupLayout, prefix: string, job: string, unit: string, recorded: readonly UnitCgroup[]): UnitCgroup[] => {
  if (recorded.length === 0) return [];
  const leaf = /-r([1-9][0-9]{0,8})$/.exec(recorded[0]!.path.slice(recorded[0]!.path.lastIndexOf('/') + 1));
  const restart = leaf && recorded[0]!.path.endsWith(`/${unit}${leaf[0]}`) ? Number(leaf[1]) : undefined;
  const derived = unitCgroupsAt(layout, unitCgroupPath(prefix, job, unit, restart));
  const isDerived = (c: UnitCgroup) => derived.some((d) => d.controller === c.controller && d.path === c.path);
  const foreign = recorded.filter((c) => !isDerived(c));
  if (foreign.length > 0) throw new ForeignCgroupError(job, unit, foreign, derived.map((d) => d.path).join(', ') || 'none');
  return derived.filter((d) => recorded.some((c) => c.controller === d.controller && c.path === d.path));
};

/** Is `pid`, with this start time, a process of the unit's cgroups (checked in the kernel's lists)? */
export const inUnit = (cgroups: readonly UnitCgroup[], process: { pid: number; startTime: number }): boolean =>
  cgroups.length > 0 && readStat(process.pid)?.startTime === process.startTime && cgroups.some((c) => exists(c.path) && readProcs(c.path).includes(process.pid));

// ---------------------------------------------------------------------------------------------
// Processes

/** Moves `pid` (the whole process) into every cgroup of the unit. Its later children inherit them. */
export const addProcess = (cgroups: readonly UnitCgroup[], pid: number): void => {
  if (!Number.isSafeInteger(pid) || pid < 1) throw new Error(`addProcess: invalid pid ${pid}`);
  for (const cg of cgroups) writeText(join(cg.path, 'cgroup.procs'), `${pid}\n`, `moving process ${pid} into unit cgroup ${cg.path}`);
};

const readProcs = (dir: string): number[] =>
  readText(join(dir, 'cgroup.procs'), `listing processes of unit cgroup ${dir}`)
    .split('\n')
    .filter((l) => l !== '')
    .map(Number);

/** Pids of the unit's processes (union over its cgroups, sorted ascending). */
export const unitProcesses = (cgroups: readonly UnitCgroup[]): number[] => {
  const pids = new Set<number>();
  for (const cg of cgroups) for (const pid of readProcs(cg.path)) pids.add(pid);
  return [...pids].sort((a, b) => a - b);
};

// ---------------------------------------------------------------------------------------------
// Freezing

const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const immediate = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Polls `check` until true or `timeoutMs` passes: back-to-back for the first 2 ms (a freeze usually
 *  completes within a few ms), then every 1 ms up to 50 ms, then every 10 ms. */
const pollUntil = async (check: () => boolean, timeoutMs: number): Promise<boolean> => {
  const start = performance.now();
  for (;;) {
    if (check()) return true;
    const elapsed = performance.now() - start;
    if (elapsed >= timeoutMs) return false;
    if (elapsed < 2) await immediate();
    else await pause(elapsed < 50 ? 1 : 10);
  }
};

type Freezer = { kind: 'v1' | 'v2'; dir: string };

/**
 * The unit's freezers, the preferred one first: cgroup2's cgroup.freeze, then the v1 freezer.
 * Measured here with a shell fork loop (300 freezes each): the v1 freezer stayed in FREEZING for
 * ≥ 2 s in 6 (a known weakness of the v1 freezer: CRIU carries kludges for it), median 1.5 ms;
 * cgroup2 always froze, median 0.3 ms, max 51 ms.
 */
const freezersOf = (cgroups: readonly UnitCgroup[]): Freezer[] => [
  ...cgroups.filter((c) => c.controller === 'unified' && exists(join(c.path, 'cgroup.freeze'))).map((c) => ({ kind: 'v2' as const, dir: c.path })),
  ...cgroups.filter((c) => c.controller === 'freezer').map((c) => ({ kind: 'v1' as const, dir: c.path })),
];

/** The freezer ckpt freezes the unit with (and hands to CRIU's --freeze-cgroup). */
export const freezerOf = (cgroups: readonly UnitCgroup[]): Freezer | undefined => freezersOf(cgroups)[0];

const requireFreezer = (cgroups: readonly UnitCgroup[], action: string) => {
  const f = freezerOf(cgroups);
  if (!f)
    throw new Error(
      `${action}: the unit has no freezer (no v1 'freezer' cgroup and no cgroup2 cgroup with cgroup.freeze among ${cgroups.map((c) => c.path).join(', ') || 'none'}); ` +
        'mount the v1 freezer or use a kernel ≥ 5.2 with cgroup2',
    );
  return f;
};

const readFreezeState = (f: Freezer): FreezeState => {
  if (f.kind === 'v1') {
    const s = readText(join(f.dir, 'freezer.state'), 'reading freeze state').trim();
    return s === 'FROZEN' ? 'frozen' : s === 'FREEZING' ? 'freezing' : 'thawed';
  }
  const wanted = readText(join(f.dir, 'cgroup.freeze'), 'reading freeze state').trim() === '1';
  const frozen = /^frozen 1$/m.test(readText(join(f.dir, 'cgroup.events'), 'reading freeze state'));
  return frozen ? 'frozen' : wanted ? 'freezing' : 'thawed';
};

/** 'thawed' only when no freezer of the unit holds it (one an older agent used counts too). */
export const unitFreezeState = (cgroups: readonly UnitCgroup[]): FreezeState => {
  requireFreezer(cgroups, 'reading the unit freeze state');
  const states = freezersOf(cgroups).map(readFreezeState);
  return states.every((s) => s === 'thawed') ? 'thawed' : states.includes('frozen') ? 'frozen' : 'freezing';
};

const writeFreeze = (f: Freezer, frozen: boolean, what: string) =>
  f.kind === 'v1' ? writeText(join(f.dir, 'freezer.state'), frozen ? 'FROZEN' : 'THAWED', what) : writeText(join(f.dir, 'cgroup.freeze'), frozen ? '1' : '0', what);

/** A task (thread) of a unit as /proc shows it: what a freeze failure names. */
export interface UnitTask {
  readonly pid: number;
  readonly comm: string;
  readonly state: string;
  readonly wchan: string;
}

const readTask = (tid: number): UnitTask | undefined => {
  const stat = readStat(tid);
  if (!stat) return undefined;
  let wchan = '?';
  try {
    wchan = readFileSync(`/proc/${tid}/wchan`, 'utf8').trim() || '0';
  } catch {
    /* exited meanwhile, or wchan hidden: leave '?' */
  }
  return { pid: tid, comm: stat.comm, state: stat.state, wchan };
};

/** Every thread of the freezer's cgroup (a vfork may come from any thread, e.g. posix_spawn). */
const tasksOf = (f: Freezer): UnitTask[] =>
  readText(join(f.dir, f.kind === 'v1' ? 'tasks' : 'cgroup.threads'), `listing tasks of unit cgroup ${f.dir}`)
    .split('\n')
    .filter((l) => l !== '')
    .flatMap((l) => readTask(Number(l)) ?? []);

/** Where a vfork parent sleeps until its child execs or exits (the name varies with the kernel). */
const VFORK_WAIT = new Set(['kernel_clone', 'wait_for_vfork_done', '_do_fork', 'do_fork']);
const waitsForVfork = (t: UnitTask) => VFORK_WAIT.has(t.wchan);

/** Where a frozen task sits: v1's refrigerator, cgroup2's signal trap. */
const FROZEN_AT = new Set(['__refrigerator', 'do_freezer_trap', 'get_signal']);

/** A kernel without symbols for wchan shows 0 for every sleeper. */
const symbolic = (wchan: string) => wchan !== '0' && wchan !== '?';

/**
 * Is the task where a dump can take it: in the freezer and not waiting for a vfork child. On
 * cgroup2: in its trap, or stopped (job control, ptrace: cgroup2 counts those frozen); on v1 any
 * state but running, as v1 also freezes sleepers in place (showing D and their own wchan).
 * cgroup.events can say "frozen 1" while tasks just woken by a thaw still run towards the trap:
 * they are not settled yet.
 */
const settled = (f: Freezer, t: UnitTask): boolean =>
  t.state === 'Z' || (!waitsForVfork(t) && (f.kind === 'v1' ? t.state !== 'R' : FROZEN_AT.has(t.wchan) || t.state === 'T' || t.state === 't' || (t.state === 'S' && !symbolic(t.wchan))));

export const describeTask = (t: UnitTask): string => `${t.pid} ${t.comm} (state ${t.state}, ${waitsForVfork(t) ? 'waiting for its vfork child to exec' : `in ${t.wchan}`})`;

/** A freeze that did not complete within its budget: the unit was thawed again. */
export class FreezeTimeoutError extends Error {
  override readonly name = 'FreezeTimeoutError';
  readonly failure: Failure;
  constructor(
    readonly dir: string,
    readonly budgetMs: number,
    /** The tasks that did not freeze, or froze where CRIU cannot seize them. */
    readonly tasks: readonly UnitTask[],
    attempts: number,
  ) {
    const named = tasks.slice(0, 10).map(describeTask).join(', ') || 'none found (they may have exited)';
    const more = tasks.length > 10 ? ` and ${tasks.length - 10} more` : '';
    const vfork = tasks.some(waitsForVfork);
    const message = `the unit did not freeze within its freeze budget of ${budgetMs} ms (${attempts} attempt${attempts === 1 ? '' : 's'}, ${dir}): ${named}${more}; it was thawed again`;
    super(message);
    this.failure = {
      class: 'timeout',
      message,
      hint: vfork
        ? 'a process whose vforked child does not exec cannot be stopped by CRIU: checkpoint when it has exec’d, or raise the freeze budget'
        : 'a process in uninterruptible sleep (NFS, FUSE, a device) cannot be frozen: see /proc/PID/stack of the processes named; retry, or raise the freeze budget',
    };
  }
}

/**
 * Asks `f` to freeze and waits until it reports frozen or `deadline` passes. The v1 freezer can
 * stay in FREEZING for good (see freezersOf): after 50 ms it is thawed and asked again.
 */
const freezeOnce = async (f: Freezer, deadline: number): Promise<boolean> => {
  for (;;) {
    writeFreeze(f, true, `freezing unit cgroup ${f.dir}`);
    const slice = f.kind === 'v1' ? 50 : Infinity;
    if (await pollUntil(() => readFreezeState(f) === 'frozen', Math.max(0, Math.min(slice, deadline - performance.now())))) return true;
    if (performance.now() >= deadline) return false;
    writeFreeze(f, false, `thawing unit cgroup ${f.dir} to freeze it again`);
    await pause(1);
  }
};

/**
 * Freezes every process of the unit and waits until the kernel reports it frozen. On timeout the
 * unit is thawed again and a FreezeTimeoutError names the tasks that did not freeze.
 */
export const freezeUnit = async (cgroups: readonly UnitCgroup[], timeoutMs = 5000): Promise<{ durationMs: number }> => {
  const f = requireFreezer(cgroups, 'freezing the unit');
  const start = performance.now();
  if (await freezeOnce(f, start + timeoutMs)) return { durationMs: performance.now() - start };
  const tasks = tasksOf(f).filter((t) => !settled(f, t));
  writeFreeze(f, false, `thawing unit cgroup ${f.dir} after a freeze timeout`);
  throw new FreezeTimeoutError(f.dir, timeoutMs, tasks, 1);
};

/**
 * Freezes the unit for a dump: frozen, and with no task CRIU could not seize. A vfork parent
 * waits in the kernel (state D) until its child execs; frozen together, CRIU seizes both, thaws
 * the cgroup, stops the child before its exec — and the parent never answers: "Unseizable
 * non-zombie … state D" after CRIU's 10 s. Measured with a shell fork loop: ~1 freeze in 10
 * catches a vfork. So such a freeze is undone, the child given a moment to exec, and the unit
 * frozen again, until it is clean or `budgetMs` is spent: then a FreezeTimeoutError names the
 * tasks that held it up, and the unit is thawed.
 */
export const freezeForDump = async (cgroups: readonly UnitCgroup[], budgetMs: number): Promise<{ durationMs: number; attempts: number }> => {
  const f = requireFreezer(cgroups, 'freezing the unit');
  const start = performance.now();
  const deadline = start + budgetMs;
  let backoff = 1;
  for (let attempts = 1; ; attempts++) {
    // Frozen, then settled: every task in the freezer — or one waiting for a vfork child: undo, retry.
    let unsettled: UnitTask[] = [];
    const look = () => (unsettled = tasksOf(f).filter((t) => !settled(f, t))).length === 0 || unsettled.some(waitsForVfork);
    const frozen = (await freezeOnce(f, deadline)) && (await pollUntil(look, Math.max(0, deadline - performance.now())));
    if (frozen && unsettled.length === 0) return { durationMs: performance.now() - start, attempts };
    // What holds it up: a vfork parent if there is one (the rest may only be on their way to the trap).
    const holding = frozen ? unsettled : tasksOf(f).filter((t) => !settled(f, t));
    const blocking = holding.some(waitsForVfork) ? holding.filter(waitsForVfork) : holding;
    writeFreeze(f, false, `thawing unit cgroup ${f.dir}${frozen ? ' to let a vfork child exec' : ' after a freeze timeout'}`);
    const left = deadline - performance.now();
    if (left <= 0) throw new FreezeTimeoutError(f.dir, budgetMs, blocking, attempts);
    await pause(Math.min(backoff, left));
    backoff = Math.min(backoff * 2, 50);
  }
};

/** Thaws the unit (every freezer that holds it) and waits until it no longer reports frozen. */
export const thawUnit = async (cgroups: readonly UnitCgroup[], timeoutMs = 5000): Promise<{ durationMs: number }> => {
  const f = requireFreezer(cgroups, 'thawing the unit');
  const start = performance.now();
  const held = freezersOf(cgroups).filter((g) => g === f || readFreezeState(g) !== 'thawed');
  for (const g of held) writeFreeze(g, false, `thawing unit cgroup ${g.dir}`);
  if (await pollUntil(() => held.every((g) => readFreezeState(g) === 'thawed'), timeoutMs)) return { durationMs: performance.now() - start };
  throw new Error(
    `thawing unit cgroup ${f.dir} timed out after ${timeoutMs} ms: it still reports ${unitFreezeState(cgroups)} ` +
      '(is a parent cgroup frozen? check freezer.parent_freezing / the parent cgroup.freeze)',
  );
};

// ---------------------------------------------------------------------------------------------
// Killing and removal

const signalAll = (pids: readonly number[], signal: NodeJS.Signals): void => {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch (err) {
      if (codeOf(err) !== 'ESRCH') throw fsError(`sending ${signal} to unit process ${pid}`, err);
    }
  }
};

/**
 * Signals every process of the unit. SIGKILL (the default) uses cgroup2 cgroup.kill when available
 * and otherwise repeats freeze → signal all → thaw until the unit is empty, so processes forking
 * meanwhile cannot escape; it resolves once no process is left (or throws after `timeoutMs`).
 * Other signals are delivered once to every process (between freeze and thaw when a freezer
 * exists; a unit frozen beforehand stays frozen and gets the signal when thawed).
 */
export const killUnit = async (cgroups: readonly UnitCgroup[], signal: NodeJS.Signals = 'SIGKILL', timeoutMs = 5000): Promise<void> => {
  const self = unitProcesses(cgroups);
  if (self.includes(process.pid)) throw new Error(`killUnit: the calling process ${process.pid} is inside the unit's cgroups; refusing to kill itself`);
  const freezer = freezerOf(cgroups);
  const empty = () => unitProcesses(cgroups).length === 0;

  if (signal !== 'SIGKILL') {
    const wasFrozen = freezer !== undefined && readFreezeState(freezer) !== 'thawed';
    if (freezer && !wasFrozen) await freezeUnit(cgroups, Math.min(timeoutMs, 1000)).catch(() => undefined);
    try {
      signalAll(unitProcesses(cgroups), signal);
    } finally {
      if (freezer && !wasFrozen) writeFreeze(freezer, false, `thawing unit cgroup ${freezer.dir} after signalling`);
    }
    return;
  }

  const start = performance.now();
  const left = () => timeoutMs - (performance.now() - start);
  const killer = cgroups.find((c) => c.controller === 'unified' && exists(join(c.path, 'cgroup.kill')));
  if (killer) {
    writeText(join(killer.path, 'cgroup.kill'), '1', `killing unit cgroup ${killer.path}`);
    // A v1-frozen task only dies once thawed.
    if (freezer?.kind === 'v1') writeFreeze(freezer, false, `thawing unit cgroup ${freezer.dir} to let killed processes exit`);
    if (await pollUntil(empty, Math.min(left(), 1000))) return;
  }
  while (!empty()) {
    if (left() <= 0)
      throw new Error(
        `killUnit: processes ${unitProcesses(cgroups).join(' ')} still in the unit after ${timeoutMs} ms of SIGKILL ` + '(uninterruptible sleep? check /proc/<pid>/stat and /proc/<pid>/stack)',
      );
    if (freezer) await freezeUnit(cgroups, Math.max(1, Math.min(left(), 500))).catch(() => undefined);
    signalAll(unitProcesses(cgroups), 'SIGKILL');
    if (freezer) writeFreeze(freezer, false, `thawing unit cgroup ${freezer.dir} to let killed processes exit`);
    await pollUntil(empty, Math.max(0, Math.min(left(), 200)));
  }
};

/** Mount points of every cgroup hierarchy (never removed, never climbed above). */
const cgroupMountPoints = (): Set<string> =>
  new Set(
    parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'))
      .filter((m) => m.fstype === 'cgroup' || m.fstype === 'cgroup2')
      .map((m) => m.mountPoint),
  );

/**
 * Removes the unit's cgroup directories (already-removed ones are fine). Throws, removing nothing,
 * while processes remain. With `emptyParents: n` it also removes up to n ancestor directories that
 * are now empty (stopping at the first non-empty one and never touching a hierarchy root); pass
 * the number of path segments ckpt created above the unit (e.g. 1 for 'ckpt/job-x/unit-1' to drop
 * job-x but keep ckpt).
 */
export const removeUnitCgroups = (cgroups: readonly UnitCgroup[], options: { emptyParents?: number } = {}): void => {
  const present = cgroups.filter((c) => exists(c.path));
  const remaining = unitProcesses(present);
  if (remaining.length > 0)
    throw new Error(
      `cannot remove the unit cgroups (${present.map((c) => c.path).join(', ')}): ${remaining.length} process(es) remain ` + `(pids ${remaining.join(' ')}); kill the unit first (killUnit) and retry`,
    );
  const failures: string[] = [];
  for (const cg of present) {
    try {
      rmdirSync(cg.path);
    } catch (err) {
      if (codeOf(err) !== 'ENOENT') failures.push(fsError(`removing unit cgroup ${cg.path}`, err).message);
    }
  }
  if (failures.length > 0) throw new Error(failures.join('; '));

  const levels = options.emptyParents ?? 0;
  if (levels <= 0) return;
  const mounts = cgroupMountPoints();
  for (const cg of cgroups) {
    let dir = cg.path;
    for (let i = 0; i < levels; i++) {
      dir = dirname(dir);
      if (mounts.has(dir) || ![...mounts].some((m) => dir.startsWith(`${m}/`))) break;
      try {
        rmdirSync(dir);
      } catch {
        break; // not empty (another unit/job), already gone, or busy: not ours to remove
      }
    }
  }
};
