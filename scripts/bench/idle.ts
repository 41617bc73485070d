// Idle tracking cost: the node agent's own CPU (utime + stime from /proc/AGENT/stat over a
// window) while it tracks 0, 100 and 1,000 sleeping processes, with the adaptive /proc re-reads
// (the default) and with the old fixed ones (every process every 100 ms, CKPT_TRACKING_REREADS=fixed),
// side by side in one run: at each level the agent is restarted in each mode in turn, left to
// settle, then measured over several consecutive windows (the median, and the range). The agent
// sees every fork, exec and exit on the machine (the proc connector), so the machine's own fork
// rate during the windows (/proc/stat `processes`) is printed beside: a busy machine raises the
// floor, whatever the agent tracks.
//
//   npm run bench:idle -- [--levels 0,100,1000] [--window 10] [--windows 3] [--settle 10]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { clockTicksPerSecond } from '../../adapters/tracking/procfs.js';
import { benchHome, DEFAULT_CLI } from './harness.js';
import { median, must, progress, sleep } from './run.js';

const { values } = parseArgs({
  options: {
    levels: { type: 'string', default: '0,100,1000' },
    window: { type: 'string', default: '10' },
    windows: { type: 'string', default: '3' },
    settle: { type: 'string', default: '10' },
  },
});
const LEVELS = values.levels.split(',').map(Number);
const WINDOW_S = Number(values.window);
const WINDOWS = Number(values.windows);
const SETTLE_S = Number(values.settle);
if (!LEVELS.every((n, i) => Number.isSafeInteger(n) && n >= 0 && (i === 0 || n > LEVELS[i - 1]!))) throw new Error('--levels takes increasing integers ≥ 0, comma-separated');
if (!(WINDOW_S > 0 && SETTLE_S >= 0 && Number.isSafeInteger(WINDOWS) && WINDOWS > 0)) throw new Error('--window takes seconds > 0, --windows a count ≥ 1, --settle seconds ≥ 0');
const MODES = ['fixed', 'adaptive'] as const;
const TICKS = clockTicksPerSecond();

/** CPU seconds the process used so far (utime + stime, fields 14 and 15 of /proc/PID/stat). */
const cpuSeconds = (pid: number): number => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS; // fields[0] is field 3 (state)
};

/** Processes forked on the whole machine since boot (/proc/stat `processes`). */
const machineForks = (): number => Number(/^processes (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))![1]);

const h = benchHome('idle', 'benchidle');
const ckpt = (args: string[]) => must(process.execPath, [DEFAULT_CLI, ...args], h.env);
const agentPid = async () => (JSON.parse(await ckpt(['agent', 'status', '--json'])) as { pid: number }).pid;

/** Sleepers started by one shell, which then waits: N + 2 live processes with the unit's init. */
const sleepers = (n: number) => ['sh', '-c', `i=0; while [ $i -lt ${n} ]; do sleep 3600 & i=$((i+1)); done; wait`];

const results: Array<{ live: number; mode: (typeof MODES)[number]; cpu: number[]; forks: number }> = [];
try {
  console.log(`ckpt idle tracking benchmark: agent CPU over ${WINDOWS} × ${WINDOW_S} s after ${SETTLE_S} s of settling, at ${LEVELS.join(', ')} sleeping processes; node ${process.version}\n`);
  let live = 0;
  let jobs = 0;
  for (const level of LEVELS) {
    if (level > live) {
      const job = `idle${++jobs}`;
      progress(`starting ${level - live} sleepers (${job})`);
      // The first job also starts the agent (in the default mode); every measurement restarts it.
      await h.start({ job, command: sleepers(level - live), processes: level - live + 2, ready: () => true });
      live = level;
    }
    for (const mode of MODES) {
      progress(`${level} processes, ${mode}: restarting the agent`);
      await ckpt(['agent', 'stop']);
      h.env.CKPT_TRACKING_REREADS = mode;
      await ckpt(['agent', 'start']);
      const pid = await agentPid();
      progress(`${level} processes, ${mode}: settling`);
      await sleep(SETTLE_S * 1000);
      progress(`${level} processes, ${mode}: measuring`);
      const cpu: number[] = [];
      const [f0, s0] = [machineForks(), performance.now()];
      for (let w = 0; w < WINDOWS; w++) {
        const [c0, t0] = [cpuSeconds(pid), performance.now()];
        await sleep(WINDOW_S * 1000);
        const [c1, t1] = [cpuSeconds(pid), performance.now()];
        cpu.push(((c1 - c0) / ((t1 - t0) / 1000)) * 100);
      }
      results.push({ live: level, mode, cpu, forks: (machineForks() - f0) / ((performance.now() - s0) / 1000) });
    }
  }
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  const cell = (cpu: number[]) => `${median(cpu).toFixed(2)} % (${Math.min(...cpu).toFixed(1)}–${Math.max(...cpu).toFixed(1)})`;
  console.log(`% of one core (agent process): median of ${WINDOWS} windows (range); machine forks/s during each mode's windows`);
  console.log('live processes   fixed 100 ms             adaptive                adaptive / fixed   machine forks/s (fixed, adaptive)');
  for (const level of LEVELS) {
    const [fixed, adaptive] = MODES.map((m) => results.find((r) => r.live === level && r.mode === m)!);
    const ratio = median(fixed!.cpu) > 0 ? (median(adaptive!.cpu) / median(fixed!.cpu)).toFixed(2) : '-';
    console.log(
      `${String(level).padStart(14)}   ${cell(fixed!.cpu).padEnd(22)}   ${cell(adaptive!.cpu).padEnd(22)}   ${ratio.padStart(16)}   ${fixed!.forks.toFixed(0)}, ${adaptive!.forks.toFixed(0)}`,
    );
  }
} finally {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  await h.cleanup();
}
