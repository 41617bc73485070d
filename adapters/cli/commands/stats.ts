import { checkpointSummaries, checkpointsModel } from '../../../projections/checkpoints.js';
import { allJobs } from '../../../projections/jobs.js';
import { readModel } from '../../../projections/read-model.js';
import { restartsModel } from '../../../projections/restarts.js';
import { type Aggregate, type JobOperations, PHASE_COLUMNS, type StatsRow, stats } from '../../../projections/stats.js';
import { checkName, flag, type ParsedArgs, stringOption, UsageError } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { csv, formatBytes, table, writeOut } from '../output.js';
import { openStore } from '../store.js';
import { foldProgress, VERBOSE, verboseNotes } from '../verbose.js';

const AGO: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** --since: an ISO 8601 time, or a duration before now (30m, 2h, 7d). The only clock of the command. */
const sinceOption = (args: ParsedArgs): string | undefined => {
  const value = stringOption(args, 'since');
  if (value === undefined) return undefined;
  const ago = /^(\d+)(s|m|h|d)$/.exec(value.trim());
  if (ago) return new Date(Date.now() - Number(ago[1]) * AGO[ago[2]!]!).toISOString();
  const time = /^\d{4}-\d{2}-\d{2}/.test(value) ? Date.parse(value) : NaN;
  if (Number.isNaN(time)) throw new UsageError(`option --since needs a time such as 2026-12-01T19:00:00Z or a duration before now such as 30m, 2h or 7d, got "${value}"`);
  return new Date(time).toISOString();
};

const n = (v: number | null) => (v === null ? '' : String(Math.round(v * 1000) / 1000));
const ms = (v: number | null | undefined) => (v === null || v === undefined ? '-' : `${Math.round(v)} ms`);
const pct = (v: number | null) => (v === null ? '-' : `${Math.round(v * 1000) / 10} %`);

export const CSV_HEADER = [
  'job',
  'kind',
  'number',
  'version',
  'outcome',
  'failure_class',
  'requested_at',
  'duration_ms',
  ...PHASE_COLUMNS.map((p) => `${p.replace('-', '_')}_ms`),
  'frozen_ms',
  'bytes',
  'pages',
  'processes',
  'units',
  'nodes',
];

const csvRow = (r: StatsRow): string[] => [
  r.job,
  r.kind,
  n(r.number),
  n(r.version),
  r.outcome,
  r.failureClass ?? '',
  r.requestedAt,
  n(r.durationMs),
  ...PHASE_COLUMNS.map((p) => n(r.phases[p] ?? null)),
  n(r.frozenMs),
  String(r.bytes),
  n(r.pages),
  String(r.processes),
  String(r.units),
  r.nodes.join(' '),
];

const aggregateCells = (a: Aggregate): string[] => [
  `${a.committed}/${a.checkpoints}`,
  pct(a.checkpointSuccessRate),
  `${a.restored}/${a.restarts}`,
  pct(a.restartSuccessRate),
  ms(a.frozenP50Ms),
  ms(a.frozenP95Ms),
];
const AGGREGATE_HEADER = ['COMMITTED', 'CKPT OK', 'RESTORED', 'RESTART OK', 'FROZEN P50', 'FROZEN P95'];

export const statsCommand: Command = {
  usage: '[JOB] [--since TIME] [--json | --csv] [--verbose]',
  description: [
    'Analytics of checkpoints and restarts, folded from the log (every job, or JOB): one row per checkpoint',
    'and restart request — kind, version or restart number, outcome, failure class, duration from request to',
    'end, each step’s duration (from the first unit’s request to the last unit’s answer: freeze, dump,',
    'verify, commit, thaw, stop, abort; images-verify, restore-prepare, restore, rollback), the longest time a unit stayed',
    'frozen (its agent’s measure, else by the log), bytes (committed images; for an abort what units wrote',
    'before it; for a restart the images verified), CRIU’s pages (written by dumps, restored by restores),',
    'processes, units and nodes — then aggregates per job and per node: committed/attempted checkpoints,',
    'success rate (committed / (committed + aborted); refused and unfinished requests are not counted),',
    'restarts likewise, p50 and p95 frozen time (nearest rank), and bytes of each committed version.',
    'All times come from the events, so the figures are the same on every replay. Read from each job’s',
    'checkpoints and restarts snapshots and the events after them (--verbose says how).',
  ].join('\n'),
  options: [
    { name: 'since', value: 'TIME', description: 'only operations requested at or after TIME: an ISO 8601 time (2026-12-01T19:00:00Z) or a duration before now (30m, 2h, 7d)' },
    {
      name: 'json',
      description:
        'one JSON object: {rows: [{job, kind, number, version, requestedAt, outcome, failureClass, durationMs, phases: {freeze, dump, …: ms}, frozenMs, bytes, pages, processes, units, nodes: [...]}], ' +
        'jobs: [{job, checkpoints, committed, aborted, checkpointSuccessRate, restarts, restored, failedRestarts, restartSuccessRate, frozenP50Ms, frozenP95Ms, bytesByVersion: [{version, bytes}], failureClasses: {class: count}}], ' +
        'nodes: [{node, …the same counts and rates, frozen percentiles of its units, committedBytes}]} (rates are 0–1, null when nothing finished)',
    },
    { name: 'csv', description: `the rows as CSV (RFC 4180: header row, CRLF line ends, quoted where needed); columns: ${CSV_HEADER.join(',')}; empty cells are unknown; nodes space-separated` },
    VERBOSE,
  ],
  examples: ['ckpt stats', 'ckpt stats nightly --since 7d', 'ckpt stats --csv > ops.csv', 'ckpt stats --json | jq ".jobs[] | {job, checkpointSuccessRate, frozenP95Ms}"'],
  async run(args) {
    const [only, ...extra] = args.positionals;
    if (extra.length > 0) throw new UsageError('name at most one job: ckpt stats [JOB]');
    if (only !== undefined) checkName('job', only);
    if (flag(args, 'json') && flag(args, 'csv')) throw new UsageError('choose one output: --json or --csv');
    const since = sinceOption(args);
    const quiet = flag(args, 'json') || flag(args, 'csv');
    const store = openStore(args);
    try {
      const jobs = only ? [only] : (await allJobs(store)).map((j) => j.job);
      const operations: JobOperations[] = [];
      for (const job of jobs) {
        const fold = foldProgress('stats', quiet);
        const checkpoints = await readModel(store, checkpointsModel, job, fold);
        const restarts = await readModel(store, restartsModel, job, fold);
        fold.done();
        verboseNotes(args, 'stats', checkpoints);
        verboseNotes(args, 'stats', restarts);
        if (checkpoints.position < 0) {
          process.stderr.write(`ckpt stats: unknown job "${job}" (ckpt jobs --all lists them)\n`);
          return EXIT.failed;
        }
        operations.push({ job, checkpoints: checkpointSummaries(checkpoints.state), restarts: restarts.state.list });
      }
      const s = stats(operations, since);
      if (flag(args, 'json')) {
        await writeOut(JSON.stringify(s, null, 2) + '\n');
        return EXIT.ok;
      }
      if (flag(args, 'csv')) {
        await writeOut(csv(CSV_HEADER, s.rows.map(csvRow)));
        return EXIT.ok;
      }
      if (s.rows.length === 0) {
        console.log(`no checkpoints or restarts${only ? ` of ${only}` : ''}${since ? ` since ${since}` : ''} (take one with: ckpt checkpoint JOB --wait)`);
        return EXIT.ok;
      }
      const phases = (r: StatsRow) => PHASE_COLUMNS.flatMap((p) => (r.phases[p] === undefined ? [] : [`${p} ${Math.round(r.phases[p]!)}`])).join(', ');
      await writeOut(
        [
          table(
            ['JOB', 'WHAT', 'REQUESTED', 'OUTCOME', 'CLASS', 'DURATION', 'FROZEN', 'SIZE', 'PAGES', 'PROCS', 'UNITS', 'NODES', 'STEPS (ms)'],
            s.rows.map((r) => [
              r.job,
              `${r.kind} ${r.number === null ? '-' : `${r.kind === 'checkpoint' ? 'v' : 'r'}${r.number}`}`,
              r.requestedAt,
              r.outcome,
              r.failureClass ?? '-',
              ms(r.durationMs),
              ms(r.frozenMs),
              r.bytes > 0 ? formatBytes(r.bytes) : '-',
              r.pages === null ? '-' : String(r.pages),
              String(r.processes),
              String(r.units),
              r.nodes.join(',') || '-',
              phases(r),
            ]),
          ),
          table(
            ['JOB', ...AGGREGATE_HEADER, 'BYTES BY VERSION', 'FAILURES'],
            s.jobs.map((j) => [
              j.job,
              ...aggregateCells(j),
              j.bytesByVersion.map((b) => `v${b.version} ${formatBytes(b.bytes)}`).join(', ') || '-',
              Object.entries(j.failureClasses)
                .map(([c, k]) => `${c} ${k}`)
                .join(', ') || '-',
            ]),
          ),
          table(
            ['NODE', ...AGGREGATE_HEADER, 'COMMITTED BYTES'],
            s.nodes.map((x) => [x.node, ...aggregateCells(x), formatBytes(x.committedBytes)]),
          ),
        ].join('\n'),
      );
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
