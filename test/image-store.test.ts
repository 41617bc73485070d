// The image store on real files in a temporary directory: layout and modes, manifests checked
// against sha256sum, every kind of damage named by verify, no overwrite, removal and pruning.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  closeSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  commitVersion,
  describeProblems,
  followImages,
  hashFile,
  type ImageProblem,
  ImageStoreError,
  imagesRoot,
  listVersions,
  MANIFEST,
  prepareUnitDir,
  pruneVersions,
  readManifest,
  realUnitImagesDir,
  removePartial,
  removeVersion,
  unitImagesDir,
  type Verification,
  verifyVersion,
  versionDir,
} from '../adapters/images/image-store.js';

const test = suite('image store');

let home = '';
let root = '';
const createdAt = '2025-01-02T03:04:05.678Z';

test.before.each(() => {
  home = mkdtempSync(join(tmpdir(), 'ckpt-images-'));
  root = imagesRoot(home);
});
test.after.each(() => {
  rmSync(home, { recursive: true, force: true });
});

const modeOf = (path: string) => statSync(path).mode & 0o777;
const sha256sum = (path: string) => execFileSync('sha256sum', [path], { encoding: 'utf8' }).split(' ')[0];

/** A dumped unit: a few files, one in a subdirectory, one empty. */
const dumpUnit = (job: string, version: number, unit: string, seed = unit) => {
  const dir = prepareUnitDir(root, job, version, unit);
  writeFileSync(join(dir, 'pstree.img'), `pstree of ${seed}`);
  writeFileSync(join(dir, 'pages-1.img'), randomBytes(300_000));
  writeFileSync(join(dir, 'empty.img'), '');
  mkdirSync(join(dir, 'sub'));
  writeFileSync(join(dir, 'sub', 'fs-1.img'), `fs of ${seed}`);
  return dir;
};

const commit = (job: string, version: number, units: string[], parent: number | null = version > 1 ? version - 1 : null) =>
  commitVersion(root, { job, version, parent, createdAt, units: units.map((unit, i) => ({ unit, node: `node-${i}`, durationMs: 12.5 + i })) });

const checkpoint = (job: string, version: number, units = ['u1', 'u2']) => {
  for (const u of units) dumpUnit(job, version, u);
  return commit(job, version, units);
};

const problemsOf = (v: Verification): readonly ImageProblem[] => (v.ok ? [] : v.problems);

const throwsStoreError = (fn: () => unknown, pattern: RegExp, what: string) => {
  try {
    fn();
  } catch (e) {
    assert.instance(e, ImageStoreError, `${what}: ImageStoreError`);
    assert.match((e as Error).message, pattern, `${what}: message`);
    return e as ImageStoreError;
  }
  assert.unreachable(`${what}: should have thrown`);
  throw new Error('unreachable');
};

test('layout: images/JOB/vN/UNIT, every directory 0700 whatever the umask', () => {
  assert.is(root, join(home, 'images'));
  const previous = process.umask(0o002);
  try {
    const dir = prepareUnitDir(root, 'job-1', 3, 'unit.a');
    assert.is(dir, join(home, 'images', 'job-1', 'v3', 'unit.a'));
    assert.is(unitImagesDir(root, 'job-1', 3, 'unit.a'), dir);
    for (const d of [root, join(root, 'job-1'), join(root, 'job-1', 'v3'), dir]) assert.is(modeOf(d), 0o700, `mode of ${d}`);
  } finally {
    process.umask(previous);
  }
  // An existing, too open images directory is tightened.
  chmodSync(root, 0o755);
  prepareUnitDir(root, 'job-1', 3, 'unit-b');
  assert.is(modeOf(root), 0o700);
});

test('commit: sizes and SHA-256 of every file match sha256sum; manifest 0600, atomic, its SHA-256 returned', () => {
  dumpUnit('j', 1, 'u1');
  dumpUnit('j', 1, 'u2');
  const previous = process.umask(0o022);
  let committed: ReturnType<typeof commit>;
  try {
    committed = commit('j', 1, ['u1', 'u2'], null);
  } finally {
    process.umask(previous);
  }
  const { manifest, manifestSha256, manifestPath } = committed;
  const vDir = versionDir(root, 'j', 1);
  assert.is(manifestPath, join(vDir, MANIFEST));
  assert.is(modeOf(manifestPath), 0o600);
  assert.is(manifestSha256, sha256sum(manifestPath));
  assert.equal(readdirSync(vDir).sort(), ['manifest.json', 'u1', 'u2'], 'no temp file left behind');
  assert.equal(JSON.parse(readFileSync(manifestPath, 'utf8')), manifest);
  assert.equal(readManifest(root, 'j', 1), manifest);
  assert.is(readManifest(root, 'j', 2), undefined);

  assert.is(manifest.format, 1);
  assert.is(manifest.job, 'j');
  assert.is(manifest.version, 1);
  assert.is(manifest.parent, null);
  assert.is(manifest.createdAt, createdAt);
  assert.equal(
    manifest.units.map((u) => [u.unit, u.node, u.durationMs]),
    [
      ['u1', 'node-0', 12.5],
      ['u2', 'node-1', 13.5],
    ],
  );
  const u1 = manifest.units[0]!;
  assert.equal(
    u1.files.map((f) => f.path),
    ['u1/empty.img', 'u1/pages-1.img', 'u1/pstree.img', 'u1/sub/fs-1.img'],
  );
  let total = 0;
  for (const unit of manifest.units) {
    let unitBytes = 0;
    for (const f of unit.files) {
      const abs = join(vDir, f.path);
      assert.is(f.bytes, statSync(abs).size, `size of ${f.path}`);
      assert.is(f.sha256, sha256sum(abs), `SHA-256 of ${f.path}`);
      unitBytes += f.bytes;
    }
    assert.is(unit.bytes, unitBytes);
    total += unitBytes;
  }
  assert.is(manifest.bytes, total);
  assert.is(manifest.files, 8);
  assert.is(u1.files[0]!.sha256, createHash('sha256').update('').digest('hex'), 'empty file');
  assert.equal(verifyVersion(root, 'j', 1, { manifestSha256 }), { ok: true, files: 8, bytes: total });
  assert.equal(verifyVersion(root, 'j', 1, { unit: 'u2' }), { ok: true, files: 4, bytes: manifest.units[1]!.bytes });
});

test('commit: refuses a committed version, missing or extra unit directories, loose files and symlinks', () => {
  checkpoint('j', 1);
  const before = readFileSync(join(root, 'j', 'v1', MANIFEST));
  throwsStoreError(() => commit('j', 1, ['u1', 'u2']), /already committed.*never overwritten/, 'second commit');
  assert.ok(before.equals(readFileSync(join(root, 'j', 'v1', MANIFEST))), 'manifest untouched');
  throwsStoreError(() => prepareUnitDir(root, 'j', 1, 'u3'), /already committed/, 'new unit in a committed version');

  dumpUnit('j', 2, 'u1');
  throwsStoreError(() => commit('j', 2, ['u1', 'u2']), /unit u2 has no image directory/, 'missing unit');
  dumpUnit('j', 2, 'u2');
  throwsStoreError(() => commit('j', 2, ['u1']), /v2\/u2 is not one of the units being committed/, 'extra unit');
  writeFileSync(join(root, 'j', 'v2', 'stray.img'), 'x');
  throwsStoreError(() => commit('j', 2, ['u1', 'u2']), /v2\/stray\.img is not inside a unit directory/, 'loose file');
  unlinkSync(join(root, 'j', 'v2', 'stray.img'));
  symlinkSync('/etc/hostname', join(root, 'j', 'v2', 'u1', 'link.img'));
  throwsStoreError(() => commit('j', 2, ['u1', 'u2']), /link\.img is a symbolic link/, 'symlink');
  unlinkSync(join(root, 'j', 'v2', 'u1', 'link.img'));
  throwsStoreError(() => commit('j', 2, ['u1', 'u2'], 2), /parent 2 .* must be an older version/, 'parent not older');
  // A temp file left by a commit that crashed before its rename is not part of anything.
  writeFileSync(join(root, 'j', 'v2', '.manifest.json.99999.tmp'), '{');
  const { manifest } = commit('j', 2, ['u1', 'u2']);
  assert.is(manifest.parent, 1);
  assert.not.ok(existsSync(join(root, 'j', 'v2', '.manifest.json.99999.tmp')));
  assert.ok(verifyVersion(root, 'j', 2).ok);
});

test('followImages hashes files while they are written; the commit uses its entries, and they verify', async () => {
  const dir = prepareUnitDir(root, 'j', 1, 'u1');
  const follower = followImages(root, 'j', 1, 'u1');
  const pages = openSync(join(dir, 'pages-1.img'), 'w');
  for (let i = 0; i < 40; i++) {
    writeSync(pages, randomBytes(100_000)); // appended in pieces, as CRIU does, while the follower reads
    if (i === 20) writeFileSync(join(dir, 'pstree.img'), 'pstree');
    await new Promise((r) => setTimeout(r, 2));
  }
  closeSync(pages);
  writeFileSync(join(dir, 'dump.log'), 'written last');
  const entries = await follower.finish();
  assert.equal(
    entries.map((e) => e.path),
    ['u1/dump.log', 'u1/pages-1.img', 'u1/pstree.img'],
  );
  for (const e of entries) assert.equal([e.bytes, e.sha256], [statSync(join(versionDir(root, 'j', 1), e.path)).size, sha256sum(join(versionDir(root, 'j', 1), e.path))], e.path);
  const committed = commitVersion(root, { job: 'j', version: 1, parent: null, createdAt, units: [{ unit: 'u1', node: 'n', durationMs: 1, files: entries }] });
  assert.equal(committed.manifest.units[0]!.files, entries);
  assert.equal(verifyVersion(root, 'j', 1), { ok: true, files: 3, bytes: 4_000_000 + 6 + 12 });
  // Entries that no longer match the disk refuse the commit.
  const d2 = prepareUnitDir(root, 'j', 2, 'u1');
  writeFileSync(join(d2, 'a.img'), 'abc');
  const f2 = followImages(root, 'j', 2, 'u1');
  const stale = await f2.finish();
  writeFileSync(join(d2, 'a.img'), 'abcdef');
  throwsStoreError(
    () => commitVersion(root, { job: 'j', version: 2, parent: 1, createdAt, units: [{ unit: 'u1', node: 'n', durationMs: 1, files: stale }] }),
    /changed after unit u1 was dumped \(3 bytes hashed, 6 on disk\)/,
    'stale entries',
  );
});

test('verify: a changed byte names the file with sha256', () => {
  const { manifest } = checkpoint('j', 1);
  const file = join(root, 'j', 'v1', 'u2', 'pages-1.img');
  const fd = openSync(file, 'r+');
  const original = readFileSync(file)[1000]!;
  writeSync(fd, Buffer.from([original ^ 0xff]), 0, 1, 1000);
  closeSync(fd);
  const result = verifyVersion(root, 'j', 1);
  const expected = manifest.units[1]!.files.find((f) => f.path === 'u2/pages-1.img')!.sha256;
  assert.equal(problemsOf(result), [{ path: 'u2/pages-1.img', problem: 'sha256', expected, actual: sha256sum(file) }]);
  assert.ok(verifyVersion(root, 'j', 1, { unit: 'u1' }).ok, 'the other unit alone is intact');
  const text = describeProblems(root, 'j', 1, problemsOf(result));
  assert.ok(text.includes(file), `names ${file}: ${text}`);
});

test('verify: truncated → size, deleted → missing, added → unexpected', () => {
  const { manifest } = checkpoint('j', 1);
  const vDir = join(root, 'j', 'v1');
  const pages = manifest.units[0]!.files.find((f) => f.path === 'u1/pages-1.img')!;
  truncateSync(join(vDir, 'u1', 'pages-1.img'), 100);
  unlinkSync(join(vDir, 'u1', 'sub', 'fs-1.img'));
  writeFileSync(join(vDir, 'u2', 'extra.img'), 'new');
  appendFileSync(join(vDir, 'u2', 'pstree.img'), 'x');
  writeFileSync(join(vDir, 'stray'), 'x');
  mkdirSync(join(vDir, 'u9'));
  const problems = problemsOf(verifyVersion(root, 'j', 1));
  const byPath = Object.fromEntries(problems.map((p) => [p.path, p]));
  assert.equal(byPath['u1/pages-1.img'], { path: 'u1/pages-1.img', problem: 'size', expected: pages.bytes, actual: 100 });
  assert.is(byPath['u1/sub/fs-1.img']?.problem, 'missing');
  assert.is(byPath['u2/extra.img']?.problem, 'unexpected');
  assert.is(byPath['u2/pstree.img']?.problem, 'size');
  assert.is(byPath.stray?.problem, 'unexpected');
  assert.is(byPath.u9?.problem, 'unexpected');
  assert.is(problems.length, 6, JSON.stringify(problems));
  // One unit's verification looks at that unit only.
  assert.equal(
    problemsOf(verifyVersion(root, 'j', 1, { unit: 'u2' }))
      .map((p) => p.path)
      .sort(),
    ['u2/extra.img', 'u2/pstree.img'],
  );
  throwsStoreError(() => verifyVersion(root, 'j', 1, { unit: 'u3' }), /has no unit u3 \(units: u1, u2\)/, 'unknown unit');
});

test('verify: a tampered manifest is a problem on manifest.json', () => {
  const { manifestSha256 } = checkpoint('j', 1);
  const path = join(root, 'j', 'v1', MANIFEST);
  const manifest = JSON.parse(readFileSync(path, 'utf8'));
  // Someone "repairs" a damaged file by writing its new digest into the manifest.
  manifest.units[0].files[0].sha256 = 'a'.repeat(64);
  writeFileSync(path, JSON.stringify(manifest, null, 2) + '\n');
  const problems = problemsOf(verifyVersion(root, 'j', 1, { manifestSha256 }));
  assert.equal(problems[0], { path: 'manifest.json', problem: 'sha256', expected: manifestSha256, actual: sha256sum(path) });
  assert.equal(
    problems.slice(1).map((p) => [p.path, p.problem]),
    [['u1/empty.img', 'sha256']],
  );
  // A manifest that does not parse, or contradicts itself, is reported, not trusted.
  writeFileSync(path, '{"format": 1');
  assert.equal(
    problemsOf(verifyVersion(root, 'j', 1)).map((p) => [p.path, p.problem]),
    [['manifest.json', 'invalid']],
  );
  manifest.units[0].files[0].path = '../../../etc/passwd';
  writeFileSync(path, JSON.stringify(manifest));
  const invalid = problemsOf(verifyVersion(root, 'j', 1))[0];
  assert.is(invalid?.problem, 'invalid');
  assert.match(invalid?.detail ?? '', /is not inside unit u1/);
  throwsStoreError(() => readManifest(root, 'j', 1), /manifest .*manifest\.json is damaged/, 'readManifest');
  unlinkSync(path);
  assert.equal(
    problemsOf(verifyVersion(root, 'j', 1)).map((p) => [p.path, p.problem]),
    [['manifest.json', 'missing']],
  );
});

test('an existing unit directory is never overwritten', () => {
  const dir = dumpUnit('j', 1, 'u1');
  const before = readFileSync(join(dir, 'pages-1.img'));
  throwsStoreError(() => prepareUnitDir(root, 'j', 1, 'u1'), /already holds images and is never overwritten/, 'non-empty unit');
  assert.ok(before.equals(readFileSync(join(dir, 'pages-1.img'))));
  // An empty one (a retried step before it wrote anything) is fine.
  assert.is(prepareUnitDir(root, 'j', 1, 'u2'), prepareUnitDir(root, 'j', 1, 'u2'));
  writeFileSync(join(root, 'j', 'v1', 'u3'), 'a file');
  throwsStoreError(() => prepareUnitDir(root, 'j', 1, 'u3'), /is a regular file, not a directory/, 'file in the way');
});

test('bad names and versions are rejected without touching the disk', () => {
  const nowhere = join(home, 'not-there', 'images');
  const badNames = ['', '..', '.', '../x', 'a/b', '/abs', 'A', '-x', '.hidden', 'x'.repeat(65), 'a\0b', 'é'];
  const badVersions = [0, -1, 1.5, Number.NaN, Infinity, '1' as unknown as number, 2 ** 60];
  for (const name of badNames) {
    throwsStoreError(() => prepareUnitDir(nowhere, name, 1, 'u'), /invalid job name/, `job ${JSON.stringify(name)}`);
    throwsStoreError(() => prepareUnitDir(nowhere, 'j', 1, name), /invalid unit name/, `unit ${JSON.stringify(name)}`);
    throwsStoreError(() => unitImagesDir(nowhere, 'j', 1, name), /invalid unit name/, `unitImagesDir ${JSON.stringify(name)}`);
    throwsStoreError(() => commitVersion(nowhere, { job: name, version: 1, parent: null, createdAt, units: [{ unit: 'u', node: 'n', durationMs: 1 }] }), /invalid job name/, 'commit job');
    throwsStoreError(() => commitVersion(nowhere, { job: 'j', version: 1, parent: null, createdAt, units: [{ unit: name, node: 'n', durationMs: 1 }] }), /invalid unit name/, 'commit unit');
    throwsStoreError(() => readManifest(nowhere, name, 1), /invalid job name/, 'readManifest');
    throwsStoreError(() => verifyVersion(nowhere, 'j', 1, { unit: name }), /invalid unit name/, 'verify unit');
    throwsStoreError(() => removeVersion(nowhere, name, 1), /invalid job name/, 'removeVersion');
    throwsStoreError(() => removePartial(nowhere, 'j', 1, name), /invalid unit name/, 'removePartial');
    throwsStoreError(() => listVersions(nowhere, name), /invalid job name/, 'listVersions');
    throwsStoreError(() => pruneVersions(nowhere, name, 1, new Set()), /invalid job name/, 'pruneVersions');
  }
  for (const version of badVersions) {
    const what = `version ${String(version)}`;
    throwsStoreError(() => prepareUnitDir(nowhere, 'j', version, 'u'), /invalid version/, what);
    throwsStoreError(() => commitVersion(nowhere, { job: 'j', version, parent: null, createdAt, units: [] }), /invalid version/, what);
    throwsStoreError(() => verifyVersion(nowhere, 'j', version), /invalid version/, what);
    throwsStoreError(() => removeVersion(nowhere, 'j', version), /invalid version/, what);
    throwsStoreError(() => removePartial(nowhere, 'j', version, 'u'), /invalid version/, what);
    throwsStoreError(() => commitVersion(nowhere, { job: 'j', version: 3, parent: version, createdAt, units: [] }), /invalid parent version/, what);
  }
  throwsStoreError(() => pruneVersions(nowhere, 'j', 0, new Set()), /keep 0 .* must be an integer ≥ 1/, 'keep 0');
  throwsStoreError(() => commitVersion(nowhere, { job: 'j', version: 1, parent: null, createdAt: 'yesterday', units: [{ unit: 'u', node: 'n', durationMs: 1 }] }), /not an ISO-8601/, 'createdAt');
  throwsStoreError(() => commitVersion(nowhere, { job: 'j', version: 1, parent: null, createdAt, units: [] }), /no units given/, 'no units');
  const error = throwsStoreError(() => prepareUnitDir(nowhere, 'j', 1, '../../etc'), /invalid unit name/, 'traversal');
  assert.is(error.path, nowhere);
  assert.not.ok(existsSync(join(home, 'not-there')), 'nothing created');
  assert.equal(readdirSync(home), [], 'home untouched');
});

test('removePartial: removes one unit, leaves the others, removes an emptied version; never a committed one', () => {
  dumpUnit('j', 1, 'u1');
  dumpUnit('j', 1, 'u2');
  assert.equal(removePartial(root, 'j', 1, 'u1'), { unitRemoved: true, versionRemoved: false });
  assert.not.ok(existsSync(join(root, 'j', 'v1', 'u1')));
  assert.ok(existsSync(join(root, 'j', 'v1', 'u2', 'pages-1.img')), 'other unit kept');
  assert.equal(removePartial(root, 'j', 1, 'u1'), { unitRemoved: false, versionRemoved: false }, 'idempotent');
  assert.equal(removePartial(root, 'j', 1, 'u2'), { unitRemoved: true, versionRemoved: true });
  assert.not.ok(existsSync(join(root, 'j', 'v1')));
  assert.ok(existsSync(join(root, 'j')), 'job directory kept');
  assert.equal(removePartial(root, 'j', 1, 'u2'), { unitRemoved: false, versionRemoved: false }, 'nothing left');

  checkpoint('j', 2);
  throwsStoreError(() => removePartial(root, 'j', 2, 'u1'), /is committed .*use removeVersion/, 'committed');
  assert.ok(verifyVersion(root, 'j', 2).ok);
  assert.ok(removeVersion(root, 'j', 2));
  assert.not.ok(existsSync(join(root, 'j', 'v2')));
  assert.not.ok(removeVersion(root, 'j', 2), 'already gone');
});

test('listVersions: committed and partial, in numeric order', () => {
  assert.equal(listVersions(root, 'nothing-yet'), []);
  checkpoint('j', 2);
  dumpUnit('j', 10, 'u1');
  checkpoint('j', 9, ['u1']);
  mkdirSync(join(root, 'j', 'not-a-version'));
  const { manifest } = commit('j', 10, ['u1']);
  dumpUnit('j', 11, 'u1');
  const list = listVersions(root, 'j');
  assert.equal(
    list.map((v) => [v.version, v.committed]),
    [
      [2, true],
      [9, true],
      [10, true],
      [11, false],
    ],
  );
  assert.is(list[2]!.bytes, manifest.bytes);
  assert.is(list[2]!.parent, 9);
  assert.is(list[3]!.bytes, undefined);
});

test('pruneVersions: keeps the N newest committed, never a protected one, drops old leftovers', () => {
  for (const v of [1, 2, 4, 5, 6]) checkpoint('j', v, ['u1']);
  dumpUnit('j', 3, 'u1'); // an aborted checkpoint's leftover
  dumpUnit('j', 7, 'u1'); // a checkpoint in progress
  checkpoint('other', 1, ['u1']);
  const removed = pruneVersions(root, 'j', 2, new Set([2]));
  assert.equal(removed, [1, 3, 4]);
  assert.equal(
    listVersions(root, 'j').map((v) => [v.version, v.committed]),
    [
      [2, true],
      [5, true],
      [6, true],
      [7, false],
    ],
  );
  for (const v of [2, 5, 6]) assert.ok(verifyVersion(root, 'j', v).ok, `v${v} intact`);
  assert.ok(verifyVersion(root, 'other', 1).ok, 'other job untouched');
  assert.equal(pruneVersions(root, 'j', 2, new Set([2])), [], 'nothing more');
  assert.equal(pruneVersions(root, 'j', 1, new Set([5])), [2], 'protected 5 stays beside the newest');
  assert.equal(
    listVersions(root, 'j').map((v) => v.version),
    [5, 6, 7],
  );
  assert.equal(pruneVersions(root, 'none', 1, new Set()), []);
});

test('pruneVersions: keeps the newest N that verify; a damaged version never counts as one of them', () => {
  for (const v of [1, 2, 3, 4]) checkpoint('d', v, ['u1']);
  const damaged = readdirSync(join(root, 'd', 'v4', 'u1')).find((f) => f.endsWith('.img'))!;
  appendFileSync(join(root, 'd', 'v4', 'u1', damaged), 'x');
  assert.not.ok(verifyVersion(root, 'd', 4).ok);
  assert.equal(pruneVersions(root, 'd', 2, new Set()), [1], 'v3 and v2 verify; v4 does not count but stays to be looked at');
  assert.equal(
    listVersions(root, 'd').map((v) => v.version),
    [2, 3, 4],
  );
});

/** A root-owned directory outside the store, with something a removal must never reach. */
const elsewhere = () => {
  const dir = join(home, 'elsewhere');
  mkdirSync(join(dir, 'u1', 'sub'), { recursive: true });
  writeFileSync(join(dir, 'u1', 'sub', 'precious'), 'keep me');
  writeFileSync(join(dir, MANIFEST), '{}');
  return dir;
};
const untouched = (dir: string) => {
  assert.is(readFileSync(join(dir, 'u1', 'sub', 'precious'), 'utf8'), 'keep me', 'nothing behind the link was removed');
  assert.ok(existsSync(join(dir, MANIFEST)));
};
const isLink = (path: string) => {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
};

test('a version directory planted as a link: abort and removal unlink the link, verify and commit refuse it, prune ignores it', () => {
  const outside = elsewhere();
  checkpoint('job', 2);
  const v1 = versionDir(root, 'job', 1);
  symlinkSync(outside, v1);
  // fs.rmSync itself follows no link below its argument and unlinks one given as its argument, but
  // resolves a link on the way to its argument: removePartial once deleted elsewhere/u1 that way.
  assert.equal(removePartial(root, 'job', 1, 'u1'), { unitRemoved: false, versionRemoved: true });
  untouched(outside);
  assert.not.ok(isLink(v1), 'the link itself is gone');

  symlinkSync(outside, v1);
  assert.ok(removeVersion(root, 'job', 1));
  untouched(outside);
  assert.not.ok(isLink(v1));

  symlinkSync(outside, v1);
  const v = verifyVersion(root, 'job', 1);
  assert.is(v.ok, false);
  assert.match(problemsOf(v)[0]!.detail ?? '', /is a symbolic link, not a version directory ckpt made/);
  throwsStoreError(() => commit('job', 1, ['u1'], null), /does not exist \(or is not a directory\)/, 'commit through a link');
  throwsStoreError(() => realUnitImagesDir(root, 'job', 1, 'u1'), /v1 is a symbolic link, not a directory ckpt made/, 'a restore’s images');
  assert.equal(pruneVersions(root, 'job', 1, new Set()), [], 'prune lists real version directories only');
  untouched(outside);
  assert.ok(isLink(v1), 'prune leaves what is not a version alone');
});

test('a job directory planted as a link: nothing under it is removed, verified or written', () => {
  const outside = elsewhere();
  mkdirSync(root, { recursive: true, mode: 0o700 });
  symlinkSync(outside, join(root, 'job'));
  // elsewhere/v1/u1 is what a removal through the link would reach.
  mkdirSync(join(outside, 'v1', 'u1'), { recursive: true });
  writeFileSync(join(outside, 'v1', 'u1', 'precious'), 'keep me too');
  throwsStoreError(() => removePartial(root, 'job', 1, 'u1'), /job is a symbolic link, not a directory ckpt made/, 'removePartial');
  throwsStoreError(() => removeVersion(root, 'job', 1), /job is a symbolic link, not a directory ckpt made/, 'removeVersion');
  throwsStoreError(() => verifyVersion(root, 'job', 1), /job is a symbolic link, not a directory ckpt made/, 'verifyVersion');
  throwsStoreError(() => prepareUnitDir(root, 'job', 1, 'u2'), /is a symbolic link, not a directory/, 'prepareUnitDir');
  throwsStoreError(() => realUnitImagesDir(root, 'job', 1, 'u1'), /job is a symbolic link, not a directory ckpt made/, 'a restore’s images');
  assert.is(readFileSync(join(outside, 'v1', 'u1', 'precious'), 'utf8'), 'keep me too');
  assert.not.ok(existsSync(join(outside, 'v1', 'u2')), 'nothing was created through the link');
  untouched(outside);
});

test('throughput: hashing and committing a 200 MB image (reported, not asserted)', () => {
  const dir = prepareUnitDir(root, 'big', 1, 'u1');
  const file = join(dir, 'pages-1.img');
  const size = 200 * 1000 * 1000;
  const block = randomBytes(1 << 20);
  const fd = openSync(file, 'w');
  for (let written = 0; written < size; ) written += writeSync(fd, block, 0, Math.min(block.length, size - written));
  closeSync(fd);
  const mb = size / 1e6;
  const rate = (ms: number) => `${(mb / (ms / 1000)).toFixed(0)} MB/s (${ms.toFixed(0)} ms)`;

  let t0 = performance.now();
  const { manifest, durationMs } = commitVersion(root, { job: 'big', version: 1, parent: null, createdAt, units: [{ unit: 'u1', node: 'n', durationMs: 0 }] });
  const commitMs = performance.now() - t0;
  t0 = performance.now();
  const hashed = hashFile(file);
  const hashMs = performance.now() - t0;
  t0 = performance.now();
  const verified = verifyVersion(root, 'big', 1);
  const verifyMs = performance.now() - t0;
  t0 = performance.now();
  const reference = sha256sum(file);
  const sumMs = performance.now() - t0;

  assert.is(manifest.units[0]!.files[0]!.sha256, reference);
  assert.is(hashed.sha256, reference);
  assert.is(hashed.bytes, size);
  assert.equal(verified, { ok: true, files: 1, bytes: size });
  console.log(
    `  200 MB: commit (hash + fsync of freshly written data) ${rate(commitMs)} [reported ${durationMs.toFixed(0)} ms]; ` +
      `hashFile (page cache) ${rate(hashMs)}; verifyVersion ${rate(verifyMs)}; sha256sum ${rate(sumMs)}`,
  );
});

test.run();
