// The on-disk store of checkpoint images: $CKPT_HOME/images/JOB/vN/UNIT/…
//
// Layout and rules:
// - Versions are numbered per job (v1, v2, …; the number comes from the coordinator's
//   CheckpointPlanned event), each with a parent link (or null) in its manifest.
// - Every directory of the layout (images/, JOB/, vN/, UNIT/) is mode 0700; manifest.json is 0600.
// - A version is committed only by its manifest: commitVersion hashes (SHA-256) and fsyncs every
//   file and every directory under vN, fsyncs vN, JOB and images/, then writes manifest.json
//   atomically (temp file, fsync, rename, fsync vN). A version without a manifest is not committed
//   (an aborted or crashed checkpoint); a committed version is never written to again.
// - verifyVersion re-hashes every file against the manifest (and the manifest itself against the
//   SHA-256 recorded by CheckpointCommitted); a restart refuses on any problem, naming the file.
// - pruneVersions keeps the newest committed versions and never removes a protected one (a version
//   a running restart uses).
//
// Synchronous fs throughout: the callers are a node agent's step executions, one at a time, and a
// hash of a file is CPU-bound anyway (about 1.4 GB/s with SHA-NI on the 2-core test VM).
import { createHash, type Hash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  constants,
  type Dirent,
  fchmodSync,
  fstatSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmdirSync,
  rmSync,
  type Stats,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { join } from 'node:path';
import { NAME_PATTERN, NonNegativeInt, NonNegativeNumber, nullable, PositiveInt, record, Sha256, Timestamp } from '../../domain/codecs.js';
import * as t from '../../domain/io-ts.js';
import { removeTree, resolveUnder, UnsafePathError } from '../fs/safe-fs.js';

export const MANIFEST = 'manifest.json';
export const MANIFEST_FORMAT = 1;
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const CHUNK = 1 << 20;
const VERSION_DIR = /^v([1-9][0-9]{0,14})$/;
const MANIFEST_TEMP = /^\.manifest\.json\.[0-9]+\.tmp$/;

// ---------------------------------------------------------------------------------------------
// Manifest

const ManifestFile = record({ path: t.string, bytes: NonNegativeInt, sha256: Sha256 });
const ManifestUnit = record({
  unit: t.string,
  node: t.string,
  durationMs: NonNegativeNumber,
  files: t.array(ManifestFile),
  bytes: NonNegativeInt,
});
const ManifestCodec = record({
  format: t.literal(MANIFEST_FORMAT),
  job: t.string,
  version: PositiveInt,
  parent: nullable(PositiveInt),
  createdAt: Timestamp,
  units: t.array(ManifestUnit),
  bytes: NonNegativeInt,
  files: NonNegativeInt,
});

export interface ManifestFileEntry {
  /** Relative to vN, with `/`: `UNIT/…`. */
  readonly path: string;
  readonly bytes: number;
  readonly sha256: string;
}
export interface ManifestUnitEntry {
  readonly unit: string;
  readonly node: string;
  /** The unit's dump duration, as the node agent measured it. */
  readonly durationMs: number;
  readonly files: readonly ManifestFileEntry[];
  readonly bytes: number;
}
export interface Manifest {
  readonly format: typeof MANIFEST_FORMAT;
  readonly job: string;
  readonly version: number;
  readonly parent: number | null;
  readonly createdAt: string;
  readonly units: readonly ManifestUnitEntry[];
  /** Sum over all files. */
  readonly bytes: number;
  /** Number of files. */
  readonly files: number;
}

export interface CommitRequest {
  readonly job: string;
  readonly version: number;
  readonly parent: number | null;
  /** `files`: the unit's entries as followImages hashed and fsynced them while they were written;
   *  the commit then checks names and sizes on disk instead of reading everything again. */
  readonly units: ReadonlyArray<{ readonly unit: string; readonly node: string; readonly durationMs: number; readonly files?: readonly ManifestFileEntry[] }>;
  /** ISO-8601 UTC (Date#toISOString); the caller's clock, so it can come from an event. */
  readonly createdAt: string;
}

export interface Committed {
  readonly manifest: Manifest;
  /** SHA-256 of manifest.json's bytes (CheckpointCommitted.manifest). */
  readonly manifestSha256: string;
  readonly manifestPath: string;
  /** Wall time of hashing, fsyncing and writing the manifest (CheckpointCommitted.durationMs). */
  readonly durationMs: number;
}

export type ImageProblemKind = 'missing' | 'size' | 'sha256' | 'unexpected' | 'invalid';
export interface ImageProblem {
  /** Relative to vN (`UNIT/pages-1.img`, `manifest.json`). */
  readonly path: string;
  readonly problem: ImageProblemKind;
  readonly expected?: string | number;
  readonly actual?: string | number;
  /** For 'invalid' and for entries that are not regular files: what is wrong. */
  readonly detail?: string;
}

export type Verification = { readonly ok: true; readonly files: number; readonly bytes: number } | { readonly ok: false; readonly problems: readonly ImageProblem[] };

export interface VersionInfo {
  readonly version: number;
  /** manifest.json is present. */
  readonly committed: boolean;
  readonly bytes?: number;
  readonly files?: number;
  readonly parent?: number | null;
  readonly createdAt?: string;
  /** The manifest is present but cannot be read (a damaged version). */
  readonly problem?: string;
}

/** Every failure of this module: the path it concerns, and a message saying what to do. */
export class ImageStoreError extends Error {
  override readonly name = 'ImageStoreError';
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// Paths and validation (no disk access)

export const imagesRoot = (home: string): string => join(home, 'images');

const checkName = (what: 'job' | 'unit', name: unknown, root: string): string => {
  if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
    throw new ImageStoreError(
      root,
      `invalid ${what} name ${JSON.stringify(name)} under ${root}: expected ${NAME_PATTERN.source} (lower case, digits, '.', '_', '-'; 1–64 characters); use such a name`,
    );
  }
  return name;
};

const checkVersion = (version: unknown, root: string, what = 'version'): number => {
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) {
    throw new ImageStoreError(root, `invalid ${what} ${JSON.stringify(version)} under ${root}: expected an integer ≥ 1`);
  }
  return version;
};

export const jobImagesDir = (root: string, job: string): string => join(root, checkName('job', job, root));
export const versionDir = (root: string, job: string, version: number): string => join(jobImagesDir(root, job), `v${checkVersion(version, root)}`);
export const unitImagesDir = (root: string, job: string, version: number, unit: string): string => {
  const dir = versionDir(root, job, version);
  return join(dir, checkName('unit', unit, root));
};
export const manifestPath = (root: string, job: string, version: number): string => join(versionDir(root, job, version), MANIFEST);

/**
 * images/JOB/vN/UNIT for reading (a restore): every level a real directory, none a link — throws
 * an ImageStoreError naming the link otherwise. Absent directories are the reader's to report.
 */
export const realUnitImagesDir = (root: string, job: string, version: number, unit: string): string => {
  const dir = unitImagesDir(root, job, version, unit);
  try {
    resolveUnder(root, job, `v${version}`, unit, 'pstree.img'); // checks JOB, vN and UNIT
  } catch (e) {
    if (e instanceof UnsafePathError) throw new ImageStoreError(e.path, e.message);
    throw e;
  }
  return dir;
};

/**
 * vN, after checking that images/JOB on the way is a real directory (not a link someone planted:
 * the path would lead elsewhere). vN itself is for the caller to lstat.
 */
const realVersionDir = (root: string, job: string, version: number): string => {
  const vDir = versionDir(root, job, version); // validates the names first
  try {
    resolveUnder(root, job, `v${version}`);
  } catch (e) {
    if (e instanceof UnsafePathError) throw new ImageStoreError(e.path, e.message);
    throw e;
  }
  return vDir;
};

const errnoOf = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code;
const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e));

const lstatOrUndefined = (path: string): Stats | undefined => {
  try {
    return lstatSync(path);
  } catch (e) {
    if (errnoOf(e) === 'ENOENT') return undefined;
    throw new ImageStoreError(path, `cannot stat ${path}: ${messageOf(e)}; check the permissions of the images directory`);
  }
};

const kindOf = (s: Stats): string =>
  s.isFile() ? 'regular file' : s.isDirectory() ? 'directory' : s.isSymbolicLink() ? 'symbolic link' : s.isFIFO() ? 'FIFO' : s.isSocket() ? 'socket' : 'device or other special file';

// ---------------------------------------------------------------------------------------------
// fsync and hashing

const fsyncDir = (dir: string): void => {
  let fd: number;
  try {
    fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  } catch (e) {
    throw new ImageStoreError(dir, `cannot open directory ${dir} to fsync it: ${messageOf(e)}; check that it exists and is readable`);
  }
  try {
    fsyncSync(fd);
  } catch (e) {
    throw new ImageStoreError(dir, `fsync of directory ${dir} failed: ${messageOf(e)}; the disk may be failing or full — the version is not committed`);
  } finally {
    closeSync(fd);
  }
};

let chunk: Buffer | undefined;

/**
 * Size and SHA-256 of a regular file, read in 1 MiB chunks (never whole into memory); with
 * `fsync`, the file's data is also made durable. Symbolic links are refused, not followed.
 */
export const hashFile = (path: string, options: { fsync?: boolean } = {}): { bytes: number; sha256: string } => {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (e) {
    const hint = errnoOf(e) === 'ELOOP' ? 'it is a symbolic link; images must be regular files' : 'check that it exists and is readable';
    throw new ImageStoreError(path, `cannot open ${path}: ${messageOf(e)}; ${hint}`);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new ImageStoreError(path, `${path} is a ${kindOf(stat)}, not a regular file; images must be regular files — remove it`);
    const buffer = (chunk ??= Buffer.allocUnsafe(CHUNK));
    const hash = createHash('sha256');
    let bytes = 0;
    for (;;) {
      const n = readSync(fd, buffer, 0, buffer.length, null);
      if (n === 0) break;
      hash.update(buffer.subarray(0, n));
      bytes += n;
    }
    if (options.fsync) fsyncSync(fd);
    return { bytes, sha256: hash.digest('hex') };
  } catch (e) {
    if (e instanceof ImageStoreError) throw e;
    throw new ImageStoreError(path, `cannot read${options.fsync ? ' or fsync' : ''} ${path}: ${messageOf(e)}; the disk may be failing`);
  } finally {
    closeSync(fd);
  }
};

/** Entries hashed while written must still describe the disk: the same files, the same sizes. */
const checkFollowed = (vDir: string, unit: string, onDisk: readonly string[], followed: readonly ManifestFileEntry[]): ManifestFileEntry[] => {
  const byPath = new Map(followed.map((f) => [f.path, f]));
  for (const rel of onDisk) {
    const f = byPath.get(rel);
    const size = lstatOrUndefined(join(vDir, rel))?.size;
    if (!f || f.bytes !== size) {
      throw new ImageStoreError(
        join(vDir, rel),
        `${join(vDir, rel)} changed after unit ${unit} was dumped (${f ? `${f.bytes} bytes hashed, ${size} on disk` : 'not among the dumped files'}); the version is not committed`,
      );
    }
    byPath.delete(rel);
  }
  if (byPath.size > 0) throw new ImageStoreError(join(vDir, unit), `${[...byPath.keys()].join(', ')} vanished after unit ${unit} was dumped; the version is not committed`);
  return [...followed].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
};

interface Followed {
  readonly handle: FileHandle;
  readonly ino: number;
  readonly hash: Hash;
  bytes: number;
  unsynced: number;
}

/** Flush a followed file's data to disk every so often, so the final fsync has little left. */
const SYNC_EVERY = 64 << 20;

/**
 * Hashes a unit's images while the checkpointer writes them, so committing does not read them
 * again: each file is read on from where the last pass stopped (CRIU writes every image front to
 * back, never in place — and a test re-hashes every committed version to hold it to that), and its
 * data is flushed as it goes. `finish()`, once the writer has exited, reads the rest, fsyncs every
 * file and the directory, and returns the manifest entries (paths relative to vN).
 */
export const followImages = (root: string, job: string, version: number, unit: string) => {
  const dir = unitImagesDir(root, job, version, unit);
  const files = new Map<string, Followed>();
  const buffer = Buffer.allocUnsafe(CHUNK);
  const pass = async (final: boolean) => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (e) {
      if (errnoOf(e) === 'ENOENT' && !final) return; // not created yet
      throw new ImageStoreError(dir, `cannot list ${dir}: ${messageOf(e)}`);
    }
    for (const name of names) {
      const path = join(dir, name);
      let f = files.get(name);
      if (!f) {
        const stat = lstatOrUndefined(path);
        if (!stat?.isFile()) continue; // CRIU writes regular files only; anything else fails the commit's walk
        f = { handle: await open(path, constants.O_RDONLY | constants.O_NOFOLLOW), ino: stat.ino, hash: createHash('sha256'), bytes: 0, unsynced: 0 };
        files.set(name, f);
      }
      for (;;) {
        const { bytesRead } = await f.handle.read(buffer, 0, buffer.length, f.bytes);
        if (bytesRead === 0) break;
        f.hash.update(buffer.subarray(0, bytesRead));
        f.bytes += bytesRead;
        f.unsynced += bytesRead;
      }
      if (f.unsynced >= SYNC_EVERY && !final) {
        f.unsynced = 0;
        await f.handle.datasync();
      }
    }
  };
  let stopped = false;
  const following = (async () => {
    while (!stopped) {
      await pass(false);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  following.catch(() => undefined); // awaited (and its error thrown) by finish or cancel
  const close = () => Promise.all([...files.values()].map((f) => f.handle.close().catch(() => undefined)));
  return {
    async finish(): Promise<ManifestFileEntry[]> {
      stopped = true;
      try {
        await following;
        await pass(true);
        const entries: ManifestFileEntry[] = [];
        for (const [name, f] of files) {
          const now = lstatOrUndefined(join(dir, name));
          if (!now || now.ino !== f.ino) throw new ImageStoreError(join(dir, name), `${join(dir, name)} was replaced while it was being dumped; dump again`);
          entries.push({ path: `${unit}/${name}`, bytes: f.bytes, sha256: f.hash.digest('hex') });
        }
        await Promise.all([...files.values()].map((f) => f.handle.sync())); // in parallel: dozens of small files
        fsyncDir(dir);
        return entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
      } finally {
        await close();
      }
    },
    /** Stops following without a result (the dump failed). */
    async cancel(): Promise<void> {
      stopped = true;
      await following.catch(() => undefined);
      await close();
    },
  };
};

// ---------------------------------------------------------------------------------------------
// Directories

/** Makes `dir` exist as a directory of mode 0700 (tightening a looser one); true when it created it. */
const ensurePrivateDir = (dir: string, recursive: boolean): boolean => {
  let created = false;
  try {
    // recursive: undefined when it already existed (no EEXIST); otherwise the first one created
    created = recursive ? mkdirSync(dir, { mode: DIR_MODE, recursive }) !== undefined : (mkdirSync(dir, { mode: DIR_MODE }), true);
  } catch (e) {
    if (errnoOf(e) !== 'EEXIST') {
      throw new ImageStoreError(dir, `cannot create directory ${dir}: ${messageOf(e)}; check the permissions of its parent (CKPT_HOME)`);
    }
  }
  // The layout's own directories must not be symbolic links (images/ itself may sit behind one).
  const stat = recursive ? statSync(dir) : lstatSync(dir);
  if (!stat.isDirectory()) {
    throw new ImageStoreError(dir, `${dir} is a ${kindOf(stat)}, not a directory; move it out of the way`);
  }
  if (stat.uid !== (process.geteuid?.() ?? 0)) {
    throw new ImageStoreError(dir, `${dir} is owned by uid ${stat.uid}, not by this agent's user: another user could steer what is written there; run chown root ${dir}`);
  }
  if (created || (stat.mode & 0o777) !== DIR_MODE) {
    try {
      chmodSync(dir, DIR_MODE); // mkdir's mode is filtered by the umask; chmod is not
    } catch (e) {
      throw new ImageStoreError(dir, `cannot make ${dir} readable by its owner only (mode 0700): ${messageOf(e)}; run as its owner`);
    }
  }
  return created;
};

const isEmptyDir = (dir: string): boolean => readdirSync(dir).length === 0;

/**
 * Creates root/JOB/vN/UNIT (every directory of the layout mode 0700) for a dump to write into.
 * Refuses a committed version, and a unit directory that exists and is not empty: a version is
 * never overwritten. An existing empty unit directory (a retried step) is accepted.
 */
export const prepareUnitDir = (root: string, job: string, version: number, unit: string): string => {
  const dir = unitImagesDir(root, job, version, unit); // validates before touching the disk
  const vDir = versionDir(root, job, version);
  ensurePrivateDir(root, true);
  ensurePrivateDir(jobImagesDir(root, job), false);
  ensurePrivateDir(vDir, false);
  if (lstatOrUndefined(join(vDir, MANIFEST))) {
    throw new ImageStoreError(vDir, `version ${version} of job ${job} is already committed (${join(vDir, MANIFEST)} exists) and is never written to again; checkpoint into a new version`);
  }
  const existing = lstatOrUndefined(dir);
  if (existing) {
    if (!existing.isDirectory()) {
      throw new ImageStoreError(dir, `${dir} is a ${kindOf(existing)}, not a directory; remove it (removePartial) or use a new version`);
    }
    if (!isEmptyDir(dir)) {
      throw new ImageStoreError(dir, `${dir} already holds images and is never overwritten; remove the partial images first (abort the checkpoint) or use a new version`);
    }
  }
  ensurePrivateDir(dir, false);
  return dir;
};

interface Walked {
  readonly files: string[]; // relative to vN
  readonly dirs: string[]; // absolute
}

/** Every regular file under `unitDir` (recursively, in byte order) and every directory; others are reported. */
const walkUnit = (vDir: string, unit: string, onOther: (relative: string, kind: string) => void): Walked => {
  const files: string[] = [];
  const dirs: string[] = [];
  const visit = (relative: string) => {
    const abs = join(vDir, relative);
    dirs.push(abs);
    let entries: Dirent[];
    try {
      entries = readdirSync(abs, { withFileTypes: true });
    } catch (e) {
      throw new ImageStoreError(abs, `cannot list ${abs}: ${messageOf(e)}; check its permissions`);
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      const rel = `${relative}/${entry.name}`;
      let isDir = entry.isDirectory();
      let isFile = entry.isFile();
      let kind = '';
      if (!isDir && !isFile && !entry.isSymbolicLink() && !entry.isFIFO() && !entry.isSocket() && !entry.isBlockDevice() && !entry.isCharacterDevice()) {
        const stat = lstatSync(join(vDir, rel)); // DT_UNKNOWN on some file systems
        isDir = stat.isDirectory();
        isFile = stat.isFile();
        kind = kindOf(stat);
      }
      if (isDir) visit(rel);
      else if (isFile) files.push(rel);
      else onOther(rel, kind || kindOf(lstatSync(join(vDir, rel))));
    }
  };
  visit(unit);
  return { files, dirs };
};

// ---------------------------------------------------------------------------------------------
// Commit

const serialise = (manifest: Manifest): Buffer => Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`, 'utf8');
const sha256Of = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** Writes `path` atomically and durably: temp file (0600), fsync, rename, fsync the directory. */
const writeDurably = (dir: string, name: string, bytes: Buffer): string => {
  const path = join(dir, name);
  const temp = join(dir, `.${name}.${process.pid}.tmp`);
  let fd: number;
  try {
    fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, FILE_MODE);
  } catch (e) {
    throw new ImageStoreError(temp, `cannot create ${temp}: ${messageOf(e)}; remove a stale temp file or check the permissions of ${dir}`);
  }
  try {
    fchmodSync(fd, FILE_MODE);
    for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(temp, { force: true });
    throw new ImageStoreError(temp, `cannot write ${temp}: ${messageOf(e)}; the disk may be full — the version is not committed`);
  }
  closeSync(fd);
  try {
    renameSync(temp, path);
  } catch (e) {
    rmSync(temp, { force: true });
    throw new ImageStoreError(path, `cannot rename ${temp} to ${path}: ${messageOf(e)}; the version is not committed`);
  }
  fsyncDir(dir);
  return path;
};

/**
 * Commits version `version` of `job`: every file under vN/UNIT/ (recursively, nothing excluded) is
 * hashed and fsynced, every directory fsynced (units, vN, JOB, images/), then manifest.json written
 * atomically (0600). The units on disk must be exactly the units requested. Refuses a version that
 * is already committed.
 */
export const commitVersion = (root: string, request: CommitRequest): Committed => {
  const { job, version, parent, createdAt } = request;
  const vDir = versionDir(root, job, version);
  if (parent !== null) {
    checkVersion(parent, root, 'parent version');
    if (parent >= version) throw new ImageStoreError(vDir, `parent ${parent} of version ${version} of job ${job} must be an older version (< ${version}); pass the version this one follows, or null`);
  }
  if (!Timestamp.is(createdAt)) throw new ImageStoreError(vDir, `createdAt ${JSON.stringify(createdAt)} for ${vDir} is not an ISO-8601 UTC timestamp; pass Date#toISOString()`);
  if (request.units.length === 0) throw new ImageStoreError(vDir, `no units given to commit ${vDir}; pass every unit the checkpoint dumped`);
  const requested = new Set<string>();
  for (const u of request.units) {
    checkName('unit', u.unit, root);
    if (requested.has(u.unit)) throw new ImageStoreError(vDir, `unit ${u.unit} given twice to commit ${vDir}; pass each unit once`);
    if (!NAME_PATTERN.test(u.node)) throw new ImageStoreError(vDir, `invalid node name ${JSON.stringify(u.node)} for unit ${u.unit} in ${vDir}: expected ${NAME_PATTERN.source}`);
    if (!NonNegativeNumber.is(u.durationMs)) throw new ImageStoreError(vDir, `durationMs ${JSON.stringify(u.durationMs)} of unit ${u.unit} in ${vDir} must be a number ≥ 0`);
    requested.add(u.unit);
  }

  const started = performance.now();
  realVersionDir(root, job, version);
  const vStat = lstatOrUndefined(vDir);
  if (!vStat?.isDirectory()) throw new ImageStoreError(vDir, `${vDir} does not exist (or is not a directory); dump the units into it (prepareUnitDir) before committing`);
  if (lstatOrUndefined(join(vDir, MANIFEST))) {
    throw new ImageStoreError(vDir, `version ${version} of job ${job} is already committed (${join(vDir, MANIFEST)} exists); a version is never overwritten — checkpoint into a new version`);
  }
  for (const entry of readdirSync(vDir, { withFileTypes: true })) {
    const path = join(vDir, entry.name);
    if (entry.isDirectory()) {
      if (!requested.has(entry.name)) throw new ImageStoreError(path, `${path} is not one of the units being committed (${[...requested].join(', ')}); remove it or include its unit`);
    } else if (MANIFEST_TEMP.test(entry.name)) {
      unlinkSync(path); // left by a commit that crashed before its rename: that commit never happened
    } else {
      throw new ImageStoreError(path, `${path} is not inside a unit directory; images belong in ${vDir}/UNIT/ — remove it`);
    }
  }
  for (const unit of requested) {
    const dir = join(vDir, unit);
    if (!lstatOrUndefined(dir)?.isDirectory()) throw new ImageStoreError(dir, `unit ${unit} has no image directory ${dir}; dump it before committing, or leave it out`);
  }

  let totalBytes = 0;
  let totalFiles = 0;
  const units: ManifestUnitEntry[] = request.units.map((u) => {
    const walked = walkUnit(vDir, u.unit, (rel, kind) => {
      throw new ImageStoreError(join(vDir, rel), `${join(vDir, rel)} is a ${kind}; images must be regular files or directories — remove it`);
    });
    const files = u.files ? checkFollowed(vDir, u.unit, walked.files, u.files) : walked.files.map((rel) => ({ path: rel, ...hashFile(join(vDir, rel), { fsync: true }) }));
    // CRIU writes its images 0644 (private anyway inside 0700 directories): a version is 0600 throughout.
    for (const rel of walked.files) chmodSync(join(vDir, rel), FILE_MODE);
    for (const dir of walked.dirs.reverse()) fsyncDir(dir); // deepest first, the unit directory last
    const bytes = files.reduce((sum, f) => sum + f.bytes, 0);
    totalBytes += bytes;
    totalFiles += files.length;
    return { unit: u.unit, node: u.node, durationMs: u.durationMs, files, bytes };
  });
  fsyncDir(vDir);
  fsyncDir(jobImagesDir(root, job));
  fsyncDir(root);

  const manifest: Manifest = { format: MANIFEST_FORMAT, job, version, parent, createdAt, units, bytes: totalBytes, files: totalFiles };
  const bytes = serialise(manifest);
  const path = writeDurably(vDir, MANIFEST, bytes);
  return { manifest, manifestSha256: sha256Of(bytes), manifestPath: path, durationMs: performance.now() - started };
};

// ---------------------------------------------------------------------------------------------
// Reading and verifying

const describeDecodeErrors = (errors: t.Errors): string => {
  const seen = new Set<string>();
  for (const error of errors.slice(0, 5)) {
    const path =
      error.context
        .map((c) => c.key)
        .filter((k) => k !== '')
        .join('.') || '(top)';
    const expected = error.context[error.context.length - 1]?.type.name ?? 'a valid value';
    seen.add(`${path}: expected ${expected}, got ${JSON.stringify(error.value) ?? 'nothing'}`);
  }
  return [...seen].join('; ');
};

/** Checks a decoded manifest against where it lies: its job, version and file paths. */
const consistencyProblem = (m: Manifest, job: string, version: number): string | undefined => {
  if (m.job !== job || m.version !== version) return `it describes job ${m.job} version ${m.version}, not job ${job} version ${version}`;
  let bytes = 0;
  let files = 0;
  const units = new Set<string>();
  for (const u of m.units) {
    if (!NAME_PATTERN.test(u.unit) || units.has(u.unit)) return `unit name ${JSON.stringify(u.unit)} is invalid or repeated`;
    units.add(u.unit);
    let unitBytes = 0;
    for (const f of u.files) {
      const parts = f.path.split('/');
      if (parts[0] !== u.unit || parts.length < 2 || parts.some((p) => p === '' || p === '.' || p === '..')) {
        return `file path ${JSON.stringify(f.path)} is not inside unit ${u.unit}`;
      }
      unitBytes += f.bytes;
    }
    if (unitBytes !== u.bytes) return `unit ${u.unit} says ${u.bytes} bytes but its files add up to ${unitBytes}`;
    bytes += unitBytes;
    files += u.files.length;
  }
  if (bytes !== m.bytes || files !== m.files) return `totals say ${m.files} files, ${m.bytes} bytes but the units add up to ${files} files, ${bytes} bytes`;
  return undefined;
};

const parseManifest = (path: string, text: Buffer, job: string, version: number): Manifest => {
  const damaged = (why: string) => new ImageStoreError(path, `manifest ${path} is damaged: ${why}; this version cannot be trusted — restart from another version or remove it`);
  let json: unknown;
  try {
    json = JSON.parse(text.toString('utf8'));
  } catch (e) {
    throw damaged(`not JSON (${messageOf(e)})`);
  }
  const decoded = ManifestCodec.decode(json);
  if (decoded._tag === 'Left') throw damaged(describeDecodeErrors(decoded.left));
  const manifest = decoded.right as Manifest;
  const inconsistent = consistencyProblem(manifest, job, version);
  if (inconsistent) throw damaged(inconsistent);
  return manifest;
};

const readManifestBytes = (path: string): Buffer | undefined => {
  try {
    const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      return readFileSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    if (errnoOf(e) === 'ENOENT') return undefined;
    throw new ImageStoreError(path, `cannot read manifest ${path}: ${messageOf(e)}; check its permissions (it is 0600, readable by its owner)`);
  }
};

/** The manifest of a committed version; undefined when the version has none (not committed). Throws on a damaged one. */
export const readManifest = (root: string, job: string, version: number): Manifest | undefined => {
  const path = manifestPath(root, job, version);
  const bytes = readManifestBytes(path);
  return bytes === undefined ? undefined : parseManifest(path, bytes, job, version);
};

/**
 * Re-hashes every file of a committed version (or of one unit) against its manifest. Reports
 * files missing, of another size, with another SHA-256, and files present but not in the manifest;
 * with `manifestSha256` (from CheckpointCommitted), also a manifest whose own bytes changed.
 */
export const verifyVersion = (root: string, job: string, version: number, options: { unit?: string; manifestSha256?: string } = {}): Verification => {
  const vDir = realVersionDir(root, job, version);
  if (options.unit !== undefined) checkName('unit', options.unit, root);
  const vStat = lstatOrUndefined(vDir);
  if (vStat && !vStat.isDirectory())
    return { ok: false, problems: [{ path: '.', problem: 'invalid', detail: `${vDir} is a ${kindOf(vStat)}, not a version directory ckpt made; it is never read or restored from` }] };
  const mPath = join(vDir, MANIFEST);
  const text = readManifestBytes(mPath);
  if (text === undefined) return { ok: false, problems: [{ path: MANIFEST, problem: 'missing', detail: 'the version is not committed' }] };
  const problems: ImageProblem[] = [];
  if (options.manifestSha256 !== undefined) {
    const actual = sha256Of(text);
    if (actual !== options.manifestSha256) problems.push({ path: MANIFEST, problem: 'sha256', expected: options.manifestSha256, actual });
  }
  let manifest: Manifest;
  try {
    manifest = parseManifest(mPath, text, job, version);
  } catch (e) {
    problems.push({ path: MANIFEST, problem: 'invalid', detail: messageOf(e) });
    return { ok: false, problems };
  }
  let units = manifest.units;
  if (options.unit !== undefined) {
    units = manifest.units.filter((u) => u.unit === options.unit);
    if (units.length === 0) {
      throw new ImageStoreError(mPath, `version ${version} of job ${job} has no unit ${options.unit} (units: ${manifest.units.map((u) => u.unit).join(', ') || 'none'}); verify one of those`);
    }
  }

  let files = 0;
  let bytes = 0;
  for (const unit of units) {
    const expected = new Set(unit.files.map((f) => f.path));
    for (const f of unit.files) {
      const abs = join(vDir, f.path);
      const stat = lstatOrUndefined(abs);
      if (!stat) {
        problems.push({ path: f.path, problem: 'missing', expected: f.bytes });
        continue;
      }
      if (!stat.isFile()) {
        problems.push({ path: f.path, problem: 'missing', detail: `a ${kindOf(stat)} is there instead of a regular file` });
        continue;
      }
      if (stat.size !== f.bytes) {
        problems.push({ path: f.path, problem: 'size', expected: f.bytes, actual: stat.size });
        continue;
      }
      const actual = hashFile(abs);
      if (actual.bytes !== f.bytes) problems.push({ path: f.path, problem: 'size', expected: f.bytes, actual: actual.bytes });
      else if (actual.sha256 !== f.sha256) problems.push({ path: f.path, problem: 'sha256', expected: f.sha256, actual: actual.sha256 });
      files += 1;
      bytes += actual.bytes;
    }
    const unitDir = join(vDir, unit.unit);
    const unitStat = lstatOrUndefined(unitDir);
    if (unitStat && !unitStat.isDirectory()) problems.push({ path: unit.unit, problem: 'unexpected', detail: `a ${kindOf(unitStat)} instead of the unit's directory` });
    if (unitStat?.isDirectory()) {
      const walked = walkUnit(vDir, unit.unit, (rel, kind) => problems.push({ path: rel, problem: 'unexpected', detail: `a ${kind}` }));
      for (const rel of walked.files) if (!expected.has(rel)) problems.push({ path: rel, problem: 'unexpected' });
    }
  }
  if (options.unit === undefined) {
    const known = new Set(manifest.units.map((u) => u.unit));
    for (const entry of readdirSync(vDir, { withFileTypes: true })) {
      if (entry.name === MANIFEST || known.has(entry.name)) continue;
      problems.push({ path: entry.name, problem: 'unexpected', ...(entry.isDirectory() ? { detail: 'a directory of no unit in the manifest' } : {}) });
    }
  }
  return problems.length === 0 ? { ok: true, files, bytes } : { ok: false, problems };
};

/** One line per problem, naming each file by its full path; for the refusal of a restart. */
export const describeProblems = (root: string, job: string, version: number, problems: readonly ImageProblem[]): string => {
  const vDir = versionDir(root, job, version);
  // biome-ignore lint/suspicious/useIterableCallbackReturn: the switch covers every problem (TypeScript checks it)
  const lines = problems.map((p) => {
    const path = join(vDir, p.path);
    switch (p.problem) {
      case 'missing':
        return `${path}: missing${p.detail ? ` (${p.detail})` : ''}`;
      case 'size':
        return `${path}: ${p.actual} bytes, the manifest says ${p.expected}`;
      case 'sha256':
        return `${path}: SHA-256 ${p.actual}, the manifest${p.path === MANIFEST ? "'s recorded digest" : ''} says ${p.expected}`;
      case 'unexpected':
        return `${path}: not in the manifest${p.detail ? ` (${p.detail})` : ''}`;
      case 'invalid':
        return `${path}: ${p.detail ?? 'invalid'}`;
    }
  });
  return `images of job ${job} version ${version} do not match their manifest — restart from another version, or checkpoint again:\n  ${lines.join('\n  ')}`;
};

// ---------------------------------------------------------------------------------------------
// Removal, listing, pruning

/**
 * Removes vN entirely (no-op when absent); the manifest goes first (and is made durable), so a
 * crash midway leaves an uncommitted leftover, never a committed version with files missing.
 * True when there was something to remove.
 */
export const removeVersion = (root: string, job: string, version: number): boolean => {
  const vDir = realVersionDir(root, job, version);
  const stat = lstatOrUndefined(vDir);
  if (!stat) return false;
  try {
    const manifest = join(vDir, MANIFEST);
    if (stat.isDirectory() && lstatOrUndefined(manifest)) {
      unlinkSync(manifest);
      fsyncDir(vDir);
    }
    removeTree(vDir); // a link in vN's place is unlinked, never followed
  } catch (e) {
    if (e instanceof ImageStoreError) throw e;
    throw new ImageStoreError(vDir, `cannot remove ${vDir}: ${messageOf(e)}; check its permissions and remove it by hand`);
  }
  fsyncDir(jobImagesDir(root, job));
  return true;
};

/**
 * Undoes a unit's part of an uncommitted version (an abort): removes vN/UNIT, and vN as well
 * when nothing else is left in it. Refuses a committed version.
 */
export const removePartial = (root: string, job: string, version: number, unit: string): { unitRemoved: boolean; versionRemoved: boolean } => {
  const dir = unitImagesDir(root, job, version, unit);
  const vDir = realVersionDir(root, job, version);
  const vStat = lstatOrUndefined(vDir);
  if (!vStat) return { unitRemoved: false, versionRemoved: false };
  if (!vStat.isDirectory()) {
    // Not a directory ckpt made (a planted link): removed itself, nothing it points to is touched.
    removeTree(vDir);
    fsyncDir(jobImagesDir(root, job));
    return { unitRemoved: false, versionRemoved: true };
  }
  if (lstatOrUndefined(join(vDir, MANIFEST))) {
    throw new ImageStoreError(
      vDir,
      `version ${version} of job ${job} is committed (${join(vDir, MANIFEST)} exists); an abort never removes part of a committed version — use removeVersion to delete it whole`,
    );
  }
  let unitRemoved = false;
  if (lstatOrUndefined(dir)) {
    try {
      removeTree(dir);
    } catch (e) {
      throw new ImageStoreError(dir, `cannot remove partial images ${dir}: ${messageOf(e)}; check its permissions and remove it by hand`);
    }
    fsyncDir(vDir);
    unitRemoved = true;
  }
  let versionRemoved = false;
  if (isEmptyDir(vDir)) {
    try {
      rmdirSync(vDir);
      versionRemoved = true;
    } catch (e) {
      // Another unit's dump created its directory meanwhile: then vN stays, which is right.
      if (errnoOf(e) !== 'ENOTEMPTY' && errnoOf(e) !== 'EEXIST') {
        throw new ImageStoreError(vDir, `cannot remove empty version directory ${vDir}: ${messageOf(e)}; remove it by hand`);
      }
    }
    if (versionRemoved) fsyncDir(jobImagesDir(root, job));
  }
  return { unitRemoved, versionRemoved };
};

/** Every version directory of a job, oldest first; committed ones with their totals. */
export const listVersions = (root: string, job: string): VersionInfo[] => {
  const jobDir = jobImagesDir(root, job);
  let entries: Dirent[];
  try {
    entries = readdirSync(jobDir, { withFileTypes: true });
  } catch (e) {
    if (errnoOf(e) === 'ENOENT') return [];
    throw new ImageStoreError(jobDir, `cannot list ${jobDir}: ${messageOf(e)}; check its permissions`);
  }
  const versions: VersionInfo[] = [];
  for (const entry of entries) {
    const match = VERSION_DIR.exec(entry.name);
    if (!match?.[1] || !entry.isDirectory()) continue;
    const version = Number(match[1]);
    const path = join(jobDir, entry.name, MANIFEST);
    if (!lstatOrUndefined(path)) {
      versions.push({ version, committed: false });
      continue;
    }
    try {
      const m = readManifest(root, job, version);
      versions.push(m ? { version, committed: true, bytes: m.bytes, files: m.files, parent: m.parent, createdAt: m.createdAt } : { version, committed: false });
    } catch (e) {
      versions.push({ version, committed: true, problem: messageOf(e) });
    }
  }
  return versions.sort((a, b) => a.version - b.version);
};

/**
 * Keeps the `keep` newest committed versions and removes older committed versions, except the
 * protected ones (those a running restart uses). Uncommitted leftovers older than the newest
 * committed version (aborted or crashed checkpoints: versions are taken one at a time, so a
 * checkpoint in progress is always newer than every committed one) are removed too, unless
 * protected; newer uncommitted versions are left alone. Returns the removed versions, oldest first.
 *
 * Parent links are not followed: images are full dumps (no incremental dumps on this kernel), so a
 * version does not need its parent to restart.
 */
export const pruneVersions = (
  root: string,
  job: string,
  keep: number,
  protectedVersions: ReadonlySet<number>,
  verifies: (version: number) => boolean = (version) => verifyVersion(root, job, version).ok,
): number[] => {
  const jobDir = jobImagesDir(root, job);
  if (!Number.isSafeInteger(keep) || keep < 1) {
    throw new ImageStoreError(jobDir, `keep ${JSON.stringify(keep)} for pruning ${jobDir} must be an integer ≥ 1; pruning never removes every version`);
  }
  const versions = listVersions(root, job);
  const committed = versions
    .filter((v) => v.committed)
    .map((v) => v.version)
    .sort((a, b) => b - a);
  const newest = committed[0];
  if (newest === undefined) return [];
  // The newest N that verify are kept: a damaged version cannot be restored, so it never counts
  // as one of them. Damaged ones newer than the oldest kept stay too, for the user to look at.
  const kept = new Set<number>();
  let verified = 0;
  for (const version of committed) {
    if (verified === keep) break;
    kept.add(version);
    if (verifies(version)) verified += 1;
  }
  const doomed = versions.filter((v) => !protectedVersions.has(v.version) && !kept.has(v.version) && (v.committed || v.version < newest)).map((v) => v.version);
  for (const version of doomed) removeVersion(root, job, version);
  return doomed;
};
