import type { OptionSpec, ParsedArgs } from './args.js';
import type { CommandEntry } from './catalogue.js';

/** Exit codes, the same for every command. */
/** timedOut: --wait reached the deadline before any agent recorded the outcome. */
export const EXIT = { ok: 0, failed: 1, usage: 2, timedOut: 3 } as const;

/** A command's help and implementation; its name and one-line summary are in catalogue.ts. */
export interface Command {
  /** Arguments after the command name, e.g. `[--from POSITION] [--follow]`. */
  readonly usage: string;
  readonly description: string;
  readonly options: readonly OptionSpec[];
  readonly examples: readonly string[];
  run(args: ParsedArgs): Promise<number>;
}

/** Options every command accepts. */
export const commonOptions: readonly OptionSpec[] = [
  {
    name: 'store',
    value: 'URL',
    description:
      'event store: sqlite:PATH, postgres://USER@HOST:PORT/DB, kurrentdb://HOST:PORT[?tls=false][&prefix=NAME] (or esdb://…) or memory: (default: $CKPT_STORE, else sqlite:$CKPT_HOME/events.db); a PostgreSQL password goes in PGPASSWORD or a 0600 PGPASSFILE, never in the URL on a command line',
  },
  { name: 'help', short: 'h', description: 'show this help' },
];

const optionLine = (o: OptionSpec): string => {
  const names = `${o.short ? `-${o.short}, ` : '    '}--${o.name}${o.value ? ` ${o.value}` : ''}`;
  return `  ${names.padEnd(26)} ${o.description}`;
};

export const commandHelp = (entry: CommandEntry, c: Command): string =>
  [
    `Usage: ckpt ${entry.name} ${c.usage}`.trimEnd(),
    '',
    entry.summary,
    '',
    c.description,
    '',
    'Options:',
    ...[...c.options, ...commonOptions].map(optionLine),
    '',
    'Examples:',
    ...c.examples.map((e) => `  ${e}`),
    '',
    'Exit status: 0 success, 1 failure (the message says what failed), 2 wrong usage.',
  ].join('\n');
