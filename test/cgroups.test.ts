// Unit cgroups against the real kernel: real hierarchies, real processes (needs root).
// Every test uses its own ckpt-test/<random>/unit path and kills + removes it in `finally`.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import {
  addProcess,
  type CgroupLayout,
  canFreeze,
  createUnitCgroups,
  describeCgroups,
  detectCgroups,
  ForeignCgroupError,
  freezeUnit,
  isUnitCgroupPath,
  killUnit,
  ownUnitCgroups,
  removeUnitCgroups,
  thawUnit,
  unitCgroupPath,
  unitCgroupsAt,
  unitFreezeState,
  unitProcesses,
  weightToShares,
} from '../adapters/cgroups/unit-cgroups.js';
import type { Limits, UnitCgroup } from '../domain/events/job.js';
import { needRoot, suiteRequiring } from './support/prerequisites.js';
import { until as waitFor } from './support/wait.js';

const test = suiteRequiring('unit cgroups', needRoot());

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const relPath = () => `ckpt-test/${randomBytes(6).toString('hex')}/unit`;

const v1Mount = (layout: CgroupLayout, controller: string) => layout.v1.find((h) => h.controllers.includes(controller))?.mountPoint;

/** Creates a unit, runs `body`, then kills every process in it and removes it (ckpt-test too if empty). */
const withUnit = async (limits: Limits, body: (cgroups: UnitCgroup[], layout: CgroupLayout) => Promise<void>) => {
  const layout = detectCgroups();
  const cgroups = createUnitCgroups(layout, relPath(), limits);
  try {
    await body(cgroups, layout);
  } finally {
    await killUnit(cgroups).catch((err) => console.error('cleanup kill failed:', err));
    try {
      removeUnitCgroups(cgroups, { emptyParents: 2 });
    } catch (err) {
      console.error('cleanup remove failed:', err);
    }
  }
};

interface Started {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly out: () => string;
  readonly err: () => string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `sh -c script` blocked on `read`, moves it into the unit, then lets it run: nothing it
 *  forks can start outside the unit. */
const startInUnit = (cgroups: UnitCgroup[], script: string): Started => {
  const child = spawn('sh', ['-c', `read _ckpt_go; ${script}`], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const pid = child.pid;
  if (pid === undefined) throw new Error('spawn sh failed');
  addProcess(cgroups, pid);
  child.stdin?.end('go\n');
  return { child, pid, out: () => out, err: () => err, exited };
};

const alive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX]/.test(stat);
  } catch {
    return false;
  }
};

/** Session id (field 6 of /proc/<pid>/stat). */
const sid = (pid: number): number | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]);
  } catch {
    return undefined;
  }
};

const read = (file: string) => readFileSync(file, 'utf8').trim();

// ---------------------------------------------------------------------------------------------

test('detectCgroups finds what /proc/self/mountinfo says', () => {
  const layout = detectCgroups();
  const lines = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  let v1Seen = 0;
  for (const line of lines) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const mountPoint = left.split(' ')[4] ?? '';
    const [fstype, , superOpts = ''] = right.split(' ');
    if (fstype === 'cgroup') {
      for (const c of ['freezer', 'memory', 'pids', 'cpu', 'cpuacct']) {
        if (!superOpts.split(',').includes(c)) continue;
        v1Seen++;
        assert.is(v1Mount(layout, c), mountPoint, `v1 ${c}`);
        assert.ok(describeCgroups(layout).v1.includes(c), `describe lists ${c}`);
      }
    }
    if (fstype === 'cgroup2') {
      assert.is(layout.v2?.mountPoint, mountPoint);
      const controllers = read(join(mountPoint, 'cgroup.controllers')).split(/\s+/).filter(Boolean);
      assert.equal([...(layout.v2?.controllers ?? [])].sort(), controllers.sort());
    }
  }
  if (!lines.some((l) => / - cgroup2 /.test(l))) assert.is(layout.v2, undefined);
  if (v1Seen === 0)
    assert.equal(
      describeCgroups(layout).v1.filter((c) => ['freezer', 'memory', 'pids', 'cpu'].includes(c)),
      [],
    );
  assert.ok(canFreeze(layout), 'this node can freeze (v1 freezer or cgroup.freeze)');
  console.log('  layout:', JSON.stringify(describeCgroups(layout)));
});

test('relative paths are validated', () => {
  const layout = detectCgroups();
  for (const bad of ['', '/abs/unit', '../escape', 'a/../../b', 'a//b', 'a/./b', 'a/.hidden', 'a/cgroup.procs', 'a b']) {
    assert.throws(() => createUnitCgroups(layout, bad, {}), /invalid unit cgroup path/, `rejects "${bad}"`);
  }
});

test('the agent’s own cgroups are derived from (layout, prefix, job, unit[, restart]); anything else the log names is refused', () => {
  const layout: CgroupLayout = {
    v1: [
      { mountPoint: '/sys/fs/cgroup/freezer', controllers: ['freezer'] },
      { mountPoint: '/sys/fs/cgroup/memory', controllers: ['memory'] },
    ],
    v2: { mountPoint: '/sys/fs/cgroup/unified', controllers: [], freeze: true, kill: true },
  };
  const own = unitCgroupsAt(layout, unitCgroupPath('ckpt/abcd1234', 'job', 'main'));
  assert.equal(
    own.map((c) => c.path),
    ['/sys/fs/cgroup/freezer/ckpt/abcd1234/job/main', '/sys/fs/cgroup/memory/ckpt/abcd1234/job/main', '/sys/fs/cgroup/unified/ckpt/abcd1234/job/main'],
  );
  assert.equal(ownUnitCgroups(layout, 'ckpt/abcd1234', 'job', 'main', own), own);
  assert.equal(ownUnitCgroups(layout, 'ckpt/abcd1234', 'job', 'main', []), []);
  // A restart's cgroups: main-rN, N taken from the record, the paths derived again.
  const r3 = unitCgroupsAt(layout, unitCgroupPath('ckpt/abcd1234', 'job', 'main', 3));
  assert.equal(ownUnitCgroups(layout, 'ckpt/abcd1234', 'job', 'main', r3), r3);
  assert.equal(ownUnitCgroups(layout, 'ckpt/abcd1234', 'job', 'main-r1', unitCgroupsAt(layout, 'ckpt/abcd1234/job/main-r1')).length, 3, 'a unit named like a restart');
  const refused = (recorded: UnitCgroup[], why: RegExp) => {
    try {
      ownUnitCgroups(layout, 'ckpt/abcd1234', 'job', 'main', recorded);
    } catch (e) {
      assert.instance(e, ForeignCgroupError);
      assert.is((e as ForeignCgroupError).failure.class, 'permission');
      assert.match((e as Error).message, why);
      return;
    }
    assert.unreachable(`accepted ${JSON.stringify(recorded)}`);
  };
  refused([{ controller: 'freezer', path: '/sys/fs/cgroup/freezer' }], /^refused: the log names cgroup freezer \/sys\/fs\/cgroup\/freezer for unit main of job, which this agent did not create/);
  refused([{ controller: 'freezer', path: '/sys/fs/cgroup/freezer/system.slice/sshd' }], /system\.slice\/sshd/);
  refused([{ controller: 'freezer', path: '/sys/fs/cgroup/freezer/ckpt/abcd1234/job/main/../../other/main' }], /\.\.\/\.\.\/other/);
  refused([{ controller: 'freezer', path: '/sys/fs/cgroup/freezer/ckpt/abcd1234/other/main' }], /other\/main/);
  refused([{ controller: 'freezer', path: '/sys/fs/cgroup/freezer/ckpt/ffff0000/job/main' }], /another store's prefix|ffff0000/);
  refused([{ controller: 'memory', path: '/sys/fs/cgroup/freezer/ckpt/abcd1234/job/main' }], /memory/);
  refused([...own, { controller: 'unified', path: '/sys/fs/cgroup/unified' }], /unified \/sys\/fs\/cgroup\/unified for/);
  assert.throws(() => unitCgroupPath('ckpt/abcd1234', '..', 'main'), /'\.\.' segments are not allowed/);
  assert.throws(() => unitCgroupPath('ckpt/abcd1234', 'job', 'main', 0), /restart number 0/);
  // What /proc/PID/cgroup shows for a unit's process, and what only looks like it.
  for (const path of ['/ckpt/abcd1234/job/main', '/ckpt/abcd1234/job/main-r2', '/ckpt/abcd1234/job/main/leaf']) assert.ok(isUnitCgroupPath(path), path);
  for (const path of ['/', '/ckpt/ci/run', '/ckpt/abcd1234/job', '/ckpt/ci-runner/a/b', '/system.slice/ckpt/abcd1234/job/main', '/ckpt/ABCD1234/job/main']) assert.not.ok(isUnitCgroupPath(path), path);
});

test('a limit whose controller the node lacks throws, naming limit and controller, creating nothing', () => {
  const real = detectCgroups();
  const cases: Array<[keyof Limits, string, number]> = [
    ['memoryBytes', 'memory', 64 << 20],
    ['pids', 'pids', 10],
    ['cpuWeight', 'cpu', 200],
  ];
  for (const [limit, controller, value] of cases) {
    const without: CgroupLayout = {
      v1: real.v1.filter((h) => !h.controllers.includes(controller)),
      ...(real.v2 ? { v2: { ...real.v2, controllers: real.v2.controllers.filter((c) => c !== controller) } } : {}),
    };
    const rel = relPath();
    assert.throws(
      () => createUnitCgroups(without, rel, { [limit]: value }),
      (err: Error) => err.message.includes(`${limit}=${value}`) && err.message.includes(`'${controller}'`) && /missing/.test(err.message),
    );
    for (const mount of [...real.v1.map((h) => h.mountPoint), real.v2?.mountPoint]) {
      if (mount) assert.not.ok(existsSync(join(mount, rel)), `nothing created under ${mount}`);
    }
  }
  // Pure v2 with no controllers at all (e.g. hybrid without the v1 mounts): memory cannot be enforced.
  const bare: CgroupLayout = real.v2 ? { v1: [], v2: { ...real.v2, controllers: [] } } : { v1: [] };
  assert.throws(() => createUnitCgroups(bare, relPath(), { memoryBytes: 1 << 26 }), /memoryBytes=67108864.*'memory' cgroup controller is missing/);
  assert.throws(() => createUnitCgroups(real, relPath(), { cpuWeight: 20_000 }), /cpuWeight=20000 is out of range/);
  assert.throws(() => createUnitCgroups(real, relPath(), { memoryBytes: 10 }), /memoryBytes=10 is below/);
  assert.throws(() => createUnitCgroups(real, relPath(), { pids: 0 }), /pids=0 must be an integer ≥ 1/);
});

test('create is idempotent, writes limits and resets absent ones', async () => {
  const layout = detectCgroups();
  const rel = relPath();
  const first = createUnitCgroups(layout, rel, { memoryBytes: 64 << 20, pids: 50, cpuWeight: 200 });
  try {
    const again = createUnitCgroups(layout, rel, { memoryBytes: 32 << 20, pids: 7, cpuWeight: 50 });
    assert.equal(again, first);
    assert.ok(first.some((c) => c.controller === 'freezer' || c.controller === 'unified'));
    for (const c of first) assert.ok(existsSync(join(c.path, 'cgroup.procs')), `${c.path} exists`);
    const memV1 = v1Mount(layout, 'memory');
    const memDir = join(memV1 ?? layout.v2?.mountPoint ?? '/nonexistent', rel);
    const pidsDir = join(v1Mount(layout, 'pids') ?? layout.v2?.mountPoint ?? '/nonexistent', rel);
    const cpuV1 = v1Mount(layout, 'cpu');
    const cpuDir = join(cpuV1 ?? layout.v2?.mountPoint ?? '/nonexistent', rel);
    assert.is(Number(read(join(memDir, memV1 ? 'memory.limit_in_bytes' : 'memory.max'))), 32 << 20);
    if (memV1 && existsSync(join(memDir, 'memory.memsw.limit_in_bytes'))) assert.is(Number(read(join(memDir, 'memory.memsw.limit_in_bytes'))), 32 << 20);
    assert.is(read(join(pidsDir, 'pids.max')), '7');
    assert.is(read(join(cpuDir, cpuV1 ? 'cpu.shares' : 'cpu.weight')), cpuV1 ? String(weightToShares(50)) : '50');
    assert.is(weightToShares(100), 1024);
    assert.is(weightToShares(1), 10);
    assert.is(weightToShares(10000), 102400);

    createUnitCgroups(layout, rel, {});
    assert.is(read(join(pidsDir, 'pids.max')), 'max');
    assert.is(read(join(cpuDir, cpuV1 ? 'cpu.shares' : 'cpu.weight')), cpuV1 ? '1024' : '100');
    if (memV1) assert.ok(Number(read(join(memDir, 'memory.limit_in_bytes'))) > 2 ** 60);
    else assert.is(read(join(memDir, 'memory.max')), 'max');
  } finally {
    removeUnitCgroups(first, { emptyParents: 2 });
  }
  for (const c of first) assert.not.ok(existsSync(c.path), `${c.path} removed`);
});

test('addProcess moves a process; children forked afterwards inherit the cgroups', async () => {
  await withUnit({}, async (cgroups) => {
    const s = startInUnit(cgroups, 'sleep 30 & sleep 30 & (sleep 30 &); wait');
    // sh, two sleeps it waits for, and one whose parent (the subshell) exited at once.
    const pids = await waitFor('sh and 3 sleeps in the unit', () => {
      const p = unitProcesses(cgroups);
      const comms = p.map((pid) => (existsSync(`/proc/${pid}/comm`) ? read(`/proc/${pid}/comm`) : '?'));
      return p.length === 4 && comms.filter((c) => c === 'sleep').length === 3 && p;
    });
    assert.ok(pids.includes(s.pid));
    assert.equal(
      pids,
      [...pids].sort((a, b) => a - b),
    );
    for (const pid of pids) {
      const own = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
      const rel = cgroups[0]?.path.split('/').slice(-3).join('/') ?? '?';
      for (const c of cgroups) {
        const key = c.controller === 'unified' ? /^0::(.*)$/m : new RegExp(`^\\d+:[^:]*\\b${c.controller}\\b[^:]*:(.*)$`, 'm');
        assert.ok(key.exec(own)?.[1]?.endsWith(rel), `pid ${pid} is in ${c.controller} ${rel}:\n${own}`);
      }
    }
  });
});

test('freeze stops a counting process, thaw resumes it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ckpt-cg-'));
  const counter = join(dir, 'count');
  try {
    await withUnit({}, async (cgroups) => {
      startInUnit(cgroups, `i=0; while :; do i=$((i+1)); echo $i > ${counter}; done`);
      const value = () => (existsSync(counter) ? readFileSync(counter, 'utf8') : '');
      await waitFor('the counter to reach 100', () => Number(value()) >= 100);
      const { durationMs } = await freezeUnit(cgroups);
      assert.is(unitFreezeState(cgroups), 'frozen');
      const frozenAt = value();
      await sleep(150);
      assert.is(value(), frozenAt, 'no progress while frozen');
      assert.is(unitFreezeState(cgroups), 'frozen');
      await thawUnit(cgroups);
      assert.is(unitFreezeState(cgroups), 'thawed');
      await waitFor('the counter to move after thaw', () => value() !== frozenAt && Number(value()) > Number(frozenAt));
      console.log(`  freeze of a busy counter: ${durationMs.toFixed(2)} ms`);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return `median ${(s[Math.floor(s.length / 2)] ?? NaN).toFixed(2)} ms, max ${(s[s.length - 1] ?? NaN).toFixed(2)} ms`;
};

test('freeze and thaw 100 processes (50 busy, 50 sleeping); measured', async () => {
  await withUnit({}, async (cgroups, layout) => {
    startInUnit(
      cgroups,
      `i=0; while [ $i -lt 50 ]; do sh -c 'while :; do :; done' & i=$((i+1)); done
       i=0; while [ $i -lt 49 ]; do sleep 100 & i=$((i+1)); done; wait`,
    );
    await waitFor('100 processes in the unit', () => unitProcesses(cgroups).length === 100);
    const measure = async (label: string, cgs: UnitCgroup[]) => {
      const freeze: number[] = [];
      const thaw: number[] = [];
      for (let round = 0; round < 7; round++) {
        freeze.push((await freezeUnit(cgs)).durationMs);
        assert.is(unitFreezeState(cgs), 'frozen');
        thaw.push((await thawUnit(cgs)).durationMs);
        assert.is(unitFreezeState(cgs), 'thawed');
        await sleep(10);
      }
      console.log(`  ${label}, 100 processes: freeze ${stats(freeze)}; thaw ${stats(thaw)}`);
      assert.ok(Math.max(...freeze) < 1000, 'freeze of 100 processes under 1 s');
    };
    await measure(cgroups.some((c) => c.controller === 'freezer') ? 'v1 freezer' : 'cgroup2 cgroup.freeze', cgroups);
    if (cgroups.some((c) => c.controller === 'freezer') && layout.v2?.freeze)
      await measure(
        'cgroup2 cgroup.freeze',
        cgroups.filter((c) => c.controller === 'unified'),
      );
    assert.is(unitProcesses(cgroups).length, 100);
  });
});

test('memory limit: a process above memoryBytes is OOM-killed, one below survives', async () => {
  await withUnit({ memoryBytes: 64 << 20 }, async (cgroups) => {
    // `tail` keeps a line in memory until it sees a newline: /dev/zero has none.
    const s = startInUnit(
      cgroups,
      `head -c 16M /dev/zero | tail -n 1 >/dev/null; echo small=$?
       head -c 400M /dev/zero | tail -n 1 >/dev/null; echo big=$?`,
    );
    const { code } = await s.exited;
    assert.is(code, 0, `sh itself survived (stderr: ${s.err()})`);
    assert.match(s.out(), /^small=0$/m, 'below the limit: survives');
    assert.match(s.out(), /^big=137$/m, 'above the limit: killed by SIGKILL (128+9)');
    const mem = cgroups.find((c) => c.controller === 'memory') ?? cgroups.find((c) => c.controller === 'unified');
    if (mem?.controller === 'memory' && existsSync(join(mem.path, 'memory.oom_control'))) {
      const oomKills = /^oom_kill (\d+)$/m.exec(readFileSync(join(mem.path, 'memory.oom_control'), 'utf8'))?.[1];
      if (oomKills !== undefined) assert.ok(Number(oomKills) >= 1, 'the kernel counted an OOM kill');
    } else if (mem && existsSync(join(mem.path, 'memory.events'))) {
      assert.match(readFileSync(join(mem.path, 'memory.events'), 'utf8'), /^oom_kill [1-9]/m);
    }
  });
});

test('pids limit: a fork loop gets fork failures and fewer children than it asked for', async () => {
  await withUnit({ pids: 5 }, async (cgroups) => {
    const s = startInUnit(cgroups, 'i=0; while [ $i -lt 20 ]; do sleep 30 & i=$((i+1)); done; echo started=$i');
    const { code } = await s.exited;
    assert.match(s.err(), /fork|Resource temporarily unavailable/i, `fork failure reported (stderr: ${s.err()})`);
    assert.is.not(code, 0);
    assert.not.match(s.out(), /started=20/);
    const children = unitProcesses(cgroups).filter((p) => p !== s.pid);
    assert.ok(children.length < 20 && children.length <= 4, `at most 4 children besides sh, got ${children.length}`);
  });
});

const treeWithEscapee = async (cgroups: UnitCgroup[]) => {
  // The subshell forks `setsid sh` and exits at once: a double fork into a new session.
  const s = startInUnit(cgroups, `sleep 1000 & (setsid sh -c 'sleep 1000 & exec sleep 1001' &); sleep 1000 & wait`);
  // sh, 2 sleeps, and in a new session `sleep 1001` with its child `sleep 1000`.
  const pids = await waitFor('5 processes incl. one in a new session', () => {
    const p = unitProcesses(cgroups);
    return p.length === 5 && p.some((pid) => sid(pid) !== undefined && sid(pid) !== sid(s.pid)) && p;
  });
  return { s, pids };
};

test('killUnit kills the whole tree, including a double-forked setsid process (cgroup.kill when available)', async () => {
  await withUnit({}, async (cgroups) => {
    const { s, pids } = await treeWithEscapee(cgroups);
    await killUnit(cgroups);
    assert.equal(unitProcesses(cgroups), []);
    await waitFor('every process to be gone', () => pids.every((p) => !alive(p)), 2000);
    assert.is((await s.exited).signal, 'SIGKILL');
  });
});

test('killUnit without cgroup.kill: freeze, signal, thaw until empty, even while processes fork', async () => {
  await withUnit({ pids: 300 }, async (cgroups) => {
    const noKill = cgroups.filter((c) => c.controller !== 'unified');
    if (noKill.length === 0) return; // pure v2: only the cgroup.kill path exists
    const { pids } = await treeWithEscapee(cgroups);
    // A forker racing the kill.
    startInUnit(cgroups, `while :; do sleep 1000 & done`);
    await waitFor('the forker to have started some children', () => unitProcesses(cgroups).length > 20);
    await killUnit(noKill);
    assert.equal(unitProcesses(cgroups), []);
    await waitFor('every process to be gone', () => pids.every((p) => !alive(p)), 2000);
  });
});

test('remove fails clearly while processes remain, succeeds after kill', async () => {
  const layout = detectCgroups();
  const cgroups = createUnitCgroups(layout, relPath(), { pids: 20 });
  try {
    startInUnit(cgroups, 'sleep 30');
    await waitFor('2 processes', () => unitProcesses(cgroups).length === 2);
    assert.throws(() => removeUnitCgroups(cgroups), /2 process\(es\) remain.*kill the unit first/);
    for (const c of cgroups) assert.ok(existsSync(c.path), 'nothing removed');
    await killUnit(cgroups);
    removeUnitCgroups(cgroups, { emptyParents: 2 });
    for (const c of cgroups) {
      assert.not.ok(existsSync(c.path), `${c.path} removed`);
      assert.not.ok(existsSync(join(c.path, '..')), 'the empty ckpt-test/<random> parent removed too');
    }
    removeUnitCgroups(cgroups); // already gone: fine
  } finally {
    await killUnit(cgroups).catch(() => undefined);
    try {
      removeUnitCgroups(cgroups, { emptyParents: 2 });
    } catch {
      /* reported by the assertions above */
    }
  }
});

test.run();
