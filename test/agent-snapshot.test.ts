// The node agent starts from a snapshot of its own state (projections/agent-state.ts) and folds
// only what the log got since; with real processes and CRIU: a forking job checkpointed and
// restarted, the agent restarted between each step. And the fold itself: the state encoded and
// decoded at any point of that real history folds on to exactly the state, and the decisions,
// of one never encoded.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { agentFiles } from '../adapters/agent/daemon.js';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { openEventStore } from '../adapters/store/open.js';
import type { RecordedEvent } from '../domain/event-store.js';
import { jobOfStream } from '../domain/identity.js';
import { getIn } from '../domain/persistent-map.js';
import { type AgentState, agentModel, evolveAgentState, initialAgentState, settledJob, withJobHistory } from '../projections/agent-state.js';
import { jobHarness } from './support/jobs.js';
import { firstMissing, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until } from './support/wait.js';

const missing = firstMissing(needRoot, () => (locateCriu() ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)'));
const test = suiteRequiring('agent state snapshot (real agent, real CRIU)', missing);
const NODE = 'snapnode';
const { h, ckpt, cleanup } = jobHarness('ckpt-agent-snapshot', NODE);
const url = `sqlite:${join(h.home, 'events.db')}`;
test.after(() => cleanup());

const agentLog = () => readFileSync(agentFiles(h.home, NODE, url).log, 'utf8');
/** Restarts the agent; what its log said about the snapshot on this start. */
const restartAgent = async (meanwhile?: () => Promise<void>): Promise<string> => {
  assert.is(ckpt(['agent', 'stop']).code, 0);
  await meanwhile?.();
  const before = agentLog().length;
  const r = ckpt(['agent', 'start']);
  assert.is(r.code, 0, r.err);
  return agentLog().slice(before);
};
const allEvents = async (): Promise<RecordedEvent[]> => {
  const store = openEventStore(url);
  try {
    return await store.readAll({ from: 1, limit: 1_000_000 });
  } finally {
    await store.close();
  }
};
const encoded = (s: AgentState) => JSON.stringify(agentModel.encode(s));
/** JSON with every object's keys sorted: a decoded state may list a record's keys in another order. */
const canonical = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) => (v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => a.localeCompare(b))) : v));

test('a forking job checkpointed, the agent restarted from its snapshot, checkpointed and restarted again', async () => {
  assert.is(ckpt(['run', '--detach', '--job', 'loop', '--', 'sh', '-c', 'while :; do sleep 0.02 & wait; done']).code, 0);
  await until(
    'forks',
    () =>
      ckpt(['history', 'loop', '--json'])
        .out.split('\n')
        .filter((l) => l.includes('ProcessForked')).length > 200,
    30_000,
    200,
  );
  let r = ckpt(['checkpoint', 'loop', '--wait']);
  assert.is(r.code, 0, r.err);

  let said = await restartAgent();
  assert.match(said, /snapshot agent at position \d+ used: \d+ event\(s\) folded after it/);
  r = ckpt(['checkpoint', 'loop', '--wait']);
  assert.is(r.code, 0, r.err);
  r = ckpt(['checkpoint', 'loop', '--stop', '--wait']);
  assert.is(r.code, 0, r.err);
  // The checkpoint's outcome is recorded before the agent has seen every process go.
  await until('the job ended', () => ckpt(['history', 'loop', '--tail', '50', '--json']).out.includes('"JobEnded"'), 30_000, 200);

  // A snapshot folded by other code is not trusted: rebuilt from the log, and the agent works on.
  said = await restartAgent(async () => {
    const store = openEventStore(url);
    const saved = await store.snapshots!.load('agent', '');
    assert.ok(saved && !('damaged' in saved), 'the stopped agent saved its state');
    assert.equal((JSON.parse(saved.state) as { jobs: unknown[] }).jobs, [], 'the ended job settled: nothing of it is kept');
    await store.snapshots!.save({ ...saved, version: saved.version + 100 });
    await store.close();
  });
  assert.match(said, /snapshot agent was folded by code version \d+ \(this ckpt folds with \d+\): rebuilt from the log/, said);
  r = ckpt(['restart', 'loop', '--wait']);
  assert.is(r.code, 0, r.err);
  await until(
    'forks after the restart',
    async () => (await allEvents()).filter((e) => e.type === 'UnitRestored').length === 1 && ckpt(['ps', 'loop', '--running', '--json']).out.includes('"sleep"'),
    30_000,
    200,
  );
  said = await restartAgent();
  assert.match(said, /snapshot agent at position \d+ used/);
  r = ckpt(['checkpoint', 'loop', '--wait']);
  assert.is(r.code, 0, r.err);
  r = ckpt(['verify', 'loop']);
  assert.is(r.code, 0, r.out + r.err);
  // The same history exported, and re-derived from the file alone (what test/histories keeps).
  const exported = ckpt(['export', 'loop']);
  assert.is(exported.code, 0, exported.err);
  const file = join(h.home, 'loop.ndjson');
  writeFileSync(file, exported.out);
  r = ckpt(['verify', '--history', file]);
  assert.is(r.code, 0, r.out + r.err);
  assert.match(r.out, /loop: all \d+ recorded decisions re-derived identically/);
});

test('the state encoded and decoded anywhere in that history folds on to the same state and decisions', async () => {
  const events = await allEvents();
  assert.ok(events.length > 500, `a real history (${events.length} events)`);
  // What the host does: a settled job whose stream goes on is folded again from its stream first.
  const fold = (state: AgentState, e: RecordedEvent) => {
    const settled = settledJob(state, e);
    const prepared =
      settled === undefined
        ? state
        : withJobHistory(
            state,
            settled,
            events.filter((x) => x.stream === e.stream && x.revision < e.revision),
          );
    return evolveAgentState(prepared, e);
  };
  const states: AgentState[] = [];
  let s = initialAgentState;
  let settledOnce = false;
  for (const e of events) {
    settledOnce ||= settledJob(s, e) !== undefined;
    states.push((s = fold(s, e)));
  }
  assert.ok(settledOnce, 'the job settled (ended by its --stop checkpoint) and its stream went on (the restart)');
  const cuts = [1, 10, 50, ...Array.from({ length: 12 }, (_, i) => Math.floor(((i + 1) * events.length) / 13))];
  for (const cut of cuts) {
    let resumed = agentModel.decode(JSON.parse(encoded(states[cut - 1]!)), '');
    assert.is(canonical(agentModel.encode(resumed)), canonical(agentModel.encode(states[cut - 1]!)), `decoded as encoded at event ${cut}`);
    for (let i = cut; i < events.length; i++) {
      const e = events[i]!;
      resumed = fold(resumed, e);
      const job = jobOfStream(e.stream);
      if (job) assert.is(canonical(getIn(resumed.jobs, job)?.undecided), canonical(getIn(states[i]!.jobs, job)?.undecided), `decisions on event ${e.position} (resumed at ${cut})`);
    }
    assert.is(canonical(agentModel.encode(resumed)), canonical(agentModel.encode(states[states.length - 1]!)), `the state resumed at event ${cut} of ${events.length}`);
  }
});

test.run();
