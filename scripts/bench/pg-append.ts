// PostgreSQL append throughput with several agents: N store instances (one per "agent", each
// with its own connection pool) append fork-heavy batches to their own job streams for a fixed
// time while one follower reads the whole log live. Prints aggregate events/s and p50/p99 batch
// latency per variant of the global ordering, side by side in one run (variants rotate within
// each configuration; each run gets a fresh database):
//   allocation  schema 4: the global lock is held only to take the xid and the positions;
//               readers read rows whose transaction is older than their snapshot's xmin
//   commit      schema 3: the global lock is held until commit; readers read by position
//   none        no global lock; readers follow (txid, position) below xmin (as Emmett does) —
//               positions no longer ascend in delivery order, so ckpt's position cursors break
// The follower checks it saw every event once, in its variant's order. "client CPU" is this
// process's share of a core (the agents' encoding and hashing, the follower): the agents and the
// server share this machine's cores, as they would not across hosts. "server µs/event" is the CPU
// the database's backends (agents' and follower's) spent per appended event: what one server core
// could sustain without the rest of the machine's load.
//
//   npm run bench:pg-append -- [--seconds 3] [--agents 1,3,8] [--batch 20,100] [--variants allocation,commit,none] [--rounds 3]
//
// measureAppends runs one configuration against any database (the multi-host bench's server).
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { appendFunction, type GlobalOrder, PostgresEventStore } from '../../adapters/store/postgres.js';
import type { EventStore } from '../../domain/event-store.js';
import { needPostgres, startPostgres } from '../../test/support/postgres.js';
import { processEvents } from './process-events.js';
import { count, median } from './run.js';

/** Job streams per agent: appends go round-robin over them, as an agent's busy jobs do. */
const STREAMS_PER_AGENT = 20;

/** Each variant's gap-free page query for a follower: $1/$2 the cursor, rows in delivery order. */
const FOLLOW: Record<GlobalOrder, { sql: string; cursor: (row: unknown[]) => [string, string] }> = {
  allocation: {
    sql: `SELECT position, txid::text, data::text, metadata::text FROM ckpt_events
          WHERE position > $2 AND $1::text IS NOT NULL AND txid < (SELECT pg_snapshot_xmin(pg_current_snapshot())) ORDER BY position LIMIT 1000`,
    cursor: (r) => ['0', r[0] as string],
  },
  commit: {
    sql: 'SELECT position, txid::text, data::text, metadata::text FROM ckpt_events WHERE position > $2 AND $1::text IS NOT NULL ORDER BY position LIMIT 1000',
    cursor: (r) => ['0', r[0] as string],
  },
  none: {
    sql: `SELECT position, txid::text, data::text, metadata::text FROM ckpt_events
          WHERE (txid, position) > ($1::xid8, $2) AND txid < (SELECT pg_snapshot_xmin(pg_current_snapshot())) ORDER BY txid, position LIMIT 1000`,
    cursor: (r) => [r[1] as string, r[0] as string],
  },
};

/** Reads the log live; checks its order as it goes. */
const follower = (url: string, variant: GlobalOrder) => {
  const client = new pg.Client({ connectionString: url });
  let cursor: [string, string] = ['0', '0'];
  let seen = 0;
  let expected = Infinity;
  let problem: string | undefined;
  const run = (async () => {
    await client.connect();
    // A short page may only mean an older transaction (an append, autovacuum's ANALYZE) has not
    // ended yet: after the appenders stop, read on until every row is in, for at most 30 s.
    for (let deadline = Infinity; seen < expected && performance.now() < deadline; ) {
      const { rows } = await client.query<unknown[]>({ text: FOLLOW[variant].sql, values: cursor, rowMode: 'array' });
      for (const row of rows) {
        JSON.parse(row[2] as string); // a follower decodes what it reads
        const next = FOLLOW[variant].cursor(row);
        const after = BigInt(next[0]) > BigInt(cursor[0]) || (next[0] === cursor[0] && BigInt(next[1]) > BigInt(cursor[1]));
        if (!after) problem ??= `delivered ${next} after ${cursor}`;
        cursor = next;
        seen++;
      }
      if (expected !== Infinity && deadline === Infinity) deadline = performance.now() + 30_000;
      if (rows.length < 1000) await new Promise((r) => setTimeout(r, 5));
    }
    await client.end();
  })();
  return {
    /** After the appenders stopped: reads until it has every row of the table (or gives up). */
    stop: async (rows: number) => {
      expected = rows;
      await run;
      return { seen, problem };
    },
  };
};

export interface AppendResult {
  events: number;
  seconds: number;
  latencies: number[];
  followed: number;
  clientCpu: number;
  serverUs: number;
  problem?: string;
}

/** CPU seconds used so far by each server process serving `url`'s database (utime + stime from /proc). */
const serverCpu = async (admin: pg.Client): Promise<Map<number, number>> => {
  const { rows } = await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = current_database()');
  const ticks = new Map<number, number>();
  for (const { pid } of rows) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks.set(pid, (Number(fields[11]) + Number(fields[12])) / 100); // utime, stime in USER_HZ (100)
    } catch {
      /* ended meanwhile */
    }
  }
  return ticks;
};

/**
 * One run: `agents` stores append batches of `batch` events for `seconds` to a fresh, empty
 * database at `url` (its owner's URL: the variants other than ckpt's replace ckpt_append).
 */
export const measureAppends = async (url: string, { variant, agents, batch, seconds: duration }: { variant: GlobalOrder; agents: number; batch: number; seconds: number }): Promise<AppendResult> => {
  const stores: EventStore[] = Array.from({ length: agents }, () => new PostgresEventStore(url));
  await stores[0]!.headPosition(); // creates the schema (4)
  if (variant !== 'allocation') {
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query(appendFunction(variant));
    if (variant === 'none') await admin.query('CREATE INDEX ckpt_events_txid ON ckpt_events (txid, position)');
    await admin.end();
  }
  // Built before the clock starts: the benchmark measures the store, not the event generator.
  const batches = Array.from({ length: 64 }, (_, k) => processEvents(k, k, batch));
  const follow = follower(url, variant);
  const latencies: number[] = [];
  let events = 0;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  const serverBefore = await serverCpu(admin);
  const cpu = process.cpuUsage();
  const start = performance.now();
  const end = start + duration * 1000;
  await Promise.all(
    stores.map(async (store, a) => {
      for (let k = 0; performance.now() < end; k++) {
        const t = performance.now();
        await store.append(`job-${a}-${k % STREAMS_PER_AGENT}`, batches[(a * 7 + k) % batches.length]!);
        latencies.push(performance.now() - t);
        events += batch;
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  const { user, system } = process.cpuUsage(cpu);
  const serverAfter = await serverCpu(admin); // the agents' and the follower's backends, while still connected
  await admin.end();
  let serverS = 0;
  for (const [pid, s] of serverAfter) serverS += s - (serverBefore.get(pid) ?? 0);
  const { seen, problem } = await follow.stop(events);
  await Promise.all(stores.map((s) => s.close()));
  return { events, seconds, latencies, followed: seen, clientCpu: (user + system) / 1e6 / seconds, serverUs: (serverS / events) * 1e6, ...(problem && { problem }) };
};

const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

const main = async () => {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '3' },
      agents: { type: 'string', default: '1,3,8' },
      batch: { type: 'string', default: '20,100' },
      variants: { type: 'string', default: 'allocation,commit,none' },
      rounds: { type: 'string', default: '3' },
    },
  });
  const SECONDS = Number(values.seconds);
  const list = (flag: string, text: string) => text.split(',').map((t) => count(flag, t));
  const AGENTS = list('agents', values.agents);
  const BATCHES = list('batch', values.batch);
  const ROUNDS = count('rounds', values.rounds);
  const VARIANTS = values.variants.split(',') as GlobalOrder[];
  for (const v of VARIANTS) if (!['allocation', 'commit', 'none'].includes(v)) throw new Error(`--variants: unknown variant "${v}" (allocation, commit, none)`);
  const missing = needPostgres();
  if (missing) {
    console.log(`PostgreSQL append benchmark: skipped, ${missing}`);
  } else {
    const cluster = await startPostgres({ durable: true });
    try {
      console.log(`PostgreSQL append benchmark: ${SECONDS} s per run, agents ${AGENTS.join(', ')}, batches of ${BATCHES.join(', ')}, fsync on; node ${process.version}\n`);
      console.log('batch  agents  variant      events/s   ×commit   p50 ms   p99 ms   client CPU   server µs/event   follower');
      for (const batch of BATCHES) {
        for (const agents of AGENTS) {
          const results = new Map<GlobalOrder, AppendResult[]>(VARIANTS.map((v) => [v, []]));
          for (let round = 0; round < ROUNDS; round++) {
            // Rotate the order so no variant always runs first (cold) or last.
            for (let i = 0; i < VARIANTS.length; i++) {
              const variant = VARIANTS[(i + round + agents) % VARIANTS.length]!;
              results.get(variant)!.push(await measureAppends(await cluster.database(), { variant, agents, batch, seconds: SECONDS }));
            }
          }
          const rate = (r: AppendResult) => r.events / r.seconds;
          const best = (v: GlobalOrder) => results.get(v)!.reduce((a, b) => (rate(b) > rate(a) ? b : a));
          const base = results.has('commit') ? rate(best('commit')) : undefined;
          for (const variant of VARIANTS) {
            const r = best(variant);
            const rates = results.get(variant)!.map(rate);
            // Any run's follower that went wrong is reported, not only the best run's.
            const wrong = results.get(variant)!.find((x) => x.problem || x.followed !== x.events);
            const followed = !wrong ? 'all, in order' : wrong.problem ? `OUT OF ORDER: ${wrong.problem}` : `MISSED ${wrong.events - wrong.followed} of ${wrong.events}`;
            console.log(
              `${String(batch).padStart(5)}  ${String(agents).padStart(6)}  ${variant.padEnd(10)} ${Math.round(rate(r)).toLocaleString('en-US').padStart(10)}` +
                `   ${base ? (rate(r) / base).toFixed(2).padStart(7) : '      -'}  ${median(r.latencies).toFixed(1).padStart(7)}  ${percentile(r.latencies, 0.99).toFixed(1).padStart(7)}   ${(r.clientCpu * 100).toFixed(0).padStart(7)}%   ${r.serverUs.toFixed(1).padStart(15)}   ${followed}` +
                (ROUNDS > 1 ? `   (runs: ${rates.map((x) => Math.round(x / 1000) + 'k').join(', ')})` : ''),
            );
          }
        }
      }
    } finally {
      await cluster.stop();
    }
  }
};

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
