// --verbose for the commands that read snapshot-backed read models.
import { flag, type ParsedArgs } from './args.js';

export const VERBOSE = { name: 'verbose', description: 'say on stderr how the answer was read: snapshot used (events folded after it), rebuilt and why, saved' } as const;

/** The read's notes on stderr, with --verbose only. */
export const verboseNotes = (args: ParsedArgs, command: string, read: { readonly notes: readonly string[]; readonly folded: number }): void => {
  if (!flag(args, 'verbose')) return;
  for (const note of read.notes) process.stderr.write(`ckpt ${command}: ${note}\n`);
  process.stderr.write(`ckpt ${command}: ${read.folded} event(s) folded\n`);
};
