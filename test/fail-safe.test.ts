// Failing safe, for real (root, real CRIU, a real agent): no freeze outlives its deadline even
// when the agent is killed (the freeze guard thaws the unit) or paused (no freeze after the
// deadline); a client waiting with --timeout returns then; a full disk — the images' or the whole
// $CKPT_HOME with the log — aborts the checkpoint, the job thawed and its partial images gone;
// one agent per node and store; a stale pid file does not stop a start; a bad option records nothing.
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as assert from 'uvu/assert';
import { freezeGuardPath, guardFiles } from '../adapters/agent/freeze-guard.js';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { imagesRoot, versionDir } from '../adapters/images/image-store.js';
import { openEventStore } from '../adapters/store/open.js';
import { readStat } from '../adapters/tracking/procfs.js';
import type { UnitCgroup } from '../domain/events/job.js';
import { CLI, jobHarness, killMembers, type PsRow, type Result, sigkill } from './support/jobs.js';
import { firstMissing, needCommand, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until as wait } from './support/wait.js';

const until = <T>(what: string, probe: () => T | undefined | false, ms = 30_000) => wait(what, probe, ms, 50);
const criu = locateCriu();
const missing = firstMissing(
  needRoot,
  () => (criu ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)'),
  () => needCommand('python3', 'apt-get install -y python3'),
);
const test = suiteRequiring('failing safe (real agent, real CRIU)', missing);

const NODE = 'fsnode';
const { work, h, ckpt, json, ps, history, cleanup, newHome } = jobHarness('ckpt-failsafe', NODE);
/** tmpfs mounted by a test, with the home whose agent must stop before it goes. */
const mounts: Array<{ dir: string; home: string }> = [];
test.after(() => {
  for (const m of mounts.reverse()) {
    ckpt(['agent', 'stop'], m.home);
    spawnSync('umount', ['-l', m.dir]);
  }
  cleanup([NODE]);
});

interface Report {
  version: number | null;
  outcome: string;
  phase: string;
  reason: string | null;
  failure: { class: string; message: string } | null;
  timedOut: boolean;
}

/** `ckpt …` in the background: the test acts while it waits. */
const ckptAsync = (args: string[], home: string, env: Record<string, string> = {}): Promise<Result> =>
  new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, CKPT_HOME: home, CKPT_NODE: NODE, CKPT_STORE: '', ...env } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code) => resolve({ code, out, err }));
  });

/** A job that counts in a file as long as it runs (thawed). */
const counter = (job: string, home: string, file: string, env: Record<string, string> = {}, touchMiB = 0) => {
  const fill = touchMiB > 0 ? `b = bytearray(${touchMiB} << 20)\nfor i in range(len(b) // 4096): b[i * 4096] = 1\n` : '';
  const r = ckpt(
    [
      'run',
      '--detach',
      '--job',
      job,
      '--',
      'python3',
      '-c',
      `import time\n${fill}i = 0\nwhile True:\n  i += 1\n  open(${JSON.stringify(file)} + '.tmp', 'w').write(str(i))\n  __import__('os').rename(${JSON.stringify(file)} + '.tmp', ${JSON.stringify(file)})\n  time.sleep(0.05)`,
    ],
    home,
    env,
  );
  assert.is(r.code, 0, r.err);
};
const count = (file: string) => Number(readFileSync(file, 'utf8'));
const countsOn = async (what: string, file: string) => {
  const before = count(file);
  await until(what, () => count(file) > before + 2);
};

/** 'THAWED' when neither freezer holds the unit (cgroup2's cgroup.freeze and the v1 freezer). */
const freezerState = (row: PsRow) => {
  const v1 = readFileSync(`/sys/fs/cgroup/freezer${row.cgroup}/freezer.state`, 'utf8').trim();
  const v2 = `/sys/fs/cgroup/unified${row.cgroup}/cgroup.freeze`;
  return existsSync(v2) && readFileSync(v2, 'utf8').trim() === '1' ? 'FROZEN' : v1;
};
const rootOf = (job: string, home: string) => ps(job, home).find((m) => m.reason === 'root' && m.state === 'running');
const agentPid = (home: string) => json<{ pid: number }>(['agent', 'status'], home).pid;
/** Freeze guards still running for a unit cgroup (their argv names its files). */
const guardsOf = (cgroup: string) =>
  readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8');
        return argv.includes('ckpt-freeze-guard') && argv.includes(cgroup);
      } catch {
        return false;
      }
    });

/** A criu that, asked to dump (`criu swrk`), says so in MARK and holds on while HOLD exists: the unit is frozen then. */
const holdingCriu = (name: string) => {
  const mark = join(work, `${name}.dumping`);
  const hold = join(work, `${name}.hold`);
  const wrapper = join(work, `criu-${name}`);
  writeFileSync(wrapper, `#!/bin/sh\nif [ "$1" = swrk ] && [ -f ${hold} ]; then\n  touch ${mark}\n  while [ -f ${hold} ]; do sleep 0.05; done\nfi\nexec ${criu} "$@"\n`, { mode: 0o755 });
  writeFileSync(hold, '');
  return { env: { CKPT_CRIU: wrapper }, mark, release: () => rmSync(hold, { force: true }) };
};

test('kill -9 of the agent with the unit frozen: the guard thaws it, --wait returns at the deadline (exit 3), the next agent records the abort', async () => {
  const home = newHome();
  const file = join(work, 'count-killed');
  const criuHold = holdingCriu('killed');
  counter('killed', home, file, criuHold.env);
  await until('the job to count', () => existsSync(file) && count(file) > 2);
  const root = rootOf('killed', home)!;
  const waiting = ckptAsync(['checkpoint', 'killed', '--wait', '--timeout', '5s'], home, criuHold.env);
  await until('the dump to start (the unit frozen)', () => existsSync(criuHold.mark));
  assert.is(freezerState(root), 'FROZEN');
  assert.is(guardsOf(root.cgroup!).length, 1, 'one freeze guard holds the unit');
  sigkill(agentPid(home));
  criuHold.release();
  await countsOn('the job to count again: its guard thawed it with no agent alive', file);
  // The criu the dead agent started may still dump (and re-freeze) the unit: the guard stays
  // until no process of the unit is traced, thawing it again.
  await until('the guard to be done', () => guardsOf(root.cgroup!).length === 0);
  assert.is(freezerState(root), 'THAWED');
  await countsOn('the job to count on', file);

  const r = await waiting;
  assert.is(r.code, 3, `exit 3 (timed out): ${r.err}`);
  assert.match(r.err, /timed out: the deadline \(5 s\) passed with checkpoint v1 of killed at phase "\w+" and no outcome recorded: a node agent may be down/, r.err);

  // The pid file is stale: status says so, start works and the new agent records the abort.
  const status = ckpt(['agent', 'status'], home);
  assert.is(status.code, 1);
  assert.match(status.out, /its pid file names pid \d+, which is gone/);
  const start = ckpt(['agent', 'start'], home);
  assert.is(start.code, 0, start.err);
  await until('the abort to be recorded', () => history('killed', home).some((e) => e.type === 'CheckpointAborted'));
  const [c] = json<Array<{ outcome: string; reason: string }>>(['checkpoints', 'killed'], home);
  assert.is(c!.outcome, 'aborted');
  assert.not.ok(existsSync(versionDir(imagesRoot(home), 'killed', 1)), 'no partial images');
  await countsOn('the job to run on', file);
  killMembers(ps('killed', home));
  ckpt(['agent', 'stop'], home);
});

test('an agent paused past the deadline never freezes for it: the checkpoint aborts, the job never stopped counting', async () => {
  const home = newHome();
  const file = join(work, 'count-paused');
  counter('paused', home, file);
  await until('the job to count', () => existsSync(file) && count(file) > 2);
  const agent = agentPid(home);
  // Requests go through an agent: another node's agent on the same store records this one (and
  // its coordinator plans it) while the unit's own agent is paused.
  const other = `${NODE}-other`;
  assert.is(ckpt(['agent', 'start', '--node', other], home).code, 0);
  process.kill(agent, 'SIGSTOP');
  try {
    const asked = ckptAsync(['checkpoint', 'paused', '--timeout', '1s'], home, { CKPT_NODE: other });
    await until('the request to be recorded', () => history('paused', home).some((e) => e.type === 'CheckpointRequested'));
    const requested = Date.parse(history('paused', home).find((e) => e.type === 'CheckpointRequested')!.metadata.recordedAt as string);
    await until('the deadline to pass with the agent paused', () => Date.now() > requested + 1500);
    process.kill(agent, 'SIGCONT');
    await asked;
  } finally {
    process.kill(agent, 'SIGCONT');
  }
  await until('the checkpoint to be aborted', () => history('paused', home).some((e) => e.type === 'CheckpointAborted'));
  const types = history('paused', home).map((e) => e.type);
  assert.not.ok(types.includes('UnitFrozen'), `never frozen after its deadline: ${types.join(' ')}`);
  assert.not.ok(types.includes('UnitDumped'));
  await countsOn('the job to count', file);
  killMembers(ps('paused', home));
  ckpt(['agent', 'stop'], home);
  ckpt(['agent', 'stop', '--node', other], home);
});

test('a request whose deadline passed before any agent could plan it is never planned: refused as expired, on record, re-derived by verify', async () => {
  const home = newHome();
  const file = join(work, 'count-expired');
  counter('expired', home, file);
  await until('the job to count', () => existsSync(file) && count(file) > 2);
  assert.is(ckpt(['agent', 'stop'], home).code, 0);
  // What an agent's gateway records for a client, recorded while no agent runs to plan it (they
  // were all down, or the one that recorded it died right after): its 0.5 s pass before any starts.
  const request = randomUUID();
  const store = openEventStore(`sqlite:${join(home, 'events.db')}`);
  try {
    await store.append('job-expired', [
      { type: 'CheckpointRequested', data: { request, stop: false, timeoutMs: 500 }, metadata: { actor: { kind: 'user', uid: 0, gid: 0, user: 'root' }, correlationId: request } },
    ]);
  } finally {
    await store.close();
  }
  const recordedAt = Date.parse(history('expired', home).find((e) => e.type === 'CheckpointRequested')!.metadata.recordedAt as string);
  await until('the request’s deadline to pass', () => Date.now() > recordedAt + 800);
  assert.is(ckpt(['agent', 'start'], home).code, 0);
  const rejected = await until('the refusal', () => history('expired', home).find((e) => e.type === 'RequestRejected' && e.data.request === request));
  assert.is(rejected.data.code, 'expired');
  assert.match(String(rejected.data.reason), /its deadline \S+ passed before it could be planned/);
  const types = history('expired', home).map((e) => e.type);
  assert.ok(types.includes('RequestExpired'), 'the clock’s reading is on record');
  for (const never of ['CheckpointPlanned', 'UnitFreezeRequested', 'UnitFrozen', 'DeadlineScheduled']) assert.not.ok(types.includes(never), `${never}: ${types.join(' ')}`);
  const verify = ckpt(['verify', 'expired'], home);
  assert.is(verify.code, 0, verify.err + verify.out);
  await countsOn('the job to count', file);
  // A request in time is still planned and committed after that.
  const again = ckpt(['checkpoint', 'expired', '--wait', '--timeout', '30s'], home);
  assert.is(again.code, 0, again.err);
  killMembers(ps('expired', home));
  ckpt(['agent', 'stop'], home);
});

test('a full images disk: aborted with class space, the job thawed and counting, no partial images, the agent alive', async () => {
  const home = newHome();
  const file = join(work, 'count-full');
  counter('full', home, file, {}, 8);
  await until('the job to count', () => existsSync(file) && count(file) > 2);
  const images = imagesRoot(home);
  mkdirSync(images, { recursive: true });
  assert.is(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'ckpt-test-full', images]).status, 0, 'mount a 1 MiB tmpfs');
  mounts.push({ dir: images, home });
  const r = ckpt(['checkpoint', 'full', '--wait', '--json'], home);
  const report = JSON.parse(r.out) as Report;
  assert.equal([r.code, report.outcome, report.failure?.class], [1, 'aborted', 'space'], r.out);
  assert.match(report.failure!.message, /No space left on device/);
  assert.not.ok(existsSync(versionDir(images, 'full', 1)), 'partial images are gone');
  assert.is(freezerState(rootOf('full', home)!), 'THAWED');
  await countsOn('the job to count', file);
  assert.is(ckpt(['agent', 'status'], home).code, 0, 'the agent is alive');
  killMembers(ps('full', home));
  ckpt(['agent', 'stop'], home);
  assert.is(spawnSync('umount', [images]).status, 0);
  mounts.pop();
});

test('$CKPT_HOME on a full disk (the log too): aborted with class space, the job thawed, no partial images, the agent alive', async () => {
  const home = join(work, 'small-home');
  mkdirSync(home);
  assert.is(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=6m,mode=0700', 'ckpt-test-home', home]).status, 0, 'mount a 6 MiB tmpfs');
  mounts.push({ dir: home, home });
  const file = join(work, 'count-home');
  counter('home', home, file, {}, 16);
  await until('the job to count', () => existsSync(file) && count(file) > 2);
  const r = ckpt(['checkpoint', 'home', '--wait', '--json', '--timeout', '20s'], home);
  const report = JSON.parse(r.out) as Report;
  assert.equal([r.code, report.outcome, report.failure?.class], [1, 'aborted', 'space'], `${r.out}\n${r.err}`);
  assert.not.ok(existsSync(versionDir(imagesRoot(home), 'home', 1)), 'partial images are gone');
  assert.is(freezerState(rootOf('home', home)!), 'THAWED');
  await countsOn('the job to count', file);
  assert.is(ckpt(['agent', 'status'], home).code, 0, 'the agent is alive');
  killMembers(ps('home', home));
  ckpt(['agent', 'stop'], home);
  assert.is(spawnSync('umount', [home]).status, 0);
  mounts.pop();
});

test('the guard alone: disarmed it leaves the unit as it is; told of a --stop it kills the unit when the agent goes; it refuses files that are not cgroup controls', async () => {
  const dirs = [join('/sys/fs/cgroup/freezer', `ckpt-guard-test-${process.pid}`), join('/sys/fs/cgroup/unified', `ckpt-guard-test-${process.pid}`)].filter((d) => existsSync(dirname(d)));
  for (const d of dirs) mkdirSync(d);
  const cgroups: UnitCgroup[] = dirs.map((d) => ({ controller: d.includes('/freezer/') ? 'freezer' : 'unified', path: d }));
  const sleeper = spawn('sleep', ['1000'], { stdio: 'ignore' });
  try {
    for (const d of dirs) writeFileSync(join(d, 'cgroup.procs'), String(sleeper.pid));
    const frozen = () => readFileSync(join(dirs[0]!, 'freezer.state'), 'utf8').trim();
    const guarded = (say: string) => {
      writeFileSync(join(dirs[0]!, 'freezer.state'), 'FROZEN');
      const g = spawn(freezeGuardPath, [String(Date.now() + 60_000), ...guardFiles(cgroups)], { stdio: ['pipe', 'pipe', 'pipe'] });
      g.stdin.end(say);
      return new Promise<number | null>((resolve) => g.on('exit', resolve));
    };
    assert.is(await guarded('d'), 0);
    assert.is(frozen(), 'FROZEN', 'disarmed: the unit stays as the agent left it');
    assert.is(await guarded(''), 0);
    assert.is(frozen(), 'THAWED', 'the agent gone: thawed');
    assert.ok(readStat(sleeper.pid!) && readStat(sleeper.pid!)!.state !== 'Z');
    assert.is(await guarded('k'), 0);
    await until('the stopped unit to be killed', () => sleeper.exitCode !== null || sleeper.signalCode !== null);
    assert.is(sleeper.signalCode, 'SIGKILL');
    const planted = join(work, 'freezer.state');
    writeFileSync(planted, '');
    const refused = spawnSync(freezeGuardPath, [String(Date.now() + 1000), planted], { encoding: 'utf8' });
    assert.equal([refused.status, /is not on a cgroup filesystem/.test(refused.stderr)], [1, true], refused.stderr);
  } finally {
    if (sleeper.exitCode === null && sleeper.signalCode === null) sigkill(sleeper.pid!);
    await until('the sleeper to be gone', () => sleeper.exitCode !== null || sleeper.signalCode !== null);
    for (const d of dirs.reverse()) rmdirSync(d);
  }
});

test('one agent per node and store: a second `agent run` exits at once, naming the first', () => {
  const file = join(work, 'count-lock');
  counter('lock', h.home, file);
  const first = agentPid(h.home);
  const second = ckpt(['agent', 'run'], h.home);
  assert.is(second.code, 1, second.err);
  assert.match(second.err, new RegExp(`a node agent for ${NODE} is already running \\(pid ${first}\\)`));
  assert.is(agentPid(h.home), first);
  // A start that cannot succeed (a store it cannot open) ends its process with the reason.
  const notADir = join(work, 'not-a-dir');
  writeFileSync(notADir, '');
  const bad = ckpt(['agent', 'run', '--node', 'fsother', '--store', `sqlite:${join(notADir, 'events.db')}`], h.home);
  assert.is(bad.code, 1, bad.err);
  assert.match(bad.err, /could not start: the event store cannot be opened/);
  killMembers(ps('lock'));
});

test('a bad option value records nothing: run, checkpoint, restart, prune', () => {
  const before = history('lock').length;
  const bad = [
    ['checkpoint', 'lock', '--timeout', 'soon'],
    ['checkpoint', 'lock', '--freeze-budget', '-1'],
    ['checkpoint', 'lock', '--node', 'Bad/Node'],
    ['restart', 'lock', '--timeout', 'x'],
    ['restart', 'lock', '--version', 'one'],
    ['restart', 'lock', '--place', 'main'],
    ['prune', 'lock', '--keep', '0'],
  ];
  for (const args of bad) {
    const r = ckpt(args);
    assert.is(r.code, 2, `${args.join(' ')}: ${r.err}`);
  }
  assert.is(history('lock').length, before);
  for (const args of [
    ['--memory', 'lots'],
    ['--pids', '0'],
    ['--unit', 'No/Unit'],
  ]) {
    const r = ckpt(['run', '--detach', '--job', 'badopt', ...args, '--', 'sleep', '1']);
    assert.is(r.code, 2, `run ${args.join(' ')}: ${r.err}`);
  }
  assert.is(history('badopt').length, 0, 'no job recorded');
  // the harness's own tidy-up: no member left behind
  for (const m of ps('lock')) if (m.state === 'running' && readStat(m.pid)?.startTime === m.startTime) sigkill(m.pid);
});

test.run();
