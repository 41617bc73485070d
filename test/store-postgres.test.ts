import * as assert from 'uvu/assert';
import type { RecordedEvent } from '../domain/event-store.js';
import { openEventStore } from '../adapters/store/open.js';
import { marker, markerOf } from './support/events.js';
import { needPostgres, startPostgres, type PostgresCluster } from './support/postgres.js';
import { suiteRequiring } from './support/prerequisites.js';
import { storeContract } from './store-contract.js';

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
  const db = new (await import('pg')).default.Client({ connectionString: url });
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
    let fastDone = false;
    const fastAppend = fast.append('job-b', [marker('fast')]).then((r) => ((fastDone = true), r));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(received.map(markerOf), ['warm'], 'nothing after the stalled position is visible');
    assert.is(fastDone, false, 'a later append waits for the earlier one to commit');

    await db.query('SELECT pg_advisory_unlock(4242)');
    const [slowResult, fastResult] = await Promise.all([slowAppend, fastAppend]);
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
      for (let b = 0; b < 40; b++) await w.append(`job-${i}-${b % 5}`, Array.from({ length: 1 + ((b * 7) % 13) }, (_, k) => marker(`${i} ${b} ${k}`)));
    }),
  );
  const head = await reader.headPosition();
  for (let i = 0; i < 1000 && received[received.length - 1]?.position !== head; i++) await new Promise((r) => setTimeout(r, 10));
  subscription.unsubscribe();
  const all = await reader.readAll({ limit: 10_000 });
  const delivered = new Set(received.map((e) => e.position));
  assert.equal(all.filter((e) => !delivered.has(e.position)).map((e) => e.position), [], 'positions the live reader skipped');
  assert.is(received.length, all.length, 'no event delivered twice');
  for (let i = 1; i < received.length; i++) assert.ok(received[i]!.position > received[i - 1]!.position);
  await Promise.all([...writers, reader].map((s) => s.close()));
});

gap.run();
