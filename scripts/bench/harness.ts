// A private ckpt home for a benchmark: its own store, node name and agent, jobs started with
// `ckpt run --detach`, checkpoints requested through the log (timed from the request to the
// outcome, figures from the events), and a cleanup that leaves no job, frozen cgroup or agent.
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openEventStore } from '../../adapters/store/open.js';
import type { EventStore } from '../../domain/event-store.js';
import { exec, must, sleep, watch } from './run.js';

export interface Row {
  pid: number;
  pgid: number;
  comm: string;
  reason: string;
  state: string;
  cgroup: string;
}
export interface Workload {
  job: string;
  command: string[];
  processes: number;
  ready: (rows: Row[]) => boolean;
}

/** One checkpoint through the log: how it ended and its figures (ms, from its events). */
export interface Checkpoint {
  outcome: 'committed' | 'aborted';
  reason?: string;
  total: number;
  /** UnitFrozen / UnitDumped / CheckpointCommitted durationMs, UnitThawed frozenMs. */
  freeze: number;
  dump: number;
  commit: number;
  frozen: number;
  bytes: number;
}

export const DEFAULT_CLI = fileURLToPath(new URL('../../adapters/cli/main.js', import.meta.url));

export const benchHome = (name: string, node: string, cli = DEFAULT_CLI) => {
  const dir = mkdtempSync(join(tmpdir(), `ckpt-bench-${name}-`));
  const home = join(dir, 'home');
  // A fresh home and a node name of our own: nothing here touches another agent or its jobs.
  const env: NodeJS.ProcessEnv = { ...process.env, CKPT_HOME: home, CKPT_NODE: node };
  delete env.CKPT_STORE;
  const jobs: string[] = [];
  const seen = new Map<number, Row>(); // every process ever listed, so cleanup kills whatever we saw
  let store: EventStore | undefined;

  const ps = async (job: string) => (JSON.parse(await must(process.execPath, [cli, 'ps', job, '--json'], env)) as Row[]).filter((r) => r.state === 'running');

  /** Starts the job and waits until the agent knows all its processes and the workload is ready. */
  const start = async (w: Workload): Promise<Row[]> => {
    jobs.push(w.job);
    await must(process.execPath, [cli, 'run', '--detach', '--job', w.job, '--', ...w.command], env);
    store ??= openEventStore(`sqlite:${join(home, 'events.db')}`); // the first `ckpt run` started the agent and made the log
    for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(200)) {
      const rows = await ps(w.job);
      for (const r of rows) seen.set(r.pid, r);
      if (rows.length >= w.processes && w.ready(rows)) return rows;
    }
    throw new Error(`job ${w.job} did not get ready (${w.processes} processes) within 30 s`);
  };

  /** One checkpoint through the log, timed wall-clock; aborted ones are results too (`strict` throws). */
  const checkpoint = async (job: string, options: { strict?: boolean; freezeBudgetMs?: number } = {}): Promise<Checkpoint> => {
    const stream = `job-${job}`;
    const request = randomUUID();
    const t0 = performance.now();
    const data = { request, stop: false, timeoutMs: 120_000, ...(options.freezeBudgetMs !== undefined && { freezeBudgetMs: options.freezeBudgetMs }) };
    const { revision } = await store!.append(stream, [{ type: 'CheckpointRequested', data, metadata: { correlationId: request } }]);
    let version: number | undefined;
    const r: Checkpoint = { outcome: 'committed', total: 0, freeze: 0, dump: 0, commit: 0, frozen: 0, bytes: 0 };
    await watch(store!, stream, revision + 1, 180_000, (e) => {
      if (e.type === 'RequestRejected' && e.data.request === request) throw new Error(`checkpoint of ${job} refused: ${e.data.reason}`);
      if (e.type === 'CheckpointPlanned' && e.data.request === request) version = e.data.version;
      const ours = (d: { version: number }) => version !== undefined && d.version === version;
      if (e.type === 'CheckpointAborted' && ours(e.data)) {
        if (options.strict) throw new Error(`checkpoint v${version} of ${job} aborted: ${e.data.reason}`);
        return Object.assign(r, { outcome: 'aborted', reason: e.data.reason, total: performance.now() - t0 });
      }
      if (e.type === 'UnitFrozen' && ours(e.data)) r.freeze = e.data.durationMs;
      if (e.type === 'UnitDumped' && ours(e.data)) (r.dump = e.data.durationMs), (r.bytes = e.data.bytes);
      if (e.type === 'CheckpointCommitted' && ours(e.data)) r.commit = e.data.durationMs;
      if (e.type === 'UnitThawed' && ours(e.data)) r.frozen = e.data.frozenMs;
      if (e.type === 'CheckpointCompleted' && ours(e.data)) return Object.assign(r, { total: performance.now() - t0 });
      return undefined;
    });
    rmSync(join(home, 'images', job, `v${version}`), { recursive: true, force: true }); // disk, not history
    return r;
  };

  /** Thaws (v1 and cgroup2), kills every process seen, waits for the jobs' ends, stops the agent, removes leftovers. */
  const cleanup = async () => {
    const cgroups = new Set([...seen.values()].map((r) => r.cgroup));
    // A job left frozen by a failure mid-checkpoint would not die: thaw it first.
    for (const cgroup of cgroups) {
      for (const [file, value] of [
        [join('/sys/fs/cgroup/freezer', cgroup, 'freezer.state'), 'THAWED'],
        [join('/sys/fs/cgroup/unified', cgroup, 'cgroup.freeze'), '0'],
      ] as const) {
        try {
          writeFileSync(file, value);
        } catch {
          /* gone already, or no such hierarchy */
        }
      }
    }
    for (const r of seen.values()) {
      // The unit init leads its own process group: killing that group catches children we never listed.
      for (const target of r.reason === 'root' && r.pgid === r.pid ? [-r.pid, r.pid] : [r.pid]) {
        try {
          process.kill(target, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
    for (const job of store ? jobs : []) {
      await watch(store!, `job-${job}`, 0, 10_000, (e) => (e.type === 'JobEnded' ? true : undefined)).catch((e: Error) => console.error(`  ${job} never ended: ${e.message}`));
    }
    await store?.close();
    const stopped = await exec(process.execPath, [cli, 'agent', 'stop'], env).catch((e: Error) => ({ code: -1, out: e.message }));
    if (stopped.code !== 0) console.error(`ckpt agent stop failed (${stopped.code}): ${stopped.out}`);
    // Anything the agent logged besides starting and stopping is worth reading.
    const logDir = join(home, 'agent');
    const logs = existsSync(logDir)
      ? readdirSync(logDir)
          .filter((f) => f.endsWith('.log'))
          .flatMap((f) => readFileSync(join(logDir, f), 'utf8').trim().split('\n'))
      : [];
    const odd = logs.filter((l) => l && !/; ready$|stopping \(SIG/.test(l));
    console.log(`\n  agent log: ${odd.length === 0 ? 'nothing but start and stop' : `${odd.length} lines:\n    ${odd.slice(0, 10).join('\n    ')}`}`);
    // The agent removes a job's cgroups when it ends; say so if any were left, and remove them.
    for (const cgroup of cgroups) {
      for (const hierarchy of readdirSync('/sys/fs/cgroup')) {
        const parts = cgroup.split('/').filter(Boolean); // ckpt / <store> / JOB / UNIT
        for (let n = parts.length; n > 1; n--) {
          const path = join('/sys/fs/cgroup', hierarchy, ...parts.slice(0, n));
          if (!existsSync(path)) continue;
          console.error(`  left behind by the agent: ${path}`);
          try {
            rmdirSync(path);
          } catch {
            /* not empty: someone else's */
          }
        }
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };

  /** Events in the job's stream so far. */
  const events = async (job: string): Promise<number> => ((await store?.streamRevision(`job-${job}`)) ?? -1) + 1;

  return { dir, home, env, ps, start, checkpoint, cleanup, seen, events };
};
