// A unit on a terminal it does not own — a job started in the foreground of the user's terminal —
// is refused before the dump. CRIU dumps it only with --shell-job, and then restores it only onto
// the terminal of the process that runs the restore (measured: "Don't have tty to inherit session
// from" otherwise); ckpt restores from its node agent, which has none, and the user's terminal may
// be long gone. A pseudo-terminal whose master and slave are both in the unit needs nothing.
import type { Failure } from '../../domain/failure.js';
import { readStat, readTerminals } from '../tracking/procfs.js';

/**
 * The terminals `pids` use whose other end is not held by one of them, one line each, e.g.
 * "/dev/pts/3 (pid 12 sh: fd 0, fd 1)"; [] when there are none. Processes gone meanwhile are skipped.
 */
export const outsideTerminals = (pids: readonly number[]): string[] => {
  const seen = new Map<number, Array<{ pid: number; how: string[] }>>();
  const masters = new Set<number>();
  const lines: string[] = [];
  const who = (pid: number) => `pid ${pid} ${readStat(pid)?.comm ?? ''}`.trim();
  for (const pid of pids) {
    const t = readTerminals(pid);
    if (!t) continue;
    for (const m of t.masters) masters.add(m);
    for (const [index, how] of t.slaves) seen.set(index, [...(seen.get(index) ?? []), { pid, how }]);
    for (const other of t.others) lines.push(`${other} (${who(pid)})`);
  }
  for (const [index, users] of seen) {
    if (masters.has(index)) continue;
    const named = users.slice(0, 3).map((u) => `${who(u.pid)}: ${u.how.join(', ')}`);
    if (users.length > 3) named.push(`${users.length - 3} more`);
    lines.push(`/dev/pts/${index} (${named.join('; ')})`);
  }
  return lines;
};

/** The refusal for a unit using terminals outside it (lines from outsideTerminals). */
export const terminalRefusal = (terminals: readonly string[]): Error & { failure: Failure } => {
  const failure: Failure = {
    class: 'tty',
    message: `the unit uses a terminal whose other end is outside it: ${terminals.join('; ')}`,
    hint:
      'CRIU could put it back only on the terminal of whoever restores it, and ckpt restores from its node agent, which has none: ' +
      'start the job with `ckpt run --detach` (its output goes to a file), or give it a terminal of its own inside the job',
  };
  return Object.assign(new Error(`${failure.message} — ${failure.hint}`), { failure });
};
