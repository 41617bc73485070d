// The node agent as a background process: one per (node, store), started on demand by
// `ckpt run`, surviving the shell that started it; found through a small JSON pid file that it
// writes once it is ready and removes when it stops.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NAME_PATTERN } from '../../domain/codecs.js';
import { makePrivateDir, openPrivateAppend, replacePrivateFile } from '../fs/safe-fs.js';
import { redactStoreUrl } from '../store/redact.js';
import { readStat } from '../tracking/procfs.js';

export interface AgentInfo {
  readonly pid: number;
  readonly startTime: number;
  readonly node: string;
  /** The store URL, redacted (no password). */
  readonly store: string;
  readonly startedAt: string;
  readonly log: string;
  /** Where it serves Prometheus metrics (--metrics), if it does. */
  readonly metrics?: string;
}

/** This machine's node name: CKPT_NODE, else the host name made into a valid name. */
export const defaultNode = (env: NodeJS.ProcessEnv = process.env): string => {
  if (env.CKPT_NODE) return env.CKPT_NODE;
  const name = hostname()
    .toLowerCase()
    .replace(/[^a-z0-9._-]/g, '-')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, 64);
  return NAME_PATTERN.test(name) ? name : 'node';
};

/**
 * A short id of a store URL: names the agent's files and the cgroups of the store's jobs. Of the
 * redacted URL, so no password reaches a name, and the same with or without one.
 */
export const storeId = (store: string): string => createHash('sha256').update(redactStoreUrl(store)).digest('hex').slice(0, 8);

export const agentFiles = (home: string, node: string, store: string) => {
  const dir = join(home, 'agent');
  const id = `${node}-${storeId(store)}`;
  return { dir, pidFile: join(dir, `${id}.json`), log: join(dir, `${id}.log`), startFile: join(dir, `${id}.starting.json`) };
};

/**
 * How far a starting agent has come, in its start file (0600 root, replaced atomically, removed
 * once it is ready): the log folded so far (events, of the head position when it began), then the
 * checkpointer's probe. `ckpt agent start` waits as long as this moves; `agent status` shows it.
 */
export interface StartProgress {
  readonly pid: number;
  readonly startTime: number;
  readonly phase: 'log' | 'probe';
  readonly folded: number;
  readonly head: number;
}

export const writeStartProgress = (home: string, node: string, store: string, progress: StartProgress): void => {
  const { dir, startFile } = agentFiles(home, node, store);
  makePrivateDir(dir);
  replacePrivateFile(startFile, JSON.stringify(progress));
};

export const removeStartProgress = (home: string, node: string, store: string): void => rmSync(agentFiles(home, node, store).startFile, { force: true });

/** The progress of the agent for this node and store that is starting now (its process alive), if any. */
export const startingAgent = (home: string, node: string, store: string): StartProgress | undefined => {
  try {
    const progress = JSON.parse(readFileSync(agentFiles(home, node, store).startFile, 'utf8')) as StartProgress;
    return isAlive(progress) ? progress : undefined;
  } catch {
    return undefined;
  }
};

/** "catching up: 120,000 of 1,000,000 events" / "probing the checkpointer". */
export const describeStart = (p: Pick<StartProgress, 'phase' | 'folded' | 'head'>): string =>
  p.phase === 'probe' ? 'probing the checkpointer' : `catching up: ${p.folded.toLocaleString('en-US')} of ${p.head.toLocaleString('en-US')} events`;

/** Where agents listen for requests: root's, readable by all (identity comes from the kernel). */
export const SOCKET_DIR = '/run/ckpt';

/** The request socket of the agent for this node and store. */
export const agentSocket = (node: string, store: string): string => join(SOCKET_DIR, `${node}-${storeId(store)}.sock`);

/** The request sockets of every agent of this store on this machine (one per node name). */
export const storeSockets = (store: string): string[] => {
  const suffix = `-${storeId(store)}.sock`;
  try {
    return readdirSync(SOCKET_DIR)
      .filter((name) => name.endsWith(suffix))
      .sort()
      .map((name) => join(SOCKET_DIR, name));
  } catch {
    return [];
  }
};

/** The agent for this node and store, if one is running (its pid file names a live process). */
export const runningAgent = (home: string, node: string, store: string): AgentInfo | undefined => {
  const { pidFile } = agentFiles(home, node, store);
  let info: AgentInfo;
  try {
    info = JSON.parse(readFileSync(pidFile, 'utf8')) as AgentInfo;
  } catch {
    return undefined;
  }
  return isAlive(info) ? info : undefined;
};

/** Another agent holds the lock of this node and store. */
export class AgentRunningError extends Error {
  override readonly name = 'AgentRunningError';
}

/**
 * One agent per node and store: the agent binds the abstract unix socket
 * `\0ckpt-agent-NODE-STOREID` before anything else. The kernel releases it when the process
 * dies, however it dies, so a stale pid file never blocks a start and two agents never run at
 * once. A second agent connects to it and learns the holder's pid. (Abstract names belong to
 * the network namespace: agents of one node run in the initial one, where the proc connector works.)
 */
export const holdAgentLock = (node: string, store: string): Promise<Server> => {
  const name = `\0ckpt-agent-${node}-${storeId(store)}`;
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => socket.end(`${process.pid}\n`));
    server.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EADDRINUSE') return reject(new Error(`could not take the agent lock of ${node}: ${error.message}`));
      holderOf(name).then((pid) =>
        reject(
          new AgentRunningError(
            pid !== undefined
              ? `a node agent for ${node} is already running (pid ${pid})`
              : `a node agent for ${node} is already running (the lock ${name.slice(1)} is held by a process that did not say its pid; see ss -xlp | grep ${name.slice(1)})`,
          ),
        ),
      );
    });
    server.listen(name, () => {
      server.unref();
      resolve(server);
    });
  });
};

/** The pid the lock's holder answers with (within a second), if it does. */
const holderOf = (name: string): Promise<number | undefined> =>
  new Promise((resolve) => {
    let text = '';
    const socket = createConnection(name);
    const done = () => {
      socket.destroy();
      const pid = Number(text.trim());
      resolve(Number.isSafeInteger(pid) && pid > 0 ? pid : undefined);
    };
    socket.setTimeout(1000, done);
    socket.on('data', (d) => (text += d.toString()));
    socket.on('end', done);
    socket.on('error', done);
  });

/** A pid file whose process is gone (or whose pid now names another process): what an agent killed left. */
export const stalePidFile = (home: string, node: string, store: string): AgentInfo | undefined => {
  try {
    const info = JSON.parse(readFileSync(agentFiles(home, node, store).pidFile, 'utf8')) as AgentInfo;
    return isAlive(info) ? undefined : info;
  } catch {
    return undefined;
  }
};

/** Called by the agent once it is ready. Refuses when another live agent holds the file. */
export const writePidFile = (home: string, info: AgentInfo): void => {
  const { dir, pidFile } = agentFiles(home, info.node, info.store);
  const other = runningAgent(home, info.node, info.store);
  if (other && other.pid !== info.pid) throw new Error(`a node agent for ${info.node} is already running (pid ${other.pid})`);
  makePrivateDir(dir);
  replacePrivateFile(pidFile, JSON.stringify({ ...info, store: redactStoreUrl(info.store) }, null, 2));
};

export const removePidFile = (home: string, info: AgentInfo): void => {
  const current = runningAgent(home, info.node, info.store);
  if (!current || current.pid === info.pid) rmSync(agentFiles(home, info.node, info.store).pidFile, { force: true });
};

/** Alive: the pid still names the same process, and it is not a zombie waiting to be reaped. */
export const isAlive = (info: Pick<AgentInfo, 'pid' | 'startTime'>): boolean => {
  const stat = readStat(info.pid);
  return !!stat && stat.startTime === info.startTime && stat.state !== 'Z' && stat.state !== 'X';
};

const CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url));

/**
 * How long a starting agent may show no progress before `startAgent` gives up on it: before its
 * first report (opening the store, the lock, the kernel subscription), between two reports while
 * it folds the log (one per 10,000 events), and while it probes the checkpointer (a real dump and
 * restore: seconds on a loaded machine). A start that fails ends the agent at once, so a long
 * limit costs nothing then.
 */
export type StallLimits = Readonly<Record<'before' | StartProgress['phase'], number>>;
export const START_STALL_MS: StallLimits = { before: 30_000, log: 30_000, probe: 90_000 };

export interface StartOptions {
  readonly extraArgs?: readonly string[];
  /** Called on each new progress report of the starting agent. */
  readonly progress?: (p: StartProgress) => void;
  readonly stallMs?: StallLimits;
}

/**
 * Starts the agent in the background (new session, output to its log) and waits until it is
 * ready, however long that takes while it makes progress (a long log takes long to fold): it
 * fails when the agent exits, or when its progress stops for a while, saying which.
 */
export const startAgent = async (home: string, node: string, store: string, options: StartOptions = {}): Promise<AgentInfo> => {
  const running = runningAgent(home, node, store);
  if (running) return running;
  const { log } = agentFiles(home, node, store);
  // One already starting (another `ckpt run`, a service manager) is waited for, not raced.
  const starting = startingAgent(home, node, store);
  const agent = starting ? { pid: starting.pid, exitStatus: () => (isAlive(starting) ? undefined : null) } : spawnAgent(home, node, store, options.extraArgs ?? []);
  const stall = options.stallMs ?? START_STALL_MS;
  let last: StartProgress | undefined;
  let movedAt = Date.now();
  for (;;) {
    const info = runningAgent(home, node, store);
    // Ready means answering requests: the socket is opened right after the pid file is claimed.
    if (info && existsSync(agentSocket(node, store))) return info;
    const now = startingAgent(home, node, store);
    if (now && now.pid === agent.pid && (now.phase !== last?.phase || now.folded !== last.folded)) {
      last = now;
      movedAt = Date.now();
      options.progress?.(now);
    }
    const exited = agent.exitStatus();
    const limit = stall[last?.phase ?? 'before'];
    if (exited !== undefined || Date.now() - movedAt > limit) {
      const tail = (() => {
        try {
          return readFileSync(log, 'utf8').trim().split('\n').slice(-5).join('\n');
        } catch {
          return '';
        }
      })();
      const why =
        exited !== undefined
          ? ` (it exited${exited === null ? '' : ` with status ${exited}`})${last ? ` while ${describeStart(last)}` : ''}`
          : `: it made no progress for ${limit / 1000} s (${last ? `last: ${describeStart(last)}` : 'it never reported any'}); it still runs as pid ${agent.pid} (ckpt agent stop ends it)`;
      throw new Error(`the node agent for ${node} did not start${why}; its log ${log} says:\n${tail}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
};

/** The agent in the background: a new session, its output to its log. Its exit status, once it exited. */
const spawnAgent = (home: string, node: string, store: string, extraArgs: readonly string[]) => {
  const { dir, log } = agentFiles(home, node, store);
  mkdirSync(home, { recursive: true, mode: 0o700 });
  makePrivateDir(dir);
  const out = openPrivateAppend(log); // never through a link planted where the log goes
  // The store URL goes in the environment, which only root can read: argv is visible to everyone.
  const child = spawn(process.execPath, [CLI, 'agent', 'run', '--node', node, ...extraArgs], {
    detached: true,
    stdio: ['ignore', out, out],
    env: { ...process.env, CKPT_HOME: home, CKPT_STORE: store },
  });
  closeSync(out);
  child.unref();
  let exited: number | null | undefined;
  child.once('exit', (code) => (exited = code));
  return { pid: child.pid, exitStatus: () => exited };
};

/** Stops the agent (SIGTERM) and waits until it is gone. */
export const stopAgent = async (info: Pick<AgentInfo, 'pid' | 'startTime'>, timeoutMs = 10_000): Promise<void> => {
  try {
    process.kill(info.pid, 'SIGTERM');
  } catch {
    return;
  }
  const end = Date.now() + timeoutMs;
  while (isAlive(info)) {
    if (Date.now() > end) throw new Error(`the node agent (pid ${info.pid}) did not stop within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 25));
  }
};
