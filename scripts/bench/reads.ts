// Read-model snapshots benchmark: a SQLite log of N events — one fork-heavy job (most of the log)
// and many small jobs with checkpoints, restarts, aborts and prunes — appended directly in batches;
// then `jobs`, `checkpoints JOB` and `audit JOB` of the fork-heavy job are read, side by side in one
// run: folding the whole history (what every read did before snapshots), the first read (folds
// everything and saves the snapshot), later reads (the snapshot and nothing after it), and a read
// after more events were appended (the snapshot and those). Also the real CLI, as a process.
//
//   npm run bench:reads -- [--events 1000000] [--small 1000] [--batch 1000]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { EventStore, ProposedEvent } from '../../domain/event-store.js';
import { openEventStore } from '../../adapters/store/open.js';
import { auditModel } from '../../projections/audit.js';
import { checkpointsModel } from '../../projections/checkpoints.js';
import { jobsModel } from '../../projections/jobs.js';
import { readModel, type ReadModel } from '../../projections/read-model.js';
import { forkStorm, jobPhases, submitted } from '../../test/support/history.js';

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '1000000' },
    small: { type: 'string', default: '1000' },
    batch: { type: 'string', default: '1000' },
    more: { type: 'string', default: '10000' },
  },
});
const EVENTS = Number(values.events);
const SMALL = Number(values.small);
const BATCH = Number(values.batch);
const MORE = Number(values.more);
const CLI = fileURLToPath(new URL('../../adapters/cli/main.js', import.meta.url));

const dir = mkdtempSync(join(tmpdir(), 'ckpt-bench-reads-'));
const path = join(dir, 'events.db');
const url = `sqlite:${path}?synchronous=normal`;

const appendAll = async (store: EventStore, stream: string, events: readonly ProposedEvent[]) => {
  for (let i = 0; i < events.length; i += BATCH) await store.append(stream, events.slice(i, i + BATCH));
};

const seconds = async <T>(f: () => Promise<T>): Promise<[number, T]> => {
  const start = process.hrtime.bigint();
  const result = await f();
  return [Number(process.hrtime.bigint() - start) / 1e9, result];
};

const main = async () => {
  const store = openEventStore(url);
  // Small jobs: a whole history each (checkpoints, an abort, a refused request, restarts, a prune).
  let small = 0;
  const [appendS] = await seconds(async () => {
    for (let j = 0; j < SMALL; j++) {
      const events = jobPhases(`small-${j}`, 10).flat();
      small += events.length;
      await store.append(`job-small-${j}`, events);
    }
    // The fork-heavy job: the rest of the log, with the same checkpoints and restarts in the middle.
    const storm = EVENTS - small;
    const phases = jobPhases('storm', 0);
    await appendAll(store, 'job-storm', [...submitted('storm'), ...phases[2]!]);
    await appendAll(store, 'job-storm', forkStorm(10_000, Math.floor(storm / 3) - 100, 101));
    await appendAll(store, 'job-storm', phases[4]!);
  });
  const head = await store.headPosition();
  console.log(`log: ${head} events (${SMALL} small jobs, ${small} events; fork-heavy job ${head - small}), appended in ${appendS.toFixed(1)} s, ${(statSync(path).size / 1e6).toFixed(0)} MB`);

  const reads: Array<[string, ReadModel<any>, string]> = [
    ['jobs', jobsModel, ''],
    ['checkpoints storm', checkpointsModel, 'storm'],
    ['audit storm', auditModel, 'storm'],
  ];
  const rows: string[][] = [];
  for (const [name, model, key] of reads) {
    const [fullS, full] = await seconds(() => readModel(store, model, key, { ignoreSnapshots: true }));
    const [firstS, first] = await seconds(() => readModel(store, model, key));
    const [laterS, later] = await seconds(() => readModel(store, model, key));
    const [againS] = await seconds(() => readModel(store, model, key));
    rows.push([name, `${fullS.toFixed(2)} s (${full.folded})`, `${firstS.toFixed(2)} s (${first.folded})`, `${Math.min(laterS, againS).toFixed(3)} s (${later.folded})`, `${(fullS / Math.min(laterS, againS)).toFixed(0)}×`]);
  }
  // New events after the snapshots: each read folds only those.
  await appendAll(store, 'job-storm', forkStorm(5_000_000, Math.ceil(MORE / 3), 101));
  const after: string[] = [];
  for (const [name, model, key] of reads) {
    const [s, r] = await seconds(() => readModel(store, model, key));
    after.push(`${name} ${s.toFixed(3)} s (${r.folded} folded)`);
  }
  const size = (model: string, key: string) =>
    store.snapshots!.load(model, key).then((s) => (s && 'state' in s ? `${(s.state.length / 1e6).toFixed(1)} MB` : '-'));
  const sizes = await Promise.all(reads.map(([, m, k]) => size(m.name, k)));
  await store.close();

  const table = [['read', 'whole history (events)', 'first read, saves (events)', 'later reads (events)', 'whole / later'], ...rows];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  for (const r of table) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join('  '));
  console.log(`after ${MORE} more events of the fork-heavy job: ${after.join('; ')}`);
  console.log(`snapshot sizes: ${reads.map(([n], i) => `${n} ${sizes[i]}`).join(', ')}`);

  // The commands as a user runs them (a process each: Node's start-up included).
  const cli = (args: string[]) => {
    const start = process.hrtime.bigint();
    execFileSync(process.execPath, [CLI, ...args, '--store', url], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CKPT_HOME: dir } });
    return Number(process.hrtime.bigint() - start) / 1e9;
  };
  const noop = Math.min(cli(['jobs', '--help']), cli(['jobs', '--help']), cli(['jobs', '--help']));
  const lines = [['jobs'], ['checkpoints', 'storm'], ['audit', 'storm']].map((args) => {
    const t = Math.min(cli(args), cli(args), cli(args));
    return `ckpt ${args.join(' ')} ${t.toFixed(2)} s`;
  });
  console.log(`CLI (best of 3, a process each; ckpt --help alone ${noop.toFixed(2)} s): ${lines.join('; ')}`);
};

main()
  .catch((error) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(() => rmSync(dir, { recursive: true, force: true }));
