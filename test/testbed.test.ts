// The testbed of hosts on one machine (scripts/testbed.sh), as root with PostgreSQL and CRIU: three
// hosts, each a network namespace with its own address, CKPT_HOME and node agent, one PostgreSQL
// on the bridge. Each agent runs in its host's namespace, yet follows the kernel's proc connector
// (which answers only in the initial one): each host tracks its own forking job, its events carry
// its node, a checkpoint on one host commits into that host's own CKPT_HOME. Then `down` leaves
// nothing: no namespaces, links, mounts, processes, cgroups, files.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as assert from 'uvu/assert';
import { storeId } from '../adapters/agent/daemon.js';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { readStat } from '../adapters/tracking/procfs.js';
import { CLI, type PsRow, type Result } from './support/jobs.js';
import { freePort, needPostgres } from './support/postgres.js';
import { firstMissing, needCommand, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until } from './support/wait.js';

const SCRIPT = fileURLToPath(new URL('../../scripts/testbed.sh', import.meta.url));
const HOSTS = [1, 2, 3];

const testbedUp = () => {
  try {
    return statSync('/sys/class/net/ckpt-br0') && 'a testbed is up on this machine (scripts/testbed.sh status): the suite would take it over; run scripts/testbed.sh down first';
  } catch {
    return undefined;
  }
};
const missing = firstMissing(
  needRoot,
  needPostgres,
  () => needCommand('nsenter', 'apt-get install -y util-linux'),
  () => needCommand('ip', 'apt-get install -y iproute2'),
  () => (locateCriu() ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)'),
  testbedUp,
);
const test = suiteRequiring('testbed: several hosts on one machine', missing);

let env: Record<string, string> = {};
let dir = '';
let runNetnsMounted = false;
const store = () => `postgres://postgres@10.77.0.254:${env.CKPT_TESTBED_PG_PORT}/ckpt`;

const testbed = (args: string[]): Result => {
  const r = spawnSync('bash', [SCRIPT, ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 180_000, maxBuffer: 1 << 26 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};
/** `ckpt ARGS` in host K, through `testbed.sh run`. */
const ckptOn = (k: number, args: string[]): Result => testbed(['run', String(k), '--', process.execPath, CLI, ...args]);
const jsonOn = <T>(k: number, args: string[]): T => {
  const r = ckptOn(k, [...args, '--json']);
  if (r.code !== 0 && r.out.trim() === '') throw new Error(`ckpt ${args.join(' ')} on host${k}: exit ${r.code}: ${r.err}`);
  return JSON.parse(r.out) as T;
};
const netnsOf = (pid: number) => readlinkSync(`/proc/${pid}/ns/net`);
const hostNetns = (k: number) => `net:[${statSync(`/run/netns/ckpt-host${k}`).ino}]`;
const cmdline = (pid: string) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
};
const agents: Array<{ pid: number; startTime: number }> = [];

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ckpt-testbed-'));
  chmodSync(dir, 0o711); // PostgreSQL (the postgres user) keeps its cluster inside
  env = { CKPT_TESTBED_DIR: join(dir, 'tb'), CKPT_TESTBED_PG_PORT: String(await freePort()) };
  runNetnsMounted = spawnSync('mountpoint', ['-q', '/run/netns']).status === 0;
});

test.after(() => {
  if (existsSync('/sys/class/net/ckpt-br0') || existsSync(join(dir, 'tb'))) testbed(['down']);
  spawnSync('rmdir', [dir]);
});

test('up makes the hosts, again repairs them; each host reaches the store over the bridge', () => {
  const up = testbed(['up', '3']);
  assert.is(up.code, 0, up.err);
  // A half-made testbed (a host's link gone) is repaired by the next up.
  assert.is(spawnSync('ip', ['link', 'del', 'ckpt-v2']).status, 0);
  assert.is(testbed(['status']).code, 1, 'status says the testbed is incomplete');
  const again = testbed(['up', '3']);
  assert.is(again.code, 0, again.err);
  const status = testbed(['status']);
  assert.is(status.code, 0, status.out + status.err);
  for (const k of HOSTS) {
    assert.match(status.out, `host${k}: namespace ckpt-host${k}, eth0 10.77.0.${k}/24, veth ckpt-v${k} bridged`);
    assert.is(statSync(join(dir, 'tb', `host${k}`)).mode & 0o777, 0o700, 'each CKPT_HOME is private');
    const shown = testbed(['run', String(k), '--', 'sh', '-c', 'echo "$CKPT_NODE $CKPT_HOME $CKPT_STORE"; ip -br addr show eth0']);
    assert.is(shown.code, 0, shown.err);
    assert.match(shown.out, `host${k} ${join(dir, 'tb', `host${k}`)} ${store()}\n`);
    assert.match(shown.out, `10.77.0.${k}/24`);
  }
  assert.is(testbed(['run', '1', '--', 'echo']).code, 0);
  assert.match(testbed(['run', '9', '--', 'true']).err, 'host 9 does not exist');
  assert.match(testbed(['run', '1;true', '--', 'true']).err, 'a host is a number');
});

test('an agent in each host tracks its own forking job; events carry their node', async () => {
  for (const k of HOSTS) {
    const started = ckptOn(k, ['agent', 'start', '--json']);
    assert.is(started.code, 0, started.err);
    const info = JSON.parse(started.out) as { pid: number; startTime: number; node: string };
    agents.push(info);
    assert.is(info.node, `host${k}`);
    assert.is(netnsOf(info.pid), hostNetns(k), 'the agent lives in its host’s network namespace');
  }
  for (const k of HOSTS) {
    const r = ckptOn(k, ['run', '--detach', '--job', `tb${k}`, '--', 'sh', '-c', 'sleep 300 & sleep 300 & wait']);
    assert.is(r.code, 0, r.err);
  }
  for (const k of HOSTS) {
    const rows = await until(`host${k}'s job and its two forks tracked`, () => {
      const ps = jsonOn<PsRow[]>(k, ['ps', `tb${k}`]).filter((m) => m.state === 'running');
      return ps.filter((m) => m.comm === 'sleep').length === 2 && ps;
    }, 60_000, 200);
    assert.equal([...new Set(rows.map((m) => m.node))], [`host${k}`]);
    assert.ok(rows.some((m) => m.comm === 'sh'), rows.map((m) => m.comm).join(' '));
    for (const m of rows) assert.is(netnsOf(m.pid), hostNetns(k), 'the job runs in its host’s network namespace');
    const jobs = jsonOn<Array<{ job: string; units: Array<{ node: string }> }>>(k, ['jobs']);
    const own = jobs.find((j) => j.job === `tb${k}`);
    assert.ok(own, `host${k} lists its job`);
    assert.equal(own.units.map((u) => u.node), [`host${k}`]);
    const history = ckptOn(k, ['history', `tb${k}`, '--json']).out.trim().split('\n').map((l) => JSON.parse(l) as { type: string; data: { node?: string } });
    const forks = history.filter((e) => e.type === 'ProcessForked');
    assert.ok(forks.length >= 2, `the forks were recorded: ${history.map((e) => e.type).join(' ')}`);
    const nodes = new Set(history.flatMap((e) => (e.data.node ? [e.data.node] : [])));
    assert.equal([...nodes], [`host${k}`], 'every event naming a node names this host');
  }
});

test('a checkpoint on one host commits into that host’s own CKPT_HOME', () => {
  const r = ckptOn(2, ['checkpoint', 'tb2', '--wait', '--json']);
  assert.is(r.code, 0, r.err);
  const report = JSON.parse(r.out) as { version: number; outcome: string; units: Array<{ node: string }> };
  assert.is(report.outcome, 'committed', r.out);
  assert.equal(report.units.map((u) => u.node), ['host2']);
  assert.ok(existsSync(join(dir, 'tb', 'host2', 'images', 'tb2', `v${report.version}`)), 'images on host2');
  assert.not.ok(existsSync(join(dir, 'tb', 'host1', 'images', 'tb2')), 'nothing of it on host1');
  assert.is(jsonOn<PsRow[]>(2, ['ps', 'tb2']).filter((m) => m.state === 'running' && m.comm === 'sleep').length, 2, 'thawed and running');
});

test('down leaves nothing: namespaces, links, mounts, processes, cgroups, files', () => {
  const down = testbed(['down']);
  assert.is(down.code, 0, down.err);
  assert.equal(readdirSync('/sys/class/net').filter((n) => n.startsWith('ckpt-')), []);
  assert.equal(existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith('ckpt-')) : [], []);
  assert.is(spawnSync('mountpoint', ['-q', '/run/netns']).status === 0, runNetnsMounted, '/run/netns mounted as before');
  // PID 1 may reap an orphan a moment late: a zombie is gone too.
  const alive = (a: { pid: number; startTime: number }) => {
    const stat = readStat(a.pid);
    return stat?.startTime === a.startTime && stat.state !== 'Z' && stat.state !== 'X';
  };
  for (const a of agents) assert.not.ok(alive(a), `agent ${a.pid} is gone`);
  const id = storeId(store());
  for (const h of readdirSync('/sys/fs/cgroup')) assert.not.ok(existsSync(join('/sys/fs/cgroup', h, 'ckpt', id)), `cgroup ${h}/ckpt/${id} removed`);
  assert.not.ok(existsSync(join(dir, 'tb')), 'the state directory is gone');
  const left = readdirSync('/proc').filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid && cmdline(p).includes(dir));
  assert.equal(left.map(cmdline), [], 'no process names the testbed’s directory (PostgreSQL stopped)');
});

test.run();
