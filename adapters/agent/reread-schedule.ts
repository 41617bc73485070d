// When each tracked process is next re-read from /proc. The kernel reports forks, execs, exits,
// session and name changes as they happen; what it does not report (setpgid, a cgroup move) is
// found by re-reading. A process that just forked, exec'd, changed, or whose parent exited is
// re-read every `minMs` for `hotMs` (a shell's child sets its group, a daemon its session, right
// after such a moment), then ever more rarely (its interval doubles up to `maxMs`), and no tick
// reads more than `budget` processes (the ones due longest first): the cost follows activity,
// not the number of live processes.
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

  constructor(options: RereadScheduleOptions) {
    this.#o = options;
  }

  get size(): number {
    return this.#due.size;
  }

  /** Activity: read again after the shortest interval. */
  soon(pid: number, now: number): void {
    this.#due.set(pid, { at: now + this.#o.minMs, interval: this.#o.minMs, hot: now + this.#o.hotMs });
  }

  /** Read and nothing changed: once no longer hot, the interval doubles (up to maxMs). */
  quiet(pid: number, now: number): void {
    const d = this.#due.get(pid);
    const hot = d?.hot ?? 0;
    const interval = now < hot ? this.#o.minMs : Math.min((d?.interval ?? this.#o.minMs) * 2, this.#o.maxMs);
    this.#due.set(pid, { at: now + interval, interval, hot });
  }

  /** Read again after exactly `ms`, then back off from there. */
  after(pid: number, now: number, ms: number): void {
    this.#due.set(pid, { at: now + ms, interval: Math.min(ms, this.#o.maxMs), hot: 0 });
  }

  forget(pid: number): void {
    this.#due.delete(pid);
  }

  /** The processes due now, longest overdue first, at most the budget. */
  take(now: number): number[] {
    const due: Array<[number, number]> = [];
    for (const [pid, d] of this.#due) if (d.at <= now) due.push([pid, d.at]);
    if (due.length > this.#o.budget) due.sort((a, b) => a[1] - b[1]).length = this.#o.budget;
    return due.map(([pid]) => pid);
  }
}
