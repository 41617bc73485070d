// Files no one else can steer. The agent runs as root; a path it writes, runs or removes must not
// lead anywhere another user chose. The rules:
// - $CKPT_HOME and every directory above it are owned by the agent's user (or root) and writable by
//   no one else (a sticky directory such as /tmp is fine: others cannot rename or remove what is
//   not theirs); nothing under it is owned by another user, writable by others or a symbolic link.
//   checkPrivateTree says which path breaks this and how to fix it; the agent refuses to start then.
// - Directories are made one level at a time (mkdir 0700, then lstat: a directory, ours, not a link).
// - Files are created with O_CREAT|O_EXCL|O_NOFOLLOW, 0600: never through a planted link or file.
// - Removal walks with lstat and never follows a link: a link is unlinked itself. Every directory
//   between a trusted root and what is removed is checked to be a real directory first, since
//   path resolution would follow a link there (fs.rmSync follows none below its argument and
//   unlinks a link given as its argument, but resolves the argument's own path like any call).
// With every directory private to root, nobody else can swap a checked directory for a link
// between the check and the use.
import { chmodSync, closeSync, constants, fchmodSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, realpathSync, renameSync, rmdirSync, type Stats, unlinkSync, writeSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, sep } from 'node:path';

export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;

/** A path another user could steer: which, why, and the command that fixes it. */
export class UnsafePathError extends Error {
  override readonly name = 'UnsafePathError';
  constructor(
    readonly path: string,
    why: string,
    readonly fix: string,
  ) {
    super(`${path} ${why}: ${fix}`);
  }
}

const me = (): number => process.geteuid?.() ?? 0;
const octal = (mode: number) => `0${(mode & 0o7777).toString(8)}`;
const codeOf = (e: unknown) => (e as NodeJS.ErrnoException | undefined)?.code;

const lstatIfAny = (path: string): Stats | undefined => {
  try {
    return lstatSync(path);
  } catch (e) {
    if (codeOf(e) === 'ENOENT') return undefined;
    throw e;
  }
};

const trustedOwner = (s: Stats) => s.uid === me() || s.uid === 0;
const writableByOthers = (s: Stats) => (s.mode & 0o022) !== 0;
const sticky = (s: Stats) => (s.mode & 0o1000) !== 0;

/** Why `s` (at `path`: above the home, the home itself, or inside it) lets another user steer what
 *  is below it; undefined when it does not. */
const steerable = (path: string, s: Stats, where: 'above' | 'home' | 'inside'): UnsafePathError | undefined => {
  if (!trustedOwner(s)) return new UnsafePathError(path, `is owned by uid ${s.uid}, not by root`, `run chown root ${path} (or choose another CKPT_HOME)`);
  // A link of root's cannot be changed by others (where it leads is checked too); inside the home
  // ckpt makes none, so one there was planted.
  if (s.isSymbolicLink())
    return where !== 'inside' ? undefined : new UnsafePathError(path, 'is a symbolic link inside CKPT_HOME, which ckpt never makes', `remove it (rm ${path}); nothing was written through it`);
  // Above CKPT_HOME a world-writable sticky directory (/tmp) is fine: others cannot rename what is ours.
  if (writableByOthers(s) && !(where === 'above' && s.isDirectory() && sticky(s))) {
    const who = [(s.mode & 0o020) !== 0 && 'group', (s.mode & 0o002) !== 0 && 'other'].filter(Boolean).join('- and ');
    return new UnsafePathError(path, `is ${who}-writable (mode ${octal(s.mode)})`, `run chmod go-w ${path}`);
  }
  return undefined;
};

/**
 * Refuses a home another user could steer: every directory from / down to `home` (links among them
 * must be root's, and what they point to is checked as well), and everything under `home`. Throws an
 * UnsafePathError naming the first offending path; a missing `home` is fine (ckpt creates it 0700).
 */
export const checkPrivateTree = (home: string): void => {
  if (!isAbsolute(home)) throw new UnsafePathError(home, 'is not an absolute path', 'set CKPT_HOME to an absolute path');
  const ancestors = (path: string): string[] => (path === dirname(path) ? [path] : [...ancestors(dirname(path)), path]);
  const checkChain = (path: string, seen: number) => {
    if (seen > 40) throw new UnsafePathError(path, 'has too many levels of symbolic links', 'set CKPT_HOME to a real directory');
    for (const p of ancestors(path)) {
      const s = lstatIfAny(p);
      if (!s) return; // created later, by ckpt, 0700
      const problem = steerable(p, s, p === path ? 'home' : 'above');
      if (problem) throw problem;
      if (s.isSymbolicLink()) {
        // A root-owned link cannot be changed by others; where it leads must be as safe.
        return checkChain(join(realpathSync(p), relative(p, path)), seen + 1);
      }
    }
  };
  checkChain(home, 0);
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      const s = lstatIfAny(path);
      if (!s) continue; // removed meanwhile
      const problem = steerable(path, s, 'inside');
      if (problem) throw problem;
      if (s.isDirectory()) walk(path);
    }
  };
  if (lstatIfAny(home)) walk(realpathSync(home));
};

/**
 * Makes `dir` a directory of ours, mode 0700, that is not a link: creates it (its parent must exist)
 * or accepts an existing one that passes the same checks. True when it created it.
 */
export const makePrivateDir = (dir: string): boolean => {
  let created = true;
  try {
    mkdirSync(dir, { mode: DIR_MODE });
  } catch (e) {
    if (codeOf(e) !== 'EEXIST') throw e;
    created = false;
  }
  const s = lstatSync(dir);
  if (s.isSymbolicLink()) throw new UnsafePathError(dir, 'is a symbolic link where ckpt keeps a directory of its own', `remove the link (rm ${dir}); nothing was written through it`);
  if (!s.isDirectory()) throw new UnsafePathError(dir, 'is not a directory', `move it out of the way (mv ${dir} ${dir}.old)`);
  if (s.uid !== me()) throw new UnsafePathError(dir, `is owned by uid ${s.uid}`, `run chown root ${dir}`);
  if ((s.mode & 0o777) !== DIR_MODE) chmodSync(dir, DIR_MODE); // mkdir's mode passes through the umask
  return created;
};

/** A single path segment: no separator, not '.' or '..', not empty. */
const checkSegment = (segment: string) => {
  if (segment === '' || segment === '.' || segment === '..' || segment.includes(sep) || segment.includes('\0'))
    throw new Error(`invalid path segment ${JSON.stringify(segment)}: a single name is expected`);
};

/** `root/a/b/…`, each level made (or checked) with makePrivateDir; `root` must exist. */
export const makePrivateDirs = (root: string, ...segments: string[]): string => {
  let dir = root;
  for (const segment of segments) {
    checkSegment(segment);
    dir = join(dir, segment);
    makePrivateDir(dir);
  }
  return dir;
};

/**
 * Checks that every directory from `root` (excluded) down to the parent of `root/segments…` is a
 * real directory, not a link: then the path names what it says. Returns the path, or undefined when
 * a directory on the way does not exist.
 */
export const resolveUnder = (root: string, ...segments: string[]): string | undefined => {
  let dir = root;
  for (const [i, segment] of segments.entries()) {
    checkSegment(segment);
    dir = join(dir, segment);
    if (i === segments.length - 1) break;
    const s = lstatIfAny(dir);
    if (!s) return undefined;
    if (!s.isDirectory())
      throw new UnsafePathError(dir, s.isSymbolicLink() ? 'is a symbolic link, not a directory ckpt made' : 'is not a directory', `nothing under it was touched; remove it by hand (rm ${dir})`);
  }
  return dir;
};

/** Creates `path` (O_CREAT|O_EXCL|O_NOFOLLOW, 0600) with `data`, fsynced; fails if anything is there. */
export const createPrivateFile = (path: string, data: string | Uint8Array = ''): void => {
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, FILE_MODE);
  try {
    fchmodSync(fd, FILE_MODE);
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
};

/** Replaces `path` atomically: a fresh temp file beside it (O_EXCL|O_NOFOLLOW, 0600), then rename. */
export const replacePrivateFile = (path: string, data: string | Uint8Array): void => {
  const temp = join(dirname(path), `.${path.slice(dirname(path).length + 1)}.${process.pid}.tmp`);
  removeTree(temp); // left by a crash of this very pid number: not a file anyone else could plant
  createPrivateFile(temp, data);
  renameSync(temp, path);
};

/** Opens `path` for appending (created 0600 if absent), never through a link. */
export const openPrivateAppend = (path: string): number => {
  const fd = openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, FILE_MODE);
  fchmodSync(fd, FILE_MODE);
  return fd;
};

/**
 * Removes `path` and everything below it without following any link: a link (at the top or
 * anywhere below) is unlinked itself. True when something was removed. The caller makes sure the
 * directories above `path` are real (resolveUnder).
 */
export const removeTree = (path: string): boolean => {
  const s = lstatIfAny(path);
  if (!s) return false;
  if (s.isDirectory()) {
    for (const name of readdirSync(path)) removeTree(join(path, name));
    try {
      rmdirSync(path);
    } catch (e) {
      if (codeOf(e) !== 'ENOENT') throw e;
    }
  } else {
    try {
      unlinkSync(path);
    } catch (e) {
      if (codeOf(e) !== 'ENOENT') throw e;
    }
  }
  return true;
};
