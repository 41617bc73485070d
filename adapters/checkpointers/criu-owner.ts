// Whom criu acts as. A unit of root runs criu as root, as ever. A unit of another user runs criu
// as that user (uid, gid, supplementary groups) with --unprivileged and only the capabilities it
// needs: reading a process's rlimits (prlimit(2)) needs CAP_SYS_RESOURCE unless the caller's real
// uid and gid are the process's, and root lacks CAP_SYS_RESOURCE on some machines (this one); root
// criu then cannot dump another uid's process at all ("Can't get rlimit 0: Operation not
// permitted"). Acting as the owner needs no CAP_SYS_RESOURCE, and criu acting for a user is not
// all-powerful root. Measured here (docs/criu.md, "Jobs of other users"):
//   dump:    CAP_CHECKPOINT_RESTORE (map_files, set_tid), CAP_SYS_PTRACE (seize), CAP_DAC_OVERRIDE
//            (the root-owned 0700 images directory; /proc/PID of a non-dumpable process, owned by
//            root: "Can't open PID/map_files on procfs: Permission denied" without it; an executable
//            the owner may run but not read);
//   restore: those and CAP_SETPCAP (the restorer drops from the bounding set what the process
//            lacked: "Unable to drop capability 24" without it);
//   established TCP (either): CAP_NET_ADMIN (TCP repair, the nftables network lock);
//   a restore whose root was a PID namespace's init: CAP_SYS_ADMIN (criu recreates the namespace:
//            "Can't fork for 1: Operation not permitted" without it).
// A dump of a user's process that is PID 1 of its own PID namespace (sharing the host's /proc)
// works only if that process holds CAP_SYS_ADMIN itself: CRIU's parasite, running as the task,
// mounts a proc for the namespace ("can't dump unprivileged task whose /proc doesn't belong to it").
import { closeSync, constants, fchmodSync, fchownSync, fstatSync, lstatSync, openSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { UnitOwner } from '../../domain/checkpointer.js';
import { readCredentials } from '../tracking/procfs.js';
import { readDumpedCredentials, readPstree } from './criu-images.js';
import type { CriuIdentity } from './criu-rpc.js';

const CAP_DAC_OVERRIDE = 1;
const CAP_SETPCAP = 8;
const CAP_NET_ADMIN = 12;
const CAP_SYS_PTRACE = 19;
const CAP_SYS_ADMIN = 21;
const CAP_CHECKPOINT_RESTORE = 40;

export const DUMP_CAPS: readonly number[] = [CAP_DAC_OVERRIDE, CAP_SYS_PTRACE, CAP_CHECKPOINT_RESTORE];
export const RESTORE_CAPS: readonly number[] = [CAP_DAC_OVERRIDE, CAP_SETPCAP, CAP_SYS_PTRACE, CAP_CHECKPOINT_RESTORE];

/** A refusal of class 'permission' (domain/failure.ts), before criu runs. */
const refuse = (message: string): Error =>
  Object.assign(new Error(message), { failure: { class: 'permission' as const, message, hint: 'a unit is checkpointed and restored as its job’s owner: every process of it must run as that user' } });

const withNetAdmin = (caps: readonly number[], tcp: boolean | undefined): number[] => (tcp ? [...caps, CAP_NET_ADMIN] : [...caps]).sort((a, b) => a - b);

/**
 * criu's identity for a dump of the tree rooted at `rootPid`: undefined (root criu) when that
 * process runs as root. The uid is the root process's real uid, which must be the owner's when
 * the owner is a known user other than root; gid and groups are the owner's when given, else the
 * process's own.
 */
export const dumpIdentity = (rootPid: number, owner: UnitOwner | undefined, tcpEstablished?: boolean): CriuIdentity | undefined => {
  const creds = readCredentials(rootPid);
  if (creds === undefined) throw new Error(`the unit’s first process (${rootPid}) is gone: the unit has ended`);
  const [uid] = creds.uids;
  if (foreign(owner, uid)) refuseMismatch(`the unit’s first process (${rootPid}) runs as uid ${uid}`, owner.uid);
  if (uid === 0) return undefined;
  // prlimit's same-credentials rule compares real gids too: a gid the owner switched to (sg, newgrp) would fail in criu with EPERM.
  const gid = owner?.gid ?? creds.gids[0];
  if (gid !== creds.gids[0]) throw refuse(`the unit’s first process (${rootPid}) runs with gid ${creds.gids[0]}, not its owner’s gid ${gid}: criu acting as the owner cannot dump it`);
  return { uid, gid, groups: owner?.groups ?? creds.groups, caps: withNetAdmin(DUMP_CAPS, tcpEstablished) };
};

/**
 * criu's identity for a restore of `imagesDir`: the dumped root's credentials (CRIU restores
 * each process's own); undefined (root criu) when it ran as root. The images must be the owner's.
 */
export const restoreIdentity = (imagesDir: string, owner: UnitOwner | undefined, tcpEstablished?: boolean): CriuIdentity | undefined => {
  const creds = readDumpedCredentials(imagesDir);
  if (foreign(owner, creds.uid)) refuseMismatch(`the images in ${imagesDir} hold a root process of uid ${creds.uid}`, owner.uid);
  if (creds.uid === 0) return undefined;
  const caps = withNetAdmin(readPstree(imagesDir)[0]?.pid === 1 ? [...RESTORE_CAPS, CAP_SYS_ADMIN] : RESTORE_CAPS, tcpEstablished);
  return { uid: creds.uid, gid: creds.gid, groups: creds.groups, caps };
};

/** A user's job holds processes of another uid (root's jobs may run as anyone). */
const foreign = (owner: UnitOwner | undefined, uid: number): owner is UnitOwner => owner !== undefined && owner.uid !== 0 && owner.uid !== uid;

const refuseMismatch = (what: string, ownerUid: number): never => {
  throw refuse(`${what}, but the job’s owner is uid ${ownerUid}: not dumping or restoring another user’s processes as the owner`);
};

/**
 * What criu wrote as the owner becomes root's, 0600: the owner must not alter images that root
 * restores. Files only, never following a symlink (O_NOFOLLOW; a symlink there is an error).
 * `dir` is the agent's own 0700 directory, which the owner cannot enter.
 */
export const sealForRoot = (dir: string): void => {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (lstatSync(path).isDirectory()) continue; // criu writes no directories; the image store's own stay as they are
    const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      if (!fstatSync(fd).isFile()) throw new Error(`${path} is not a regular file: not an image CRIU writes`);
      fchownSync(fd, 0, 0);
      fchmodSync(fd, 0o600);
    } finally {
      closeSync(fd);
    }
  }
};
