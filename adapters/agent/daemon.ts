// The node agent as a background process: one per (node, store), started on demand by
// `ckpt run`, surviving the shell that started it; found through a small JSON pid file that it
// writes once it is ready and removes when it stops.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NAME_PATTERN } from '../../domain/codecs.js';
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
}

/** This machine's node name: CKPT_NODE, else the host name made into a valid name. */
export const defaultNode = (env: NodeJS.ProcessEnv = process.env): string => {
  if (env.CKPT_NODE) return env.CKPT_NODE;
  const name = hostname().toLowerCase().replace(/[^a-z0-9._-]/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 64);
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
  return { dir, pidFile: join(dir, `${id}.json`), log: join(dir, `${id}.log`) };
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

/** Called by the agent once it is ready. Refuses when another live agent holds the file. */
export const writePidFile = (home: string, info: AgentInfo): void => {
  const { dir, pidFile } = agentFiles(home, info.node, info.store);
  const other = runningAgent(home, info.node, info.store);
  if (other && other.pid !== info.pid) throw new Error(`a node agent for ${info.node} is already running (pid ${other.pid})`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(`${pidFile}.tmp`, JSON.stringify({ ...info, store: redactStoreUrl(info.store) }, null, 2), { mode: 0o600 });
  renameSync(`${pidFile}.tmp`, pidFile);
};

export const removePidFile = (home: string, info: AgentInfo): void => {
  const current = runningAgent(home, info.node, info.store);
  if (!current || current.pid === info.pid) rmSync(agentFiles(home, info.node, info.store).pidFile, { force: true });
};

/** Alive: the pid still names the same process, and it is not a zombie waiting to be reaped. */
const isAlive = (info: Pick<AgentInfo, 'pid' | 'startTime'>): boolean => {
  const stat = readStat(info.pid);
  return !!stat && stat.startTime === info.startTime && stat.state !== 'Z' && stat.state !== 'X';
};

const CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url));

/** Starts the agent in the background (new session, output to its log) and waits until it is ready. */
export const startAgent = async (home: string, node: string, store: string, extraArgs: readonly string[] = [], timeoutMs = 20_000): Promise<AgentInfo> => {
  const running = runningAgent(home, node, store);
  if (running) return running;
  const { dir, log } = agentFiles(home, node, store);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const out = openSync(log, 'a');
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
  const end = Date.now() + timeoutMs;
  for (;;) {
    const info = runningAgent(home, node, store);
    if (info) return info;
    if (exited !== undefined || Date.now() > end) {
      const tail = (() => {
        try {
          return readFileSync(log, 'utf8').trim().split('\n').slice(-5).join('\n');
        } catch {
          return '';
        }
      })();
      throw new Error(`the node agent for ${node} did not start${exited !== undefined ? ` (it exited with status ${exited})` : ''}; its log ${log} says:\n${tail}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
};

/** Stops the agent (SIGTERM) and waits until it is gone. */
export const stopAgent = async (info: AgentInfo, timeoutMs = 10_000): Promise<void> => {
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
