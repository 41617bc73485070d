// The node agent's request gateway against a real agent, with root and an unprivileged user
// (nobody, through runuser): who a request is recorded as comes from the kernel, a forged unit
// root is refused on record and left alone, a stranger can neither act on nor read someone else's
// job, and a user runs and reads a job of their own through the agent.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { agentSocket } from '../adapters/agent/daemon.js';
import { isUnitCgroupPath } from '../adapters/cgroups/unit-cgroups.js';
import { readStat } from '../adapters/tracking/procfs.js';
import { CLI, jobHarness, type PsRow, type Result, sigkill } from './support/jobs.js';
import { firstMissing, needCommand, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until } from './support/wait.js';

const NOBODY = 65534;
const userExists = () => (spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout.trim() === String(NOBODY) ? undefined : 'needs the user nobody (uid 65534)');
const missing = firstMissing(needRoot, () => needCommand('runuser', 'apt-get install -y util-linux'), userExists);
const test = suiteRequiring('request gateway (real agent, root and nobody)', missing);

const NODE = 'gwnode';
const { work, h, ckpt, json, history, killAll, cleanup } = jobHarness('ckpt-gateway', NODE);
const store = `sqlite:${join(h.home, 'events.db')}`;
const nobodyHome = join(work, 'nobody');
const outsiders: ChildProcess[] = [];

test.before(() => {
  // nobody may pass through the work directory to its own home; root's home (the store) stays 0700.
  chmodSync(work, 0o755);
  mkdirSync(nobodyHome, { mode: 0o700 });
  chownSync(nobodyHome, NOBODY, NOBODY);
  const started = ckpt(['agent', 'start']);
  assert.is(started.code, 0, started.err);
});
test.after(() => {
  for (const c of outsiders) if (c.pid) sigkill(c.pid);
  for (const job of ['rootjob', 'mine']) {
    try {
      killAll(job);
    } catch {
      // never started
    }
  }
  cleanup([NODE]);
});

/** The CLI as nobody, on root's store. */
const asNobody = (args: string[], env: Record<string, string> = {}): Result => {
  const r = spawnSync('runuser', ['-u', 'nobody', '--', process.execPath, CLI, ...args], {
    cwd: '/tmp',
    env: { ...process.env, CKPT_HOME: nobodyHome, CKPT_NODE: NODE, CKPT_STORE: store, ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

/** A raw client of the agent's socket as nobody: sends the request lines, prints one JSON array of the answers. */
const RAW = `const [path, ...lines] = process.argv.slice(1); const out = []; let buf = '';
const c = require('net').connect(path); c.setEncoding('utf8');
c.on('data', (d) => { buf += d; for (let i; (i = buf.indexOf('\\n')) >= 0; ) { out.push(JSON.parse(buf.slice(0, i))); buf = buf.slice(i + 1);
  if (out.length === lines.length) { console.log(JSON.stringify(out)); c.end(); } } });
c.on('error', (e) => { console.error(e.message); process.exit(1); });
for (const l of lines) c.write(l + '\\n');`;
type Answer = { id: number; ok: boolean; result?: unknown; error?: { name: string; message: string; code?: string } };
const rawAsNobody = (...requests: object[]): Answer[] => {
  const r = spawnSync('runuser', ['-u', 'nobody', '--', process.execPath, '-e', RAW, agentSocket(NODE, store), ...requests.map((q, i) => JSON.stringify({ id: i + 1, ...q }))], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.is(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Answer[];
};

type Recorded = ReturnType<typeof history>[number];
const actorOf = (e: Recorded) => e.metadata.actor as { kind: string; uid?: number; pid?: number; user?: string };
const rejections = (job: string) => history(job).filter((e) => e.type === 'RequestRejected');
/** The root of a process as the kernel shows it: uids (real, effective, saved, fs) and cgroups. */
const uidsOf = (pid: number) =>
  /^Uid:\s+(.*)$/m
    .exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]!
    .split(/\s+/)
    .map(Number);
const ckptCgroupsOf = (pid: number) =>
  readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    .split('\n')
    .filter((l) => isUnitCgroupPath(l.slice(l.indexOf(':', l.indexOf(':') + 1) + 1)));

test('root runs a job through the gateway: recorded as the caller the kernel names (uid and pid), owner root', () => {
  const r = ckpt(['run', '-d', '--job', 'rootjob', '--', 'sleep', '600']);
  assert.is(r.code, 0, r.err);
  const [submitted] = history('rootjob');
  assert.is(submitted!.type, 'JobSubmitted');
  assert.equal({ ...actorOf(submitted!), pid: undefined }, { kind: 'user', uid: 0, gid: 0, user: 'root', pid: undefined });
  assert.ok((actorOf(submitted!).pid ?? 0) > 0, 'the actor carries the pid from SO_PEERCRED');
  assert.equal((submitted!.data.owner as { uid: number }).uid, 0);
});

test('a client-supplied actor and owner are ignored: the log shows the real uid, the coordinator refuses on record', async () => {
  const forgedActor = { kind: 'user', uid: 0, user: 'root' };
  const request = '11111111-2222-4333-8444-555555555555';
  const [answer] = rawAsNobody({
    op: 'append',
    stream: 'job-rootjob',
    events: [{ type: 'CheckpointRequested', data: { request, stop: false, timeoutMs: 30_000 }, metadata: { actor: forgedActor, correlationId: request } }],
  });
  assert.ok(answer!.ok, JSON.stringify(answer));
  const rejected = await until('the coordinator’s refusal', () => rejections('rootjob').find((e) => e.data.request === request), 20_000, 100);
  const requested = history('rootjob').find((e) => e.type === 'CheckpointRequested' && e.data.request === request)!;
  assert.is(actorOf(requested).uid, NOBODY);
  assert.is(actorOf(requested).user, 'nobody');
  assert.is(rejected.data.code, 'unauthorized');
  assert.match(String(rejected.data.reason), 'nobody (uid 65534) may not checkpoint job rootjob');
  assert.not.ok(
    history('rootjob').some((e) => e.type === 'CheckpointPlanned'),
    'nothing was planned',
  );

  // A job submitted with someone else's owner and actor belongs to the caller.
  const [submitted] = rawAsNobody({
    op: 'append',
    stream: 'job-forged-owner',
    expectedRevision: 'no_stream',
    events: [
      { type: 'JobSubmitted', data: { job: 'forged-owner', owner: { uid: 0, user: 'root' } }, metadata: { actor: forgedActor } },
      { type: 'UnitAssigned', data: { unit: 'main', node: 'elsewhere', command: ['true'], cwd: '/', limits: {} } },
    ],
  });
  assert.ok(submitted!.ok, JSON.stringify(submitted));
  const [event] = history('forged-owner');
  assert.equal(event!.data.owner, { uid: NOBODY, gid: NOBODY, groups: [NOBODY], user: 'nobody' });
  assert.is(actorOf(event!).uid, NOBODY);
});

test('what only agents record is refused: a client cannot append UnitCgroupsCreated or RequestRejected', () => {
  const answers = rawAsNobody(
    {
      op: 'append',
      stream: 'job-rootjob',
      events: [{ type: 'UnitCgroupsCreated', data: { unit: 'main', node: NODE, cgroups: [{ controller: 'freezer', path: '/sys/fs/cgroup/freezer' }], limits: {} } }],
    },
    { op: 'append', stream: 'node-' + NODE, events: [{ type: 'RequestRejected', data: { request: 'x', command: 'run', code: 'invalid', reason: 'forged' } }] },
  );
  for (const a of answers) assert.not.ok(a.ok);
  assert.match(answers[0]!.error!.message, 'UnitCgroupsCreated is not a request a client may make');
  assert.match(answers[1]!.error!.message, 'requests go to job streams');
});

test('a forged UnitLaunched pointing at a root process is refused and recorded; the process is untouched', async () => {
  // A session of its own, as a root daemon has: under a runner whose session leader sits outside its PID
  // namespace (CI), an inherited session id reads as 0, which no event may carry.
  const victim = spawn('sleep', ['600'], { stdio: 'ignore', detached: true });
  outsiders.push(victim);
  const stat = await until('the victim', () => readStat(victim.pid!));
  const [submitted] = rawAsNobody({
    op: 'append',
    stream: 'job-forge',
    expectedRevision: 'no_stream',
    events: [
      { type: 'JobSubmitted', data: { job: 'forge', owner: { uid: NOBODY } } },
      { type: 'UnitAssigned', data: { unit: 'main', node: NODE, command: ['sleep', '600'], cwd: '/tmp', limits: {} } },
    ],
  });
  assert.ok(submitted!.ok, JSON.stringify(submitted));
  await until('the unit’s cgroups', () => history('forge').some((e) => e.type === 'UnitCgroupsCreated'), 15_000, 50);
  const [claim] = rawAsNobody({
    op: 'append',
    stream: 'job-forge',
    events: [{ type: 'UnitLaunched', data: { unit: 'main', node: NODE, root: { pid: stat.pid, startTime: stat.startTime }, pgid: stat.pgid, sid: stat.sid, comm: 'sleep', cgroup: '' } }],
  });
  assert.not.ok(claim!.ok);
  assert.ok(claim!.error!.message.includes(`runs as uid 0/0/0/0, not as uid ${NOBODY}`), claim!.error!.message);
  const [rejected] = rejections('forge');
  assert.ok(rejected, 'the refusal is recorded in the job');
  assert.is(rejected!.data.command, 'run');
  assert.is(actorOf(rejected!).uid, NOBODY);
  assert.not.ok(history('forge').some((e) => e.type === 'UnitLaunched'));
  const after = readStat(victim.pid!);
  assert.is(after?.startTime, stat.startTime, 'still running');
  assert.ok(after!.state === 'S' || after!.state === 'R', `not frozen (state ${after!.state})`);
  assert.equal(ckptCgroupsOf(victim.pid!), [], 'in no ckpt cgroup');
});

test('a stranger’s checkpoint, restart, prune and added unit of root’s job are refused and recorded; root’s events are not theirs to read', async () => {
  const before = rejections('rootjob').length;
  let r = asNobody(['checkpoint', 'rootjob', '--wait', '--timeout', '20s']);
  assert.is(r.code, 1, r.err);
  assert.match(r.err, 'refused: nobody (uid 65534) may not checkpoint job rootjob');
  r = asNobody(['restart', 'rootjob', '--wait', '--timeout', '20s']);
  assert.is(r.code, 1, r.err);
  assert.match(r.err, 'may not restart job rootjob');
  r = asNobody(['prune', 'rootjob', '--keep', '1']);
  assert.is(r.code, 1, r.err);
  assert.match(r.err, 'refused: nobody (uid 65534) may not prune job rootjob');
  const [join] = rawAsNobody({
    op: 'append',
    stream: 'job-rootjob',
    expectedRevision: 'stream_exists',
    events: [{ type: 'UnitAssigned', data: { unit: 'extra', node: NODE, command: ['sleep', '1'], cwd: '/tmp', limits: {} } }],
  });
  assert.not.ok(join!.ok);
  assert.match(join!.error!.message, 'nobody (uid 65534) may not add a unit to job rootjob');
  const recorded = rejections('rootjob').slice(before);
  assert.equal(recorded.map((e) => e.data.command).sort(), ['checkpoint', 'prune', 'restart', 'run']);
  assert.not.ok(history('rootjob').some((e) => e.type === 'UnitAssigned' && e.data.unit === 'extra'));
  for (const e of recorded) assert.is(e.data.code, 'unauthorized');
  const prune = history('rootjob').find((e) => e.type === 'PruneRequested')!;
  assert.is(actorOf(prune).uid, NOBODY);

  // Of root's job, the stranger sees their own requests and the refusals of them, nothing of root's.
  r = asNobody(['history', 'rootjob', '--json']);
  assert.is(r.code, 0, r.err);
  const seen = r.out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Recorded);
  assert.ok(seen.length >= 4, r.out);
  for (const e of seen) assert.ok(actorOf(e).uid === NOBODY || e.type === 'RequestRejected', `${e.type} by ${JSON.stringify(e.metadata.actor)} is not theirs to see`);
  assert.not.ok(seen.some((e) => e.type === 'JobSubmitted' || e.type === 'UnitLaunched'));
  r = asNobody(['ps', 'rootjob']);
  assert.is(r.code, 1);
  assert.match(r.err, 'unknown job "rootjob"');
  // The read models the agent answers with show no more than those events: their refused request.
  r = asNobody(['checkpoints', 'rootjob', '--json', '--verbose']);
  assert.is(r.code, 0, r.err);
  const seenCheckpoints = JSON.parse(r.out) as Array<{ outcome: string; reason: string; requestedBy: { uid: number } }>;
  assert.ok(seenCheckpoints.length > 0);
  for (const c of seenCheckpoints) {
    assert.equal([c.outcome, c.requestedBy.uid], ['rejected', NOBODY]);
    assert.match(c.reason, 'nobody (uid 65534) may not checkpoint job rootjob');
  }
  assert.match(r.err, 'checkpoints/rootjob: folded from the');
  r = asNobody(['audit', 'rootjob', '--json']);
  assert.is(r.code, 0, r.err);
  const [audit] = JSON.parse(r.out) as Array<{ entries: Array<{ kind: string; outcome: string; requestedBy: { uid: number }; membership: unknown[] }> }>;
  assert.ok(audit!.entries.length >= 3);
  for (const e of audit!.entries) assert.equal([e.requestedBy.uid, e.outcome, e.membership ?? []], [NOBODY, 'rejected', []], JSON.stringify(e));
});

test('nobody runs a job of their own through the agent: it runs as them, in its cgroups; they read its history and ps, not root’s jobs', () => {
  const r = asNobody(['run', '-d', '--json', '--job', 'mine', '--', 'sleep', '600']);
  assert.is(r.code, 0, r.err);
  const launched = JSON.parse(r.out) as { pid: number };
  const rows = JSON.parse(asNobody(['ps', 'mine', '--json']).out) as PsRow[];
  const running = rows.filter((m) => m.state === 'running');
  assert.ok(
    running.some((m) => m.comm === 'sleep'),
    JSON.stringify(rows),
  );
  for (const m of running) {
    assert.equal(uidsOf(m.pid), [NOBODY, NOBODY, NOBODY, NOBODY], `${m.comm} runs as nobody`);
    assert.match(m.cgroup ?? '', '/mine/main');
  }
  assert.ok(ckptCgroupsOf(launched.pid).length > 0, 'the agent moved the root into the unit’s cgroups');
  const mine = asNobody(['history', 'mine', '--json']);
  assert.is(mine.code, 0, mine.err);
  const events = mine.out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Recorded);
  assert.equal(
    events.slice(0, 4).map((e) => e.type),
    ['JobSubmitted', 'UnitAssigned', 'UnitCgroupsCreated', 'UnitLaunched'],
  );
  assert.is(actorOf(events[3]!).uid, NOBODY, 'the launch is recorded as its requester');
  const jobs = (JSON.parse(asNobody(['jobs', '--json']).out) as Array<{ job: string }>).map((j) => j.job).sort();
  assert.equal(jobs, ['forge', 'forged-owner', 'mine']);
  // --all through the agent: the ended jobs' rows too, still only the caller's own.
  const all = (JSON.parse(asNobody(['jobs', '--all', '--json']).out) as Array<{ job: string }>).map((j) => j.job).sort();
  assert.equal(all, jobs);
  const verbose = asNobody(['jobs', '--verbose']);
  assert.match(verbose.err, /ckpt jobs: snapshot jobs/, 'the agent answers from the jobs snapshot and says how');
  assert.ok(
    json<Array<{ job: string }>>(['jobs']).some((j) => j.job === 'rootjob'),
    'root sees every job',
  );
});

test('nobody in the foreground: output passes through and the command’s status comes back (followed through the agent)', () => {
  const r = asNobody(['run', '--job', 'fgmine', '--', 'sh', '-c', 'id -u; exit 3']);
  assert.is(r.code, 3, r.err);
  assert.is(r.out.trim(), String(NOBODY));
});

test('the decisions about these requests re-derive: ckpt verify of root’s job with the refusals in it', () => {
  const r = ckpt(['verify', 'rootjob']);
  assert.is(r.code, 0, r.out + r.err);
});

test('nobody asks whether the agent runs: it answers on its socket (root’s pid file is not theirs to read)', () => {
  const r = asNobody(['agent', 'status', '--json']);
  assert.is(r.code, 0, r.err);
  assert.equal(JSON.parse(r.out), { running: true, node: NODE, socket: agentSocket(NODE, store) });
  const none = asNobody(['agent', 'status', '--node', 'elsewhere']);
  assert.is(none.code, 1);
  assert.match(none.out, /no node agent answers for elsewhere .*ask root to start one/);
});

test('a killed agent leaves a stale socket: root’s next request starts a new agent, which replaces it', async () => {
  const before = json<{ pid: number; startTime: number }>(['agent', 'status']);
  sigkill(before.pid);
  await until('the agent gone', () => readStat(before.pid)?.startTime !== before.startTime || readStat(before.pid)?.state === 'Z', 10_000, 50);
  assert.ok(existsSync(agentSocket(NODE, store)), 'the dead agent left its socket');
  const r = ckpt(['prune', 'mine', '--keep', '1']);
  assert.is(r.code, 0, r.err);
  assert.match(r.out, 'nothing to prune');
  const after = json<{ pid: number }>(['agent', 'status']);
  assert.is.not(after.pid, before.pid);
  const pruned = history('mine').find((e) => e.type === 'PruneRequested')!;
  assert.is(actorOf(pruned).uid, 0);
});

test('no agent for the store: a non-root caller is told to ask root to start one', () => {
  const r = asNobody(['checkpoint', 'mine'], { CKPT_STORE: `sqlite:${join(work, 'none', 'events.db')}` });
  assert.is(r.code, 1);
  assert.match(r.err, `no node agent runs for sqlite:${join(work, 'none', 'events.db')} on this machine: ask root to start one (sudo ckpt agent start)`);
});

test.run();
