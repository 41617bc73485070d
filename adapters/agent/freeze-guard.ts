// A freeze that does not depend on the agent to end: before the agent freezes a unit it starts
// dist/native/ckpt-freeze-guard (see freeze-guard.c), a tiny process in its own session that
// thaws the unit at the checkpoint's deadline, or at once when the agent dies (its pipe from the
// agent reaches EOF), unless the agent disarmed it first.
//
// Disarm and --stop: a unit is disarmed once it is thawed, stopped or aborted by the agent. A
// checkpoint with --stop is committed before its units are stopped: from the moment the agent
// starts the stop step it tells the guard so ("k"), and the guard's way out becomes a kill, not a
// thaw — the images are committed and a thawed original would run on beside its restart. Before
// that (the commit may still fail and abort), the way out is a thaw, as for any checkpoint.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { UnitCgroup } from '../../domain/events/job.js';

export const freezeGuardPath: string = fileURLToPath(new URL('../../native/ckpt-freeze-guard', import.meta.url));

/** The files the guard needs: every freezer of the unit (thaw), its cgroup.kill (cgroup2), and the freezers' cgroup.procs (who is traced; the v1 kill). */
export const guardFiles = (cgroups: readonly UnitCgroup[]): string[] => {
  const v2 = cgroups.filter((c) => c.controller === 'unified' && existsSync(join(c.path, 'cgroup.freeze'))).map((c) => c.path);
  const v1 = cgroups.filter((c) => c.controller === 'freezer').map((c) => c.path);
  return [
    ...v2.map((dir) => join(dir, 'cgroup.freeze')),
    ...v2.filter((dir) => existsSync(join(dir, 'cgroup.kill'))).map((dir) => join(dir, 'cgroup.kill')),
    ...v1.map((dir) => join(dir, 'freezer.state')),
    ...[...v2, ...v1].map((dir) => join(dir, 'cgroup.procs')),
  ];
};

export class FreezeGuard {
  readonly #child: ChildProcess;

  private constructor(child: ChildProcess) {
    this.#child = child;
  }

  /** Starts a guard for a unit about to be frozen; resolves once it holds every file open. */
  static arm(cgroups: readonly UnitCgroup[], deadlineMs: number): Promise<FreezeGuard> {
    const files = guardFiles(cgroups);
    if (!existsSync(freezeGuardPath)) return Promise.reject(new Error(`the freeze guard ${freezeGuardPath} is missing (run npm run build)`));
    // Arguments, never a shell; stderr goes to the agent's log.
    const child = spawn(freezeGuardPath, [String(Math.floor(deadlineMs)), ...files], { detached: true, stdio: ['pipe', 'pipe', 'inherit'] });
    child.stdin!.on('error', () => {}); // the guard may be gone already (deadline passed): nothing to tell it
    return new Promise((resolve, reject) => {
      let out = '';
      child.once('error', (error) => reject(new Error(`could not start the freeze guard: ${error.message}`)));
      child.once('exit', (code) => reject(new Error(`the freeze guard exited (status ${code}) before it was armed: see the agent's log`)));
      child.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (!out.includes('armed\n')) return;
        child.removeAllListeners('exit');
        child.stdout!.destroy();
        child.unref();
        (child.stdin as unknown as { unref?: () => void }).unref?.();
        resolve(new FreezeGuard(child));
      });
    });
  }

  /** The unit is thawed, stopped or aborted: the guard ends without touching it. */
  disarm(): void {
    this.#say('d');
    this.#child.stdin!.end();
  }

  /** The checkpoint is committed and stops the unit: if the agent goes now, the guard kills the unit instead of thawing it. */
  stopping(): void {
    this.#say('k');
  }

  #say(what: string) {
    if (this.#child.stdin!.writable) this.#child.stdin!.write(what);
  }
}
