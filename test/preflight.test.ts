// The preflight judge (pure) and the /proc parsers it is fed by: what refuses a checkpoint before
// anything is frozen, and how each refusal names what the job holds and what to do.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parseProcLocks, parseProcNet, parseProcNetAddress, unitResources } from '../adapters/tracking/resources.js';
import type { Capabilities } from '../domain/events/node.js';
import { describeFailure } from '../domain/failure.js';
import { FILE_LOCKS_HINT, type InetSocket, NEWER_CRIU_HINT, preflight, TCP_ESTABLISHED_HINT, type UnitResources } from '../domain/preflight.js';
import { needCommand } from './support/prerequisites.js';
import { until } from './support/wait.js';

const test = suite('preflight');

const none = { tcpEstablished: false, fileLocks: false };
const base: Capabilities = { scopes: ['tree', 'cgroup'], leaveRunning: true, incremental: false, lazyPages: true, pidNamespace: true, freezeCgroup: true };
const node = (extra: Partial<Capabilities> = {}, problems: string[] = []) => ({ capabilities: { ...base, ...extra }, problems });
const held = (r: Partial<UnitResources>): UnitResources => ({ inet: [], locks: [], outsidePeers: [], ...r });

const listening: InetSocket = { pid: 1234, comm: 'python3', protocol: 'tcp', state: 'listen', local: '127.0.0.1:5000', remote: '0.0.0.0:0' };
const udp: InetSocket = { pid: 1234, comm: 'python3', protocol: 'udp', state: 'unconnected', local: '0.0.0.0:5001', remote: '0.0.0.0:0' };
const connection: InetSocket = { pid: 1234, comm: 'python3', protocol: 'tcp', state: 'established', local: '127.0.0.1:5000', remote: '127.0.0.1:41234' };
const lock = { pid: 77, comm: 'flock', kind: 'FLOCK', mode: 'WRITE', file: '/tmp/x.lock' };

test('nothing special held, or only listening and UDP sockets: no refusal, whatever the probe knows', () => {
  assert.equal(preflight(held({}), none, undefined), []);
  assert.equal(preflight(held({ inet: [listening, udp] }), none, node()), []);
  assert.equal(preflight(held({ inet: [listening, udp] }), none, node({ inetSockets: true, tcpEstablished: true, networkLock: 'nftables', fileLocks: true })), []);
});

test('an established connection without the option: refused, naming the process and both addresses, with the flag as hint', () => {
  const [f, ...more] = preflight(held({ inet: [listening, connection] }), none, node());
  assert.equal(more, []);
  assert.is(f!.class, 'connection');
  assert.is(f!.message, 'established TCP connection: pid 1234 (python3) 127.0.0.1:5000 → 127.0.0.1:41234');
  assert.is(f!.hint, TCP_ESTABLISHED_HINT);
  assert.match(describeFailure(f!), /^connection: .*--tcp-established/);
  const closing = preflight(held({ inet: [{ ...connection, state: 'close-wait' }] }), none, node())[0]!;
  assert.match(closing.message, /41234 \(close-wait\)/);
});

test('with --tcp-established: accepted, unless the probe says the node cannot (no repair, no network lock)', () => {
  const opts = { tcpEstablished: true, fileLocks: false };
  assert.equal(preflight(held({ inet: [connection] }), opts, node()), [], 'unknown capabilities are not refused');
  assert.equal(preflight(held({ inet: [connection] }), opts, node({ tcpEstablished: true, networkLock: 'nftables' })), []);
  const noLock = preflight(held({ inet: [connection] }), opts, node({ tcpEstablished: true, networkLock: null }))[0]!;
  assert.equal([noLock.class, noLock.hint], ['version', NEWER_CRIU_HINT]);
  assert.match(noLock.message, /lock the network/);
  assert.is(preflight(held({ inet: [connection] }), opts, node({ tcpEstablished: false }))[0]!.class, 'version');
});

test('any inet socket on a node whose CRIU cannot dump them: refused with the probe’s reason and the install hint', () => {
  const reason = 'criu 4.1.1 cannot dump a process holding a TCP or UDP socket on kernel 6.18 (sockets: Can’t get 1:16 opt)';
  const [f] = preflight(held({ inet: [udp] }), none, node({ inetSockets: false }, ['something else', reason]));
  assert.is(f!.class, 'version');
  assert.ok(f!.message.includes(reason), f!.message);
  assert.match(f!.message, /pid 1234 \(python3\) UDP 0\.0\.0\.0:5001/);
  assert.is(f!.hint, NEWER_CRIU_HINT);
  assert.match(preflight(held({ inet: [listening] }), none, node({ inetSockets: false }))[0]!.message, /cannot dump a process holding a TCP or UDP socket/);
});

test('file locks: refused without --file-locks naming holder and file; with it, only when the probe says no', () => {
  const [f] = preflight(held({ locks: [lock] }), none, node());
  assert.equal([f!.class, f!.message, f!.hint], ['file-lock', 'pid 77 (flock) holds a FLOCK WRITE lock on /tmp/x.lock', FILE_LOCKS_HINT]);
  assert.equal(preflight(held({ locks: [lock] }), { tcpEstablished: false, fileLocks: true }, node()), []);
  assert.is(preflight(held({ locks: [lock] }), { tcpEstablished: false, fileLocks: true }, node({ fileLocks: false }))[0]!.class, 'version');
});

test('a unix socket to a process outside the job: refused, naming the peer (and its path)', () => {
  const [f] = preflight(held({ outsidePeers: [{ pid: 10, comm: 'python3', inode: '555', peer: { pid: 20, comm: 'daemon' }, path: '/run/d.sock' }] }), none, node());
  assert.is(f!.class, 'connection');
  assert.is(f!.message, 'pid 10 (python3) is connected over a unix socket (inode 555) to pid 20 (daemon) at /run/d.sock, which is not part of the job');
  const unknown = preflight(held({ outsidePeers: [{ pid: 10, comm: 'python3', inode: '555' }] }), none, node())[0]!;
  assert.match(unknown.message, /a process that could not be found/);
});

test('several refusals: version first, each listed; long lists are cut', () => {
  const many = Array.from({ length: 12 }, (_, i) => ({ ...connection, remote: `127.0.0.1:${40000 + i}` }));
  const fs = preflight(held({ inet: many, locks: [lock] }), none, node({ inetSockets: false }));
  assert.equal(
    fs.map((f) => f.class),
    ['version', 'connection', 'file-lock'],
  );
  assert.match(fs[1]!.message, /^established TCP connections: .*; and 4 more$/);
});

test('/proc/net parsing: IPv4 and IPv6 addresses, TCP states, UDP connected or not; sockets no process holds skipped', () => {
  assert.is(parseProcNetAddress('0100007F:1388'), '127.0.0.1:5000');
  assert.is(parseProcNetAddress('00000000000000000000000001000000:0050'), '[::1]:80');
  assert.is(parseProcNetAddress('0000000000000000FFFF00000100007F:1388'), '[::ffff:127.0.0.1]:5000');
  assert.is(parseProcNetAddress('B80D0120000000000000000001000000:01BB'), '[2001:db8::1]:443');
  const tcp = parseProcNet(
    [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0',
      '   1: 0100007F:1388 0100007F:A2E2 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1',
      '   2: 0100007F:1388 0100007F:A2E3 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0000000000000000',
    ].join('\n'),
    'tcp',
  );
  assert.equal([...tcp.keys()], ['4242', '4343']);
  assert.equal(tcp.get('4343'), { protocol: 'tcp', state: 'established', local: '127.0.0.1:5000', remote: '127.0.0.1:41698' });
  assert.is(tcp.get('4242')!.state, 'listen');
  const udpRows = parseProcNet('  sl  local_address rem_address   st\n  1: 00000000:1389 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 99 2 0 0\n', 'udp');
  assert.equal(udpRows.get('99'), { protocol: 'udp', state: 'unconnected', local: '0.0.0.0:5001', remote: '0.0.0.0:0' });
});

test('/proc/locks parsing: holders only (not waiters), device in hex, inode in decimal', () => {
  const locks = parseProcLocks(
    [
      '1: POSIX  ADVISORY  WRITE 6477 fe:00:2146775 0 EOF',
      '1: -> POSIX  ADVISORY  WRITE 6480 fe:00:2146775 0 EOF',
      '2: FLOCK  ADVISORY  READ 8899 00:2d:128 0 EOF',
      '3: OFDLCK ADVISORY  WRITE -1 00:2d:129 0 EOF',
    ].join('\n'),
  );
  assert.equal(locks, [
    { kind: 'POSIX', mode: 'WRITE', pid: 6477, major: 0xfe, minor: 0, inode: 2146775 },
    { kind: 'FLOCK', mode: 'READ', pid: 8899, major: 0, minor: 0x2d, inode: 128 },
  ]);
});

// A real process (python3), read from /proc: what unitResources finds is what it holds.
const HOLDER = `import fcntl, os, socket, sys, time
d = sys.argv[1]
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()
c = socket.create_connection(s.getsockname()); a, _ = s.accept()
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(('::1', 0))
x = socket.socket(socket.AF_UNIX); x.connect(os.path.join(d, 'outside.sock'))
p, q = socket.socketpair()
f = open(os.path.join(d, 'held.lock'), 'w'); fcntl.lockf(f, fcntl.LOCK_EX)
open(os.path.join(d, 'ready'), 'w').write('%d %d %d' % (s.getsockname()[1], c.getsockname()[1], u.getsockname()[1]))
time.sleep(60)
`;

const python = needCommand('python3', 'apt-get install -y python3') ? test.skip : test;
python('unitResources reads a process’s TCP/UDP sockets (v4 and v6), its lock, and the unix peer outside it (named)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ckpt-resources-'));
  const server = createServer(() => {}).listen(join(dir, 'outside.sock'));
  const child = spawn('python3', ['-c', HOLDER, dir], { stdio: 'ignore' });
  try {
    const ready = join(dir, 'ready');
    const [port, client, udpPort] = (await until('the holder', () => existsSync(ready) && readFileSync(ready, 'utf8'))).split(' ').map(Number);
    const held = unitResources([child.pid!]);
    const me = { pid: child.pid!, comm: 'python3' };
    assert.equal(
      [...held.inet].sort((a, b) => a.local.localeCompare(b.local) || a.state.localeCompare(b.state)),
      [
        { ...me, protocol: 'tcp', state: 'established', local: `127.0.0.1:${client}`, remote: `127.0.0.1:${port}` },
        { ...me, protocol: 'tcp', state: 'established', local: `127.0.0.1:${port}`, remote: `127.0.0.1:${client}` },
        { ...me, protocol: 'tcp', state: 'listen', local: `127.0.0.1:${port}`, remote: '0.0.0.0:0' },
        { ...me, protocol: 'udp', state: 'unconnected', local: `[::1]:${udpPort}`, remote: '[::]:0' },
      ].sort((a, b) => a.local.localeCompare(b.local) || a.state.localeCompare(b.state)),
    );
    assert.equal(held.locks, [{ ...me, kind: 'POSIX', mode: 'WRITE', file: join(dir, 'held.lock') }]);
    assert.is(held.outsidePeers.length, 1, 'the socketpair is within the process: not outside');
    assert.equal(held.outsidePeers[0]!.peer, { pid: process.pid, comm: 'node' });
    assert.is(held.outsidePeers[0]!.path, join(dir, 'outside.sock'));
    assert.equal(
      preflight(held, none, undefined).map((f) => f.class),
      ['connection', 'file-lock', 'connection'],
    );
  } finally {
    child.kill('SIGKILL');
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
