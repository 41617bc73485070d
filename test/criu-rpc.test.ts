// CRIU over its RPC interface (criu swrk through the ckpt-criu-swrk bridge), against real CRIU and
// real processes (needs root, CRIU ≥ 4.1 and the built bridge): notifications answered in-process,
// structured errors, CRIU's own statistics. Every process started here is killed in `finally`.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { CriuError, locateCriu } from '../adapters/checkpointers/criu.js';
import { CriuCheckpointer, criuWritingTo } from '../adapters/checkpointers/criu-checkpointer.js';
import { dumpTree } from '../adapters/checkpointers/criu-dump.js';
import { restoreTree } from '../adapters/checkpointers/criu-restore.js';
import { swrkBridgePath } from '../adapters/checkpointers/criu-rpc.js';
import { waitPidsGone } from '../adapters/tracking/pids.js';
import { CANCEL, RELEASE } from '../domain/checkpointer.js';
import { children, counterScript, killAll, readCounter, startJob } from './support/criu-jobs.js';
import { firstMissing, type Missing, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until as waitFor } from './support/wait.js';

const needCriu = (): Missing => (locateCriu() === undefined ? 'needs CRIU ≥ 4.1 (install: bash scripts/install-criu.sh)' : undefined);
const needBridge = (): Missing => (existsSync(swrkBridgePath) ? undefined : `needs ${swrkBridgePath} (build it: npm run build, with gcc installed)`);

const test = suiteRequiring('criu over RPC', firstMissing(needRoot, needCriu, needBridge));

let work = '';
const fresh = (name: string) => join(work, `${name}-${randomBytes(3).toString('hex')}`);
const criu = (): string => locateCriu() ?? '';
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

test.before(() => {
  work = mkdtempSync(join(tmpdir(), 'ckpt-criu-rpc-test-'));
});

test.after(() => {
  if (work !== '') rmSync(work, { recursive: true, force: true });
});

/** A counter job dumped (and killed) over RPC, its PIDs free again. */
const dumpedCounter = async (name: string) => {
  const file = fresh(`${name}-counter`);
  const pid = startJob(counterScript(file));
  await waitFor('the counter to reach 5', () => (readCounter(file) ?? 0) >= 5);
  const notified: string[] = [];
  const imagesDir = fresh(name);
  const dump = await dumpTree({ criu: criu(), pid, imagesDir, leaveRunning: false, onNotify: (script) => (notified.push(script), true) });
  await waitPidsGone(dump.pids, 10_000);
  const workDir = fresh(`${name}-work`);
  mkdirSync(workDir);
  return { file, pid, dump, imagesDir, workDir, notified, dumped: readCounter(file) ?? 0 };
};

test('dump and restore over RPC: notifications in order, stats decoded, the counter continues', async () => {
  const { file, pid, dump, imagesDir, workDir, notified, dumped } = await dumpedCounter('round-trip');
  let restored: number | undefined;
  try {
    assert.equal(notified, dump.notified);
    assert.is(notified[0], 'pre-dump');
    assert.is(notified.at(-1), 'post-dump');
    assert.ok(dump.stats !== undefined, 'stats-dump decoded');
    assert.ok(dump.stats.pagesWritten > 0, `pages written ${dump.stats.pagesWritten}`);
    assert.ok(dump.stats.pagesScanned >= dump.stats.pagesWritten);
    assert.ok(dump.stats.frozenMs > 0 && dump.stats.memdumpMs > 0);

    const seen: Array<[string, number | undefined]> = [];
    const result = await restoreTree({ criu: criu(), imagesDir, workDir, detach: true, onNotify: (script, p) => (seen.push([script, p]), true) });
    restored = result.rootPid;
    assert.is(result.rootPid, pid, 'the root pid from the response');
    assert.is(result.log, join(workDir, 'restore.log'));
    assert.ok(existsSync(result.log), 'restore.log in the work dir');
    const names = seen.map(([s]) => s);
    assert.equal(names, result.notified);
    for (const [a, b] of [
      ['pre-restore', 'pre-resume'],
      ['pre-resume', 'post-resume'],
    ] as const) {
      assert.ok(names.includes(a) && names.indexOf(a) < names.indexOf(b), `${a} before ${b} in ${names.join(', ')}`);
    }
    assert.is(seen.find(([s]) => s === 'post-restore')?.[1], pid, 'post-restore names the restored root');
    assert.ok(result.stats !== undefined, 'stats-restore decoded');
    assert.ok(result.stats.pagesRestored > 0, `pages restored ${result.stats.pagesRestored}`);
    assert.ok(existsSync(join(workDir, 'stats-restore')) && !existsSync(join(imagesDir, 'stats-restore')), 'stats-restore in the work dir only');

    const next = await waitFor('the restored counter to move', () => {
      const n = readCounter(file);
      return n !== undefined && n > dumped ? n : undefined;
    });
    assert.ok(next < dumped + 20, `continued from ${dumped} (read ${next})`);
  } finally {
    killAll(pid, restored);
  }
});

test('a post-restore answer of failure makes the restore fail with nothing left running', async () => {
  const { file, pid, dump, imagesDir, workDir, dumped } = await dumpedCounter('refused');
  try {
    const seen: string[] = [];
    const refusing = restoreTree({
      criu: criu(),
      imagesDir,
      workDir,
      detach: true,
      onNotify: (script) => (seen.push(script), script !== 'post-restore'),
    });
    const error = await refusing.then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(error instanceof CriuError, `a CriuError, got ${String(error)}`);
    assert.match(error.message, /criu restore from .* failed/);
    assert.ok(seen.includes('post-restore') && !seen.includes('pre-resume'), seen.join(', '));
    // CRIU killed what it restored (SIGKILL: the processes may still be exiting, then reaped).
    await waitPidsGone(dump.pids, 10_000);
    await sleep(200);
    assert.is(readCounter(file), dumped, 'nothing restored ever counted');
  } finally {
    killAll(pid);
  }
});

test('a bad pid: a CriuError with CRIU’s errno and message and the log’s error lines', async () => {
  const gone = startJob('exit 0');
  await waitPidsGone([gone], 10_000);
  const dir = fresh('bad-pid');
  const error = await dumpTree({ criu: criu(), pid: gone, imagesDir: dir, leaveRunning: true }).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(error instanceof CriuError, `a CriuError, got ${String(error)}`);
  assert.ok(typeof error.criuErrno === 'number' && error.criuErrno > 0, `cr_errno ${String(error.criuErrno)}`);
  // cr_errmsg is CRIU's first error line: here the harmless RLIMIT_NOFILE one, which is left out.
  assert.ok(error.criuErrmsg === undefined || !/RLIMIT_NOFILE/.test(error.criuErrmsg), String(error.criuErrmsg));
  assert.ok(
    error.details.errorLines.some((l) => l.includes(String(gone))),
    error.details.errorLines.join(' | '),
  );
  assert.is(error.details.log, join(dir, 'dump.log'));
  assert.match(error.message, new RegExp(`criu dump of pid ${gone} failed`));
});

test('a missing criu: a clear error naming the path and how to install one', async () => {
  const missing = join(work, 'no-such-criu');
  const error = await dumpTree({ criu: missing, pid: process.pid, imagesDir: fresh('missing'), leaveRunning: true }).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(error instanceof Error);
  assert.match(error.message, new RegExp(`criu not found at ${missing}.*install-criu\\.sh.*CKPT_CRIU`));
});

test('a notify callback that never answers: the call ends at its timeout, the dumped job untouched', async () => {
  const file = fresh('hang-counter');
  const pid = startJob(counterScript(file));
  try {
    await waitFor('the counter to reach 3', () => (readCounter(file) ?? 0) >= 3);
    const error = await dumpTree({ criu: criu(), pid, imagesDir: fresh('hang'), leaveRunning: true, timeoutMs: 1_000, onNotify: () => new Promise<boolean>(() => {}) }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(error instanceof CriuError);
    assert.match(error.message, /timeout/);
    const now = readCounter(file) ?? 0;
    await waitFor('the job to keep counting', () => ((readCounter(file) ?? 0) > now ? true : undefined));
  } finally {
    killAll(pid);
  }
});

const NO_OPTIONS = { tcpEstablished: false, fileLocks: false };

test('the checkpointer holds restored processes until the images check: RELEASE lets them run, CANCEL never', async () => {
  const checkpointer = new CriuCheckpointer(criu(), work);
  const released = await dumpedCounter('gate-release');
  let restored: number | undefined;
  try {
    const restoring = checkpointer.restore({ imagesDir: released.imagesDir, pidNamespace: false, cgroups: [], workDir: released.workDir, options: NO_OPTIONS });
    await waitFor('criu to be restoring', () => (existsSync(join(released.workDir, 'restore.log')) ? true : undefined));
    await sleep(300);
    assert.is(readCounter(released.file), released.dumped, 'held: nothing counts before the check passed');
    writeFileSync(join(released.workDir, RELEASE), '');
    const result = await restoring;
    restored = result.rootPid;
    assert.ok(result.stats !== undefined && result.stats.pagesRestored > 0, 'the restore’s stats');
    await waitFor('the released counter to move', () => ((readCounter(released.file) ?? 0) > released.dumped ? true : undefined));
  } finally {
    killAll(released.pid, restored);
  }

  const cancelled = await dumpedCounter('gate-cancel');
  try {
    const restoring = checkpointer.restore({ imagesDir: cancelled.imagesDir, pidNamespace: false, cgroups: [], workDir: cancelled.workDir, options: NO_OPTIONS });
    await waitFor('criu to be restoring', () => (existsSync(join(cancelled.workDir, 'restore.log')) ? true : undefined));
    writeFileSync(join(cancelled.workDir, CANCEL), 'a changed byte');
    await restoring.then(
      () => assert.unreachable('a cancelled restore must fail'),
      (e: unknown) => assert.ok(e instanceof CriuError, String(e)),
    );
    await waitPidsGone(cancelled.dump.pids, 10_000);
    assert.is(readCounter(cancelled.file), cancelled.dumped, 'nothing restored ever counted');
  } finally {
    killAll(cancelled.pid);
  }
});

test('criuWritingTo finds a dump in progress over RPC by its images directory', async () => {
  const pid = startJob('while :; do sleep 0.05; done');
  const imagesDir = fresh('writing');
  let release: (ok: boolean) => void = () => {};
  const held = new Promise<boolean>((r) => (release = r));
  let calls = 0;
  try {
    // criu waits at its first notification (pre-dump) until the directory was found.
    const dumping = dumpTree({ criu: criu(), pid, imagesDir, leaveRunning: true, onNotify: () => (calls++ === 0 ? held : true) });
    const writers = await waitFor('criu to hold the images directory', () => {
      const found = criuWritingTo(imagesDir);
      return found.length > 0 ? found : undefined;
    });
    assert.ok(!writers.includes(process.pid));
    assert.equal(criuWritingTo(fresh('elsewhere')), []);
    release(true);
    await dumping;
    await waitFor('criu to have ended', () => (criuWritingTo(imagesDir).length === 0 ? true : undefined));
  } finally {
    killAll(pid);
  }
});

test('a dump whose root is a PID namespace init: CRIU recreates the namespace, the response has the host pid', async () => {
  // unshare forks the namespace's init; setsid makes it its session's leader, as CRIU needs.
  const unshare = startJob('exec unshare --pid --fork setsid sh -c "while :; do sleep 0.05; done"');
  let restored: number | undefined;
  try {
    const init = await waitFor('the namespace init', () => children(unshare).find((p) => p.comm === 'sh'));
    const imagesDir = fresh('pidns');
    const dump = await dumpTree({ criu: criu(), pid: init.pid, imagesDir, leaveRunning: true });
    assert.is(dump.pids[0], 1, 'the root is pid 1 in its namespace');
    const workDir = fresh('pidns-work');
    mkdirSync(workDir);
    // The original still runs: its PIDs are taken in its namespace, not in the new one.
    const result = await restoreTree({ criu: criu(), imagesDir, workDir, detach: true });
    restored = result.rootPid;
    assert.is(result.nsRootPid, 1);
    assert.is.not(result.rootPid, init.pid);
    const nsPids = readFileSync(`/proc/${result.rootPid}/status`, 'utf8')
      .match(/^NSpid:\s+(.*)$/m)?.[1]
      ?.split(/\s+/);
    assert.equal(nsPids, [String(result.rootPid), '1']);
  } finally {
    // Killing a namespace's init makes the kernel kill every process in it.
    killAll(unshare, restored);
  }
});

test.run();
