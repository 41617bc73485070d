import { readFileSync } from 'node:fs';
import { readJobs } from '../../../projections/jobs.js';
import { listNodes, nodesModel, type NodeView } from '../../../projections/nodes.js';
import { readModel, type ReadOptions } from '../../../projections/read-model.js';
import type { EventStore } from '../../../domain/event-store.js';
import { valuesOf } from '../../../domain/persistent-map.js';
import { readStat } from '../../tracking/procfs.js';
import { flag } from '../args.js';
import { EXIT, type Command } from '../command.js';
import { table, writeOut } from '../output.js';
import { openStore } from '../store.js';
import { foldProgress, VERBOSE, verboseNotes } from '../verbose.js';

export const thisBoot = (): string | undefined => {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return undefined;
  }
};

/**
 * A node's state as far as this machine can tell: its agent's last record, checked against the
 * kernel when the node is this boot of this machine (the process with that pid and start time).
 * Of another machine's node only what its agent last recorded is known (no liveness lease yet).
 */
export const nodeState = (v: NodeView, boot: string | undefined): string => {
  if (!v.agent) return 'no agent yet';
  if (v.stopped) return 'stopped';
  if (boot === undefined || v.bootId !== boot) return 'started (elsewhere: not checked)';
  return readStat(v.agent.pid)?.startTime === v.agent.startTime ? 'running' : 'dead (its agent ended without stopping)';
};

/** Every node as `--json` lists it (the dashboard's node page too), with what the read did. */
export const nodeRows = async (store: EventStore, options: ReadOptions = {}) => {
  const read = await readModel(store, nodesModel, '', options);
  const running = new Map<string, string[]>();
  for (const l of valuesOf((await readJobs(store)).state.active)) {
    for (const u of Object.values(l.job.units)) {
      if (u.phase === 'launched' || u.phase === 'running') running.set(u.node, [...(running.get(u.node) ?? []), `${l.job.job}/${u.unit}`]);
    }
  }
  const boot = thisBoot();
  const nodes = listNodes(read.state).map((v) => ({
    node: v.node,
    state: nodeState(v, boot),
    stopped: v.stopped ?? null,
    hostname: v.hostname ?? null,
    kernel: v.kernel ?? null,
    bootId: v.bootId ?? null,
    agent: v.agent ?? null,
    lastSeen: v.lastSeen,
    checkpointer: v.checkpointer ?? null,
    units: running.get(v.node) ?? [],
  }));
  return { read, nodes };
};

export const nodesCommand: Command = {
  usage: '[--json] [--verbose]',
  description: [
    'Every node in the event log, by name: its state, the agent process and version, when it was',
    'last heard of (its latest event in any stream), its checkpointer as the agent probed it, and',
    'the units running on it. State: running (this machine, its agent process alive), stopped (the',
    'agent stopped cleanly: why), dead (this machine, the agent process gone without stopping: a',
    'crash or a kill), started (another machine: what its agent last recorded; not checked from',
    'here), no agent yet. Folded from the log with a snapshot, like jobs.',
  ].join('\n'),
  options: [{ name: 'json', description: 'a JSON array for machines' }, VERBOSE],
  examples: ['ckpt nodes', 'ckpt nodes --json | jq ".[] | select(.state != \\"running\\") | .node"'],
  async run(args) {
    const store = openStore(args);
    try {
      const json = flag(args, 'json');
      const fold = foldProgress('nodes', json);
      const { read, nodes } = await nodeRows(store, fold);
      fold.done();
      verboseNotes(args, 'nodes', read);
      if (json) {
        await writeOut(JSON.stringify(nodes, null, 2) + '\n');
        return EXIT.ok;
      }
      if (nodes.length === 0) {
        console.log('no nodes yet (a node agent records its node when it starts: ckpt agent start)');
        return EXIT.ok;
      }
      const criu = (c: NodeView['checkpointer'] | null) => (!c ? '-' : `${c.name} ${c.version ?? '?'}${c.usable ? '' : ' (unusable)'}`);
      const rows = nodes.map((n) => [n.node, n.stopped ? `stopped (${n.stopped.reason})` : n.state, n.agent ? `pid ${n.agent.pid}, ${n.agent.version}` : '-', n.lastSeen, criu(n.checkpointer), n.units.length > 0 ? n.units.join(',') : '-']);
      await writeOut(table(['NODE', 'STATE', 'AGENT', 'LAST SEEN', 'CHECKPOINTER', 'UNITS RUNNING'], rows));
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
