// The workloads people run, end to end as root with real CRIU: servers holding data (TCP and UDP)
// checkpointed, killed and restarted; a client that stays connected through a checkpoint, the stop
// and the restart (--tcp-established); a file-lock holder; a unix socket to a daemon outside the
// job; and a node whose CRIU cannot dump sockets at all. Every refusal comes before the freeze and
// names what the job holds.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { jobHarness, type PsRow } from './support/jobs.js';
import { firstMissing, needCommand, needRoot, OLD_CRIU, OLD_CRIU_INSTALL, suiteRequiring } from './support/prerequisites.js';
import { until as wait } from './support/wait.js';

const until = <T>(what: string, probe: () => T | undefined | false, ms = 30_000) => wait(what, probe, ms, 50);
const missing = firstMissing(
  needRoot,
  () => (locateCriu() ? undefined : 'no CRIU ≥ 4.2 (run: bash scripts/install-criu.sh)'),
  () => needCommand('python3', 'apt-get install -y python3'),
  () => needCommand('ss', 'apt-get install -y iproute2'),
);
const test = suiteRequiring('workloads: servers, connections, locks (real CRIU)', missing);

const NODE = 'wlnode';
const { work, h, ckpt, running, killAll, history, cleanup, newHome } = jobHarness('ckpt-workloads', NODE);
const outsiders: ChildProcess[] = [];
test.after(() => {
  for (const p of outsiders) p.kill('SIGKILL');
  cleanup([NODE]);
});

interface Report {
  version: number | null;
  outcome: string;
  phase: string;
  reason: string | null;
}
interface RestartReport {
  outcome: string;
  reason: string | null;
  units: Array<{ pidNamespace?: boolean }>;
}

const start = (job: string, script: string, args: string[], extra: string[] = [], home = h.home, env: Record<string, string> = {}) => {
  writeFileSync(join(work, `${job}.py`), script);
  const r = ckpt(['run', '--detach', '--job', job, ...extra, '--', 'python3', join(work, `${job}.py`), ...args], home, env);
  assert.is(r.code, 0, r.err);
};
const checkpoint = (job: string, extra: string[] = [], home = h.home, env: Record<string, string> = {}) => {
  const r = ckpt(['checkpoint', job, '--wait', '--json', ...extra], home, env);
  return { code: r.code, err: r.err, report: JSON.parse(r.out) as Report };
};
const restart = (job: string) => {
  const r = ckpt(['restart', job, '--wait', '--json']);
  return { code: r.code, err: r.err, report: JSON.parse(r.out) as RestartReport };
};
const freezerState = (row: PsRow) => readFileSync(`/sys/fs/cgroup/freezer${row.cgroup}/freezer.state`, 'utf8').trim();
const verifies = (job: string) => {
  const r = ckpt(['verify', job]);
  assert.is(r.code, 0, `ckpt verify ${job}: ${r.err}`);
};
const readPort = (file: string) => until(`the port in ${file}`, () => existsSync(file) && Number(readFileSync(file, 'utf8')));
/** A process outside any job (the test's own child), killed when the suite ends. */
const outside = (args: string[]) => {
  const p = spawn('python3', args, { stdio: 'ignore', detached: true });
  p.unref();
  outsiders.push(p);
  return p;
};

// A key-value server: SET k v / GET k / QUIT (TCP: one connection at a time, the server closes first,
// so no socket of it is left half-closed), or the same as UDP datagrams.
const KV = `import os, socket, sys
mode, ready = sys.argv[1], sys.argv[2]
data = {}
def answer(line):
    cmd = line.split(' ')
    if cmd[0] == 'SET':
        data[cmd[1]] = cmd[2]
        return 'OK'
    if cmd[0] == 'GET':
        return data.get(cmd[1], '-')
    return 'BYE' if cmd[0] == 'QUIT' else 'ERR'
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if mode == 'tcp' else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', 0))
if mode == 'tcp':
    s.listen(8)
open(ready + '.tmp', 'w').write(str(s.getsockname()[1]))
os.rename(ready + '.tmp', ready)
while True:
    if mode == 'udp':
        msg, peer = s.recvfrom(4096)
        s.sendto(answer(msg.decode()).encode(), peer)
        continue
    c, _ = s.accept()
    buf, done = b'', False
    while not done:
        chunk = c.recv(4096)
        if not chunk:
            break
        buf += chunk
        while b'\\n' in buf and not done:
            line, buf = buf.split(b'\\n', 1)
            reply = answer(line.decode())
            c.sendall((reply + '\\n').encode())
            done = reply == 'BYE'
    c.close()
`;

/** One TCP conversation: every line answered, then QUIT; resolves once the server closed. */
const talkTcp = (port: number, lines: string[]) =>
  new Promise<string[]>((resolve, reject) => {
    const c = connect(port, '127.0.0.1');
    let got = '';
    c.setEncoding('utf8').on('data', (d: string) => (got += d));
    c.on('connect', () => c.write([...lines, 'QUIT'].map((l) => `${l}\n`).join('')));
    c.on('end', () => resolve(got.trim().split('\n').slice(0, -1)));
    c.on('error', reject);
    c.setTimeout(20_000, () => c.destroy(new Error(`no answer from 127.0.0.1:${port}`)));
  });

const talkUdp = async (port: number, lines: string[]) => {
  const s = createSocket('udp4');
  try {
    const replies: string[] = [];
    for (const line of lines) {
      replies.push(
        await new Promise<string>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no UDP answer from 127.0.0.1:${port}`)), 10_000);
          s.once('message', (m) => (clearTimeout(timer), resolve(m.toString())));
          s.send(line, port, '127.0.0.1');
        }),
      );
    }
    return replies;
  } finally {
    s.close();
  }
};

for (const mode of ['tcp', 'udp'] as const) {
  test(`a ${mode.toUpperCase()} server holding data is checkpointed, killed and restarted: its data intact, it serves new clients`, async () => {
    const job = `kv-${mode}`;
    const ready = join(work, `${job}.port`);
    start(job, KV, [mode, ready]);
    const port = await readPort(ready);
    const talk = mode === 'tcp' ? talkTcp : talkUdp;
    const keys = Array.from({ length: 50 }, (_, i) => `k${i}`);
    assert.equal(
      await talk(
        port,
        keys.map((k) => `SET ${k} v-${k}`),
      ),
      keys.map(() => 'OK'),
    );
    const { code, err, report } = checkpoint(job);
    assert.is(code, 0, `${err} ${JSON.stringify(report)}`);
    assert.is(report.outcome, 'committed');
    assert.equal(await talk(port, ['SET late after-the-checkpoint']), ['OK']);
    killAll(job);
    await until('the server to be gone', () => running(job).length === 0);
    const restarted = restart(job);
    assert.is(restarted.code, 0, `${restarted.err} ${JSON.stringify(restarted.report)}`);
    assert.equal(
      await talk(
        port,
        keys.map((k) => `GET ${k}`),
      ),
      keys.map((k) => `v-${k}`),
      'the data of the checkpoint is back',
    );
    assert.equal(await talk(port, ['GET late', 'SET new 1', 'GET new']), ['-', 'OK', '1'], 'as of the checkpoint, and serving');
    verifies(job);
    killAll(job);
  });
}

// A server that logs every line it receives with the connection it came on; a client outside the
// job that sends numbered lines until told to stop, then END, and never reconnects.
const STREAM_SERVER = `import os, socket, sys
ready, received = sys.argv[1], sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', 0))
s.listen(1)
open(ready + '.tmp', 'w').write(str(s.getsockname()[1]))
os.rename(ready + '.tmp', ready)
accepted = 0
while True:
    c, peer = s.accept()
    accepted += 1
    buf = b''
    while True:
        chunk = c.recv(4096)
        if not chunk:
            break
        buf += chunk
        while b'\\n' in buf:
            line, buf = buf.split(b'\\n', 1)
            with open(received, 'a') as f:
                f.write('%d %d %s\\n' % (accepted, peer[1], line.decode()))
            if line == b'END':
                c.sendall(b'DONE\\n')
    c.close()
`;
const STREAM_CLIENT = `import os, socket, sys, time
port, stop, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = socket.create_connection(('127.0.0.1', port))
open(log, 'w').write('port %d\\n' % c.getsockname()[1])
i = 0
try:
    while not os.path.exists(stop):
        i += 1
        c.sendall(b'%d\\n' % i)
        time.sleep(0.02)
    c.sendall(b'END\\n')
    c.settimeout(120)
    reply = c.recv(100).decode().strip()
    open(log, 'a').write('sent %d reply %s\\n' % (i, reply))
except Exception as e:
    open(log, 'a').write('error %r after %d\\n' % (e, i))
`;

const files = (...names: [string, string, string, string]) => names.map((f) => join(work, f)) as [string, string, string, string];
const lines = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : []);

test('--tcp-established: a client stays connected through the checkpoint, the stop and the restart; every line arrives once. Without it: refused, naming the connection, the job running', async () => {
  const job = 'stream';
  const [ready, received, stopFile, log] = files('stream.port', 'stream.received', 'stream.stop', 'stream.client');
  writeFileSync(join(work, 'client.py'), STREAM_CLIENT);
  start(job, STREAM_SERVER, [ready, received]);
  const port = await readPort(ready);
  outside([join(work, 'client.py'), String(port), stopFile, log]);
  const clientPort = Number(/^port (\d+)/.exec(await until('the client', () => lines(log)[0]))![1]);
  await until('lines to arrive', () => lines(received).length > 20);

  const refused = checkpoint(job);
  assert.is(refused.code, 1);
  assert.is(refused.report.outcome, 'aborted');
  const server = running(job).find((m) => m.comm.startsWith('python'))!;
  assert.ok(
    refused.report.reason!.includes(`UnitFreezeFailed on unit main: connection: established TCP connection: pid ${server.pid} (python3) 127.0.0.1:${port} → 127.0.0.1:${clientPort}`),
    refused.report.reason!,
  );
  assert.match(refused.report.reason!, /ckpt checkpoint --tcp-established/);
  assert.is(freezerState(server), 'THAWED', 'never frozen');
  const before = lines(received).length;
  await until('the job to go on receiving', () => lines(received).length > before + 10);

  const stopped = checkpoint(job, ['--tcp-established', '--stop']);
  assert.is(stopped.code, 0, `${stopped.err} ${JSON.stringify(stopped.report)}`);
  assert.is(stopped.report.outcome, 'committed');
  await until('the job to be stopped', () => running(job).length === 0);
  const atStop = lines(received).length;
  const planned = history(job).find((e) => e.type === 'CheckpointPlanned' && e.data.version === stopped.report.version)!;
  assert.equal(planned.data.options, { tcpEstablished: true, fileLocks: false });

  const restarted = restart(job);
  assert.is(restarted.code, 0, `${restarted.err} ${JSON.stringify(restarted.report)}`);
  await until('lines after the restart', () => lines(received).length > atStop + 20, 60_000);
  writeFileSync(stopFile, '');
  const end = await until('the client to finish', () => lines(log).find((l) => l.startsWith('sent') || l.startsWith('error')), 120_000);
  const sent = Number(/^sent (\d+) reply DONE$/.exec(end)?.[1]);
  assert.ok(sent > 0, `the client: ${lines(log).join(' | ')}`);
  const got = lines(received).map((l) => l.split(' '));
  assert.ok(
    got.every(([conn, peer]) => conn === '1' && peer === String(clientPort)),
    'one connection, never reconnected',
  );
  assert.equal(
    got.map((l) => l[2]),
    [...Array.from({ length: sent }, (_, i) => String(i + 1)), 'END'],
    'every line exactly once, in order',
  );
  assert.equal(history(job).filter((e) => e.type === 'RestartPlanned')[0]!.data.options, planned.data.options, 'the restart repairs what the version holds');
  verifies(job);
  killAll(job);
});

test('ckpt run --tcp-established: recorded in the job, every checkpoint takes the connection and the client keeps it', async () => {
  const job = 'stream-opt';
  const [ready, received, stopFile, log] = files('opt.port', 'opt.received', 'opt.stop', 'opt.client');
  start(job, STREAM_SERVER, [ready, received], ['--tcp-established']);
  assert.equal(history(job).find((e) => e.type === 'JobSubmitted')!.data.options, { tcpEstablished: true });
  const port = await readPort(ready);
  outside([join(work, 'client.py'), String(port), stopFile, log]);
  await until('lines to arrive', () => lines(received).length > 20);
  const { code, err, report } = checkpoint(job);
  assert.is(code, 0, `${err} ${JSON.stringify(report)}`);
  const at = lines(received).length;
  await until('lines after the checkpoint', () => lines(received).length > at + 20);
  writeFileSync(stopFile, '');
  const end = await until('the client to finish', () => lines(log).find((l) => l.startsWith('sent') || l.startsWith('error')), 60_000);
  assert.match(end, /^sent \d+ reply DONE$/);
  verifies(job);
  killAll(job);
});

const LOCKER = `import fcntl, sys, time
f = open(sys.argv[1], 'w')
fcntl.flock(f, fcntl.LOCK_EX)
open(sys.argv[2], 'w').write('locked')
time.sleep(100000)
`;
/** Whether another process can take the lock (exit 0) or not (exit 1). */
const lockFree = (file: string) =>
  spawnSync('python3', ['-c', `import fcntl, sys\ntry:\n  fcntl.flock(open('${file}', 'w'), fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n  sys.exit(1)`]).status === 0;

test('a file-lock holder: refused without --file-locks (naming holder and file), committed and restored with it, the lock held again', async () => {
  const job = 'locker';
  const [lockFile, ready] = [join(work, 'the.lock'), join(work, 'locker.ready')];
  start(job, LOCKER, [lockFile, ready]);
  await until('the lock', () => existsSync(ready));
  assert.not.ok(lockFree(lockFile));
  const holder = running(job).find((m) => m.comm.startsWith('python'))!;
  const refused = checkpoint(job);
  assert.is(refused.report.outcome, 'aborted');
  assert.ok(refused.report.reason!.includes(`file-lock: pid ${holder.pid} (python3) holds a FLOCK WRITE lock on ${lockFile}`), refused.report.reason!);
  assert.match(refused.report.reason!, /ckpt checkpoint --file-locks/);
  assert.is(freezerState(holder), 'THAWED');

  const { code, err, report } = checkpoint(job, ['--file-locks']);
  assert.is(code, 0, `${err} ${JSON.stringify(report)}`);
  killAll(job);
  await until('the lock to be released', () => running(job).length === 0 && lockFree(lockFile));
  const restarted = restart(job);
  assert.is(restarted.code, 0, `${restarted.err} ${JSON.stringify(restarted.report)}`);
  const now = running(job).find((m) => m.comm.startsWith('python'))!;
  assert.ok(now, 'the holder is back');
  assert.not.ok(lockFree(lockFile), 'the restored process holds the lock again');
  assert.ok(
    readFileSync('/proc/locks', 'utf8')
      .split('\n')
      .some((l) => l.includes(` FLOCK `) && l.includes(` ${now.pid} `)),
    'in /proc/locks under its pid',
  );
  verifies(job);
  killAll(job);
});

const DAEMON = `import os, socket, sys, time
path, ready = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(1)
open(ready, 'w').write(str(os.getpid()))
c, _ = s.accept()
time.sleep(100000)
`;
const UNIX_CLIENT = `import socket, sys, time
c = socket.socket(socket.AF_UNIX)
c.connect(sys.argv[1])
open(sys.argv[2], 'w').write('connected')
time.sleep(100000)
`;

test('a job holding a unix socket to a daemon outside it: refused, naming the peer', async () => {
  const [path, daemonReady, ready] = [join(work, 'daemon.sock'), join(work, 'daemon.ready'), join(work, 'unix.ready')];
  writeFileSync(join(work, 'daemon.py'), DAEMON);
  const daemon = outside([join(work, 'daemon.py'), path, daemonReady]);
  await until('the daemon', () => existsSync(daemonReady));
  start('unix', UNIX_CLIENT, [path, ready]);
  await until('the connection', () => existsSync(ready));
  const { code, report } = checkpoint('unix');
  assert.is(code, 1);
  // Refused before the freeze (the peer named by the preflight), or at the plan when the agent has
  // already found the daemon as a dependent (a process the checkpoint would miss).
  assert.ok(['aborted', 'rejected'].includes(report.outcome), report.outcome);
  assert.ok(report.reason!.includes(`pid ${daemon.pid} (python3)`) || report.reason!.includes(`${daemon.pid} python3`), report.reason!);
  if (report.outcome === 'aborted') assert.match(report.reason!, /connection: pid \d+ \(python3\) is connected over a unix socket .* at .*daemon\.sock/);
  assert.ok(
    running('unix').some((m) => m.comm.startsWith('python') && freezerState(m) === 'THAWED'),
    'the job keeps running',
  );
  killAll('unix');
});

const criu41 = OLD_CRIU;
const old = existsSync(criu41) ? test : test.skip;
if (!existsSync(criu41)) console.log(`skip: workloads on CRIU 4.1 — no CRIU 4.1 at ${criu41} (install: ${OLD_CRIU_INSTALL}, or set CKPT_CRIU_OLD)`);

old('on a node whose CRIU (4.1, kernel ≥ 6.16) cannot dump sockets: a socket-holding job is refused with that reason, before the freeze', async () => {
  const home = newHome();
  const env = { CKPT_CRIU: criu41 };
  const ready = join(work, 'old.port');
  start('old-kv', KV, ['tcp', ready], [], home, env);
  await readPort(ready);
  const { code, report } = checkpoint('old-kv', [], home, env);
  assert.is(code, 1);
  assert.match(report.reason!, /version: the checkpointer on this node cannot checkpoint TCP\/UDP sockets .*pid \d+ \(python3\) TCP 127\.0\.0\.1:\d+ \(listening\)/);
  assert.match(report.reason!, /install CRIU ≥ 4\.2: bash scripts\/install-criu\.sh/);
  assert.ok(
    running('old-kv', home).every((m) => freezerState(m) === 'THAWED'),
    'never frozen',
  );
  killAll('old-kv', home);
});

test.run();
