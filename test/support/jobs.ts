// Driving real jobs through the ckpt CLI in tests: one work directory per suite, a CKPT_HOME per
// store, and cleanup of everything a failed test may leave running (agents, unit cgroups).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { storeId } from '../../adapters/agent/daemon.js';
import { readStat } from '../../adapters/tracking/procfs.js';

export const CLI = fileURLToPath(new URL('../../adapters/cli/main.js', import.meta.url));

export interface PsRow {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  startTime: number;
  comm: string;
  state: string;
  exitStatus: number | null;
  signal: number | null;
  reason: string;
  escapes: string[];
  cgroup: string | null;
  unit: string;
  node: string;
  dependsOn?: { via: string };
  restoredFrom: { node: string; pid: number; startTime: number } | null;
}
export interface Result {
  code: number | null;
  out: string;
  err: string;
}

/** Kills the processes left in a cgroup tree and removes it. */
export const removeCgroups = (dir: string) => {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir, { withFileTypes: true })) if (entry.isDirectory()) removeCgroups(join(dir, entry.name));
  try {
    if (readFileSync(join(dir, 'freezer.state'), 'utf8').trim() !== 'THAWED') spawnSync('sh', ['-c', `echo THAWED > ${join(dir, 'freezer.state')}`]);
  } catch {
    // not a freezer cgroup
  }
  for (const pid of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) sigkill(Number(pid));
  for (let i = 0; i < 50 && spawnSync('rmdir', [dir]).status !== 0; i++) spawnSync('sleep', ['0.1']);
};

/**
 * SIGKILL through the kill(2) system call, never the kill(1) program: procps-ng 4.0.2's `kill -9
 * -PGID` was seen (kernel signal tracing) to call kill(-1, SIGKILL) — every process on the machine.
 * Refuses what is not a real PID or process group (0, 1, negatives).
 */
export const sigkill = (pid: number, group = false): void => {
  if (!Number.isSafeInteger(pid) || pid <= 1) throw new Error(`refusing to SIGKILL ${group ? 'process group ' : ''}${pid}`);
  try {
    process.kill(group ? -pid : pid, 'SIGKILL');
  } catch {
    // gone already
  }
};

/**
 * SIGKILLs the running members of a `ckpt ps --json` listing — each only if the process with that
 * PID is still the one the log knows (same start time). PIDs wrap fast here (pid_max 32768, tests
 * fork thousands): a member whose exit was not seen yet may have its PID taken by any process,
 * and a bare `kill -9 PID` would hit it.
 */
export const killMembers = (rows: readonly PsRow[]): void => {
  for (const m of rows) if (m.state === 'running' && readStat(m.pid)?.startTime === m.startTime) sigkill(m.pid);
};

export const jobHarness = (prefix: string, defaultNode: string) => {
  const work = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const homes: string[] = [];
  const newHome = () => {
    const home = mkdtempSync(join(work, 'home-'));
    homes.push(home);
    return home;
  };
  const h = { home: newHome() };
  const ckpt = (args: string[], home = h.home, env: Record<string, string> = {}): Result => {
    const r = spawnSync(process.execPath, [CLI, ...args], {
      env: { ...process.env, CKPT_HOME: home, CKPT_NODE: defaultNode, CKPT_STORE: '', ...env },
      encoding: 'utf8',
      timeout: 180_000,
      maxBuffer: 1 << 28,
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const json = <T>(args: string[], home = h.home, env: Record<string, string> = {}): T => {
    const r = ckpt([...args, '--json'], home, env);
    if (r.code !== 0 && r.out.trim() === '') throw new Error(`ckpt ${args.join(' ')}: exit ${r.code}: ${r.err}`);
    return JSON.parse(r.out) as T;
  };
  const ps = (job: string, home = h.home): PsRow[] => json<PsRow[]>(['ps', job], home);
  const running = (job: string, home = h.home): PsRow[] => ps(job, home).filter((m) => m.state === 'running');
  /** Kills every running member of the job (see killMembers). */
  const killAll = (job: string, home = h.home): void => killMembers(running(job, home));
  const history = (job: string, home = h.home) =>
    ckpt(['history', job, '--json'], home)
      .out.trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { type: string; data: Record<string, unknown>; metadata: Record<string, unknown>; position: number });
  /** Stops every agent of every home (all nodes), kills what is left in their cgroups, removes the work dir. */
  const cleanup = (nodes: readonly string[] = [defaultNode]) => {
    for (const home of homes) {
      for (const node of nodes) ckpt(['agent', 'stop', '--node', node], home);
      const id = storeId(`sqlite:${join(home, 'events.db')}`);
      for (const hierarchy of readdirSync('/sys/fs/cgroup')) removeCgroups(join('/sys/fs/cgroup', hierarchy, 'ckpt', id));
    }
    spawnSync('pkill', ['-f', work]);
    rmSync(work, { recursive: true, force: true });
  };
  return { work, h, newHome, ckpt, json, ps, running, killAll, history, cleanup };
};
