import { mkdirSync } from 'node:fs';
import { createConnection, type Server } from 'node:net';
import { join } from 'node:path';
import { NAME_PATTERN } from '../../../domain/codecs.js';
import type { EventStore } from '../../../domain/event-store.js';
import {
  type AgentInfo,
  agentFiles,
  agentSocket,
  defaultNode,
  describeStart,
  holdAgentLock,
  removePidFile,
  removeStartProgress,
  runningAgent,
  START_STALL_MS,
  type StartProgress,
  stalePidFile,
  startAgent,
  startingAgent,
  stopAgent,
  storeId,
  writePidFile,
  writeStartProgress,
} from '../../agent/daemon.js';
import type { MetricsEndpoint } from '../../agent/metrics-endpoint.js';
import type { NodeAgent, StartStep } from '../../agent/node-agent.js';
import { checkPrivateTree, makePrivateDir, UnsafePathError } from '../../fs/safe-fs.js';
import { imagesRoot } from '../../images/image-store.js';
import { defaultAppendContext } from '../../store/batch.js';
import { MAX_LEASE_TTL_MS } from '../../store/leases.js';
import { redactStoreUrl } from '../../store/redact.js';
import { ckptHome } from '../../store/url.js';
import { readStat } from '../../tracking/procfs.js';
import { durationOption, flag, integerOption, listenOption, type ParsedArgs, stringOption, UsageError } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { needRoot, openStore, storeUrlOf } from '../store.js';
import { version } from '../version.js';

/**
 * Agents execute checkpoints and restarts (as root): starts this node's agent if it is not
 * running. A user who may not act on the job is refused by the coordinator, on record.
 */
export const ensureAgent = async (args: ParsedArgs): Promise<void> => {
  const node = nodeOf(args);
  const home = ckptHome();
  if (process.getuid?.() === 0 && !runningAgent(home, node, storeUrlOf(args))) await startAgent(home, node, storeUrlOf(args));
};

export const nodeOf = (args: ParsedArgs): string => {
  const node = stringOption(args, 'node') ?? defaultNode();
  if (!NAME_PATTERN.test(node)) throw new UsageError(`node name "${node}" must match ${NAME_PATTERN.source} (set --node or CKPT_NODE)`);
  return node;
};

/** The agent (root) writes, runs and removes under CKPT_HOME: a tree others can write is refused. */
const refuseSteerableHome = (home: string) => {
  try {
    checkPrivateTree(home);
    mkdirSync(home, { recursive: true, mode: 0o700 });
    makePrivateDir(home);
  } catch (error) {
    if (!(error instanceof UnsafePathError)) throw error;
    throw new Error(`the node agent refuses to start: other users could steer what it writes, runs or removes under CKPT_HOME (${home}): ${error.message}`);
  }
};

/**
 * `agent start`'s progress on stderr: one line rewritten on a terminal, else a line every 5 s
 * (none with --json unless stderr is a terminal: stdout stays the JSON answer either way).
 */
const startProgressPrinter = (json: boolean) => {
  const tty = process.stderr.isTTY;
  let printedAt = 0;
  let shown = false;
  return {
    show: (p: StartProgress) => {
      if (json && !tty) return;
      const line = `the node agent is starting: ${describeStart(p)}`;
      if (tty) {
        process.stderr.write(`\r\x1b[K${line}`);
        shown = true;
      } else if (printedAt === 0 || Date.now() - printedAt >= 5000) {
        printedAt = Date.now();
        process.stderr.write(`${line}\n`);
      }
    },
    done: () => {
      if (shown) process.stderr.write('\r\x1b[K');
    },
  };
};

const describe = (a: AgentInfo) => `node agent for ${a.node} running: pid ${a.pid}, since ${a.startedAt}, store ${a.store}, log ${a.log}${a.metrics ? `, metrics ${a.metrics}` : ''}`;

/** The agent's log line: a log that cannot be written (its disk full, its reader gone) is never fatal. */
const log = (line: string) => {
  try {
    process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  } catch {
    // nowhere left to say it
  }
};

/**
 * A start that fails ends the process, with the reason on stderr and a non-zero status: the
 * proc connector's helper, timers and store handles must not keep a half-started agent alive.
 */
const failStart = async (why: string, agent?: NodeAgent): Promise<never> => {
  log(`the node agent could not start: ${why}`);
  await Promise.race([agent?.stop(`could not start: ${why}`).catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
  process.exit(EXIT.failed);
};

/**
 * The agent's start progress, to its start file (daemon.ts) for `agent start` and `agent status`:
 * at most every 250 ms while it folds the log, and at each change of phase. A file that cannot be
 * written costs the start nothing (it is only shown).
 */
const reportStart = (home: string, node: string, url: string, startTime: number) => {
  let writtenAt = 0;
  let phase: StartStep['phase'] | undefined;
  return (step: StartStep) => {
    const now = Date.now();
    if (step.phase === phase && now - writtenAt < 250) return;
    writtenAt = now;
    phase = step.phase;
    const progress: StartProgress =
      step.phase === 'log' ? { pid: process.pid, startTime, phase: 'log', folded: step.folded, head: step.head } : { pid: process.pid, startTime, phase: 'probe', folded: 0, head: 0 };
    try {
      writeStartProgress(home, node, url, progress);
    } catch (error) {
      log(`could not record the start's progress: ${(error as Error).message}`);
    }
  };
};

/** --lease-ttl: a duration up to a day (a longer lease would hide a dead node for longer than anyone waits). */
const leaseTtlOption = (args: ParsedArgs): number | undefined => {
  const ms = durationOption(args, 'lease-ttl');
  if (ms !== undefined && ms > MAX_LEASE_TTL_MS) throw new UsageError(`option --lease-ttl must be at most ${MAX_LEASE_TTL_MS / 3_600_000}h, got "${stringOption(args, 'lease-ttl')}"`);
  return ms;
};

/** Held for the agent's whole life (kept referenced here, never closed: the kernel releases it at exit). */
// biome-ignore lint/correctness/noUnusedVariables: written, never read — it only keeps the lock referenced
let lock: Server | undefined;

const run = async (args: ParsedArgs): Promise<number> => {
  needRoot('the node agent');
  process.stderr.on('error', () => {}); // see log
  // Images are fsynced file by file in libuv's pool (4 threads by default) while CRIU writes
  // dozens of them; must be set before the pool's first use.
  process.env.UV_THREADPOOL_SIZE ??= '16';
  // Every option is read before anything starts: a bad one is a usage error, nothing left behind.
  const node = nodeOf(args);
  const url = storeUrlOf(args);
  const rcvbuf = integerOption(args, 'rcvbuf', 1024);
  const metricsAddress = listenOption(args, 'metrics');
  const leaseTtlMs = leaseTtlOption(args);
  const home = ckptHome();
  // The lock first: a second agent for this node and store stops here, having touched nothing.
  lock = await holdAgentLock(node, url);
  refuseSteerableHome(home);
  let store: EventStore;
  try {
    store = openStore(args, defaultAppendContext({ kind: 'node', node }));
  } catch (error) {
    return failStart(`the event store cannot be opened: ${(error as Error).message}`);
  }
  // The URL may hold a password (startAgent passes it here in the environment): the processes the
  // agent starts (CRIU, restores) need not inherit it.
  delete process.env.CKPT_STORE;
  const self = readStat(process.pid)!;
  const rereads = process.env.CKPT_TRACKING_REREADS === 'fixed' ? 'fixed' : 'adaptive';
  // An agent in a host's own network namespace (scripts/testbed.sh) opens the proc connector in the
  // initial one: /proc/1/ns/net, or this file where /proc/1 is closed to root.
  const initialNetns = process.env.CKPT_INITIAL_NETNS || undefined;
  // Loaded here, not with this module: checkpoint, restart and run import it for nodeOf and ensureAgent.
  const { NodeAgent } = await import('../../agent/node-agent.js');
  const agent = new NodeAgent({
    store,
    node,
    version: version(),
    cgroupPrefix: `ckpt/${storeId(url)}`,
    imagesRoot: imagesRoot(home),
    workRoot: join(home, 'restarts'),
    criuProbeCache: join(home, 'criu-probe.json'),
    rcvbuf,
    initialNetns,
    rereads,
    leaseTtlMs,
    starting: reportStart(home, node, url, self.startTime),
    log,
  });
  // The metrics address is bound before anything starts: a busy one ends the start with nothing done.
  let metrics: MetricsEndpoint | undefined;
  if (metricsAddress) {
    const { MetricsEndpoint } = await import('../../agent/metrics-endpoint.js');
    metrics = new MetricsEndpoint({ store, node, agent, log });
    await metrics.listen(metricsAddress).catch((error: Error) => failStart(error.message));
  }
  try {
    await agent.start();
    await metrics?.follow();
  } catch (error) {
    removeStartProgress(home, node, url);
    await metrics?.stop();
    return failStart((error as Error).message, agent);
  }
  const info: AgentInfo = {
    pid: process.pid,
    startTime: self.startTime,
    node,
    store: redactStoreUrl(url),
    startedAt: new Date().toISOString(),
    log: agentFiles(home, node, url).log,
    ...(metrics && { metrics: metrics.url }),
  };
  writePidFile(home, info);
  try {
    await agent.openGateway(agentSocket(node, url));
  } catch (error) {
    removePidFile(home, info);
    return failStart(`could not open the request socket ${agentSocket(node, url)}: ${(error as Error).message}`, agent);
  }
  removeStartProgress(home, node, url);
  log(`${describe(info)}; requests on ${agentSocket(node, url)}; ready`);
  const signal = await new Promise<string>((resolve) => {
    for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(s, () => resolve(s));
  });
  log(`stopping (${signal})`);
  await metrics?.stop();
  await agent.stop(`stopped by ${signal}`);
  removePidFile(home, info);
  await store.close();
  return EXIT.ok;
};

/**
 * A user cannot read root's pid file: whether an agent runs is whether its request socket answers
 * (its pid, log and store details stay root's).
 */
const statusFromSocket = async (node: string, url: string, json: boolean): Promise<number> => {
  const socket = agentSocket(node, url);
  const answers = await new Promise<boolean>((resolve) => {
    const c = createConnection(socket);
    const done = (ok: boolean) => {
      c.destroy();
      resolve(ok);
    };
    c.setTimeout(2000, () => done(false));
    c.once('connect', () => done(true)).once('error', () => done(false));
  });
  if (json) console.log(JSON.stringify({ running: answers, node, socket }));
  else
    console.log(
      answers
        ? `a node agent for ${node} answers on ${socket} (its pid, store and log are shown to root)`
        : `no node agent answers for ${node} on ${socket}: ask root to start one (sudo ckpt agent start)`,
    );
  return answers ? EXIT.ok : EXIT.failed;
};

export const agentCommand: Command = {
  usage: 'run|start|status|stop [--node NAME] [--json] [--metrics [HOST:]PORT] [--lease-ttl DURATION]',
  description: [
    'The node agent follows the kernel’s process events (proc connector) and /proc for every job on this',
    'node and records them in the event log; it creates each unit’s cgroups. `ckpt run` starts it on',
    'demand; it keeps running in the background, in its own session, until stopped. One agent runs per',
    'node and event store. It takes every request (run, checkpoint, restart, prune) on its socket',
    '/run/ckpt/NODE-STOREID.sock, records it as the caller the kernel names (SO_PEERCRED) and lets a',
    'user act on and read only their own jobs (root: all). It refuses to start on a CKPT_HOME that users other than root could write',
    '(a group- or other-writable directory, a file of another user, a link inside it), naming the path',
    'and the fix (chmod go-w PATH, chown root PATH). It acts only on the cgroups and processes of its',
    'own units, whatever the event log says: anything else is refused, on record (docs/security.md).',
    'node and event store: it holds a lock (an abstract unix socket) from its first moment, so a second',
    '`agent run` exits at once naming the first; a pid file left by a killed agent is reported by status,',
    'removed by stop and does not prevent start. A start that fails ends the process with the reason (exit 1).',
    'A PostgreSQL password is never taken from argv: give it in PGPASSWORD or a 0600 PGPASSFILE',
    '(~/.pgpass); a URL that holds one is passed to the background agent in its environment, and',
    'shown redacted (postgres://user:***@host/db) in its status, pid file and messages. If the agent',
    'cannot start (for example a corrupt row in the log) it exits with status 1 and says which event.',
    'An agent may run in a network namespace of its own (a host of scripts/testbed.sh): its jobs and its',
    'store traffic live there, while its proc connector helper opens its socket in the initial namespace',
    '(/proc/1/ns/net, or $CKPT_INITIAL_NETNS where /proc/1 is closed to root), the only one the kernel serves.',
    '  run     run the agent in the foreground (what `start` launches; for service managers)',
    '  start   start it in the background unless it is running; wait until it is ready, as long as it',
    '          makes progress (folding a long log takes a while: shown on stderr as "catching up: N of',
    '          M events"); fail when it exits, or shows no progress for --stall (the reason says which)',
    '  status  show whether it runs, its pid, store, log file and metrics address (exit 1 when not running), or how far',
    '          a starting agent has come ("catching up: N of M events"); for a',
    '          user other than root: whether it answers on its socket',
    '  stop    stop it and wait until it is gone',
    'With --metrics the agent serves Prometheus metrics (checkpoint and restore totals and histograms,',
    'tracked processes, observation gaps, how far it is behind the log) at http://HOST:PORT/metrics; the',
    'totals are counted from the log, so they survive a restart of the agent (README: Metrics).',
    "While it runs, the agent renews its node's liveness lease beside the log (SQLite, PostgreSQL; not",
    'KurrentDB) every third of --lease-ttl; `ckpt nodes` shows a node whose lease expired as lost. A',
    'failed renewal is logged once per outage and the agent keeps running; a clean stop releases the lease.',
  ].join('\n'),
  options: [
    { name: 'node', value: 'NAME', description: 'node name (default: $CKPT_NODE, else the host name)' },
    { name: 'json', description: 'machine-readable output (status, start)' },
    {
      name: 'stall',
      value: 'DURATION',
      description: `start: give up when the starting agent shows no progress this long (default ${START_STALL_MS.log / 1000}s; its checkpointer probe may take ${START_STALL_MS.probe / 1000}s)`,
    },
    { name: 'rcvbuf', value: 'BYTES', description: 'proc connector receive buffer (default 16 MiB; tests use tiny ones)' },
    {
      name: 'lease-ttl',
      value: 'DURATION',
      description: 'run, start: how long the node counts as alive without a lease renewal (default 15s; renewed every third of it); takes effect when the agent starts',
    },
    {
      name: 'metrics',
      value: '[HOST:]PORT',
      description: 'run, start: serve Prometheus metrics at http://HOST:PORT/metrics (default off; HOST defaults to 127.0.0.1 — give 0.0.0.0 to be scraped from elsewhere)',
    },
  ],
  examples: ['sudo ckpt agent start', 'sudo ckpt agent start --metrics 127.0.0.1:9464', 'ckpt agent status --json', 'sudo ckpt agent stop'],
  async run(args) {
    const [action, ...extra] = args.positionals;
    if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
    const json = flag(args, 'json');
    const home = ckptHome();
    switch (action) {
      case 'run':
        return run(args);
      case 'start': {
        needRoot('the node agent');
        const rcvbuf = stringOption(args, 'rcvbuf');
        const metricsAddress = listenOption(args, 'metrics'); // a bad address is refused here, before the agent starts
        const stall = durationOption(args, 'stall');
        leaseTtlOption(args); // a bad duration is refused here, before the agent starts
        const leaseTtl = stringOption(args, 'lease-ttl');
        const stallMs = stall === undefined ? START_STALL_MS : { ...START_STALL_MS, before: stall, log: stall };
        const node = nodeOf(args);
        const given = [...(metricsAddress ? ['--metrics'] : []), ...(leaseTtl ? ['--lease-ttl'] : [])];
        if (given.length > 0 && runningAgent(home, node, storeUrlOf(args)))
          process.stderr.write(`the node agent already runs: ${given.join(' and ')} take${given.length === 1 ? 's' : ''} effect when it starts (ckpt agent stop, then start it again)\n`);
        const shown = startProgressPrinter(json);
        let info: AgentInfo;
        try {
          info = await startAgent(home, node, storeUrlOf(args), {
            extraArgs: [...(rcvbuf ? ['--rcvbuf', rcvbuf] : []), ...(metricsAddress ? ['--metrics', stringOption(args, 'metrics')!] : []), ...(leaseTtl ? ['--lease-ttl', leaseTtl] : [])],
            progress: shown.show,
            stallMs,
          });
        } finally {
          shown.done();
        }
        console.log(json ? JSON.stringify({ running: true, ...info }) : describe(info));
        return EXIT.ok;
      }
      case 'status': {
        const node = nodeOf(args);
        if (process.getuid?.() !== 0) return statusFromSocket(node, storeUrlOf(args), json);
        const info = runningAgent(home, node, storeUrlOf(args));
        const starting = info ? undefined : startingAgent(home, node, storeUrlOf(args));
        if (starting) {
          // Running, not ready yet: it answers no request until it has folded the log.
          const { pid, phase, folded, head } = starting;
          if (json) console.log(JSON.stringify({ running: true, ready: false, node, pid, phase, folded, head }));
          else console.log(`node agent for ${node} starting: pid ${pid}, ${describeStart(starting)}`);
          return EXIT.ok;
        }
        if (json) console.log(JSON.stringify(info ? { running: true, ...info } : { running: false, node }));
        else if (info) console.log(describe(info));
        else {
          const stale = stalePidFile(home, node, storeUrlOf(args));
          const left = stale ? ` (its pid file names pid ${stale.pid}, which is gone: the agent did not stop cleanly)` : '';
          console.log(`no node agent is running for ${node} on this store${left} (start one with: ckpt agent start)`);
        }
        return info ? EXIT.ok : EXIT.failed;
      }
      case 'stop': {
        const node = nodeOf(args);
        const info = runningAgent(home, node, storeUrlOf(args)) ?? startingAgent(home, node, storeUrlOf(args));
        if (!info) {
          const stale = stalePidFile(home, node, storeUrlOf(args));
          if (stale) removePidFile(home, stale);
          console.log(`no node agent was running for ${node} on this store${stale ? ` (removed the stale pid file of pid ${stale.pid})` : ''}`);
          return EXIT.ok;
        }
        await stopAgent(info);
        removeStartProgress(home, node, storeUrlOf(args));
        console.log(`stopped the node agent for ${node} (pid ${info.pid})`);
        return EXIT.ok;
      }
      default:
        throw new UsageError(action ? `unknown agent action "${action}": use run, start, status or stop` : 'say what to do: run, start, status or stop');
    }
  },
};
