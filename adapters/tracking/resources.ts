// What a unit's processes hold that a checkpoint must know about before anything is frozen:
// TCP/UDP sockets (from /proc/PID/fd socket inodes matched against the inode column of
// /proc/PID/net/{tcp,tcp6,udp,udp6}, read once per network namespace), file locks (/proc/locks,
// named by the holder's fd on the file), and unix sockets whose other end is held outside the
// unit (peers from `ss`, as the dependency finder reads them). domain/preflight.ts judges it.
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import type { FileLock, Holder, InetSocket, OutsidePeer, UnitResources } from '../../domain/preflight.js';
import { listPids, readStat, unixSocketPeers, unixSockets } from './procfs.js';

const TCP_STATES: Readonly<Record<string, string>> = {
  '01': 'established',
  '02': 'syn-sent',
  '03': 'syn-recv',
  '04': 'fin-wait-1',
  '05': 'fin-wait-2',
  '06': 'time-wait',
  '07': 'close',
  '08': 'close-wait',
  '09': 'last-ack',
  '0A': 'listen',
  '0B': 'closing',
};

/** "0100007F:1388" → "127.0.0.1:5000"; IPv6 addresses are four little-endian 32-bit words. */
export const parseProcNetAddress = (hex: string): string => {
  const [addr = '', port = '0'] = hex.split(':');
  const words = addr.match(/.{8}/g) ?? [];
  const bytes = words.flatMap((w) => [6, 4, 2, 0].map((i) => Number.parseInt(w.slice(i, i + 2), 16)));
  const p = Number.parseInt(port, 16);
  if (bytes.length === 4) return `${bytes.join('.')}:${p}`;
  const groups = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16));
  if (groups.slice(0, 5).every((g) => g === '0') && groups[5] === 'ffff') return `[::ffff:${bytes.slice(12).join('.')}]:${p}`;
  // The longest run of zero groups becomes "::".
  let best = [-1, 0];
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > best[1]! && j - i > 1) best = [i, j - i];
    i = j > i ? j : i + 1;
  }
  const text = best[0]! < 0 ? groups.join(':') : `${groups.slice(0, best[0]).join(':')}::${groups.slice(best[0]! + best[1]!).join(':')}`;
  return `[${text}]:${p}`;
};

type Row = Omit<InetSocket, 'pid' | 'comm'>;

/** inode → socket, from one /proc/…/net/{tcp,udp}{,6} table. */
export const parseProcNet = (text: string, protocol: 'tcp' | 'udp'): Map<string, Row> => {
  const rows = new Map<string, Row>();
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [local, remote, st, inode] = [f[1]!, f[2]!, f[3]!, f[9]!];
    if (inode === '0') continue; // TIME_WAIT and other sockets no process holds
    const state = protocol === 'tcp' ? (TCP_STATES[st.toUpperCase()] ?? `state ${st}`) : st === '01' ? 'connected' : 'unconnected';
    rows.set(inode, { protocol, state, local: parseProcNetAddress(local), remote: parseProcNetAddress(remote) });
  }
  return rows;
};

const readOr = (path: string, fallback: string): string => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
};

const netnsOf = (pid: number): string | undefined => {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
};

/** Every TCP/UDP socket of the network namespace `pid` is in, by inode. */
const inetTable = (pid: number): Map<string, Row> => {
  const all = new Map<string, Row>();
  for (const [file, protocol] of [
    ['tcp', 'tcp'],
    ['tcp6', 'tcp'],
    ['udp', 'udp'],
    ['udp6', 'udp'],
  ] as const) {
    for (const [inode, row] of parseProcNet(readOr(`/proc/${pid}/net/${file}`, ''), protocol)) all.set(inode, row);
  }
  return all;
};

export interface ProcLock {
  readonly pid: number;
  readonly kind: string;
  readonly mode: string;
  /** Device major and minor (hex in /proc/locks) and inode. */
  readonly major: number;
  readonly minor: number;
  readonly inode: number;
}

/** "1: POSIX  ADVISORY  WRITE 1234 fe:00:2146775 0 EOF" → a held lock; waiters ("->") are not holders. */
export const parseProcLocks = (text: string): ProcLock[] =>
  text.split('\n').flatMap((line) => {
    const m = /^\d+:\s+(\w+)\s+\w+\s+(\w+)\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/i.exec(line);
    if (!m || m[3] === '-1') return [];
    return [{ kind: m[1]!, mode: m[2]!, pid: Number(m[3]), major: Number.parseInt(m[4]!, 16), minor: Number.parseInt(m[5]!, 16), inode: Number(m[6]) }];
  });

/** Linux's dev_t encoding (glibc gnu_dev_major/minor). */
const major = (dev: number) => Number((BigInt(dev) >> 8n) & 0xfffn) | Number((BigInt(dev) >> 32n) & ~0xfffn);
const minor = (dev: number) => Number(BigInt(dev) & 0xffn) | Number((BigInt(dev) >> 12n) & ~0xffn);

/** The path of the locked file among the holder's fds, else "dev:inode". */
const lockedFile = (l: ProcLock): string => {
  try {
    for (const fd of readdirSync(`/proc/${l.pid}/fd`)) {
      try {
        const st = statSync(`/proc/${l.pid}/fd/${fd}`);
        if (st.ino === l.inode && major(st.dev) === l.major && minor(st.dev) === l.minor) return readlinkSync(`/proc/${l.pid}/fd/${fd}`);
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    // gone
  }
  return `${l.major.toString(16).padStart(2, '0')}:${l.minor.toString(16).padStart(2, '0')}:${l.inode}`;
};

/** Socket inodes among a process's fds (its `socket:[N]` links). */
const socketInodes = (pid: number): string[] => {
  try {
    return readdirSync(`/proc/${pid}/fd`).flatMap((fd) => {
      try {
        const link = readlinkSync(`/proc/${pid}/fd/${fd}`);
        return link.startsWith('socket:[') ? [link.slice(8, -1)] : [];
      } catch {
        return [];
      }
    });
  } catch {
    return [];
  }
};

const holder = (pid: number): Holder | undefined => {
  const s = readStat(pid);
  return s && { pid, comm: s.comm };
};

/** Runs `read`, or undefined when it fails (a process that exited meanwhile, a file gone). */
const tryRead = <T>(read: () => T): T | undefined => {
  try {
    return read();
  } catch {
    return undefined;
  }
};

/**
 * What `members` (the unit's processes, e.g. its cgroup's) hold: their TCP/UDP sockets, the file
 * locks they hold, and their unix sockets connected to a process outside them. Only fd links are
 * read per process (a fork-heavy unit has many); the socket tables once per network namespace,
 * and only when a member holds a socket. Processes that exit meanwhile are skipped.
 */
export const unitResources = (members: readonly number[]): UnitResources => {
  const memberSet = new Set(members);
  const inet: InetSocket[] = [];
  const unixOf = new Map<string, { member: Holder; netnsOf: number }>(); // member unix socket inode →
  // Reading /proc/net/tcp walks the kernel's whole TCP hash (~10 ms each here): only when needed.
  const tables = new Map<string, { inet?: Map<string, Row>; unix: Map<string, string> }>();
  for (const pid of members) {
    const sockets = socketInodes(pid);
    if (sockets.length === 0) continue;
    const h = holder(pid);
    const ns = netnsOf(pid);
    if (!h || ns === undefined) continue;
    let table = tables.get(ns);
    if (!table) {
      const unix = tryRead(() => unixSockets(pid));
      if (!unix) continue; // exited
      tables.set(ns, (table = { unix }));
    }
    for (const inode of sockets) {
      if (table.unix.has(inode)) {
        if (!unixOf.has(inode)) unixOf.set(inode, { member: h, netnsOf: pid });
        continue;
      }
      const row = (table.inet ??= inetTable(pid)).get(inode);
      if (row) inet.push({ ...h, ...row });
    }
  }

  const locks: FileLock[] = parseProcLocks(readOr('/proc/locks', ''))
    .filter((l) => memberSet.has(l.pid))
    .flatMap((l) => {
      const h = holder(l.pid);
      return h ? [{ ...h, kind: l.kind, mode: l.mode, file: lockedFile(l) }] : [];
    });

  return {
    inet,
    locks,
    outsidePeers: outsidePeers(
      memberSet,
      unixOf,
      [...tables.values()].map((t) => t.unix),
    ),
  };
};

/** The members' unix sockets whose peer socket no member holds, with the process that holds it. */
const outsidePeers = (members: ReadonlySet<number>, unixOf: ReadonlyMap<string, { member: Holder; netnsOf: number }>, unixTables: ReadonlyArray<ReadonlyMap<string, string>>): OutsidePeer[] => {
  if (unixOf.size === 0) return [];
  const selfNs = netnsOf(process.pid);
  const wanted = new Map<string, { member: Holder; inode: string }>(); // peer inode → the member's end
  const seenNs = new Set<string>();
  for (const { netnsOf: pid } of unixOf.values()) {
    const ns = netnsOf(pid);
    if (ns === undefined || seenNs.has(ns)) continue;
    seenNs.add(ns);
    const peers = ns === selfNs ? unixSocketPeers() : tryRead(() => unixSocketPeers({ netnsOf: pid })); // undefined: it exited
    for (const [inode, peer] of peers ?? []) {
      const mine = unixOf.get(inode);
      if (mine && !unixOf.has(peer)) wanted.set(peer, { member: mine.member, inode });
    }
  }
  if (wanted.size === 0) return [];
  const found = new Map<string, Holder>();
  for (const pid of listPids()) {
    if (members.has(pid)) continue;
    for (const inode of socketInodes(pid)) {
      if (wanted.has(inode) && !found.has(inode)) {
        const h = holder(pid);
        if (h) found.set(inode, h);
      }
    }
    if (found.size === wanted.size) break;
  }
  const names = new Map<string, string>();
  for (const m of unixTables) for (const [inode, path] of m) if (path) names.set(inode, path);
  return [...wanted].map(([peerInode, { member, inode }]) => {
    const peer = found.get(peerInode);
    const path = names.get(peerInode);
    return { ...member, inode, ...(peer && { peer }), ...(path && { path }) };
  });
};
