// Recorded real histories (test/histories/*.ndjson, written by `ckpt export` from real agents and
// CRIU) re-derived with this code by `ckpt verify --history`: a change that alters a past decision
// fails here, naming the event. And files that are not what they say are refused, line by line.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';

const CLI = fileURLToPath(new URL('../adapters/cli/main.js', import.meta.url));
const RECORDED = fileURLToPath(new URL('../../test/histories/', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'ckpt-histories-'));
const verify = (...args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, 'verify', '--history', ...args], { encoding: 'utf8', env: { ...process.env, CKPT_HOME: work } });
  return { code: r.status, out: r.stdout, err: r.stderr };
};
const files = readdirSync(RECORDED)
  .filter((f) => f.endsWith('.ndjson'))
  .map((f) => join(RECORDED, f));
const lines = (file: string) =>
  readFileSync(file, 'utf8')
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, any>);
const write = (name: string, rows: unknown[]) => {
  const path = join(work, name);
  writeFileSync(path, rows.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n');
  return path;
};

const test = suite('recorded histories re-derived (ckpt verify --history)');
test.after(() => rmSync(work, { recursive: true, force: true }));

test('every recorded history re-derives identically with this code', () => {
  assert.ok(files.length > 0, 'recorded histories in test/histories');
  const r = verify(...files);
  assert.is(r.code, 0, r.err);
  for (const f of files) assert.match(r.out, new RegExp(`${f}: \\S+: all \\d+ recorded decisions re-derived identically from \\d+ events`));
  const json = JSON.parse(verify('--json', ...files).out) as Array<{ file: string; checked: number; differences: unknown[] }>;
  assert.ok(json.every((j) => j.checked > 0 && j.differences.length === 0));
});

test('a changed decision is found, naming the event it answered', () => {
  const rows = lines(files[0]!);
  const planned = rows.filter((r) => r.type === 'CheckpointPlanned');
  planned.at(-1)!.data.units[0].scope = planned.at(-1)!.data.units[0].scope === 'cgroup' ? 'tree' : 'cgroup';
  const r = verify(write('changed.ndjson', rows));
  assert.is(r.code, 1);
  assert.match(r.err, /1 of \d+ recorded decisions differ from what this ckpt decides:\n {2}after event \d+ \(\w+\):\n {4}recorded: {3}CheckpointPlanned /);
});

test('the recorded CheckpointRequested (schema version 1) is upcast: its option reaches the plan re-derived from it', () => {
  const rows = lines(files[0]!);
  const request = rows.find((r) => r.type === 'CheckpointRequested')!;
  assert.is(request.schemaVersion, 1, 'recorded with the old version: keep the files as they are');
  request.data.tcpEstablished = true;
  const plan = rows.find((r) => r.type === 'CheckpointPlanned' && r.data.request === request.data.request)!;
  const r = verify(write('v1-option-unplanned.ndjson', rows));
  assert.is(r.code, 1, 'the v1 option is read: the plan recorded without it now differs');
  assert.match(r.err, new RegExp(`after event ${request.position} \\(CheckpointRequested\\):\\n    recorded:   CheckpointPlanned `));
  plan.data.options = { tcpEstablished: true, fileLocks: false };
  const planned = verify(write('v1-option-planned.ndjson', rows));
  assert.is(planned.code, 0, planned.err);
});

test('a file that is not what it says: refused, naming the line and what is wrong', () => {
  const rows = lines(files[0]!);
  const cases: Array<[unknown[], RegExp]> = [
    [[{ format: 'something-else' }], /:1: not an exported ckpt history/],
    [[{ ...rows[0], formatVersion: 2 }], /:1: history format 2; this ckpt reads format 1/],
    [[rows[0], rows[1], 'not json'], /:3: not a JSON object/],
    [[rows[0], { ...rows[1], type: 'NoSuchEvent' }], /:2: NoSuchEvent: field type/],
    [[rows[0], { ...rows[1], schemaVersion: 7 }], /:2: \w+ was recorded with schema version 7; this ckpt reads version 1 of it \(a newer ckpt wrote it/],
    [[rows[0], { ...rows[1], data: { ...rows[1]!.data, node: 42 } }], /:2: \w+: field /],
    [[rows[0], rows[2], rows[1]], /:3: position must be an integer after/],
    [[rows[0], { ...rows[1], metadata: { recordedAt: rows[1]!.metadata.recordedAt } }], /:2: \w+: field metadata: expected an object with actor and recordedAt/],
    [rows.slice(0, -1), /: the header says \d+ events, the file holds \d+ \(an export cut short\?\)/],
  ];
  for (const [i, [content, expected]] of cases.entries()) {
    const r = verify(write(`bad-${i}.ndjson`, content));
    assert.is(r.code, 1, `case ${i}`);
    assert.match(r.err, expected, `case ${i}: ${r.err}`);
  }
  assert.is(verify().code, 2, 'no file: a usage error');
  assert.match(verify(join(work, 'missing.ndjson')).err, /missing\.ndjson: cannot be read/);
});

test.run();
