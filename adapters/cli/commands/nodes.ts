import { readFileSync } from 'node:fs';
import type { EventStore, Lease } from '../../../domain/event-store.js';
import { valuesOf } from '../../../domain/persistent-map.js';
import { readJobs } from '../../../projections/jobs.js';
import { listNodes, type NodeView, nodesModel } from '../../../projections/nodes.js';
import { type ReadOptions, readModel } from '../../../projections/read-model.js';
import { isAlive } from '../../agent/daemon.js';
import { flag } from '../args.js';
import { type Command, EXIT } from '../command.js';
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

/** The lease of the agent the log last recorded starting on the node (a lease of an earlier agent says nothing of this one). */
export const leaseOf = (v: NodeView, leases: readonly Lease[]): Lease | undefined =>
  leases.find((l) => l.node === v.node && v.agent !== undefined && l.holder.pid === v.agent.pid && l.holder.startTime === v.agent.startTime);

/** Whole seconds from a lease's last renewal to when the store judged it. */
const silentFor = (lease: Lease): number => Math.max(0, Math.round((Date.parse(lease.asOf) - Date.parse(lease.renewedAt)) / 1000));

/**
 * A node's state: what its agent last recorded, its liveness lease (judged by the store's clock),
 * and — when the node is this boot of this machine — the kernel: whether the process with that pid
 * and start time exists, the more precise answer here. Without a lease (a KurrentDB store, an agent
 * of an older ckpt) another machine's agent cannot be checked from here.
 */
export const nodeState = (v: NodeView, boot: string | undefined, lease?: Lease): string => {
  if (!v.agent) return 'no agent yet';
  if (v.stopped) return 'stopped';
  const here = boot !== undefined && v.bootId === boot;
  const running = here ? isAlive(v.agent) : undefined; // not a zombie: a killed agent waits for PID 1 to reap it
  if (running === false) return 'dead (its agent ended without stopping)';
  if (lease?.expired) {
    return running
      ? `lost (no renewal for ${silentFor(lease)} s: its agent runs here but cannot renew; see its log)`
      : `lost (no renewal for ${silentFor(lease)} s: host down, cut off, or its agent dead)`;
  }
  if (lease || running) return 'alive';
  return 'started (elsewhere: not checked)';
};

/** The store's leases; none when it keeps none, or when this role may not read them (said on stderr: states are then judged without them). */
const readLeases = async (store: EventStore): Promise<readonly Lease[]> => {
  try {
    return (await store.leases?.list()) ?? [];
  } catch (error) {
    process.stderr.write(`ckpt nodes: the liveness leases of ${store.location} cannot be read (${(error as Error).message}); states are judged without them\n`);
    return [];
  }
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
  const leases = await readLeases(store);
  const nodes = listNodes(read.state).map((v) => {
    const lease = leaseOf(v, leases);
    return {
      node: v.node,
      state: nodeState(v, boot, lease),
      stopped: v.stopped ?? null,
      hostname: v.hostname ?? null,
      kernel: v.kernel ?? null,
      bootId: v.bootId ?? null,
      agent: v.agent ?? null,
      lastSeen: v.lastSeen,
      checkpointer: v.checkpointer ?? null,
      units: running.get(v.node) ?? [],
      lease: lease ? { renewedAt: lease.renewedAt, expiresAt: lease.expiresAt, expired: lease.expired, holder: lease.holder } : null,
    };
  });
  return { read, nodes };
};

export const nodesCommand: Command = {
  usage: '[--json] [--verbose]',
  description: [
    'Every node in the event log, by name: its state, the agent process and version, when it was',
    'last heard of (its latest event in any stream), its liveness lease (last renewed, expires), its',
    "checkpointer as the agent probed it, and the units running on it. Each agent renews its node's",
    "lease beside the log every few seconds (ckpt agent --lease-ttl), judged by the store's clock",
    "(PostgreSQL's, so hosts' clocks need not agree). State: alive (lease valid, or on this machine",
    'its agent process runs), lost (the lease expired: no renewal for N s — host down, cut off, or its',
    'agent dead), dead (this machine: the agent process gone without stopping, a crash or a kill; the',
    "kernel's answer beats the lease's here), stopped (the agent stopped cleanly: why), started",
    '(another machine, no lease to judge by, e.g. a KurrentDB store: what its agent last recorded), no',
    'agent yet. Folded from the log with a snapshot, like jobs; leases are read from beside the log.',
  ].join('\n'),
  options: [{ name: 'json', description: 'a JSON array for machines; each node has lease: {renewedAt, expiresAt, expired, holder: {pid, startTime, bootId, hostname}} or null' }, VERBOSE],
  examples: ['ckpt nodes', 'ckpt nodes --json | jq ".[] | select(.state != \\"alive\\") | .node"'],
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
      const rows = nodes.map((n) => [
        n.node,
        n.stopped ? `stopped (${n.stopped.reason})` : n.state,
        n.agent ? `pid ${n.agent.pid}, ${n.agent.version}` : '-',
        n.lastSeen,
        n.lease?.renewedAt ?? '-',
        n.lease?.expiresAt ?? '-',
        criu(n.checkpointer),
        n.units.length > 0 ? n.units.join(',') : '-',
      ]);
      await writeOut(table(['NODE', 'STATE', 'AGENT', 'LAST SEEN', 'LAST RENEWED', 'LEASE EXPIRES', 'CHECKPOINTER', 'UNITS RUNNING'], rows));
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
