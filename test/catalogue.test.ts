import { readFileSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { catalogue, concerns, definitionOf } from '../domain/events/catalogue.js';
import { decodeEvent, type InvalidEventError } from '../domain/events/decode.js';
import { renderEventsDoc } from '../scripts/events-doc.js';

const test = suite('event catalogue');

const rejection = (type: unknown, data: unknown): InvalidEventError => {
  const result = decodeEvent(type, data);
  if (E.isRight(result)) throw new Error(`${String(type)} should have been rejected`);
  return result.left;
};

test('every event type is defined once, with a kind, a schema version and a summary', () => {
  const types = catalogue.map((d) => d.type);
  assert.is(new Set(types).size, types.length);
  assert.is(
    concerns.reduce((n, c) => n + c.events.length, 0),
    catalogue.length,
  );
  for (const d of catalogue) {
    assert.ok(['request', 'decision', 'outcome', 'observation'].includes(d.kind), d.type);
    assert.is(d.schemaVersion, d.changes.length + 1, `${d.type}: one upcaster per version after the first`);
    for (const c of d.changes) assert.ok(c.change.length > 20, `${d.type}: each version's change is described`);
    assert.ok(d.summary.length > 20, d.type);
    assert.is(definitionOf(d.type), d);
  }
});

test('the concerns the later issues need are all there', () => {
  for (const type of [
    'JobSubmitted',
    'UnitAssigned',
    'UnitCgroupsCreated',
    'UnitLaunched',
    'UnitEnded',
    'JobEnded',
    'ProcessForked',
    'ProcessExecd',
    'ProcessExited',
    'ProcessSessionChanged',
    'ProcessGroupChanged',
    'ProcessCgroupChanged',
    'ProcessObserved',
    'ObservationGap',
    'DependencyObserved',
    'NodeRegistered',
    'CheckpointerProbed',
    'CheckpointRequested',
    'CheckpointPlanned',
    'UnitFreezeRequested',
    'UnitFrozen',
    'UnitFreezeFailed',
    'UnitDumpRequested',
    'UnitDumped',
    'UnitDumpFailed',
    'UnitVerifyRequested',
    'UnitVerified',
    'UnitVerifyFailed',
    'CheckpointCommitRequested',
    'CheckpointCommitted',
    'CheckpointCommitFailed',
    'UnitThawRequested',
    'UnitThawed',
    'UnitThawFailed',
    'CheckpointAbortRequested',
    'UnitAbortRequested',
    'UnitAborted',
    'UnitAbortFailed',
    'CheckpointAborted',
    'RestartRequested',
    'RestartPlanned',
    'UnitRestored',
    'RestartCommitted',
    'RestartFailed',
    'DeadlineScheduled',
    'DeadlineReached',
    'RequestRejected',
  ]) {
    assert.ok(definitionOf(type), `${type} is in the catalogue`);
  }
});

test('a valid event decodes; unknown fields are stripped', () => {
  const result = decodeEvent('ProcessExited', { node: 'n1', unit: 'u1', process: { pid: 4, startTime: 9 }, status: null, signal: 9, bogus: 1 });
  assert.ok(E.isRight(result));
  if (E.isRight(result)) assert.equal(result.right.data, { node: 'n1', unit: 'u1', process: { pid: 4, startTime: 9 }, status: null, signal: 9 });
});

test('a bad event names its type, each field path, what was expected and the value', () => {
  const error = rejection('ProcessExited', { node: 'n1', unit: 'u1', process: { pid: 'abc', startTime: 5 }, status: -1 });
  assert.is(error.eventType, 'ProcessExited');
  assert.equal(
    error.problems.map((p) => p.path),
    ['data.process.pid', 'data.status'],
  );
  assert.is(error.message, 'invalid ProcessExited event: data.process.pid: expected integer ≥ 1, got "abc"; data.status: expected integer ≥ 0 or null, got -1');
  assert.match(rejection('JobSubmitted', { job: 'Bad Name', owner: {} }).message, 'data.job: expected name matching');
  assert.match(rejection('JobSubmitted', { job: 'ok', owner: {} }).message, 'data.owner.uid: expected integer ≥ 0, got nothing');
  assert.match(rejection('UnitAssigned', { unit: 'u', node: 'n', command: ['a', 3], cwd: '/', limits: {} }).message, 'data.command.1: expected string, got 3');
  assert.match(rejection('DeadlineScheduled', { deadline: 'd', at: 'yesterday', purpose: 'p' }).message, 'data.at: expected ISO-8601 UTC timestamp, got "yesterday"');
  assert.match(rejection('Nope', {}).message, 'type: expected an event type of the catalogue');
  assert.match(rejection(undefined, {}).message, 'type: expected an event type name');
  assert.match(rejection('ProcessForked', null).message, 'data: expected');
});

test('docs/events.md is generated from the catalogue and up to date', () => {
  const doc = readFileSync(new URL('../../docs/events.md', import.meta.url), 'utf8');
  assert.ok(doc === renderEventsDoc(), 'docs/events.md is stale: run `npm run build && node dist/scripts/events-doc.js`');
  for (const d of catalogue) assert.match(doc, `| \`${d.type}\` |`);
});

test.run();
