// The log's metrics (projections/metrics.ts) as a pure fold: what a history of checkpoints and
// restarts counts, durations from the events' recordedAt, a fold resumed from its encoded state
// (an agent restarted from its snapshot) equal to the whole fold, real recorded histories counted
// as their checkpoints and restarts folds list them; and the agent's endpoint
// (adapters/agent/metrics-endpoint.ts) over real HTTP on a memory store: the exposition format,
// live updates, a busy port and a bad address refused with what to do.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { from, lastValueFrom } from 'rxjs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { MetricsEndpoint } from '../adapters/agent/metrics-endpoint.js';
import { readHistoryFile } from '../adapters/cli/history-file.js';
import { defaultAppendContext } from '../adapters/store/batch.js';
import { MemoryEventStore } from '../adapters/store/memory.js';
import type { ProposedEvent, RecordedEvent } from '../domain/event-store.js';
import { evolveMembership, initialMembership } from '../domain/membership.js';
import { foldCheckpoints } from '../projections/checkpoints.js';
import { BOUNDS, evolveMetrics, foldMetrics, type Histogram, initialMetrics, metricsModel, observe, trackedProcesses } from '../projections/metrics.js';
import { project } from '../projections/project.js';
import { foldRestarts } from '../projections/restarts.js';
import { checkpoints, jobPhases, restarts, submitted } from './support/history.js';
import { CLI } from './support/jobs.js';
import { freePort } from './support/postgres.js';
import { until } from './support/wait.js';

const test = suite('metrics: the log’s figures, folded and served');

const TICK_MS = 100;

/** A memory store whose clock moves TICK_MS per append: each event's recordedAt is known. */
const clockedStore = () => {
  let t = Date.parse('2026-01-01T00:00:00.000Z');
  const store = new MemoryEventStore({ ...defaultAppendContext(), now: () => new Date((t += TICK_MS)) });
  const append = async (stream: string, events: readonly ProposedEvent[]) => {
    for (const e of events) await store.append(stream, [e]);
  };
  return { store, append };
};

const recorded = async (phases: Array<readonly [string, readonly ProposedEvent[]]>) => {
  const { store, append } = clockedStore();
  for (const [stream, events] of phases) await append(stream, events);
  return { store, events: await store.readAll({ limit: 10_000 }) };
};

/** Seconds between two events of a list appended one per tick. */
const ticksBetween = (events: readonly ProposedEvent[], first: (e: ProposedEvent) => boolean, last: (e: ProposedEvent) => boolean) =>
  ((events.findIndex(last) - events.findIndex(first)) * TICK_MS) / 1000;

const bucketOf = (bounds: readonly number[], value: number) => {
  const at = bounds.findIndex((b) => value <= b);
  return at === -1 ? bounds.length : at;
};
const onlyIn = (bounds: readonly number[], index: number) => bounds.map((_, i) => (i === index ? 1 : 0)).concat(index === bounds.length ? 1 : 0);
const near = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-9, `${what}: ${a} ≠ ${b}`);

test('a history counts its committed and aborted checkpoints and its restored and failed restarts; a refused request is no operation', async () => {
  const { events } = await recorded(jobPhases('j').map((phase) => ['job-j', phase] as const));
  const m = foldMetrics(events);
  assert.equal(m.checkpoints, { committed: 1, aborted: 1 });
  assert.equal(m.restores, { restored: 1, failed: 1 });
  assert.equal(m.underWay, {}, 'nothing under way: the job left the state');

  const cps = checkpoints();
  const duration = ticksBetween(
    cps,
    (e) => e.type === 'CheckpointRequested',
    (e) => e.type === 'CheckpointCompleted',
  );
  assert.equal(m.checkpointSeconds.buckets, onlyIn(BOUNDS.checkpointSeconds, bucketOf(BOUNDS.checkpointSeconds, duration)));
  near(m.checkpointSeconds.sum, duration, 'request to completion, by recordedAt');
  // The committed one thawed after 180 ms; the aborted one never froze.
  assert.equal([m.frozenSeconds.count, m.frozenSeconds.buckets], [1, onlyIn(BOUNDS.frozenSeconds, bucketOf(BOUNDS.frozenSeconds, 0.18))]);
  assert.equal([m.sizeBytes.count, m.sizeBytes.sum], [1, 4096]);
  const rs = restarts();
  const restore = ticksBetween(
    rs,
    (e) => e.type === 'RestartRequested',
    (e) => e.type === 'RestartCommitted',
  );
  assert.is(m.restoreSeconds.count, 1, 'only the restored restart');
  near(m.restoreSeconds.sum, restore, 'request to commit, by recordedAt');
});

test('a checkpoint counts as committed when committed, its duration once it completed; in between the job is under way', async () => {
  const cps = checkpoints();
  const committedAt = cps.findIndex((e) => e.type === 'CheckpointCommitted');
  const { events } = await recorded([
    ['job-a', submitted('a')],
    ['job-a', cps.slice(0, committedAt + 1)],
  ]);
  const m = foldMetrics(events);
  assert.equal([m.checkpoints.committed, m.checkpointSeconds.count, m.sizeBytes.count], [1, 0, 1]);
  assert.equal(Object.keys(m.underWay), ['a']);
});

test('jobs interleaved: each operation counted once, from its own job’s events', async () => {
  const a = [...submitted('a'), ...checkpoints()];
  const b = [...submitted('b'), ...checkpoints(), ...restarts()];
  const { store, append } = clockedStore();
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i]) await append('job-a', [a[i]!]);
    if (b[i]) await append('job-b', [b[i]!]);
  }
  const m = foldMetrics(await store.readAll({ limit: 10_000 }));
  assert.equal(
    [m.checkpoints, m.restores],
    [
      { committed: 2, aborted: 2 },
      { restored: 1, failed: 1 },
    ],
  );
  assert.equal(m.underWay, {});
});

test('observation gaps are counted per node; events of no job change nothing', async () => {
  const gap = (node: string): ProposedEvent => ({ type: 'ObservationGap', data: { node, source: 'proc-connector', lost: 12, reason: 'ENOBUFS' } });
  const { events } = await recorded([
    ['node-n1', [gap('n1'), gap('n1')]],
    ['node-n2', [gap('n2')]],
    ['node-n1', [{ type: 'NodeAgentStopped', data: { node: 'n1', agent: { pid: 5, startTime: 50 }, reason: 'test' } }]],
  ]);
  const m = foldMetrics(events);
  assert.equal(m.gaps, { n1: 2, n2: 1 });
  assert.equal({ ...m, gaps: {} }, initialMetrics);
});

test('the fold is a projection, and resumes from its encoded state (an agent restarted from its snapshot) to the same figures', async () => {
  const { events } = await recorded([...jobPhases('a').map((p) => ['job-a', p] as const), ['job-b', [...submitted('b'), ...checkpoints()]]]);
  const whole = foldMetrics(events);
  assert.equal(await lastValueFrom(from(events).pipe(project(evolveMetrics, initialMetrics))), whole);
  // Cut everywhere a checkpoint or restart is under way, too.
  for (let cut = 0; cut <= events.length; cut += 7) {
    const saved = JSON.parse(JSON.stringify(metricsModel.encode(foldMetrics(events.slice(0, cut)))));
    const resumed = events.slice(cut).reduce(evolveMetrics, metricsModel.decode(saved, ''));
    assert.equal(resumed, whole, `resumed after ${cut} events`);
  }
  assert.throws(() => metricsModel.decode({ checkpoints: {} }, ''), /metrics: expected checkpoints, restores, gaps, underWay and four histograms/);
});

test('recorded real histories: counted as they happen, the figures are what `ckpt checkpoints` and `ckpt audit` list in the end', () => {
  const dir = fileURLToPath(new URL('../../test/histories/', import.meta.url));
  const files = readdirSync(dir).filter((f) => f.endsWith('.ndjson'));
  assert.ok(files.length > 0);
  let aborted = 0;
  for (const file of files) {
    const { job, events } = readHistoryFile(join(dir, file));
    const m = foldMetrics(events);
    const cps = foldCheckpoints(events.filter((e) => e.stream === `job-${job}`));
    const rss = foldRestarts(events.filter((e) => e.stream === `job-${job}`));
    const outcomes = <T extends { outcome: string }>(list: readonly T[], outcome: string) => list.filter((x) => x.outcome === outcome);
    assert.equal(m.checkpoints, { committed: outcomes(cps, 'committed').length, aborted: outcomes(cps, 'aborted').length }, file);
    assert.equal(m.restores, { restored: outcomes(rss, 'restored').length, failed: outcomes(rss, 'failed').length }, file);
    const committed = outcomes(cps, 'committed');
    assert.is(m.checkpointSeconds.count, committed.length, `${file}: every committed checkpoint completed`);
    near(
      m.checkpointSeconds.sum,
      committed.reduce((t, c) => t + c.durationMs! / 1000, 0),
      `${file}: durations`,
    );
    near(
      m.sizeBytes.sum,
      committed.reduce((t, c) => t + c.bytes, 0),
      `${file}: sizes`,
    );
    near(
      m.restoreSeconds.sum,
      outcomes(rss, 'restored').reduce((t, r) => t + r.durationMs! / 1000, 0),
      `${file}: restore durations`,
    );
    assert.equal(m.underWay, {}, `${file}: nothing left under way`);
    aborted += m.checkpoints.aborted;
  }
  assert.ok(aborted > 0, 'the recorded set has an aborted checkpoint');
});

test('a value on a bound falls in that bucket, one above the last in +Inf', () => {
  const bounds = [1, 2];
  const h = [1, 1.5, 2, 3].reduce<Histogram>((x, v) => observe(x, bounds, v), { buckets: [0, 0, 0], sum: 0, count: 0 });
  assert.equal(h, { buckets: [1, 2, 1], sum: 7.5, count: 4 });
});

test('tracked processes: the running members on this node, per job with any', async () => {
  const { events } = await recorded([
    ['job-a', submitted('a')],
    ['job-b', submitted('b')],
  ]);
  const fold = (job: string) => events.filter((e) => e.stream === `job-${job}`).reduce(evolveMembership, initialMembership(job));
  const exited: RecordedEvent = {
    ...events.at(-1)!,
    revision: 99,
    position: 999,
    type: 'ProcessExited',
    data: { node: 'n1', unit: 'main', process: { pid: 102, startTime: 1020 }, status: 0, signal: null },
  } as RecordedEvent;
  const b = evolveMembership(fold('b'), exited);
  assert.equal(trackedProcesses([fold('a'), b], 'n1'), { a: 3, b: 2 });
  assert.equal(trackedProcesses([fold('a'), b], 'n2'), {});
});

// ── the endpoint, over HTTP ──────────────────────────────────────────────────────────────────────

/** The samples of an exposition, by series (name and labels as printed). */
const samples = (text: string) =>
  new Map(
    text
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => [l.slice(0, l.lastIndexOf(' ')), Number(l.slice(l.lastIndexOf(' ') + 1))]),
  );

test('the endpoint serves the fold’s figures in Prometheus’s text format, and follows the log', async () => {
  const { store, append } = clockedStore();
  for (const phase of jobPhases('a')) await append('job-a', phase);
  const lines: string[] = [];
  const membership = (job: string) => async () => (await store.readStream(`job-${job}`, { limit: 10_000 })).reduce(evolveMembership, initialMembership(job));
  let agentPosition = 0;
  const b = { position: () => agentPosition, memberships: () => [] as ReturnType<typeof initialMembership>[] };
  const endpoint = new MetricsEndpoint({ store, node: 'n1', agent: b, log: (l) => lines.push(l) });
  const port = await freePort();
  await endpoint.listen({ host: '127.0.0.1', port });
  try {
    const url = `http://127.0.0.1:${port}/metrics`;
    const starting = await fetch(url);
    assert.is(starting.status, 503, 'not before the log is folded');
    await endpoint.follow();
    const ok = await fetch(url);
    assert.is(ok.status, 200);
    assert.match(ok.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await ok.text();
    assert.match(text, /# TYPE ckpt_checkpoint_operations_total counter/);
    assert.match(text, /# TYPE ckpt_checkpoint_duration_seconds histogram/);
    const s = samples(text);
    assert.is(s.get('ckpt_checkpoint_operations_total{result="committed"}'), 1);
    assert.is(s.get('ckpt_checkpoint_operations_total{result="aborted"}'), 1);
    assert.is(s.get('ckpt_restore_operations_total{result="restored"}'), 1);
    assert.is(s.get('ckpt_restore_operations_total{result="failed"}'), 1);
    assert.is(s.get('ckpt_checkpoint_size_bytes_bucket{le="65536"}'), 1);
    assert.is(s.get('ckpt_checkpoint_size_bytes_bucket{le="+Inf"}'), 1, 'buckets are cumulative');
    assert.is(s.get('ckpt_checkpoint_size_bytes_sum'), 4096);
    assert.is(s.get('ckpt_checkpoint_frozen_seconds_bucket{le="0.1"}'), 0);
    assert.is(s.get('ckpt_checkpoint_frozen_seconds_bucket{le="0.25"}'), 1);
    assert.is(s.get('ckpt_log_lag_events'), (await store.headPosition()) - agentPosition, 'lag: the log’s head minus what the agent folded');
    assert.equal(
      [...s.keys()].filter((k) => k.startsWith('ckpt_tracked_processes')),
      [],
      'no job tracked, no series',
    );
    assert.equal(
      [...s.keys()].filter((k) => k.startsWith('ckpt_observation_gaps_total')),
      ['ckpt_observation_gaps_total{node="n1"}'],
      'this node’s gaps, from 0',
    );
    assert.is(s.get('ckpt_observation_gaps_total{node="n1"}'), 0);

    // Live: another job's committed checkpoint, and the agent's fold catching up.
    await append('job-b', [...submitted('b'), ...checkpoints()]);
    agentPosition = await store.headPosition();
    const after = await until('the second commit to be counted', async () => {
      const now = samples(await (await fetch(url)).text());
      return now.get('ckpt_checkpoint_operations_total{result="committed"}') === 2 && now;
    });
    assert.is(after.get('ckpt_checkpoint_duration_seconds_count'), 2);
    assert.is(after.get('ckpt_log_lag_events'), 0);
    const tracked = await membership('b')();
    b.memberships = () => [tracked];
    assert.is(samples(await (await fetch(url)).text()).get('ckpt_tracked_processes{ckpt_job="b"}'), 3);

    assert.is((await fetch(`http://127.0.0.1:${port}/`)).status, 404);
    assert.is((await fetch(url, { method: 'POST' })).status, 405);

    // The port is taken now: a second endpoint says so, and what to do.
    const second = new MetricsEndpoint({ store, node: 'n1', agent: b, log: () => {} });
    try {
      await second.listen({ host: '127.0.0.1', port });
      assert.unreachable('a busy port was bound');
    } catch (error) {
      assert.match((error as Error).message, `cannot serve metrics on 127.0.0.1:${port}: another process listens there: choose another port (--metrics [HOST:]PORT)`);
    }
  } finally {
    await endpoint.stop();
  }
  assert.ok(lines.includes(`metrics on http://127.0.0.1:${port}/metrics`), lines.join('\n'));
});

test('a bad --metrics address is a usage error naming the form, before any agent starts', () => {
  if (process.getuid?.() !== 0) return; // start needs root before it reads its options
  for (const bad of ['localhost:9464', '127.0.0.1:0', '127.0.0.1:70000', '300.1.1.1:9464', '9464:127.0.0.1', '']) {
    const r = spawnSync(process.execPath, [CLI, 'agent', 'start', '--node', 'metricsusage', '--metrics', bad], {
      encoding: 'utf8',
      env: { ...process.env, CKPT_HOME: '/nonexistent/ckpt-metrics-usage' },
    });
    assert.is(r.status, 2, `${bad}: ${r.stderr}`);
    assert.match(r.stderr, `option --metrics needs [HOST:]PORT with HOST an IP address and PORT 1–65535 (e.g. 127.0.0.1:9464), got "${bad}"`);
  }
});

test.run();
