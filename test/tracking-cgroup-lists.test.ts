// A quiet process's cgroup is re-read from its cgroup's list of threads (cgroups/thread-lists.ts),
// not from its own /proc/PID/cgroup: real processes moved between real cgroups, as root.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import * as assert from 'uvu/assert';
import { CgroupThreadLists, threadListAt } from '../adapters/cgroups/thread-lists.js';
import { primaryCgroup, primaryHierarchy, readCgroups } from '../adapters/tracking/procfs.js';
import { jobHarness, killMembers, sigkill } from './support/jobs.js';
import { firstMissing, needCommand, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until as wait } from './support/wait.js';

const until = <T>(what: string, probe: () => T | undefined | false, ms = 30_000) => wait(what, probe, ms, 100);

const missing = firstMissing(needRoot, () => needCommand('python3', 'apt-get install -y python3'));
const test = suiteRequiring('cgroup thread lists (real processes and cgroups)', missing);

const { ckpt, ps, history, cleanup } = jobHarness('ckpt-lists', 'testnode');
const mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
const hierarchy = primaryHierarchy(readCgroups(process.pid)!)!;
const listFile = threadListAt(hierarchy, mountinfo)!;
/** Test cgroups in the primary hierarchy (the one the tracker records), removed after. */
const made: string[] = [];
const cgroup = (name: string): string => {
  const path = `/ckpt-test-lists-${process.pid}/${name}`;
  mkdirSync(dirname(listFile(path)), { recursive: true });
  made.push(path);
  return path;
};
const move = (path: string, id: number, file: 'cgroup.procs' | 'tasks' = 'cgroup.procs') => writeFileSync(`${dirname(listFile(path))}/${file}`, `${id}\n`);
const children: ChildProcess[] = [];
const start = (command: string, args: string[]) => {
  const child = spawn(command, args, { stdio: 'ignore' });
  children.push(child);
  return child.pid!;
};

test.after(() => {
  for (const c of children) if (c.pid) sigkill(c.pid);
  cleanup();
  for (const path of made) {
    const dir = dirname(listFile(path));
    if (existsSync(dir)) for (const pid of readFileSync(`${dir}/cgroup.procs`, 'utf8').split('\n').filter(Boolean)) sigkill(Number(pid));
  }
  for (const path of [...made, `/ckpt-test-lists-${process.pid}`].reverse()) {
    for (let i = 0; i < 50 && existsSync(dirname(listFile(path))); i++) {
      try {
        rmdirSync(dirname(listFile(path)));
      } catch {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100); // its killed processes are still leaving
      }
    }
  }
});

test('a cgroup lists the processes in it; one moved out is no longer listed there, and is in the new one', () => {
  const [a, b] = [cgroup('a'), cgroup('b')];
  const pid = start('sleep', ['60']);
  move(a, pid);
  const lists = new CgroupThreadLists(0, mountinfo);
  assert.ok(lists.holds(a, pid, 1));
  assert.not.ok(lists.holds(b, pid, 1));
  move(b, pid);
  assert.not.ok(lists.holds(a, pid, 2), 'moved out: a list read anew no longer holds it');
  assert.ok(lists.holds(b, pid, 2));
  assert.is(primaryCgroup(readCgroups(pid)!), b, 'as its own cgroup file says');
});

test('a list is read again only once older than its age limit', () => {
  const [a, b] = [cgroup('c'), cgroup('d')];
  const pid = start('sleep', ['60']);
  move(a, pid);
  const lists = new CgroupThreadLists(1000, mountinfo);
  assert.ok(lists.holds(a, pid, 0));
  move(b, pid);
  assert.ok(lists.holds(a, pid, 1000), 'the list read at 0 still answers at 1000');
  assert.not.ok(lists.holds(a, pid, 1001));
});

test('the main thread counts: a process whose main thread alone moved is no longer listed (cgroup v1 moves threads one by one)', async () => {
  if (hierarchy === 'unified') return console.log('skip: the primary hierarchy is cgroup2, which moves whole processes');
  const [a, b] = [cgroup('e'), cgroup('f')];
  const pid = start('python3', ['-c', 'import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); time.sleep(60)']);
  await until('its second thread', () => Number(/^Threads:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) === 2);
  move(a, pid);
  move(b, pid, 'tasks'); // the main thread only
  const lists = new CgroupThreadLists(0, mountinfo);
  assert.not.ok(lists.holds(a, pid, 1), 'another thread is still in a, the main thread is not');
  assert.ok(lists.holds(b, pid, 1));
  assert.is(primaryCgroup(readCgroups(pid)!), b);
});

test('no hierarchy mounted to read lists from: every answer is "cannot tell" (the process\'s own file is read)', () => {
  const a = cgroup('g');
  const pid = start('sleep', ['60']);
  move(a, pid);
  assert.not.ok(new CgroupThreadLists(0, '').holds(a, pid, 1));
  assert.ok(new CgroupThreadLists(0, mountinfo).holds(a, pid, 1));
  assert.not.ok(new CgroupThreadLists(0, mountinfo).holds('/../..' + a, pid, 1), 'a path the kernel would not print is not looked up');
});

test('the agent: a quiet member moved to another cgroup is recorded there (ProcessCgroupChanged)', async () => {
  assert.is(ckpt(['run', '--detach', '--job', 'moved', '--', 'sh', '-c', 'sleep 70 & sleep 71 & wait']).code, 0);
  const sleepers = await until('both sleepers', () => {
    const now = ps('moved').filter((m) => m.comm === 'sleep' && m.state === 'running');
    return now.length === 2 && now;
  });
  // Quiet by now: re-read every 3.2 s, in rounds, their cgroup from the unit cgroup's list.
  await new Promise((r) => setTimeout(r, 8000));
  const target = cgroup('moved');
  const [moved, stayed] = sleepers;
  move(target, moved!.pid);
  const changed = await until('the move to be recorded', () => history('moved').find((e) => e.type === 'ProcessCgroupChanged' && (e.data.process as { pid: number }).pid === moved!.pid));
  assert.is(changed.data.cgroup, target);
  const rows = ps('moved');
  assert.is(rows.find((m) => m.pid === moved!.pid)!.cgroup, target);
  assert.is(rows.find((m) => m.pid === stayed!.pid)!.cgroup, stayed!.cgroup, 'the other is where it was');
  killMembers(rows);
  await until('the job to end', () => history('moved').some((e) => e.type === 'JobEnded'));
});

test.run();
