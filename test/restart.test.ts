// Restarts end to end, as root, with real CRIU: a counter checkpointed, killed and restarted goes
// on from its checkpointed value (in a new PID namespace of its own, as every unit runs in one);
// a clone of a running job restores beside it; limits come back; a changed byte or a stranger is
// refused — and all of it is in the audit trail.
import { spawnSync } from 'node:child_process';
import { chmodSync, closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { imagesRoot, listVersions, unitImagesDir } from '../adapters/images/image-store.js';
import { CLI as CLI_PATH, jobHarness } from './support/jobs.js';
import { firstMissing, needCommand, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until as wait } from './support/wait.js';

const until = <T>(what: string, probe: () => T | undefined | false, ms = 30_000) => wait(what, probe, ms, 50);
const missing = firstMissing(
  needRoot,
  () => (locateCriu() ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)'),
  () => needCommand('python3', 'apt-get install -y python3'),
  () => needCommand('setpriv', 'apt-get install -y util-linux'),
);
const test = suiteRequiring('restart (real CRIU)', missing);

const { work, h, ckpt, json, ps, running, killAll, history, cleanup } = jobHarness('ckpt-restart', 'rsnode');
test.after(() => cleanup(['rsnode', 'ra', 'rb']));

interface Restored {
  unit: string;
  was: { pid: number; startTime: number };
  now: { pid: number; startTime: number };
  nsPid: number | null;
}
interface RestartReport {
  outcome: string;
  restart: number | null;
  version: number | null;
  reason: string | null;
  failure?: { class: string; message: string; hint?: string } | null;
  units: Array<{ unit: string; pidNamespace?: boolean; waitedMs?: number }>;
  processes: Restored[];
  durationMs: number | null;
}

const start = (job: string, command: string, extra: string[] = []) => {
  const r = ckpt(['run', '--detach', '--job', job, ...extra, '--', 'sh', '-c', command]);
  assert.is(r.code, 0, r.err);
};
const checkpoint = (job: string) => {
  const r = ckpt(['checkpoint', job, '--wait', '--json']);
  assert.is(r.code, 0, `checkpoint of ${job}: ${r.err}${r.out}`);
  return JSON.parse(r.out) as { version: number };
};
const restart = (job: string, extra: string[] = []) => {
  const r = ckpt(['restart', job, '--wait', '--json', ...extra]);
  return { code: r.code, err: r.err, report: JSON.parse(r.out) as RestartReport };
};
const counter = (file: string) => (existsSync(file) ? Number(readFileSync(file, 'utf8').trim() || 0) : 0);
const verifies = (job: string) => {
  const r = ckpt(['verify', job]);
  assert.is(r.code, 0, `ckpt verify ${job}: ${r.err}`);
};

test('a counter checkpointed, killed and restarted goes on from its checkpointed value; its new children are tracked', async () => {
  const file = join(work, 'count');
  start('count', `i=0; while :; do i=$((i+1)); echo $i > ${file}; sleep 0.1; done`);
  await until('the counter', () => counter(file) > 5);
  const { version } = checkpoint('count');
  const atCheckpoint = counter(file);
  await until('the counter to go on', () => counter(file) > atCheckpoint + 10);
  // Every member the job ever had (the checkpointed `sleep 0.1` children have exited by now).
  const members = new Set(ps('count').map((m) => `${m.pid}/${m.startTime}`));
  killAll('count'); // and restart at once: the killed PIDs are not reaped yet, which does not matter
  const { code, err, report } = restart('count');
  assert.is(code, 0, `${err} ${JSON.stringify(report)}`);
  assert.equal([report.outcome, report.version], ['restored', version]);
  assert.is(report.units[0]!.pidNamespace, true, 'the unit’s own PID namespace, made anew');
  const resumed = await until('the restored counter', () => counter(file) !== 0 && counter(file) < atCheckpoint + 10 && counter(file));
  assert.ok(resumed >= atCheckpoint - 1, `resumed at ${resumed}, checkpointed at ${atCheckpoint}`);
  // Membership continuity: each restored process is a member linked to its checkpointed identity.
  const rows = await until('the restored members and a child forked since', () => {
    const now = ps('count');
    return now.some((m) => m.state === 'running' && m.comm === 'sleep' && m.restoredFrom === null && m.reason === 'descendant') && now;
  });
  for (const p of report.processes) {
    const row = rows.find((m) => m.pid === p.now.pid && m.startTime === p.now.startTime)!;
    assert.ok(row, `restored ${p.now.pid} is a member`);
    assert.equal(row.restoredFrom!.pid, p.was.pid);
    assert.ok(members.has(`${p.was.pid}/${p.was.startTime}`), `restored ${p.now.pid} was the member ${p.was.pid}`);
  }
  const root = rows.find((m) => m.reason === 'root' && m.state === 'running')!;
  assert.is(root.comm, 'ckpt-unit-init');
  assert.is(report.processes.find((p) => p.now.pid === root.pid)?.nsPid, 1, 'the root is PID 1 in its namespace');
  const types = history('count').map((e) => e.type);
  assert.ok(types.lastIndexOf('ProcessForked') > types.indexOf('RestartCommitted'), 'forks after the restart are recorded');
  verifies('count');
  killAll('count');
});

test('a clone of a job still running restores beside it, in a PID namespace of its own', async () => {
  const file = join(work, 'clone');
  start('clone', `sh -c 'setsid sleep 1001 </dev/null >/dev/null 2>&1 &'; i=0; while :; do i=$((i+1)); echo $i > ${file}; sleep 0.2; done`);
  await until('the job', () => counter(file) > 2 && running('clone').some((m) => m.escapes.includes('session')));
  checkpoint('clone');
  // The long-lived originals: the init, the loop's shell (its child) and the daemon — not the 0.2 s
  // sleeps, nor a shell caught between forking one and exec'ing it.
  const all = running('clone');
  const init = all.find((m) => m.reason === 'root')!;
  const originals = all.filter((m) => m === init || (m.comm === 'sh' && m.ppid === init.pid) || (m.comm === 'sleep' && m.escapes.includes('session'))).map((m) => m.pid);
  const { code, err, report } = restart('clone');
  assert.is(code, 0, err);
  assert.is(report.units[0]!.pidNamespace, true);
  const inNamespace = (pid: number) => Number(/^NSpid:.*\s(\d+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
  for (const p of report.processes) {
    assert.ok(!originals.includes(p.now.pid), 'a new host PID');
    // The PID it has in the original's namespace, which CRIU made anew for the clone.
    if (originals.includes(p.was.pid)) assert.is(p.nsPid, inNamespace(p.was.pid), 'inside its namespace each process has its original’s PID');
  }
  assert.ok(report.processes.filter((p) => originals.includes(p.was.pid)).length >= 3, 'the init, the command and the daemon are cloned');
  assert.ok(
    originals.every((pid) => existsSync(`/proc/${pid}`)),
    'the original keeps running',
  );
  const rows = running('clone');
  const daemon = rows.find((m) => m.comm === 'sleep' && m.escapes.includes('session') && m.restoredFrom !== null);
  assert.ok(daemon, 'the escaped daemon is back, still marked escaped');
  verifies('clone');
  killAll('clone');
});

test('a unit restarted with a memory limit has it again: a workload above it is stopped', async () => {
  const go = join(work, 'go-memory');
  const py = join(work, 'hog.py');
  writeFileSync(py, `import os, time\nwhile not os.path.exists('${go}'): time.sleep(0.05)\nb = bytearray(300 << 20)\nb[::4096] = b'x' * len(b[::4096])\ntime.sleep(100)\n`);
  start('limited', `exec python3 ${py}`, ['--memory', '96M', '--pids', '50']);
  await until('the job', () => running('limited').some((m) => m.comm.startsWith('python')));
  checkpoint('limited');
  killAll('limited');
  const { code, err } = restart('limited');
  assert.is(code, 0, err);
  const cgroup = running('limited')[0]!.cgroup!;
  assert.match(cgroup, /\/limited\/main-r1$/);
  assert.is(readFileSync(`/sys/fs/cgroup/memory${cgroup}/memory.limit_in_bytes`, 'utf8').trim(), String(96 << 20));
  assert.is(readFileSync(`/sys/fs/cgroup/pids${cgroup}/pids.max`, 'utf8').trim(), '50');
  writeFileSync(go, 'go'); // now the restored process allocates 300 MB
  const killed = await until('the OOM kill', () => ps('limited').find((m) => m.comm.startsWith('python') && m.state !== 'running' && m.restoredFrom !== null));
  assert.is(killed.signal, 9, 'stopped by the memory limit');
  verifies('limited');
});

test('a changed byte in an image refuses the restart, naming the file; a stranger’s restart and prune are refused and audited', async () => {
  start('guarded', 'exec sleep 1000');
  await until('the job', () => running('guarded').length === 2 && true);
  const { version } = checkpoint('guarded');
  killAll('guarded');
  const dir = unitImagesDir(imagesRoot(h.home), 'guarded', version, 'main');
  const pages = readdirSync(dir).find((f) => f.startsWith('pages-'))!;
  const fd = openSync(join(dir, pages), 'r+');
  const byte = Buffer.alloc(1);
  readSync(fd, byte, 0, 1, 100);
  writeSync(fd, Buffer.from([byte[0]! ^ 0xff]), 0, 1, 100);
  closeSync(fd);
  const tampered = restart('guarded');
  assert.is(tampered.code, 1);
  assert.is(tampered.report.outcome, 'failed');
  assert.match(tampered.report.reason!, new RegExp(`UnitImagesVerifyFailed on unit main: [\\s\\S]*main/${pages}: SHA-256 [0-9a-f]{64}, the manifest says`), tampered.report.reason!);
  assert.is(tampered.report.failure?.class, 'images', 'the failure class says the images are damaged');
  assert.match(tampered.report.failure?.hint ?? '', /ckpt audit .*--verify/);
  assert.equal(running('guarded'), [], 'nothing was restored');

  // Another user, with write access to the store, asks for a restart: refused, on record.
  for (const f of ['', 'events.db', 'events.db-wal', 'events.db-shm']) if (existsSync(join(h.home, f))) chmodSync(join(h.home, f), f ? 0o666 : 0o777);
  chmodSync(work, 0o755);
  const stranger = spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, CLI_PATH, 'restart', 'guarded', '--wait'], {
    encoding: 'utf8',
    env: { ...process.env, CKPT_HOME: h.home, CKPT_NODE: 'rsnode', CKPT_STORE: '' },
  });
  assert.is(stranger.status, 1, stranger.stderr);
  assert.match(stranger.stderr, /refused: .*uid 65534.* may not restart job guarded: only its owner \(uid 0\) or root may/);
  const pruner = spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, CLI_PATH, 'prune', 'guarded', '--keep', '1'], {
    encoding: 'utf8',
    env: { ...process.env, CKPT_HOME: h.home, CKPT_NODE: 'rsnode', CKPT_STORE: '' },
  });
  assert.equal([pruner.status, /refused: .* may not prune job guarded/.test(pruner.stderr)], [1, true], pruner.stderr);
  // A home others can write is one no agent starts on (the next tests start agents for more nodes).
  for (const f of ['', 'events.db', 'events.db-wal', 'events.db-shm']) if (existsSync(join(h.home, f))) chmodSync(join(h.home, f), f ? 0o600 : 0o700);
  const [audit] = json<Array<{ entries: Array<{ kind: string; outcome: string; requestedBy?: { uid: number }; reason: string | null }> }>>(['audit', 'guarded']);
  const refused = audit!.entries.find((e) => e.kind === 'restart' && e.outcome === 'rejected')!;
  assert.is(refused.requestedBy!.uid, 65534);
  assert.match(refused.reason!, /may not restart/);
  const prune = audit!.entries.find((e) => e.kind === 'prune')!;
  assert.equal([prune.outcome, prune.requestedBy!.uid], ['rejected', 65534]);
  verifies('guarded');
});

test('a job of 2 units on 2 nodes restarts as one (one unit placed elsewhere); a bad unit fails the whole restart and stops the other', async () => {
  start('pair', 'exec sleep 1001', ['--unit', 'a', '--node', 'ra']);
  start('pair', 'exec sleep 1002', ['--unit', 'b', '--node', 'rb']);
  await until('both units', () => running('pair').length === 4 && true);
  const { version } = checkpoint('pair');
  killAll('pair');
  const moved = restart('pair', ['--place', 'b=ra', '--node', 'ra']);
  assert.is(moved.code, 0, moved.err);
  assert.equal(moved.report.units.map((u) => u.unit).sort(), ['a', 'b']);
  const rows = running('pair');
  assert.equal(rows.map((m) => `${m.unit}@${m.node}`).sort(), ['a@ra', 'a@ra', 'b@ra', 'b@ra'], 'unit b now runs on node ra');
  assert.is(history('pair').filter((e) => e.type === 'RestartCommitted').length, 1);

  // Unit b's images damaged: a is restored (its check passes) but the restart fails as a whole. The
  // reason names the file whether b's check or b's restore (which reads the check's verdict) failed first.
  killAll('pair');
  const dir = unitImagesDir(imagesRoot(h.home), 'pair', version, 'b');
  const pages = join(dir, readdirSync(dir).find((f) => f.startsWith('pages-'))!);
  writeFileSync(pages, Buffer.concat([readFileSync(pages), Buffer.from([0])]));
  const failed = restart('pair', ['--node', 'ra']);
  assert.equal([failed.code, failed.report.outcome], [1, 'failed']);
  assert.match(failed.report.reason!, /Unit(ImagesVerify|Restore)Failed on unit b: [\s\S]*b\/pages-\d+\.img: \d+ bytes, the manifest says \d+/, failed.report.reason!);
  await until('every restored part stopped', () => running('pair').length === 0 && true);
  // Each unit's rollback is recorded once it is done: the report may come first.
  await until('both units rolled back', () => history('pair').filter((e) => e.type === 'UnitRolledBack').length === 2 && true);
  verifies('pair');
});

test('a restart whose agent died misses its deadline: the other unit is rolled back at once, the restart fails once the agent returns', async () => {
  start('late', 'exec sleep 1005', ['--unit', 'a', '--node', 'ra']);
  start('late', 'exec sleep 1006', ['--unit', 'b', '--node', 'rb']);
  await until('both units', () => running('late').length === 4 && true);
  checkpoint('late');
  killAll('late');
  const agent = json<{ pid: number }>(['agent', 'status', '--node', 'rb']);
  process.kill(agent.pid, 'SIGKILL');
  await until('agent rb to be gone', () => ckpt(['agent', 'status', '--node', 'rb']).code === 1);
  const planned = ckpt(['restart', 'late', '--timeout', '2s', '--node', 'ra']);
  assert.is(planned.code, 0, planned.err);
  await until('unit a rolled back after the deadline', () => history('late').some((e) => e.type === 'UnitRolledBack' && e.data.unit === 'a'));
  let types = history('late').map((e) => e.type);
  assert.ok(types.includes('DeadlineReached') && types.includes('RestartAbortRequested'));
  assert.not.ok(types.includes('RestartFailed'), 'not failed before every unit is rolled back');
  assert.is(ckpt(['agent', 'start', '--node', 'rb']).code, 0);
  await until('the restart to fail', () => history('late').some((e) => e.type === 'RestartFailed'));
  types = history('late').map((e) => e.type);
  assert.not.ok(types.includes('UnitRestored') || types.includes('RestartCommitted'));
  assert.equal(running('late'), []);
  const [audit] = json<Array<{ entries: Array<{ kind: string; outcome: string; reason: string | null }> }>>(['audit', 'late']);
  const entry = audit!.entries.find((e) => e.kind === 'restart')!;
  assert.equal([entry.outcome, /deadline/.test(entry.reason!)], ['failed', true]);
  verifies('late');
});

test('ckpt audit shows every checkpoint and restart with requester, outcome and durations; --verify re-checks the images', () => {
  const [count] = json<
    Array<{ job: string; entries: Array<{ kind: string; outcome: string; requestedBy?: { uid: number }; durationMs?: number; version: number | null }>; images?: Array<{ state: string }> }>
  >(['audit', 'count', '--verify']);
  assert.equal(
    count!.entries.map((e) => [e.kind, e.outcome]),
    [
      ['checkpoint', 'committed'],
      ['restart', 'restored'],
    ],
  );
  for (const e of count!.entries) {
    assert.is(e.requestedBy!.uid, 0);
    assert.ok((e.durationMs ?? -1) >= 0);
  }
  assert.equal(
    count!.images!.map((i) => i.state),
    ['ok'],
  );
  const guarded = ckpt(['audit', 'guarded', '--verify']);
  assert.is(guarded.code, 1, 'a damaged version fails --verify');
  assert.match(guarded.out, /images of v1: damaged — [\s\S]*pages-\d+\.img: SHA-256/);
});

test('ckpt prune keeps the newest versions and records what it removed', async () => {
  start('pruned', 'exec sleep 1000');
  await until('the job', () => running('pruned').length === 2 && true);
  for (let i = 0; i < 3; i++) checkpoint('pruned');
  const r = ckpt(['prune', 'pruned', '--keep', '1', '--json']);
  assert.is(r.code, 0, r.err);
  assert.equal(
    (JSON.parse(r.out) as { pruned: Array<{ version: number }> }).pruned.map((p) => p.version),
    [1, 2],
  );
  assert.equal(
    listVersions(imagesRoot(h.home), 'pruned').map((v) => v.version),
    [3],
  );
  assert.equal(
    history('pruned')
      .filter((e) => e.type === 'CheckpointPruned')
      .map((e) => e.data.version),
    [1, 2],
  );
  const refused = restart('pruned', ['--version', '1']);
  assert.equal([refused.code, refused.report.outcome, /not a committed checkpoint on disk/.test(refused.report.reason!)], [1, 'rejected', true]);
  assert.match(ckpt(['checkpoints', 'pruned']).out, /^v1\s+committed.*pruned/m);
  verifies('pruned');
  killAll('pruned');
});

test('wrong use of restart, audit and prune: clear errors and exit codes', () => {
  let r = ckpt(['restart']);
  assert.equal([r.code, /name exactly one job/.test(r.err)], [2, true]);
  r = ckpt(['restart', 'nobody']);
  assert.equal([r.code, r.err.trim()], [1, 'ckpt restart: unknown job "nobody" (ckpt jobs lists them)']);
  r = ckpt(['restart', 'count', '--place', 'main']);
  assert.equal([r.code, /--place needs UNIT=NODE/.test(r.err)], [2, true]);
  r = ckpt(['prune', 'count']);
  assert.equal([r.code, /--keep N/.test(r.err)], [2, true]);
  r = ckpt(['prune', 'count', '--keep', '0']);
  assert.is(r.code, 2);
  assert.is(ckpt(['audit', 'nobody']).code, 1);
});

test.run();
