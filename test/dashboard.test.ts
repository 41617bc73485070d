// `ckpt dashboard`'s HTTP API: the real command serving a real SQLite store that holds the recorded
// real histories (test/histories), a job with a hostile command line and one of 100,000 events.
// Each endpoint is checked against the projection it shows; tokens, bad paths and methods are
// refused as they should be; a hostile command line never leaves the server as markup.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readHistoryFile } from '../adapters/cli/history-file.js';
import { openEventStore } from '../adapters/store/open.js';
import type { EventStore, ProposedEvent } from '../domain/event-store.js';
import { explanation, foldExplain } from '../projections/explain.js';
import { forkStorm, storeRecorded, submitted } from './support/history.js';
import { CLI } from './support/jobs.js';
import { freePort } from './support/postgres.js';
import { until } from './support/wait.js';

const RECORDED = fileURLToPath(new URL('../../test/histories/', import.meta.url));
const multi = readHistoryFile(join(RECORDED, 'two-units-stop-restart-abort.ndjson'));
const single = readHistoryFile(join(RECORDED, 'checkpoint-stop-restart-kill.ndjson'));
const HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">';
const BIG_FORKS = 33_333; // + 8 events of its start: 100,007 events

const home = mkdtempSync(join(tmpdir(), 'ckpt-dashboard-'));
const url = `sqlite:${join(home, 'events.db')}`;
const children: ChildProcess[] = [];

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}
const http = (base: string, path: string, options: { method?: string; headers?: Record<string, string> } = {}): Promise<Reply> =>
  new Promise((resolve, reject) => {
    const r = request(base + path, { method: options.method ?? 'GET', headers: options.headers ?? {} }, (res) => {
      let body = '';
      res
        .setEncoding('utf8')
        .on('data', (c: string) => (body += c))
        .on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    r.on('error', reject).end();
  });
const json = async <T = any>(base: string, path: string): Promise<T> => {
  const r = await http(base, path);
  assert.is(r.status, 200, `${path}: ${r.body}`);
  return JSON.parse(r.body) as T;
};

/** Starts `ckpt dashboard ARGS` and resolves with its printed URL (or rejects with what it said when it ended). */
const dashboard = (args: string[]): Promise<{ url: string; child: ChildProcess }> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'dashboard', ...args], { env: { ...process.env, CKPT_HOME: home, CKPT_STORE: url }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => {
      out += c;
      const m = /on (http:\/\/\S+)/.exec(out);
      if (m) resolve({ url: m[1]!, child });
    });
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
    child.on('exit', (code) => reject(new Error(`ckpt dashboard ${args.join(' ')} ended (${code}): ${out}${err}`)));
  });

const test = suite('dashboard: the HTTP API over a real SQLite store of recorded histories');
let base = '';
let store: EventStore;

test.before(async () => {
  // The recorded histories as they were recorded (ids, times, metadata), then the made-up jobs.
  await storeRecorded(url, [...multi.events, ...single.events.filter((x) => x.stream === `job-${single.job}`)]);
  store = openEventStore(url);
  const hostile = submitted('hostile').map((e) => (e.type === 'UnitAssigned' ? ({ ...e, data: { ...e.data, command: ['sh', '-c', HOSTILE] } } as ProposedEvent) : e));
  await store.append('job-hostile', hostile);
  const big = [...submitted('big'), ...forkStorm(1000, BIG_FORKS)];
  for (let i = 0; i < big.length; i += 5000) await store.append('job-big', big.slice(i, i + 5000));
  base = (await dashboard(['--listen', `127.0.0.1:${await freePort()}`])).url.replace(/\/$/, '');
});

test.after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await store?.close();
});

test('first load of a job with 100,000 events (reported, not asserted)', async () => {
  const events = await store.readStream('job-big', { direction: 'backwards', limit: 1 });
  assert.is(events[0]!.revision + 1, 8 + 3 * BIG_FORKS);
  const timed = async (path: string) => {
    const t0 = performance.now();
    const r = await http(base, path);
    assert.is(r.status, 200, r.body);
    return { wall: performance.now() - t0, server: Number(/dur=([\d.]+)/.exec(String(r.headers['server-timing']))![1]), body: JSON.parse(r.body) };
  };
  const first = await timed('/api/jobs/big');
  const ops = await timed('/api/jobs/big/operations');
  const again = await timed('/api/jobs/big');
  assert.is(first.body.units[0].hidden, BIG_FORKS, 'the exited forks are counted, not drawn');
  assert.equal(first.body, again.body);
  console.log(
    `figure: dashboard first load of a job with ${events[0]!.revision + 1} events: membership ${first.server.toFixed(0)} ms server time (${first.wall.toFixed(0)} ms wall), ` +
      `operations ${ops.server.toFixed(0)} ms; again (from the snapshot it saved) ${again.server.toFixed(0)} ms`,
  );
});

test('jobs: every job, by state, failed only', async () => {
  const all = await json<Array<{ job: string; state: string }>>(base, '/api/jobs');
  assert.equal(all.map((j) => j.job).sort(), ['big', 'hostile', 'multi', single.job].sort());
  const cli = spawnSync(process.execPath, [CLI, 'jobs', '--all', '--json'], { env: { ...process.env, CKPT_HOME: home, CKPT_STORE: url }, encoding: 'utf8' });
  assert.equal(all, JSON.parse(cli.stdout), 'the same rows as ckpt jobs --all --json');
  const running = await json<Array<{ job: string; state: string }>>(base, '/api/jobs?state=running');
  assert.equal(
    running.map((j) => j.job),
    all.filter((j) => j.state === 'running').map((j) => j.job),
  );
  assert.ok(running.length > 0 && running.length < all.length);
  const failed = await json<Array<{ job: string; state: string }>>(base, '/api/jobs?failed=1');
  assert.equal(
    failed.map((j) => j.job),
    all.filter((j) => j.state === 'ended (failed)').map((j) => j.job),
  );
});

test('one job: its tree now and at a position (ps --at), and its operations, audit and explained failure', async () => {
  const job = multi.job;
  const now = await json(base, `/api/jobs/${job}`);
  assert.equal(now.units.map((u: { unit: string }) => u.unit).sort(), ['a', 'b']);
  assert.ok(now.first > 0 && now.last >= now.first);
  // At a position: the same members and states as `ckpt ps --at` (every member with all=1).
  const at = multi.events.find((e) => e.type === 'UnitThawed')!.position;
  const view = await json(base, `/api/jobs/${job}?at=${at}&all=1`);
  const ps = JSON.parse(spawnSync(process.execPath, [CLI, 'ps', job, '--at', String(at), '--json'], { env: { ...process.env, CKPT_HOME: home, CKPT_STORE: url }, encoding: 'utf8' }).stdout) as Array<{
    pid: number;
    state: string;
    reason: string;
  }>;
  const shown = view.units.flatMap((u: { members: Array<{ pid: number; state: string; reason: string }> }) => u.members.map((m) => `${m.pid} ${m.state} ${m.reason}`)).sort();
  assert.equal(shown, ps.map((m) => `${m.pid} ${m.state} ${m.reason}`).sort());
  assert.is(view.at, at);

  const ops = await json(base, `/api/jobs/${job}/operations`);
  assert.equal(
    ops.checkpoints.map((c: { version: number; outcome: string }) => `v${c.version} ${c.outcome}`),
    ['v1 committed', 'v2 committed', 'v3 committed', 'v4 aborted'],
  );
  const v1 = ops.checkpoints[0];
  assert.equal(v1.units.map((u: { unit: string; steps: Record<string, { result: string }> }) => `${u.unit}: ${Object.keys(u.steps).join(',')}`).sort(), [
    'a: freeze,dump,verify,thaw',
    'b: freeze,dump,verify,thaw',
  ]);
  assert.is(ops.rows.length, ops.checkpoints.length + ops.restarts.filter((r: { restart: number | null }) => r.restart !== null).length);
  assert.is(ops.aggregate.committed, 3);
  const restarts = ops.restarts.filter((r: { restart: number | null }) => r.restart !== null);
  assert.ok(restarts.length > 0);
  for (const r of restarts)
    assert.ok(
      r.units.every((u: { steps?: Record<string, unknown> }) => Object.keys(u.steps ?? {}).includes('restore')),
      `restart r${r.restart} has each unit's restore step`,
    );

  const audit = await json(base, `/api/jobs/${job}/audit`);
  assert.ok(audit.entries.some((e: { kind: string }) => e.kind === 'restart'));
  const x = await json(base, `/api/jobs/${job}/explain?version=4`);
  assert.equal(x, { job, ...JSON.parse(JSON.stringify(explanation(foldExplain({ kind: 'checkpoint', version: 4 }, multi.events)))) });
  assert.is(x.cause.failures[0].failure.class, 'timeout');
  const missing = await json(base, `/api/jobs/${job}/explain?version=9`);
  assert.equal(missing.known, [1, 2, 3, 4]);
});

test('bad paths are 404, bad parameters 400, and every method but GET and HEAD 405', async () => {
  for (const path of ['/nope', '/api', '/api/jobs/multi/nope', '/api/jobs/nosuch', '/api/jobs/nosuch/operations', '/api/jobs/nosuch/explain?version=1', '/index.html']) {
    const r = await http(base, path);
    assert.is(r.status, 404, path);
    assert.ok(JSON.parse(r.body).error, path);
  }
  for (const path of ['/api/jobs/Bad%20Name', '/api/jobs/%E0%A4%A', '/api/jobs/multi?at=0', '/api/jobs/multi?at=x', '/api/jobs/multi/explain', '/api/jobs/multi/explain?version=1&restart=1']) {
    const r = await http(base, path);
    assert.is(r.status, 400, `${path}: ${r.body}`);
  }
  assert.match(JSON.parse((await http(base, '/api/jobs/Bad%20Name')).body).error, 'is not a job name');
  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
    const r = await http(base, '/api/jobs', { method });
    assert.equal([r.status, r.headers.allow], [405, 'GET, HEAD'], method);
  }
  const head = await http(base, '/api/jobs', { method: 'HEAD' });
  assert.equal([head.status, head.body], [200, '']);
});

test('a hostile command line leaves the server as inert text, and the page may run nothing from elsewhere', async () => {
  for (const path of ['/api/jobs', '/api/jobs/hostile']) {
    const r = await http(base, path);
    assert.is(r.status, 200);
    assert.not.match(r.body, '<script', `${path} holds no markup`);
    assert.not.match(r.body, '<img', `${path} holds no markup`);
    assert.match(String(r.headers['content-type']), 'application/json');
    assert.is(r.headers['x-content-type-options'], 'nosniff');
  }
  const jobs = await json<Array<{ job: string; units: Array<{ command: string[] }> }>>(base, '/api/jobs');
  assert.equal(jobs.find((j) => j.job === 'hostile')!.units[0]!.command, ['sh', '-c', HOSTILE], 'the command comes back exactly');
  const page = await http(base, '/');
  assert.is(page.status, 200);
  assert.match(String(page.headers['content-security-policy']), "script-src 'self'");
  assert.match(String(page.headers['content-security-policy']), "default-src 'none'");
});

test('live: an append reaches /api/events as a change naming the job and its position', async () => {
  const events = await new Promise<{ lines: string[]; close: () => void }>((resolve, reject) => {
    const lines: string[] = [];
    const r = request(`${base}/api/events`, (res) => {
      assert.match(String(res.headers['content-type']), 'text/event-stream');
      res.setEncoding('utf8').on('data', (c: string) => lines.push(...c.split('\n')));
      resolve({ lines, close: () => r.destroy() });
    });
    r.on('error', reject).end();
  });
  try {
    await until('the position first', () => events.lines.some((l) => l.startsWith('data: {"position"')));
    const { position } = await store.append('job-hostile', [
      { type: 'ProcessForked', data: { node: 'n1', unit: 'main', parent: { pid: 100, startTime: 1000 }, child: { pid: 555, startTime: 5550 } } },
    ]);
    const line = await until('the change', () => events.lines.find((l) => l.startsWith('data: ') && l.includes(`"hostile":${position}`)), 10_000);
    const change = JSON.parse(line.slice(6)) as { position: number; jobs: Record<string, number>; nodes: boolean; recordedAt: string };
    assert.equal([change.position, change.jobs, change.nodes], [position, { hostile: position }, false]);
    assert.ok(events.lines.includes('event: change'));
  } finally {
    events.close();
  }
});
test.run();

const tokens = suite('dashboard: tokens');
tokens.after(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  rmSync(home, { recursive: true, force: true });
});

tokens('a non-loopback address gets a token made at start; every API request must carry it', async () => {
  const port = await freePort();
  const { url: printed } = await dashboard(['--listen', `0.0.0.0:${port}`]);
  const token = new URL(printed).searchParams.get('token');
  assert.ok(token && token.length >= 32, printed);
  const at = `http://127.0.0.1:${port}`;
  for (const path of ['/api/jobs', '/api/jobs/multi', '/api/events', '/api/head']) {
    assert.is((await http(at, path)).status, 401, `${path} without the token`);
    assert.is((await http(at, `${path}?token=${token}x`)).status, 401, `${path} with a wrong token`);
    assert.is((await http(at, path, { headers: { authorization: `Bearer ${token.slice(0, -1)}` } })).status, 401, `${path} with a cut token`);
  }
  assert.is((await http(at, '/api/jobs', { headers: { authorization: `Bearer ${token}` } })).status, 200);
  assert.is((await http(at, `/api/jobs/multi?token=${encodeURIComponent(token)}`)).status, 200);
  const denied = await http(at, '/api/jobs');
  assert.match(JSON.parse(denied.body).error, 'needs its token');
  assert.is(denied.headers['www-authenticate'], 'Bearer');
  assert.is((await http(at, '/')).status, 200, 'the page itself holds no data');
});

tokens('--token-file: its first line is required, on loopback too; a short or missing one is refused', async () => {
  const file = join(home, 'token');
  writeFileSync(file, 'a-token-of-thirty-two-characters\nignored\n', { mode: 0o600 });
  const port = await freePort();
  await dashboard(['--listen', String(port), '--token-file', file]);
  const at = `http://127.0.0.1:${port}`;
  assert.is((await http(at, '/api/jobs')).status, 401);
  assert.is((await http(at, '/api/jobs', { headers: { authorization: 'Bearer a-token-of-thirty-two-characters' } })).status, 200);
  writeFileSync(file, 'short\n');
  const env = { ...process.env, CKPT_HOME: home, CKPT_STORE: url };
  const short = spawnSync(process.execPath, [CLI, 'dashboard', '--listen', String(await freePort()), '--token-file', file], { env, encoding: 'utf8', timeout: 10_000 });
  assert.equal([short.status, short.stderr.includes('use at least 16')], [2, true], short.stderr);
  const none = spawnSync(process.execPath, [CLI, 'dashboard', '--token-file', join(home, 'nosuch')], { env, encoding: 'utf8', timeout: 10_000 });
  assert.equal([none.status, none.stderr.includes('cannot be read (ENOENT)')], [2, true], none.stderr);
  const bad = spawnSync(process.execPath, [CLI, 'dashboard', '--listen', 'localhost:80'], { env, encoding: 'utf8', timeout: 10_000 });
  assert.equal([bad.status, bad.stderr.includes('needs [HOST:]PORT')], [2, true], bad.stderr);
});
tokens.run();
