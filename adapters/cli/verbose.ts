// --verbose for the commands that read snapshot-backed read models.
import { flag, type ParsedArgs } from './args.js';
import { progressWriter } from './follow.js';

export const VERBOSE = { name: 'verbose', description: 'say on stderr how the answer was read: snapshot used (events folded after it), rebuilt and why, saved' } as const;

/** The read's notes on stderr, with --verbose only. */
export const verboseNotes = (args: ParsedArgs, command: string, read: { readonly notes: readonly string[]; readonly folded: number }): void => {
  if (!flag(args, 'verbose')) return;
  for (const note of read.notes) process.stderr.write(`ckpt ${command}: ${note}\n`);
  process.stderr.write(`ckpt ${command}: ${read.folded} event(s) folded\n`);
};

/**
 * Progress of a long fold on stderr — a read model rebuilt from the log, or a snapshot far behind
 * it: after a second (CKPT_PROGRESS_AFTER_MS), the events folded so far (a line rewritten on a
 * terminal, else one every 5 s). `done` clears the line. A read from a snapshot near the log's end
 * shows nothing. `snapshot`: the fold is a read model's, saved when done (not so for `explain`).
 */
export const foldProgress = (command: string, json = false, snapshot = true) => {
  const out = progressWriter(json);
  const after = Number(process.env.CKPT_PROGRESS_AFTER_MS ?? 1000);
  const every = process.stderr.isTTY ? 200 : 5000;
  let next = Date.now() + after;
  let shown = false;
  return {
    progress: (folded: number, position: number) => {
      const now = Date.now();
      if (now < next) return;
      next = now + every;
      shown = true;
      out.show(
        `ckpt ${command}: folding the log: ${folded.toLocaleString('en-US')} event(s) so far (position ${position.toLocaleString('en-US')})${snapshot ? '; its snapshot is saved when done' : ''}`,
      );
    },
    done: () => shown && out.clear(),
  };
};
