// Every unit runs in its own PID namespace (its init is PID 1 there), so a restored unit is a unit
// like any other: checkpointed and restored again and again, even while other processes hold its
// original host PIDs, and ckpt's own helpers (unshare, criu, the proc connector) never join it.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { namespacePids, pidsInUse } from '../adapters/tracking/pids.js';
import { jobHarness, killMembers, type PsRow, sigkill } from './support/jobs.js';
import { firstMissing, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until as wait } from './support/wait.js';

const until = <T>(what: string, probe: () => T | undefined | false, ms = 30_000) => wait(what, probe, ms, 50);
const missing = firstMissing(
  needRoot,
  () => (locateCriu() ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)'),
  () => (existsSync('/proc/self/ns/pid') ? undefined : 'needs PID namespaces (a kernel with CONFIG_PID_NS)'),
);
const test = suiteRequiring('checkpoint again after any restart (PID namespaces)', missing);

const { work, ckpt, json, running, cleanup } = jobHarness('ckpt-pidns', 'pnnode');
const held: number[] = [];
test.after(() => {
  for (const pid of held) sigkill(pid);
  cleanup();
});

interface RestartReport {
  outcome: string;
  reason: string | null;
  units: Array<{ pidNamespace?: boolean; waitedMs?: number }>;
  processes: Array<{ was: { pid: number }; now: { pid: number }; nsPid: number | null; comm?: string }>;
  durationMs: number | null;
}

const counter = (file: string) => (existsSync(file) ? Number(readFileSync(file, 'utf8').trim() || 0) : 0);
const HELPERS = /^(unshare|criu|proc-connector|node)$|bridge/;

/** Takes `pid` for a `sleep` of our own (PID forced with ns_last_pid), once nothing uses it. */
const holdPid = async (pid: number): Promise<number> => {
  await until(`PID ${pid} to be free`, () => pidsInUse([pid]).length === 0);
  // Other processes of the machine may fork in between: try until ours gets it.
  for (let attempt = 1; attempt <= 50; attempt++) {
    writeFileSync('/proc/sys/kernel/ns_last_pid', String(pid - 1));
    const holder = spawn('sleep', ['600'], { stdio: 'ignore', detached: true });
    holder.unref();
    if (holder.pid === pid) return (held.push(pid), pid);
    holder.kill('SIGKILL');
  }
  return assert.unreachable(`could not take PID ${pid} in 50 attempts`) as never;
};

/** Only the job's own processes, each in the unit's PID namespace (PID 1 there is the root). */
const onlyTheJob = (rows: PsRow[]) => {
  const root = rows.find((m) => m.reason === 'root')!;
  assert.ok(root, 'the unit has a running root');
  assert.is(namespacePids(root.pid)?.at(-1), 1, 'the root is PID 1 of its namespace');
  for (const m of rows) {
    assert.not.match(m.comm, HELPERS, `${m.pid} ${m.comm} is one of ckpt's helpers, not the job's`);
    assert.ok(['ckpt-unit-init', 'sh', 'sleep'].includes(m.comm), `${m.pid} ${m.comm} is the job's`);
  }
};

test('a job restored into a new PID namespace is checkpointed and restored three more times while its original PID is held', async () => {
  const file = join(work, 'count');
  // A counter, a child and a double-forked daemon (re-parented to the unit's init). The counter
  // overwrites fixed-width digits in place (no truncation), so the file's size is the same whenever
  // the dump freezes it: CRIU refuses to restore a file whose size changed (class "file").
  const r = ckpt([
    'run',
    '--detach',
    '--job',
    'again',
    '--',
    'sh',
    '-c',
    `sleep 1000 & sh -c 'setsid sh -c "while :; do sleep 1; done" </dev/null >/dev/null 2>&1 &'; i=0; while :; do i=$((i+1)); printf '%08d\\n' $i 1<> ${file}; sleep 0.2; done`,
  ]);
  assert.is(r.code, 0, r.err);
  await until('the job', () => counter(file) > 3 && running('again').some((m) => m.escapes.includes('session')));
  const firstRoot = running('again').find((m) => m.reason === 'root')!;
  assert.is(namespacePids(firstRoot.pid)?.at(-1), 1, 'launched as PID 1 of its own namespace');

  for (let round = 1; round <= 4; round++) {
    const checkpointed = ckpt(['checkpoint', 'again', '--wait', '--json']);
    assert.is(checkpointed.code, 0, `round ${round}: ${checkpointed.err} ${checkpointed.out}`);
    const atCheckpoint = counter(file);
    await until(`the counter to go on after checkpoint ${round}`, () => counter(file) > atCheckpoint + 5);
    const before = running('again');
    killMembers(before);
    // Restarted at once: nothing waits for the killed PIDs to be reaped, nothing collides.
    const started = performance.now();
    const restarted = ckpt(['restart', 'again', '--wait', '--json']);
    const wallMs = performance.now() - started;
    const report = JSON.parse(restarted.out) as RestartReport;
    assert.is(restarted.code, 0, `round ${round}: ${restarted.err} ${restarted.out}`);
    assert.is(report.outcome, 'restored');
    assert.is(report.units[0]!.pidNamespace, true, 'restored in the unit’s own namespace');
    console.log(`  round ${round}: restart ${Math.round(report.durationMs ?? 0)} ms recorded, ${Math.round(wallMs)} ms for the CLI, waited ${report.units[0]!.waitedMs?.toFixed(1)} ms for PIDs`);
    const root = report.processes.find((p) => p.nsPid === 1);
    assert.ok(root, 'the restored root is PID 1 in its namespace');
    for (const p of report.processes) assert.ok(p.nsPid !== null && p.nsPid > 0, 'every restored process has its namespace PID recorded');
    const resumed = await until(`the counter restored in round ${round}`, () => counter(file) !== 0 && counter(file) < atCheckpoint + 5 && counter(file));
    assert.ok(resumed >= atCheckpoint - 2, `round ${round}: resumed at ${resumed}, checkpointed at ${atCheckpoint}`);
    const rows = await until('the restored members', () => {
      const now = running('again');
      return now.length >= 4 && now.some((m) => m.escapes.includes('session')) && now;
    });
    onlyTheJob(rows);
    const verify = ckpt(['verify', 'again']);
    assert.is(verify.code, 0, `round ${round}: ckpt verify: ${verify.err}`);
    // From now on, one of the job's original host PIDs belongs to someone else.
    if (round === 1) await holdPid(firstRoot.pid);
  }
  const [audit] = json<Array<{ entries: Array<{ kind: string; outcome: string }> }>>(['audit', 'again']);
  assert.equal(
    audit!.entries.map((e) => `${e.kind} ${e.outcome}`),
    Array.from({ length: 4 }, () => ['checkpoint committed', 'restart restored']).flat(),
  );
  killMembers(running('again'));
});

test.run();
