// Event log benchmark: append N synthetic process events across many job streams in realistic
// batches, then replay all of them through a projection fold; in the same run, measure the raw
// limit (the same rows read with the same driver, JSON.parse of data, a hand-written loop fold).
// Prints events/s and the ratio replay / raw, for SQLite and PostgreSQL. Side by side in the same
// run: what the digest chain costs an append (its hashing alone, over the same batches) and what
// decoding every row with the codecs costs a read (the same rows, JSON.parse alone vs decoded).
//
//   npm run bench:log -- [--events 1000000] [--streams 1000] [--batch 100] [--stores sqlite,postgres]
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import pg from 'pg';
import { defaultAppendContext, encodeBatch, storedEvent } from '../../adapters/store/batch.js';
import { canonicalJson, chainDigest, contentDigest, GENESIS } from '../../adapters/store/chain.js';
import { openEventStore } from '../../adapters/store/open.js';
import type { EventStore, ProposedEvent, RecordedEvent } from '../../domain/event-store.js';
import { replay } from '../../projections/project.js';
import { needPostgres, startPostgres } from '../../test/support/postgres.js';
import { processEvents } from './process-events.js';

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '1000000' },
    streams: { type: 'string', default: '1000' },
    batch: { type: 'string', default: '100' },
    stores: { type: 'string', default: 'sqlite,postgres' },
  },
});
const EVENTS = Number(values.events);
const STREAMS = Number(values.streams);
const BATCH = Number(values.batch);

const syntheticBatch = (stream: number, seq: number): ProposedEvent[] => processEvents(stream, seq, BATCH);

/** The fold both paths compute: counts per type and how many processes are alive. */
interface Tally {
  readonly events: number;
  readonly forks: number;
  readonly exits: number;
  readonly failed: number;
}
const initial: Tally = { events: 0, forks: 0, exits: 0, failed: 0 };
const evolve = (s: Tally, e: RecordedEvent): Tally => {
  switch (e.type) {
    case 'ProcessForked':
      return { ...s, events: s.events + 1, forks: s.forks + 1 };
    case 'ProcessExited':
      return { ...s, events: s.events + 1, exits: s.exits + 1, failed: s.failed + (e.data.status === 0 ? 0 : 1) };
    default:
      return { ...s, events: s.events + 1 };
  }
};

/** The raw limit: rows as the driver gives them, JSON.parse of data, a loop with mutable counters. */
const rawFold = (rows: Iterable<unknown[]>, tally: { events: number; forks: number; exits: number; failed: number }) => {
  for (const row of rows) {
    const type = row[4] as string;
    const data = JSON.parse(row[6] as string) as { status?: number };
    tally.events++;
    if (type === 'ProcessForked') tally.forks++;
    else if (type === 'ProcessExited') {
      tally.exits++;
      if (data.status !== 0) tally.failed++;
    }
  }
};

const seconds = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e9;
const rate = (n: number, s: number) =>
  `${Math.round(n / s)
    .toLocaleString('en-US')
    .padStart(11)} events/s`;

/** Built before the clock starts: the benchmark measures the store, not the event generator. */
const batches = Array.from({ length: EVENTS / BATCH }, (_, k) => syntheticBatch(k % STREAMS, Math.floor(k / STREAMS)));

const appendAll = async (store: EventStore, concurrency: number) => {
  const appends = batches.length;
  let next = 0;
  let lastReport = process.hrtime.bigint();
  const start = process.hrtime.bigint();
  const worker = async () => {
    for (let k = next++; k < appends; k = next++) {
      await store.append(`job-${k % STREAMS}`, batches[k]!);
      if (process.stderr.isTTY && process.hrtime.bigint() - lastReport > 1e9) {
        lastReport = process.hrtime.bigint();
        process.stderr.write(`\r  appended ${(k * BATCH).toLocaleString('en-US')} / ${EVENTS.toLocaleString('en-US')}`);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  return seconds(start);
};

const replayAll = async (store: EventStore) => {
  const start = process.hrtime.bigint();
  const result = await replay(store, evolve, initial);
  return { s: seconds(start), tally: result.state };
};

/** Replay and raw, twice each, alternating; the best time of each (warm caches for both). */
const alternate = async (replayRun: () => Promise<{ s: number; tally: Tally }>, rawRun: () => Promise<{ s: number; tally: Tally }>) => {
  const replays = [];
  const raws = [];
  for (let round = 0; round < 2; round++) {
    replays.push(await replayRun());
    raws.push(await rawRun());
  }
  return {
    replayS: Math.min(...replays.map((r) => r.s)),
    rawS: Math.min(...raws.map((r) => r.s)),
    tally: replays[0]!.tally,
    rawTally: raws[0]!.tally,
  };
};

const report = (name: string, appendS: number, replayS: number, rawS: number, tally: Tally, rawTally: Tally, extra = '') => {
  if (JSON.stringify(tally) !== JSON.stringify(rawTally)) throw new Error(`${name}: replay and raw folds disagree: ${JSON.stringify(tally)} vs ${JSON.stringify(rawTally)}`);
  if (tally.events !== EVENTS) throw new Error(`${name}: replayed ${tally.events} events, appended ${EVENTS}`);
  console.log(`${name}${extra}`);
  console.log(`  append     ${rate(EVENTS, appendS)}   (${appendS.toFixed(1)} s, batches of ${BATCH} over ${STREAMS} streams)`);
  console.log(`  replay     ${rate(EVENTS, replayS)}   (${replayS.toFixed(1)} s, subscribeAll + pure fold)`);
  console.log(`  raw limit  ${rate(EVENTS, rawS)}   (${rawS.toFixed(1)} s, same rows, JSON.parse, loop fold)`);
  console.log(`  replay / raw = ${(rawS / replayS).toFixed(2)}   (best of 2 each, alternating)`);
};

/**
 * What the chain adds to an append, side by side with the rest of the encoding: the same batches
 * through encodeBatch (validation, JSON, and the chain's content digest) and through the chain's
 * hashing alone (canonical JSON, content digest, link), alternating, best of 5 each.
 */
const chainCost = () => {
  const context = defaultAppendContext();
  const metadata = { actor: context.actor, recordedAt: new Date().toISOString() };
  const metadataJson = canonicalJson(metadata); // once per batch, as encodeBatch does
  const sample = batches.slice(0, Math.min(batches.length, 500));
  const n = sample.length * BATCH;
  const timed = (work: () => void) => {
    const start = process.hrtime.bigint();
    work();
    return seconds(start);
  };
  const encode = () => {
    for (const [k, batch] of sample.entries()) encodeBatch(`job-${k % STREAMS}`, batch, context);
  };
  const chain = () =>
    sample.forEach((batch, k) => {
      let digest = GENESIS;
      batch.forEach((e, i) => {
        const content = contentDigest({ stream: `job-${k % STREAMS}`, id: '00000000-0000-4000-8000-000000000000', type: e.type, schemaVersion: 1, data: e.data, metadata }, metadataJson);
        digest = chainDigest(digest, content, i);
      });
    });
  let encodeS = Infinity;
  let chainS = Infinity;
  for (let round = 0; round < 5; round++) {
    encodeS = Math.min(encodeS, timed(encode));
    chainS = Math.min(chainS, timed(chain));
  }
  const us = (s: number) => `${((s / n) * 1e6).toFixed(2)} µs/event`;
  return { perEvent: chainS / n, line: `chain hashing ${us(chainS)} (canonical JSON + 2 × SHA-256), inside encodeBatch's ${us(encodeS)}` };
};

/** A read's decode cost: the same rows made into events with JSON.parse only, and decoded with the codecs. */
const decodeCost = (rows: unknown[][], name: (row: unknown[]) => string) => {
  const parseOnly = () => {
    const start = process.hrtime.bigint();
    for (const r of rows) JSON.parse(r[6] as string);
    return seconds(start);
  };
  const decoded = () => {
    const start = process.hrtime.bigint();
    for (const r of rows) storedEvent(Number(r[0]), name(r), Number(r[2]), r[3] as string, r[4] as string, r[5] as number, r[6] as string, r[7] as string);
    return seconds(start);
  };
  let parse = Infinity;
  let decode = Infinity;
  for (let round = 0; round < 3; round++) {
    parse = Math.min(parse, parseOnly());
    decode = Math.min(decode, decoded());
  }
  const us = (s: number) => ((s / rows.length) * 1e6).toFixed(2);
  return `decode on read ${us(decode)} µs/event (JSON.parse + codec) vs ${us(parse)} µs JSON.parse alone: ×${(decode / parse).toFixed(2)} (same ${rows.length.toLocaleString('en-US')} rows, best of 3)`;
};

const benchSqlite = async (synchronous: 'full' | 'normal', inFlight: number) => {
  const dir = mkdtempSync(join(tmpdir(), 'ckpt-bench-'));
  const path = join(dir, 'events.db');
  try {
    const store = openEventStore(`sqlite:${path}?synchronous=${synchronous}`);
    const appendS = await appendAll(store, inFlight);
    const db = new Database(path, { readonly: true });
    const page = db.prepare('SELECT position, stream_id, revision, id, type, schema_version, data, metadata FROM events WHERE position >= ? ORDER BY position LIMIT 1000').raw();
    const raw = async () => {
      const tally = { ...initial };
      const start = process.hrtime.bigint();
      for (let from = 1; ; ) {
        const rows = page.all(from) as unknown[][];
        if (rows.length === 0) break;
        rawFold(rows, tally);
        from = (rows[rows.length - 1]![0] as number) + 1;
      }
      return { s: seconds(start), tally };
    };
    const { replayS, rawS, tally, rawTally } = await alternate(() => replayAll(store), raw);
    const sample = page.all(1).concat(page.all(1001), page.all(2001)) as unknown[][];
    await store.close();
    db.close();
    const mb = (statSync(path).size / 2 ** 20).toFixed(0);
    report(`SQLite (synchronous=${synchronous}, ${inFlight} append${inFlight > 1 ? 's' : ''} in flight)`, appendS, replayS, rawS, tally, rawTally, `, ${mb} MB file`);
    const chain = chainCost();
    console.log(`  ${chain.line}: ${((chain.perEvent / (appendS / EVENTS)) * 100).toFixed(1)}% of this append time per event`);
    console.log(`  ${decodeCost(sample, (r) => `job-${r[1]}`)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
};

const benchPostgres = async () => {
  const missing = needPostgres();
  if (missing) return console.log(`PostgreSQL: skipped, ${missing}`);
  const cluster = await startPostgres({ durable: true });
  try {
    const url = await cluster.database();
    const store = openEventStore(url);
    const appendS = await appendAll(store, 4);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const raw = async () => {
      const tally = { ...initial };
      const start = process.hrtime.bigint();
      for (let from = 1; ; ) {
        const { rows } = await client.query<unknown[]>({
          text: 'SELECT position, stream, revision, id, type, schema_version, data::text, metadata::text FROM ckpt_events WHERE position >= $1 ORDER BY position LIMIT 1000',
          values: [from],
          rowMode: 'array',
        });
        if (rows.length === 0) break;
        rawFold(rows, tally);
        from = Number(rows[rows.length - 1]![0]) + 1;
      }
      return { s: seconds(start), tally };
    };
    const { replayS, rawS, tally, rawTally } = await alternate(() => replayAll(store), raw);
    await client.end();
    await store.close();
    report('PostgreSQL 15 (fsync on, 4 appenders)', appendS, replayS, rawS, tally, rawTally);
    const chain = chainCost();
    console.log(`  ${chain.line}: ${((chain.perEvent / (appendS / EVENTS)) * 100).toFixed(1)}% of this append time per event (client side; the server links digests with its sha256())`);
  } finally {
    await cluster.stop();
  }
};

console.log(`ckpt log benchmark: ${EVENTS.toLocaleString('en-US')} events, ${STREAMS} streams, batches of ${BATCH}; node ${process.version}\n`);
const stores = values.stores.split(',');
if (stores.includes('sqlite')) {
  await benchSqlite('full', 1);
  await benchSqlite('full', 8);
  await benchSqlite('normal', 1);
}
if (stores.includes('postgres')) await benchPostgres();
