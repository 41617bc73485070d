// adapters/tracking/procfs against real processes (needs root: other processes' fds and maps).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, copyFileSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import {
  bootTimeMs,
  clockTicksPerSecond,
  descendantsOf,
  findDependents,
  HeldStatFiles,
  listPids,
  openResources,
  type ProcStat,
  parseCgroups,
  parseSsUnix,
  primaryCgroup,
  readCgroups,
  readCmdline,
  readExe,
  readStat,
  readTerminals,
  scanProcesses,
  startTimeMs,
} from '../adapters/tracking/procfs.js';
import { needRoot, suiteRequiring } from './support/prerequisites.js';
import { until } from './support/wait.js';

const test = suiteRequiring('procfs', needRoot());

const dir = mkdtempSync(join(tmpdir(), 'ckpt-procfs-'));
/** Everything started here; killed (its whole process group when detached) after each test. */
let started: ChildProcess[] = [];
let extraPids: number[] = [];

const kill = (pid: number) => {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {}
};

test.after.each(() => {
  for (const c of started) {
    if (c.pid === undefined) continue;
    try {
      process.kill(-c.pid, 'SIGKILL'); // detached: its own process group
    } catch {}
    kill(c.pid);
  }
  for (const pid of extraPids) kill(pid);
  started = [];
  extraPids = [];
});
test.after(() => rmSync(dir, { recursive: true, force: true }));

// Runs "$@" with every fd above 2 closed: fds inherited by this test (e.g. a pipe its runner
// leaked) would otherwise be shared by all the processes started here. Same pid (exec).
const CLOSE_FDS = 'for fd in $(ls /proc/$$/fd); do if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi; done; exec "$@"';
const closingFds = (cmd: string, args: string[]) => ['-c', CLOSE_FDS, 'bash', cmd, ...args];

/**
 * Starts a process (in its own process group when detached), stdio to /dev/null, so it shares
 * nothing with us; resolves once the wrapper has exec'd it.
 */
const start = async (cmd: string, args: string[], detached = true): Promise<ChildProcess> => {
  const child = spawn('bash', closingFds(cmd, args), { stdio: 'ignore', detached });
  started.push(child);
  const pid = child.pid;
  if (pid === undefined) throw new Error(`cannot start ${cmd}`);
  await until(`${cmd} to start`, () => readStat(pid)?.comm !== 'bash');
  return child;
};

let pyCount = 0;
/**
 * Runs a python3 script with stdout/stderr to files (not pipes or sockets to us) and returns the
 * numbers of its first output line.
 */
const python = async (script: string, detached = true): Promise<number[]> => {
  const out = join(dir, `py${++pyCount}.out`);
  const err = join(dir, `py${pyCount}.err`);
  const outFd = openSync(out, 'w');
  const errFd = openSync(err, 'w');
  const child = spawn('bash', closingFds('python3', ['-c', script]), { stdio: ['ignore', outFd, errFd], detached });
  closeSync(outFd);
  closeSync(errFd);
  started.push(child);
  try {
    const line = await until('python output', () => {
      const text = readFileSync(out, 'utf8');
      return text.includes('\n') && text.split('\n')[0];
    });
    return line.trim().split(/\s+/).map(Number);
  } catch (e) {
    throw new Error(`${(e as Error).message}; stderr: ${readFileSync(err, 'utf8')}`);
  }
};

const ps = (pid: number, format: string) => execFileSync('ps', ['-o', format, '-p', String(pid)], { encoding: 'utf8' }).trim();
const fdInode = (pid: number, fd: number) => /\[(\d+)\]/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];

// --- readStat -----------------------------------------------------------------------------------

test('readStat of a sleep matches ps and field 22', async () => {
  const child = await start('sleep', ['100']);
  const pid = child.pid!;
  const s = await until('it to sleep', () => readStat(pid)?.state === 'S' && readStat(pid)); // not still running just after exec
  assert.ok(s);
  const [ppid, pgid, sid, comm] = ps(pid, 'ppid=,pgid=,sid=,comm=').split(/\s+/);
  assert.equal(s.pid, pid);
  assert.equal(s.comm, comm);
  assert.equal(s.comm, 'sleep');
  assert.equal(s.ppid, Number(ppid));
  assert.equal(s.ppid, process.pid);
  assert.equal(s.pgid, Number(pgid));
  assert.equal(s.pgid, pid); // detached: own group and session
  assert.equal(s.sid, Number(sid));
  assert.equal(s.state, 'S');
  assert.equal(s.threads, 1);
  const field22 = execFileSync('awk', ['{print $22}', `/proc/${pid}/stat`], { encoding: 'utf8' }).trim();
  assert.equal(s.startTime, Number(field22));
});

test('readStat parses a comm with spaces and parentheses (takes the last ")")', async () => {
  const exe = join(dir, 'x) (y) z');
  copyFileSync('/bin/sleep', exe);
  execFileSync('chmod', ['+x', exe]);
  const pid = (await start(exe, ['100'])).pid!;
  // Just exec'd, it may still be running on a busy machine: read it once it sleeps.
  const s = await until('it to sleep', () => readStat(pid)?.state === 'S' && readStat(pid));
  assert.ok(s);
  assert.equal(s.comm, 'x) (y) z');
  assert.equal(s.state, 'S');
  assert.equal(s.ppid, process.pid);
  assert.equal(s.pgid, pid);
  assert.equal(s.threads, 1);
  // The start time, as a date, agrees with ps's (whole seconds).
  const lstart = Date.parse(ps(pid, 'lstart='));
  assert.ok(Math.abs(startTimeMs(s.startTime) - lstart) < 1500, `${startTimeMs(s.startTime)} vs ${lstart}`);
  assert.ok(Math.abs(startTimeMs(s.startTime) - Date.now()) < 10_000);
  assert.equal(readCmdline(pid), [exe, '100']);
  assert.equal(readExe(pid), exe);
});

test('readStat shows a new process group (setpgid) and a new session (setsid)', async () => {
  const [pid] = await python('import os, time\nos.setpgid(0, 0)\nprint(os.getpid(), flush=True)\ntime.sleep(100)', false);
  extraPids.push(pid!);
  const s = readStat(pid!);
  assert.ok(s);
  assert.equal(s.pgid, pid);
  assert.equal(s.sid, readStat(process.pid)!.sid); // same session as ours
  // setsid(1) execs directly when not a group leader (not detached): the same pid.
  const leader = (await start('setsid', ['sleep', '100'], false)).pid!;
  const t = await until('setsid', () => {
    const st = readStat(leader);
    return st?.comm === 'sleep' && st;
  });
  assert.equal(t.sid, leader);
  assert.equal(t.pgid, leader);
});

test('a vanished process reads as undefined everywhere', async () => {
  const child = spawn('true', [], { stdio: 'ignore' });
  const pid = child.pid!;
  await new Promise((r) => child.on('exit', r));
  await until('reaped', () => readStat(pid) === undefined);
  assert.is(readStat(pid), undefined);
  assert.is(readCgroups(pid), undefined);
  assert.is(readCmdline(pid), undefined);
  assert.is(readExe(pid), undefined);
  assert.is(openResources(pid), undefined);
  assert.equal(findDependents([pid], undefined), []);
  assert.not.ok(listPids().includes(pid));
});

test('a zombie has a stat (state Z) but no exe and an empty cmdline; kernel threads have no exe', async () => {
  // `sleep 0` is reaped by nobody: its parent sh became `sleep 100`.
  const parent = (await start('sh', ['-c', 'sleep 0 & exec sleep 100'])).pid!;
  const zombie = await until('zombie', () => {
    const table = scanProcesses();
    return table.find((p) => p.ppid === parent && p.state === 'Z');
  });
  assert.is(readExe(zombie.pid), undefined);
  assert.equal(readCmdline(zombie.pid), []);
  const kthreadd = readStat(2);
  assert.ok(kthreadd);
  assert.is(readExe(2), undefined);
  assert.equal(readCmdline(2), []);
});

// --- cgroups, listing, scanning -------------------------------------------------------------

test('readCgroups and primaryCgroup', () => {
  const own = readCgroups(process.pid);
  assert.ok(own);
  assert.equal(own, parseCgroups(readFileSync('/proc/self/cgroup', 'utf8')));
  assert.type(primaryCgroup(own), 'string');
  assert.equal(parseCgroups('12:freezer:/ckpt/job1\n4:cpu,cpuacct:/a:b\n1:name=systemd:/x\n0::/user.slice/u.scope\n'), {
    v1: { freezer: '/ckpt/job1', cpu: '/a:b', cpuacct: '/a:b', 'name=systemd': '/x' },
    unified: '/user.slice/u.scope',
  });
  assert.equal(primaryCgroup(parseCgroups('12:freezer:/ckpt/job1\n0::/u\n')), '/ckpt/job1');
  assert.equal(primaryCgroup(parseCgroups('0::/system.slice/x.service\n')), '/system.slice/x.service');
  assert.equal(primaryCgroup(parseCgroups('3:cpu:/c\n')), '/c');
  assert.equal(primaryCgroup({ v1: {} }), '/');
});

test('listPids lists processes, not threads; scanProcesses matches it', () => {
  const pids = listPids();
  assert.ok(pids.includes(process.pid));
  assert.ok(pids.includes(1));
  const threads = readdirSync('/proc/self/task')
    .map(Number)
    .filter((t) => t !== process.pid);
  assert.ok(threads.length > 0);
  for (const t of threads) assert.not.ok(pids.includes(t), `thread ${t} listed`);
  const table = scanProcesses();
  assert.ok(table.length > pids.length / 2);
  const self = table.find((p) => p.pid === process.pid);
  assert.ok(self);
  assert.equal(self.threads, threads.length + 1);
});

test('descendantsOf a tree of nested sh', async () => {
  const root = (await start('sh', ['-c', 'sleep 100 & sh -c "sleep 101 & sleep 102 & wait" & wait'])).pid!;
  const desc = await until('the tree', () => {
    const d = descendantsOf([root], scanProcesses());
    const comms = d.map((p) => p.comm).sort();
    return JSON.stringify(comms) === '["sh","sleep","sleep","sleep"]' && d;
  });
  const inner = desc.find((p) => p.comm === 'sh')!;
  assert.equal(inner.ppid, root);
  assert.equal(desc.filter((p) => p.ppid === inner.pid).length, 2);
  assert.equal(desc.filter((p) => p.ppid === root).length, 2);
  for (const p of desc) assert.equal(p.pgid, root);
  // Pure: roots excluded unless asked, several roots, unknown roots, no infinite loop on cycles.
  const row = (pid: number, ppid: number): ProcStat => ({ pid, ppid, comm: 'x', state: 'S', pgid: 1, sid: 1, startTime: pid, threads: 1 });
  const table = [row(1, 0), row(10, 1), row(11, 10), row(12, 11), row(20, 1), row(21, 20), row(30, 31), row(31, 30)];
  assert.equal(
    descendantsOf([10], table).map((p) => p.pid),
    [11, 12],
  );
  assert.equal(
    descendantsOf([10], table, { includeRoots: true }).map((p) => p.pid),
    [10, 11, 12],
  );
  assert.equal(
    descendantsOf([11, 20], table).map((p) => p.pid),
    [12, 21],
  );
  assert.equal(descendantsOf([99], table), []);
  assert.equal(
    descendantsOf([30], table).map((p) => p.pid),
    [31],
  );
});

test('clock: CLK_TCK and boot time', () => {
  assert.is(clockTicksPerSecond(), Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })));
  const uptime = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
  assert.ok(Math.abs(bootTimeMs() + uptime * 1000 - Date.now()) < 2000);
});

// --- dependents -------------------------------------------------------------------------------

test('findDependents: the other end of a pipe', async () => {
  const root = (await start('sh', ['-c', 'sleep 100 | cat'])).pid!;
  const [sleep, cat] = await until('the pipeline', () => {
    const d = descendantsOf([root], scanProcesses());
    const s = d.find((p) => p.comm === 'sleep');
    const c = d.find((p) => p.comm === 'cat');
    return s && c && ([s, c] as const);
  });
  const inode = fdInode(cat.pid, 0)!;
  assert.equal(fdInode(sleep.pid, 1), inode);
  const res = openResources(cat.pid);
  assert.ok(res);
  assert.equal(res.pipes, [inode]);
  assert.equal(findDependents([cat.pid]), [{ pid: sleep.pid, startTime: sleep.startTime, member: cat.pid, via: 'pipe', inode }]);
  // Members are not dependents of each other; the ignore set is honoured.
  assert.equal(findDependents([cat.pid, sleep.pid]), []);
  assert.equal(findDependents([cat.pid], undefined, { ignore: new Set([sleep.pid]) }), []);
  // A given candidate list limits the search.
  assert.equal(findDependents([cat.pid], [readStat(root)!]), []);
});

test('findDependents: a unix socketpair and a unix connection by path (with spaces)', async () => {
  // Member: the forked child; dependent: the parent (each closed the other end).
  const [parent, child] = await python(
    [
      'import os, socket, time',
      'a, b = socket.socketpair()',
      'pid = os.fork()',
      'if pid == 0:',
      '    a.close(); time.sleep(100); os._exit(0)',
      'b.close()',
      'print(os.getpid(), pid, a.fileno(), flush=True)',
      'time.sleep(100)',
    ].join('\n'),
  );
  await until('fork closed its end', () => openResources(child!)?.unixSockets.length === 1);
  const parentRes = openResources(parent!)!;
  const childRes = openResources(child!)!;
  assert.equal(parentRes.unixSockets.length, 1);
  assert.equal(parentRes.other.sockets, []);
  const found = findDependents([child!]);
  assert.equal(found, [
    {
      pid: parent!,
      startTime: readStat(parent!)!.startTime,
      member: child!,
      via: 'unix-socket',
      inode: parentRes.unixSockets[0]!,
      memberInode: childRes.unixSockets[0]!,
    },
  ]);

  // Member listens on a path that looks like ss columns; a non-member client connects.
  const path = join(dir, 's 1 * x');
  const [server, client] = await python(
    [
      'import os, socket, time',
      's = socket.socket(socket.AF_UNIX)',
      `s.bind(${JSON.stringify(path)}); s.listen()`,
      'pid = os.fork()',
      'if pid == 0:',
      '    s.close(); c = socket.socket(socket.AF_UNIX)',
      `    c.connect(${JSON.stringify(path)}); time.sleep(100); os._exit(0)`,
      'conn, _ = s.accept()',
      'print(os.getpid(), pid, flush=True)',
      'time.sleep(100)',
    ].join('\n'),
  );
  const hits = findDependents([server!]);
  assert.equal(hits.length, 1);
  assert.equal(hits[0]!.pid, client);
  assert.equal(hits[0]!.via, 'unix-socket');
  assert.equal(hits[0]!.inode, openResources(client!)!.unixSockets[0]);
  assert.ok(openResources(server!)!.unixSockets.includes(hits[0]!.memberInode!));
  // And the other way round.
  assert.equal(
    findDependents([client!]).map((d) => [d.pid, d.via]),
    [[server, 'unix-socket']],
  );
});

test('findDependents: SysV shared memory attached in two processes', async () => {
  const [parent, child, shmid] = await python(
    [
      'import ctypes, os, time',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'libc.shmat.restype = ctypes.c_void_p',
      'libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]',
      'shmid = libc.shmget(0, 4096, 0o1000 | 0o600)', // IPC_PRIVATE, IPC_CREAT
      'assert shmid >= 0, ctypes.get_errno()',
      'addr = libc.shmat(shmid, None, 0)',
      'assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()',
      'libc.shmctl(shmid, 0, None)', // IPC_RMID: gone once both exit
      'pid = os.fork()',
      'if pid == 0:',
      '    time.sleep(100); os._exit(0)',
      'print(os.getpid(), pid, shmid, flush=True)',
      'time.sleep(100)',
    ].join('\n'),
  );
  assert.equal(openResources(child!)!.sysvShm, [String(shmid)]);
  assert.equal(findDependents([child!]), [{ pid: parent!, startTime: readStat(parent!)!.startTime, member: child!, via: 'sysv-shm', inode: String(shmid) }]);
});

test('findDependents: a POSIX shm file mapped by one process, held open by another, and unlinked', async () => {
  const name = `/dev/shm/ckpt-procfs-${process.pid}`;
  // Member: the child, which only holds the fd (no mapping); dependent: the parent, which maps it.
  const [parent, child, ino] = await python(
    [
      'import mmap, os, time',
      `fd = os.open(${JSON.stringify(name)}, os.O_CREAT | os.O_RDWR, 0o600); os.ftruncate(fd, 4096)`,
      'pid = os.fork()',
      'if pid == 0:',
      '    time.sleep(100); os._exit(0)',
      'm = mmap.mmap(fd, 4096, mmap.MAP_SHARED); os.close(fd)',
      'print(os.getpid(), pid, os.stat(' + JSON.stringify(name) + ').st_ino, flush=True)',
      'time.sleep(100)',
    ].join('\n'),
  );
  const expected = { pid: parent!, startTime: readStat(parent!)!.startTime, member: child!, via: 'posix-shm', inode: String(ino), name };
  assert.equal(findDependents([child!]), [expected]);
  // The other way round: the mapping makes the member, the fd makes the dependent.
  assert.equal(
    findDependents([parent!]).map((d) => [d.pid, d.via, d.name]),
    [[child, 'posix-shm', name]],
  );
  // Unlinked (shm_unlink): still the same file, "(deleted)" in maps and fd links.
  rmSync(name);
  assert.equal(findDependents([child!]), [expected]);
  // Another /dev/shm file is not shared.
  const other = (await start('bash', ['-c', `exec 7<>/dev/shm/ckpt-procfs-other-${process.pid}; rm /dev/shm/ckpt-procfs-other-${process.pid}; exec sleep 100`])).pid!;
  assert.equal(findDependents([other]), []);
});

test('findDependents: a memfd held by a member and mapped by a non-member', async () => {
  const [parent, child, ino] = await python(
    [
      'import mmap, os, time',
      'fd = os.memfd_create("ckpt-test"); os.ftruncate(fd, 4096)',
      'ino = os.fstat(fd).st_ino',
      'pid = os.fork()',
      'if pid == 0:',
      '    time.sleep(100); os._exit(0)',
      'm = mmap.mmap(fd, 4096, mmap.MAP_SHARED); os.close(fd)',
      'print(os.getpid(), pid, ino, flush=True)',
      'time.sleep(100)',
    ].join('\n'),
  );
  assert.equal(findDependents([child!]), [{ pid: parent!, startTime: readStat(parent!)!.startTime, member: child!, via: 'memfd', inode: String(ino), name: 'memfd:ckpt-test' }]);
  // Two memfds of the same name are different files.
  const [lone] = await python('import os, time\nfd = os.memfd_create("ckpt-test")\nprint(os.getpid(), flush=True)\ntime.sleep(100)');
  assert.equal(findDependents([lone!]), []);
});

test('findDependents: a named FIFO opened by a member and a non-member', async () => {
  const fifo = join(dir, 'a fifo');
  execFileSync('mkfifo', [fifo]);
  // The reader opens it read-write: opening a FIFO for reading alone waits for a writer.
  const reader = (await start('bash', ['-c', 'exec sleep 100 <>"$0"', fifo])).pid!;
  const writer = (await start('bash', ['-c', 'exec sleep 100 >"$0"', fifo])).pid!;
  const ino = String(execFileSync('stat', ['-c', '%i', fifo], { encoding: 'utf8' }).trim());
  assert.equal(findDependents([reader]), [{ pid: writer, startTime: readStat(writer)!.startTime, member: reader, via: 'fifo', inode: ino, name: fifo }]);
  assert.equal(findDependents([reader, writer]), []);
  // A regular file open in both is not a dependency.
  const file = join(dir, 'plain');
  execFileSync('touch', [file]);
  const a = (await start('bash', ['-c', 'exec sleep 100 <"$0"', file])).pid!;
  await start('bash', ['-c', 'exec sleep 100 <"$0"', file]);
  assert.equal(findDependents([a]), []);
});

test('readTerminals: the master of a pty pair in one process, its slave (fds and controlling terminal) in a child', async () => {
  const [parent, child, index] = await python(
    [
      'import ctypes, os, pty, time',
      'libc = ctypes.CDLL(None); libc.ptsname.restype = ctypes.c_char_p',
      'pid, master = pty.fork()', // the child: a session leader with the slave as controlling terminal and fds 0-2
      'if pid == 0:',
      '    time.sleep(100); os._exit(0)',
      'print(os.getpid(), pid, libc.ptsname(master).decode().split("/")[-1], flush=True)',
      'time.sleep(100)',
    ].join('\n'),
  );
  const mine = readTerminals(parent!)!;
  assert.equal(mine.masters, [index]);
  assert.equal([...mine.slaves], []);
  const theirs = await until('the child on its terminal', () => {
    const t = readTerminals(child!);
    return t?.slaves.get(index!)?.length === 4 && t;
  });
  assert.equal(theirs.masters, []);
  assert.equal(theirs.slaves.get(index!), ['fd 0', 'fd 1', 'fd 2', 'controlling terminal']);
  assert.equal(theirs.others, []);
  // No terminal at all: stdio to /dev/null, no controlling terminal.
  assert.equal(readTerminals((await start('sleep', ['100'])).pid!), { slaves: new Map(), masters: [], others: [] });
});

test('findDependents: unrelated processes and TCP connections are not dependents', async () => {
  const loner = (await start('sleep', ['100'])).pid!;
  const [server, client] = await python(
    [
      'import os, socket, time',
      's = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()',
      'port = s.getsockname()[1]',
      'pid = os.fork()',
      'if pid == 0:',
      '    s.close(); c = socket.create_connection(("127.0.0.1", port)); time.sleep(100); os._exit(0)',
      'conn, _ = s.accept()',
      'print(os.getpid(), pid, flush=True)',
      'time.sleep(100)',
    ].join('\n'),
  );
  const res = openResources(server!)!;
  assert.equal(res.unixSockets, []);
  assert.equal(res.other.sockets.length, 2); // listening + accepted
  const unreadable: number[] = [];
  assert.equal(findDependents([server!], undefined, { onUnreadable: (pid) => unreadable.push(pid) }), []);
  assert.equal(findDependents([loner]), []);
  // Some processes may be unreadable even to root (e.g. a sandbox's init); ours never are.
  for (const pid of [process.pid, server!, client!, loner]) assert.not.ok(unreadable.includes(pid));
});

test('findDependents: our own stdio socketpair to a child, unless ignored', async () => {
  // Node's stdio "pipes" are unix socketpairs: the launching process is a dependent.
  const child = spawn('bash', closingFds('sleep', ['100']), { stdio: ['ignore', 'pipe', 'ignore'] });
  started.push(child);
  const pid = child.pid!;
  await until('exec', () => readStat(pid)?.comm === 'sleep');
  const found = findDependents([pid]);
  assert.equal(
    found.map((d) => [d.pid, d.via]),
    [[process.pid, 'unix-socket']],
  );
  assert.equal(findDependents([pid], undefined, { ignore: new Set([process.pid]) }), []);
});

test('parseSsUnix: header, unconnected sockets, paths with spaces, names to settle ambiguity', () => {
  const text = [
    'Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess',
    'u_str ESTAB  0      0      * 1680  * 1681',
    'u_str LISTEN 0      444    /tmp/a b 38005  * 0',
    'u_str ESTAB  0      0      /tmp/s 1 * x 500  * 501',
    'u_dgr ESTAB  0      0      @abstract 7  /dev/log 8',
    '',
  ].join('\n');
  const names = new Map([['500', '/tmp/s 1 * x']]);
  assert.equal(
    [...parseSsUnix(text, names)],
    [
      ['1680', '1681'],
      ['500', '501'],
      ['7', '8'],
    ],
  );
});

const ident = (s: ProcStat | undefined) => s && [s.pid, s.startTime, s.ppid, s.comm];

test('a held stat file reads what readStat reads, and once its process is gone reads it gone, though its PID is another process’s (ns_last_pid)', async () => {
  const held = new HeldStatFiles();
  for (let attempt = 1; ; attempt++) {
    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    const pid = child.pid!;
    await until('sleep to exec', () => readStat(pid)?.comm === 'sleep');
    assert.equal(ident(held.read(pid, true)), ident(readStat(pid)));
    assert.is(held.size, 1);
    kill(pid);
    await new Promise((r) => child.once('exit', r)); // reaped by us
    writeFileSync('/proc/sys/kernel/ns_last_pid', String(pid - 1));
    const other = spawn('sleep', ['60'], { stdio: 'ignore' });
    started.push(other);
    if (other.pid !== pid) {
      held.release(pid);
      if (attempt < 20) continue; // another process took the PID first
      assert.unreachable(`could not make PID ${pid} be reused in 20 attempts`);
    }
    await until('the new process', () => readStat(pid) !== undefined);
    assert.is(held.read(pid, true), undefined, 'the held file reads its own process: gone');
    assert.ok(readStat(pid), 'the PID is taken');
    held.release(pid);
    assert.is(held.size, 0);
    return;
  }
});

test('no room to hold a stat file: read as readStat does', async () => {
  const none = new HeldStatFiles(0);
  const pid = (await start('sleep', ['60'])).pid!;
  assert.equal(ident(none.read(pid, true)), ident(readStat(pid)));
  assert.is(none.size, 0);
});

test.run();
