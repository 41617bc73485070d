import { join } from 'node:path';
import { imagesRoot } from '../../images/image-store.js';
import { NAME_PATTERN } from '../../../domain/codecs.js';
import { defaultAppendContext } from '../../store/batch.js';
import { ckptHome } from '../../store/open.js';
import { redactStoreUrl } from '../../store/redact.js';
import { agentFiles, defaultNode, storeId, removePidFile, runningAgent, startAgent, stopAgent, writePidFile, type AgentInfo } from '../../agent/daemon.js';
import { NodeAgent } from '../../agent/node-agent.js';
import { readStat } from '../../tracking/procfs.js';
import { flag, integerOption, stringOption, UsageError, type ParsedArgs } from '../args.js';
import { EXIT, type Command } from '../command.js';
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

const describe = (a: AgentInfo) => `node agent for ${a.node} running: pid ${a.pid}, since ${a.startedAt}, store ${a.store}, log ${a.log}`;

const run = async (args: ParsedArgs): Promise<number> => {
  needRoot('the node agent');
  // Images are fsynced file by file in libuv's pool (4 threads by default) while CRIU writes
  // dozens of them; must be set before the pool's first use.
  process.env.UV_THREADPOOL_SIZE ??= '16';
  const node = nodeOf(args);
  const url = storeUrlOf(args);
  const home = ckptHome();
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  const store = openStore(args, defaultAppendContext({ kind: 'node', node }));
  // The URL may hold a password (startAgent passes it here in the environment): the processes the
  // agent starts (CRIU, restores) need not inherit it.
  delete process.env.CKPT_STORE;
  const agent = new NodeAgent({ store, node, version: version(), cgroupPrefix: `ckpt/${storeId(url)}`, imagesRoot: imagesRoot(home), workRoot: join(home, 'restarts'), criuProbeCache: join(home, 'criu-probe.json'), rcvbuf: integerOption(args, 'rcvbuf', 1024), log });
  try {
    await agent.start();
  } catch (error) {
    // A fatal start (a corrupt row, a store that refuses): undo what started, then end with the
    // message — never linger as an orphan without a pid file.
    await agent.stop(`could not start: ${(error as Error).message}`).catch(() => {});
    await store.close().catch(() => {});
    setTimeout(() => process.exit(EXIT.failed), 2000).unref();
    throw error;
  }
  const self = readStat(process.pid)!;
  const info: AgentInfo = { pid: process.pid, startTime: self.startTime, node, store: redactStoreUrl(url), startedAt: new Date().toISOString(), log: agentFiles(home, node, url).log };
  writePidFile(home, info);
  log(`${describe(info)}; ready`);
  const signal = await new Promise<string>((resolve) => {
    for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(s, () => resolve(s));
  });
  log(`stopping (${signal})`);
  await agent.stop(`stopped by ${signal}`);
  removePidFile(home, info);
  await store.close();
  return EXIT.ok;
};

export const agentCommand: Command = {
  name: 'agent',
  summary: 'Run, start, stop or inspect the node agent that tracks this node’s jobs.',
  usage: 'run|start|status|stop [--node NAME] [--json]',
  description: [
    'The node agent follows the kernel’s process events (proc connector) and /proc for every job on this',
    'node and records them in the event log; it creates each unit’s cgroups. `ckpt run` starts it on',
    'demand; it keeps running in the background, in its own session, until stopped. One agent runs per',
    'node and event store.',
    'A PostgreSQL password is never taken from argv: give it in PGPASSWORD or a 0600 PGPASSFILE',
    '(~/.pgpass); a URL that holds one is passed to the background agent in its environment, and',
    'shown redacted (postgres://user:***@host/db) in its status, pid file and messages. If the agent',
    'cannot start (for example a corrupt row in the log) it exits with status 1 and says which event.',
    '  run     run the agent in the foreground (what `start` launches; for service managers)',
    '  start   start it in the background unless it is running; wait until it is ready',
    '  status  show whether it runs, its pid, store and log file (exit 1 when not running)',
    '  stop    stop it and wait until it is gone',
  ].join('\n'),
  options: [
    { name: 'node', value: 'NAME', description: 'node name (default: $CKPT_NODE, else the host name)' },
    { name: 'json', description: 'machine-readable output (status, start)' },
    { name: 'rcvbuf', value: 'BYTES', description: 'proc connector receive buffer (default 16 MiB; tests use tiny ones)' },
  ],
  examples: ['sudo ckpt agent start', 'ckpt agent status --json', 'sudo ckpt agent stop'],
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
        const info = await startAgent(home, nodeOf(args), storeUrlOf(args), rcvbuf ? ['--rcvbuf', rcvbuf] : []);
        console.log(json ? JSON.stringify({ running: true, ...info }) : describe(info));
        return EXIT.ok;
      }
      case 'status': {
        const node = nodeOf(args);
        const info = runningAgent(home, node, storeUrlOf(args));
        if (json) console.log(JSON.stringify(info ? { running: true, ...info } : { running: false, node }));
        else console.log(info ? describe(info) : `no node agent is running for ${node} on this store (start one with: ckpt agent start)`);
        return info ? EXIT.ok : EXIT.failed;
      }
      case 'stop': {
        const node = nodeOf(args);
        const info = runningAgent(home, node, storeUrlOf(args));
        if (!info) {
          console.log(`no node agent was running for ${node} on this store`);
          return EXIT.ok;
        }
        await stopAgent(info);
        console.log(`stopped the node agent for ${node} (pid ${info.pid})`);
        return EXIT.ok;
      }
      default:
        throw new UsageError(action ? `unknown agent action "${action}": use run, start, status or stop` : 'say what to do: run, start, status or stop');
    }
  },
};
