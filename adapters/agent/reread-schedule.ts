// When each tracked process is next re-read from /proc. The kernel reports forks, execs, exits,
// session and name changes as they happen; what it does not report (setpgid, a cgroup move) is
// found by re-reading. A process that just forked, exec'd, changed, or whose parent exited is
// re-read every `minMs` for `hotMs` (a shell's child sets its group, a daemon its session, right
// after such a moment), then ever more rarely (its interval doubles up to `maxMs`), and no tick
// reads more than `budget` processes (the most recently active, then the ones due longest first):
// the cost follows activity, not the number of live processes. Quiet processes (at `maxMs`) fall
// due together, on a grid of `maxMs`: one round reads them all (their cgroups' lists once, see
// cgroups/thread-lists.ts), and the ticks between rounds find nothing due without looking.
export interface RereadScheduleOptions {
  /** The first interval after activity (and the tick). */
  readonly minMs: number;
  /** How long after activity a process is re-read every minMs. */
  readonly hotMs: number;
  /** The longest interval a quiet process reaches. */
  readonly maxMs: number;
  /** At most this many re-reads per tick; the rest wait for the next tick, in due order. */
  readonly budget: number;
}

interface Due {
  at: number;
  interval: number;
  /** Until when it is re-read every minMs. */
  hot: number;
}

export class RereadSchedule {
  readonly #o: RereadScheduleOptions;
  readonly #due = new Map<number, Due>();
  /** No process is due before this (a lower bound: a tick before it reads nothing). */
  #next = Infinity;

  constructor(options: RereadScheduleOptions) {
    this.#o = options;
  }

  get size(): number {
    return this.#due.size;
  }

  /** Activity: read again after the shortest interval. */
  soon(pid: number, now: number): void {
    this.#set(pid, { at: now + this.#o.minMs, interval: this.#o.minMs, hot: now + this.#o.hotMs });
  }

  /** Read and nothing changed: once no longer hot, the interval doubles (up to maxMs, then on the maxMs grid: never later). */
  quiet(pid: number, now: number): void {
    const d = this.#due.get(pid);
    const hot = d?.hot ?? 0;
    const { minMs, maxMs } = this.#o;
    const interval = now < hot ? minMs : Math.min((d?.interval ?? minMs) * 2, maxMs);
    this.#set(pid, { at: interval === maxMs ? Math.floor((now + maxMs) / maxMs) * maxMs : now + interval, interval, hot });
  }

  /** Read again after exactly `ms`, then back off from there. */
  after(pid: number, now: number, ms: number): void {
    this.#set(pid, { at: now + ms, interval: Math.min(ms, this.#o.maxMs), hot: 0 });
  }

  /** Quiet: at the longest interval (re-read once a round). */
  isQuiet(pid: number): boolean {
    return this.#due.get(pid)?.interval === this.#o.maxMs;
  }

  forget(pid: number): void {
    this.#due.delete(pid);
  }

  /**
   * The processes due now, at most the budget: the shortest intervals (most recently active)
   * first, then the longest overdue. Each one taken is to be rescheduled (soon, quiet, after) or
   * forgotten.
   */
  take(now: number): number[] {
    if (now < this.#next) return [];
    const due: Array<[number, Due]> = [];
    let next = Infinity;
    for (const entry of this.#due) {
      if (entry[1].at <= now) due.push(entry);
      else next = Math.min(next, entry[1].at);
    }
    if (due.length > this.#o.budget) {
      due.sort(([, a], [, b]) => a.interval - b.interval || a.at - b.at);
      for (const [, d] of due.splice(this.#o.budget)) next = Math.min(next, d.at);
    }
    this.#next = next;
    return due.map(([pid]) => pid);
  }

  #set(pid: number, d: Due) {
    this.#due.set(pid, d);
    this.#next = Math.min(this.#next, d.at);
  }
}
