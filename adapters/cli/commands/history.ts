import type { EventStore, RecordedEvent } from '../../../domain/event-store.js';
import { jobStream } from '../../../domain/identity.js';
import { checkName, flag, integerOption, UsageError } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { eventJson, eventLine, writeOut } from '../output.js';
import { openStore } from '../store.js';

const PAGE = 1000;

/** The last `n` events of a stream, oldest first: read backwards from its head through the (stream, revision) index. */
export const streamTail = async (store: EventStore, stream: string, n: number): Promise<RecordedEvent[]> => {
  const newestFirst: RecordedEvent[] = [];
  for (let from: number | undefined; newestFirst.length < n; ) {
    const size = Math.min(PAGE, n - newestFirst.length);
    const page = await store.readStream(stream, { direction: 'backwards', limit: size, ...(from !== undefined && { from }) });
    newestFirst.push(...page);
    if (page.length < size) break;
    from = page[page.length - 1]!.revision - 1;
    if (from < 0) break;
  }
  return newestFirst.reverse();
};

export const historyCommand: Command = {
  usage: 'JOB [--tail N | --from REVISION] [--limit N] [--json]',
  description: [
    'Every event of the job’s stream, oldest first: submission, units, every process observation,',
    'checkpoints and restarts. Same format as `ckpt log` (one line per event, or NDJSON with --json).',
    'A long history is read in pages: --tail N prints only the last N events (read backwards from the',
    'end of the stream, so it costs the same at any length); --from REVISION starts at that revision',
    '(the number after # in each line; 0 is the first event) and --limit N stops after N events.',
  ].join('\n'),
  options: [
    { name: 'tail', value: 'N', description: 'only the last N events of the job' },
    { name: 'from', value: 'REVISION', description: 'start at this revision of the job’s stream (inclusive; default 0)' },
    { name: 'limit', value: 'N', description: 'print at most N events' },
    { name: 'json', description: 'NDJSON output for machines (position, stream, revision, id, type, schemaVersion, data, metadata, digest)' },
  ],
  examples: ['ckpt history nightly', 'ckpt history nightly --tail 100', 'ckpt history nightly --from 5000 --limit 200', 'ckpt history nightly --json | jq -c "select(.type == \\"ProcessExited\\")"'],
  async run(args) {
    const [job, ...extra] = args.positionals;
    if (!job || extra.length > 0) throw new UsageError('name exactly one job');
    checkName('job', job);
    const tail = integerOption(args, 'tail', 1);
    const from = integerOption(args, 'from', 0);
    const limit = integerOption(args, 'limit', 1);
    if (tail !== undefined && (from !== undefined || limit !== undefined)) throw new UsageError('--tail N prints the last N events: give it alone, or --from REVISION with --limit N instead');
    const format = flag(args, 'json') ? eventJson : eventLine;
    const stream = jobStream(job);
    const store = openStore(args);
    try {
      if ((await store.streamRevision(stream)) === undefined) {
        process.stderr.write(`ckpt history: unknown job "${job}" (ckpt jobs lists them)\n`);
        return EXIT.failed;
      }
      if (tail !== undefined) {
        const events = await streamTail(store, stream, tail);
        if (events.length > 0) await writeOut(events.map(format).join('\n') + '\n');
        return EXIT.ok;
      }
      for (let cursor = from ?? 0, left = limit ?? Infinity; left > 0; ) {
        const size = Math.min(PAGE, left);
        const page = await store.readStream(stream, { from: cursor, limit: size });
        if (page.length > 0) await writeOut(page.map(format).join('\n') + '\n');
        if (page.length < size) break;
        left -= page.length;
        cursor = page[page.length - 1]!.revision + 1;
      }
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
