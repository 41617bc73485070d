// What a failed CRIU step means: each class from an error line as CRIU prints it (its sources; several seen here, kernel 6.18, criu
// 4.1.1 / 4.2.1), with the hint the user gets. Pure: no CRIU runs here.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { classifyCriuFailure } from '../adapters/checkpointers/criu-failure.js';
import { describeFailure } from '../domain/failure.js';

const test = suite('CRIU failure classes');

const cases: Array<[string, string, RegExp | undefined]> = [
  ["Error (criu/sockets.c:540): sockets: Can't get 1:16 opt: Operation not supported", 'version', /CRIU ≥ 4\.2/],
  ['Error (criu/sk-inet.c:199): inet: Connected TCP socket, consider using --tcp-established option.', 'connection', /--tcp-established/],
  ['Error (criu/net.c:3266): Iptables configuration failed: No such file or directory', 'connection', /network lock/],
  ['Error (criu/sk-unix.c:836): unix: External socket is used. Consider using --ext-unix-sk option.', 'connection', /unix socket/],
  ['Error (criu/file-lock.c:280): Some file locks are hold without option --file-locks', 'file-lock', /--file-locks/],
  ["Error (criu/tty.c:2026): tty: Can't dump tty 34816 with sid 1 (pty outside the tree)", 'tty', /terminal/],
  ["Error (criu/cr-restore.c:1463): Can't fork for 4242: File exists", 'namespace', /PID namespace/],
  ["Error (criu/namespaces.c:1088): Can't dump a pid namespace without the process init", 'namespace', undefined],
  ['Error (criu/mount.c:1088): mnt: Mount 104 ./sys/fs/fuse/connections (master_id: 12 shared_id: 0) has unreachable sharing', 'mount', undefined],
  ['Error (criu/image.c:438): Unable to write pages: No space left on device', 'space', /disk space/],
  ["Error (criu/cr-dump.c:1350): Can't get rlimit 0: Operation not permitted", 'permission', /CAP_SYS_RESOURCE/],
  ['Error (criu/vdso.c:627): vdso: Unexpected rt vDSO area bounds', 'version', /install CRIU/],
  ['Error (compel/src/lib/infect.c:360): Unseizable non-zombie 4242 found, state D, err 0/-1', 'timeout', undefined],
  ['Error (criu/files-reg.c:2175): File tmp/ckpt-pidns-ZDH7p6/count has bad size 3 (expect 0)', 'file', /changed or went away/],
  ["Error (criu/files-reg.c:2060): Can't open file tmp/mnt-data/x on restore", 'file', /changed or went away/],
  ["Error (criu/proc_parse.c:1000): Can't open /proc/4242/stat: No such process", 'vanished', /try again/],
];

for (const [line, cls, hint] of cases) {
  test(`${cls}: ${line.slice(0, 60)}…`, () => {
    const f = classifyCriuFailure({ message: 'criu dump of pid 4242 failed (exit 1)', errorLines: ['Error (criu/cr-dump.c:2100): Dumping FAILED.', line], log: '/x/dump.log' });
    assert.is(f.class, cls);
    assert.is(f.message, line, 'CRIU’s own line is the message');
    if (hint) assert.match(f.hint ?? '', hint);
    assert.is(f.log, '/x/dump.log');
    assert.ok(describeFailure(f).startsWith(`${cls}: `));
  });
}

test('the job’s paths never decide the class: a directory named pidns or mount-points is not a namespace or a mount', () => {
  const f = classifyCriuFailure({ message: 'criu restore failed (exit 1)', errorLines: ['Error (criu/files.c:1221): Unable to open fd=3 id=0x9 in /srv/mount-points/pidns'] });
  assert.is(f.class, 'internal');
  const tty = classifyCriuFailure({ message: 'criu dump failed', errorLines: ["Error (criu/tty.c:1): Can't dump /dev/pts/3"] });
  assert.is(tty.class, 'tty', 'device paths still count');
});

test('no CRIU line: ckpt’s own message is classified; nothing known: internal', () => {
  assert.is(classifyCriuFailure({ message: 'the unit’s first process (4242) is gone: the unit has ended' }).class, 'vanished');
  assert.is(classifyCriuFailure({ message: 'no usable criu on this node: install CRIU ≥ 4.1' }).class, 'version');
  const f = classifyCriuFailure({ message: 'something odd', errno: 5 });
  assert.equal([f.class, f.message, f.errno], ['internal', 'something odd', 5]);
});

test('CRIU’s RPC errno names the class when the log says nothing useful', () => {
  assert.is(classifyCriuFailure({ message: 'criu dump failed', errno: 28, errmsg: 'Dump failed' }).class, 'space');
});

test.run();
