// The testbed of hosts on one machine (scripts/testbed.sh), as root with PostgreSQL and CRIU: three
// hosts, each a network namespace with its own address, CKPT_HOME and node agent, one PostgreSQL
// on the bridge. Each agent runs in its host's namespace, yet follows the kernel's proc connector
// (which answers only in the initial one): each host tracks its own forking job, its events carry
// its node, a checkpoint on one host commits into that host's own CKPT_HOME. Then `down` leaves
// nothing: no namespaces, links, mounts, processes, cgroups, files.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as assert from 'uvu/assert';
import { storeId } from '../adapters/agent/daemon.js';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { readStat } from '../adapters/tracking/procfs.js';
import { STEP_OUTCOMES } from '../domain/checkpoint-commands.js';
import { CLI, killMembers, type PsRow, type Result } from './support/jobs.js';
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
type HistoryLine = { type: string; data: { unit?: string; node?: string; version?: number } };
const historyOn = (k: number, job: string): HistoryLine[] =>
  ckptOn(k, ['history', job, '--json'])
    .out.trim()
    .split('\n')
    .map((l) => JSON.parse(l) as HistoryLine);
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
    const rows = await until(
      `host${k}'s job and its two forks tracked`,
      () => {
        const ps = jsonOn<PsRow[]>(k, ['ps', `tb${k}`]).filter((m) => m.state === 'running');
        return ps.filter((m) => m.comm === 'sleep').length === 2 && ps;
      },
      60_000,
      200,
    );
    assert.equal([...new Set(rows.map((m) => m.node))], [`host${k}`]);
    assert.ok(
      rows.some((m) => m.comm === 'sh'),
      rows.map((m) => m.comm).join(' '),
    );
    for (const m of rows) assert.is(netnsOf(m.pid), hostNetns(k), 'the job runs in its host’s network namespace');
    const jobs = jsonOn<Array<{ job: string; units: Array<{ node: string }> }>>(k, ['jobs']);
    const own = jobs.find((j) => j.job === `tb${k}`);
    assert.ok(own, `host${k} lists its job`);
    assert.equal(
      own.units.map((u) => u.node),
      [`host${k}`],
    );
    const history = historyOn(k, `tb${k}`);
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
  assert.equal(
    report.units.map((u) => u.node),
    ['host2'],
  );
  assert.ok(existsSync(join(dir, 'tb', 'host2', 'images', 'tb2', `v${report.version}`)), 'images on host2');
  assert.not.ok(existsSync(join(dir, 'tb', 'host1', 'images', 'tb2')), 'nothing of it on host1');
  assert.is(jsonOn<PsRow[]>(2, ['ps', 'tb2']).filter((m) => m.state === 'running' && m.comm === 'sleep').length, 2, 'thawed and running');
});

// A ring across the hosts: unit K listens on 10.77.0.K:PORT, connects to the next host, and passes
// a token (round, running checksum) on over TCP, each hop folding its host and round into the
// checksum. Unit 1 starts the rounds and, after ROUNDS, writes the checksum to OUT and sends END
// round the ring. OUT.progressK holds the last round host K saw, OUT.progressK.log every one; files
// are opened anew each time, so the images pin none of them.
const RING = `import hashlib, os, socket, sys, time
k, n, rounds, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def note(path, text):
    with open(path + '.tmp', 'w') as f: f.write(text)
    os.rename(path + '.tmp', path)
    with open(path + '.log', 'a') as f: f.write(text + '\\n')
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((f'10.77.0.{k}', port)); server.listen(1)
nxt = socket.socket()
while True:
    try: nxt.connect((f'10.77.0.{k % n + 1}', port)); break
    except OSError: nxt.close(); nxt = socket.socket(); time.sleep(0.1)
prev, _ = server.accept(); server.close()
reader = prev.makefile('r')
if k == 1: nxt.sendall(b'1 0\\n')
for line in reader:
    if line.startswith('END'):
        if k != 1: nxt.sendall(b'END\\n')
        break
    r, checksum = line.split()
    r = int(r)
    checksum = hashlib.sha256(f'{checksum}:{k}:{r}'.encode()).hexdigest()[:16]
    note(f'{out}.progress{k}', str(r))
    time.sleep(0.02)
    if k == 1 and r == rounds:
        note(out, checksum); nxt.sendall(b'END\\n')
    else:
        nxt.sendall(f'{r + 1 if k == 1 else r} {checksum}\\n'.encode())
`;

/** What an uninterrupted ring computes: the checksum folded hop by hop. */
const ringResult = (hosts: number, rounds: number): string => {
  let checksum = '0';
  for (let r = 1; r <= rounds; r++)
    for (const k of [...Array.from({ length: hosts - 1 }, (_, i) => i + 2), 1]) checksum = createHash('sha256').update(`${checksum}:${k}:${r}`).digest('hex').slice(0, 16);
  return checksum;
};

test('a job whose units on 3 hosts talk over TCP is checkpointed as one, killed on every host, restarted: the same result as an uninterrupted run', async () => {
  const rounds = 300;
  const ring = join(dir, 'ring.py');
  writeFileSync(ring, RING);
  const out = join(dir, 'ring.out');
  const progress = (k: number) => Number(existsSync(`${out}.progress${k}`) ? readFileSync(`${out}.progress${k}`, 'utf8') : 0);
  // Hosts 3 and 2 first: each unit's listener is up before the one that connects to it needs it.
  for (const k of [3, 2, 1]) {
    const r = ckptOn(k, ['run', '--detach', '--job', 'ring', '--unit', `u${k}`, '--tcp-established', '--', 'python3', ring, String(k), '3', String(rounds), '7000', out]);
    assert.is(r.code, 0, r.err);
  }
  await until('the ring turning', () => progress(1) >= 20, 60_000, 100);
  const r = ckptOn(1, ['checkpoint', 'ring', '--wait', '--json']);
  assert.is(r.code, 0, r.err + r.out);
  const report = JSON.parse(r.out) as { version: number; outcome: string; units: Array<{ unit: string; node: string }> };
  assert.is(report.outcome, 'committed', r.out);
  assert.equal(report.units.map((u) => `${u.unit}@${u.node}`).sort(), ['u1@host1', 'u2@host2', 'u3@host3']);
  for (const k of HOSTS) assert.ok(existsSync(join(dir, 'tb', `host${k}`, 'images', 'ring', `v${report.version}`)), `u${k}'s images on host${k}`);
  const atCheckpoint = progress(1);
  await until('the ring going on past the checkpoint', () => progress(1) > atCheckpoint + 10, 60_000, 100);
  const members = (k: number) => jsonOn<PsRow[]>(k, ['ps', 'ring']).filter((m) => m.state === 'running' && m.node === `host${k}`);
  for (const k of HOSTS) killMembers(members(k));
  for (const k of HOSTS) await until(`every process of u${k} gone`, () => members(k).length === 0, 30_000, 200);
  const rounds1 = () => readFileSync(`${out}.progress1.log`, 'utf8').split('\n').filter(Boolean).map(Number);
  const killedAt = rounds1().length;
  const restarted = ckptOn(1, ['restart', 'ring', '--wait', '--json']);
  assert.is(restarted.code, 0, restarted.err + restarted.out);
  for (const k of HOSTS) {
    const restored = await until(`u${k} running again on host${k}`, () => members(k).length > 0 && members(k), 30_000, 200);
    for (const m of restored) assert.is(netnsOf(m.pid), hostNetns(k), `u${k} restored into host${k}'s network namespace`);
  }
  // The units were held restored, connections locked, until all three were; then released together.
  const restartEvents = historyOn(1, 'ring').filter((e) => e.type === 'UnitRestoreHeld' || e.type === 'RestartReleased' || e.type === 'UnitRestored');
  assert.equal(
    restartEvents.slice(0, 4).map((e) => e.type),
    ['UnitRestoreHeld', 'UnitRestoreHeld', 'UnitRestoreHeld', 'RestartReleased'],
    restartEvents.map((e) => e.type).join(' '),
  );
  const result = await until('the ring to finish', () => existsSync(out) && readFileSync(out, 'utf8'), 120_000, 200);
  // The restored ring took up the rounds from the checkpoint, not from where it was killed…
  const after = rounds1().slice(killedAt);
  assert.ok(after[0]! <= atCheckpoint + 1 && after[0]! >= atCheckpoint - 10, `host1 went on from round ${after[0]} (checkpointed near ${atCheckpoint}, killed at ${rounds1()[killedAt - 1]})`);
  // …and ended with what an uninterrupted ring computes.
  assert.is(result, ringResult(3, rounds), `the restarted ring computes what an uninterrupted one does`);
  const audit = jsonOn<Array<{ entries: Array<{ kind: string; outcome: string; units: Array<{ unit: string; node: string }> }> }>>(2, ['audit', 'ring']);
  for (const kind of ['checkpoint', 'restart']) {
    const entry = audit[0]!.entries.find((e) => e.kind === kind)!;
    assert.equal(entry.units.map((u) => `${u.unit}@${u.node}`).sort(), ['u1@host1', 'u2@host2', 'u3@host3'], `the audit shows each unit of the ${kind} on its host`);
  }
  const verified = ckptOn(1, ['verify', 'ring']);
  assert.is(verified.code, 0, verified.err + verified.out);
});

/** Starts job JOB with a unit uK on each host counting into OUT.K (by rename: nothing held open). */
const counting = (job: string, out: string) => {
  for (const k of HOSTS) {
    const loop = `i=0; while :; do i=$((i+1)); echo $i > ${out}.${k}.tmp; mv ${out}.${k}.tmp ${out}.${k}; sleep 0.1; done`;
    const r = ckptOn(k, ['run', '--detach', '--job', job, '--unit', `u${k}`, '--', 'sh', '-c', loop]);
    assert.is(r.code, 0, r.err);
  }
  return (k: number) => Number(existsSync(`${out}.${k}`) ? readFileSync(`${out}.${k}`, 'utf8').trim() || 0 : 0);
};
type Summary = { version: number; outcome: string; phase: string; reason: string | null; units: Array<{ unit: string; node: string }> };
const checkpointsOf = (k: number, job: string) => jsonOn<Summary[]>(k, ['checkpoints', job]);

test('a host cut off during a checkpoint: aborted at the deadline naming it, the other units thawed at once; once it is back, the next checkpoint commits', async () => {
  const count = counting('cut', join(dir, 'cut'));
  await until('every unit counting', () => HOSTS.every((k) => count(k) > 3), 60_000, 100);
  assert.is(testbed(['cut', '2']).code, 0);
  try {
    const r = ckptOn(1, ['checkpoint', 'cut', '--wait', '--timeout', '8s', '--json']);
    assert.is(r.code, 3, `--wait gives up at the deadline (exit 3): ${r.code} ${r.err}`);
    // Host 1 and 3 go on counting at once, not when host 2 comes back.
    const [c1, c3] = [count(1), count(3)];
    await until('units on hosts 1 and 3 thawed and counting', () => count(1) > c1 + 3 && count(3) > c3 + 3, 10_000, 100);
    const aborting = await until('the abort naming host2', () => checkpointsOf(1, 'cut').find((c) => c.reason?.includes('host2')), 30_000, 200);
    assert.match(aborting.reason!, 'the deadline');
    assert.match(aborting.reason!, /unit u2 on host2 \((freeze|dump|verify)\)/);
    assert.not.match(aborting.reason!, 'host1');
  } finally {
    assert.is(testbed(['mend', '2']).code, 0);
  }
  // Back on the link, host 2's agent catches up: it answers what it missed (too late to freeze),
  // the abort completes, and a new checkpoint of all three units commits.
  await until('the first checkpoint aborted', () => checkpointsOf(1, 'cut')[0]?.outcome === 'aborted', 120_000, 500);
  const c2 = count(2);
  await until('host2’s unit counting', () => count(2) > c2 + 3, 10_000, 100);
  const next = ckptOn(1, ['checkpoint', 'cut', '--wait', '--json']);
  assert.is(next.code, 0, next.err + next.out);
  assert.is((JSON.parse(next.out) as Summary).outcome, 'committed');
  for (const k of HOSTS) killMembers(jsonOn<PsRow[]>(k, ['ps', 'cut']).filter((m) => m.state === 'running' && m.node === `host${k}`));
});

test('kill -9 of one host’s agent mid-checkpoint: committed or cleanly aborted, nothing frozen on any host, no step executed twice', async () => {
  const count = counting('crash', join(dir, 'crash'));
  await until('every unit counting', () => HOSTS.every((k) => count(k) > 3), 60_000, 100);
  const agent2 = agents[1]!;
  const requested = ckptOn(1, ['checkpoint', 'crash', '--timeout', '10s', '--json']);
  assert.is(requested.code, 0, requested.err);
  await until(
    'host2 has frozen its unit or answered',
    () => historyOn(1, 'crash').some((e) => e.type !== 'UnitFreezeRequested' && e.data.unit === 'u2' && e.type.startsWith('Unit')),
    30_000,
    20,
  ).catch(() => undefined);
  process.kill(agent2.pid, 'SIGKILL');
  const outcome = await until(
    'the checkpoint ended',
    () => {
      const c = checkpointsOf(1, 'crash')[0];
      return c && (c.outcome === 'committed' || c.phase === 'aborting' || c.outcome === 'aborted') && c;
    },
    60_000,
    200,
  );
  // Whatever the outcome, every host counts again (the guard thawed host 2's unit if it was frozen).
  const before = HOSTS.map(count);
  await until('every unit counting', () => HOSTS.every((k, i) => count(k) > before[i]! + 3), 30_000, 100);
  const again = ckptOn(2, ['agent', 'start', '--json']);
  assert.is(again.code, 0, again.err);
  agents[1] = JSON.parse(again.out) as { pid: number; startTime: number };
  const ended = await until(
    'the checkpoint settled',
    () => {
      const c = checkpointsOf(1, 'crash')[0];
      return c && (c.phase === 'completed' || c.outcome === 'aborted') && c;
    },
    60_000,
    200,
  );
  assert.ok(ended.outcome === 'committed' || ended.outcome === 'aborted', `${outcome.outcome} then ${ended.outcome}`);
  const history = historyOn(1, 'crash').filter((e) => e.data.version === ended.version && !e.type.endsWith('Requested'));
  const stepOf = new Map(Object.entries(STEP_OUTCOMES).flatMap(([step, outcomes]) => outcomes.map((type) => [type as string, step])));
  const answers = history.filter((e) => stepOf.has(e.type)).map((e) => `${stepOf.get(e.type)} ${e.data.unit ?? e.data.node}`);
  assert.equal(answers.length, new Set(answers).size, `no step answered twice: ${answers.join(', ')}`);
  for (const k of HOSTS) killMembers(jsonOn<PsRow[]>(k, ['ps', 'crash']).filter((m) => m.state === 'running' && m.node === `host${k}`));
});

test('down leaves nothing: namespaces, links, mounts, processes, cgroups, files', () => {
  const down = testbed(['down']);
  assert.is(down.code, 0, down.err);
  assert.equal(
    readdirSync('/sys/class/net').filter((n) => n.startsWith('ckpt-')),
    [],
  );
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
