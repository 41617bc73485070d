// Names become streams, paths and cgroups: every entry point refuses what is not a valid name
// (the codecs for events, the agent for stream names, the CLI for arguments), with a clear message.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { definitionOf } from '../domain/events/catalogue.js';
import { JobId, jobOfStream, NodeId, UnitId } from '../domain/identity.js';
import { CLI } from './support/jobs.js';

const test = suite('names');

const BAD = ['../x', 'a/b', 'x'.repeat(65), 'Upper', '', '.hidden', '-dash', 'a b', 'a\nb'];
const GOOD = ['a', 'job-1', 'web.api_2', 'x'.repeat(64), '0'];

test('JobId, UnitId and NodeId refuse ../x, a/b, 65 characters, upper case, empty (and accept valid names)', () => {
  for (const codec of [JobId, UnitId, NodeId]) {
    for (const name of BAD) assert.not.ok(codec.is(name), `${codec.name} refuses ${JSON.stringify(name)}`);
    for (const name of GOOD) assert.ok(codec.is(name), `${codec.name} accepts ${JSON.stringify(name)}`);
  }
});

test('events naming a job, unit or node by a bad name are refused by the catalogue, naming the field', () => {
  const decode = (type: string, data: object) => {
    return definitionOf(type)!.codec.decode(data)._tag;
  };
  for (const bad of BAD) {
    assert.is(decode('JobSubmitted', { job: bad, owner: { uid: 0 } }), 'Left', `JobSubmitted.job ${JSON.stringify(bad)}`);
    assert.is(decode('UnitAssigned', { unit: bad, node: 'n', command: ['x'], cwd: '/', limits: {} }), 'Left', `UnitAssigned.unit ${JSON.stringify(bad)}`);
    assert.is(decode('UnitAssigned', { unit: 'u', node: bad, command: ['x'], cwd: '/', limits: {} }), 'Left', `UnitAssigned.node ${JSON.stringify(bad)}`);
    assert.is(decode('UnitFreezeRequested', { version: 1, unit: bad, node: 'n' }), 'Left', `UnitFreezeRequested.unit ${JSON.stringify(bad)}`);
  }
  for (const version of [0, -1, 1.5, '1', '../1']) {
    assert.is(decode('UnitFreezeRequested', { version, unit: 'u', node: 'n' }), 'Left', `version ${JSON.stringify(version)}`);
    assert.is(decode('UnitRestoreRequested', { restart: version, unit: 'u', node: 'n' }), 'Left', `restart ${JSON.stringify(version)}`);
  }
});

test('a job stream whose name is not a valid job name is no job: the agent ignores it', () => {
  assert.is(jobOfStream('job-web'), 'web');
  for (const bad of BAD) assert.is(jobOfStream(`job-${bad}`), undefined, `job-${JSON.stringify(bad)}`);
  assert.is(jobOfStream('node-web'), undefined);
});

test('the CLI refuses a bad job, unit or node name before reading or recording anything', () => {
  const home = mkdtempSync(join(tmpdir(), 'ckpt-names-'));
  try {
    const ckpt = (args: string[]) => {
      const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, CKPT_HOME: home, CKPT_STORE: '', CKPT_NODE: 'n' }, encoding: 'utf8' });
      return { code: r.status, err: r.stderr };
    };
    for (const bad of ['../x', 'a/b', 'x'.repeat(65), 'Upper']) {
      for (const command of ['checkpoint', 'restart', 'prune', 'ps', 'verify', 'history', 'checkpoints', 'audit']) {
        const r = ckpt(command === 'prune' ? [command, bad, '--keep', '1'] : [command, bad]);
        assert.is(r.code, 2, `${command} ${bad}: ${r.err}`);
        assert.ok(r.err.startsWith(`ckpt ${command}: job name ${JSON.stringify(bad)} is not valid: use 1–64 lower-case letters`), `${command} ${bad}: ${r.err}`);
      }
      let r = ckpt(['run', '--job', bad, '--', 'true']);
      assert.is(r.code, 2, r.err);
      assert.match(r.err, /^ckpt run: job name ".*" must match/);
      r = ckpt(['run', '--job', 'ok', '--unit', bad, '--', 'true']);
      assert.is(r.code, 2, r.err);
      assert.match(r.err, /^ckpt run: unit name ".*" must match/);
      r = ckpt(['agent', 'status', '--node', bad]);
      assert.is(r.code, 2, r.err);
      assert.match(r.err, /^ckpt agent: node name ".*" must match/);
    }
    // A restart's cgroups are UNIT-rN: a new unit may not be named so (it would share them).
    const r = ckpt(['run', '--job', 'ok', '--unit', 'main-r1', '--', 'true']);
    assert.is(r.code, 2, r.err);
    assert.match(r.err, /unit name "main-r1" ends like a restart of another unit/);
    assert.equal(readdirSync(home), [], 'nothing was created, nothing recorded');
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test.run();
