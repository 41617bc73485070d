// A job run in the foreground (`ckpt run` without --detach, its output piped as in CI or `| tee`)
// is checkpointed and restarted for real with CRIU, while the foreground ckpt run keeps its
// promises: output passes through, signals are forwarded, it exits with the command's status.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { CLI, jobHarness } from './support/jobs.js';
import { firstMissing, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until as wait } from './support/wait.js';

const until = <T>(what: string, probe: () => T | undefined | false, ms = 30_000) => wait(what, probe, ms, 20);
const criu = locateCriu();
const missing = firstMissing(needRoot, () => (criu ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)'));
const test = suiteRequiring('foreground jobs checkpointed (real CRIU)', missing);

const NODE = 'fgnode';
const { h, ckpt, ps, cleanup } = jobHarness('ckpt-foreground', NODE);
test.after(() => cleanup());

/** `ckpt run` in the foreground as CI runs it: no terminal, stdin /dev/null, stdout and stderr
 *  read by the test (Node's 'pipe': unix sockets, which CRIU could not take if the job held them). */
const foreground = (job: string, script: string) => {
  const client = spawn(process.execPath, [CLI, 'run', '--job', job, '--', 'sh', '-c', script], {
    env: { ...process.env, CKPT_HOME: h.home, CKPT_NODE: NODE, CKPT_STORE: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const seen = { out: '', err: '' };
  client.stdout.on('data', (chunk: Buffer) => (seen.out += chunk.toString()));
  client.stderr.on('data', (chunk: Buffer) => (seen.err += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => client.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));
  /** The last complete number printed so far. */
  const last = () => Number(seen.out.trim().split('\n').filter(Boolean).at(-1) ?? 0);
  return { client, seen, exited, last };
};
const rootOf = (job: string) => ps(job).find((m) => m.reason === 'root' && m.state === 'running')!;
const checkpoint = (job: string, extra: string[] = []) => {
  const r = ckpt(['checkpoint', job, '--wait', '--json', ...extra]);
  assert.is(r.code, 0, `ckpt checkpoint ${job}: ${r.out} ${r.err}`);
  return JSON.parse(r.out) as { version: number; outcome: string };
};
/** Counts on stdout until `stop` exists (forever without one), then says done on stderr and exits 3. */
const counter = (stop?: string) => `i=0; while ${stop ? `[ ! -e ${stop} ]` : ':'}; do i=$((i+1)); echo $i; sleep 0.05; done; echo done >&2; exit 3`;
const numbers = (text: string) => text.trim().split('\n').filter(Boolean).map(Number);

test('checkpointed while ckpt run waits in the foreground: output passes through, the command’s status is returned', async () => {
  // It counts until told to stop after the checkpoint (a fixed count could end first on a loaded machine).
  const stop = join(h.home, 'fgcount.stop');
  const run = foreground('fgcount', counter(stop));
  await until('the counter’s output through the client', () => run.last() >= 5);
  // The job holds nothing that leads back to the client: its init has fds 0, 1, 2 only, no socket.
  const root = rootOf('fgcount');
  const fds = readdirSync(`/proc/${root.pid}/fd`).map((fd) => `${fd}→${readlinkSync(`/proc/${root.pid}/fd/${fd}`)}`);
  assert.equal(fds.map((f) => f.split('→')[0]).sort(), ['0', '1', '2'], fds.join(' '));
  assert.not.ok(
    fds.some((f) => f.includes('socket:')),
    fds.join(' '),
  );
  const report = checkpoint('fgcount');
  assert.equal([report.version, report.outcome], [1, 'committed']);
  const atCheckpoint = run.last();
  await until('the counter to go on after the checkpoint', () => run.last() >= atCheckpoint + 5);
  writeFileSync(stop, '');
  assert.is(await run.exited, 3, run.seen.err);
  const counted = numbers(run.seen.out);
  assert.equal(
    counted,
    Array.from({ length: counted.length }, (_, i) => i + 1),
    'every line passed through, in order, once',
  );
  assert.ok(run.seen.err.includes('done'), 'stderr passes through');
});

test('checkpointed, then killed with kill -9: ckpt run returns 137 and `ckpt restart` brings the counter back from the checkpoint', async () => {
  const run = foreground('fgkill', counter());
  // What the job has written so far, read from its output file (the test's own event loop stands
  // still while spawnSync runs ckpt checkpoint: the client's relayed output arrives later).
  const output = join(h.home, 'jobs', 'fgkill', 'main.out');
  const written = () => {
    const text = readFileSync(output, 'utf8');
    return Number(text.slice(0, text.lastIndexOf('\n')).split('\n').at(-1) || 0);
  };
  await until('the counter', () => run.last() >= 5);
  const before = written();
  checkpoint('fgkill');
  const after = written();
  await until('the counter to go on after the checkpoint', () => written() >= after + 5);
  const root = rootOf('fgkill');
  process.kill(root.pid, 'SIGKILL'); // the namespace's init: the whole unit dies with it
  assert.is(await run.exited, 137);
  const killedAt = written();
  assert.is(run.last(), killedAt, 'the client passed through everything the job wrote');
  const size = statSync(output).size;
  await until('the unit to end', () => ps('fgkill').every((m) => m.state !== 'running'));
  const r = ckpt(['restart', 'fgkill', '--wait']);
  assert.is(r.code, 0, r.err);
  // The restored job runs on detached and writes on into the unit's output file.
  const resumed = await until('the restored counter’s output', () => {
    const text = readFileSync(output).subarray(size).toString();
    return text.includes('\n') && numbers(text.slice(0, text.lastIndexOf('\n')));
  });
  assert.ok(before < resumed[0]! && resumed[0]! <= after + 1 && resumed[0]! < killedAt, `checkpointed between ${before} and ${after}, killed at ${killedAt}, resumed at ${resumed[0]}`);
  assert.equal(
    resumed,
    Array.from({ length: resumed.length }, (_, i) => resumed[0]! + i),
    'it counts on',
  );
  const restored = ps('fgkill').filter((m) => m.state === 'running');
  assert.ok(
    restored.some((m) => m.restoredFrom?.pid === root.pid),
    'the running root is the restored one',
  );
  process.kill(restored.find((m) => m.reason === 'root')!.pid, 'SIGKILL');
});

test('checkpoint --stop ends the foreground ckpt run with 137; the job comes back detached', async () => {
  const run = foreground('fgstop', counter());
  await until('the counter', () => run.last() >= 3);
  checkpoint('fgstop', ['--stop']);
  assert.is(await run.exited, 137);
  assert.is(ckpt(['restart', 'fgstop', '--wait']).code, 0);
  const root = await until('the restored root', () => ps('fgstop').find((m) => m.reason === 'root' && m.state === 'running'));
  assert.ok(root.restoredFrom, 'restored');
  process.kill(root.pid, 'SIGKILL');
});

test('SIGTERM to the foreground ckpt run reaches the command: 143', async () => {
  const run = foreground('fgterm', 'echo ready; exec sleep 60');
  await until('the command', () => run.seen.out.includes('ready'));
  run.client.kill('SIGTERM');
  assert.is(await run.exited, 128 + 15);
  assert.ok(
    ps('fgterm').some((m) => m.comm === 'sleep' && m.signal === 15),
    'the command was killed by the forwarded SIGTERM',
  );
});

test.run();
