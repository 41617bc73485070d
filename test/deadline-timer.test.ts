import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { openEventStore } from '../adapters/store/open.js';
import { DeadlineTimer } from '../adapters/timer/deadline-timer.js';
import type { EventStore, ProposedEvent } from '../domain/event-store.js';
import { until } from './support/wait.js';

const test = suite('deadline timer');
const dir = mkdtempSync(join(tmpdir(), 'ckpt-deadline-'));
let n = 0;
let store: EventStore;
const timers: DeadlineTimer[] = [];
test.before.each(() => {
  store = openEventStore(`sqlite:${join(dir, `${++n}.db`)}`);
});
test.after.each(async () => {
  for (const t of timers.splice(0)) t.stop();
  await store.close();
});
test.after(() => rmSync(dir, { recursive: true, force: true }));

const schedule = (deadline: string, inMs: number): ProposedEvent => ({ type: 'DeadlineScheduled', data: { deadline, at: new Date(Date.now() + inMs).toISOString(), purpose: 'test' } });
const reached = async (stream: string) => (await store.readStream(stream)).filter((e) => e.type === 'DeadlineReached').map((e) => (e.data as { deadline: string }).deadline);
const timer = async (s = store) => {
  const t = new DeadlineTimer({ store: s });
  timers.push(t);
  await t.start();
  return t;
};
test('a deadline scheduled while the timer runs is reached once the clock passes it', async () => {
  await timer();
  await store.append('job-a', [schedule('d1', 150)]);
  assert.equal(await reached('job-a'), [], 'not before its time');
  await until('d1 to be reached', async () => (await reached('job-a')).length === 1);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(await reached('job-a'), ['d1']);
});

test('a cancelled deadline is never reached; the same id in another stream is its own deadline', async () => {
  await timer();
  await store.append('job-a', [schedule('checkpoint-v1', 150)]);
  await store.append('job-b', [schedule('checkpoint-v1', 150)]);
  await store.append('job-a', [{ type: 'DeadlineCancelled', data: { deadline: 'checkpoint-v1', reason: 'completed' } }]);
  await until('job-b’s deadline', async () => (await reached('job-b')).length === 1);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(await reached('job-a'), []);
});

test('deadlines that passed while no timer ran are reached at start', async () => {
  await store.append('job-a', [schedule('late', -5000), schedule('later', 100_000)]);
  await timer();
  await until('the past deadline', async () => (await reached('job-a')).length === 1);
  assert.equal(await reached('job-a'), ['late']);
});

test('two timers (two node agents) reach a deadline exactly once', async () => {
  const other = openEventStore(store.location);
  try {
    await timer();
    await timer(other);
    for (let i = 0; i < 10; i++) await store.append('job-race', [schedule(`d${i}`, 100 + i * 10)]);
    await until('all ten', async () => (await reached('job-race')).length >= 10);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await reached('job-race')).sort(), Array.from({ length: 10 }, (_, i) => `d${i}`).sort());
  } finally {
    for (const t of timers.splice(0)) t.stop();
    await other.close();
  }
});

test.run();
