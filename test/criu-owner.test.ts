// Jobs of other users through CriuCheckpointer, against real CRIU, real cgroups and real users:
// a unit of `nobody` and of a throwaway user (made with useradd, with supplementary groups, and
// removed afterwards) is frozen, dumped, stopped and restored with criu acting as that user; the
// restored processes have the uids, gids and groups they had. Root's units are dumped by root criu,
// as before. Needs root, CRIU ≥ 4.1, the built bridge, a cgroup freezer, useradd and setpriv.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { canFreeze, createUnitCgroups, detectCgroups, killUnit, removeUnitCgroups } from '../adapters/cgroups/unit-cgroups.js';
import { candidatesOnPath, locateCriu } from '../adapters/checkpointers/criu.js';
import { CriuCheckpointer } from '../adapters/checkpointers/criu-checkpointer.js';
import { readDumpedCredentials } from '../adapters/checkpointers/criu-images.js';
import { swrkBridgePath } from '../adapters/checkpointers/criu-rpc.js';
import { unitImagesDir } from '../adapters/images/image-store.js';
import { waitPidsGone } from '../adapters/tracking/pids.js';
import { type ProcCredentials, readCredentials, readStat } from '../adapters/tracking/procfs.js';
import { RELEASE, type UnitOwner, type UnitTarget } from '../domain/checkpointer.js';
import type { UnitCgroup } from '../domain/events/job.js';
import { children, counterScript, killAll, readCounter, startJob } from './support/criu-jobs.js';
import { firstMissing, type Missing, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until as waitFor } from './support/wait.js';

const needCriu = (): Missing => (locateCriu() === undefined ? 'needs CRIU ≥ 4.1 (install: bash scripts/install-criu.sh)' : undefined);
const needBridge = (): Missing => (existsSync(swrkBridgePath) ? undefined : `needs ${swrkBridgePath} (build it: npm run build, with gcc installed)`);
const needTools = (): Missing => ['useradd', 'userdel', 'groupadd', 'groupdel', 'setpriv'].map((t) => (candidatesOnPath(t, process.env).length === 0 ? `needs ${t}` : undefined)).find(Boolean);
const needFreezer = (): Missing => (canFreeze(detectCgroups()) ? undefined : 'needs a cgroup freezer (v1 freezer or cgroup2 cgroup.freeze)');

const suite = suiteRequiring('criu: jobs of other users', firstMissing(needRoot, needCriu, needBridge, needTools, needFreezer));
// uvu 0.5 cannot print an error whose `details` is not a string (a CriuError's): it then drops every
// failure of the suite without a word. Such an error fails its test as a plain Error with its message.
const test = Object.assign(
  (name: string, body: () => Promise<void>) =>
    suite(name, () =>
      body().catch((e: unknown) => {
        throw e instanceof Error && typeof (e as { details?: unknown }).details === 'object' ? new Error(e.message) : e;
      }),
    ),
  suite,
);

const tag = randomBytes(3).toString('hex');
const user = `ckpt-own-${tag}`;
const groups = [`ckpt-og1-${tag}`, `ckpt-og2-${tag}`];
let work = '';
let imagesRoot = '';
const criu = (): string => locateCriu() ?? '';
const NO_OPTIONS = { tcpEstablished: false, fileLocks: false };
const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });

// uvu drops an error thrown by a before hook without a word: say it, and fail every test.
let setupError: unknown;
test.before(() => {
  try {
    work = mkdtempSync(join(tmpdir(), 'ckpt-owner-test-'));
    chmodSync(work, 0o711); // the job's own directory is inside; the images are not (0700)
    imagesRoot = join(work, 'images');
    for (const g of groups) run('groupadd', [g]);
    run('useradd', ['--no-create-home', '--shell', '/usr/sbin/nologin', '--user-group', '--groups', groups.join(','), user]);
  } catch (error) {
    setupError = error;
  }
});
test.before.each(() => {
  if (setupError) throw setupError;
});

test.after(() => {
  try {
    run('userdel', [user]);
  } catch {
    /* was not made */
  }
  for (const g of groups) {
    try {
      run('groupdel', [g]);
    } catch {
      /* was not made */
    }
  }
  if (work !== '') rmSync(work, { recursive: true, force: true });
});

interface Who {
  readonly uid: number;
  readonly gid: number;
  readonly groups: number[];
}
const idOf = (name: string): Who => {
  const out = (flag: string) => run('id', [flag, name]).toString().trim();
  return {
    uid: Number(out('-u')),
    gid: Number(out('-g')),
    groups: out('-G')
      .split(' ')
      .map(Number)
      .sort((a, b) => a - b),
  };
};

/** A unit in fresh cgroups: a counting shell (it forks a sleep every 50 ms) that runs as `who`. */
const startUnit = (name: string, who: Who | undefined, wrapper = '', becomeOwner?: string) => {
  const cgroups = createUnitCgroups(detectCgroups(), `ckpt-test/owner-${tag}-${name}/unit`, {});
  const dir = join(work, name);
  mkdirSync(dir, { mode: 0o700 });
  if (who) chownSync(dir, who.uid, who.gid);
  const file = join(dir, 'count');
  // Root enters the cgroups, then setpriv becomes the user (uids, gids, groups) and execs the job.
  // "0": the writer itself. With a wrapper (unshare) only what it starts enters, not the wrapper.
  const enter = [...new Set(cgroups.map((c) => c.path))].map((p) => `echo 0 > ${p}/cgroup.procs`).join('; ');
  const as = becomeOwner ?? (who ? `setpriv --reuid=${who.uid} --regid=${who.gid} --groups=${who.groups.join(',')} ` : '');
  const job = `${as}/bin/sh -c '${counterScript(file)}'`;
  // In its own directory: CRIU's parasite makes a directory in the working directory (see below).
  const pid = startJob(wrapper === '' ? `${enter}; cd ${dir}; exec ${job}` : `cd ${dir}; exec ${wrapper}/bin/sh -c '${enter}; exec "$@"' ckpt-enter ${job}`);
  return { cgroups, file, pid };
};

const target = (name: string, cgroups: UnitCgroup[], pid: number, version: number, owner?: UnitOwner): UnitTarget => {
  const stat = readStat(pid);
  if (!stat) throw new Error(`the job ${pid} is gone`);
  return {
    job: `owner-${name}`,
    unit: 'u0',
    version,
    scope: 'cgroup',
    root: { pid, startTime: stat.startTime },
    cgroups,
    imagesDir: unitImagesDir(imagesRoot, `owner-${name}`, version, 'u0'),
    options: NO_OPTIONS,
    stop: true,
    ...(owner && { owner }),
  };
};

const credentials = (pid: number): ProcCredentials => {
  const c = readCredentials(pid);
  if (!c) throw new Error(`process ${pid} is gone`);
  return c;
};

const removeUnit = async (cgroups: UnitCgroup[]) => {
  await killUnit(cgroups).catch(() => undefined);
  removeUnitCgroups(cgroups, { emptyParents: 2 });
};

/** Freeze, dump, stop; then restore (in a new PID namespace or not) once the images are released. */
const checkpointAndRestore = async (name: string, who: Who | undefined, owner: UnitOwner | undefined, pidNamespace: boolean) => {
  const checkpointer = new CriuCheckpointer(criu(), imagesRoot);
  const { cgroups, file, pid } = startUnit(name, who);
  let restored: number | undefined;
  try {
    await waitFor('the job to count', () => ((readCounter(file) ?? 0) > 2 ? true : undefined));
    const before = credentials(pid);
    const u = target(name, cgroups, pid, 1, owner);
    await checkpointer.freeze(u);
    const dump = await checkpointer.dump(u);
    assert.ok(dump.files > 0);
    const dumped = readCounter(file) ?? 0;
    await checkpointer.stop(u);
    await waitPidsGone(await checkpointer.captured(u), 10_000);
    await checkpointer.thaw(u); // a killed cgroup2 unit stays frozen: what criu restores there must run

    // The owner must not be able to change what root restores: every file root's, 0600.
    for (const f of readdirSync(u.imagesDir)) {
      const st = statSync(join(u.imagesDir, f));
      assert.ok(st.uid === 0 && st.gid === 0, `${f} is root's (uid ${st.uid}, gid ${st.gid})`);
      if (who) assert.is(st.mode & 0o077, 0, `${f} is readable by root only (mode ${(st.mode & 0o777).toString(8)})`);
    }
    assert.is(statSync(u.imagesDir).mode & 0o077, 0, 'the images directory is 0700');
    const log = readFileSync(join(u.imagesDir, 'dump.log'), 'utf8');
    assert.not.match(log, /Can't get rlimit/);

    const workDir = join(work, `${name}-restore`);
    mkdirSync(workDir, { mode: 0o700 });
    const restoring = checkpointer.restore({ imagesDir: u.imagesDir, pidNamespace, cgroups, workDir, options: NO_OPTIONS, ...(owner && { owner }) });
    writeFileSync(join(workDir, RELEASE), '');
    const result = await restoring;
    restored = result.rootPid;
    await waitFor('the restored job to count on', () => ((readCounter(file) ?? 0) > dumped ? true : undefined));
    const after = credentials(result.rootPid);
    assert.equal(after.uids, before.uids, 'uids (real, effective, saved, fs) as before');
    assert.equal(after.gids, before.gids, 'gids as before');
    assert.equal(after.groups, before.groups, 'supplementary groups as before');
    if (who) {
      assert.equal(after.uids, [who.uid, who.uid, who.uid, who.uid]);
      assert.equal(
        [...after.groups].sort((a, b) => a - b),
        who.groups,
      );
    }
    // The restored tree (in a new PID namespace the unit also holds root's unshare and criu as its init).
    // (A child is a `sleep 0.05`: it may be gone by the time it is read.)
    for (const p of [result.rootPid, ...children(result.rootPid).map((c) => c.pid)]) {
      const uid = readCredentials(p)?.uids[0];
      if (uid !== undefined) assert.is(uid, who?.uid ?? 0, `process ${p} runs as the owner`);
    }
    if (pidNamespace) {
      const init = readStat(result.rootPid)?.ppid ?? 0;
      assert.is(credentials(init).uids[0], who?.uid ?? 0, 'criu, the namespace’s init, runs as the owner too');
    }
    for (const f of readdirSync(workDir)) assert.is(statSync(join(workDir, f)).uid, 0, `${f} of the restore is root's`);
  } finally {
    killAll(pid, restored);
    await removeUnit(cgroups);
  }
};

test('a unit of a throwaway user with supplementary groups: dumped and restored as that user, credentials kept', async () => {
  const who = idOf(user);
  assert.ok(who.groups.length >= 3, 'the user has its own group and two more');
  await checkpointAndRestore('user', who, { uid: who.uid }, false);
});

test('a unit of nobody, owner with gid and groups given: restored into a new PID namespace with its credentials', async () => {
  const who = idOf('nobody');
  await checkpointAndRestore('nobody', who, { uid: who.uid, gid: who.gid, groups: who.groups }, true);
});

test('a unit of root: root criu as before, images and credentials as before', async () => {
  await checkpointAndRestore('root', undefined, { uid: 0 }, false);
});

test('images of one user are not restored for the job of another (class permission), nor dumped for it', async () => {
  const checkpointer = new CriuCheckpointer(criu(), imagesRoot);
  const who = idOf('nobody');
  const other = idOf(user).uid;
  const { cgroups, file, pid } = startUnit('mismatch', who);
  try {
    await waitFor('the job to count', () => ((readCounter(file) ?? 0) > 0 ? true : undefined));
    const refused = await checkpointer.dump(target('mismatch', cgroups, pid, 1, { uid: other })).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(refused instanceof Error, 'refused');
    const failure = checkpointer.explain(refused);
    assert.is(failure.class, 'permission');
    assert.match(failure.message, new RegExp(`runs as uid ${who.uid}.*owner is uid ${other}`));
    const otherGid = await checkpointer.dump(target('mismatch', cgroups, pid, 1, { uid: who.uid, gid: idOf(user).gid })).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.is(checkpointer.explain(otherGid).class, 'permission');
    assert.match(checkpointer.explain(otherGid).message, new RegExp(`runs with gid ${who.gid}, not its owner’s gid`));
    // Dumped for its real owner, the images then refuse another owner's restore.
    const u = target('mismatch', cgroups, pid, 2, { uid: who.uid });
    await checkpointer.freeze(u);
    await checkpointer.dump(u);
    await checkpointer.thaw(u);
    assert.is(readDumpedCredentials(u.imagesDir).uid, who.uid);
    const workDir = join(work, 'mismatch-restore');
    mkdirSync(workDir, { mode: 0o700 });
    const notRestored = await checkpointer.restore({ imagesDir: u.imagesDir, pidNamespace: true, cgroups, workDir, options: NO_OPTIONS, owner: { uid: other } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(notRestored instanceof Error, 'refused');
    assert.is(checkpointer.explain(notRestored).class, 'permission');
    assert.is(readdirSync(workDir).length, 0, 'criu never ran');
  } finally {
    killAll(pid);
    await removeUnit(cgroups);
  }
});

test('a unit of a user whose PID namespace init keeps CAP_SYS_ADMIN: dumped as the owner, restored with the namespace recreated', async () => {
  // As ckpt-unit-init could run a user's unit: PID 1 of its namespace as the user, holding
  // CAP_SYS_ADMIN (here ambient, through the bridge's --exec, so its children hold it too).
  const who = idOf(user);
  const becomeOwner = `${swrkBridgePath} --exec --user ${who.uid} --group ${who.gid} --groups ${who.groups.join(',')} --caps 21 -- `;
  const checkpointer = new CriuCheckpointer(criu(), imagesRoot);
  const { cgroups, file, pid } = startUnit('pidns-admin', who, 'unshare --pid --fork setsid ', becomeOwner);
  let restored: number | undefined;
  try {
    await waitFor('the job to count', () => ((readCounter(file) ?? 0) > 2 ? true : undefined));
    const init = (await waitFor('the namespace’s init', () => children(pid).find((c) => c.comm === 'sh')))!.pid;
    const before = credentials(init);
    const u = target('pidns-admin', cgroups, init, 1, { uid: who.uid });
    await checkpointer.freeze(u);
    await checkpointer.dump(u);
    const dumped = readCounter(file) ?? 0;
    await checkpointer.stop(u);
    killAll(pid); // unshare (root, outside the unit), which waited for the namespace's init
    await waitPidsGone([pid, init], 10_000);
    await checkpointer.thaw(u);
    assert.equal(await checkpointer.captured(u).then((p) => p[0]), 1, 'the images’ root is its namespace’s init');
    const workDir = join(work, 'pidns-admin-restore');
    mkdirSync(workDir, { mode: 0o700 });
    writeFileSync(join(workDir, RELEASE), '');
    const result = await checkpointer.restore({ imagesDir: u.imagesDir, pidNamespace: false, cgroups, workDir, options: NO_OPTIONS, owner: { uid: who.uid } });
    restored = result.rootPid;
    await waitFor('the restored job to count on', () => ((readCounter(file) ?? 0) > dumped ? true : undefined));
    const after = credentials(result.rootPid);
    assert.equal(after.uids, before.uids);
    assert.equal(after.gids, before.gids);
    assert.equal(after.groups, before.groups);
    assert.match(readFileSync(`/proc/${result.rootPid}/status`, 'utf8'), /^NSpid:\s+\d+\s+1$/m, 'PID 1 of a new namespace again');
  } finally {
    killAll(pid, restored);
    await removeUnit(cgroups);
  }
});

test('a unit of a user that is PID 1 of its own PID namespace cannot be dumped, by any criu: class permission, saying why', async () => {
  // How ckpt-unit-init starts units: a new PID namespace, the host's mount namespace (and /proc).
  const who = idOf('nobody');
  const { cgroups, file, pid } = startUnit('pidns-unit', who, 'unshare --pid --fork setsid ');
  try {
    await waitFor('the job to count', () => ((readCounter(file) ?? 0) > 0 ? true : undefined));
    const init = (await waitFor('the namespace’s init', () => children(pid).find((c) => c.comm === 'sh')))!.pid;
    const checkpointer = new CriuCheckpointer(criu(), imagesRoot);
    const u = target('pidns-unit', cgroups, init, 1, { uid: who.uid });
    await checkpointer.freeze(u);
    const error = await checkpointer.dump(u).then(
      () => undefined,
      (e: unknown) => e,
    );
    await checkpointer.thaw(u);
    assert.ok(error instanceof Error, 'the dump fails');
    const failure = checkpointer.explain(error);
    assert.is(failure.class, 'permission');
    // The parasite, as the task, makes a directory in its working directory (EACCES: -13 where the
    // user may not write) and mounts a proc there (EPERM: "can't dump unprivileged task whose /proc …").
    assert.match(failure.message, /can't dump unprivileged task whose \/proc doesn't belong to it|Can't create a directory \(-13\)/);
    assert.match(failure.hint ?? '', /host PID namespace/);
    const now = readCounter(file) ?? 0;
    await waitFor('the job to run on, thawed', () => ((readCounter(file) ?? 0) > now ? true : undefined));
  } finally {
    killAll(pid);
    await removeUnit(cgroups);
  }
});

test.run();
