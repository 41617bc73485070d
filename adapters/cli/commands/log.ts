import type { EventStore, Position, RecordedEvent } from '../../../domain/event-store.js';
import { flag, integerOption, type ParsedArgs, UsageError } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { eventJson, eventLine, writeOut } from '../output.js';
import { openStore } from '../store.js';

const PAGE = 1000;

/**
 * The last `n` events at or before `head`, oldest first. Positions may skip numbers, so the window
 * before the head starts n wide and doubles until it holds n events (or reaches the start): on a
 * log without gaps, one read of n events, whatever the log's length.
 */
export const logTail = async (store: EventStore, head: Position, n: number): Promise<RecordedEvent[]> => {
  for (let width = n; ; width *= 2) {
    const start = Math.max(1, head - width + 1);
    const window: RecordedEvent[] = [];
    for (let cursor = start; cursor <= head; ) {
      const page = (await store.readAll({ from: cursor, limit: PAGE })).filter((e) => e.position <= head);
      window.push(...page);
      if (page.length < PAGE) break;
      cursor = page[page.length - 1]!.position + 1;
    }
    if (window.length >= n || start === 1) return window.slice(Math.max(0, window.length - n));
  }
};

export const logCommand: Command = {
  usage: '[--tail N | --from POSITION] [--limit N] [--follow] [--json]',
  description: [
    'One line per event for people: position, time recorded, stream#revision, type, and the data as',
    'key=value pairs (a process reads pid@starttime). With --json, one JSON object per line (NDJSON)',
    'with position, stream, revision, id, type, schemaVersion, data, metadata and digest.',
    'A long log is read in pages: --tail N prints only the last N events (it costs the same at any log',
    'length), --from POSITION starts there and --limit N stops after N events.',
    'With --follow, ckpt keeps printing new events as they are committed, until interrupted',
    '(after the last N with --tail).',
  ].join('\n'),
  options: [
    { name: 'tail', value: 'N', description: 'only the last N events (with --follow: then the new ones)' },
    { name: 'from', value: 'POSITION', description: 'start at this global position (inclusive; default 1)' },
    { name: 'limit', value: 'N', description: 'print at most N events' },
    { name: 'follow', short: 'f', description: 'after the existing events, print new ones as they come' },
    { name: 'json', description: 'NDJSON output for machines' },
  ],
  examples: ['ckpt log', 'ckpt log --tail 100', 'ckpt log --from 1200 --limit 50 --json | jq .type', 'ckpt log --tail 20 --follow --store postgres://ckpt@db1/ckpt'],
  async run(args: ParsedArgs): Promise<number> {
    const tail = integerOption(args, 'tail', 1);
    const from = integerOption(args, 'from', 1);
    const limit = integerOption(args, 'limit', 1);
    if (tail !== undefined && (from !== undefined || limit !== undefined)) throw new UsageError('--tail N prints the last N events: give it alone, or --from POSITION with --limit N instead');
    if (limit !== undefined && flag(args, 'follow')) throw new UsageError('--follow prints events until interrupted: it takes no --limit');
    const format = flag(args, 'json') ? eventJson : eventLine;
    const store = openStore(args);
    try {
      const head = await store.headPosition();
      let next = from ?? 1; // where --follow goes on
      if (tail !== undefined) {
        const events = await logTail(store, head, tail);
        if (events.length > 0) await writeOut(events.map(format).join('\n') + '\n');
        next = head + 1;
      } else if (!flag(args, 'follow')) {
        for (let cursor = next, left = limit ?? Infinity; cursor <= head && left > 0; ) {
          const page = await store.readAll({ from: cursor, limit: Math.min(PAGE, left) });
          const lines = page.filter((e) => e.position <= head);
          if (lines.length === 0) break;
          await writeOut(lines.map(format).join('\n') + '\n');
          left -= lines.length;
          cursor = lines[lines.length - 1]!.position + 1;
        }
      }
      if (!flag(args, 'follow')) return EXIT.ok;
      return await new Promise<number>((resolve) => {
        const subscription = store.subscribeAll({ from: next }).subscribe({
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
