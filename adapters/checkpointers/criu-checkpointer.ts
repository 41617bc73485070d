// The Checkpointer port over CRIU and the unit's cgroups. The unit's cgroup freezer stops the
// unit (nothing forks or exits meanwhile); `criu dump -t INIT --freeze-cgroup UNIT
// --leave-running` then captures the unit's one tree (ckpt-unit-init keeps it one tree) and
// leaves it frozen, as CRIU found it, until the coordinator says thaw, stop or abort.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CANCEL, DEFAULT_FREEZE_BUDGET_MS, RELEASE, type Checkpointer, type UnitTarget } from '../../domain/checkpointer.js';
import type { UnitCgroup } from '../../domain/events/job.js';
import { freezeForDump, freezerOf, killUnit, thawUnit, unitFreezeState, unitProcesses } from '../cgroups/unit-cgroups.js';
import { followImages, prepareUnitDir, removePartial } from '../images/image-store.js';
import { readStat } from '../tracking/procfs.js';
import { dumpTree, probeCriu, restoreTree } from './criu.js';
import { readPstree } from './criu-images.js';

export class CriuCheckpointer implements Checkpointer {
  readonly name = 'criu';

  constructor(
    /** The criu binary (locateCriu), or undefined when there is none: every step then says so. */
    private readonly criu: string | undefined,
    /** $CKPT_HOME/images: partial images of an aborted version are removed from here. */
    private readonly imagesRoot: string,
  ) {}

  probe() {
    return probeCriu(this.criu);
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
    prepareUnitDir(this.imagesRoot, u.job, u.version, u.unit);
    const freezer = u.scope === 'cgroup' ? freezerOf(u.cgroups) : undefined;
    const started = performance.now();
    // Hashed and flushed while criu writes: committing then has nothing left to read.
    const follower = followImages(this.imagesRoot, u.job, u.version, u.unit);
    try {
      await dumpTree({ criu, pid: u.root.pid, imagesDir: u.imagesDir, leaveRunning: true, ...(freezer && { freezeCgroup: freezer.dir }) });
    } catch (error) {
      await follower.cancel();
      throw error;
    }
    const images = await follower.finish();
    return { files: images.length, bytes: images.reduce((n, f) => n + f.bytes, 0), durationMs: performance.now() - started, images };
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
    const { unitRemoved } = removePartial(this.imagesRoot, u.job, u.version, u.unit);
    return { thawed: frozen, imagesRemoved: unitRemoved };
  }

  async restore(u: { imagesDir: string; pidNamespace: boolean; cgroups: readonly UnitCgroup[]; workDir: string }) {
    const cgroups = [...new Set(u.cgroups.map((c) => c.path))];
    // CRIU runs its action script at pre-resume, with every process restored but none running yet.
    const gate = join(u.workDir, 'pre-resume.sh');
    writeFileSync(gate, preResume(join(u.workDir, RELEASE), join(u.workDir, CANCEL)), { mode: 0o700 });
    const r = await restoreTree({ criu: this.#binary(), imagesDir: u.imagesDir, pidNamespace: u.pidNamespace, detach: true, workDir: u.workDir, cgroups, extraArgs: ['--action-script', gate] });
    return { rootPid: r.rootPid, durationMs: r.durationMs };
  }

  #binary(): string {
    if (!this.criu) throw new Error('no usable criu on this node: install CRIU ≥ 4.1 (bash scripts/install-criu.sh) or set CKPT_CRIU');
    return this.criu;
  }
}

/**
 * criu processes still writing into `imagesDir`: after a node agent is killed its criu child
 * runs on. The restarted agent waits for them before it touches the unit or its images.
 */
export const criuWritingTo = (imagesDir: string): number[] =>
  readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        const argv = readFileSync(join('/proc', pid, 'cmdline'), 'utf8').split('\0');
        return argv.includes('dump') && argv.includes('-D') && argv[argv.indexOf('-D') + 1] === imagesDir;
      } catch {
        return false;
      }
    })
    .map(Number);

/** The pre-resume hook: waits for the release (or the cancel) file; exit 1 makes criu undo the restore. */
const preResume = (release: string, cancel: string) => `#!/bin/sh
[ "$CRTOOLS_SCRIPT_ACTION" = pre-resume ] || exit 0
while [ ! -e '${release}' ]; do
  [ -e '${cancel}' ] && exit 1
  sleep 0.005
done
`;
