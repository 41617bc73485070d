// The agent's metrics as a real Prometheus sees them: Debian's prometheus scrapes the real node
// agent (`ckpt agent start --metrics`) every second while real checkpoints (CRIU) run, and its
// HTTP API (/api/v1/query) must count exactly the committed checkpoints (and then a restore) —
// also after the agent was restarted, since the totals are folded from the log, not kept in the agent's memory.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { jobHarness, killMembers, sigkill } from './support/jobs.js';
import { freePort } from './support/postgres.js';
import { firstMissing, needCommand, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until } from './support/wait.js';

const missing = firstMissing(
  needRoot,
  () => (locateCriu() ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)'),
  () => needCommand('prometheus', 'apt-get install -y prometheus'),
);
const test = suiteRequiring('metrics scraped by a real Prometheus (real agent, real CRIU)', missing);

const NODE = 'metricsnode';
const { work, ckpt, ps, cleanup } = jobHarness('ckpt-metrics', NODE);
let prometheus: ChildProcess | undefined;

test.after(async () => {
  if (prometheus?.pid && prometheus.exitCode === null) {
    const exited = new Promise((resolve) => prometheus!.once('exit', resolve));
    sigkill(prometheus.pid);
    await exited;
  }
  cleanup(); // its TSDB is under the work directory, removed with it
});

/** Prometheus scraping the agent's endpoint every second, its TSDB and log in the work directory. */
const startPrometheus = async (target: string): Promise<string> => {
  const dir = join(work, 'prometheus');
  mkdirSync(dir);
  const config = join(dir, 'prometheus.yml');
  writeFileSync(
    config,
    ['global:', '  scrape_interval: 1s', 'scrape_configs:', '  - job_name: ckpt', '    scrape_interval: 1s', '    static_configs:', `      - targets: ['${target}']`, ''].join('\n'),
  );
  const api = `127.0.0.1:${await freePort()}`;
  const log = openSync(join(dir, 'prometheus.log'), 'a');
  prometheus = spawn('prometheus', [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=${api}`, '--log.level=warn'], { stdio: ['ignore', log, log] });
  closeSync(log);
  await until(
    'Prometheus to be ready',
    async () => (await fetch(`http://${api}/-/ready`).catch(() => undefined))?.ok || (prometheus?.exitCode !== null && fail(`Prometheus exited: ${readFileSync(join(dir, 'prometheus.log'), 'utf8')}`)),
    30_000,
    100,
  );
  return `http://${api}`;
};
const fail = (why: string): never => {
  throw new Error(why);
};

/** The value of an instant query's one series (undefined while it has none). */
const query = async (api: string, promql: string): Promise<number | undefined> => {
  const r = (await (await fetch(`${api}/api/v1/query?query=${encodeURIComponent(promql)}`)).json()) as { status: string; data: { result: Array<{ value: [number, string] }> } };
  assert.is(r.status, 'success', promql);
  assert.ok(r.data.result.length <= 1, `${promql}: one series, got ${JSON.stringify(r.data.result)}`);
  return r.data.result[0] ? Number(r.data.result[0].value[1]) : undefined;
};

/** Waits until Prometheus has scraped the expected value, then asserts it (so a wrong value fails, naming it). */
const scraped = async (api: string, promql: string, expected: number) => {
  let last: number | undefined;
  await until(`Prometheus to see ${promql} = ${expected}`, async () => (last = await query(api, promql)) === expected, 30_000, 250).catch(() => {});
  assert.is(last, expected, `${promql} as Prometheus scraped it`);
};

const checkpoint = (job: string) => {
  const r = ckpt(['checkpoint', job, '--wait', '--json']);
  assert.is(r.code, 0, r.err);
  return (JSON.parse(r.out) as { outcome: string }).outcome;
};

test('a metrics port in use ends the agent’s start, saying so', async () => {
  const busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  const { port } = busy.address() as { port: number };
  try {
    const r = ckpt(['agent', 'start', '--metrics', `127.0.0.1:${port}`]);
    assert.is(r.code, 1, r.err);
    assert.match(r.err, `cannot serve metrics on 127.0.0.1:${port}: another process listens there: choose another port`);
    assert.is(ckpt(['agent', 'status']).code, 1, 'no agent runs');
  } finally {
    busy.close();
  }
});

test('Prometheus counts the committed checkpoints, before and after the agent restarts', async () => {
  const target = `127.0.0.1:${await freePort()}`;
  const started = ckpt(['agent', 'start', '--metrics', target]);
  assert.is(started.code, 0, started.err);
  assert.is((JSON.parse(ckpt(['agent', 'status', '--json']).out) as { metrics?: string }).metrics, `http://${target}/metrics`, 'status says where');
  const api = await startPrometheus(target);
  await scraped(api, 'up{job="ckpt"}', 1);
  await scraped(api, 'ckpt_checkpoint_operations_total{result="committed"}', 0);

  const run = ckpt(['run', '--detach', '--job', 'scraped', '--', 'sh', '-c', 'sleep 1000 & sleep 1001 & wait']);
  assert.is(run.code, 0, run.err);
  const running = await until(
    'the job’s processes',
    () => {
      const n = ps('scraped').filter((m) => m.state === 'running').length;
      return n >= 4 && n; // its init, sh and two sleeps
    },
    30_000,
    50,
  );
  await scraped(api, 'ckpt_tracked_processes{ckpt_job="scraped"}', running);

  const outcomes = [checkpoint('scraped'), checkpoint('scraped')];
  assert.equal(outcomes, ['committed', 'committed']);
  await scraped(api, 'ckpt_checkpoint_operations_total{result="committed"}', 2);
  await scraped(api, 'ckpt_checkpoint_duration_seconds_count', 2);

  // A new agent process: the totals come from the log again, so Prometheus sees no counter reset.
  const stopped = ckpt(['agent', 'stop']);
  assert.is(stopped.code, 0, stopped.err);
  const again = ckpt(['agent', 'start', '--metrics', target]);
  assert.is(again.code, 0, again.err);
  outcomes.push(checkpoint('scraped'));
  assert.is(outcomes.filter((o) => o === 'committed').length, 3);
  await scraped(api, 'ckpt_checkpoint_operations_total{result="committed"}', 3);
  await scraped(api, 'resets(ckpt_checkpoint_operations_total{result="committed"}[5m])', 0);
  await scraped(api, 'ckpt_checkpoint_operations_total{result="aborted"}', 0);
  await scraped(api, 'ckpt_checkpoint_frozen_seconds_count', 3);
  await scraped(api, 'ckpt_log_lag_events', 0);

  // Killed and restarted from its last version: one restore, restored.
  killMembers(ps('scraped'));
  const restarted = ckpt(['restart', 'scraped', '--wait', '--json']);
  assert.is(restarted.code, 0, restarted.err);
  assert.is((JSON.parse(restarted.out) as { outcome: string }).outcome, 'restored');
  await scraped(api, 'ckpt_restore_operations_total{result="restored"}', 1);
  await scraped(api, 'ckpt_restore_duration_seconds_count', 1);
  await scraped(api, 'ckpt_restore_operations_total{result="failed"}', 0);
  killMembers(ps('scraped'));
});

test.run();
