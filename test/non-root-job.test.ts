// A user's own job, end to end through the node agent (root) and real CRIU: a throwaway user with
// supplementary groups runs a job, checkpoints it twice, prunes the older version, and restarts it
// after a kill -9 — every request from the CLI run as that user. The job runs as them (all four
// uids, their groups) before and after the restart, `ckpt ps` says so, and the images the agent
// keeps are root's: the user cannot alter what root restores.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { candidatesOnPath, locateCriu } from '../adapters/checkpointers/criu.js';
import { CLI, jobHarness, killMembers, type PsRow, type Result } from './support/jobs.js';
import { firstMissing, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until as wait } from './support/wait.js';

const until = <T>(what: string, probe: () => T | undefined | false, ms = 30_000) => wait(what, probe, ms, 50);
const missing = firstMissing(
  needRoot,
  () => (locateCriu() ? undefined : 'no CRIU ≥ 4.2 (run: bash scripts/install-criu.sh)'),
  () =>
    ['useradd', 'userdel', 'groupadd', 'groupdel', 'runuser']
      .map((t) => (candidatesOnPath(t, process.env).length === 0 ? `needs ${t} (apt-get install -y passwd util-linux)` : undefined))
      .find(Boolean),
);
const test = suiteRequiring('a non-root user’s own job: run, checkpoint, prune, restart (real agent, real CRIU)', missing);

const NODE = 'usernode';
const { work, h, ckpt, ps, cleanup } = jobHarness('ckpt-user-job', NODE);
const tag = randomBytes(3).toString('hex');
const user = `ckpt-u-${tag}`;
const groups = [`ckpt-ug1-${tag}`, `ckpt-ug2-${tag}`];
const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
const idOf = (flagged: string) => Number(execFileSync('id', [flagged, user], { encoding: 'utf8' }).trim());
const gidOf = (group: string) => Number(execFileSync('getent', ['group', group], { encoding: 'utf8' }).split(':')[2]);
const own = join(work, 'own');
const counterFile = join(own, 'count');

test.before(() => {
  for (const g of groups) run('groupadd', [g]);
  run('useradd', ['--no-create-home', '--shell', '/usr/sbin/nologin', '--user-group', '--groups', groups.join(','), user]);
  // The user reaches a directory of their own; root's CKPT_HOME (the store, the images) stays 0700.
  chmodSync(work, 0o711);
  mkdirSync(own, { mode: 0o700 });
  chownSync(own, idOf('-u'), idOf('-g'));
  const started = ckpt(['agent', 'start']);
  assert.is(started.code, 0, started.err);
});
test.after(() => {
  try {
    killMembers(ps('mine').filter((m) => m.state === 'running'));
  } catch {
    // never started
  }
  cleanup([NODE]);
  for (const [cmd, name] of [['userdel', user], ...groups.map((g) => ['groupdel', g])] as const) {
    try {
      run(cmd, [name]);
    } catch {
      // was not made
    }
  }
});

/** The CLI as the user, on root's store (the user cannot open it: the agent reads for them); their own CKPT_HOME keeps their jobs' output. */
const asUser = (args: string[]): Result => {
  const r = spawnSync('runuser', ['-u', user, '--', process.execPath, CLI, ...args], {
    cwd: own,
    env: { ...process.env, CKPT_HOME: join(own, '.ckpt'), CKPT_NODE: NODE, CKPT_STORE: `sqlite:${join(h.home, 'events.db')}` },
    encoding: 'utf8',
    timeout: 90_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
};
const psAsUser = (): Array<PsRow & { user?: string | null; uid?: number | null }> => {
  const r = asUser(['ps', 'mine', '--json']);
  assert.is(r.code, 0, r.err);
  return JSON.parse(r.out);
};
const counter = () => (existsSync(counterFile) ? Number(readFileSync(counterFile, 'utf8').trim() || 0) : 0);
const status = (pid: number) => readFileSync(`/proc/${pid}/status`, 'utf8');
const field = (pid: number, name: string) => new RegExp(`^${name}:\\s+(.*)$`, 'm').exec(status(pid))![1]!.trim().split(/\s+/).filter(Boolean).map(Number);

/** Every running member is the user's: all four uids and gids, with both supplementary groups. */
const runsAsUser = (when: string) => {
  const rows = psAsUser().filter((m) => m.state === 'running');
  const [uid, gid] = [idOf('-u'), idOf('-g')];
  // The loop's short-lived children (printf, sleep 0.1) may end between ps and the check.
  const argv = (pid: number) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      return [];
    }
  };
  const checked = rows.filter((m) => ['sh', 'sleep 1000'].includes(m.comm === 'sleep' ? argv(m.pid).slice(0, 2).join(' ') : m.comm));
  assert.ok(checked.length >= 2, `${when}: the job runs (${rows.map((m) => m.comm).join(', ')})`);
  for (const m of checked) {
    assert.is(m.user, user, `${when}: ckpt ps names ${m.pid} (${m.comm}) as the user's`);
    assert.equal(field(m.pid, 'Uid'), [uid, uid, uid, uid], `${when}: ${m.pid} runs as uid ${uid}`);
    assert.equal(field(m.pid, 'Gid'), [gid, gid, gid, gid], `${when}: ${m.pid} runs as gid ${gid}`);
    for (const g of groups) assert.ok(field(m.pid, 'Groups').includes(gidOf(g)), `${when}: ${m.pid} keeps the group ${g}`);
  }
  return rows;
};

test('the user runs, checkpoints, prunes and restarts a job of their own; it runs as them throughout', async () => {
  // The counter overwrites fixed-width digits in place: its file's size never changes (CRIU checks it).
  const r = asUser(['run', '--detach', '--job', 'mine', '--', 'sh', '-c', `sleep 1000 & i=0; while :; do i=$((i+1)); printf '%08d\\n' $i 1<> ${counterFile}; sleep 0.1; done`]);
  assert.is(r.code, 0, r.err);
  await until('the job to count', () => counter() > 3);
  runsAsUser('launched');

  for (const version of [1, 2]) {
    const c = asUser(['checkpoint', 'mine', '--wait', '--json']);
    assert.is(c.code, 0, `checkpoint v${version}: ${c.err} ${c.out}`);
    assert.is(JSON.parse(c.out).version, version);
  }
  const images = join(h.home, 'images', 'mine', 'v2', 'main');
  for (const f of readdirSync(images)) {
    const s = statSync(join(images, f));
    assert.is(s.uid, 0, `${f} is root's`);
    assert.is(s.mode & 0o077, 0, `${f} is private to root`);
  }

  const pruned = asUser(['prune', 'mine', '--keep', '1', '--json']);
  assert.is(pruned.code, 0, pruned.err);
  assert.equal(
    (JSON.parse(pruned.out) as { pruned: Array<{ version: number }> }).pruned.map((p) => p.version),
    [1],
  );
  assert.not.ok(existsSync(join(h.home, 'images', 'mine', 'v1', 'main')), 'v1’s images are gone');

  const atKill = counter();
  killMembers(runsAsUser('checkpointed'));
  const restarted = asUser(['restart', 'mine', '--wait', '--json']);
  assert.is(restarted.code, 0, `${restarted.err} ${restarted.out}`);
  assert.is(JSON.parse(restarted.out).outcome, 'restored');
  assert.is(JSON.parse(restarted.out).version, 2);
  const resumed = await until('the counter to go on after the restart', () => counter() !== atKill && counter());
  assert.ok(resumed < atKill + 20, `resumed from v2's count, not a fresh start (${resumed}, killed at ${atKill})`);
  runsAsUser('restored');

  const audit = asUser(['audit', 'mine', '--json']);
  assert.is(audit.code, 0, audit.err);
  const entries = (JSON.parse(audit.out) as Array<{ entries: Array<{ kind: string; outcome: string; by?: string }> }>)[0]!.entries;
  assert.equal(
    entries.map((e) => `${e.kind} ${e.outcome}`),
    ['checkpoint committed', 'checkpoint committed', 'prune pruned', 'restart restored'],
  );
});

test.run();
