import { rederive } from '../../../domain/decider.js';
import type { EventStore, RecordedEvent } from '../../../domain/event-store.js';
import { nodeStream } from '../../../domain/identity.js';
import { jobCoordinator } from '../../../domain/job-coordinator.js';
import { readJobStream } from '../../../projections/checkpoints.js';
import { readWholeStream } from '../../../projections/project.js';
import { describeChain, verifyChain } from '../../store/chain.js';
import { checkName, flag, UsageError } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { HistoryFileError, readHistoryFile } from '../history-file.js';
import { writeOut } from '../output.js';
import { openStore } from '../store.js';

/**
 * What the coordinator's decisions for a job were made from: the job's stream and the streams of
 * the nodes its units ran on (their checkpointer probes), in log order.
 */
export const decisionHistory = async (store: EventStore, job: string): Promise<RecordedEvent[] | undefined> => {
  const events = await readJobStream(store, job);
  if (!events) return undefined;
  const nodes = new Set(events.flatMap((e) => (e.type === 'UnitAssigned' ? [e.data.node] : [])));
  const nodeEvents = await Promise.all([...nodes].map((n) => readWholeStream(store, nodeStream(n))));
  return [...events, ...nodeEvents.flat()].sort((a, b) => a.position - b.position);
};

export const verifyCommand: Command = {
  usage: 'JOB [--json] | --history FILE… [--json]',
  description: [
    'Every decision of the checkpoint coordinator (plans, deadlines, freeze/dump/verify/commit/thaw/',
    'abort commands) was recorded with the event it answered. verify refolds the job’s history up to',
    'each such event, decides again with this version of ckpt, and compares with what was recorded.',
    'A difference means the history was not produced by this decider (a code change that alters past',
    'decisions, or a tampered log). It first checks the log’s digest chain (every event of every stream)',
    'and names the first altered, missing or inserted event by position. Exit status 1 when there is a',
    'difference or the chain is broken.',
    'With --history, the arguments are histories exported by `ckpt export` (from this machine or any',
    'other): each is checked event by event against the catalogue and its decisions re-derived with',
    'this ckpt, with no store — a recorded history as a regression test of the decider.',
  ].join('\n'),
  options: [
    { name: 'history', description: 'the arguments are exported history files (ckpt export), not a job' },
    {
      name: 'json',
      description: 'print {job, events, checked, differences: [{cause, recorded, rederived}], chain: {events, streams, problem}} (with --history: a list of {file, job, events, checked, differences})',
    },
  ],
  examples: ['ckpt verify nightly', 'ckpt verify nightly --json | jq .differences', 'ckpt verify --history nightly.ndjson test/histories/*.ndjson'],
  async run(args) {
    if (flag(args, 'history')) return verifyHistories(args.positionals, flag(args, 'json'));
    const [job, ...extra] = args.positionals;
    if (!job || extra.length > 0) throw new UsageError('name exactly one job: ckpt verify JOB');
    checkName('job', job);
    const store = openStore(args);
    try {
      const json = flag(args, 'json');
      const chain = await verifyChain(store);
      if (chain.problem) {
        // Refolding a damaged log would only report its damage less clearly.
        if (json) await writeOut(JSON.stringify({ job, chain }, null, 2) + '\n');
        else process.stderr.write(`${describeChain(chain)}\n`);
        return EXIT.failed;
      }
      const history = await decisionHistory(store, job);
      if (!history) {
        process.stderr.write(`ckpt verify: unknown job "${job}" (ckpt jobs lists them)\n`);
        return EXIT.failed;
      }
      const { checked, differences } = rederive(jobCoordinator(job), history);
      if (json) await writeOut(JSON.stringify({ job, events: history.length, checked, differences, chain }, null, 2) + '\n');
      else if (differences.length === 0) console.log(`${describeChain(chain)}\n${job}: all ${checked} recorded decisions re-derived identically from ${history.length} events`);
      else process.stderr.write(describeDifferences(job, checked, differences));
      return differences.length === 0 ? EXIT.ok : EXIT.failed;
    } finally {
      await store.close();
    }
  },
};

const describeDifferences = (what: string, checked: number, differences: ReturnType<typeof rederive>['differences']): string => {
  const lines = differences.map((d) =>
    [
      `  after event ${d.cause.position} (${d.cause.type}):`,
      `    recorded:   ${d.recorded.map((e) => `${e.type} ${JSON.stringify(e.data)}`).join('\n                ') || '(nothing)'}`,
      `    re-derived: ${d.rederived.map((e) => `${e.type} ${JSON.stringify(e.data)}`).join('\n                ') || '(nothing)'}`,
    ].join('\n'),
  );
  return `${what}: ${differences.length} of ${checked} recorded decisions differ from what this ckpt decides:\n${lines.join('\n')}\n`;
};

/** `verify --history FILE…`: each exported history re-derived with this ckpt; exit 1 if any differs or cannot be read. */
const verifyHistories = async (files: readonly string[], json: boolean): Promise<number> => {
  if (files.length === 0) throw new UsageError('name the exported history files: ckpt verify --history FILE…');
  const reports = [];
  let failed = false;
  for (const file of files) {
    try {
      const { job, ckpt, events } = readHistoryFile(file);
      const { checked, differences } = rederive(jobCoordinator(job), events);
      reports.push({ file, job, exportedBy: ckpt, events: events.length, checked, differences });
      failed ||= differences.length > 0;
      if (json) continue;
      if (differences.length === 0) console.log(`${file}: ${job}: all ${checked} recorded decisions re-derived identically from ${events.length} events`);
      else process.stderr.write(describeDifferences(`${file}: ${job}`, checked, differences));
    } catch (error) {
      if (!(error instanceof HistoryFileError)) throw error;
      failed = true;
      reports.push({ file, error: error.message });
      if (!json) process.stderr.write(`ckpt verify: ${error.message}\n`);
    }
  }
  if (json) await writeOut(JSON.stringify(reports, null, 2) + '\n');
  return failed ? EXIT.failed : EXIT.ok;
};
