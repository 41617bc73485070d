// The proc connector helper against the real kernel (needs root and `bash scripts/build-native.sh`).
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import {
  type KernelExit,
  type KernelFork,
  type KernelOverrun,
  type KernelProcessEvent,
  type ProcConnectorOptions,
  procConnectorPath,
  watchKernelProcessEvents,
} from '../adapters/tracking/proc-connector.js';
import { needRoot, suiteRequiring } from './support/prerequisites.js';

const test = suiteRequiring('proc connector', needRoot());

interface Waiter {
  readonly match: (e: KernelProcessEvent) => boolean;
  readonly resolve: (e: KernelProcessEvent) => void;
}

/** Subscribes and records every event; `ready` resolves on the ready event. */
const watch = (options?: ProcConnectorOptions) => {
  const events: KernelProcessEvent[] = [];
  let waiters: Waiter[] = [];
  let failure: unknown;
  let onReady: () => void = () => {};
  let onFailure: (err: unknown) => void = () => {};
  const ready = new Promise<void>((resolve, reject) => {
    onReady = resolve;
    onFailure = reject;
  });
  const subscription = watchKernelProcessEvents(options).subscribe({
    next: (e) => {
      events.push(e);
      if (e.e === 'ready') onReady();
      if (waiters.length > 0) {
        const hit = waiters.filter((w) => w.match(e));
        if (hit.length > 0) {
          waiters = waiters.filter((w) => !hit.includes(w));
          for (const w of hit) w.resolve(e);
        }
      }
    },
    error: (err: unknown) => {
      failure = err;
      onFailure(err);
    },
  });
  /** The first event (already seen or still to come) matching, or a rejection after timeoutMs. */
  const waitFor = <E extends KernelProcessEvent>(match: (e: KernelProcessEvent) => e is E, what: string, timeoutMs = 15000): Promise<E> => {
    const seen = events.find(match);
    if (seen) return Promise.resolve(seen);
    if (failure) return Promise.reject(failure);
    return new Promise<E>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
      waiters.push({
        match,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e as E);
        },
      });
    });
  };
  return { events, ready, waitFor, stop: () => subscription.unsubscribe() };
};

/** Runs a command to completion; resolves with its pid, exit code, signal and stdout. */
const run = (command: string, args: string[]) =>
  new Promise<{ pid: number; code: number | null; signal: NodeJS.Signals | null; stdout: string }>((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ pid: child.pid ?? -1, code, signal, stdout }));
  });

const waitUntil = async (done: () => boolean, what: string, timeoutMs = 15000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

const isExitOf =
  (tgid: number) =>
  (e: KernelProcessEvent): e is KernelExit =>
    e.e === 'exit' && e.tgid === tgid && e.pid === tgid;

/** Pids of this process's helper children whose command line contains `marker`. */
const helperPids = (marker: string): number[] =>
  readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        return ppid === process.pid && cmdline[0] === procConnectorPath && cmdline.includes(marker);
      } catch {
        return false;
      }
    })
    .map(Number);

test('ready comes first and reports the receive buffer', async () => {
  const w = watch();
  try {
    await w.ready;
    const first = w.events[0];
    assert.ok(first && first.e === 'ready');
    if (first?.e === 'ready') assert.ok(first.rcvbuf >= 16 * 1024 * 1024, `rcvbuf ${first.rcvbuf}`);
    if (first?.e === 'ready') assert.is(first.netns, 'initial');
  } finally {
    w.stop();
  }
});

test('every fork and exit of a 2000-process loop is seen, with status 0', async () => {
  const w = watch();
  try {
    await w.ready;
    // A while loop with builtins forks exactly once per /bin/true (`for i in $(seq 2000)`
    // would add one fork for the command substitution).
    const sh = await run('sh', ['-c', 'i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done; echo done']);
    assert.is(sh.code, 0);
    assert.is(sh.stdout, 'done\n');
    await w.waitFor(isExitOf(sh.pid), 'the exit of the shell');
    const forks = w.events.filter((e): e is KernelFork => e.e === 'fork' && e.ptgid === sh.pid && e.pid === e.tgid);
    assert.is(forks.length, 2000);
    // Exits are matched by tgid, not by their ptgid: the kernel reports a child's exit after
    // waking its parent, so the event can come after the parent's next fork (or its own exit),
    // and ppid/ptgid are 0 when the parent has already reaped the child.
    const children = new Set(forks.map((f) => f.tgid));
    const exits = new Map<number, KernelExit>();
    await waitUntil(() => {
      for (const e of w.events) if (e.e === 'exit' && e.pid === e.tgid && children.has(e.tgid)) exits.set(e.tgid, e);
      return exits.size === children.size;
    }, 'the exits of all 2000 children');
    for (const exit of exits.values()) {
      assert.is(exit.status, 0);
      assert.is(exit.termsig, null);
      assert.ok(exit.ptgid === sh.pid || exit.ptgid === 0, `ptgid ${exit.ptgid}`);
    }
    const execs = new Set(w.events.flatMap((e) => (e.e === 'exec' ? [e.tgid] : [])));
    assert.ok(
      forks.every((f) => execs.has(f.tgid)),
      'every child execs /bin/true',
    );
    assert.not.ok(
      w.events.some((e) => e.e === 'overrun'),
      'no overrun',
    );
  } finally {
    w.stop();
  }
});

test('exit status and terminating signal are decoded', async () => {
  const w = watch();
  try {
    await w.ready;
    const seven = await run('sh', ['-c', 'exit 7']);
    assert.is(seven.code, 7);
    const exit7 = await w.waitFor(isExitOf(seven.pid), 'exit 7');
    assert.is(exit7.status, 7);
    assert.is(exit7.termsig, null);
    assert.is(exit7.code, 7 << 8);
    assert.ok(exit7.ptgid === process.pid || exit7.ptgid === 0, 'parent is node (or 0 once reaped)');

    const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
    const closed = new Promise<NodeJS.Signals | null>((resolve) => sleeper.on('close', (_code, signal) => resolve(signal)));
    sleeper.kill('SIGKILL');
    assert.is(await closed, 'SIGKILL');
    const killed = await w.waitFor(isExitOf(sleeper.pid ?? -1), 'exit of the killed sleep');
    assert.is(killed.termsig, 9);
    assert.is(killed.status, null);
  } finally {
    w.stop();
  }
});

test('setsid produces a sid event', async () => {
  const w = watch();
  try {
    await w.ready;
    const child = await run('setsid', ['sh', '-c', 'exit 0']);
    assert.is(child.code, 0);
    await w.waitFor(isExitOf(child.pid), 'exit of setsid');
    // setsid(1) calls setsid() itself unless it is a group leader; then it forks first.
    const forked = new Set(w.events.flatMap((e) => (e.e === 'fork' && e.ptgid === child.pid ? [e.tgid] : [])));
    const sid = w.events.find((e) => e.e === 'sid' && (e.tgid === child.pid || forked.has(e.tgid)));
    assert.ok(sid, 'sid event');
  } finally {
    w.stop();
  }
});

test('setgid and setuid produce gid and uid events with the new ids', async () => {
  const w = watch();
  try {
    await w.ready;
    const child = await run('setpriv', ['--regid', '65534', '--reuid', '65534', '--clear-groups', 'true']);
    assert.is(child.code, 0);
    await w.waitFor(isExitOf(child.pid), 'exit of setpriv');
    const ids = w.events.flatMap((e) => ((e.e === 'uid' || e.e === 'gid') && e.tgid === child.pid ? [[e.e, e.real, e.effective]] : []));
    assert.ok(
      ids.some(([kind, real, effective]) => kind === 'gid' && real === 65534 && effective === 65534),
      JSON.stringify(ids),
    );
    assert.ok(
      ids.some(([kind, real, effective]) => kind === 'uid' && real === 65534 && effective === 65534),
      JSON.stringify(ids),
    );
  } finally {
    w.stop();
  }
});

test('a tiny receive buffer reports overruns and keeps going', async () => {
  const w = watch({ rcvbuf: 4096 });
  try {
    await w.ready;
    const [helper, ...others] = helperPids('4096');
    assert.ok(helper !== undefined && others.length === 0, 'found the helper');
    if (helper === undefined) return;
    // Freeze the reader while 300 processes come and go: the kernel must drop events.
    process.kill(helper, 'SIGSTOP');
    try {
      execFileSync('sh', ['-c', 'i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done']);
    } finally {
      process.kill(helper, 'SIGCONT');
    }
    const overrun = await w.waitFor((e): e is KernelOverrun => e.e === 'overrun', 'overrun');
    assert.ok(overrun.count > 0);
    if (overrun.lost !== undefined) assert.ok(overrun.lost > 0, `lost ${overrun.lost}`);
    // The stream still delivers what happens afterwards.
    const later = await run('sh', ['-c', 'exit 3']);
    const exit = await w.waitFor(isExitOf(later.pid), 'exit after the overrun');
    assert.is(exit.status, 3);
  } finally {
    w.stop();
  }
});

test('unsubscribing terminates the helper', async () => {
  const w = watch({ rcvbuf: 123457 });
  await w.ready;
  assert.is(helperPids('123457').length, 1);
  w.stop();
  const deadline = Date.now() + 5000;
  while (helperPids('123457').length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.is(helperPids('123457').length, 0);
});

/**
 * The helper started in a network namespace of its own (as under an agent of a testbed host), by
 * a wrapper: `unshare --net [setpriv …] HELPER ARGS`. The initial namespace is named by this test
 * process's own (/proc/PID/ns/net), which works where /proc/1 is closed to root.
 */
const wrappers = mkdtempSync(join(tmpdir(), 'ckpt-pc-netns-'));
test.after(() => rmSync(wrappers, { recursive: true, force: true }));
const inOwnNetns = (name: 'plain' | 'no-sys-admin'): string => {
  const wrapper = join(wrappers, name);
  const drop = name === 'no-sys-admin' ? 'setpriv --bounding-set -sys_admin -- ' : '';
  writeFileSync(wrapper, `#!/bin/sh\nexec unshare --net -- ${drop}"$CKPT_TEST_HELPER" "$@"\n`, { mode: 0o755 });
  process.env.CKPT_TEST_HELPER = procConnectorPath;
  return wrapper;
};
const initialNetns = `/proc/${process.pid}/ns/net`;

test('a helper in another network namespace opens its socket in the initial one and sees processes', async () => {
  const w = watch({ helperPath: inOwnNetns('plain'), initialNetns });
  try {
    await w.ready;
    const first = w.events[0];
    assert.ok(first?.e === 'ready' && first.netns === 'entered', JSON.stringify(first));
    const child = await run('sh', ['-c', 'exit 4']);
    assert.is((await w.waitFor(isExitOf(child.pid), 'the exit of a process started after ready')).status, 4);
  } finally {
    w.stop();
  }
});

test('a helper that cannot enter the initial network namespace says so', async () => {
  const w = watch({ helperPath: inOwnNetns('no-sys-admin'), initialNetns });
  try {
    await w.ready;
    assert.unreachable('should have failed');
  } catch (err) {
    assert.match((err as Error).message, /not in the initial one \(\/proc\/\d+\/ns\/net, net:\[\d+\]\) where the proc connector works, and cannot enter it: setns: Operation not permitted/);
  } finally {
    w.stop();
  }
});

test('a helper given a namespace that is not the initial one says so', async () => {
  const other = spawn('unshare', ['--net', '--', 'sleep', '30'], { stdio: 'ignore' });
  try {
    await waitUntil(() => other.pid !== undefined && readlinkSync(`/proc/${other.pid}/ns/net`) !== readlinkSync(initialNetns), 'unshare');
    const w = watch({ helperPath: inOwnNetns('plain'), initialNetns: `/proc/${other.pid}/ns/net` });
    try {
      await w.ready;
      assert.unreachable('should have failed');
    } catch (err) {
      // Where PID 1's namespace can be read the path is checked against it; elsewhere the kernel refuses.
      assert.match((err as Error).message, /not PID 1's \(net:\[\d+\]\), the initial one|the proc connector exists only in the initial network namespace/);
    } finally {
      w.stop();
    }
  } finally {
    other.kill('SIGKILL');
  }
});

test('a missing helper errors with a hint to build it', async () => {
  const w = watch({ helperPath: '/nonexistent/proc-connector' });
  try {
    await w.ready;
    assert.unreachable('should have failed');
  } catch (err) {
    assert.instance(err, Error);
    assert.match((err as Error).message, 'npm run build');
  }
});

test.run();
