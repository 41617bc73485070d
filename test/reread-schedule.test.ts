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

test('after activity: every 100 ms for a second, then doubling up to the longest interval, on its grid', () => {
  const reads = readsOfQuiet(12_000);
  assert.equal(reads.slice(0, 10), [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]);
  const gaps = reads.slice(10).map((t, i) => t - reads[9 + i]!);
  // 4000 + 3200 falls between grid points 6400 and 9600: read at 6400 (never later), then every 3200.
  assert.equal(gaps, [200, 400, 800, 1600, 2400, 3200]);
});

test('quiet processes fall due together: one round, and nothing due between rounds', () => {
  const s = schedule(1000);
  // Quiet since different moments: once at the longest interval, every one is read at 6400.
  for (let pid = 1; pid <= 50; pid++) s.after(pid, 0, 3200);
  for (let pid = 1; pid <= 50; pid++) s.quiet(pid, 3200 + pid * 10);
  for (let now = 3300; now < 6400; now += 100) assert.equal(s.take(now), [], `nothing due at ${now}`);
  assert.is(s.take(6400).length, 50);
});

test('over the budget, the most recently active go first', () => {
  const s = schedule(2);
  for (let pid = 1; pid <= 3; pid++) s.after(pid, 0, 3200);
  s.soon(9, 3150); // forked just now: due at 3250, after the quiet ones
  assert.equal(s.take(3300), [9, 1]);
});

test('activity again makes a quiet process hot again', () => {
  const s = schedule();
  s.soon(7, 0);
  for (let now = 0; now <= 6000; now += 100) for (const pid of s.take(now)) s.quiet(pid, now);
  assert.equal(s.take(6100), [], 'quiet: not due 100 ms later');
  s.soon(7, 6100);
  assert.equal(s.take(6200), [7]);
});

test('no tick reads more than the budget, the shortest interval first; the rest come next', () => {
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
