// Read-model snapshots benchmark: a SQLite log of N events — one fork-heavy job (most of the log)
// and many small jobs with checkpoints, restarts, aborts and prunes — appended directly in batches;
// then `jobs`, `checkpoints JOB` and `audit JOB` of the fork-heavy job are read, side by side in one
// run: folding the whole history (what every read did before snapshots), the first read (folds
// everything and saves the snapshot), later reads (the snapshot and nothing after it), and a read
// after more events were appended (the snapshot and those). Also the real CLI, as a process.
// `ckpt ps JOB` of a job with 200k processes in its history, 1,000 of them running, side by side:
// the tree drawn from the whole membership (what ps read before) and from the live membership.
// --compare CLI times the commands through another build too (e.g. the commit before a change),
// on the same log, right after this one's.
//
//   npm run bench:reads -- [--events 1000000] [--small 1000] [--batch 1000] [--ps-processes 200000] [--compare OTHER/dist/adapters/cli/main.js]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { treeView } from '../../adapters/cli/commands/ps.js';
import { openEventStore } from '../../adapters/store/open.js';
import type { EventStore, ProposedEvent } from '../../domain/event-store.js';
import { auditModel } from '../../projections/audit.js';
import { checkpointsModel } from '../../projections/checkpoints.js';
import { jobsModel, liveMembershipModel, membershipModel } from '../../projections/jobs.js';
import { type ReadModel, readModel } from '../../projections/read-model.js';
import { forkStorm, jobPhases, longLived, submitted } from '../../test/support/history.js';

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '1000000' },
    small: { type: 'string', default: '1000' },
    batch: { type: 'string', default: '1000' },
    more: { type: 'string', default: '10000' },
    'ps-processes': { type: 'string', default: '200000' },
    compare: { type: 'string' },
  },
});
const EVENTS = Number(values.events);
const SMALL = Number(values.small);
const BATCH = Number(values.batch);
const MORE = Number(values.more);
const PS_PROCESSES = Number(values['ps-processes']);
const PS_RUNNING = 1000;
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
    // The ps job: 1,000 children that run, then a fork loop's short-lived ones (3 events each).
    await appendAll(store, 'job-ps', [...submitted('ps'), ...longLived(2_000_000, PS_RUNNING, 101), ...forkStorm(3_000_000, PS_PROCESSES - PS_RUNNING, 101)]);
    small += 8 + PS_RUNNING + 3 * (PS_PROCESSES - PS_RUNNING);
    // The fork-heavy job: the rest of the log, with the same checkpoints and restarts in the middle.
    const storm = EVENTS - small;
    const phases = jobPhases('storm', 0);
    await appendAll(store, 'job-storm', [...submitted('storm'), ...phases[2]!]);
    await appendAll(store, 'job-storm', forkStorm(10_000, Math.floor(storm / 3) - 100, 101));
    await appendAll(store, 'job-storm', phases[4]!);
  });
  const head = await store.headPosition();
  console.log(
    `log: ${head} events (${SMALL} small jobs and the ps job of ${PS_PROCESSES} processes, ${small} events; fork-heavy job ${head - small}), appended in ${appendS.toFixed(1)} s, ${(statSync(path).size / 1e6).toFixed(0)} MB`,
  );

  // ps: the model read, then the default tree drawn from it (USER "-": node n1 is not this machine).
  const drawn = (model: ReadModel<any>) => async (options?: { ignoreSnapshots: boolean }) => {
    const read = await readModel(store, model, 'ps', options);
    return { ...read, lines: treeView(read.state, {}, () => undefined) };
  };
  const reads: Array<[string, ReadModel<any>, string, ((options?: { ignoreSnapshots: boolean }) => Promise<{ folded: number }>)?]> = [
    ['jobs', jobsModel, ''],
    ['checkpoints storm', checkpointsModel, 'storm'],
    ['audit storm', auditModel, 'storm'],
    ['ps tree, whole membership (before)', membershipModel, 'ps', drawn(membershipModel)],
    ['ps tree, live membership', liveMembershipModel, 'ps', drawn(liveMembershipModel)],
  ];
  const rows: string[][] = [];
  const best: Record<string, number> = {};
  for (const [name, model, key, how] of reads) {
    const read = how ?? ((options?: { ignoreSnapshots: boolean }) => readModel(store, model, key, options));
    const [fullS, full] = await seconds(() => read({ ignoreSnapshots: true }));
    const [firstS, first] = await seconds(() => read());
    const [laterS, later] = await seconds(() => read());
    const [againS] = await seconds(() => read());
    best[name] = Math.min(laterS, againS);
    rows.push([
      name,
      `${fullS.toFixed(2)} s (${full.folded})`,
      `${firstS.toFixed(2)} s (${first.folded})`,
      `${Math.min(laterS, againS).toFixed(3)} s (${later.folded})`,
      `${(fullS / Math.min(laterS, againS)).toFixed(0)}×`,
    ]);
  }
  // New events after the snapshots: each read folds only those.
  await appendAll(store, 'job-storm', forkStorm(5_000_000, Math.ceil(MORE / 3), 101));
  const after: string[] = [];
  for (const [name, model, key] of reads.filter(([, , key]) => key !== 'ps')) {
    const [s, r] = await seconds(() => readModel(store, model, key));
    after.push(`${name} ${s.toFixed(3)} s (${r.folded} folded)`);
  }
  const size = (model: string, key: string) => store.snapshots!.load(model, key).then((s) => (s && 'state' in s ? `${(s.state.length / 1e6).toFixed(1)} MB` : '-'));
  const sizes = await Promise.all(reads.map(([, m, k]) => size(m.name, k)));
  await store.close();

  const table = [['read', 'whole history (events)', 'first read, saves (events)', 'later reads (events)', 'whole / later'], ...rows];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  for (const r of table) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join('  '));
  console.log(`after ${MORE} more events of the fork-heavy job: ${after.join('; ')}`);
  console.log(`snapshot sizes: ${reads.map(([n], i) => `${n} ${sizes[i]}`).join(', ')}`);
  const before = best['ps tree, whole membership (before)']!;
  const now = best['ps tree, live membership']!;
  console.log(
    `ps tree of a job with ${PS_PROCESSES} processes in its history, ${PS_RUNNING} running (later reads): whole membership ${before.toFixed(3)} s, live membership ${now.toFixed(3)} s (${(before / now).toFixed(0)}× faster)`,
  );

  // The commands as a user runs them (a process each: Node's start-up included).
  const cli = (args: string[], build = CLI) => {
    const start = process.hrtime.bigint();
    execFileSync(process.execPath, [build, ...args, '--store', url], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CKPT_HOME: dir } });
    return Number(process.hrtime.bigint() - start) / 1e9;
  };
  const noop = Math.min(cli(['jobs', '--help']), cli(['jobs', '--help']), cli(['jobs', '--help']));
  const lines = [['jobs'], ['checkpoints', 'storm'], ['audit', 'storm'], ['ps', 'ps']].map((args) => {
    const t = Math.min(cli(args), cli(args), cli(args));
    const other = values.compare && Math.min(cli(args, values.compare), cli(args, values.compare), cli(args, values.compare));
    return `ckpt ${args.join(' ')} ${t.toFixed(2)} s${other ? ` (--compare ${other.toFixed(2)} s)` : ''}`;
  });
  console.log(`CLI (best of 3, a process each; ckpt --help alone ${noop.toFixed(2)} s): ${lines.join('; ')}`);
};

main()
  .catch((error) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(() => rmSync(dir, { recursive: true, force: true }));
