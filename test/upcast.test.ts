// Upcasting: rows recorded with an older schema version read back in the current shape, on a real
// SQLite store, with their digests still covering what was stored; the coordinator decides from
// the upcast shape; a version newer than this ckpt knows is refused, naming the type and versions.
// On PostgreSQL the old row is appended as an older ckpt sent it. The recorded histories
// (test/histories, CheckpointRequested v1) are re-derived by histories.test.ts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chainDigest, contentDigest, GENESIS, verifyChain } from '../adapters/store/chain.js';
import { openEventStore } from '../adapters/store/open.js';
import { SqliteEventStore } from '../adapters/store/sqlite.js';
import { rederive } from '../domain/decider.js';
import { type ProposedEvent, type RecordedEvent, UnreadableEventError } from '../domain/event-store.js';
import { definitionOf } from '../domain/events/catalogue.js';
import { SchemaVersionError, upcast } from '../domain/events/upcast.js';
import { either as E } from '../domain/io-ts.js';
import { jobCoordinator } from '../domain/job-coordinator.js';
import { jobOn, probe } from './support/coordinator.js';
import { needPostgres, type PostgresCluster, startPostgres } from './support/postgres.js';
import { suiteRequiring } from './support/prerequisites.js';

const dir = mkdtempSync(join(tmpdir(), 'ckpt-upcast-'));
const requested = definitionOf('CheckpointRequested')!;
const v1 = { request: 'c1', stop: false, timeoutMs: 30_000, tcpEstablished: true, freezeBudgetMs: 500 };
const v2 = { request: 'c1', stop: false, timeoutMs: 30_000, options: { tcpEstablished: true }, freezeBudgetMs: 500 };

const test = suite('upcast of older schema versions');
test.after(() => rmSync(dir, { recursive: true, force: true }));

test('CheckpointRequested v1 → v2: the options move into options, the stored data is not changed', () => {
  assert.is(requested.schemaVersion, 2);
  const stored = structuredClone(v1);
  assert.equal(upcast(requested, 1, stored), E.right(v2));
  assert.equal(stored, v1, 'the upcaster leaves its argument alone');
  const plain = { request: 'c1', stop: true, timeoutMs: 1000 };
  assert.equal(upcast(requested, 1, plain), E.right(plain), 'no option: no options field (as the CLI writes it)');
  assert.equal(upcast(requested, 1, { ...plain, fileLocks: false }), E.right({ ...plain, options: { fileLocks: false } }));
  assert.equal(upcast(requested, 2, v2), E.right(v2), 'the current version is read as it is');
});

test('a version this ckpt cannot read is refused, naming the type and the versions', () => {
  const newer = upcast(requested, 7, v2);
  assert.ok(E.isLeft(newer) && newer.left instanceof SchemaVersionError);
  assert.is(
    E.isLeft(newer) && newer.left.message,
    'CheckpointRequested was recorded with schema version 7; this ckpt reads versions 1 to 2 of it (a newer ckpt wrote it: read it with that version or newer)',
  );
  const never = upcast(requested, 0, v1);
  assert.is(E.isLeft(never) && never.left.message, 'CheckpointRequested has schema version 0, which never existed (versions 1 to 2)');
});

/** Inserts a row behind the store's back, as an older (or newer) ckpt wrote it, chained as the store chains. */
const insertRaw = (path: string, stream: string, type: string, schemaVersion: number, data: unknown) => {
  const db = new Database(path);
  try {
    db.transaction(() => {
      const known = db.prepare('SELECT id, revision, digest FROM streams WHERE name = ?').get(stream) as { id: number; revision: number; digest: string | null } | undefined;
      const streamId = known?.id ?? Number(db.prepare('INSERT INTO streams (name, revision) VALUES (?, -1)').run(stream).lastInsertRowid);
      const revision = (known?.revision ?? -1) + 1;
      const previous = known?.digest ?? GENESIS;
      const id = `00000000-0000-4000-8000-${String(revision).padStart(12, '0')}`;
      const metadata = { actor: { kind: 'user', uid: 0 }, recordedAt: '2026-11-01T00:00:00.000Z', correlationId: 'c1' };
      const digest = chainDigest(previous, contentDigest({ stream, id, type, schemaVersion, data, metadata }), revision);
      db.prepare('INSERT INTO events (stream_id, revision, id, type, schema_version, data, metadata, digest, previous) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)').run(
        streamId,
        revision,
        id,
        type,
        schemaVersion,
        JSON.stringify(data),
        JSON.stringify(metadata),
        Buffer.from(digest, 'hex'),
        Buffer.from(previous, 'hex'),
      );
      db.prepare('UPDATE streams SET revision = ?, digest = ? WHERE id = ?').run(revision, digest, streamId);
    })();
  } finally {
    db.close();
  }
};

const withStore = async <T>(path: string, use: (store: SqliteEventStore) => Promise<T>): Promise<T> => {
  const store = new SqliteEventStore(path);
  try {
    return await use(store);
  } finally {
    await store.close();
  }
};

test('a v1 row in a real SQLite store reads back as v2, its digest still that of the row as stored', async () => {
  const path = join(dir, 'old-row.db');
  await withStore(path, async (store) => {
    await store.append('node-n1', [probe('n1')]);
    await store.append('job-j', jobOn(['n1']));
  });
  insertRaw(path, 'job-j', 'CheckpointRequested', 1, v1);
  await withStore(path, async (store) => {
    const event = (await store.readStream('job-j', { direction: 'backwards', limit: 1 }))[0]!;
    assert.is(event.type, 'CheckpointRequested');
    assert.is(event.schemaVersion, 2);
    assert.equal(event.data, v2);
    // Printed as stored (ckpt log --json, ckpt export): its digest is recomputed from exactly that.
    const printed = JSON.parse(JSON.stringify(event)) as { schemaVersion: number; data: unknown };
    assert.equal([printed.schemaVersion, printed.data], [1, v1]);
    assert.is((await verifyChain(store)).problem, undefined);

    // The coordinator decides from the upcast shape: the request's option is fixed by the plan.
    const coordinator = jobCoordinator('j');
    const history = await store.readAll({ limit: 1000 });
    const state = history.filter(coordinator.concerns).reduce(coordinator.evolve, coordinator.initial);
    const decisions = coordinator.decide(state, event);
    const plan = decisions.find((d) => d.type === 'CheckpointPlanned') as (ProposedEvent & { type: 'CheckpointPlanned' }) | undefined;
    assert.equal(plan?.data.options, { tcpEstablished: true, fileLocks: false });
    await store.append(
      'job-j',
      decisions.map((d) => ({ ...d, metadata: { decidedAt: event.position, causationId: event.id, actor: { kind: 'coordinator' } } }) as ProposedEvent),
    );
    const replayed = rederive(coordinator, await store.readAll({ limit: 1000 }));
    assert.equal([replayed.checked, replayed.differences], [1, []]);
  });
});

test('a row of a newer schema version than this ckpt knows is refused on read, naming where, the type and the versions', async () => {
  const path = join(dir, 'newer-row.db');
  await withStore(path, (store) => store.append('job-j', jobOn(['n1']).slice(0, 1)));
  insertRaw(path, 'job-j', 'CheckpointRequested', 7, { ...v2, somethingNew: 1 });
  await withStore(path, async (store) => {
    const error = await store.readStream('job-j').then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.instance(error, UnreadableEventError);
    assert.match((error as Error).message, /^event at position 2 \(stream job-j, revision 1\): CheckpointRequested was recorded with schema version 7; this ckpt reads versions 1 to 2 of it/);
    const first: RecordedEvent[] = await store.readStream('job-j', { limit: 1 });
    assert.is(first[0]!.type, 'JobSubmitted', 'the rows before it still read');
  });
});

test.run();

const postgres = suiteRequiring('upcast of older schema versions: PostgreSQL', needPostgres());
let cluster: PostgresCluster;
postgres.before(async () => {
  cluster = await startPostgres();
});
postgres.after(async () => {
  await cluster?.stop();
});

postgres('a v1 row appended through ckpt_append as an older ckpt sent it reads back as v2; the chain holds', async () => {
  const url = await cluster.database();
  const store = openEventStore(url);
  try {
    await store.append('job-j', jobOn(['n1']).slice(0, 1)); // creates the schema
    const id = '00000000-0000-4000-8000-000000000001';
    const metadata = { actor: { kind: 'user', uid: 0 }, recordedAt: '2026-11-01T00:00:00.000Z' };
    const content = contentDigest({ stream: 'job-j', id, type: 'CheckpointRequested', schemaVersion: 1, data: v1, metadata });
    const db = new pg.Client({ connectionString: url });
    await db.connect();
    try {
      const batch = [{ id, type: 'CheckpointRequested', v: 1, c: content, data: v1, metadata }];
      await db.query('SELECT * FROM ckpt_append($1, $2, $3::json)', ['job-j', 'any', JSON.stringify(batch)]);
    } finally {
      await db.end();
    }
    const event = (await store.readStream('job-j'))[1]!;
    assert.equal([event.type, event.schemaVersion, event.data], ['CheckpointRequested', 2, v2]);
    assert.equal((JSON.parse(JSON.stringify(event)) as { data: unknown }).data, v1);
    assert.is((await verifyChain(store)).problem, undefined);
  } finally {
    await store.close();
  }
});

postgres.run();
