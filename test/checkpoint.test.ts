import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { filter, firstValueFrom } from 'rxjs';
import * as assert from 'uvu/assert';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { readPstree } from '../adapters/checkpointers/criu-images.js';
import { decisionHistory } from '../adapters/cli/commands/verify.js';
import { imagesRoot, unitImagesDir, verifyVersion, versionDir } from '../adapters/images/image-store.js';
import { openEventStore } from '../adapters/store/open.js';
import { hostPidsByNamespacePid } from '../adapters/tracking/pids.js';
import { checkpointDecider, decideCheckpoint } from '../domain/checkpoint-coordinator.js';
import { rederive } from '../domain/decider.js';
import { jobHarness, killMembers, type PsRow } from './support/jobs.js';
import { firstMissing, needCommand, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until as wait } from './support/wait.js';

const until = <T>(what: string, probe: () => T | undefined | false, ms = 30_000) => wait(what, probe, ms, 50);
const criu = locateCriu();
const missing = firstMissing(
  needRoot,
  () => (criu ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)'),
  () => needCommand('python3', 'apt-get install -y python3'),
);
const test = suiteRequiring('coordinated checkpoints (real CRIU)', missing);

const NODE = 'cpnode';
const NODES = [NODE, 'na', 'nb', 'n1', 'n2', 'n3', 'n4'];
const { work, h, ckpt, json, ps, history, cleanup, newHome } = jobHarness('ckpt-checkpoint', NODE);
test.after(() => cleanup(NODES));

interface UnitReport {
  unit: string;
  node: string;
  planned: number;
  frozen?: number;
  captured?: number[];
  files?: number;
  bytes?: number;
  failed?: string;
}
interface Report {
  version: number | null;
  outcome: string;
  phase: string;
  reason: string | null;
  units: UnitReport[];
  processes: number;
  files: number;
  bytes: number;
  durationMs: number | null;
  frozenMs: number | null;
  images: string | null;
  manifest: string | null;
}

const numeric = (a: number, b: number) => a - b;
const checkpoint = (job: string, extra: string[] = [], home = h.home) => {
  const r = ckpt(['checkpoint', job, '--wait', '--json', ...extra], home);
  return { code: r.code, err: r.err, report: JSON.parse(r.out) as Report };
};
const imaged = (home: string, job: string, version: number, unit = 'main') =>
  readPstree(unitImagesDir(imagesRoot(home), job, version, unit))
    .map((e) => e.pid)
    .sort(numeric);
const runningPids = (rows: PsRow[]) =>
  rows
    .filter((m) => m.state === 'running')
    .map((m) => m.pid)
    .sort(numeric);
/** Images hold PIDs of the unit's own PID namespace (its init is PID 1 there): the host PIDs of
 *  the same processes, among the unit's running members (-PID for one that is not). */
const onHost = (pids: readonly number[], rows: PsRow[]) => {
  const root = rows.find((m) => m.reason === 'root' && m.state === 'running')!;
  const host = hostPidsByNamespacePid(root.pid, runningPids(rows));
  return pids.map((p) => host.get(p) ?? -p).sort(numeric);
};
/** 'THAWED' when neither freezer holds the unit (ckpt freezes with cgroup2's when there is one). */
const freezerState = (row: PsRow) => {
  const v1 = readFileSync(`/sys/fs/cgroup/freezer${row.cgroup}/freezer.state`, 'utf8').trim();
  const v2 = `/sys/fs/cgroup/unified${row.cgroup}/cgroup.freeze`;
  return existsSync(v2) && readFileSync(v2, 'utf8').trim() === '1' ? `${v1}, cgroup2 frozen` : v1;
};
const verifies = (job: string, home = h.home) => {
  const r = ckpt(['verify', job], home);
  assert.is(r.code, 0, `ckpt verify ${job}: ${r.err}`);
};
const start = (job: string, command: string, extra: string[] = [], home = h.home) => {
  const r = ckpt(['run', '--detach', '--job', job, ...extra, '--', 'sh', '-c', command], home);
  assert.is(r.code, 0, r.err);
};
const stop = (job: string, home = h.home) => {
  killMembers(ps(job, home));
};

test('a counter keeps counting after a checkpoint whose images hold every process, checked in pstree.img', async () => {
  const file = join(work, 'counter');
  start('counter', `i=0; while :; do i=$((i+1)); echo $i > ${file}; sleep 0.05; done`);
  await until('the counter', () => existsSync(file) && Number(readFileSync(file, 'utf8')) > 2);
  const { code, err, report } = checkpoint('counter');
  assert.is(code, 0, err);
  assert.equal([report.version, report.outcome, report.phase], [1, 'committed', 'completed']);
  const pids = imaged(h.home, 'counter', 1);
  assert.equal(report.units[0]!.captured, pids, 'the verified capture is what pstree.img holds');
  const rows = ps('counter');
  const init = rows.find((m) => m.reason === 'root')!;
  assert.is(pids[0], 1, 'the unit’s init is PID 1 of its own namespace');
  // The host identity of each imaged process, as verified (a `sleep 0.05` in the images may be gone by now).
  const verified = history('counter').find((e) => e.type === 'UnitVerified')!.data as { captured: number[]; processes: Array<{ pid: number; startTime: number }> };
  assert.equal(verified.captured, pids);
  const host = verified.processes.map((p) => p.pid);
  assert.ok(host.includes(init.pid) && host.includes(rows.find((m) => m.comm === 'sh')!.pid), 'the init and the counter shell are in the images');
  assert.ok(
    verified.processes.every((p) => rows.some((m) => m.pid === p.pid && m.startTime === p.startTime)),
    'every imaged process is a member',
  );
  assert.equal(verifyVersion(imagesRoot(h.home), 'counter', 1), { ok: true, files: report.files, bytes: report.bytes });
  assert.is(freezerState(init), 'THAWED');
  const before = Number(readFileSync(file, 'utf8'));
  await until('the counter to go on', () => Number(readFileSync(file, 'utf8')) > before + 3);
  verifies('counter');
  stop('counter');
});

test('a tree of processes joined by pipes: images hold exactly the running members', async () => {
  start('pipes', 'sleep 1000 | cat | cat > /dev/null & sleep 1001 | tee /dev/null | cat > /dev/null & wait');
  await until('the pipelines', () => runningPids(ps('pipes')).length === 8 && true); // the init, sh and two pipelines of 3
  const { code, err, report } = checkpoint('pipes');
  assert.is(code, 0, err);
  const pids = imaged(h.home, 'pipes', 1);
  assert.equal(onHost(pids, ps('pipes')), runningPids(ps('pipes')));
  assert.equal(report.units[0]!.captured, pids);
  assert.match(readFileSync(join(unitImagesDir(imagesRoot(h.home), 'pipes', 1, 'main'), 'dump.log'), 'utf8'), /Dumping pipe \d+ with id/, 'CRIU dumped the pipes');
  verifies('pipes');
  stop('pipes');
});

test('an escaped double-fork daemon is captured with its unit (the unit’s init adopted it)', async () => {
  start('daemon', `sh -c 'setsid sleep 1001 </dev/null >/dev/null 2>&1 &'; sleep 1002`);
  const daemon = await until('the daemon', () => ps('daemon').find((m) => m.state === 'running' && m.escapes.includes('session')));
  const { code, err, report } = checkpoint('daemon');
  assert.is(code, 0, err);
  const rows = ps('daemon');
  const pids = onHost(imaged(h.home, 'daemon', 1), rows);
  assert.ok(pids.includes(daemon.pid), `the daemon ${daemon.pid} is in the images`);
  assert.equal(pids, runningPids(rows), 'the images hold every running member, nothing else');
  assert.is(report.processes, pids.length);
  assert.is(freezerState(rows[0]!), 'THAWED');
  assert.ok(ps('daemon').filter((m) => m.state === 'running').length === rows.filter((m) => m.state === 'running').length, 'the job keeps running');
  verifies('daemon');
  stop('daemon');
});

test('--stop commits, then stops the job (for migration): the images stay, the job ends', async () => {
  start('migrate', 'sleep 1005 & sleep 1006');
  await until('the job', () => runningPids(ps('migrate')).length === 4 && true);
  const { code, err, report } = checkpoint('migrate', ['--stop']);
  assert.is(code, 0, err);
  assert.equal([report.outcome, report.phase, (report as unknown as { stopped: boolean }).stopped], ['committed', 'completed', true]);
  await until('the job to end', () => history('migrate').some((e) => e.type === 'JobEnded'));
  assert.equal(runningPids(ps('migrate')), []);
  assert.ok(verifyVersion(imagesRoot(h.home), 'migrate', 1).ok);
  verifies('migrate');
});

test('an established TCP connection (refused before the freeze) aborts: thawed, no partial image, job running', async () => {
  const ready = join(work, 'tcp-ready');
  const py = `import socket, time
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()
c = socket.create_connection(s.getsockname()); a, _ = s.accept()
open('${ready}', 'w').write('1'); time.sleep(1000)`;
  writeFileSync(join(work, 'tcp.py'), py);
  start('tcp', `exec python3 ${join(work, 'tcp.py')}`);
  await until('the connection', () => existsSync(ready));
  const { code, report } = checkpoint('tcp');
  assert.is(code, 1);
  assert.is(report.outcome, 'aborted');
  assert.match(report.reason!, /UnitFreezeFailed on unit main: connection: established TCP connections: .*--tcp-established/);
  assert.not.ok(existsSync(versionDir(imagesRoot(h.home), 'tcp', 1)), 'no partial image is left');
  const rows = ps('tcp');
  assert.is(freezerState(rows[0]!), 'THAWED');
  assert.ok(
    rows.some((m) => m.comm.startsWith('python') && m.state === 'running'),
    'the job keeps running',
  );
  const types = history('tcp').map((e) => e.type);
  assert.ok(types.includes('UnitAborted') && types.includes('CheckpointAborted'));
  verifies('tcp');
  stop('tcp');
});

test('an agent that died misses the deadline: aborted, the other unit thawed at once, the dead one’s once it returns', async () => {
  start('duo', 'sleep 1003', ['--unit', 'a', '--node', 'na']);
  start('duo', 'sleep 1004', ['--unit', 'b', '--node', 'nb']);
  const b = json<{ pid: number }>(['agent', 'status', '--node', 'nb']);
  process.kill(b.pid, 'SIGKILL');
  await until('agent nb to be gone', () => ckpt(['agent', 'status', '--node', 'nb']).code === 1);
  const r = ckpt(['checkpoint', 'duo', '--timeout', '2s', '--node', 'na']);
  assert.is(r.code, 0, r.err); // planned
  await until('unit a to be aborted after the deadline', () => history('duo').some((e) => e.type === 'UnitAborted' && e.data.unit === 'a'));
  const types = history('duo').map((e) => e.type);
  assert.ok(types.includes('DeadlineReached') && types.includes('CheckpointAbortRequested'));
  assert.not.ok(types.includes('CheckpointAborted'), 'not aborted before every unit is cleaned up');
  const rows = ps('duo');
  assert.is(freezerState(rows.find((m) => m.unit === 'a')!), 'THAWED');
  assert.is(ckpt(['agent', 'start', '--node', 'nb']).code, 0);
  await until('the abort to finish', () => history('duo').some((e) => e.type === 'CheckpointAborted'));
  const [c] = json<Report[]>(['checkpoints', 'duo']);
  assert.equal([c!.outcome, /deadline/.test(c!.reason!)], ['aborted', true]);
  assert.is(freezerState(ps('duo').find((m) => m.unit === 'b')!), 'THAWED');
  assert.not.ok(existsSync(versionDir(imagesRoot(h.home), 'duo', 1)));
  verifies('duo');
  stop('duo');
});

test('kill -9 of the agent (and its coordinator) at every phase: committed or cleanly aborted, never frozen, never dumped twice', async () => {
  const home = newHome();
  const calls = join(work, 'criu-calls');
  const wrapper = join(work, 'criu-wrapper');
  writeFileSync(wrapper, `#!/bin/sh\necho "$@" >> ${calls}\nexec ${criu} "$@"\n`);
  chmodSync(wrapper, 0o755);
  const env = { CKPT_CRIU: wrapper };
  assert.is(ckpt(['agent', 'start'], home, env).code, 0);
  // ~150 MB of touched memory: the dump takes long enough to be killed in the middle of it.
  start('phases', `exec python3 -c "import time; b = bytearray(150 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(10000)"`, [], home);
  const job = await until('the 150 MB process', () =>
    ps('phases', home).find((m) => m.comm.startsWith('python') && Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${m.pid}/status`, 'utf8'))?.[1]) > 140_000 && m),
  );
  const store = openEventStore(`sqlite:${join(home, 'events.db')}`);
  const phases = ['CheckpointPlanned', 'UnitFrozen', 'UnitDumpRequested', 'UnitDumped', 'UnitVerified', 'CheckpointCommitRequested', 'CheckpointCommitted', 'UnitThawRequested'];
  const outcomes: string[] = [];
  try {
    for (const phase of phases) {
      const agent = json<{ pid: number }>(['agent', 'status'], home);
      const from = (await store.streamRevision('job-phases'))! + 1;
      const killed = firstValueFrom(store.subscribeStream('job-phases', { from }).pipe(filter((e) => e.type === phase))).then(() => process.kill(agent.pid, 'SIGKILL'));
      await store.append('job-phases', [{ type: 'CheckpointRequested', data: { request: `kill-at-${phase}`, stop: false, timeoutMs: 60_000 } }]);
      await killed;
      await until('the agent to be gone', () => ckpt(['agent', 'status'], home).code === 1);
      assert.is(ckpt(['agent', 'start'], home, env).code, 0);
      const c = await until(
        `the checkpoint killed at ${phase} to end`,
        () =>
          json<Report[]>(['checkpoints', 'phases'], home).find(
            (x) =>
              x.version !== null &&
              (x.phase === 'completed' || x.outcome === 'aborted') &&
              history('phases', home).some((e) => e.type === 'CheckpointPlanned' && e.data.request === `kill-at-${phase}` && e.data.version === x.version) &&
              x,
          ),
        60_000,
      );
      const v = c.version!;
      outcomes.push(`${phase}: ${c.outcome}${c.reason ? ` (${c.reason.slice(0, 80)})` : ''}`);
      const dumps = readFileSync(calls, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('dump') && l.includes(`/phases/v${v}/`));
      assert.ok(dumps.length <= 1, `v${v} was dumped ${dumps.length} times`);
      const mine = history('phases', home).filter((e) => e.data.version === v);
      for (const type of [
        'CheckpointPlanned',
        'UnitFreezeRequested',
        'UnitDumpRequested',
        'UnitVerifyRequested',
        'CheckpointCommitRequested',
        'CheckpointCommitted',
        'UnitThawRequested',
        'UnitAbortRequested',
        'CheckpointCompleted',
        'CheckpointAborted',
      ]) {
        assert.ok(mine.filter((e) => e.type === type).length <= 1, `${type} of v${v} recorded once at most`);
      }
      assert.is(freezerState(job), 'THAWED', `unit thawed after a kill at ${phase}`);
      if (c.outcome === 'committed') assert.ok(verifyVersion(imagesRoot(home), 'phases', v).ok);
      else assert.not.ok(existsSync(versionDir(imagesRoot(home), 'phases', v)), `no partial images of v${v}`);
      assert.ok(readFileSync(`/proc/${job.pid}/status`, 'utf8').includes('python'), 'the job still runs');
    }
  } finally {
    await store.close();
  }
  console.log(`  kill -9 at each phase → ${outcomes.join('; ')}`);
  verifies('phases', home);
  stop('phases', home);
});

test('a job of 4 units on 4 nodes (4 agents, 4 coordinators) commits as one checkpoint, each decision once', async () => {
  for (const n of [1, 2, 3, 4]) start('quad', `sleep 100${n} & sleep 110${n}`, ['--unit', `u${n}`, '--node', `n${n}`]);
  await until('every unit', () => ps('quad').filter((m) => m.state === 'running' && m.comm === 'sleep').length === 8);
  const { code, err, report } = checkpoint('quad', ['--node', 'n1']);
  assert.is(code, 0, `${err} ${report.reason}`);
  assert.equal(report.units.map((u) => u.unit).sort(), ['u1', 'u2', 'u3', 'u4']);
  for (const n of [1, 2, 3, 4]) {
    const unitRows = ps('quad').filter((m) => m.unit === `u${n}`);
    assert.equal(onHost(imaged(h.home, 'quad', 1, `u${n}`), unitRows), runningPids(unitRows), `unit u${n}`);
  }
  const types = history('quad').map((e) => e.type);
  const count = (t: string) => types.filter((x) => x === t).length;
  assert.equal(
    ['CheckpointPlanned', 'UnitFreezeRequested', 'UnitDumpRequested', 'UnitVerifyRequested', 'CheckpointCommitRequested', 'CheckpointCommitted', 'UnitThawRequested', 'CheckpointCompleted'].map(count),
    [1, 4, 4, 4, 1, 1, 4, 1],
  );
  verifies('quad');
  stop('quad');
});

test('ckpt verify re-derives the recorded decisions of a real history and catches a decider change', async () => {
  const store = openEventStore(`sqlite:${join(h.home, 'events.db')}`);
  try {
    const events = (await decisionHistory(store, 'counter'))!;
    assert.is(rederive(checkpointDecider('counter'), events).differences.length, 0);
    const changed = { ...checkpointDecider('counter'), decide: ((s, e) => decideCheckpoint(s, e).filter((d) => d.type !== 'DeadlineCancelled')) as typeof decideCheckpoint };
    const found = rederive(changed, events);
    assert.ok(found.checked > 5);
    assert.is(found.differences.length, 1);
    assert.is(found.differences[0]!.cause.type, 'UnitThawed');
  } finally {
    await store.close();
  }
});

test('wrong use of checkpoint, checkpoints and verify: clear errors and exit codes', () => {
  let r = ckpt(['checkpoint']);
  assert.equal([r.code, /name exactly one job/.test(r.err)], [2, true]);
  r = ckpt(['checkpoint', 'nobody']);
  assert.equal([r.code, r.err.trim()], [1, 'ckpt checkpoint: unknown job "nobody" (ckpt jobs lists them)']);
  r = ckpt(['checkpoint', 'counter', '--timeout', 'soon']);
  assert.equal([r.code, /--timeout needs a duration such as 30s/.test(r.err)], [2, true]);
  r = ckpt(['checkpoint', 'counter', '--wait']); // the counter was stopped: nothing to checkpoint
  assert.equal([r.code, /refused: job counter has no running processes/.test(r.err)], [1, true]);
  assert.match(ckpt(['checkpoints', 'counter']).out, /^v1\s+committed\s/m);
  assert.is(ckpt(['verify', 'nobody']).code, 1);
  assert.match(ckpt(['checkpoint', '--help']).out, /--timeout DURATION/);
});

test.run();
