import { integerOption, flag, type ParsedArgs } from '../args.js';
import { EXIT, type Command } from '../command.js';
import { eventJson, eventLine, writeOut } from '../output.js';
import { openStore } from '../store.js';

export const logCommand: Command = {
  name: 'log',
  summary: 'Print the event log: every event of every job and node, in global order.',
  usage: '[--from POSITION] [--follow] [--json]',
  description: [
    'One line per event for people: position, time recorded, stream#revision, type, and the data as',
    'key=value pairs (a process reads pid@starttime). With --json, one JSON object per line (NDJSON)',
    'with position, stream, revision, id, type, schemaVersion, data and metadata.',
    'With --follow, ckpt keeps printing new events as they are committed, until interrupted.',
  ].join('\n'),
  options: [
    { name: 'from', value: 'POSITION', description: 'start at this global position (inclusive; default 1)' },
    { name: 'follow', short: 'f', description: 'after the existing events, print new ones as they come' },
    { name: 'json', description: 'NDJSON output for machines' },
  ],
  examples: ['ckpt log', 'ckpt log --from 1200 --json | jq .type', 'ckpt log --follow --store postgres://ckpt@db1/ckpt'],
  async run(args: ParsedArgs): Promise<number> {
    const from = integerOption(args, 'from', 1) ?? 1;
    const format = flag(args, 'json') ? eventJson : eventLine;
    const store = openStore(args);
    try {
      if (!flag(args, 'follow')) {
        const head = await store.headPosition();
        for (let cursor = from; cursor <= head; ) {
          const page = await store.readAll({ from: cursor, limit: 1000 });
          const lines = page.filter((e) => e.position <= head);
          if (lines.length === 0) break;
          await writeOut(lines.map(format).join('\n') + '\n');
          cursor = lines[lines.length - 1]!.position + 1;
        }
        return EXIT.ok;
      }
      return await new Promise<number>((resolve) => {
        const subscription = store.subscribeAll({ from }).subscribe({
          next: (e) => void writeOut(format(e) + '\n'),
          error: (error: Error) => {
            process.stderr.write(`ckpt log: ${error.message}\n`);
            resolve(EXIT.failed);
          },
          complete: () => resolve(EXIT.ok),
        });
        const stop = () => {
          subscription.unsubscribe();
          resolve(EXIT.ok);
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    } finally {
      await store.close();
    }
  },
};
