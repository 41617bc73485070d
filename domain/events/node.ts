// Node registration and checkpointer capabilities (stream node-<id>).

import { literals, NonEmptyString, nullable, record } from '../codecs.js';
import { CheckpointScope, NodeId, ProcessRef } from '../identity.js';
import * as t from '../io-ts.js';
import { defineEvent } from './define.js';

/** What a checkpointer declares it can do, as probed on this node (not as advertised). */
export const Capabilities = record(
  {
    scopes: t.array(CheckpointScope),
    leaveRunning: t.boolean,
    incremental: t.boolean,
    lazyPages: t.boolean,
    pidNamespace: t.boolean,
    freezeCgroup: t.boolean,
  },
  {
    // Functional probes (a real dump and restore of a process holding each); absent in probes
    // recorded before they existed: unknown, not refused.
    inetSockets: t.boolean,
    tcpEstablished: t.boolean,
    networkLock: nullable(literals('nftables', 'iptables')),
    fileLocks: t.boolean,
  },
);
export type Capabilities = t.TypeOf<typeof Capabilities>;

export const NodeRegistered = defineEvent(
  'NodeRegistered',
  'observation',
  record({ node: NodeId, hostname: t.string, kernel: t.string, bootId: t.string, arch: t.string }),
  'A node joined: its host name, kernel release and boot id (a new boot id means PIDs restarted).',
);

export const NodeAgentStarted = defineEvent('NodeAgentStarted', 'observation', record({ node: NodeId, agent: ProcessRef, version: t.string }), 'A node agent process started on the node.');

export const NodeAgentStopped = defineEvent(
  'NodeAgentStopped',
  'observation',
  record({ node: NodeId, agent: ProcessRef, reason: t.string }),
  'A node agent stopped cleanly (a crash shows as a deadline instead).',
);

export const CheckpointerProbed = defineEvent(
  'CheckpointerProbed',
  'observation',
  record({
    node: NodeId,
    checkpointer: NonEmptyString,
    version: nullable(t.string),
    usable: t.boolean,
    problems: t.array(t.string),
    capabilities: Capabilities,
    kernel: t.string,
    cgroups: record({ v1: t.array(t.string), v2: t.array(t.string) }),
    softDirty: t.boolean,
  }),
  'The agent probed a checkpointer (version, self-check, kernel, cgroups, soft-dirty); only what works is used.',
);

export const nodeEvents = [NodeRegistered, NodeAgentStarted, NodeAgentStopped, CheckpointerProbed] as const;
