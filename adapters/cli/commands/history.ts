import { jobStream } from '../../../domain/identity.js';
import { checkName, flag, UsageError } from '../args.js';
import { EXIT, type Command } from '../command.js';
import { eventJson, eventLine, writeOut } from '../output.js';
import { openStore } from '../store.js';

export const historyCommand: Command = {
  name: 'history',
  summary: 'Print one job’s events in order: its complete, replayable history.',
  usage: 'JOB [--json]',
  description: [
    'Every event of the job’s stream, oldest first: submission, units, every process observation,',
    'checkpoints and restarts. Same format as `ckpt log` (one line per event, or NDJSON with --json).',
  ].join('\n'),
  options: [{ name: 'json', description: 'NDJSON output for machines' }],
  examples: ['ckpt history nightly', 'ckpt history nightly --json | jq -c "select(.type == \\"ProcessExited\\")"'],
  async run(args) {
    const [job, ...extra] = args.positionals;
    if (!job || extra.length > 0) throw new UsageError('name exactly one job');
    checkName('job', job);
    const format = flag(args, 'json') ? eventJson : eventLine;
    const store = openStore(args);
    try {
      let shown = 0;
      for (let from = 0; ; ) {
        const page = await store.readStream(jobStream(job), { from, limit: 1000 });
        if (page.length > 0) await writeOut(page.map(format).join('\n') + '\n');
        shown += page.length;
        if (page.length < 1000) break;
        from = page[page.length - 1]!.revision + 1;
      }
      if (shown === 0) {
        process.stderr.write(`ckpt history: unknown job "${job}" (ckpt jobs lists them)\n`);
        return EXIT.failed;
      }
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
