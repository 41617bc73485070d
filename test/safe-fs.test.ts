// Files no one else can steer, on real files: what fs.rmSync does with links (why safe-fs exists),
// removal that follows no link, private creation, and the home check naming path and fix.
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { checkPrivateTree, createPrivateFile, makePrivateDir, makePrivateDirs, removeTree, replacePrivateFile, resolveUnder, UnsafePathError } from '../adapters/fs/safe-fs.js';
import { needRoot, suiteRequiring } from './support/prerequisites.js';

const test = suiteRequiring('safe filesystem (as root: ownership checks)', needRoot());

let dir = '';
test.before.each(() => {
  dir = mkdtempSync(join(tmpdir(), 'ckpt-safe-fs-'));
});
test.after.each(() => rmSync(dir, { recursive: true, force: true }));

/** A directory outside the tree, with something that must survive. */
const precious = () => {
  const outside = join(dir, 'outside');
  mkdirSync(join(outside, 'keep'), { recursive: true });
  writeFileSync(join(outside, 'keep', 'f'), 'keep me');
  return outside;
};
const survived = (outside: string) => assert.is(readFileSync(join(outside, 'keep', 'f'), 'utf8'), 'keep me');
const unsafe = (fn: () => unknown, pattern: RegExp) => {
  try {
    fn();
  } catch (e) {
    assert.instance(e, UnsafePathError);
    assert.match((e as Error).message, pattern);
    return;
  }
  assert.unreachable(`no UnsafePathError (${pattern})`);
};

test('fs.rmSync: follows no link below its argument, unlinks a link given as its argument — but resolves links on the way to it', () => {
  const outside = precious();
  mkdirSync(join(dir, 'tree'));
  symlinkSync(outside, join(dir, 'tree', 'link'));
  rmSync(join(dir, 'tree'), { recursive: true, force: true });
  survived(outside);
  symlinkSync(outside, join(dir, 'top'));
  rmSync(join(dir, 'top'), { recursive: true, force: true });
  survived(outside);
  assert.not.ok(existsSync(join(dir, 'top')));
  // The hole: a link in the path (images/JOB/vN → elsewhere, then rm vN/UNIT).
  mkdirSync(join(dir, 'job'));
  symlinkSync(outside, join(dir, 'job', 'v1'));
  rmSync(join(dir, 'job', 'v1', 'keep'), { recursive: true, force: true });
  assert.not.ok(existsSync(join(outside, 'keep')), 'rmSync deleted through the link in its path');
});

test('removeTree unlinks links wherever they are; resolveUnder refuses a link on the way', () => {
  const outside = precious();
  mkdirSync(join(dir, 'tree', 'sub'), { recursive: true });
  symlinkSync(outside, join(dir, 'tree', 'sub', 'link'));
  symlinkSync(join(outside, 'keep', 'f'), join(dir, 'tree', 'file-link'));
  assert.ok(removeTree(join(dir, 'tree')));
  assert.not.ok(existsSync(join(dir, 'tree')));
  survived(outside);
  symlinkSync(outside, join(dir, 'top'));
  assert.ok(removeTree(join(dir, 'top')));
  survived(outside);
  assert.not.ok(removeTree(join(dir, 'top')), 'nothing left to remove');

  mkdirSync(join(dir, 'job'));
  symlinkSync(outside, join(dir, 'job', 'v1'));
  unsafe(() => resolveUnder(dir, 'job', 'v1', 'keep'), /job\/v1 is a symbolic link, not a directory ckpt made: nothing under it was touched/);
  assert.is(resolveUnder(dir, 'job', 'v1'), join(dir, 'job', 'v1'), 'the last segment is for the caller to lstat');
  assert.is(resolveUnder(dir, 'none', 'v1'), undefined);
  assert.throws(() => resolveUnder(dir, '..', 'x'), /invalid path segment/);
  survived(outside);
});

test('private directories and files: 0700 and 0600 whatever the umask, never through a planted link or file', () => {
  const old = process.umask(0);
  try {
    const made = makePrivateDirs(dir, 'a', 'b');
    assert.is(statSync(join(dir, 'a')).mode & 0o777, 0o700);
    assert.is(statSync(made).mode & 0o777, 0o700);
    createPrivateFile(join(made, 'f'), 'x');
    assert.is(statSync(join(made, 'f')).mode & 0o777, 0o600);
    replacePrivateFile(join(made, 'f'), 'y');
    assert.is(readFileSync(join(made, 'f'), 'utf8'), 'y');
    assert.is(statSync(join(made, 'f')).mode & 0o777, 0o600);
  } finally {
    process.umask(old);
  }
  const outside = precious();
  symlinkSync(outside, join(dir, 'planted'));
  unsafe(() => makePrivateDir(join(dir, 'planted')), /planted is a symbolic link where ckpt keeps a directory of its own/);
  symlinkSync(join(outside, 'keep', 'f'), join(dir, 'script'));
  assert.throws(() => createPrivateFile(join(dir, 'script'), 'evil'), /EEXIST/);
  survived(outside);
  writeFileSync(join(dir, 'file'), '');
  unsafe(() => makePrivateDir(join(dir, 'file')), /is not a directory/);
  mkdirSync(join(dir, 'theirs'));
  chownSync(join(dir, 'theirs'), 65534, 65534);
  unsafe(() => makePrivateDir(join(dir, 'theirs')), /theirs is owned by uid 65534: run chown root/);
});

test('checkPrivateTree names the first path others could steer and how to fix it', () => {
  const home = join(dir, 'home');
  checkPrivateTree(home); // absent: ckpt creates it 0700
  mkdirSync(join(home, 'images', 'job'), { recursive: true, mode: 0o700 });
  writeFileSync(join(home, 'events.db'), '', { mode: 0o644 });
  checkPrivateTree(home);

  chmodSync(join(home, 'images', 'job'), 0o770);
  unsafe(() => checkPrivateTree(home), new RegExp(`^${join(home, 'images', 'job')} is group-writable \\(mode 0770\\): run chmod go-w ${join(home, 'images', 'job')}$`));
  chmodSync(join(home, 'images', 'job'), 0o700);
  chmodSync(join(home, 'events.db'), 0o646);
  unsafe(() => checkPrivateTree(home), /events\.db is other-writable \(mode 0646\): run chmod go-w/);
  chmodSync(join(home, 'events.db'), 0o600);
  chownSync(join(home, 'images'), 65534, 65534);
  unsafe(() => checkPrivateTree(home), new RegExp(`${join(home, 'images')} is owned by uid 65534, not by root: run chown root ${join(home, 'images')}`));
  chownSync(join(home, 'images'), 0, 0);
  symlinkSync('/etc', join(home, 'images', 'job', 'v1'));
  unsafe(() => checkPrivateTree(home), /images\/job\/v1 is a symbolic link inside CKPT_HOME/);
  rmSync(join(home, 'images', 'job', 'v1'));
  checkPrivateTree(home);

  // Above the home: a writable directory is refused, a sticky one (like /tmp) is fine, a root
  // link is followed and what it leads to checked.
  chmodSync(dir, 0o777);
  unsafe(() => checkPrivateTree(home), new RegExp(`^${dir} is group- and other-writable \\(mode 0777\\): run chmod go-w ${dir}$`));
  chmodSync(dir, 0o1777);
  checkPrivateTree(home);
  chmodSync(dir, 0o700);
  symlinkSync(home, join(dir, 'via-link'));
  checkPrivateTree(join(dir, 'via-link'));
  chmodSync(join(home, 'images'), 0o777);
  unsafe(() => checkPrivateTree(join(dir, 'via-link')), /images is group- and other-writable/);
  assert.ok(lstatSync(join(dir, 'via-link')).isSymbolicLink());
  unsafe(() => checkPrivateTree('relative/home'), /is not an absolute path/);
});

test.run();
