// The nodes of the log (`ckpt nodes`): what each node's agent recorded of itself — host, kernel and
// boot, the agent process and whether it stopped, its checkpointer as probed — and when the node
// was last heard of (its latest event, in any stream). A whole-log model kept as a snapshot: it is
// as small as the number of nodes.
import type { RecordedEvent } from '../domain/event-store.js';
import { emptyMap, getIn, mapOf, type PersistentMap, setIn, valuesOf } from '../domain/persistent-map.js';
import type { ReadModel } from './read-model.js';

export interface NodeView {
  readonly node: string;
  readonly hostname?: string;
  readonly kernel?: string;
  readonly bootId?: string;
  /** The agent process last started, and when. */
  readonly agent?: { readonly pid: number; readonly startTime: number; readonly version: string; readonly startedAt: string };
  /** Set when that agent stopped cleanly (a crash records nothing: see `ckpt nodes`). */
  readonly stopped?: { readonly reason: string; readonly at: string };
  readonly checkpointer?: { readonly name: string; readonly version: string | null; readonly usable: boolean; readonly problems: readonly string[]; readonly capabilities: readonly string[] };
  /** Time recorded of the latest event that names the node. */
  readonly lastSeen: string;
}

const nodeOf = (e: RecordedEvent): string | undefined => {
  const node = (e.data as { node?: unknown }).node;
  return typeof node === 'string' ? node : undefined;
};

export const evolveNode = (v: NodeView, e: RecordedEvent): NodeView => {
  const seen = { ...v, lastSeen: e.metadata.recordedAt };
  switch (e.type) {
    case 'NodeRegistered':
      return { ...seen, hostname: e.data.hostname, kernel: e.data.kernel, bootId: e.data.bootId };
    case 'NodeAgentStarted': {
      const { stopped: _, ...running } = seen;
      return { ...running, agent: { ...e.data.agent, version: e.data.version, startedAt: e.metadata.recordedAt } };
    }
    case 'NodeAgentStopped':
      return { ...seen, stopped: { reason: e.data.reason, at: e.metadata.recordedAt } };
    case 'CheckpointerProbed': {
      const capabilities = Object.entries(e.data.capabilities).flatMap(([name, value]) => (value === true ? [name] : typeof value === 'string' ? [`${name}=${value}`] : []));
      return { ...seen, checkpointer: { name: e.data.checkpointer, version: e.data.version, usable: e.data.usable, problems: e.data.problems, capabilities } };
    }
    default:
      return seen;
  }
};

export const nodesModel: ReadModel<PersistentMap<NodeView>> = {
  name: 'nodes',
  version: 1,
  initial: () => emptyMap(),
  evolve: (nodes, e) => {
    const node = nodeOf(e);
    return node === undefined ? nodes : setIn(nodes, node, evolveNode(getIn(nodes, node) ?? { node, lastSeen: e.metadata.recordedAt }, e));
  },
  encode: (nodes) => [...valuesOf(nodes)],
  decode: (encoded) => {
    if (!Array.isArray(encoded)) throw new Error('nodes: expected a list');
    return mapOf(
      encoded.map((v: NodeView) => {
        if (typeof v?.node !== 'string' || typeof v.lastSeen !== 'string') throw new Error('nodes: a node without its name or lastSeen');
        return [v.node, v] as const;
      }),
    );
  },
};

/** The nodes, by name. */
export const listNodes = (nodes: PersistentMap<NodeView>): NodeView[] => [...valuesOf(nodes)].sort((a, b) => a.node.localeCompare(b.node));
