import pg from 'pg';
import * as assert from 'uvu/assert';
import { verifyChain } from '../adapters/store/chain.js';
import { openEventStore } from '../adapters/store/open.js';
import { LeaseRefusedError, type RecordedEvent, WrongExpectedRevisionError } from '../domain/event-store.js';
import { storeContract } from './store-contract.js';
import { marker, markerOf } from './support/events.js';
import { needPostgres, type PostgresCluster, startPostgres } from './support/postgres.js';
import { suiteRequiring } from './support/prerequisites.js';

let cluster: PostgresCluster;
const test = suiteRequiring('postgres store contract', needPostgres());
test.before(async () => {
  cluster = await startPostgres();
});
test.after(async () => {
  await cluster?.stop();
});
storeContract(test, { fresh: () => cluster.database(), shared: true });
test.run();

// The gap problem: a transaction that took position P but commits after a later one must still
// be delivered. A trigger makes appends to `stall-*` streams wait (after taking their position)
// on an advisory lock the test holds, so the "slow commit" is deterministic.
const gap = suiteRequiring('postgres: events committed out of order are never skipped', needPostgres());
gap.before(async () => {
  cluster = await startPostgres();
});
gap.after(async () => {
  await cluster?.stop();
});

gap('a subscriber never delivers a later position before an earlier one commits', async () => {
  const url = await cluster.database();
  const slow = openEventStore(url);
  const fast = openEventStore(url);
  const reader = openEventStore(url);
  await slow.append('job-warm', [marker('warm')]); // creates the schema
  const admin = await cluster.admin();
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  await db.query(`
    CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN IF NEW.stream LIKE 'stall-%' THEN PERFORM pg_advisory_xact_lock_shared(4242); END IF; RETURN NEW; END $$;
    CREATE TRIGGER stall AFTER INSERT ON ckpt_events FOR EACH ROW EXECUTE FUNCTION stall();`);
  await db.query('SELECT pg_advisory_lock(4242)');

  const received: RecordedEvent[] = [];
  const subscription = reader.subscribeAll({ from: 1 }).subscribe((e) => received.push(e));
  try {
    const slowAppend = slow.append('stall-a', [marker('slow')]);
    // Wait until the slow append holds its position (it is blocked inside its transaction).
    for (;;) {
      const { rows } = await admin.query("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted");
      if (rows[0].n > 0) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    // The later append commits without waiting (schema 4), but no reader may see it yet.
    const fastResult = await fast.append('job-b', [marker('fast')]);
    const warm = (await reader.readStream('job-warm'))[0]!.position;
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(received.map(markerOf), ['warm'], 'nothing after the stalled position is delivered');
    assert.equal((await reader.readAll()).map(markerOf), ['warm'], 'nor read');
    assert.is(await reader.headPosition(), warm, 'the head is the last event every reader may see');

    await db.query('SELECT pg_advisory_unlock(4242)');
    const slowResult = await slowAppend;
    assert.ok(slowResult.position < fastResult.position);
    for (let i = 0; i < 500 && received.length < 3; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(received.map(markerOf), ['warm', 'slow', 'fast']);
  } finally {
    subscription.unsubscribe();
    await db.query('SELECT pg_advisory_unlock_all()');
    await Promise.all([db.end(), admin.end(), slow.close(), fast.close(), reader.close()]);
  }
});

gap('many writers on many connections: a live reader sees every event once, in position order', async () => {
  const url = await cluster.database();
  const writers = Array.from({ length: 6 }, () => openEventStore(url));
  const reader = openEventStore(url);
  await writers[0]!.append('job-warm', [marker('warm')]);
  const received: RecordedEvent[] = [];
  const subscription = reader.subscribeAll().subscribe((e) => received.push(e));
  await Promise.all(
    writers.map(async (w, i) => {
      for (let b = 0; b < 40; b++)
        await w.append(
          `job-${i}-${b % 5}`,
          Array.from({ length: 1 + ((b * 7) % 13) }, (_, k) => marker(`${i} ${b} ${k}`)),
        );
    }),
  );
  const head = await reader.headPosition();
  for (let i = 0; i < 1000 && received[received.length - 1]?.position !== head; i++) await new Promise((r) => setTimeout(r, 10));
  subscription.unsubscribe();
  const all = await reader.readAll({ limit: 10_000 });
  const delivered = new Set(received.map((e) => e.position));
  assert.equal(
    all.filter((e) => !delivered.has(e.position)).map((e) => e.position),
    [],
    'positions the live reader skipped',
  );
  assert.is(received.length, all.length, 'no event delivered twice');
  for (let i = 1; i < received.length; i++) assert.ok(received[i]!.position > received[i - 1]!.position);
  await Promise.all([...writers, reader].map((s) => s.close()));
});

gap.run();

// Appends from many store instances at once (schema 4 lets them commit concurrently): a live
// subscriber must still see the log exactly as it ends up, and each stream's revisions unbroken.
const load = suiteRequiring('postgres: concurrent appenders, one live follower', needPostgres());
load.before(async () => {
  cluster = await startPostgres();
});
load.after(async () => {
  await cluster?.stop();
});

load('8 stores append batches to shared and own streams while a subscriber follows: every event once, in order, nothing skipped', async () => {
  const url = await cluster.database();
  const writers = Array.from({ length: 8 }, () => openEventStore(url));
  const reader = openEventStore(url);
  await writers[0]!.append('job-warm', [marker('warm')]);
  const received: RecordedEvent[] = [];
  const subscription = reader.subscribeAll().subscribe((e) => received.push(e));
  await Promise.all(
    writers.map(async (w, i) => {
      for (let b = 0; b < 60; b++) {
        const size = 1 + ((b * 37 + i * 11) % 60);
        const events = Array.from({ length: size }, (_, k) => marker(`${i} ${b} ${k}`));
        if (b % 3 === 0) {
          // Streams every writer appends to: same-stream appends serialise, with exact revisions some lose.
          const stream = `job-shared-${b % 4}`;
          const revision = await w.streamRevision(stream);
          await w.append(stream, events, { expectedRevision: revision ?? 'no_stream' }).catch((error: Error) => {
            if (!(error instanceof WrongExpectedRevisionError)) throw error;
          });
        } else {
          await w.append(`job-${i}-${b % 5}`, events);
        }
      }
    }),
  );
  const all: RecordedEvent[] = [];
  for (let page = await reader.readAll({ limit: 5000 }); page.length > 0; page = await reader.readAll({ from: page[page.length - 1]!.position + 1, limit: 5000 })) all.push(...page);
  const last = all[all.length - 1]!.position;
  assert.is(await reader.headPosition(), last);
  for (let i = 0; i < 3000 && received[received.length - 1]?.position !== last; i++) await new Promise((r) => setTimeout(r, 10));
  subscription.unsubscribe();

  assert.equal(
    received.map((e) => e.position),
    all.map((e) => e.position),
    'the follower delivered exactly the final log, in position order',
  );
  assert.equal(
    received.map((e) => e.id),
    all.map((e) => e.id),
  );
  const revisions = new Map<string, number[]>();
  for (const e of received) revisions.set(e.stream, [...(revisions.get(e.stream) ?? []), e.revision]);
  for (const [stream, seen] of revisions) assert.equal(seen, [...seen.keys()], `${stream}: revisions 0… without a hole, in delivery order`);
  assert.ok(revisions.size > 30, 'every writer wrote its own streams');
  const report = await verifyChain(reader);
  assert.equal([report.problem, report.events], [undefined, all.length], 'the digest chain of every stream holds');
  // What makes it gap-free: positions ascend with transaction ids (a race the follower may not hit, the table keeps).
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM (SELECT txid < lag(txid) OVER (ORDER BY position) AS behind FROM ckpt_events) AS o WHERE behind');
  await db.end();
  assert.is(rows[0]!.n, 0, 'events whose position is after that of a younger transaction');
  await Promise.all([...writers, reader].map((s) => s.close()));
});

load('ckpt_append refuses to run after another write in the same transaction (its position would not follow its xid)', async () => {
  const url = await cluster.database();
  const store = openEventStore(url);
  await store.append('job-warm', [marker('warm')]);
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    await db.query('BEGIN');
    await db.query("INSERT INTO ckpt_meta (key, value) VALUES ('x', 'y')");
    const digest = 'a'.repeat(64);
    const batch = JSON.stringify([{ id: '00000000-0000-4000-8000-000000000001', type: 'DeadlineScheduled', v: 1, c: digest, data: marker('late').data, metadata: {} }]);
    const error = await db.query("SELECT * FROM ckpt_append('job-late', 'any', $1::json)", [batch]).catch((e: Error) => e);
    assert.instance(error, Error);
    assert.match((error as Error).message, 'must be the first write of its transaction');
    await db.query('ROLLBACK');
    // The session lock was not left behind: the next append goes through.
    await store.append('job-after', [marker('after')]);
  } finally {
    await db.end();
    await store.close();
  }
});

load.run();

/** Schema 3's ckpt_append, as released (adapters/store/postgres.ts before schema 4): lock to commit, no txid. */
const SCHEMA_3_APPEND = `
CREATE OR REPLACE FUNCTION ckpt_append(p_stream text, p_expected text, p_batch json)
RETURNS TABLE (revision bigint, "position" bigint) LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
  current bigint;
  head text;
  last_position bigint;
  n int := json_array_length(p_batch);
  digests text[] := '{}';
  previous text[] := '{}';
  d text;
  ev record;
BEGIN
  PERFORM pg_advisory_xact_lock(109313099300866);
  SELECT s.revision, s.digest INTO current, head FROM ckpt_streams s WHERE s.name = p_stream;
  IF (p_expected = 'no_stream' AND current IS NOT NULL)
     OR (p_expected = 'stream_exists' AND current IS NULL)
     OR (p_expected ~ '^[0-9]+$' AND current IS DISTINCT FROM p_expected::bigint) THEN
    RAISE EXCEPTION 'wrong expected revision for %', p_stream
      USING ERRCODE = 'CK409', DETAIL = coalesce(current::text, 'no_stream');
  END IF;
  current := coalesce(current, -1);
  d := coalesce(head, '0000000000000000000000000000000000000000000000000000000000000000');
  FOR ev IN SELECT x.value, x.ord FROM json_array_elements(p_batch) WITH ORDINALITY AS x(value, ord) ORDER BY x.ord LOOP
    IF coalesce(ev.value->>'c', '') !~ '^[0-9a-f]{64}$' THEN
      RAISE EXCEPTION 'ckpt_append: event % of the batch has no content digest: this log has a digest chain, upgrade ckpt', ev.ord;
    END IF;
    previous := previous || d;
    d := encode(sha256(decode(d, 'hex') || decode(ev.value->>'c', 'hex') || int8send(current + ev.ord)), 'hex');
    digests := digests || d;
  END LOOP;
  INSERT INTO ckpt_events (stream, revision, id, type, schema_version, data, metadata, digest, previous, appended_by)
  SELECT p_stream, current + e.ord, (e.value->>'id')::uuid, e.value->>'type', (e.value->>'v')::int, e.value->'data', e.value->'metadata',
         digests[e.ord], previous[e.ord], session_user
  FROM json_array_elements(p_batch) WITH ORDINALITY AS e(value, ord)
  ORDER BY e.ord;
  last_position := currval(pg_get_serial_sequence('ckpt_events', 'position'));
  INSERT INTO ckpt_streams AS s (name, revision, digest) VALUES (p_stream, current + n, d)
  ON CONFLICT (name) DO UPDATE SET revision = excluded.revision, digest = excluded.digest;
  PERFORM pg_notify('ckpt_events', '');
  RETURN QUERY SELECT current + n, last_position;
END $$;
`;

/** Schema 4 had no leases: what schema 5 added, taken away again. */
const DROP_LEASES = 'DROP TABLE ckpt_leases; DROP FUNCTION ckpt_renew_lease(text, jsonb, bigint); DROP FUNCTION ckpt_release_lease(text);';

// Schema 3 (one lock held to commit) → 4: existing rows stay readable in place, appends then
// record their transaction ids, and the follower still sees everything.
const migration = suiteRequiring('postgres: schema 3 migrates to 4', needPostgres());
migration.before(async () => {
  cluster = await startPostgres();
});
migration.after(async () => {
  await cluster?.stop();
});

migration('a schema 3 log: old events keep their positions, the new ckpt_append is installed, reading and appending go on', async () => {
  const url = await cluster.database();
  const first = openEventStore(url);
  await first.append('job-old', [marker('old 0'), marker('old 1')]);
  await first.append('job-other', [marker('old 2')]);
  await first.close();
  // Back to schema 3 as it was: no txid column, schema 3's function, version 3.
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  await db.query(`ALTER TABLE ckpt_events DROP COLUMN txid; ${DROP_LEASES} UPDATE ckpt_schema SET version = 3; ${SCHEMA_3_APPEND}`);
  const before = await db.query<{ position: string; id: string }>('SELECT position, id FROM ckpt_events ORDER BY position');
  assert.is(before.rows.length, 3);

  // A node agent's role may not migrate: it is told who can.
  const admin = await cluster.admin();
  await admin.query('CREATE ROLE ckpt_agents NOLOGIN; CREATE ROLE ckpt_agent_n1 LOGIN IN ROLE ckpt_agents');
  await admin.end();
  await db.query('GRANT EXECUTE ON FUNCTION ckpt_append(text, text, json) TO ckpt_agents; GRANT SELECT ON ckpt_schema, ckpt_streams, ckpt_events, ckpt_meta TO ckpt_agents');
  const agent = openEventStore(url.replace('postgres://postgres@', 'postgres://ckpt_agent_n1@'));
  const refused = await agent.headPosition().catch((e: Error) => e);
  await agent.close();
  assert.instance(refused, Error);
  assert.match((refused as Error).message, 'has event log schema 3, this ckpt needs schema 5: run ckpt once as the role that owns');

  const store = openEventStore(url);
  try {
    const old = await store.readAll();
    assert.equal(
      old.map((e) => [String(e.position), e.id]),
      before.rows.map((r) => [r.position, r.id]),
      'old events read as they were',
    );
    const appended = await store.append('job-old', [marker('new 0')], { expectedRevision: 1 });
    assert.is(appended.revision, 2);
    assert.ok(appended.position > Number(before.rows[2]!.position));
    const { rows } = await db.query<{ version: number; txid: string; source: string }>(
      "SELECT (SELECT max(version) FROM ckpt_schema) AS version, (SELECT txid::text FROM ckpt_events WHERE position = $1) AS txid, (SELECT prosrc FROM pg_proc WHERE proname = 'ckpt_append') AS source",
      [appended.position],
    );
    assert.is(rows[0]!.version, 5, 'migrated on through 4 to 5');
    assert.ok(BigInt(rows[0]!.txid) > 0n, 'the new append recorded its transaction id');
    assert.match(rows[0]!.source, 'pg_current_xact_id()');
    assert.equal((await store.readAll()).map(markerOf), ['old 0', 'old 1', 'old 2', 'new 0']);
    const report = await verifyChain(store);
    assert.equal([report.problem, report.events], [undefined, 4]);
    // The agent appends through the new function, still recorded as itself.
    const migrated = openEventStore(url.replace('postgres://postgres@', 'postgres://ckpt_agent_n1@'));
    const byAgent = await migrated.append('job-old', [marker('by agent')]);
    await migrated.close();
    const who = await db.query<{ appended_by: string }>('SELECT appended_by FROM ckpt_events WHERE position = $1', [byAgent.position]);
    assert.equal(who.rows, [{ appended_by: 'ckpt_agent_n1' }]);
  } finally {
    await db.end();
    await store.close();
  }
});

migration.run();

// Schema 4 → 5: the lease table and its two functions, granted to the roles README.md describes;
// a lease tied to the role that recorded the node's agent start.
const leases = suiteRequiring('postgres: schema 4 migrates to 5; leases and per-node roles', needPostgres());
leases.before(async () => {
  cluster = await startPostgres();
});
leases.after(async () => {
  await cluster?.stop();
});

leases('a schema 4 log gains leases; an agent role renews only the lease of the node it registered; readers read; nobody writes the table directly', async () => {
  const url = await cluster.database();
  const owner = openEventStore(url);
  await owner.append('job-old', [marker('old 0')]);
  await owner.close();
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  await db.query(`${DROP_LEASES} UPDATE ckpt_schema SET version = 4;`);
  const admin = await cluster.admin();
  await admin.query(`CREATE ROLE ckpt_agents NOLOGIN; CREATE ROLE ckpt_readers NOLOGIN;
    CREATE ROLE ckpt_agent_n1 LOGIN IN ROLE ckpt_agents; CREATE ROLE ckpt_agent_n2 LOGIN IN ROLE ckpt_agents; CREATE ROLE alice LOGIN IN ROLE ckpt_readers;`);
  await admin.end();
  await db.query('GRANT EXECUTE ON FUNCTION ckpt_append(text, text, json) TO ckpt_agents; GRANT SELECT ON ckpt_schema, ckpt_streams, ckpt_events, ckpt_meta TO ckpt_agents, ckpt_readers');
  const as = (role: string) => openEventStore(url.replace('postgres://postgres@', `postgres://${role}@`));

  const early = as('ckpt_agent_n1');
  const refused = await early.leases!.list().catch((e: Error) => e);
  await early.close();
  assert.instance(refused, Error);
  assert.match((refused as Error).message, 'has event log schema 4, this ckpt needs schema 5');

  const migrated = openEventStore(url);
  const n1 = as('ckpt_agent_n1');
  const n2 = as('ckpt_agent_n2');
  const alice = as('alice');
  try {
    assert.equal(await migrated.leases!.list(), [], 'the owner migrates: an empty lease table');
    assert.is((await db.query<{ v: number }>('SELECT max(version) AS v FROM ckpt_schema')).rows[0]!.v, 5);
    assert.equal((await migrated.readAll()).map(markerOf), ['old 0'], 'the log as it was');

    const holder = { pid: 4242, startTime: 42, bootId: 'boot-n1', hostname: 'host1' };
    await n1.append('node-n1', [{ type: 'NodeAgentStarted', data: { node: 'n1', agent: { pid: 4242, startTime: 42 }, version: 'test' } }]);
    const lease = await n1.leases!.renew('n1', holder, 60_000);
    assert.is(lease.expired, false);
    const row = await db.query<{ renewed_by: string; holder: unknown }>("SELECT renewed_by, holder FROM ckpt_leases WHERE node = 'n1'");
    assert.equal(row.rows, [{ renewed_by: 'ckpt_agent_n1', holder }]);

    // Another node's role: not this lease, neither renewed nor released; on record as itself if it tries through the log.
    const stolen = await n2.leases!.renew('n1', holder, 60_000).catch((e: Error) => e);
    assert.instance(stolen, LeaseRefusedError);
    assert.match((stolen as Error).message, 'the lease of n1 belongs to the role that recorded its agent start (ckpt_agent_n1), not to ckpt_agent_n2');
    await n2.leases!.release('n1');
    assert.equal(
      (await alice.leases!.list()).map((l) => [l.node, l.holder, l.expired]),
      [['n1', holder, false]],
      'a reader lists; the other role released nothing',
    );

    const byReader = await alice.leases!.renew('n1', holder, 60_000).catch((e: Error) => e);
    assert.instance(byReader, LeaseRefusedError);
    assert.match((byReader as Error).message, 'permission denied for function ckpt_renew_lease');
    for (const [role, sql] of [
      ['ckpt_agent_n1', "UPDATE ckpt_leases SET expires_at = now() + interval '1 year'"],
      ['alice', 'DELETE FROM ckpt_leases'],
    ] as const) {
      const client = new pg.Client({ connectionString: url.replace('postgres://postgres@', `postgres://${role}@`) });
      await client.connect();
      const denied = await client.query(sql).catch((e: Error) => e);
      await client.end();
      assert.instance(denied, Error, `${role} may not write ckpt_leases`);
      assert.match((denied as Error).message, 'permission denied for table ckpt_leases');
    }
    await n1.leases!.release('n1');
    assert.equal(await migrated.leases!.list(), [], 'its own role releases it');
  } finally {
    await db.end();
    for (const s of [migrated, n1, n2, alice]) await s.close();
  }
});

leases.run();
