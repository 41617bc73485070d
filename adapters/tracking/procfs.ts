// Reading processes from /proc, and finding processes that depend on a job's members.
//
// A process's identity is (node, pid, startTime): startTime is field 22 of /proc/PID/stat, in
// clock ticks since boot (see clockTicksPerSecond/bootTimeMs to turn it into a date). A bare pid
// is never an identity: pids are reused.
//
// Every reader is synchronous and returns `undefined` when the process is gone (ENOENT/ESRCH, and
// for readExe also a kernel thread or a zombie, which have no exe). Any other error (EACCES when
// not root, ...) is thrown with the path in the message.
//
// Dependents (findDependents) are processes that are not members of the job but share with a
// member: a pipe (same pipe inode), a unix socket (same socket inode, or the two ends of one
// connection — peers come from `ss`, i.e. NETLINK_SOCK_DIAG with UDIAG_SHOW_PEER), a System V
// shared memory segment (same shmid, from /proc/PID/maps), a POSIX shm file (/dev/shm/…) or a
// memfd, mapped or held open (same device and inode, from maps or a stat of the fd), or a named
// FIFO (same device and inode; looked for only under the path a member opened it by).
// Eventfds, inotify, terminals and TCP/UDP connections are not dependencies here.
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, statSync } from 'node:fs';

export interface ProcStat {
  readonly pid: number;
  /** Command name (/proc/PID/comm, at most 15 bytes for user processes); may contain spaces and ')'. */
  readonly comm: string;
  /** One letter: R S D Z T t X I ... */
  readonly state: string;
  readonly ppid: number;
  readonly pgid: number;
  readonly sid: number;
  /** Clock ticks since boot when the process started (field 22). Identity together with pid. */
  readonly startTime: number;
  /** Number of threads (field 20). */
  readonly threads: number;
  /** Bytes of address space mapped (field 23, vsize); absent where a ProcStat was not read. */
  readonly vsize?: number;
}

export interface ProcCgroups {
  /** cgroup v1: controller (e.g. "freezer", "cpu", "name=systemd") → path. */
  readonly v1: Record<string, string>;
  /** cgroup v2 (unified) path, from the `0::/path` line, when present. */
  readonly unified?: string;
}

export interface OpenResources {
  /** Inodes of anonymous pipes held open (`pipe:[INODE]`), deduplicated. */
  readonly pipes: string[];
  /** Inodes of unix-domain sockets held open, deduplicated. */
  readonly unixSockets: string[];
  /** shmids (the inode column of /proc/PID/maps) of attached System V shm segments, deduplicated. */
  readonly sysvShm: string[];
  readonly other: {
    /** Inodes of other sockets (TCP, UDP, netlink, ...). */
    readonly sockets: string[];
  };
}

export type DependencyKind = 'pipe' | 'unix-socket' | 'sysv-shm' | 'posix-shm' | 'memfd' | 'fifo';

export interface Dependent {
  readonly pid: number;
  readonly startTime: number;
  /** The member it shares the resource with (the first one found). */
  readonly member: number;
  readonly via: DependencyKind;
  /** The resource in the dependent: pipe inode, its unix socket inode, the shmid, or the inode of the shm file, memfd or FIFO. */
  readonly inode: string;
  /** For 'unix-socket' only: the member's socket inode (the peer of `inode`, or `inode` itself). */
  readonly memberInode?: string;
  /** For 'posix-shm' and 'fifo': the path as the member sees it; for 'memfd': "memfd:NAME". */
  readonly name?: string;
}

export interface FindDependentsOptions {
  /** Pids never reported (e.g. the ckpt CLI that launched the job and reads its stdout). */
  readonly ignore?: ReadonlySet<number>;
  /** How a member's resources are read (default readMemberResources; the agent keeps quiet members' a while). */
  readonly readMember?: (pid: number) => MemberResources | undefined;
  /**
   * Called for each candidate whose fds or maps cannot be read (EACCES/EPERM: even root may be
   * denied, e.g. by an LSM, or another user namespace's init). Such a candidate is skipped; it
   * may be an unseen dependent. Members that cannot be read make findDependents throw.
   */
  readonly onUnreadable?: (pid: number, error: Error) => void;
}

// ---------------------------------------------------------------------------------------------
// Errors

const isGone = (err: unknown): boolean => {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ESRCH';
};

const fail = (path: string, err: unknown): never => {
  const e = err as NodeJS.ErrnoException;
  const wrapped = new Error(`procfs: ${path}: ${e?.message ?? String(err)}`, { cause: err });
  (wrapped as NodeJS.ErrnoException).code = e?.code;
  throw wrapped;
};

/** Runs `read`; undefined when the process is gone, other errors rethrown with the path. */
const orGone = <T>(path: string, read: () => T): T | undefined => {
  try {
    return read();
  } catch (err) {
    if (isGone(err)) return undefined;
    return fail(path, err);
  }
};

// ---------------------------------------------------------------------------------------------
// /proc/PID/stat

// One buffer reused by every readStat: a stat line is a few hundred bytes (comm is at most 64).
const statBuffer = Buffer.allocUnsafe(4096);

const SPACE = 0x20;
const CLOSE_PAREN = 0x29;
const OPEN_PAREN = 0x28;
const SLASH = 0x2f;

/** Parses /proc/PID/stat bytes [0, length) of `buf`; undefined if malformed. */
export const parseStat = (buf: Uint8Array, length: number): ProcStat | undefined => {
  let close = length - 1;
  while (close >= 0 && buf[close] !== CLOSE_PAREN) close--;
  let open = 0;
  while (open < close && buf[open] !== OPEN_PAREN) open++;
  if (close <= open) return undefined;
  let pid = 0;
  for (let i = 0; i < open; i++) {
    const c = buf[i]!;
    if (c >= 0x30 && c <= 0x39) pid = pid * 10 + (c - 0x30);
  }
  const comm = Buffer.from(buf.buffer, buf.byteOffset + open + 1, close - open - 1).toString('utf8');
  // Fields after ") ": 3 state, 4 ppid, 5 pgrp, 6 session, ..., 20 num_threads, 21 itrealvalue,
  // 22 starttime. Numbers here are non-negative except tty_nr/tpgid (7, 8), which we skip.
  let i = close + 2;
  if (i >= length) return undefined;
  const state = String.fromCharCode(buf[i]!);
  i += 2;
  let field = 4;
  let ppid = 0;
  let pgid = 0;
  let sid = 0;
  let threads = 0;
  let startTime = 0;
  let value = 0;
  for (; i < length; i++) {
    const c = buf[i]!;
    if (c === SPACE || c === 0x0a) {
      switch (field) {
        case 4:
          ppid = value;
          break;
        case 5:
          pgid = value;
          break;
        case 6:
          sid = value;
          break;
        case 20:
          threads = value;
          break;
        case 22:
          startTime = value;
          break;
        case 23:
          return { pid, comm, state, ppid, pgid, sid, startTime, threads, vsize: value };
      }
      field++;
      value = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      value = value * 10 + (c - 0x30);
    }
  }
  if (field === 23) return { pid, comm, state, ppid, pgid, sid, startTime, threads, vsize: value };
  return field === 22 ? { pid, comm, state, ppid, pgid, sid, startTime: value, threads } : undefined;
};

/** /proc/PID/stat, or undefined when the process is gone. Fast: one open/read/close, no allocation but the result. */
export const readStat = (pid: number): ProcStat | undefined => {
  const path = `/proc/${pid}/stat`;
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    if (isGone(err)) return undefined;
    return fail(path, err);
  }
  let n: number;
  try {
    n = readSync(fd, statBuffer, 0, statBuffer.length, 0);
  } catch (err) {
    // ESRCH: the process exited between open and read.
    if (isGone(err)) return undefined;
    return fail(path, err);
  } finally {
    closeSync(fd);
  }
  const stat = parseStat(statBuffer, n);
  if (!stat) throw new Error(`procfs: ${path}: cannot parse ${JSON.stringify(statBuffer.toString('utf8', 0, n))}`);
  return stat;
};

/** The soft limit on open files of this process (/proc/self/limits); undefined if unreadable. */
const openFilesLimit = (): number | undefined => {
  const limit = /^Max open files\s+(\d+)/m.exec(orGone('/proc/self/limits', () => readFileSync('/proc/self/limits', 'utf8')) ?? '')?.[1];
  return limit === undefined ? undefined : Number(limit);
};

/**
 * /proc/PID/stat files held open, for processes read again and again (an agent's quiet members):
 * a re-read is one pread where readStat opens, reads and closes; and a held file stays bound to
 * its process: once that is gone (reaped) it reads as gone, whoever has the PID since. At most
 * `max` are held (default a quarter of the open-files limit); beyond that, readStat.
 */
export class HeldStatFiles {
  readonly #fds = new Map<number, number>();
  readonly #max: number;

  constructor(max = Math.floor((openFilesLimit() ?? 1024) / 4)) {
    this.#max = max;
  }

  get size(): number {
    return this.#fds.size;
  }

  /** readStat(pid), through its held file if one is; `hold`: open one to hold if there is room. */
  read(pid: number, hold: boolean): ProcStat | undefined {
    let fd = this.#fds.get(pid);
    if (fd === undefined && (!hold || this.#fds.size >= this.#max)) return readStat(pid);
    const path = `/proc/${pid}/stat`;
    if (fd === undefined) {
      try {
        fd = openSync(path, 'r');
      } catch (err) {
        if (isGone(err)) return undefined;
        return fail(path, err);
      }
      this.#fds.set(pid, fd);
    }
    let n: number;
    try {
      n = readSync(fd, statBuffer, 0, statBuffer.length, 0);
    } catch (err) {
      if (isGone(err)) return undefined; // ESRCH: its process is gone; held until let go
      this.release(pid);
      return fail(path, err);
    }
    const stat = parseStat(statBuffer, n);
    if (!stat) throw new Error(`procfs: ${path}: cannot parse ${JSON.stringify(statBuffer.toString('utf8', 0, n))}`);
    return stat;
  }

  /** Closes the file held for `pid`, if any. */
  release(pid: number): void {
    const fd = this.#fds.get(pid);
    if (fd === undefined) return;
    this.#fds.delete(pid);
    closeSync(fd);
  }

  releaseAll(): void {
    for (const pid of [...this.#fds.keys()]) this.release(pid);
  }
}

// ---------------------------------------------------------------------------------------------
// cgroups, cmdline, exe

/** Parses the text of /proc/PID/cgroup. */
export const parseCgroups = (text: string): ProcCgroups => {
  const v1: Record<string, string> = {};
  let unified: string | undefined;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const a = line.indexOf(':');
    const b = a < 0 ? -1 : line.indexOf(':', a + 1);
    if (b < 0) continue;
    const id = line.slice(0, a);
    const controllers = line.slice(a + 1, b);
    const path = line.slice(b + 1); // may itself contain ':'
    if (id === '0' && controllers === '') unified = path;
    else for (const c of controllers.split(',')) if (c !== '') v1[c] = path;
  }
  return unified === undefined ? { v1 } : { v1, unified };
};

export const readCgroups = (pid: number): ProcCgroups | undefined => {
  const path = `/proc/${pid}/cgroup`;
  const text = orGone(path, () => readFileSync(path, 'utf8'));
  return text === undefined ? undefined : parseCgroups(text);
};

/** The hierarchy primaryCgroup reads: 'freezer', else 'unified' (cgroup2), else 'name=systemd', else any v1 one (undefined: none). */
export const primaryHierarchy = (parsed: ProcCgroups): string | undefined =>
  parsed.v1.freezer !== undefined ? 'freezer' : parsed.unified !== undefined ? 'unified' : parsed.v1['name=systemd'] !== undefined ? 'name=systemd' : Object.keys(parsed.v1)[0];

/** One display string: the path in primaryHierarchy (the freezer path, else the unified path, ...), else "/". */
export const primaryCgroup = (parsed: ProcCgroups): string => {
  const hierarchy = primaryHierarchy(parsed);
  return hierarchy === undefined ? '/' : hierarchy === 'unified' ? parsed.unified! : parsed.v1[hierarchy]!;
};

/** argv; [] for kernel threads and zombies. */
export const readCmdline = (pid: number): string[] | undefined => {
  const path = `/proc/${pid}/cmdline`;
  const text = orGone(path, () => readFileSync(path, 'utf8'));
  if (text === undefined) return undefined;
  if (text === '') return [];
  const args = text.split('\0');
  if (args[args.length - 1] === '') args.pop();
  return args;
};

/** A process's credentials (/proc/PID/status): uids and gids as real, effective, saved, filesystem. */
export interface ProcCredentials {
  readonly uids: readonly [number, number, number, number];
  readonly gids: readonly [number, number, number, number];
  /** Supplementary groups, as the kernel lists them (sorted). */
  readonly groups: readonly number[];
}

/** The Uid:, Gid: and Groups: lines of a /proc/PID/status text; undefined if one is missing or malformed. */
export const parseCredentials = (status: string): ProcCredentials | undefined => {
  const line = (name: string): number[] | undefined => {
    const l = status.split('\n').find((x) => x.startsWith(`${name}:`));
    if (l === undefined) return undefined;
    const words = l
      .slice(name.length + 1)
      .trim()
      .split(/\s+/)
      .filter((w) => w !== '');
    return words.every((w) => /^\d+$/.test(w)) ? words.map(Number) : undefined;
  };
  const uids = line('Uid');
  const gids = line('Gid');
  const groups = line('Groups');
  if (uids?.length !== 4 || gids?.length !== 4 || groups === undefined) return undefined;
  return { uids: uids as [number, number, number, number], gids: gids as [number, number, number, number], groups };
};

/** undefined when the process is gone. */
export const readCredentials = (pid: number): ProcCredentials | undefined => {
  const path = `/proc/${pid}/status`;
  const text = orGone(path, () => readFileSync(path, 'utf8'));
  return text === undefined ? undefined : parseCredentials(text);
};

/** User names by uid from /etc/passwd (uids without an entry are left out). */
export const userNames = (passwd = '/etc/passwd'): Map<number, string> => {
  const names = new Map<number, string>();
  let text = '';
  try {
    text = readFileSync(passwd, 'utf8');
  } catch {
    return names;
  }
  for (const line of text.split('\n')) {
    const [name, , uid] = line.split(':');
    if (name && uid !== undefined && /^\d+$/.test(uid) && !names.has(Number(uid))) names.set(Number(uid), name);
  }
  return names;
};

/** Executable path (may end in " (deleted)"); undefined when gone, a kernel thread or a zombie. */
export const readExe = (pid: number): string | undefined => {
  const path = `/proc/${pid}/exe`;
  return orGone(path, () => readlinkSync(path));
};

// ---------------------------------------------------------------------------------------------
// Listing and scanning

const isDigits = (s: string): boolean => {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
};

/** Pids of all processes (numeric entries of /proc; threads are not listed there). */
export const listPids = (): number[] => {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) if (isDigits(name)) pids.push(Number(name));
  return pids;
};

/** readStat of every process; processes that exit mid-scan are skipped. */
export const scanProcesses = (): ProcStat[] => {
  const out: ProcStat[] = [];
  for (const pid of listPids()) {
    const s = readStat(pid);
    if (s) out.push(s);
  }
  return out;
};

/** Kernel threads: kthreadd (pid 2) and its children. They hold no fds or mappings. */
export const isKernelThread = (s: ProcStat): boolean => s.pid === 2 || s.ppid === 2;

/**
 * Every process of `table` descending (by ppid) from one of `roots`, in breadth-first order.
 * The roots themselves are excluded unless `includeRoots`.
 */
export const descendantsOf = (roots: readonly number[], table: readonly ProcStat[], options: { includeRoots?: boolean } = {}): ProcStat[] => {
  const children = new Map<number, ProcStat[]>();
  const byPid = new Map<number, ProcStat>();
  for (const p of table) {
    byPid.set(p.pid, p);
    if (p.pid === p.ppid) continue;
    const list = children.get(p.ppid);
    if (list) list.push(p);
    else children.set(p.ppid, [p]);
  }
  const seen = new Set<number>(roots);
  const out: ProcStat[] = [];
  if (options.includeRoots)
    for (const r of roots) {
      const p = byPid.get(r);
      if (p) out.push(p);
    }
  const queue = [...roots];
  for (let i = 0; i < queue.length; i++) {
    for (const child of children.get(queue[i]!) ?? []) {
      if (seen.has(child.pid)) continue;
      seen.add(child.pid);
      out.push(child);
      queue.push(child.pid);
    }
  }
  return out;
};

// ---------------------------------------------------------------------------------------------
// Clock

let ticks: number | undefined;
/** sysconf(_SC_CLK_TCK) via `getconf CLK_TCK`, cached; 100 if getconf is unavailable. */
export const clockTicksPerSecond = (): number => {
  if (ticks === undefined) {
    try {
      const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
      ticks = Number.isInteger(n) && n > 0 ? n : 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
};

let boot: number | undefined;
/** Boot time in ms since the epoch (btime of /proc/stat, whole seconds), cached. */
export const bootTimeMs = (): number => {
  if (boot === undefined) {
    const text = readFileSync('/proc/stat', 'utf8');
    const m = /^btime (\d+)$/m.exec(text);
    if (!m) throw new Error('procfs: /proc/stat: no btime line');
    boot = Number(m[1]) * 1000;
  }
  return boot;
};

/** Wall-clock start of a process (ms since the epoch) from its startTime; accurate to ~1 s. */
export const startTimeMs = (startTime: number): number => bootTimeMs() + (startTime * 1000) / clockTicksPerSecond();

// ---------------------------------------------------------------------------------------------
// Open resources

/**
 * Every unix socket in the network namespace of `pid` (default: ours), from net/unix: inode →
 * bound path ("" when unbound; abstract names start with "@").
 */
export const unixSockets = (pid?: number): Map<string, string> => {
  const path = pid === undefined ? '/proc/net/unix' : `/proc/${pid}/net/unix`;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    return fail(path, err);
  }
  const sockets = new Map<string, string>();
  // "Num RefCount Protocol Flags Type St Inode Path": Inode is the 7th column, then the path
  // (which may contain spaces) to the end of the line.
  let start = text.indexOf('\n') + 1;
  while (start > 0 && start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    let col = 0;
    let i = start;
    while (i < end && col < 6) {
      while (i < end && text.charCodeAt(i) === SPACE) i++;
      while (i < end && text.charCodeAt(i) !== SPACE) i++;
      col++;
    }
    while (i < end && text.charCodeAt(i) === SPACE) i++;
    let j = i;
    while (j < end && text.charCodeAt(j) !== SPACE) j++;
    if (j > i) sockets.set(text.slice(i, j), j + 1 < end ? text.slice(j + 1, end) : '');
    start = end + 1;
  }
  return sockets;
};

interface FdLinks {
  readonly pipes: Set<string>;
  readonly sockets: Set<string>;
  /** fd number → link, for links that are paths (files, FIFOs, devices, "/memfd:…"). */
  readonly paths: Map<string, string>;
}

/** Pipe and socket inodes, and path links, among /proc/PID/fd links; undefined when gone. */
const readFdLinks = (pid: number): FdLinks | undefined => {
  const dir = `/proc/${pid}/fd`;
  const names = orGone(dir, () => readdirSync(dir));
  if (names === undefined) return undefined;
  const pipes = new Set<string>();
  const sockets = new Set<string>();
  const paths = new Map<string, string>();
  for (const name of names) {
    let link: string;
    try {
      link = readlinkSync(`${dir}/${name}`);
    } catch (err) {
      if (isGone(err)) continue; // fd closed meanwhile (or the process exited: caught by the caller's check)
      return fail(`${dir}/${name}`, err);
    }
    if (link.charCodeAt(0) === SLASH) {
      paths.set(name, link);
      continue;
    }
    // "pipe:[123]" / "socket:[123]"
    if (link.charCodeAt(link.length - 1) !== 0x5d) continue;
    if (link.startsWith('pipe:[')) pipes.add(link.slice(6, -1));
    else if (link.startsWith('socket:[')) sockets.add(link.slice(8, -1));
  }
  return { pipes, sockets, paths };
};

const SHM_DIR = '/dev/shm/';
const MEMFD = '/memfd:';
const DELETED = ' (deleted)';

/** A file shared by mapping or fd: its identity (major:minor:inode, decimal) and what to call it. */
interface SharedFile {
  readonly key: string;
  readonly inode: string;
  readonly via: 'posix-shm' | 'memfd' | 'fifo';
  /** The path (posix-shm, fifo) or "memfd:NAME". */
  readonly name: string;
}

const fileKey = (major: number, minor: number, inode: string) => `${major}:${minor}:${inode}`;

/** A /dev/shm file or memfd by the path a link or a maps line shows; undefined for anything else. */
const sharedMemoryOf = (path: string, key: string, inode: string): SharedFile | undefined => {
  const bare = path.endsWith(DELETED) ? path.slice(0, -DELETED.length) : path;
  if (bare.startsWith(SHM_DIR)) return { key, inode, via: 'posix-shm', name: bare };
  if (bare.startsWith(MEMFD)) return { key, inode, via: 'memfd', name: bare.slice(1) };
  return undefined;
};

/**
 * stat of /proc/PID/fd/FD (the open file itself, even when unlinked) as a SharedFile: any
 * /dev/shm file or memfd, and a FIFO when `fifos` (default: every FIFO). Undefined otherwise or
 * when the fd is gone.
 */
const statSharedFd = (pid: number, fd: string, link: string, fifos = true): SharedFile | undefined => {
  const path = `/proc/${pid}/fd/${fd}`;
  const st = orGone(path, () => statSync(path));
  if (!st) return undefined;
  // Linux dev_t: minor in bits 0-7 and 20-31, major in bits 8-19 (glibc's gnu_dev_major/minor).
  const major = (st.dev >>> 8) & 0xfff;
  const minor = (st.dev & 0xff) | ((st.dev >>> 12) & 0xfff00);
  const inode = String(st.ino);
  const key = fileKey(major, minor, inode);
  if (fifos && st.isFIFO()) return { key, inode, via: 'fifo', name: link.endsWith(DELETED) ? link.slice(0, -DELETED.length) : link };
  return sharedMemoryOf(link, key, inode);
};

interface Mappings {
  /** shmids of attached System V segments. */
  readonly sysv: string[];
  /** Mapped /dev/shm files and memfds, deduplicated. */
  readonly files: SharedFile[];
}

/**
 * System V segments ("/SYSV<key>", the inode column is the shmid), /dev/shm files and memfds
 * mapped by `pid`, from /proc/PID/maps; undefined when gone. Only lines with those paths are
 * split: maps of a large process are long.
 */
const readMappings = (pid: number): Mappings | undefined => {
  const path = `/proc/${pid}/maps`;
  const text = orGone(path, () => readFileSync(path, 'latin1'));
  if (text === undefined) return undefined;
  const sysv = new Set<string>();
  const files = new Map<string, SharedFile>();
  for (const marker of [' /SYSV', ` ${SHM_DIR}`, ` ${MEMFD}`]) {
    let from = 0;
    for (;;) {
      const at = text.indexOf(marker, from);
      if (at < 0) break;
      let end = text.indexOf('\n', at);
      if (end < 0) end = text.length;
      from = end;
      // "start-end perms offset major:minor inode   path": the path starts after the spaces.
      const lineStart = text.lastIndexOf('\n', at) + 1;
      const fields = text.slice(lineStart, at).trim().split(/ +/);
      const dev = fields[3];
      const inode = fields[4];
      if (fields.length < 5 || dev === undefined || inode === undefined || !isDigits(inode)) continue;
      if (marker === ' /SYSV') {
        sysv.add(inode);
        continue;
      }
      const [major, minor] = dev.split(':').map((h) => parseInt(h, 16));
      const file = sharedMemoryOf(text.slice(at + 1, end), fileKey(major!, minor!, inode), inode);
      if (file && !files.has(file.key)) files.set(file.key, file);
    }
  }
  return { sysv: [...sysv], files: [...files.values()] };
};

/** shmids of System V shm segments attached by `pid` (/proc/PID/maps paths "/SYSV<key>"); undefined when gone. */
export const readSysvShm = (pid: number): string[] | undefined => readMappings(pid)?.sysv;

/**
 * Pipes, unix sockets and SysV shm segments `pid` holds; undefined when gone. `unixInodes`: the
 * unix sockets of its network namespace (default: unixSockets(pid), read from /proc/PID/net/unix);
 * pass one map to many calls to save reading it each time.
 */
export const openResources = (pid: number, unixInodes?: ReadonlySet<string> | ReadonlyMap<string, string>): OpenResources | undefined => {
  const links = readFdLinks(pid);
  if (!links) return undefined;
  const sysvShm = readSysvShm(pid);
  if (!sysvShm) return undefined;
  let unix = unixInodes;
  if (!unix) {
    try {
      unix = unixSockets(pid);
    } catch (err) {
      if (isGone((err as Error).cause)) return undefined;
      throw err;
    }
  }
  const unixList: string[] = [];
  const sockets: string[] = [];
  for (const s of links.sockets) (unix.has(s) ? unixList : sockets).push(s);
  return { pipes: [...links.pipes], unixSockets: unixList, sysvShm, other: { sockets } };
};

// ---------------------------------------------------------------------------------------------
// Unix socket peers

const squash = (s: string): string => s.trim().split(/\s+/).join(' ');

/**
 * Parses `ss -x -a -n` output into inode → peer inode (connected sockets only). A row is
 * "Netid State Recv-Q Send-Q LocalAddr LocalInode PeerAddr PeerInode": addresses are "*", a path
 * (which may contain spaces) or "@abstract"; the row ends with the peer inode. When a path makes
 * the local inode ambiguous, `names` (inode → bound path, see unixSockets) settles it.
 */
export const parseSsUnix = (text: string, names?: ReadonlyMap<string, string>): Map<string, string> => {
  const peers = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const t = raw.trim().split(/\s+/);
    if (t.length < 8 || !t[0]!.startsWith('u_')) continue;
    const peer = t[t.length - 1]!;
    if (!isDigits(peer) || peer === '0') continue;
    // The local inode: a digits token (after at least one address token) followed by the start
    // of the peer address ("*", "/path" or "@name").
    const candidates: number[] = [];
    for (let i = 5; i < t.length - 2; i++) {
      const next = t[i + 1]!;
      if (isDigits(t[i]!) && (next === '*' || next.startsWith('/') || next.startsWith('@'))) candidates.push(i);
    }
    let chosen = candidates[0];
    if (candidates.length > 1 && names) {
      const exact = candidates.find((i) => {
        const name = names.get(t[i]!);
        if (name === undefined) return false;
        const local = t.slice(4, i).join(' ');
        return name === '' ? local === '*' : squash(name) === local;
      });
      if (exact !== undefined) chosen = exact;
    }
    if (chosen !== undefined) peers.set(t[chosen]!, peer);
  }
  return peers;
};

const runSs = (args: string[]): string => {
  try {
    return execFileSync(args[0]!, args.slice(1), {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 512 * 1024 * 1024,
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT')
      throw new Error(`procfs: cannot find unix socket peers: \`${args[0]}\` is not installed (apt-get install iproute2${args[0] === 'nsenter' ? ' util-linux' : ''})`, { cause: err });
    throw new Error(`procfs: \`${args.join(' ')}\` failed: ${e.stderr?.trim() || e.message}`, { cause: err });
  }
};

/**
 * inode → peer inode of every connected unix socket (both directions are listed), from
 * `ss -x -a -n` (NETLINK_SOCK_DIAG with UDIAG_SHOW_PEER). Sockets are listed per network
 * namespace: by default ours; with `netnsOf`, that of process `netnsOf` (through nsenter).
 */
export const unixSocketPeers = (options: { netnsOf?: number } = {}): Map<string, string> => {
  const ss = ['ss', '-x', '-a', '-n'];
  const args = options.netnsOf === undefined ? ss : ['nsenter', `--net=/proc/${options.netnsOf}/ns/net`, ...ss];
  const text = runSs(args);
  // Bound paths only matter to settle ambiguous rows: read them only when a row has a path.
  const names = /\s[/@]/.test(text) ? unixSockets(options.netnsOf) : undefined;
  return parseSsUnix(text, names);
};

// ---------------------------------------------------------------------------------------------
// Dependents

const netnsOf = (pid: number): string | undefined => orGone(`/proc/${pid}/ns/net`, () => readlinkSync(`/proc/${pid}/ns/net`));

/** What findDependents reads of a member: its descriptors, the shared memory and FIFOs it holds, its network namespace. */
export interface MemberResources {
  readonly links: FdLinks;
  readonly sysv: readonly string[];
  readonly files: readonly SharedFile[];
  readonly ns: string;
}

/**
 * A cheap fingerprint of what a process holds: its number of open descriptors (the size the
 * kernel reports for /proc/PID/fd, Linux ≥ 6.2) and its mapped size (vsize, from the `stat` just
 * read of it). Unchanged, the process has most likely opened and mapped nothing new (replacing one
 * descriptor by another, dup2 onto an open one, is what it misses). Undefined when it is gone.
 */
export const resourceSignature = (stat: ProcStat): string | undefined => {
  const fds = orGone(`/proc/${stat.pid}/fd`, () => statSync(`/proc/${stat.pid}/fd`).size);
  return fds === undefined ? undefined : `${fds} ${stat.vsize}`;
};

/** A member's resources from /proc; undefined when it is gone. */
export const readMemberResources = (pid: number): MemberResources | undefined => {
  const links = readFdLinks(pid);
  const maps = readMappings(pid);
  const ns = netnsOf(pid);
  if (!links || !maps || ns === undefined) return undefined;
  const files = [...maps.files];
  // Members are few: stat every path fd to find FIFOs (their links look like any file's).
  for (const [fd, link] of links.paths) {
    if (link.startsWith('/dev/') && !link.startsWith(SHM_DIR)) continue;
    const f = statSharedFd(pid, fd, link);
    if (f) files.push(f);
  }
  return { links, sysv: maps.sysv, files, ns };
};

/**
 * Non-member processes sharing a pipe, a unix socket connection, a SysV shm segment, a POSIX shm
 * file, a memfd or a named FIFO with a member. Reads members' fds and maps first; then, only if
 * members hold any such resource, every other process's fds once (stat-ing only fds whose link
 * names a /dev/shm file, a memfd or a member's FIFO path), and its maps only if members hold
 * shared memory. `candidates`: the processes to consider (default: a fresh scanProcesses()).
 * Kernel threads, members and `options.ignore` are never reported. One entry per (pid, via, inode).
 */
export const findDependents = (members: readonly number[], candidates?: readonly ProcStat[], options: FindDependentsOptions = {}): Dependent[] => {
  const memberSet = new Set(members);
  const pipeOwner = new Map<string, number>();
  const shmOwner = new Map<string, number>();
  const fileOwner = new Map<string, readonly [number, SharedFile]>(); // SharedFile.key → member
  const fifoPaths = new Set<string>();
  let sharedMemory = false; // members hold a /dev/shm file or a memfd
  const memberUnix = new Map<string, number>(); // member socket inode → member
  const unixByNetns = new Map<string, Map<string, string>>();
  const memberNetns = new Map<string, number>(); // netns → one member pid in it
  const selfNetns = netnsOf(process.pid);
  const own = (pid: number, f: SharedFile | undefined) => {
    if (f && !fileOwner.has(f.key)) fileOwner.set(f.key, [pid, f]);
    if (f?.via === 'fifo') fifoPaths.add(f.name);
    else if (f) sharedMemory = true;
  };

  const readMember = options.readMember ?? readMemberResources;
  for (const pid of members) {
    const member = readMember(pid);
    if (!member) continue; // gone
    const { links, ns } = member;
    for (const p of links.pipes) if (!pipeOwner.has(p)) pipeOwner.set(p, pid);
    for (const s of member.sysv) if (!shmOwner.has(s)) shmOwner.set(s, pid);
    for (const f of member.files) own(pid, f);
    if (links.sockets.size > 0) {
      let unix = unixByNetns.get(ns);
      if (!unix) {
        try {
          unix = ns === selfNetns ? unixSockets() : unixSockets(pid);
        } catch (err) {
          if (isGone((err as Error).cause)) continue;
          throw err;
        }
        unixByNetns.set(ns, unix);
      }
      let any = false;
      for (const s of links.sockets) {
        if (unix.has(s) && !memberUnix.has(s)) {
          memberUnix.set(s, pid);
          any = true;
        }
      }
      if (any && !memberNetns.has(ns)) memberNetns.set(ns, pid);
    }
  }
  if (pipeOwner.size === 0 && shmOwner.size === 0 && fileOwner.size === 0 && memberUnix.size === 0) return [];
  const readMaps = shmOwner.size > 0 || sharedMemory;

  // Unix socket inodes a dependent may hold → [member, member's inode]: the members' own inodes,
  // and the peers of the members' sockets (ss lists both ends of each connection).
  const wantedUnix = new Map<string, readonly [number, string]>();
  for (const [inode, member] of memberUnix) wantedUnix.set(inode, [member, inode]);
  if (memberUnix.size > 0) {
    for (const [ns, pid] of memberNetns) {
      const peers = unixSocketPeers(ns === selfNetns ? {} : { netnsOf: pid });
      for (const [inode, peer] of peers) {
        const owner = memberUnix.get(peer);
        if (owner !== undefined && !wantedUnix.has(inode)) wantedUnix.set(inode, [owner, peer]);
      }
    }
  }

  const ignore = options.ignore;
  const out: Dependent[] = [];
  for (const proc of candidates ?? scanProcesses()) {
    if (memberSet.has(proc.pid) || ignore?.has(proc.pid) || isKernelThread(proc)) continue;
    const found: Dependent[] = [];
    const seenFiles = new Set<string>();
    const shares = (f: SharedFile | undefined) => {
      const hit = f && fileOwner.get(f.key);
      if (!f || !hit || seenFiles.has(f.key)) return;
      seenFiles.add(f.key);
      // The member's name: the dependent may see the file under another path (or "(deleted)").
      found.push({ pid: proc.pid, startTime: proc.startTime, member: hit[0], via: hit[1].via, inode: f.inode, name: hit[1].name });
    };
    try {
      if (pipeOwner.size > 0 || wantedUnix.size > 0 || fileOwner.size > 0) {
        const links = readFdLinks(proc.pid);
        if (!links) continue;
        for (const p of links.pipes) {
          const member = pipeOwner.get(p);
          if (member !== undefined) found.push({ pid: proc.pid, startTime: proc.startTime, member, via: 'pipe', inode: p });
        }
        for (const s of links.sockets) {
          const hit = wantedUnix.get(s);
          if (hit) found.push({ pid: proc.pid, startTime: proc.startTime, member: hit[0], via: 'unix-socket', inode: s, memberInode: hit[1] });
        }
        for (const [fd, link] of links.paths) {
          const isFifo = fifoPaths.has(link);
          if (isFifo || (sharedMemory && (link.startsWith(SHM_DIR) || link.startsWith(MEMFD)))) shares(statSharedFd(proc.pid, fd, link, isFifo));
        }
      }
      if (readMaps) {
        const maps = readMappings(proc.pid);
        if (!maps) continue;
        for (const s of maps.sysv) {
          const member = shmOwner.get(s);
          if (member !== undefined) found.push({ pid: proc.pid, startTime: proc.startTime, member, via: 'sysv-shm', inode: s });
        }
        for (const f of maps.files) shares(f);
      }
    } catch (err) {
      const code = ((err as Error).cause as NodeJS.ErrnoException | undefined)?.code;
      if (code !== 'EACCES' && code !== 'EPERM') throw err;
      options.onUnreadable?.(proc.pid, err as Error);
      continue;
    }
    if (found.length === 0) continue;
    // The pid may have been reused since `candidates` was taken: keep the hits only if it is
    // still the same process.
    const now = readStat(proc.pid);
    if (now && now.startTime === proc.startTime) out.push(...found);
  }
  return out;
};

// ---------------------------------------------------------------------------------------------
// Terminals

export interface Terminals {
  /** Pseudo-terminal slaves in use, by pts index: how ("fd 0", "controlling terminal"). */
  readonly slaves: Map<number, string[]>;
  /** pts indexes of the pseudo-terminal masters held open (/dev/ptmx fds, "tty-index" in fdinfo). */
  readonly masters: number[];
  /** Other terminals in use (a console, a serial line, /dev/tty): "PATH (fd N)" or "controlling terminal MAJOR:MINOR". */
  readonly others: string[];
}

const PTS = /^\/dev\/pts\/(\d+)$/;
const OTHER_TTY = /^\/dev\/(tty\S*|console)$/;

/** tty_nr (field 7 of /proc/PID/stat) as [major, minor]; undefined when gone. */
const controllingTerminal = (pid: number): readonly [number, number] | undefined => {
  const path = `/proc/${pid}/stat`;
  const text = orGone(path, () => readFileSync(path, 'latin1'));
  if (text === undefined) return undefined;
  const nr = Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[4]);
  return [(nr >>> 8) & 0xfff, (nr & 0xff) | ((nr >>> 12) & 0xfff00)];
};

/**
 * The terminals `pid` uses: pty slaves and masters among its fds, its controlling terminal, and
 * other tty devices; undefined when gone. (pts indexes are per devpts instance: a process with
 * its own devpts mount is not told apart.)
 */
export const readTerminals = (pid: number): Terminals | undefined => {
  const links = readFdLinks(pid);
  const ctty = controllingTerminal(pid);
  if (!links || !ctty) return undefined;
  const slaves = new Map<number, string[]>();
  const masters: number[] = [];
  const others: string[] = [];
  const slave = (index: number, how: string) => slaves.set(index, [...(slaves.get(index) ?? []), how]);
  for (const [fd, link] of links.paths) {
    const pts = PTS.exec(link);
    if (pts) slave(Number(pts[1]), `fd ${fd}`);
    else if (link === '/dev/ptmx' || link === '/dev/pts/ptmx') {
      const info = orGone(`/proc/${pid}/fdinfo/${fd}`, () => readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'latin1'));
      const index = info && /^tty-index:\s*(\d+)$/m.exec(info)?.[1];
      if (index) masters.push(Number(index));
    } else if (OTHER_TTY.test(link)) others.push(`${link} (fd ${fd})`);
  }
  const [major, minor] = ctty;
  // Unix98 pty slaves: majors 136-143, 256 minors each.
  if (major >= 136 && major <= 143) slave((major - 136) * 256 + minor, 'controlling terminal');
  else if (major !== 0) others.push(`controlling terminal ${major}:${minor}`);
  return { slaves, masters, others };
};
