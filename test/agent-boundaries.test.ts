// The agent acts only on what it created, even if the log lies: events appended directly to the
// store (as anyone with write access to it could) that point the root agent at a root process
// outside the job, at cgroups outside its prefix, or plant links where it writes and removes.
// A real agent, real cgroups, real CRIU; nothing outside is frozen, dumped, killed, moved or removed,
// and each refusal is on record.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { addProcess, createUnitCgroups, detectCgroups, killUnit, removeUnitCgroups, unitFreezeState, unitProcesses } from '../adapters/cgroups/unit-cgroups.js';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { openEventStore } from '../adapters/store/open.js';
import { readStat } from '../adapters/tracking/procfs.js';
import type { ProposedEvent } from '../domain/event-store.js';
import type { UnitCgroup } from '../domain/events/job.js';
import { CLI, jobHarness, killMembers, sigkill } from './support/jobs.js';
import { firstMissing, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until as wait } from './support/wait.js';

const until = <T>(what: string, probe: () => T | undefined | false, ms = 30_000) => wait(what, probe, ms, 50);
const criu = locateCriu();
const missing = firstMissing(needRoot, () => (criu ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)'));
const test = suiteRequiring('agent boundaries (a lying log, planted links, an unsafe home)', missing);

const NODE = 'bnode';
const { work, h, ckpt, ps, history, cleanup, newHome } = jobHarness('ckpt-bounds', NODE);

/** A root-owned `sleep` in cgroups of its own, outside ckpt's prefix: what the forged events point at. */
const layout = detectCgroups();
let victim: { pid: number; startTime: number; cgroups: UnitCgroup[] };
test.before(() => {
  const child = spawn('sleep', ['1000'], { stdio: 'ignore', detached: true });
  child.unref();
  const cgroups = createUnitCgroups(layout, `ckpt-bounds-victim-${child.pid}`, {});
  addProcess(cgroups, child.pid!);
  victim = { pid: child.pid!, startTime: readStat(child.pid!)!.startTime, cgroups };
  assert.is(ckpt(['agent', 'start']).code, 0);
});
test.after(async () => {
  if (victim) {
    await killUnit(victim.cgroups).catch(() => undefined);
    removeUnitCgroups(victim.cgroups);
  }
  cleanup();
});

/** The victim is untouched: alive as itself, thawed, still in (only) its own cgroups, which exist. */
const victimUntouched = (when: string) => {
  assert.is(readStat(victim.pid)?.startTime, victim.startTime, `${when}: the victim is alive`);
  assert.ok(!['T', 't', 'Z'].includes(readStat(victim.pid)!.state), `${when}: the victim is not stopped`);
  assert.ok(
    victim.cgroups.every((c) => existsSync(c.path)),
    `${when}: the victim's cgroups were not removed`,
  );
  assert.equal(unitProcesses(victim.cgroups), [victim.pid], `${when}: the victim was not moved`);
  assert.is(unitFreezeState(victim.cgroups), 'thawed', `${when}: the victim was never left frozen`);
};

/** Appends as root straight to the store: a log someone could write without the agent. */
const forge = async (stream: string, events: ReadonlyArray<{ type: string; data: object }>) => {
  const store = openEventStore(`sqlite:${join(h.home, 'events.db')}`);
  try {
    await store.append(stream, events as unknown as ProposedEvent[]); // forged: whatever the catalogue lets through
  } finally {
    await store.close();
  }
};

const victimStat = () => readStat(victim.pid)!;
const launched = (unit: string) => ({
  type: 'UnitLaunched',
  data: { unit, node: NODE, root: { pid: victim.pid, startTime: victim.startTime }, pgid: victimStat().pgid, sid: victimStat().sid, comm: 'sleep', cgroup: '/elsewhere' },
});
const submitted = (job: string) => [
  { type: 'JobSubmitted', data: { job, owner: { uid: 0 } } },
  { type: 'UnitAssigned', data: { unit: 'main', node: NODE, command: ['sleep', '1'], cwd: '/', limits: {} } },
];
const types = (job: string) => history(job).map((e) => e.type);

test('a forged UnitCgroupsCreated naming cgroups outside the prefix, with a root process as the unit’s root: refused on record', async () => {
  await forge('job-forged1', [...submitted('forged1'), { type: 'UnitCgroupsCreated', data: { unit: 'main', node: NODE, cgroups: victim.cgroups, limits: {} } }, launched('main')]);
  const failed = await until('the refusal', () => history('forged1').find((e) => e.type === 'UnitLaunchFailed'));
  assert.match(String(failed.data.reason), /^refused: the log names cgroups? .*ckpt-bounds-victim-.* which this agent did not create/);
  await new Promise((r) => setTimeout(r, 500)); // anything the agent would wrongly do, it does at once
  assert.not.ok(types('forged1').includes('UnitTracked'), 'the victim is never tracked as the root');
  assert.not.ok(
    history('forged1').some((e) => e.type.startsWith('Process') && JSON.stringify(e.data).includes(`"pid":${victim.pid},`)),
    'nor observed as a member',
  );
  victimUntouched('after the forged launch');
});

test('a forged UnitLaunched naming a root process outside the unit’s cgroups: refused on record, not tracked', async () => {
  await forge('job-forged2', [...submitted('forged2'), launched('main')]);
  const failed = await until('the refusal', () => history('forged2').find((e) => e.type === 'UnitLaunchFailed'));
  assert.match(String(failed.data.reason), new RegExp(`^refused: process ${victim.pid} \\(sleep\\) named as the root of unit main is not in the cgroups this agent created`));
  await new Promise((r) => setTimeout(r, 500));
  assert.not.ok(types('forged2').includes('UnitTracked'));
  victimUntouched('after the forged launch');
});

test('a running job whose cgroups the log redirects to a foreign cgroup: the checkpoint is refused (permission), nothing frozen, dumped or removed', async () => {
  assert.is(ckpt(['run', '--detach', '--job', 'real', '--', 'sleep', '1001']).code, 0);
  await until('the job running', () => ps('real').some((m) => m.comm === 'sleep' && m.state === 'running'));
  await forge('job-real', [{ type: 'UnitCgroupsCreated', data: { unit: 'main', node: NODE, cgroups: victim.cgroups, limits: {} } }]);
  const r = ckpt(['checkpoint', 'real', '--wait', '--json']);
  assert.is.not(r.code, 0, 'the checkpoint does not commit');
  const refused = history('real').find((e) => e.type === 'UnitFreezeFailed');
  assert.ok(refused, `a freeze failure is recorded: ${types('real').join(' ')}`);
  const failure = refused!.data.failure as { class: string; message: string };
  assert.is(failure.class, 'permission');
  assert.match(failure.message, /^refused: the log names cgroups? .*ckpt-bounds-victim-/);
  assert.not.ok(existsSync(join(h.home, 'images', 'real', 'v1', 'main', 'pstree.img')), 'nothing was dumped');
  victimUntouched('after the refused checkpoint');
  // The job ends: the agent removes the unit's cgroups — its own only, never the ones the log names.
  killMembers(ps('real'));
  await until('the unit to end', () => types('real').includes('UnitEnded'));
  await new Promise((r) => setTimeout(r, 300));
  victimUntouched('after the unit ended');
});

test('after an agent restart, a member the log claims that lives outside the unit’s cgroups is not adopted', async () => {
  assert.is(ckpt(['run', '--detach', '--job', 'adopt', '--', 'sleep', '1003']).code, 0);
  await until('the job running', () => ps('adopt').some((m) => m.comm === 'sleep' && m.state === 'running'));
  const outsider = spawn('sleep', ['1004'], { stdio: 'ignore', detached: true });
  const startTime = readStat(outsider.pid!)!.startTime;
  await forge('job-adopt', [
    {
      type: 'ProcessObserved',
      data: { node: NODE, unit: 'main', process: { pid: outsider.pid!, startTime }, ppid: 1, pgid: outsider.pid!, sid: outsider.pid!, comm: 'sleep', source: 'scan' },
    },
  ]);
  assert.is(ckpt(['agent', 'stop']).code, 0);
  assert.is(ckpt(['agent', 'start']).code, 0);
  // Tracked, its exit would be recorded (ProcessExited, or ProcessVanished after the 2 s grace).
  sigkill(outsider.pid!);
  await new Promise((r) => setTimeout(r, 3000));
  const about = history('adopt').filter((e) => e.type.startsWith('Process') && JSON.stringify(e.data).includes(`"pid":${outsider.pid},`));
  assert.equal(
    about.map((e) => e.type),
    ['ProcessObserved'],
    'only the forged observation: the agent never tracked it',
  );
  assert.ok(
    ps('adopt').some((m) => m.comm === 'sleep' && m.pid !== outsider.pid && m.state === 'running'),
    'the real member is tracked as before',
  );
  killMembers(ps('adopt').filter((m) => m.pid !== outsider.pid));
});

test('a version directory planted as a link: the failed checkpoint’s abort removes the link, nothing it points to', async () => {
  const elsewhere = join(work, 'root-owned');
  mkdirSync(join(elsewhere, 'main'), { recursive: true });
  writeFileSync(join(elsewhere, 'main', 'precious'), 'keep me');
  assert.is(ckpt(['run', '--detach', '--job', 'links', '--', 'sleep', '1002']).code, 0);
  await until('the job running', () => ps('links').some((m) => m.comm === 'sleep' && m.state === 'running'));
  mkdirSync(join(h.home, 'images', 'links'), { recursive: true, mode: 0o700 });
  const v1 = join(h.home, 'images', 'links', 'v1');
  symlinkSync(elsewhere, v1);
  const r = ckpt(['checkpoint', 'links', '--wait', '--json']);
  assert.is.not(r.code, 0, 'no version is committed through a link');
  assert.ok(types('links').includes('UnitAborted') || types('links').includes('UnitAbortFailed'), types('links').join(' '));
  assert.is(readFileSync(join(elsewhere, 'main', 'precious'), 'utf8'), 'keep me', 'nothing behind the link was removed');
  assert.equal(readdirSync(join(elsewhere, 'main')), ['precious'], 'nor written');
  assert.not.ok(existsSync(v1) || lstatExists(v1), 'the planted link itself is gone');
  assert.ok(
    ps('links').some((m) => m.comm === 'sleep' && m.state === 'running'),
    'the job runs on',
  );

  // A clean checkpoint next (v2), then a restart whose work directory was planted as a link.
  const ok = ckpt(['checkpoint', 'links', '--wait', '--json']);
  assert.is(ok.code, 0, ok.err);
  killMembers(ps('links'));
  await until('the job to end', () => types('links').includes('JobEnded'));
  const restarts = join(h.home, 'restarts');
  mkdirSync(restarts, { recursive: true, mode: 0o700 });
  const target = join(work, 'restart-target');
  mkdirSync(target);
  symlinkSync(target, join(restarts, 'links'));
  const restart = ckpt(['restart', 'links', '--wait', '--json']);
  assert.is.not(restart.code, 0, 'no restart through a planted link');
  assert.match(restart.out + restart.err, /restarts\/links is a symbolic link where ckpt keeps a directory of its own/);
  assert.equal(readdirSync(target), [], 'nothing was written behind the link');
  unlinkSync(join(restarts, 'links'));
});

const lstatExists = (path: string) => {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
};

test('what the agent creates under CKPT_HOME is private: directories 0700, files 0600, owned by root', () => {
  const loose: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      const s = lstatSync(path);
      if (s.uid !== 0 || s.isSymbolicLink()) loose.push(`${path} uid ${s.uid}${s.isSymbolicLink() ? ' (link)' : ''}`);
      else if (s.isDirectory()) {
        if ((s.mode & 0o777) !== 0o700) loose.push(`${path} ${(s.mode & 0o777).toString(8)}`);
        walk(path);
      } else if ((s.mode & 0o777) !== 0o600) loose.push(`${path} ${(s.mode & 0o777).toString(8)}`);
    }
  };
  for (const dir of ['agent', 'images', 'restarts']) if (existsSync(join(h.home, dir))) walk(join(h.home, dir));
  assert.equal(loose, []);
});

/** `ckpt agent run` in the foreground: it refuses at once, or it would run until stopped. */
const agentRun = (home: string) => {
  const r = spawnSync(process.execPath, [CLI, 'agent', 'run', '--node', 'unsafe'], { env: { ...process.env, CKPT_HOME: home, CKPT_STORE: '' }, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, err: r.stderr };
};

test('a home others can write: the agent refuses to start, naming the path and the fix', () => {
  const home = newHome();
  mkdirSync(join(home, 'images'), { mode: 0o700 });
  chmodSync(join(home, 'images'), 0o770);
  let r = agentRun(home);
  assert.is(r.code, 1);
  assert.match(r.err, new RegExp(`refuses to start: .*${join(home, 'images')} is group-writable \\(mode 0770\\): run chmod go-w ${join(home, 'images')}`));

  chmodSync(join(home, 'images'), 0o700);
  symlinkSync('/', join(home, 'images', 'job'));
  r = agentRun(home);
  assert.is(r.code, 1);
  assert.match(r.err, new RegExp(`${join(home, 'images', 'job')} is a symbolic link inside CKPT_HOME`));

  const open = join(work, 'shared');
  mkdirSync(open, { mode: 0o755 });
  chmodSync(open, 0o777);
  r = agentRun(join(open, 'home'));
  assert.is(r.code, 1);
  assert.match(r.err, new RegExp(`${open} is group- and other-writable \\(mode 0777\\): run chmod go-w ${open}`));
  assert.not.ok(existsSync(join(open, 'home')), 'nothing was created in it');
});

test.run();
