// The CRIU probe against real CRIU: the probe target, the functional capabilities of CRIU ≥ 4.2,
// CRIU 4.1 forced on a kernel ≥ 6.16 (no inet sockets, said in words a user can act on), the cache
// of the functional results, and install-criu.sh --check. The old CRIU is found via CKPT_CRIU_OLD
// or <repo>/.criu-4.1/bin/criu (.ci/run installs it there with --suite trixie).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import * as assert from 'uvu/assert';
import { compareVersions, criuVersion, DEFAULT_REPO_ROOT, locateCriu } from '../adapters/checkpointers/criu.js';
import { probeCacheKey, probeFunctionsCached, probeTargetPath, readCache } from '../adapters/checkpointers/criu-functional-probe.js';
import { probeCriu } from '../adapters/checkpointers/criu-probe.js';
import { CheckpointerProbed } from '../domain/events/node.js';
import { firstMissing, type Missing, needCommand, needRoot, OLD_CRIU, suiteRequiring } from './support/prerequisites.js';

const INSTALL = 'bash scripts/install-criu.sh';
const newCriu = locateCriu();
const newVersion = newCriu === undefined ? undefined : criuVersion(newCriu);
const oldCriu = OLD_CRIU;
const oldVersion = existsSync(oldCriu) ? criuVersion(oldCriu) : undefined;

const needTarget = (): Missing => (existsSync(probeTargetPath) ? undefined : `needs ${probeTargetPath} (npm run build, with gcc installed)`);
const needUnshare = () => needCommand('unshare', 'apt-get install -y util-linux');
const needNewCriu = (): Missing => (newVersion !== undefined && compareVersions(newVersion, '4.2') >= 0 ? undefined : `needs CRIU ≥ 4.2 (found ${newVersion ?? 'none'}; install: ${INSTALL})`);
const needOldCriu = (): Missing =>
  oldVersion?.startsWith('4.1') === true ? undefined : `needs CRIU 4.1 at $CKPT_CRIU_OLD or .criu-4.1/bin/criu (install: ${INSTALL} --suite trixie --prefix .criu-4.1)`;
const needNewKernel = (): Missing => (compareVersions(release(), '6.16') >= 0 ? undefined : `needs a kernel ≥ 6.16 (this one is ${release()}), where CRIU 4.1 cannot dump inet sockets`);

let work = '';
const tempDir = () => {
  work ||= mkdtempSync(join(tmpdir(), 'ckpt-criu-probe-test-'));
  return mkdtempSync(join(work, 'd-'));
};
process.on('exit', () => {
  if (work !== '') rmSync(work, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
const target = suiteRequiring('criu probe target', firstMissing(needRoot, needTarget));

target('holds what its flags name and proves each works on every TCP connection; --connect reads the answer', async () => {
  const dir = tempDir();
  const lock = join(dir, 'lock');
  const child = spawn(probeTargetPath, ['--udp', '--socketpair', '--pipe', '--flock', lock, '--established'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const ready = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (s: string) => {
        out += s;
        if (out.includes('\n')) resolve(out.trim());
      });
      child.on('exit', (code) => reject(new Error(`the target exited (${code}) before it was ready`)));
    });
    const m = /^ready (\d+) (\d+)$/.exec(ready);
    assert.ok(m, ready);
    assert.is(Number(m![2]), child.pid, 'outside a PID namespace its host pid is its pid');
    const answer = spawnSync(probeTargetPath, ['--connect', m![1]!], { encoding: 'utf8' });
    assert.is(answer.status, 0, answer.stderr);
    assert.is(answer.stdout, 'probe udp=ok socketpair=ok pipe=ok flock=held established=ok\n');
    // Asked again: a fresh line per connection.
    assert.is(spawnSync(probeTargetPath, ['--connect', m![1]!], { encoding: 'utf8' }).stdout, answer.stdout);
    const ino = statSync(lock).ino;
    assert.ok(
      readFileSync('/proc/locks', 'utf8')
        .split('\n')
        .some((l) => l.includes('FLOCK') && l.includes(` ${child.pid} `) && l.includes(`:${ino} `)),
    );
  } finally {
    child.kill('SIGKILL');
  }
});

target('bad arguments: usage on stderr, exit 2', () => {
  const r = spawnSync(probeTargetPath, ['--no-such-flag'], { encoding: 'utf8' });
  assert.is(r.status, 2);
  assert.match(r.stderr, /usage: .* \[--tcp\] \[--udp\]/);
});

target.run();

// ---------------------------------------------------------------------------------------------
const current = suiteRequiring('criu probe (CRIU ≥ 4.2)', firstMissing(needRoot, needTarget, needUnshare, needNewCriu));

current('every functional capability works: inet sockets, established TCP locked by nftables, file locks', async () => {
  const probe = await probeCriu(newCriu!);
  assert.equal(probe.problems, []);
  assert.is(probe.usable, true);
  assert.is(probe.capabilities.inetSockets, true);
  assert.is(probe.capabilities.tcpEstablished, true);
  assert.is(probe.capabilities.networkLock, 'nftables');
  assert.is(probe.capabilities.fileLocks, true);
  // Still from `criu check --feature`, as the kernel says.
  assert.is(probe.capabilities.lazyPages, spawnSync(newCriu!, ['check', '--feature', 'uffd-noncoop']).status === 0);
  assert.is(probe.softDirty, spawnSync(newCriu!, ['check', '--feature', 'mem_dirty_track']).status === 0);
  assert.ok(E.isRight(CheckpointerProbed.codec.decode({ ...probe, node: 'node-1' })));
});

current('the functional results are cached (0600) and used while the key is unchanged; any change of the key re-probes', async () => {
  const cacheFile = join(tempDir(), 'criu-probe.json');
  const first = await probeFunctionsCached(newCriu!, newVersion!, cacheFile);
  assert.is(first.cached, false);
  assert.is(statSync(cacheFile).mode & 0o777, 0o600);
  const second = await probeFunctionsCached(newCriu!, newVersion!, cacheFile);
  assert.is(second.cached, true);
  assert.equal({ ...second, cached: false }, first);

  // probeCriu answers from the cache: a result planted under the same key comes back as is.
  const stored = JSON.parse(readFileSync(cacheFile, 'utf8')) as { key: Record<string, unknown>; result: Record<string, unknown> };
  const key = probeCacheKey(newCriu!, newVersion!);
  assert.equal(stored.key, { ...key });
  writeFileSync(cacheFile, JSON.stringify({ key, result: { ...stored.result, fileLocks: false, problems: ['planted'] } }));
  const planted = await probeCriu(newCriu!, { cacheFile });
  assert.is(planted.capabilities.fileLocks, false);
  assert.equal(planted.problems, ['planted']);

  // Each part of the key invalidates it.
  for (const changed of [{ criu: '/other/criu' }, { mtimeMs: key.mtimeMs + 1 }, { version: '4.2.2' }, { kernel: 'other' }, { bootId: 'other' }]) {
    assert.is(readCache(cacheFile, { ...key, ...changed }), undefined, JSON.stringify(changed));
  }
  writeFileSync(cacheFile, JSON.stringify({ key: { ...key, bootId: 'an-earlier-boot' }, result: { ...stored.result, fileLocks: false, problems: ['planted'] } }));
  const reprobed = await probeCriu(newCriu!, { cacheFile });
  assert.is(reprobed.capabilities.fileLocks, true);
  assert.equal(reprobed.problems, []);
  assert.equal(JSON.parse(readFileSync(cacheFile, 'utf8')).key, { ...key }, 'rewritten with the current key');

  // A damaged cache file is ignored, not trusted.
  writeFileSync(cacheFile, '{"key": 1');
  assert.is(readCache(cacheFile, key), undefined);
});

current('install-criu.sh --check: exit 0 and the path as the last stdout line for a criu that passes the functional probe', () => {
  const r = spawnSync('bash', [join(DEFAULT_REPO_ROOT, 'scripts/install-criu.sh'), '--check', newCriu!], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  assert.is(r.stdout.trim().split('\n').at(-1), newCriu);
  assert.match(r.stderr, /functional probe .* passed/);
});

current.run();

// ---------------------------------------------------------------------------------------------
const old = suiteRequiring('criu probe (CRIU 4.1 forced, kernel ≥ 6.16)', firstMissing(needRoot, needTarget, needUnshare, needOldCriu, needNewKernel));

old('no inet sockets, and the problem says why and what to do; file locks still work', async () => {
  const probe = await probeCriu(oldCriu);
  assert.is(probe.usable, true, 'still usable for jobs that hold no socket');
  assert.is(probe.capabilities.inetSockets, false);
  assert.is(probe.capabilities.tcpEstablished, false);
  assert.is(probe.capabilities.networkLock, null);
  assert.is(probe.capabilities.fileLocks, true);
  assert.is(probe.problems.length, 1, probe.problems.join('\n'));
  const problem = probe.problems[0]!;
  assert.match(problem, /cannot checkpoint any process holding a TCP or UDP socket/);
  assert.match(problem, /Linux 6\.16 getsockopt\(SO_PASSCRED\/SO_PASSSEC\) .* EOPNOTSUPP/);
  assert.match(problem, /install CRIU ≥ 4\.2 with scripts\/install-criu\.sh/);
  assert.match(problem, /Can't get 1:16 opt/, 'and CRIU’s own words');
});

old('install-criu.sh --check: exit 1 saying why', () => {
  const r = spawnSync('bash', [join(DEFAULT_REPO_ROOT, 'scripts/install-criu.sh'), '--check', oldCriu], { encoding: 'utf8' });
  assert.is(r.status, 1);
  assert.is(r.stdout, '');
  assert.match(r.stderr, /does not work here: criu dump .* failed: .*Can't get 1:16 opt.*CRIU >= 4\.2 is needed/);
});

old.run();
