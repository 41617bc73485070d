import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, mkdirSync } from 'node:fs';
import { userInfo } from 'node:os';
import { basename, join } from 'node:path';
import { isatty } from 'node:tty';
import { NAME_PATTERN } from '../../../domain/codecs.js';
import { WrongExpectedRevisionError } from '../../../domain/event-store.js';
import type { Limits } from '../../../domain/events/job.js';
import { newUnitNameProblem } from '../../../domain/identity.js';
import { describeStart, startAgent } from '../../agent/daemon.js';
import { launchUnit, MAIN_UNIT, resolveCommand } from '../../agent/launcher.js';
import { makePrivateDirs, openPrivateAppend } from '../../fs/safe-fs.js';
import { ckptHome } from '../../store/url.js';
import { captureOptions, flag, integerOption, sizeOption, stringOption, UsageError } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { type Relay, relayAppended } from '../output-relay.js';
import { openStoreAsUser, storeUrlOf } from '../store.js';
import { nodeOf } from './agent.js';

/** A readable, unique-enough job id from the command: `sleep-3fa9c1`. */
const generateJobId = (command: string): string => {
  const stem =
    basename(command)
      .toLowerCase()
      .replace(/[^a-z0-9._-]/g, '-')
      .replace(/^[^a-z0-9]+/, '')
      .slice(0, 50) || 'job';
  return `${stem}-${randomBytes(3).toString('hex')}`;
};

export const runCommand: Command = {
  usage: '[--job NAME] [--unit NAME] [--node NAME] [--memory SIZE] [--pids N] [--tcp-established] [--file-locks] [--detach] [--json] -- COMMAND [ARGS…]',
  description: [
    'Starts COMMAND in a new session, inside the unit’s own cgroups (with the limits given), with no',
    'file descriptor above 2, and records every fork, exec, exit, session, process-group and cgroup',
    'change of it and of everything it starts — even processes that leave the session or daemonize.',
    'In the foreground the job’s output passes through, SIGINT/SIGTERM/SIGHUP are forwarded to its',
    'process group, and ckpt exits with the command’s exit status (128+N when killed by signal N) as',
    'the node agent recorded it. Output that is not a terminal (a pipe, a file: CI, | tee) is written',
    'to $CKPT_HOME/jobs/JOB/UNIT.out (stdout) and UNIT.err (stderr) and copied from there, so the job',
    'holds nothing of ckpt’s and can be checkpointed; a terminal stays the job’s own (a checkpoint is',
    'then refused: tty). Killed by a checkpoint --stop or kill -9, the job ends this ckpt run with',
    '137; `ckpt restart JOB` brings it back detached, writing on into UNIT.out and UNIT.err.',
    'stdin stays the job’s: a pipe or file is taken by a checkpoint (a pipe reads end-of-file after',
    'a restart), a terminal or a socket makes a checkpoint refused (run with < /dev/null then).',
    'With --detach, ckpt prints the job id once the job runs and is tracked, and returns; output goes',
    'to $CKPT_HOME/jobs/JOB/main.out. The node agent that tracks jobs is started on demand and keeps',
    'running in the background (ckpt agent status|stop). The job runs as you (uid, gid, groups, env);',
    'the node agent records the request as the caller the kernel names and moves the job into its',
    'cgroups. Root starts the agent on demand; other users need one running (sudo ckpt agent start).',
    'Listening and UDP sockets are checkpointed by default; established TCP connections (kept across a',
    'checkpoint --stop and a restart on this node) and file locks only with --tcp-established and',
    '--file-locks, recorded in the job: without them a checkpoint is refused, naming each one.',
  ].join('\n'),
  options: [
    { name: 'job', value: 'NAME', description: `job id, matching ${NAME_PATTERN.source} (default: generated from the command)` },
    { name: 'unit', value: 'NAME', description: `the unit's name (default ${MAIN_UNIT}); with an existing --job, adds this unit to it (a job of several units, on several nodes)` },
    { name: 'node', value: 'NAME', description: 'this node’s name (default: $CKPT_NODE, else the host name)' },
    { name: 'memory', value: 'SIZE', description: 'memory limit of the unit, e.g. 256M or 2G (cgroup memory controller)' },
    { name: 'pids', value: 'N', description: 'maximum number of processes and threads in the unit (cgroup pids controller)' },
    { name: 'tcp-established', description: 'every checkpoint of the job takes its established TCP connections (TCP repair, the network locked during the dump); recorded when the job is created' },
    { name: 'file-locks', description: 'every checkpoint of the job takes the file locks it holds; recorded when the job is created' },
    { name: 'detach', short: 'd', description: 'return once the job runs and is tracked; print its id' },
    { name: 'json', description: 'with --detach: print {job, node, unit, pid, startTime} as JSON' },
  ],
  examples: [
    'sudo ckpt run --job nightly --memory 512M -- ./simulate --steps 1000',
    'sudo ckpt run -d -- python3 train.py',
    'sudo ckpt run --pids 200 -- make -j8',
    'sudo ckpt run -d --job sim --unit rank1 --node n2 -- ./simulate --rank 1',
  ],
  async run(args) {
    const command = args.rest.length > 0 ? args.rest : args.positionals;
    if (command.length === 0) throw new UsageError('say what to run: ckpt run [OPTIONS] -- COMMAND [ARGS…]');
    const job = stringOption(args, 'job') ?? generateJobId(command[0]!);
    if (!NAME_PATTERN.test(job))
      throw new UsageError(`job name "${job}" must match ${NAME_PATTERN.source}: lower-case letters, digits, '.', '_' and '-', 1–64 characters, starting with a letter or digit`);
    const node = nodeOf(args);
    const unit = stringOption(args, 'unit') ?? MAIN_UNIT;
    if (!NAME_PATTERN.test(unit)) throw new UsageError(`unit name "${unit}" must match ${NAME_PATTERN.source}`);
    const unitProblem = newUnitNameProblem(unit);
    if (unitProblem) throw new UsageError(unitProblem);
    const memoryBytes = sizeOption(args, 'memory');
    const pids = integerOption(args, 'pids', 1);
    const limits: Limits = { ...(memoryBytes !== undefined && { memoryBytes }), ...(pids !== undefined && { pids }) };
    const options = captureOptions(args);
    const detach = flag(args, 'detach');
    if (flag(args, 'json') && !detach) throw new UsageError('--json goes with --detach (in the foreground the job’s own output is printed)');
    const cwd = process.cwd();
    // Checked before anything is recorded: a typo must not leave a failed job behind.
    if (!resolveCommand(command[0]!)) {
      process.stderr.write(`ckpt run: command not found: ${command[0]}\n`);
      return 127;
    }
    const home = ckptHome();
    const progress = (what: string) => process.stderr.isTTY && process.stderr.write(`\r\x1b[K${what}…`);
    // Root starts this node's agent on demand; anyone else needs one running (the store says so).
    if (process.getuid?.() === 0) {
      progress('starting the node agent');
      await startAgent(home, node, storeUrlOf(args), { progress: (p) => progress(`starting the node agent: ${describeStart(p)}`) });
    }
    const store = openStoreAsUser(args);
    let stdio: Parameters<typeof launchUnit>[0]['stdio'] = ['inherit', 'inherit', 'inherit'];
    let output: string | undefined;
    const relayed: Array<{ path: string; from: number; to: NodeJS.WritableStream }> = [];
    const relays: Relay[] = [];
    const dir = join(home, 'jobs', job);
    const outputFile = (name: string) => {
      mkdirSync(home, { recursive: true, mode: 0o700 });
      makePrivateDirs(home, 'jobs', job); // never through a link planted on the way
      return openPrivateAppend(join(dir, name));
    };
    if (detach) {
      output = join(dir, `${unit}.out`);
      const fd = outputFile(`${unit}.out`);
      stdio = ['ignore', fd, fd];
    } else {
      // A terminal stays the job's; pipes and files are relayed (see output-relay.ts).
      for (const [index, to, suffix] of [
        [1, process.stdout, 'out'],
        [2, process.stderr, 'err'],
      ] as const) {
        if (isatty(index)) continue;
        const fd = outputFile(`${unit}.${suffix}`);
        stdio[index] = fd;
        relayed.push({ path: join(dir, `${unit}.${suffix}`), from: fstatSync(fd).size, to });
      }
    }
    try {
      const user = userInfo();
      const launched = await launchUnit({
        store,
        job,
        unit,
        join: stringOption(args, 'unit') !== undefined,
        node,
        owner: { uid: user.uid, user: user.username },
        command,
        cwd,
        limits,
        options,
        stdio,
        reportEnd: !detach,
        onProgress: progress,
      }).catch((error) => {
        if (error instanceof WrongExpectedRevisionError) throw new Error(`job "${job}" already exists: choose another --job (ckpt jobs lists them)`);
        throw error;
      });
      if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
      for (const fd of new Set(stdio)) if (typeof fd === 'number') closeSync(fd);
      if (detach) {
        launched.child.unref();
        console.log(flag(args, 'json') ? JSON.stringify({ job, node, unit, pid: launched.pid, startTime: launched.startTime, output }) : job);
        return EXIT.ok;
      }
      const forward = (signal: NodeJS.Signals) => () => {
        try {
          process.kill(-launched.pid, signal);
        } catch {
          // the group is gone
        }
      };
      const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((s) => [s, forward(s)] as const);
      for (const [s, h] of handlers) process.on(s, h);
      for (const r of relayed) relays.push(await relayAppended(r.path, r.from, r.to));
      const end = await launched.ended!;
      for (const [s, h] of handlers) process.off(s, h);
      launched.child.unref();
      return 'exit' in end ? end.exit : 128 + end.signal;
    } finally {
      await Promise.all(relays.map((r) => r.finish()));
      await store.close();
    }
  },
};
