// What real jobs hold, end to end with real CRIU: shared memory (POSIX shm, memfd) and named FIFOs
// between members survive checkpoint, kill -9 and restart with their content and their sharing;
// the same resources shared with a process outside the job make it a dependent; inotify watches
// come back; a job with its own pseudo-terminal is restored, a job on a terminal outside it is
// refused with the reason. docs/criu.md ("What a job may hold") points at these tests.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { CLI, jobHarness, sigkill } from './support/jobs.js';
import { firstMissing, needCommand, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until as wait } from './support/wait.js';

const until = <T>(what: string, probe: () => T | undefined | false, ms = 30_000) => wait(what, probe, ms, 50);
const missing = firstMissing(
  needRoot,
  () => (locateCriu() ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)'),
  () => needCommand('python3', 'apt-get install -y python3'),
);
const test = suiteRequiring('job resources (real CRIU)', missing);

const NODE = 'resnode';
const { work, h, ckpt, ps, running, killAll, cleanup } = jobHarness('ckpt-resources', NODE);
const outsiders: ChildProcess[] = [];
const shmName = `/dev/shm/ckpt-resources-${process.pid}`;
test.after(() => {
  for (const c of outsiders) if (c.pid) sigkill(c.pid, true);
  cleanup([NODE]);
  rmSync(shmName, { force: true });
});

// Writes V to OUT (whole, by rename) and appends it to OUT.log, each opened anew: no file the
// images would pin.
const REPORT = `def report(v):
    with open(out + '.tmp', 'w') as f: f.write(str(v))
    os.rename(out + '.tmp', out)
    with open(out + '.log', 'a') as f: f.write(f'{v}\\n')`;

// A parent and its child share MODE (shm FILE | memfd | fifo FILE): the child counts into it, the
// parent copies what it reads to OUT and appends it to OUT.log (opened anew each time: no file the
// images would pin). The log going back after a restart to about the checkpointed value shows the
// content came back; the log still growing shows the two still share it.
const PAIR = `import mmap, os, struct, sys, time
mode, out = sys.argv[1], sys.argv[2]
${REPORT}
if mode == 'fifo':
    if not os.path.exists(sys.argv[3]): os.mkfifo(sys.argv[3])
    if os.fork() == 0:
        w = open(sys.argv[3], 'w'); i = 0
        while True:
            i += 1; w.write(f'{i}\\n'); w.flush(); time.sleep(0.05)
    for line in open(sys.argv[3]): report(line.strip())
if mode == 'memfd': fd = os.memfd_create('ckpt-pair')
else: fd = os.open(sys.argv[3], os.O_CREAT | os.O_RDWR, 0o600)
os.ftruncate(fd, 4096)
m = mmap.mmap(fd, 4096, mmap.MAP_SHARED)
if os.fork() == 0:
    i = 0
    while True:
        i += 1; m[0:8] = struct.pack('q', i); time.sleep(0.05)
while True:
    report(struct.unpack('q', m[0:8])[0]); time.sleep(0.05)
`;

// Counts the files created in a directory (inotify IN_CREATE): OUT is "COUNT NAME".
const WATCH = `import ctypes, os, struct, sys
watched, out = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init()
assert libc.inotify_add_watch(fd, watched.encode(), 0x100) >= 0
n = 0
while True:
    buf = os.read(fd, 4096); i = 0
    while i < len(buf):
        ln = struct.unpack_from('iIII', buf, i)[3]; name = buf[i + 16:i + 16 + ln].rstrip(b'\\0').decode(); i += 16 + ln; n += 1
        with open(out + '.tmp', 'w') as f: f.write(f'{n} {name}')
        os.rename(out + '.tmp', out)
`;

// A job with its own terminal: the child counts on the pty slave, the parent reads the master.
const OWN_PTY = `import os, pty, sys
out = sys.argv[1]
${REPORT}
pid, master = pty.fork()
if pid == 0:
    os.execvp('sh', ['sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done'])
buf = b''
while True:
    buf += os.read(master, 4096)
    lines = buf.split(b'\\r\\n'); buf = lines.pop()
    if lines: report(lines[-1].decode())
`;

// Runs argv on a new pseudo-terminal and drains its master: a user's terminal, outside any job.
const ON_TERMINAL = `import os, pty, sys
pid, master = pty.fork()
if pid == 0: os.execvp(sys.argv[1], sys.argv[1:])
try:
    while os.read(master, 4096): pass
except OSError: pass
os.waitpid(pid, 0)
`;

// Maps FILE and sleeps: a process outside the job sharing its /dev/shm file.
const MAP = `import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR); m = mmap.mmap(fd, 4096, mmap.MAP_SHARED); os.close(fd)
print(os.getpid(), flush=True); time.sleep(1000)
`;

const script = (name: string, text: string) => {
  const path = join(work, name);
  writeFileSync(path, text);
  return path;
};
const pair = script('pair.py', PAIR);

const start = (job: string, argv: string[]) => {
  const r = ckpt(['run', '--detach', '--job', job, '--', ...argv]);
  assert.is(r.code, 0, r.err);
};
const checkpoint = (job: string) => {
  const r = ckpt(['checkpoint', job, '--wait', '--json']);
  assert.is(r.code, 0, r.err);
};
const restart = (job: string) => {
  const r = ckpt(['restart', job, '--wait', '--json']);
  return { code: r.code, err: r.err, reason: (JSON.parse(r.out || '{}') as { reason?: string | null }).reason ?? '' };
};
const counter = (file: string) => (existsSync(file) ? Number(readFileSync(file, 'utf8').trim().split(' ')[0] || 0) : 0);

/** Checkpoint, kill -9 every process, restart: the counter in `out` resumes from the checkpoint and goes on. */
const survivesRestart = async (job: string, out: string) => {
  const logged = () => (existsSync(`${out}.log`) ? readFileSync(`${out}.log`, 'utf8').split('\n').filter(Boolean).map(Number) : []);
  await until(`${job} counting`, () => counter(out) > 5);
  const beforeCheckpoint = counter(out);
  checkpoint(job);
  const atCheckpoint = counter(out);
  await until(`${job} to go on`, () => counter(out) > atCheckpoint + 100);
  killAll(job);
  const atKill = logged().length;
  const killedAt = Math.max(...logged());
  const { code, err, reason } = restart(job);
  assert.is(code, 0, `${err} ${reason}`);
  // What the parent reported after the restart, however late the restart's own report came: it went
  // back to the count of the checkpoint (between the last value seen before it and the first after),
  // not to 0 and not on from the kill — the shared content came back with the images…
  const sinceRestart = () => logged().slice(atKill);
  const resumed = await until(`${job} restored`, () => {
    const i = sinceRestart().findIndex((v) => v >= beforeCheckpoint && v <= atCheckpoint + 1);
    return i >= 0 && { at: atKill + i, value: sinceRestart()[i]! };
  }).catch((e: Error) => {
    throw new Error(`${e.message}: expected a count in ${beforeCheckpoint}..${atCheckpoint + 1}, the parent reported ${sinceRestart().slice(0, 20).join(' ')}`);
  });
  // …and goes on from there: the parent reads what the child writes, so they share it again.
  await until(`${job} to count on from ${resumed.value} after the restart (killed at ${killedAt})`, () =>
    logged()
      .slice(resumed.at)
      .some((v) => v >= resumed.value + 10 && v < killedAt),
  );
  killAll(job);
};

test('members sharing a POSIX shm file (/dev/shm) keep its content and their sharing across checkpoint, kill and restart', async () => {
  const out = join(work, 'shm.out');
  start('shm-pair', ['python3', pair, 'shm', out, shmName]);
  await survivesRestart('shm-pair', out);
});

test('members sharing a memfd keep its content and their sharing across checkpoint, kill and restart', async () => {
  const out = join(work, 'memfd.out');
  start('memfd-pair', ['python3', pair, 'memfd', out]);
  await survivesRestart('memfd-pair', out);
});

test('members talking through a named FIFO go on talking after checkpoint, kill and restart', async () => {
  const out = join(work, 'fifo.out');
  start('fifo-pair', ['python3', pair, 'fifo', out, join(work, 'a fifo')]);
  await survivesRestart('fifo-pair', out);
});

test('a POSIX shm file shared by a member and a process outside the job makes that process a dependent, named', async () => {
  const out = join(work, 'shm-outside.out');
  const file = `${shmName}-outside`;
  start('shm-outside', ['python3', pair, 'shm', out, file]);
  await until('the job', () => existsSync(file) && counter(out) > 0);
  const outsider = spawn('python3', ['-c', MAP, file], { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
  outsiders.push(outsider);
  const pid = await new Promise<number>((resolve) => outsider.stdout!.once('data', (d) => resolve(Number(String(d).trim()))));
  const row = await until('the outsider as a dependent', () => ps('shm-outside').find((m) => m.pid === pid));
  assert.is(row.reason, 'dependent');
  const { via, name } = row.dependsOn as { via: string; name?: string };
  assert.equal([via, name], ['posix-shm', file]);
  rmSync(file, { force: true });
  killAll('shm-outside');
});

test('a unix socket connected to a daemon outside the job makes the daemon a dependent', async () => {
  const path = join(work, 'daemon.sock');
  const daemon = spawn('python3', ['-c', `import socket, time\ns = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(path)}); s.listen()\nconns = []\nwhile True: conns.append(s.accept())`], {
    stdio: 'ignore',
    detached: true,
  });
  outsiders.push(daemon);
  await until('the daemon', () => existsSync(path));
  start('daemon-client', ['python3', '-c', `import socket, time\nc = socket.socket(socket.AF_UNIX); c.connect(${JSON.stringify(path)}); time.sleep(1000)`]);
  const row = await until('the daemon as a dependent', () => ps('daemon-client').find((m) => m.pid === daemon.pid));
  assert.is(row.dependsOn!.via, 'unix-socket');
  killAll('daemon-client');
});

test('an inotify watch comes back after a restart; without the watched directory the restart fails naming it', async () => {
  const watched = join(work, 'watched');
  mkdirSync(watched);
  const out = join(work, 'watch.out');
  start('watcher', ['python3', script('watch.py', WATCH), watched, out]);
  await until('the watch', () => running('watcher').some((m) => m.comm.startsWith('python')));
  await until('the first event', () => {
    writeFileSync(join(watched, `a${Date.now()}`), '');
    return counter(out) > 0;
  });
  checkpoint('watcher');
  const seen = counter(out);
  killAll('watcher');
  rmSync(watched, { recursive: true });
  const failed = restart('watcher');
  assert.is.not(failed.code, 0, 'restored without the watched directory');
  assert.match(failed.err + failed.reason, watched);
  mkdirSync(watched);
  const { code, err, reason } = restart('watcher');
  assert.is(code, 0, `${err} ${reason}`);
  writeFileSync(join(watched, 'after-restart'), '');
  await until('the event after the restart', () => counter(out) === seen + 1 && readFileSync(out, 'utf8').endsWith('after-restart'));
  killAll('watcher');
});

test('a job with its own pseudo-terminal (master and slave inside) is checkpointed and restarted', async () => {
  const out = join(work, 'pty.out');
  start('own-pty', ['python3', script('own-pty.py', OWN_PTY), out]);
  await survivesRestart('own-pty', out);
});

test('a job on a terminal outside it (run in the foreground of a pty) is refused: the terminal named, a hint', async () => {
  const out = join(work, 'foreground.out');
  const env = { ...process.env, CKPT_HOME: h.home, CKPT_NODE: NODE, CKPT_STORE: '' };
  const argv = [script('on-terminal.py', ON_TERMINAL), process.execPath, CLI, 'run', '--job', 'foreground', '--', 'sh', '-c', `i=0; while :; do i=$((i+1)); echo $i > ${out}; sleep 0.05; done`];
  const user = spawn('python3', argv, { stdio: 'ignore', detached: true, env });
  outsiders.push(user);
  await until('the foreground job', () => counter(out) > 2);
  const r = ckpt(['checkpoint', 'foreground', '--wait']);
  assert.is.not(r.code, 0);
  assert.match(r.err, /uses a terminal whose other end is outside it: \/dev\/pts\/\d+ \(pid \d+ /);
  assert.match(r.err, /ckpt run --detach/);
  const before = counter(out);
  await until('the job running on after the refusal', () => counter(out) > before + 5);
  killAll('foreground');
});

test.run();
