// Process tracking end to end, as root: real jobs started with `ckpt run`, the real node agent
// (proc connector, /proc, cgroups), membership checked against ps and /proc.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { pidsInUse } from '../adapters/tracking/pids.js';
import { readStat } from '../adapters/tracking/procfs.js';
import { jobHarness, killMembers, type PsRow, sigkill } from './support/jobs.js';
import { needPostgres, startPostgres } from './support/postgres.js';
import { firstMissing, needCommand, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until as wait } from './support/wait.js';

const until = <T>(what: string, probe: () => T | undefined | false, ms = 20_000) => wait(what, probe, ms, 50);

const missing = firstMissing(
  needRoot,
  () => needCommand('cc', 'apt-get install -y gcc'),
  () => needCommand('python3', 'apt-get install -y python3'),
);
const test = suiteRequiring('process tracking (real processes)', missing);

const { work, newHome, ckpt, ps, history: historyTypes, cleanup } = jobHarness('ckpt-track', 'testnode');

/** A tiny C workload: `storm N` forks N children one by one (each exits at once) and prints N;
 *  `burst N S` forks S sleepers (60 s) spread over N instant children, all at once, then reaps. */
const workload = join(work, 'storm');
const compile = () => {
  writeFileSync(
    `${workload}.c`,
    `
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int n = atoi(argv[1]), sleepers = argc > 2 ? atoi(argv[2]) : 0, made = 0;
  for (int i = 0; i < n; i++) {
    int sleeper = sleepers > 0 && i % (n / sleepers) == 0 && i / (n / sleepers) < sleepers;
    pid_t pid = fork();
    if (pid == 0) { if (sleeper) { signal(SIGTERM, SIG_DFL); sleep(60); } _exit(0); }
    if (pid < 0) { perror("fork"); return 1; }
    made++;
    if (!sleepers) waitpid(pid, NULL, 0);
  }
  if (sleepers) { while (waitpid(-1, NULL, WNOHANG) > 0) {} }
  printf("%d\\n", made);
  fflush(stdout);
  if (sleepers) pause();
  return 0;
}`,
  );
  execFileSync('cc', ['-O2', '-o', workload, `${workload}.c`]);
};

test.before(compile);
test.after(() => cleanup());

const stopJob = (rows: PsRow[]) => {
  killMembers(rows);
};

test('a tree with pipes, a double-forked setsid daemon, setpgid and exit statuses: ps matches /proc', async () => {
  const script = [
    '(sleep 60 | cat > /dev/null) &',
    `sh -c 'setsid sh -c "exec sleep 61 & exit 0" & exit 0'`,
    `python3 -c 'import os, time; os.setpgid(0, 0); time.sleep(62)' &`,
    `sh -c 'exit 3'`,
    `sh -c 'kill -9 $$'`,
    'sleep 63',
  ].join('\n');
  const r = ckpt(['run', '--detach', '--job', 'tree1', '--', 'sh', '-c', script]);
  assert.is(r.code, 0, r.err);
  assert.is(r.out.trim(), 'tree1');
  assert.is(ckpt(['agent', 'status']).code, 0);
  // The agent registered the node and probed its checkpointer (what the coordinator plans from).
  const nodeEvents = ckpt(['log', '--json'])
    .out.trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { stream: string; type: string; data: { usable?: boolean; checkpointer?: string } })
    .filter((e) => e.stream === 'node-testnode');
  assert.equal(
    nodeEvents.map((e) => e.type),
    ['NodeRegistered', 'NodeAgentStarted', 'CheckpointerProbed'],
  );
  assert.is(nodeEvents[2]!.data.checkpointer, 'criu');

  const rows = await until('the daemon, the setpgid process and both exits', () => {
    const now = ps('tree1');
    const ready =
      now.some((m) => m.comm === 'sleep' && m.escapes.includes('session')) &&
      now.some((m) => m.comm.startsWith('python') && m.escapes.includes('process-group')) &&
      now.some((m) => m.exitStatus === 3) &&
      now.some((m) => m.signal === 9) &&
      now.filter((m) => m.state === 'running').length >= 7;
    return ready && now;
  });
  try {
    // The unit's init is its root: the command is its child, and orphans are re-parented to it.
    const root = rows[0]!;
    assert.equal([root.reason, root.comm], ['root', 'ckpt-unit-init']);
    assert.is(root.pgid, root.pid);
    assert.is(root.sid, root.pid);
    assert.ok(rows.some((m) => m.comm === 'sh' && m.ppid === root.pid && m.reason === 'descendant'));
    const daemon = rows.find((m) => m.comm === 'sleep' && m.escapes.includes('session'))!;
    assert.is(daemon.reason, 'escaped');
    assert.equal(daemon.escapes, ['session', 'process-group', 'reparented']);
    assert.is(daemon.ppid, root.pid, 'the daemon was adopted by the unit’s init, not PID 1');
    const grouped = rows.find((m) => m.comm.startsWith('python'))!;
    assert.equal([grouped.reason, grouped.escapes, grouped.pgid], ['escaped', ['process-group'], grouped.pid]);
    assert.ok(rows.some((m) => m.comm === 'cat' && m.reason === 'descendant'));
    // The init keeps the unit one tree: a tree checkpoint misses nothing, nor does the cgroup.
    const [tree] = JSON.parse(ckpt(['ps', 'tree1', '--scope', 'tree', '--json']).out) as Array<{ missed: Array<{ pid: number; why: string }> }>;
    assert.equal(tree!.missed, []);
    const [byCgroup] = JSON.parse(ckpt(['ps', 'tree1', '--scope', 'cgroup', '--json']).out) as Array<{ missed: unknown[]; captured: number[] }>;
    assert.equal(byCgroup!.missed, []);
    assert.match(ckpt(['ps', 'tree1', '--scope', 'session']).out, /misses \d+ sleep: in session \d+, not the unit’s session/);
    assert.match(root.cgroup!, /^\/ckpt\/[0-9a-f]{8}\/tree1\/main$/);
    assert.ok(
      rows.every((m) => m.cgroup === root.cgroup),
      'every member is in the unit’s cgroup',
    );
    // Every running member is exactly what ps and /proc say; every exited one is gone from /proc.
    for (const m of rows) {
      const stat = readStat(m.pid);
      if (m.state === 'running') {
        const [ppid, pgid, sid] = execFileSync('ps', ['-o', 'ppid=,pgid=,sid=', '-p', String(m.pid)], { encoding: 'utf8' })
          .trim()
          .split(/\s+/)
          .map(Number);
        assert.equal([m.ppid, m.pgid, m.sid, m.startTime], [ppid, pgid, sid, stat!.startTime], `${m.comm} ${m.pid}`);
      } else {
        assert.ok(!stat || stat.startTime !== m.startTime || stat.state === 'Z', `${m.comm} ${m.pid} has exited`);
      }
    }
  } finally {
    stopJob(rows);
  }
  await until('the job to end once every member is killed', () => historyTypes('tree1').some((e) => e.type === 'JobEnded'));
  const ended = ps('tree1');
  assert.ok(ended.every((m) => m.state !== 'running'));
  assert.not.ok(existsSync(`/sys/fs/cgroup/freezer${rows[0]!.cgroup}`), 'the unit’s cgroups are removed when it ends');
});

test('in the foreground: output passes through and ckpt exits with the job’s status', () => {
  let r = ckpt(['run', '--job', 'fg1', '--', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
  assert.equal([r.code, r.out, r.err.includes('err')], [7, 'out\n', true]);
  r = ckpt(['run', '--job', 'fg2', '--', 'sh', '-c', 'kill -TERM $$']);
  assert.is(r.code, 128 + 15);
  // Nothing above fd 2 reaches the job (CRIU refuses inherited descriptors).
  r = ckpt(['run', '--job', 'fg3', '--', 'sh', '-c', 'ls /proc/self/fd']);
  // 0 1 2, and the one ls opens to list them.
  assert.is(r.out.trim().split('\n').length, 4, `fds: ${r.out.trim().split('\n').join(' ')}`);
});

test('a reused PID is a different member (PID forced with ns_last_pid)', async () => {
  for (let attempt = 1; ; attempt++) {
    const dir = mkdtempSync(join(work, 'reuse-'));
    execFileSync('mkfifo', [join(dir, 'go')]);
    const job = `reuse${attempt}`;
    // Host PIDs, from ps: inside its own PID namespace the job's $! is a namespace PID. The host's
    // ns_last_pid still decides the host PID of the job's next fork.
    const script = `sleep 0.1; read x < ${dir}/go; sleep 30 & wait`;
    assert.is(ckpt(['run', '--detach', '--job', job, '--', 'sh', '-c', script]).code, 0);
    const first = (await until('the first child to exit', () => ps(job).find((m) => m.comm === 'sleep' && m.state === 'exited'))).pid;
    writeFileSync('/proc/sys/kernel/ns_last_pid', String(first - 1));
    writeFileSync(join(dir, 'go'), 'go\n');
    const second = (await until('the second child', () => ps(job).find((m) => m.comm === 'sleep' && m.state === 'running'))).pid;
    if (second !== first) {
      if (attempt < 5) continue; // another process took the PID first; try again
      assert.unreachable(`could not make PID ${first} be reused in 5 attempts`);
    }
    const twins = await until('both processes with the same PID', () => {
      const same = ps(job).filter((m) => m.pid === first);
      return same.length === 2 && same[1]!.state === 'running' && same;
    });
    stopJob(ps(job));
    assert.is(twins[0]!.state, 'exited');
    assert.is(twins[0]!.exitStatus, 0);
    assert.ok(twins[1]!.startTime > twins[0]!.startTime);
    return;
  }
});

test('a fork storm of 20,000 processes: every one is recorded', async () => {
  const r = ckpt(['run', '--job', 'storm', '--', workload, '20000']);
  assert.is(r.code, 0, r.err);
  const made = Number(r.out.trim());
  assert.is(made, 20000);
  await until('the job to end', () => historyTypes('storm').some((e) => e.type === 'JobEnded'), 60_000);
  const events = historyTypes('storm');
  const forks = events.filter((e) => e.type === 'ProcessForked').length;
  const exits = events.filter((e) => e.type === 'ProcessExited').length;
  assert.is(forks, made + 1, 'every fork recorded (and the init’s fork of the command; the init itself was forked before the unit was tracked)');
  assert.is(exits, made + 2, 'every exit recorded (and the command’s and the init’s)');
  assert.not.ok(events.some((e) => e.type === 'ObservationGap'));
});

test('with a tiny receive buffer the gap is recorded and /proc reconciliation restores live members', async () => {
  const tiny = newHome();
  assert.is(ckpt(['agent', 'start', '--rcvbuf', '4096'], tiny).code, 0);
  const r = ckpt(['run', '--detach', '--job', 'gappy', '--', workload, '6000', '40'], tiny);
  assert.is(r.code, 0, r.err);
  const rows = await until(
    'the gap and all 40 sleepers',
    () => {
      const events = historyTypes('gappy', tiny);
      const now = ps('gappy', tiny);
      const command = now.find((m) => m.comm === 'storm');
      const sleepers = now.filter((m) => m.state === 'running' && m.ppid === command?.pid);
      return events.some((e) => e.type === 'ObservationGap') && sleepers.length === 40 && now;
    },
    30_000,
  );
  try {
    const events = historyTypes('gappy', tiny);
    const gap = events.find((e) => e.type === 'ObservationGap')!;
    assert.ok((gap.data.lost as number) > 0);
    // The live processes in /proc are exactly the running members.
    const command = rows.find((m) => m.comm === 'storm')!;
    const live = execFileSync('ps', ['-o', 'pid=', '--ppid', String(command.pid)], { encoding: 'utf8' })
      .trim()
      .split(/\s+/)
      .map(Number)
      .sort();
    assert.equal(
      rows
        .filter((m) => m.state === 'running' && m.ppid === command.pid)
        .map((m) => m.pid)
        .sort(),
      live,
    );
  } finally {
    stopJob(rows);
  }
});

test('a process outside the job that shares a pipe with a member is a dependent', async () => {
  assert.is(ckpt(['run', '--detach', '--job', 'piped', '--', 'sh', '-c', 'sleep 60 | sleep 61']).code, 0);
  const writer = await until('the pipeline', () => ps('piped').find((m) => m.comm === 'sleep' && m.state === 'running' && readFileSync(`/proc/${m.pid}/cmdline`, 'utf8').includes('60')));
  // Not a descendant of the job: started by the test, reading the job's pipe through /proc.
  const outsider = spawn('sh', ['-c', `exec sleep 64 < /proc/${writer.pid}/fd/1`], { stdio: 'ignore', detached: true });
  outsider.unref();
  const pid = outsider.pid!;
  try {
    const dependent = await until('the dependent', () => ps('piped').find((m) => m.pid === pid));
    assert.is(dependent.reason, 'dependent');
    assert.is(dependent.dependsOn!.via, 'pipe');
    assert.is(dependent.comm, 'sleep');
  } finally {
    sigkill(pid);
    stopJob(ps('piped'));
  }
});

test('an agent killed with -9 and started again finds what happened meanwhile in /proc', async () => {
  const dir = mkdtempSync(join(work, 'restart-'));
  execFileSync('mkfifo', [join(dir, 'go')]);
  assert.is(ckpt(['run', '--detach', '--job', 'survivor', '--', 'sh', '-c', `read x < ${dir}/go; sleep 65 & sleep 66`]).code, 0);
  await until('the init and the command', () => ps('survivor').length === 2 && true);
  const agent = JSON.parse(ckpt(['agent', 'status', '--json']).out) as { pid: number };
  process.kill(agent.pid, 'SIGKILL');
  await until('the agent to be gone', () => ckpt(['agent', 'status']).code === 1);
  writeFileSync(join(dir, 'go'), 'go\n');
  await new Promise((r) => setTimeout(r, 300));
  assert.is(ckpt(['agent', 'start']).code, 0);
  const rows = await until('the children forked while no agent ran', () => {
    const now = ps('survivor');
    return now.filter((m) => m.comm === 'sleep' && m.state === 'running').length === 2 && now;
  });
  stopJob(rows);
  assert.ok(historyTypes('survivor').some((e) => e.type === 'ProcessObserved'));
});

test('a member PID reused while no agent ran is not the member: neither its new owner nor what shares a pipe with it joins the job', async () => {
  const home = newHome();
  assert.is(ckpt(['run', '--detach', '--job', 'left', '--', 'sh', '-c', 'sleep 68 & sleep 69'], home).code, 0);
  const gone = await until('the job', () => ps('left', home).find((m) => m.comm === 'sleep' && m.state === 'running'));
  assert.is(ckpt(['agent', 'stop'], home).code, 0);
  sigkill(gone.pid); // its exit is never observed: the log still has it running
  await until(`PID ${gone.pid} to be free`, () => pidsInUse([gone.pid]).length === 0);
  // Its PID is someone else's now, and that process's stdout pipe is read by another outsider.
  let owner: ReturnType<typeof spawn> | undefined;
  for (let attempt = 1; attempt <= 50 && owner?.pid !== gone.pid; attempt++) {
    owner?.kill('SIGKILL');
    writeFileSync('/proc/sys/kernel/ns_last_pid', String(gone.pid - 1));
    owner = spawn('sleep', ['120'], { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
  }
  assert.is(owner!.pid, gone.pid, `PID ${gone.pid} taken by an outsider`);
  const reader = spawn('sh', ['-c', `exec sleep 121 < /proc/${gone.pid}/fd/1`], { stdio: 'ignore', detached: true });
  try {
    assert.is(ckpt(['agent', 'start'], home).code, 0);
    await until('the left member to be recorded vanished', () => historyTypes('left', home).some((e) => e.type === 'ProcessVanished'));
    // One more dependency scan (every second) after the member is known gone.
    await new Promise((r) => setTimeout(r, 1500));
    const rows = ps('left', home);
    for (const pid of [owner!.pid!, reader.pid!, process.pid]) {
      assert.not.ok(
        rows.some((m) => m.pid === pid && m.startTime !== gone.startTime),
        `outsider ${pid} is not in the job`,
      );
    }
    assert.not.ok(
      historyTypes('left', home).some((e) => e.type === 'DependencyObserved'),
      'no dependent found through the stale PID',
    );
    stopJob(rows);
  } finally {
    owner!.kill('SIGKILL');
    reader.kill('SIGKILL');
  }
});

test('the node agent rides out a PostgreSQL restart without losing observations', async () => {
  if (needPostgres()) return console.log(`skip: ${needPostgres()}`);
  const cluster = await startPostgres();
  const pgHome = newHome();
  const url = await cluster.database();
  const onPg = ([command, ...rest]: string[]) => ckpt([command!, '--store', url, ...rest], pgHome);
  const dir = mkdtempSync(join(work, 'outage-'));
  execFileSync('mkfifo', [join(dir, 'go')]);
  try {
    assert.is(onPg(['run', '--detach', '--job', 'outage', '--', 'sh', '-c', `read x < ${dir}/go; sleep 67 & sh -c 'exit 4'; wait`]).code, 0);
    cluster.pause();
    writeFileSync(join(dir, 'go'), 'go\n'); // the job forks while the store is down
    await new Promise((r) => setTimeout(r, 1500));
    cluster.resume();
    const rows = await until(
      'the forks made during the outage',
      () => {
        const r = onPg(['ps', 'outage', '--json']);
        const now = r.code === 0 ? (JSON.parse(r.out) as PsRow[]) : [];
        return now.some((m) => m.comm === 'sleep' && m.state === 'running') && now.some((m) => m.exitStatus === 4) && now;
      },
      30_000,
    );
    const types = onPg(['history', 'outage', '--json'])
      .out.trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { type: string }).type);
    assert.ok(types.includes('ProcessForked') && types.includes('ProcessExited'));
    assert.not.ok(types.includes('ProcessVanished'), 'every exit was seen, none guessed');
    stopJob(rows);
    assert.is(onPg(['agent', 'status']).code, 0, 'the agent is still running');
  } finally {
    onPg(['agent', 'stop']);
    await cluster.stop();
  }
});

test('wrong use of ckpt run, ps and history: clear errors and meaningful exit codes', () => {
  let r = ckpt(['run', '--job', 'Bad Name', '--', 'true']);
  assert.equal([r.code, /job name "Bad Name" must match/.test(r.err)], [2, true]);
  r = ckpt(['run', '--', 'no-such-command-xyz']);
  assert.equal([r.code, r.err.trim()], [127, 'ckpt run: command not found: no-such-command-xyz']);
  r = ckpt(['run', '--memory', 'lots', '--', 'true']);
  assert.equal([r.code, /--memory needs a size such as 256M/.test(r.err)], [2, true]);
  r = ckpt(['run', '--job', 'fg1', '--', 'true']);
  assert.equal([r.code, /job "fg1" already exists/.test(r.err)], [1, true]);
  r = ckpt(['ps', 'nobody']);
  assert.equal([r.code, r.err.trim()], [1, 'ckpt ps: unknown job "nobody" (ckpt jobs lists them)']);
  assert.is(ckpt(['history', 'nobody']).code, 1);
  r = ckpt(['run']);
  assert.is(r.code, 2);
  const jobs = JSON.parse(ckpt(['jobs', '--json']).out) as Array<{ job: string; state: string }>;
  assert.equal(jobs.find((j) => j.job === 'fg1')?.state, 'ended (failed)');
  assert.ok(jobs.some((j) => j.job === 'storm' && j.state === 'ended (succeeded)'));
});

test.run();
