// CRIU over RPC against CRIU as a command, side by side: the same process dumped (leave running)
// and restored (from one set of images, the restored tree killed and its PIDs freed each time) by
// `criu dump|restore … -o LOG -v4` and by dumpTree/restoreTree (criu swrk through the bridge, every
// notification answered), alternating which goes first. Two workloads: a shell loop (2 processes)
// and python holding ~200 MB of touched memory. Prints every round, the medians and rpc/exec.
//
//   npm run build && node dist/scripts/bench/criu-rpc.js [--rounds 7]
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { locateCriu, runCriu } from '../../adapters/checkpointers/criu.js';
import { dumpTree } from '../../adapters/checkpointers/criu-dump.js';
import { restoreTree } from '../../adapters/checkpointers/criu-restore.js';
import { waitPidsGone } from '../../adapters/tracking/pids.js';
import { median, sleep } from './run.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '7' } } });
const ROUNDS = Number(values.rounds);
if (!Number.isSafeInteger(ROUNDS) || ROUNDS < 1) throw new Error('--rounds takes an integer ≥ 1');
const criu = locateCriu();
if (!criu) throw new Error('no criu found: run scripts/install-criu.sh or set CKPT_CRIU');

const root = mkdtempSync(join(tmpdir(), 'ckpt-bench-criu-rpc-'));
let made = 0;
const fresh = (name: string): string => {
  const dir = join(root, `${name}-${made++}`);
  mkdirSync(dir);
  return dir;
};
// The job must not inherit our fds (CRIU would dump pipes leading outside): bash closes them.
// biome-ignore lint/suspicious/noTemplateCurlyInString: a shell script: ${f##*/} is the shell's
const CLOSE_FDS = 'for f in /proc/$$/fd/*; do f=${f##*/}; [ "$f" -gt 2 ] && eval "exec $f>&-"; done 2>/dev/null; exec sh -c "$1"';
const started: number[] = [];
const start = (script: string): number => {
  const child = spawn('bash', ['-c', CLOSE_FDS, 'ckpt-bench-job', script], { stdio: 'ignore', detached: true });
  child.unref();
  if (child.pid === undefined) throw new Error('spawn failed');
  started.push(child.pid);
  return child.pid;
};
const timed = async <T>(f: () => Promise<T>): Promise<[number, T]> => {
  const t = performance.now();
  const r = await f();
  return [performance.now() - t, r];
};

const execDump = async (pid: number) => {
  const run = await runCriu(criu, ['dump', '-t', String(pid), '-D', fresh('exec'), '--leave-running'], { logFile: 'dump.log' });
  if (run.code !== 0) throw new Error(`criu dump failed: ${run.stderr}`);
};
const rpcDump = async (pid: number) => {
  await dumpTree({ criu, pid, imagesDir: fresh('rpc'), leaveRunning: true, onNotify: () => true });
};
const execRestore = async (images: string): Promise<number> => {
  const work = fresh('work');
  const run = await runCriu(criu, ['restore', '-D', images, '-d', '--pidfile', join(work, 'root.pid'), '-W', work], { logFile: 'restore.log' });
  if (run.code !== 0) throw new Error(`criu restore failed: ${readFileSync(join(work, 'restore.log'), 'utf8').slice(-400)}`);
  return Number(readFileSync(join(work, 'root.pid'), 'utf8'));
};
const rpcRestore = async (images: string): Promise<number> => (await restoreTree({ criu, imagesDir: images, workDir: fresh('work'), detach: true, onNotify: () => true })).rootPid;

const workloads: Record<string, string> = {
  'shell loop, 2 processes': 'while :; do sleep 0.05; done',
  'python, ~200 MB touched': `exec python3 -c "x=bytearray(200<<20); x[::4096]=b'x'*len(x[::4096]); import time; time.sleep(1e6)"`,
};

const line = (what: string, exec: number[], rpc: number[]) =>
  console.log(
    `${what}: exec ${exec.map((x) => x.toFixed(0)).join('/')} ms (median ${median(exec).toFixed(0)}), ` +
      `rpc ${rpc.map((x) => x.toFixed(0)).join('/')} ms (median ${median(rpc).toFixed(0)}), rpc/exec ${(median(rpc) / median(exec)).toFixed(2)}`,
  );

try {
  for (const [name, script] of Object.entries(workloads)) {
    const pid = start(script);
    await sleep(1500);
    const dumps = { exec: [] as number[], rpc: [] as number[] };
    for (let i = 0; i < ROUNDS; i++) {
      for (const way of i % 2 === 0 ? (['exec', 'rpc'] as const) : (['rpc', 'exec'] as const)) {
        dumps[way].push((await timed(() => (way === 'exec' ? execDump(pid) : rpcDump(pid))))[0]);
      }
    }
    const images = fresh('images');
    const dumped = await dumpTree({ criu, pid, imagesDir: images, leaveRunning: false });
    await waitPidsGone(dumped.pids, 20_000);
    const restores = { exec: [] as number[], rpc: [] as number[] };
    for (let i = 0; i < ROUNDS; i++) {
      for (const way of i % 2 === 0 ? (['exec', 'rpc'] as const) : (['rpc', 'exec'] as const)) {
        const [ms, rootPid] = await timed(() => (way === 'exec' ? execRestore(images) : rpcRestore(images)));
        restores[way].push(ms);
        process.kill(-rootPid, 'SIGKILL'); // the restored tree is its own process group
        await waitPidsGone(dumped.pids, 20_000);
      }
    }
    line(`${name}: dump`, dumps.exec, dumps.rpc);
    line(`${name}: restore`, restores.exec, restores.rpc);
  }
} finally {
  for (const pid of started) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* dumped and gone */
    }
  }
  rmSync(root, { recursive: true, force: true });
}
