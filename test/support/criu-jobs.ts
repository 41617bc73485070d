// Jobs for the CRIU suites: real process trees in their own session with nothing open above
// fd 2 (CRIU dumps inherited pipes and refuses sockets connected to the outside).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { scanProcesses } from '../../adapters/tracking/procfs.js';

// bash closes every fd above 2 it inherited (dash cannot name fds > 9), then becomes the job.
// biome-ignore lint/suspicious/noTemplateCurlyInString: a shell script: ${f##*/} is the shell's
const CLOSE_FDS_THEN_EXEC = 'for f in /proc/$$/fd/*; do f=${f##*/}; [ "$f" -gt 2 ] && eval "exec $f>&-"; done 2>/dev/null; exec sh -c "$1"';

/** Starts `sh -c script` as a session leader with fds 0–2 on /dev/null and nothing else open. */
export const startJob = (script: string): number => {
  const child = spawn('bash', ['-c', CLOSE_FDS_THEN_EXEC, 'ckpt-test-job', script], { stdio: 'ignore', detached: true });
  child.unref();
  if (child.pid === undefined) throw new Error('spawn failed');
  return child.pid;
};

/** SIGKILLs every process whose pid, pgid or sid is one of `roots` (and the roots themselves). */
export const killAll = (...roots: Array<number | undefined>): void => {
  const set = new Set(roots.filter((p): p is number => p !== undefined && p > 1));
  if (set.size === 0) return;
  for (const p of scanProcesses()) {
    if (set.has(p.pid) || set.has(p.pgid) || set.has(p.sid)) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
};

export const children = (pid: number) => scanProcesses().filter((p) => p.ppid === pid);

export const readCounter = (file: string): number | undefined => {
  try {
    const n = Number.parseInt(readFileSync(file, 'utf8'), 10);
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
};

/** Writes 1, 2, 3, … into `file` every 50 ms (via a rename, so a reader never sees a half-written value). */
export const counterScript = (file: string) => `i=0; while :; do i=$((i+1)); echo $i > ${file}.tmp; mv ${file}.tmp ${file}; sleep 0.05; done`;
