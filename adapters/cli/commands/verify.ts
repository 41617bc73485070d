import { jobCoordinator } from '../../../domain/job-coordinator.js';
import { rederive } from '../../../domain/decider.js';
import type { EventStore, RecordedEvent } from '../../../domain/event-store.js';
import { nodeStream } from '../../../domain/identity.js';
import { readJobStream } from '../../../projections/checkpoints.js';
import { readWholeStream } from '../../../projections/project.js';
import { checkName, flag, UsageError } from '../args.js';
import { EXIT, type Command } from '../command.js';
import { writeOut } from '../output.js';
import { describeChain, verifyChain } from '../../store/chain.js';
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
  usage: 'JOB [--json]',
  description: [
    'Every decision of the checkpoint coordinator (plans, deadlines, freeze/dump/verify/commit/thaw/',
    'abort commands) was recorded with the event it answered. verify refolds the job’s history up to',
    'each such event, decides again with this version of ckpt, and compares with what was recorded.',
    'A difference means the history was not produced by this decider (a code change that alters past',
    'decisions, or a tampered log). It first checks the log’s digest chain (every event of every stream)',
    'and names the first altered, missing or inserted event by position. Exit status 1 when there is a',
    'difference or the chain is broken.',
  ].join('\n'),
  options: [{ name: 'json', description: 'print {job, events, checked, differences: [{cause, recorded, rederived}], chain: {events, streams, problem}}' }],
  examples: ['ckpt verify nightly', 'ckpt verify nightly --json | jq .differences'],
  async run(args) {
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
      else {
        const lines = differences.map((d) =>
          [
            `  after event ${d.cause.position} (${d.cause.type}):`,
            `    recorded:   ${d.recorded.map((e) => `${e.type} ${JSON.stringify(e.data)}`).join('\n                ') || '(nothing)'}`,
            `    re-derived: ${d.rederived.map((e) => `${e.type} ${JSON.stringify(e.data)}`).join('\n                ') || '(nothing)'}`,
          ].join('\n'),
        );
        process.stderr.write(`${job}: ${differences.length} of ${checked} recorded decisions differ from what this ckpt decides:\n${lines.join('\n')}\n`);
      }
      return differences.length === 0 ? EXIT.ok : EXIT.failed;
    } finally {
      await store.close();
    }
  },
};
