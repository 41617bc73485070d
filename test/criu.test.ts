// The CRIU checkpointer's building blocks against real CRIU and real processes (needs root and
// CRIU ≥ 4.1). Workloads run in their own session (spawn detached → setsid) with every fd above 2
// closed, since CRIU dumps inherited pipes and refuses sockets connected to the outside.
// Every process started here is killed in `finally`; image dirs live in one temp dir removed at the end.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import * as assert from 'uvu/assert';
import { canFreeze, detectCgroups } from '../adapters/cgroups/unit-cgroups.js';
import { compareVersions, criuVersion, locateCriu, runCriu } from '../adapters/checkpointers/criu.js';
import { dumpTree } from '../adapters/checkpointers/criu-dump.js';
import { imageBytes, imageFiles, readPstree } from '../adapters/checkpointers/criu-images.js';
import { criuVersionProblem, probeCriu } from '../adapters/checkpointers/criu-probe.js';
import { restoreTree } from '../adapters/checkpointers/criu-restore.js';
import { pidNamespaceOf, pidsInUse, waitPidsGone } from '../adapters/tracking/pids.js';
import { readStat } from '../adapters/tracking/procfs.js';
import { CheckpointerProbed } from '../domain/events/node.js';
import { children, counterScript, killAll, readCounter, startJob } from './support/criu-jobs.js';
import { firstMissing, type Missing, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until as waitFor } from './support/wait.js';

const needCriu = (): Missing => (locateCriu() === undefined ? 'needs CRIU ≥ 4.1 (install: bash scripts/install-criu.sh)' : undefined);

const test = suiteRequiring('criu checkpointer', firstMissing(needRoot, needCriu));

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

let work = '';
const imagesDir = (name: string) => join(work, `${name}-${randomBytes(3).toString('hex')}`);

const criu = (): string => {
  const path = locateCriu();
  if (path === undefined) throw new Error('no criu');
  return path;
};

test.before(() => {
  work = mkdtempSync(join(tmpdir(), 'ckpt-criu-test-'));
});

test.after(() => {
  if (work !== '') rmSync(work, { recursive: true, force: true });
});

test('versions compare numerically; a CRIU < 4.1 is refused, saying why on kernels ≥ 6.13', () => {
  assert.is(compareVersions('4.1.1', '4.1'), 1);
  assert.is(compareVersions('4.1', '4.1.0'), 0);
  assert.is(compareVersions('3.17.1', '4.1'), -1);
  assert.is(compareVersions('4.10', '4.9'), 1);
  assert.is(criuVersionProblem('4.1.1', '6.18.44'), undefined);
  const newKernel = criuVersionProblem('3.17.1', '6.18.44') ?? '';
  assert.match(newKernel, /vDSO layout of kernels ≥ 6\.13/);
  assert.match(newKernel, /needs CRIU ≥ 4\.1; run scripts\/install-criu\.sh/);
  const oldKernel = criuVersionProblem('3.17.1', '6.1.0') ?? '';
  assert.not.match(oldKernel, /vDSO/);
  assert.match(oldKernel, /install-criu\.sh/);
});

test('probe: usable, version ≥ 4.1, capabilities as this node really has them', async () => {
  const path = criu();
  const version = criuVersion(path);
  assert.ok(version !== undefined && compareVersions(version, '4.1') >= 0, `version ${String(version)}`);
  const probe = await probeCriu(path);
  assert.is(probe.checkpointer, 'criu');
  assert.is(probe.version, version);
  assert.equal(probe.problems, []);
  assert.is(probe.usable, true);
  assert.is(probe.kernel, release());
  // Soft-dirty is what the kernel says (absent on this machine kind), not hard-coded.
  const softDirty = (await runCriu(path, ['check', '--feature', 'mem_dirty_track'])).code === 0;
  assert.is(probe.softDirty, softDirty);
  assert.is(probe.capabilities.incremental, softDirty);
  const freeze = canFreeze(detectCgroups());
  assert.is(probe.capabilities.freezeCgroup, freeze);
  assert.equal(probe.capabilities.scopes, freeze ? ['tree', 'cgroup'] : ['tree']);
  assert.is(probe.capabilities.leaveRunning, true);
  assert.is(probe.capabilities.pidNamespace, existsSync('/proc/self/ns/pid'));
  assert.ok(probe.cgroups.v1.length + probe.cgroups.v2.length > 0);
  // It is exactly the event's data minus the node.
  assert.ok(E.isRight(CheckpointerProbed.codec.decode({ ...probe, node: 'node-1' })));
});

test('probe of a missing criu: not usable, says how to install, does not throw', async () => {
  const path = locateCriu({ CKPT_CRIU: join(work, 'no-such-criu') });
  assert.is(path, join(work, 'no-such-criu'));
  const probe = await probeCriu(path);
  assert.is(probe.usable, false);
  assert.is(probe.version, null);
  assert.is(probe.problems.length, 1);
  assert.match(probe.problems[0] ?? '', /not found.*install-criu\.sh/);
  assert.equal(probe.capabilities.scopes, []);
  const none = await probeCriu(undefined);
  assert.is(none.usable, false);
  assert.match(none.problems.join(' '), /no criu found.*install-criu\.sh/);
});

test('dump --leave-running: the counter keeps counting; the images list the tree', async () => {
  const file = join(work, `counter-${randomBytes(3).toString('hex')}`);
  const pid = startJob(counterScript(file));
  try {
    await waitFor('the counter to reach 5', () => (readCounter(file) ?? 0) >= 5);
    const dir = imagesDir('leave-running');
    const dump = await dumpTree({ criu: criu(), pid, imagesDir: dir, leaveRunning: true });
    assert.is(dump.pids[0], pid);
    assert.ok(dump.bytes > 0 && dump.bytes === imageBytes(dir));
    assert.equal(dump.files, imageFiles(dir));
    assert.ok(dump.files.some((f) => f.name === 'pstree.img'));
    assert.ok(!dump.files.some((f) => f.name.endsWith('.log')));
    assert.is(dump.log, join(dir, 'dump.log'));
    assert.ok(readFileSync(dump.log, 'utf8').includes('Dumping finished successfully'));
    const after = readCounter(file) ?? 0;
    await sleep(300);
    assert.ok((readCounter(file) ?? 0) > after, 'still counting after the dump');
    assert.is(readStat(pid)?.state !== 'Z', true);
  } finally {
    killAll(pid);
  }
});

test('dump kills the tree; restore continues from the checkpointed value', async () => {
  const file = join(work, `counter-${randomBytes(3).toString('hex')}`);
  const pid = startJob(counterScript(file));
  let restored: number | undefined;
  try {
    await waitFor('the counter to reach 10', () => (readCounter(file) ?? 0) >= 10);
    const dir = imagesDir('kill');
    const before = readCounter(file) ?? 0;
    const dump = await dumpTree({ criu: criu(), pid, imagesDir: dir, leaveRunning: false });
    const dumped = readCounter(file) ?? 0;
    assert.ok(dumped >= before);
    await waitPidsGone(dump.pids, 10_000);
    assert.is(readStat(pid), undefined);
    await sleep(200);
    assert.is(readCounter(file), dumped, 'nothing counts while the tree is dumped');
    const result = await restoreTree({ criu: criu(), imagesDir: dir, detach: true });
    restored = result.rootPid;
    assert.is(result.rootPid, pid, 'same pid in the same namespace');
    assert.is(result.log, join(dir, 'restore.log'));
    assert.ok(result.durationMs > 0);
    const first = await waitFor('the restored counter to move', () => {
      const n = readCounter(file);
      return n !== undefined && n > dumped ? n : undefined;
    });
    assert.ok(first >= dumped && first < dumped + 20, `continued from ${dumped}, not from 0 (read ${first})`);
    await sleep(200);
    assert.ok((readCounter(file) ?? 0) > first, 'keeps counting');
  } finally {
    killAll(pid, restored);
  }
});

test('a 3-process pipeline: pstree.img lists exactly its pids, ppids, pgid and sid', async () => {
  const pid = startJob('sleep 1000 | cat');
  let nsInit: number | undefined;
  try {
    const kids = await waitFor('the two pipeline processes', () => {
      const k = children(pid);
      return k.length === 2 && k.every((c) => c.comm === 'sleep' || c.comm === 'cat') ? k : undefined;
    });
    const expected = [readStat(pid), ...kids].map((s) => {
      if (s === undefined) throw new Error('process vanished');
      // CRIU records the root's parent (outside the tree) as 0.
      return { pid: s.pid, ppid: s.pid === pid ? 0 : s.ppid, pgid: s.pgid, sid: s.sid };
    });
    const dir = imagesDir('pipeline');
    const dump = await dumpTree({ criu: criu(), pid, imagesDir: dir, leaveRunning: true });
    const tree = readPstree(dir);
    const byPid = (a: { pid: number }, b: { pid: number }) => a.pid - b.pid;
    assert.equal(tree.map(({ pid, ppid, pgid, sid }) => ({ pid, ppid, pgid, sid })).sort(byPid), expected.sort(byPid));
    assert.is(tree[0]?.pid, pid, 'root first');
    for (const e of tree) assert.equal(e.threads, [e.pid]);
    assert.equal([...dump.pids].sort(), tree.map((e) => e.pid).sort());
    for (const e of tree) {
      assert.is(e.pgid, pid);
      assert.is(e.sid, pid);
    }

    // The original still runs: a restore in our namespace must fail and say what to do.
    try {
      await restoreTree({ criu: criu(), imagesDir: dir, detach: true });
      assert.unreachable('restore should fail while the original runs');
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      assert.match(message, /Can't fork for \d+: File exists/);
      assert.match(message, /original PID still exists or is an unreaped zombie: wait until they are gone, or restore into a new PID namespace/);
    }

    // In a new PID namespace the same pids are free: the copy runs next to the original.
    const copy = await restoreTree({ criu: criu(), imagesDir: dir, detach: true, pidNamespace: true });
    nsInit = copy.nsInitPid;
    assert.is(copy.nsRootPid, pid);
    assert.is.not(copy.rootPid, pid);
    assert.is.not(pidNamespaceOf(copy.rootPid), pidNamespaceOf('self'));
    const nsPids = readFileSync(`/proc/${copy.rootPid}/status`, 'utf8')
      .match(/^NSpid:\s+(.*)$/m)?.[1]
      ?.split(/\s+/);
    assert.equal(nsPids, [String(copy.rootPid), String(pid)]);
    const copyKids = await waitFor('the restored pipeline', () => (children(copy.rootPid).length === 2 ? children(copy.rootPid) : undefined));
    assert.equal(copyKids.map((c) => c.comm).sort(), ['cat', 'sleep']);
    assert.is(readStat(pid)?.state, 'S', 'the original is untouched');
  } finally {
    killAll(pid);
    // Killing the namespace's init (criu) makes the kernel kill every process in it.
    if (nsInit !== undefined) killAll(nsInit);
  }
});

test('dump with --freeze-cgroup refuses to accept a tree that leaves cgroup members out', async () => {
  const layout = detectCgroups();
  const v1 = layout.v1.find((h) => h.controllers.includes('freezer'))?.mountPoint;
  const base = v1 ?? (layout.v2?.freeze ? layout.v2.mountPoint : undefined);
  if (base === undefined) return; // no freezer here: nothing to check
  const cgroup = join(base, `ckpt-criu-test-${randomBytes(3).toString('hex')}`);
  mkdirSync(cgroup);
  const inTree = startJob('while :; do sleep 0.05; done');
  const outsider = startJob('while :; do sleep 0.05; done');
  try {
    writeFileSync(join(cgroup, 'cgroup.procs'), String(inTree));
    writeFileSync(join(cgroup, 'cgroup.procs'), String(outsider));
    try {
      await dumpTree({ criu: criu(), pid: inTree, imagesDir: imagesDir('freezer'), leaveRunning: true, freezeCgroup: cgroup });
      assert.unreachable('a partial dump must fail');
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      assert.match(message, /incomplete/);
      assert.match(message, new RegExp(`Unexpected process ${outsider} in the freezer cgroup`));
    }
  } finally {
    killAll(inTree, outsider);
    await waitFor('the test cgroup to empty', () => readFileSync(join(cgroup, 'cgroup.procs'), 'utf8').trim() === '');
    rmdirSync(cgroup);
  }
});

test('waitPidsGone waits for a zombie to be reaped, and for a pgid still in use', async () => {
  // The background sleep exits at 0.1 s, a zombie of its parent until that (exec'd `sleep 1`)
  // exits and PID 1 reaps it.
  const parent = startJob('sleep 0.1 & exec sleep 1');
  try {
    const zombie = await waitFor('the zombie', () => children(parent).find((c) => c.state === 'Z'));
    const started = Date.now();
    await assertRejects(waitPidsGone([zombie.pid], 100), new RegExp(`${zombie.pid} \\(zombie`));
    await waitPidsGone([zombie.pid], 10_000);
    assert.ok(Date.now() - started >= 500, 'it waited for the reaping');
    assert.is(existsSync(`/proc/${zombie.pid}`), false);
    assert.equal(pidsInUse([zombie.pid]), []);
  } finally {
    killAll(parent);
  }

  // A group leader that exited leaves its pid in use as the pgid/sid of what it started.
  const leader = startJob('sleep 5 & exit 0');
  try {
    await waitFor('the leader to exit', () => readStat(leader) === undefined);
    assert.equal(pidsInUse([leader]), [leader]);
    await assertRejects(waitPidsGone([leader], 100), /pgid\/sid/);
  } finally {
    killAll(leader);
  }
});

const assertRejects = async (promise: Promise<unknown>, re: RegExp): Promise<void> => {
  try {
    await promise;
  } catch (err) {
    assert.match(err instanceof Error ? err.message : String(err), re);
    return;
  }
  assert.unreachable(`expected a rejection matching ${re}`);
};

test.run();
