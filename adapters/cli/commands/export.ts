import { checkName, integerOption, UsageError } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { HISTORY_FORMAT } from '../history-file.js';
import { eventJson, writeOut } from '../output.js';
import { openStore } from '../store.js';
import { version } from '../version.js';
import { decisionHistory } from './verify.js';

export const exportCommand: Command = {
  usage: 'JOB [--from POSITION] [--to POSITION]',
  description: [
    'Writes the job’s history to stdout as NDJSON that can leave the machine: a first line that says',
    'what it is ({format: "ckpt-history", formatVersion, ckpt: the version that exported it, job,',
    'from, to, events}), then every event the job’s decisions were made from — its own stream and',
    'the streams of the nodes its units ran on — in log order, each as `ckpt log --json` prints it',
    '(position, stream, revision, id, type, schemaVersion, data, metadata, digest). `ckpt verify',
    '--history FILE` re-derives its decisions with another version of ckpt, anywhere.',
  ].join('\n'),
  options: [
    { name: 'from', value: 'POSITION', description: 'only events at or after this log position' },
    { name: 'to', value: 'POSITION', description: 'only events at or before this log position' },
  ],
  examples: ['ckpt export nightly > nightly.ndjson', 'ckpt verify --history nightly.ndjson'],
  async run(args) {
    const [job, ...extra] = args.positionals;
    if (!job || extra.length > 0) throw new UsageError('name exactly one job: ckpt export JOB');
    checkName('job', job);
    const from = integerOption(args, 'from', 1) ?? 1;
    const to = integerOption(args, 'to', 1) ?? Number.MAX_SAFE_INTEGER;
    if (from > to) throw new UsageError(`--from ${from} is after --to ${to}`);
    const store = openStore(args);
    try {
      const history = await decisionHistory(store, job);
      if (!history) {
        process.stderr.write(`ckpt export: unknown job "${job}" (ckpt jobs lists them)\n`);
        return EXIT.failed;
      }
      const events = history.filter((e) => e.position >= from && e.position <= to);
      const header = { ...HISTORY_FORMAT, ckpt: version(), job, from: args.options.has('from') ? from : null, to: args.options.has('to') ? to : null, events: events.length };
      await writeOut(`${JSON.stringify(header)}\n`);
      for (let i = 0; i < events.length; i += 1000)
        await writeOut(
          events
            .slice(i, i + 1000)
            .map((e) => `${eventJson(e)}\n`)
            .join(''),
        );
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
