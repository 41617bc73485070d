// Process tracking benchmark: a fork storm (a tiny C program, N short-lived children) run plainly
// and as a ckpt job, alternating, in one run. Reports the storm's own rate untracked and tracked,
// the rate at which the node agent recorded the forks, how long after the storm it had all of
// them, and whether any were lost; then replays the biggest job's history through jobMembership()
// beside the raw limit (the same readStream pages, a hand-written loop counting forks and exits).
//
//   npm run bench:track -- [--forks 20000] [--rounds 2] [--inflight 1]
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { openEventStore } from '../../adapters/store/open.js';
import type { EventStore } from '../../domain/event-store.js';
import { valuesOf } from '../../domain/persistent-map.js';
import { jobMembership } from '../../projections/jobs.js';
import { exec, must } from './run.js';

const { values } = parseArgs({
  options: {
    forks: { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '2' },
    inflight: { type: 'string', default: '1' },
  },
});
const N = Number(values.forks);
const ROUNDS = Number(values.rounds);
const INFLIGHT = Number(values.inflight);
if (![N, ROUNDS, INFLIGHT].every((n) => Number.isSafeInteger(n) && n >= 1)) throw new Error('--forks, --rounds and --inflight take integers ≥ 1');
const CLI = fileURLToPath(new URL('../../adapters/cli/main.js', import.meta.url));

/** Forks N children (each _exit(0) at once), at most K alive; prints its count, elapsed time, wall-clock end. */
const STORM_C = `#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
  long n = atol(argv[1]), k = atol(argv[2]), forked = 0, alive = 0;
  struct timespec a, b, end;
  clock_gettime(CLOCK_MONOTONIC, &a);
  while (forked < n || alive > 0) {
    if (forked < n && alive < k) {
      pid_t p = fork();
      if (p == 0) _exit(0);
      if (p < 0) { perror("fork"); return 1; }
      forked++, alive++;
    } else if (wait(NULL) > 0) alive--;
    else { perror("wait"); return 1; }
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  clock_gettime(CLOCK_REALTIME, &end);
  printf("forked %ld in %.6f s, ended at %.3f\\n", forked, (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9, end.tv_sec * 1e3 + end.tv_nsec / 1e6);
  return 0;
}
`;

const seconds = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e9;
const fmt = (n: number) => Math.round(n).toLocaleString('en-US').padStart(9);
const progress = (what: string) => process.stderr.isTTY && process.stderr.write(`\r\x1b[K${what}…`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The storm's own figures from its output line: processes/s, elapsed s, wall-clock end (ms). */
const stormOf = (out: string) => {
  const m = /forked (\d+) in ([\d.]+) s, ended at ([\d.]+)/.exec(out);
  if (!m || Number(m[1]) !== N) throw new Error(`the storm did not report ${N} forks:\n${out}`);
  return { rate: N / Number(m[2]), s: Number(m[2]), end: Number(m[3]) };
};

/** What the store holds for a job, read page by page as the agent appends. */
interface Recorded {
  events: number;
  forks: number;
  exits: number;
  vanished: number;
  observed: number;
  lost: number;
  ended: boolean;
  outcome?: string;
  first?: string;
  last?: string;
  lastFork?: string;
}

const follow = async (store: EventStore, job: string): Promise<Recorded> => {
  const r: Recorded = { events: 0, forks: 0, exits: 0, vanished: 0, observed: 0, lost: 0, ended: false };
  const deadline = Date.now() + 60_000 + N * 5; // bounded: the agent gets generous time, not forever
  let quiet = Date.now();
  for (let from = 0; ; ) {
    const page = await store.readStream(`job-${job}`, { from, limit: 1000 });
    for (const e of page) {
      r.events++;
      r.first ??= e.metadata.recordedAt;
      r.last = e.metadata.recordedAt;
      if (e.type === 'ProcessForked' && ++r.forks === N) r.lastFork = e.metadata.recordedAt;
      else if (e.type === 'ProcessExited') r.exits++;
      else if (e.type === 'ProcessVanished') r.vanished++;
      else if (e.type === 'ProcessObserved') r.observed++;
      else if (e.type === 'ObservationGap') r.lost += e.data.lost;
      else if (e.type === 'JobEnded') (r.ended = true), (r.outcome = `${e.data.outcome}, status ${e.data.status}`);
    }
    if (page.length > 0) (from = page[page.length - 1]!.revision + 1), (quiet = Date.now());
    if (page.length === 1000) continue;
    if ((r.forks >= N && r.ended) || (r.ended && Date.now() - quiet > 3000) || Date.now() > deadline) return r;
    progress(`  waiting for the agent: ${r.forks.toLocaleString('en-US')} / ${N.toLocaleString('en-US')} forks recorded`);
    await sleep(50);
  }
};

interface Round {
  untracked: number;
  tracked: number;
  stormS: number;
  recorded: number;
  span: number;
  lagS: number | undefined;
  r: Recorded;
  job: string;
}

const dir = mkdtempSync(join(tmpdir(), 'ckpt-bench-track-'));
const home = join(dir, 'home');
const env: NodeJS.ProcessEnv = { ...process.env, CKPT_HOME: home };
delete env.CKPT_STORE;
const failures: string[] = [];
try {
  console.log(
    `ckpt tracking benchmark: fork storm of ${N.toLocaleString('en-US')} children (${INFLIGHT} alive at a time), ${ROUNDS} rounds alternating untracked / tracked; node ${process.version}\n`,
  );
  writeFileSync(join(dir, 'storm.c'), STORM_C);
  const storm = join(dir, 'storm');
  await must('cc', ['-O2', '-o', storm, join(dir, 'storm.c')]);
  progress('starting the node agent');
  await must(process.execPath, [CLI, 'agent', 'start'], env);
  const store = openEventStore(`sqlite:${join(home, 'events.db')}`);
  const rounds: Round[] = [];
  for (let i = 1; i <= ROUNDS; i++) {
    progress(`round ${i}: untracked storm`);
    const untracked = stormOf(await must(storm, [String(N), String(INFLIGHT)])).rate;
    progress(`round ${i}: tracked storm`);
    const job = `storm-${i}`;
    const tracked = stormOf(await must(process.execPath, [CLI, 'run', '--job', job, '--', storm, String(N), String(INFLIGHT)], env));
    const r = await follow(store, job);
    const span = (Date.parse(r.last!) - Date.parse(r.first!)) / 1000;
    const lagS = r.lastFork ? (Date.parse(r.lastFork) - tracked.end) / 1000 : undefined;
    rounds.push({ untracked, tracked: tracked.rate, stormS: tracked.s, recorded: r.forks / span, span, lagS, r, job });
    // The unit's init forks the command: one fork more than the storm's own.
    if (r.forks !== N + 1)
      failures.push(
        `${job}: the agent recorded ${r.forks} of ${N + 1} forks — ${N + 1 - r.forks} LOST (kernel reported ${r.lost} dropped events; ${r.observed} recovered from /proc; JobEnded: ${r.outcome ?? 'never'})`,
      );
  }
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');

  for (const [i, x] of rounds.entries()) {
    const { r } = x;
    console.log(`round ${i + 1} (job ${x.job}, ${r.events.toLocaleString('en-US')} events)`);
    console.log(`  storm untracked   ${fmt(x.untracked)} processes/s`);
    console.log(`  storm tracked     ${fmt(x.tracked)} processes/s   tracked / untracked = ${(x.tracked / x.untracked).toFixed(2)}`);
    console.log(`  recorded          ${fmt(x.recorded)} processes/s   (${r.forks.toLocaleString('en-US')} ProcessForked over ${x.span.toFixed(2)} s, job's first to last event)`);
    const lag =
      x.lagS === undefined ? 'NEVER (see below)' : `${(x.stormS + x.lagS).toFixed(2)} s after the storm started (it ran ${x.stormS.toFixed(2)} s): ${Math.round(x.lagS * 1000)} ms after it ended`;
    console.log(`  all forks in the log ${lag}`);
    console.log(
      `  exits: ${r.exits.toLocaleString('en-US')} ProcessExited, ${r.vanished} ProcessVanished, ${r.observed} ProcessObserved, ${r.lost} kernel events lost; JobEnded: ${r.outcome ?? 'never'}`,
    );
  }

  // Replay: the biggest storm job through jobMembership() and through a counting loop.
  const biggest = rounds.reduce((a, b) => (b.r.events > a.r.events ? b : a));
  const fold = async () => {
    const start = process.hrtime.bigint();
    const m = await jobMembership(store, biggest.job);
    const s = seconds(start);
    const members = [...valuesOf(m!.members)];
    return { s, forks: members.filter((x) => x.forkedBy !== undefined).length, exits: members.filter((x) => x.state === 'exited').length };
  };
  const raw = async () => {
    const start = process.hrtime.bigint();
    let [forks, exits] = [0, 0];
    for (let from = 0; ; ) {
      const page = await store.readStream(`job-${biggest.job}`, { from, limit: 1000 });
      for (const e of page) {
        if (e.type === 'ProcessForked') forks++;
        else if (e.type === 'ProcessExited') exits++;
      }
      if (page.length < 1000) break;
      from = page[page.length - 1]!.revision + 1;
    }
    return { s: seconds(start), forks, exits };
  };
  const [folds, raws] = [[] as Awaited<ReturnType<typeof fold>>[], [] as Awaited<ReturnType<typeof raw>>[]];
  progress(`replaying ${biggest.job}`);
  for (let k = 0; k < 2; k++) folds.push(await fold()), raws.push(await raw());
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  const [f, w] = [folds[0]!, raws[0]!];
  if (f.forks !== w.forks || f.exits !== w.exits) throw new Error(`jobMembership and the raw loop disagree: ${f.forks} / ${w.forks} forks, ${f.exits} / ${w.exits} exits`);
  const foldS = Math.min(...folds.map((x) => x.s));
  const rawS = Math.min(...raws.map((x) => x.s));
  const events = biggest.r.events;
  console.log(`\nmembership replay of ${biggest.job} (${events.toLocaleString('en-US')} events, ${f.forks.toLocaleString('en-US')} forks, ${f.exits.toLocaleString('en-US')} exits)`);
  console.log(`  jobMembership()   ${fmt(events / foldS)} events/s   (${foldS.toFixed(2)} s, readStream pages + evolveMembership)`);
  console.log(`  raw limit         ${fmt(events / rawS)} events/s   (${rawS.toFixed(2)} s, same pages, a loop counting forks/exits)`);
  console.log(`  replay / raw = ${(rawS / foldS).toFixed(2)}   (best of 2 each, alternating)`);

  const mean = (k: 'untracked' | 'tracked' | 'recorded') => rounds.reduce((a, x) => a + x[k], 0) / rounds.length;
  console.log(`\nsummary (mean of ${ROUNDS} rounds)`);
  console.log(
    `  storm untracked ${fmt(mean('untracked'))} processes/s, tracked ${fmt(mean('tracked'))} processes/s (${(mean('tracked') / mean('untracked')).toFixed(2)}x), recorded ${fmt(mean('recorded'))} processes/s`,
  );
  console.log(`  membership replay ${fmt(events / foldS)} events/s = ${(rawS / foldS).toFixed(2)} of the raw limit`);
  await store.close();
} finally {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  const stopped = await exec(process.execPath, [CLI, 'agent', 'stop'], env).catch((e: Error) => ({ code: -1, out: e.message }));
  if (stopped.code !== 0) console.error(`ckpt agent stop failed (${stopped.code}): ${stopped.out}`);
  // Anything the agent logged besides starting and stopping is worth reading.
  const logDir = join(home, 'agent');
  const logs = existsSync(logDir)
    ? readdirSync(logDir)
        .filter((f) => f.endsWith('.log'))
        .flatMap((f) => readFileSync(join(logDir, f), 'utf8').trim().split('\n'))
    : [];
  const odd = logs.filter((l) => l && !/; ready$|stopping \(SIG/.test(l));
  console.log(`  agent log: ${odd.length === 0 ? 'nothing but start and stop' : `${odd.length} lines:\n    ${odd.slice(0, 10).join('\n    ')}`}`);
  rmSync(dir, { recursive: true, force: true });
}
if (failures.length > 0) throw new Error(`forks lost:\n  ${failures.join('\n  ')}`);
