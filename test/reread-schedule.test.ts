// The agent's /proc re-read schedule (adapters/agent/reread-schedule.ts), on a given clock.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RereadSchedule } from '../adapters/agent/reread-schedule.js';

const schedule = (budget = 100) => new RereadSchedule({ minMs: 100, hotMs: 1000, maxMs: 3200, budget });

/** The times at which a process that stays quiet after activity at 0 is read, up to `until`. */
const readsOfQuiet = (until: number): number[] => {
  const s = schedule();
  s.soon(7, 0);
  const reads: number[] = [];
  for (let now = 0; now <= until; now += 100) {
    for (const pid of s.take(now)) {
      reads.push(now);
      s.quiet(pid, now);
    }
  }
  return reads;
};

test('after activity: every 100 ms for a second, then doubling up to the longest interval', () => {
  const reads = readsOfQuiet(12_000);
  assert.equal(reads.slice(0, 10), [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]);
  const gaps = reads.slice(10).map((t, i) => t - reads[9 + i]!);
  assert.equal(gaps, [200, 400, 800, 1600, 3200, 3200]);
});

test('activity again makes a quiet process hot again', () => {
  const s = schedule();
  s.soon(7, 0);
  for (let now = 0; now <= 6000; now += 100) for (const pid of s.take(now)) s.quiet(pid, now);
  assert.equal(s.take(6100), [], 'quiet: not due 100 ms later');
  s.soon(7, 6100);
  assert.equal(s.take(6200), [7]);
});

test('no tick reads more than the budget, the longest overdue first; the rest come next', () => {
  const s = schedule(2);
  s.after(1, 0, 300);
  s.after(2, 0, 100);
  s.after(3, 0, 200);
  assert.equal(s.take(300), [2, 3]);
  s.quiet(2, 300);
  s.quiet(3, 300);
  assert.equal(s.take(300), [1]);
});

test('a forgotten process is never due', () => {
  const s = schedule();
  s.soon(7, 0);
  s.forget(7);
  assert.equal(s.take(10_000), []);
  assert.is(s.size, 0);
});

test.run();
