// Before a unit is frozen: can it be checkpointed with the options its plan fixed, on this node?
// The agent reads what the unit's processes hold (adapters/tracking/resources.ts); this pure
// judge turns what CRIU would refuse, or what the node's checkpointer lacks, into failures that
// name each connection, lock or peer and say what to do — instead of a frozen job and a CRIU log.
import type { CheckpointOptions } from './events/checkpoint.js';
import type { Capabilities } from './events/node.js';
import type { Failure } from './failure.js';

/** A process of the unit, as the failures name it: "pid 1234 (python3)". */
export interface Holder {
  readonly pid: number;
  readonly comm: string;
}

export interface InetSocket extends Holder {
  readonly protocol: 'tcp' | 'udp';
  /** TCP: 'listen', 'established' (or another state of a live connection), 'close' (not connected). UDP: 'unconnected' or 'connected'. */
  readonly state: string;
  /** "127.0.0.1:5000", "[::1]:5000". */
  readonly local: string;
  readonly remote: string;
}

export interface FileLock extends Holder {
  /** POSIX, FLOCK, OFDLCK (from /proc/locks). */
  readonly kind: string;
  readonly mode: string;
  /** The locked file's path when one of the holder's fds shows it, else "dev:inode". */
  readonly file: string;
}

/** A unix socket of the unit whose other end is held by a process outside the unit. */
export interface OutsidePeer extends Holder {
  readonly inode: string;
  /** The process holding the other end; undefined when no process could be found holding it. */
  readonly peer?: Holder;
  /** The path the peer's socket is bound to, if any ("@name" when abstract). */
  readonly path?: string;
}

export interface UnitResources {
  readonly inet: readonly InetSocket[];
  readonly locks: readonly FileLock[];
  readonly outsidePeers: readonly OutsidePeer[];
}

/** The node's checkpointer as its probe describes it. */
export interface NodeCheckpointerFacts {
  readonly capabilities: Capabilities;
  readonly problems: readonly string[];
}

export const TCP_ESTABLISHED_HINT = 'ckpt checkpoint --tcp-established (or ckpt run --tcp-established)';
export const FILE_LOCKS_HINT = 'ckpt checkpoint --file-locks (or ckpt run --file-locks)';
export const NEWER_CRIU_HINT = 'install CRIU ≥ 4.2: bash scripts/install-criu.sh';

const who = (h: Holder) => `pid ${h.pid} (${h.comm})`;

/** Live TCP connections: every TCP state but listening and closed (CRIU dumps those without repair). */
export const isConnection = (s: InetSocket): boolean => s.protocol === 'tcp' && s.state !== 'listen' && s.state !== 'close';

const describeConnection = (s: InetSocket) => `${who(s)} ${s.local} → ${s.remote}${s.state === 'established' ? '' : ` (${s.state})`}`;
const describeSocket = (s: InetSocket) => `${who(s)} ${s.protocol.toUpperCase()} ${s.local}${s.state === 'listen' ? ' (listening)' : s.remote.endsWith(':0') ? '' : ` → ${s.remote}`}`;
const describeLock = (l: FileLock) => `${who(l)} holds a ${l.kind} ${l.mode} lock on ${l.file}`;
const describePeer = (p: OutsidePeer) =>
  `${who(p)} is connected over a unix socket (inode ${p.inode}) to ${p.peer ? who(p.peer) : 'a process that could not be found'}${p.path ? ` at ${p.path}` : ''}, which is not part of the job`;

const list = (items: readonly string[], max = 8) => items.slice(0, max).join('; ') + (items.length > max ? `; and ${items.length - max} more` : '');

/** The probe's own words about inet sockets, when it gave any. */
const socketProblem = (node: NodeCheckpointerFacts) => node.problems.find((p) => /socket|inet|tcp|udp/i.test(p));

/**
 * What stops this unit from being checkpointed with `options` on this node: empty when nothing
 * does. A capability the probe did not report (recorded before it existed) counts as present.
 */
export const preflight = (held: UnitResources, options: CheckpointOptions, node: NodeCheckpointerFacts | undefined): Failure[] => {
  const failures: Failure[] = [];
  const c = node?.capabilities;
  if (held.inet.length > 0 && c?.inetSockets === false) {
    const reason = socketProblem(node!) ?? 'its probe found that it cannot dump a process holding a TCP or UDP socket on this kernel';
    failures.push({
      class: 'version',
      message: `the checkpointer on this node cannot checkpoint TCP/UDP sockets (${reason}), and the job holds ${list(held.inet.map(describeSocket))}`,
      hint: NEWER_CRIU_HINT,
    });
  }
  const connections = held.inet.filter(isConnection);
  if (connections.length > 0 && !options.tcpEstablished) {
    failures.push({ class: 'connection', message: `established TCP connection${connections.length > 1 ? 's' : ''}: ${list(connections.map(describeConnection))}`, hint: TCP_ESTABLISHED_HINT });
  } else if (connections.length > 0 && (c?.tcpEstablished === false || c?.networkLock === null)) {
    const lacking = c.tcpEstablished === false ? 'cannot checkpoint established TCP connections' : 'has no way to lock the network during the dump (neither nftables nor iptables works)';
    failures.push({ class: 'version', message: `the checkpointer on this node ${lacking}, and the job holds ${list(connections.map(describeConnection))}`, hint: NEWER_CRIU_HINT });
  }
  if (held.locks.length > 0 && !options.fileLocks) {
    failures.push({ class: 'file-lock', message: list(held.locks.map(describeLock)), hint: FILE_LOCKS_HINT });
  } else if (held.locks.length > 0 && c?.fileLocks === false) {
    failures.push({ class: 'version', message: `the checkpointer on this node cannot checkpoint file locks, and ${list(held.locks.map(describeLock))}`, hint: NEWER_CRIU_HINT });
  }
  if (held.outsidePeers.length > 0) {
    failures.push({
      class: 'connection',
      message: list(held.outsidePeers.map(describePeer)),
      hint: 'close the connection before the checkpoint, or start the peer inside the job (a checkpoint cannot take a process outside it)',
    });
  }
  return failures;
};
