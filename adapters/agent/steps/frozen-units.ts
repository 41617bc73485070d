// What this agent process knows of the units it froze (keyed job/unit): when, the guard that thaws
// each one should this process not, and which were thawed early because the log could not be written.
import type { UnitCgroup } from '../../../domain/events/job.js';
import { thawUnit } from '../../cgroups/unit-cgroups.js';
import type { FreezeGuard } from '../freeze-guard.js';

export const unitKey = (job: string, unit: string): string => `${job}/${unit}`;

export class FrozenUnits {
  /** When this process froze a unit (for frozenMs; after a restart the UnitFrozen event's time). */
  readonly frozenAt = new Map<string, number>();
  /** The guard of each unit this process froze: it thaws the unit if this process cannot. */
  readonly guards = new Map<string, FreezeGuard>();
  /** Units thawed because the log could not be written (→ why): not dumped afterwards. */
  readonly released = new Map<string, string>();

  readonly #log: (line: string) => void;

  constructor(log: (line: string) => void) {
    this.#log = log;
  }

  /** The guard of a unit that is thawed, stopped or aborted: it has nothing left to do. */
  disarm(key: string): void {
    this.guards.get(key)?.disarm();
    this.guards.delete(key);
  }

  /**
   * The log cannot be written: hold nothing frozen meanwhile. Every unit this process froze is
   * thawed now; its dump, should one be asked for later, is refused (the cut is gone).
   */
  releaseAll(why: string, cgroupsOf: (job: string, unit: string) => readonly UnitCgroup[] | undefined): void {
    for (const [key, guard] of this.guards) {
      const [job, unit] = key.split('/') as [string, string];
      const cgroups = cgroupsOf(job, unit);
      if (!cgroups || this.released.has(key)) continue;
      this.released.set(key, why);
      this.#log(`thawing unit ${unit} of ${job}: the log cannot be written (${why})`);
      thawUnit(cgroups)
        .then(() => {
          guard.disarm();
          if (this.guards.get(key) === guard) this.guards.delete(key);
        })
        .catch((error: Error) => this.#log(`could not thaw unit ${unit} of ${job}: ${error.message} (its guard thaws it by the deadline)`));
    }
  }
}
