// The Checkpointer port over CRIU and the unit's cgroups. The unit's cgroup freezer stops the
// unit (nothing forks or exits meanwhile); a CRIU dump (over RPC) of the unit's init with
// freeze_cgroup UNIT and leave_running then captures the unit's one tree (ckpt-unit-init keeps it
// one tree) and leaves it frozen, as CRIU found it, until the coordinator says thaw, stop or abort.
import { existsSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { CANCEL, type Checkpointer, DEFAULT_FREEZE_BUDGET_MS, RELEASE, type RestoreTarget, type UnitTarget } from '../../domain/checkpointer.js';
import type { Capabilities } from '../../domain/events/node.js';
import { describeFailure, type Failure } from '../../domain/failure.js';
import { type NodeCheckpointerFacts, preflight } from '../../domain/preflight.js';
import { freezeForDump, freezerOf, killUnit, thawUnit, unitFreezeState, unitProcesses } from '../cgroups/unit-cgroups.js';
import { followImages, prepareUnitDir, removePartial } from '../images/image-store.js';
import { readStat } from '../tracking/procfs.js';
import { unitResources } from '../tracking/resources.js';
import { CriuError, runCriu } from './criu.js';
import { dumpTree } from './criu-dump.js';
import { classifyCriuFailure } from './criu-failure.js';
import { readPstree } from './criu-images.js';
import { dumpIdentity, restoreIdentity } from './criu-owner.js';
import { probeCriu } from './criu-probe.js';
import { restoreTree } from './criu-restore.js';
import { outsideTerminals, terminalRefusal } from './unit-terminals.js';

/**
 * CRIU's parasite mounts a proc on a directory of a fixed name that it makes in the dumped
 * process's working directory: two dumps at once of processes sharing a working directory (units
 * of one job started from one directory, on one host) collide on it — "Can't create a directory
 * (-17)", EEXIST, before anything is dumped. Such a dump is simply tried again.
 */
const procMountClash = (error: unknown): boolean => error instanceof CriuError && error.details.errorLines.some((l) => /parasite.*Can't create a directory \(-17\)/.test(l));
const DUMP_ATTEMPTS = 4;

export class CriuCheckpointer implements Checkpointer {
  readonly name = 'criu';

  constructor(
    /** The criu binary (locateCriu), or undefined when there is none: every step then says so. */
    private readonly criu: string | undefined,
    /** $CKPT_HOME/images: partial images of an aborted version are removed from here. */
    private readonly imagesRoot: string,
    /** Where the functional probe's results are cached ($CKPT_HOME/criu-probe.json). */
    private readonly probeCache?: string,
  ) {}

  /** The network lock method, once known: the probe's, else the first CRIU says it supports. */
  #networkLock: Promise<'nftables' | 'iptables'> | undefined;
  #probedLock: Capabilities['networkLock'];

  async probe() {
    const probed = await probeCriu(this.criu, this.probeCache === undefined ? {} : { cacheFile: this.probeCache });
    this.#probedLock = probed.capabilities.networkLock;
    return probed;
  }

  explain(error: unknown) {
    const given = (error as { failure?: Failure } | undefined)?.failure;
    if (given) return given;
    const message = error instanceof Error ? error.message : String(error);
    if (!(error instanceof CriuError)) return classifyCriuFailure({ message });
    const d = error.details;
    return classifyCriuFailure({
      message,
      errorLines: d.errorLines,
      ...(d.criuErrno !== undefined && { errno: d.criuErrno }),
      ...(d.criuErrmsg && { errmsg: d.criuErrmsg }),
      ...(d.log && { log: d.log }),
    });
  }

  async preflight(u: UnitTarget, node: NodeCheckpointerFacts | undefined) {
    const [failure, ...more] = preflight(unitResources(unitProcesses(u.cgroups)), u.options, node);
    if (failure) throw Object.assign(new Error([failure, ...more].map(describeFailure).join('; ')), { failure });
  }

  /** Frozen with no task CRIU could not seize (freezeForDump), within the unit's freeze budget. */
  async freeze(u: UnitTarget) {
    if (!freezerOf(u.cgroups)) return { processes: unitProcesses(u.cgroups).length, durationMs: 0 }; // tree scope: criu freezes with ptrace
    const { durationMs } = await freezeForDump(u.cgroups, u.freezeBudgetMs ?? DEFAULT_FREEZE_BUDGET_MS);
    return { processes: unitProcesses(u.cgroups).length, durationMs };
  }

  async dump(u: UnitTarget) {
    const criu = this.#binary();
    const root = u.root && readStat(u.root.pid);
    if (!u.root || !root || root.startTime !== u.root.startTime) throw new Error(`the unit’s first process (${u.root?.pid ?? 'unknown'}) is gone: the unit has ended`);
    // No --shell-job: a terminal outside the unit is refused (see unit-terminals.ts).
    const terminals = outsideTerminals([...new Set([u.root.pid, ...unitProcesses(u.cgroups)])]);
    if (terminals.length > 0) throw terminalRefusal(terminals);
    const freezer = u.scope === 'cgroup' ? freezerOf(u.cgroups) : undefined;
    const started = performance.now();
    // With --stop, established connections stay locked (in repair) from the dump on: the stop then
    // kills the job without a FIN or RST reaching its peers, and a restart repairs them.
    const holdConnections = u.options.tcpEstablished && u.stop;
    // A user's unit is dumped by criu acting as that user (criu-owner.ts), root's by root.
    const runAs = dumpIdentity(u.root.pid, u.owner, u.options.tcpEstablished);
    const options = {
      criu,
      pid: u.root.pid,
      imagesDir: u.imagesDir,
      ...(runAs && { runAs }),
      leaveRunning: !holdConnections,
      ...(holdConnections && { leaveStopped: true }),
      ...(freezer && { freezeCgroup: freezer.dir }),
      ...(u.options.tcpEstablished && { tcpEstablished: true, networkLock: await this.#lockMethod(criu) }),
      ...(u.options.fileLocks && { fileLocks: true }),
    };
    for (let attempt = 1; ; attempt++) {
      prepareUnitDir(this.imagesRoot, u.job, u.version, u.unit);
      // Hashed and flushed while criu writes: committing then has nothing left to read.
      const follower = followImages(this.imagesRoot, u.job, u.version, u.unit);
      try {
        const { stats } = await dumpTree(options);
        const images = await follower.finish();
        return { files: images.length, bytes: images.reduce((n, f) => n + f.bytes, 0), durationMs: performance.now() - started, images, ...(stats && { stats }) };
      } catch (error) {
        await follower.cancel();
        if (attempt >= DUMP_ATTEMPTS || !procMountClash(error)) throw error;
        // Nothing of this attempt counts: its partial images go, the unit is still frozen as it was.
        rmSync(u.imagesDir, { recursive: true, force: true });
        await new Promise((r) => setTimeout(r, 20 + Math.random() * 80 * attempt));
      }
    }
  }

  async captured(u: UnitTarget) {
    return readPstree(u.imagesDir).map((e) => e.pid);
  }

  async thaw(u: UnitTarget) {
    return freezerOf(u.cgroups) ? thawUnit(u.cgroups) : { durationMs: 0 };
  }

  async stop(u: UnitTarget) {
    await killUnit(u.cgroups);
  }

  async abort(u: UnitTarget) {
    const frozen = !!freezerOf(u.cgroups) && existsSync(u.cgroups[0]!.path) && unitFreezeState(u.cgroups) !== 'thawed';
    if (frozen) await thawUnit(u.cgroups);
    // A dump for --stop with --tcp-established leaves the processes stopped (see dump).
    if (u.options.tcpEstablished && u.stop && existsSync(u.cgroups[0]?.path ?? '')) for (const pid of unitProcesses(u.cgroups)) continueProcess(pid);
    const { unitRemoved } = removePartial(this.imagesRoot, u.job, u.version, u.unit);
    return { thawed: frozen, imagesRemoved: unitRemoved };
  }

  async restore(u: RestoreTarget) {
    const cgroups = [...new Set(u.cgroups.map((c) => c.path))];
    const gate = () => imagesChecked(u.workDir);
    const criu = this.#binary();
    const runAs = restoreIdentity(u.imagesDir, u.owner, u.options.tcpEstablished);
    // The exec-based new-PID-namespace restore has no notifications: it starts once the images
    // passed (and, when held, once released: nothing of it is restored meanwhile).
    if (u.pidNamespace && !(await gate())) throw new Error(`the images failed their check: ${readFileSync(join(u.workDir, CANCEL), 'utf8')}`);
    if (u.pidNamespace && u.hold && !(await u.hold())) throw new Error('the restart ended while this unit waited for the others to be restored');
    // At post-restore every process is restored but none runs yet, and established connections are
    // still locked (CRIU unlocks them at network-unlock, after): they run only once the images
    // passed and, when held, once every unit of the restart is restored. (Not pre-resume: CRIU only
    // logs a failed answer there and resumes the tree anyway.)
    const held = async () => (await gate()) && (!u.hold || (await u.hold()));
    const onNotify = (script: string) => (script === 'post-restore' ? held() : true);
    const r = await restoreTree({
      criu,
      imagesDir: u.imagesDir,
      pidNamespace: u.pidNamespace,
      detach: true,
      workDir: u.workDir,
      cgroups,
      onNotify,
      ...(runAs && { runAs }),
      ...(u.options.tcpEstablished && { tcpEstablished: true, networkLock: await this.#lockMethod(criu) }),
      ...(u.options.fileLocks && { fileLocks: true }),
    });
    return { rootPid: r.rootPid, durationMs: r.durationMs, ...(r.stats && { stats: r.stats }) };
  }

  #lockMethod(criu: string): Promise<'nftables' | 'iptables'> {
    if (this.#probedLock) return Promise.resolve(this.#probedLock);
    this.#networkLock ??= runCriu(criu, ['check', '--feature', 'network_lock_nftables'], { timeoutMs: 60_000 }).then((r) => (r.code === 0 ? 'nftables' : 'iptables'));
    return this.#networkLock;
  }

  #binary(): string {
    if (!this.criu) throw new Error('no usable criu on this node: install CRIU ≥ 4.1 (bash scripts/install-criu.sh) or set CKPT_CRIU');
    return this.criu;
  }
}

/** As long as a restore waits for the images check: criu's own timeout (callCriu's default). */
const CHECK_WAIT_MS = 300_000;

/**
 * Resolves true once workDir/RELEASE exists (the images passed their check), false once CANCEL
 * does, or after CHECK_WAIT_MS (by then criu was killed for its timeout anyway).
 */
const imagesChecked = async (workDir: string): Promise<boolean> => {
  const deadline = Date.now() + CHECK_WAIT_MS;
  while (Date.now() < deadline) {
    if (existsSync(join(workDir, RELEASE))) return true;
    if (existsSync(join(workDir, CANCEL))) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return false;
};

/**
 * criu processes still writing into `imagesDir`: after a node agent is killed its criu child
 * runs on. The restarted agent waits for them before it touches the unit or its images. Over RPC
 * criu's command line says `swrk` (or "dump --rpc" once it retitles itself), not the directory:
 * such a criu, or its bridge, holds the directory open.
 */
export const criuWritingTo = (imagesDir: string): number[] => {
  const held = existsSync(imagesDir) ? realpathSync(imagesDir) : imagesDir; // what /proc/PID/fd/N links to
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d) && Number(d) !== process.pid)
    .filter((pid) => {
      try {
        const argv = readFileSync(join('/proc', pid, 'cmdline'), 'utf8').split('\0');
        if (argv.includes('dump') && argv.includes('-D') && argv[argv.indexOf('-D') + 1] === imagesDir) return true;
        if (!argv.some((a) => a.includes('swrk') || a.includes('--rpc'))) return false;
        return readdirSync(join('/proc', pid, 'fd')).some((fd) => readlinkSync(join('/proc', pid, 'fd', fd)) === held);
      } catch {
        return false;
      }
    })
    .map(Number);
};

const continueProcess = (pid: number) => {
  try {
    process.kill(pid, 'SIGCONT');
  } catch {
    // gone
  }
};
