// `ckpt demo`: the whole story on this machine, with real commands shown as they run — a counter
// job with a child and an escaped daemon is started, checkpointed, killed, restarted, and shown
// to count on from the checkpointed value; then its audit, verification and history.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runningAgent, startingAgent } from '../../agent/daemon.js';
import { unitInitPath } from '../../agent/launcher.js';
import { ckptHome } from '../../store/url.js';
import { procConnectorPath } from '../../tracking/proc-connector.js';
import { readStat } from '../../tracking/procfs.js';
import { flag } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { needRoot, storeUrlOf } from '../store.js';
import { nodeOf } from './agent.js';

const CLI = fileURLToPath(new URL('../main.js', import.meta.url));
const REPO = resolve(fileURLToPath(new URL('../../../..', import.meta.url)));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const say = (text: string) => process.stdout.write(`\n\x1b[1m${text}\x1b[0m\n`);

/** Runs `ckpt ARGS`, showing the command and its output. */
const ckpt = (args: string[], show = true): { code: number; out: string } => {
  if (show) process.stdout.write(`$ ckpt ${args.join(' ')}\n`);
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 28 });
  if (show) process.stdout.write(r.stdout);
  return { code: r.status ?? 1, out: r.stdout };
};

const must = (what: string, command: string, args: string[]) => {
  process.stdout.write(`$ ${command} ${args.join(' ')}\n`);
  const r = spawnSync(command, args, { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}); run it yourself to see why: ${command} ${args.join(' ')}`);
};

const has = (command: string) => spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;

const aptInstall = (what: string, packages: string[]) => {
  if (!has('apt-get')) throw new Error(`${what} is missing and this is not a Debian-like system: install ${packages.join(' ')} and run ckpt demo again`);
  must('apt-get update', 'apt-get', ['update', '-qq']);
  must(`installing ${what}`, 'apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...packages]);
};

/** What the demo needs and a fresh machine may lack: the native helpers (a C compiler), ss, a working CRIU. */
const prerequisites = () => {
  if (!existsSync(unitInitPath) || !existsSync(procConnectorPath)) {
    say('Building the native helpers (proc connector, unit init)…');
    if (!has('cc')) aptInstall('a C compiler', ['gcc', 'libc6-dev']);
    must('building the native helpers', 'bash', [join(REPO, 'scripts/build-native.sh')]);
  }
  if (!has('ss')) {
    say('Installing iproute2 (ss: how the agent finds processes sharing a socket with a job)…');
    aptInstall('iproute2', ['iproute2']);
  }
  if (!process.env.CKPT_CRIU) useWorkingCriu();
};

/**
 * Runs scripts/install-criu.sh, which keeps a system or installed criu that passes its functional
 * probe (~1 s) and otherwise installs the newest Debian CRIU that does (4.2 on kernels ≥ 6.16,
 * where 4.1 cannot dump sockets) into .criu/; the demo's commands then use the criu it printed.
 */
const useWorkingCriu = () => {
  say('Checking CRIU: a criu that dumps and restores sockets, pipes and locks here, or CRIU 4.2 installed into .criu/…');
  const script = join(REPO, 'scripts/install-criu.sh');
  process.stdout.write(`$ bash ${script}\n`);
  const r = spawnSync('bash', [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const criu = r.stdout.trim().split('\n').at(-1);
  if (r.status !== 0 || !criu) throw new Error(`installing CRIU failed (exit ${r.status}); run it yourself to see why: bash ${script}`);
  process.env.CKPT_CRIU = criu;
};

const counterOf = (file: string): number => (existsSync(file) ? Number(readFileSync(file, 'utf8').trim() || 0) : 0);

export const demoCommand: Command = {
  usage: '[--keep]',
  description: [
    'Installs what is missing (a C compiler for the native helpers, iproute2, CRIU 4.2 into .criu/ unless a criu',
    "here passes scripts/install-criu.sh's functional probe; $CKPT_CRIU is used as is), then starts a",
    'small job — a counter, a child, and a double-forked daemon that escapes its session — and runs the',
    'real commands, showing each: ps, checkpoint, kill -9, restart, ps again, audit, verify, history.',
    'It checks that the restarted counter went on from the value it had at the checkpoint (not from',
    'where it was killed). Data goes to $CKPT_HOME (default ~/.ckpt). Needs root. Exit 0 when the',
    'restarted job continued as it should. At the end the job is stopped, and so is the node agent when',
    'the demo started it (one already running is left running); --keep keeps both. It says which it did.',
  ].join('\n'),
  options: [{ name: 'keep', description: 'leave the restarted job and the node agent running (look at them with ckpt ps, ckpt agent status; stop the agent with ckpt agent stop)' }],
  examples: ['sudo npx ckpt demo', 'sudo CKPT_HOME=/tmp/ckpt-demo npx ckpt demo --keep'],
  async run(args) {
    needRoot('ckpt demo');
    prerequisites();
    const keep = flag(args, 'keep');
    const agent = { home: ckptHome(), node: nodeOf(args), store: storeUrlOf(args) };
    process.env.CKPT_STORE = agent.store; // every command shown uses the store given (--store), whose agent is checked here
    const agentBefore = runningAgent(agent.home, agent.node, agent.store) ?? startingAgent(agent.home, agent.node, agent.store);
    const job = `demo-${randomBytes(2).toString('hex')}`;
    let continued = false;
    try {
      continued = await story(job);
    } finally {
      if (keep) {
        say(`Done: the job ${job} keeps running (ckpt ps ${job}), and so does the node agent for ${agent.node} (ckpt agent status; stop it with ckpt agent stop).`);
      } else {
        const ended = await stopJob(job);
        const started = !agentBefore && (runningAgent(agent.home, agent.node, agent.store) ?? startingAgent(agent.home, agent.node, agent.store));
        if (started) ckpt(['agent', 'stop']);
        const agentFate = agentBefore
          ? `The node agent for ${agent.node} (pid ${agentBefore.pid}) was running before the demo and still runs.`
          : started
            ? `The node agent the demo started for ${agent.node} (pid ${started.pid}) was stopped too.`
            : '';
        const jobFate = ended ? `the job ${job} was stopped.` : `the job ${job} was killed, but its end is not in the log yet (ckpt ps ${job}).`;
        say(`Done: ${jobFate} ${agentFate} Its history stays in the log: ckpt history ${job}; ckpt audit ${job}.`);
      }
    }
    return continued ? EXIT.ok : EXIT.failed;
  },
};

/** The story told by the demo; true when the restarted counter went on from the checkpoint. */
const story = async (job: string): Promise<boolean> => {
  const dir = join(ckptHome(), 'demo');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const counter = join(dir, `${job}.count`);
  const script = [
    `(while :; do sleep 1; done) &`, // a child
    `sh -c "setsid sh -c 'while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &"`, // a double-forked daemon
    // The counter, in the shell's memory. It overwrites fixed-width digits in place: a truncating
    // `echo >` could be read empty, or frozen mid-write with a size CRIU then refuses to restore.
    `i=0; while :; do i=$((i+1)); printf '%08d\\n' $i 1<> ${counter}; sleep 0.2; done`,
  ].join('\n');

  say(`1. Start a job: a counter (in the memory of a shell), a child, and a daemon that escapes by double-forking.`);
  if (ckpt(['run', '--detach', '--job', job, '--', 'sh', '-c', script]).code !== 0) return false;
  for (let i = 0; i < 100 && counterOf(counter) < 10; i++) await sleep(100);
  ckpt(['ps', job, '--running']);

  say('2. Checkpoint it while it runs: every unit frozen, dumped by CRIU, verified, committed, thawed.');
  const before = counterOf(counter);
  if (ckpt(['checkpoint', job, '--wait']).code !== 0) return false;
  const checkpointed = counterOf(counter);
  process.stdout.write(`the counter was at ${before}–${checkpointed} when it was checkpointed\n`);

  await sleep(2000);
  const killedAt = counterOf(counter);
  say(`3. Kill every process of the job (the counter is at ${killedAt}).`);
  const members = runningMembers(job);
  process.stdout.write(`$ kill -9 ${members.map((m) => m.pid).join(' ')}\n`);
  killMembers(members);

  say('4. Restart it from the checkpoint: images checked against their SHA-256, cgroups and limits back, restored by CRIU.');
  if (ckpt(['restart', job, '--wait']).code !== 0) return false;
  await sleep(1000);
  const after = counterOf(counter);
  const continued = after > checkpointed - 1 && after < killedAt;
  process.stdout.write(
    continued
      ? `the counter went on from the checkpoint: ${after} now (checkpointed at ${before}–${checkpointed}, killed at ${killedAt})\n`
      : `unexpected: the counter is at ${after} (checkpointed at ${before}–${checkpointed}, killed at ${killedAt})\n`,
  );
  await sleep(500);
  ckpt(['ps', job, '--running']);

  say('5. The audit trail, the re-derivation of every decision, and the history (process events left out).');
  ckpt(['audit', job]);
  ckpt(['verify', job]);
  const history = ckpt(['history', job], false).out.trim().split('\n');
  const shown = history.filter((l) => !/\s(Process\w+|DependencyObserved)\s/.test(l));
  process.stdout.write(`$ ckpt history ${job}   # ${history.length} events; ${history.length - shown.length} process events not shown here\n${shown.join('\n')}\n`);
  return continued;
};

const runningMembers = (job: string): Member[] => {
  const r = ckpt(['ps', job, '--json'], false);
  return r.code === 0 ? (JSON.parse(r.out) as Member[]).filter((m) => m.state === 'running') : [];
};

/** The job's state as the log says it (`ckpt jobs`): `running`, `ended (failed)`, … */
const jobState = (job: string): string | undefined => {
  const r = ckpt(['jobs', '--json'], false);
  return r.code === 0 ? (JSON.parse(r.out) as Array<{ job: string; state: string }>).find((j) => j.job === job)?.state : undefined;
};

/**
 * Kills what runs of the job until the log says it ended (JobEnded: the agent saw its cgroups
 * empty), so an agent stopped next has recorded the end, a process forked just before the kill
 * included. False when that did not happen within 15 s.
 */
const stopJob = async (job: string): Promise<boolean> => {
  for (let i = 0; i < 60; i++) {
    const state = jobState(job);
    if (state === undefined || state.startsWith('ended')) return true; // none recorded: nothing runs
    killMembers(runningMembers(job));
    await sleep(250);
  }
  return false;
};

type Member = { pid: number; startTime: number; state: string };

/** SIGKILL (the system call) to each member still the process the log knows: PIDs are reused. */
const killMembers = (members: readonly Member[]): void => {
  for (const m of members) {
    if (m.pid <= 1 || readStat(m.pid)?.startTime !== m.startTime) continue;
    try {
      process.kill(m.pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
};
