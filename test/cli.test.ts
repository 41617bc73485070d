import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { table } from '../adapters/cli/output.js';
import { openEventStore } from '../adapters/store/open.js';
import { forked, marker } from './support/events.js';

const CLI = fileURLToPath(new URL('../adapters/cli/main.js', import.meta.url));
const home = mkdtempSync(join(tmpdir(), 'ckpt-cli-'));
const env = { ...process.env, CKPT_HOME: home, CKPT_STORE: '' };
const ckpt = (...args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

const test = suite('ckpt CLI');
test.after(() => rmSync(home, { recursive: true, force: true }));

test('--help lists every command and how to choose the store; exit 0', () => {
  for (const args of [['--help'], ['-h'], [], ['help']]) {
    const r = ckpt(...args);
    assert.is(r.code, 0);
    assert.match(r.out, 'Usage: ckpt COMMAND');
    assert.match(r.out, /\n {2}log +Print the event log/);
    assert.match(r.out, 'CKPT_STORE');
  }
});

test('every command has complete help', () => {
  for (const args of [
    ['log', '--help'],
    ['help', 'log'],
  ]) {
    const r = ckpt(...args);
    assert.is(r.code, 0);
    for (const text of ['Usage: ckpt log', '--from POSITION', '--follow', '--json', '--store URL', 'Examples:', 'Exit status']) assert.match(r.out, text);
  }
});

test('a table of 200,000 rows (jobs of a 10M-event log) is drawn, columns as wide as their widest cell', () => {
  const rows = Array.from({ length: 200_000 }, (_, i) => [`job-${i}`, i === 123_456 ? 'running, the longest state' : 'ended']);
  const lines = table(['JOB', 'STATE'], rows).trimEnd().split('\n');
  assert.is(lines.length, 200_001);
  assert.is(lines[0], 'JOB         STATE');
  assert.is(lines[123_457], 'job-123456  running, the longest state');
});

test('--version prints the package version', () => {
  const version = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;
  assert.is(ckpt('--version').out.trim(), version);
  assert.is(ckpt('-V').code, 0);
});

test('unknown commands and bad flags: a clear error and the usage, exit 2', () => {
  let r = ckpt('lgo');
  assert.is(r.code, 2);
  assert.match(r.err, 'unknown command "lgo"');
  assert.match(r.err, 'Usage: ckpt COMMAND');
  r = ckpt('log', '--frm', '3');
  assert.is(r.code, 2);
  assert.match(r.err, 'unknown option --frm for ckpt log');
  assert.match(r.err, 'Usage: ckpt log');
  r = ckpt('log', '--from', 'zero');
  assert.is(r.code, 2);
  assert.match(r.err, 'option --from needs an integer ≥ 1, got "zero"');
  r = ckpt('log', '--from');
  assert.is(r.code, 2);
  assert.match(r.err, 'option --from needs a value');
  r = ckpt('log', '--store', 'mysql://x');
  assert.is(r.code, 2);
  assert.match(r.err, 'unknown store URL "mysql://x"');
});

test('log prints one line per event; --json prints NDJSON; --from starts at a position', async () => {
  const store = openEventStore(`sqlite:${join(home, 'events.db')}`);
  await store.append('job-a', [forked(10), forked(11)]);
  await store.append('job-b', [marker('hello')]);
  await store.close();
  let r = ckpt('log');
  assert.is(r.code, 0, r.err);
  const lines = r.out.trimEnd().split('\n');
  assert.is(lines.length, 3);
  assert.match(lines[0]!, /^\s+1 {2}\d{4}-\d\d-\d\dT[\d:.]+Z {2}job-a#0 {2}ProcessForked {2}node=n1 unit=u1 parent=1@100 child=10@210$/, r.out);
  assert.match(lines[2]!, 'job-b#0  DeadlineScheduled  deadline=hello');
  r = ckpt('log', '--json', '--from', '2');
  const events = r.out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(
    events.map((e) => [e.position, e.stream, e.revision, e.type]),
    [
      [2, 'job-a', 1, 'ProcessForked'],
      [3, 'job-b', 0, 'DeadlineScheduled'],
    ],
  );
  assert.equal(Object.keys(events[0]), ['position', 'stream', 'revision', 'id', 'type', 'schemaVersion', 'data', 'metadata', 'digest']);
  assert.match(events[0].digest, /^[0-9a-f]{64}$/);
  assert.equal(events[0].metadata.actor, { kind: 'user', uid: process.getuid!() });
  assert.is(ckpt('log', '--from', '99').out, '');
});

test('history keeps one line per event when a command spans several lines (control characters escaped)', async () => {
  const store = openEventStore(`sqlite:${join(home, 'events.db')}`);
  await store.append('job-ml', [{ type: 'UnitAssigned', data: { unit: 'main', node: 'n1', command: ['sh', '-c', 'echo one\nsleep 1\tthen\u0007'], cwd: '/tmp\nx', limits: {} } }]);
  await store.close();
  const r = ckpt('history', 'ml');
  assert.is(r.code, 0, r.err);
  assert.is(r.out.trimEnd().split('\n').length, 1, r.out);
  assert.match(r.out, 'command=sh,-c,echo one\\nsleep 1\\tthen\\u0007 cwd=/tmp\\nx');
});

test('log --follow prints new events as they are committed, and stops on SIGTERM with exit 0', async () => {
  const url = `sqlite:${join(home, 'follow.db')}`;
  const follower = spawn(process.execPath, [CLI, 'log', '--follow', '--store', url], { env });
  let out = '';
  follower.stdout.on('data', (d) => (out += d));
  const store = openEventStore(url);
  for (let i = 0; i < 5; i++) await store.append('job-f', [marker(`live ${i}`)]);
  for (let i = 0; i < 500 && !out.includes('live 4'); i++) await new Promise((r) => setTimeout(r, 10));
  follower.kill('SIGTERM');
  const code = await new Promise((r) => follower.on('close', r));
  await store.close();
  assert.is(code, 0);
  assert.equal(
    out
      .trim()
      .split('\n')
      .map((l) => l.split('deadline=')[1]?.split(' ')[0]),
    ['live', 'live', 'live', 'live', 'live'],
  );
  assert.match(out, 'live 4');
});

test('a store that cannot be reached: a message that says what to do, exit 1', () => {
  const r = ckpt('log', '--store', 'postgres://ckpt@127.0.0.1:1/ckpt');
  assert.is(r.code, 1);
  assert.match(r.err, 'cannot reach the event store');
  assert.match(r.err, '--store or CKPT_STORE');
  const blocked = ckpt('log', '--store', 'sqlite:/proc/no/such/dir/events.db');
  assert.is(blocked.code, 1);
  assert.match(blocked.err, 'ckpt log:');
});

test('the default store is $CKPT_HOME/events.db; CKPT_STORE overrides it', async () => {
  const other = join(home, 'other.db');
  const store = openEventStore(`sqlite:${other}`);
  await store.append('job-o', [marker('from CKPT_STORE')]);
  await store.close();
  const r = spawnSync(process.execPath, [CLI, 'log'], { env: { ...env, CKPT_STORE: `sqlite:${other}` }, encoding: 'utf8' });
  assert.match(r.stdout, 'from CKPT_STORE');
  assert.not.match(ckpt('log').out, 'from CKPT_STORE');
});

test('log | head stops quietly when the reader goes away', async () => {
  const store = openEventStore(`sqlite:${join(home, 'events.db')}`);
  for (let i = 0; i < 20; i++)
    await store.append(
      'job-big',
      Array.from({ length: 500 }, (_, k) => marker(`${i} ${k}`)),
    );
  await store.close();
  const r = spawnSync('sh', ['-c', `"${process.execPath}" "${CLI}" log | head -n 3`], { env, encoding: 'utf8' });
  assert.is(r.status, 0);
  assert.is(r.stdout.trim().split('\n').length, 3);
  assert.is(r.stderr, '');
});

test.run();
