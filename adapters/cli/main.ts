#!/usr/bin/env node
// The `ckpt` command: a driving adapter over the event log. Exit 0 success, 1 failure, 2 usage.
import { StoreUrlError } from '../store/url.js';
import { parseArgs, UsageError } from './args.js';
import { catalogue } from './catalogue.js';
import { commandHelp, commonOptions, EXIT } from './command.js';
import { version } from './version.js';

const topHelp = (): string =>
  [
    'Usage: ckpt COMMAND [OPTIONS]',
    '',
    'ckpt checkpoints and restarts whole process groups of distributed jobs. Every fork, exit,',
    'group change and checkpoint phase is an event in one log; everything ckpt shows or decides',
    'is derived from that log.',
    '',
    'Commands:',
    ...catalogue.map((c) => `  ${c.name.padEnd(12)} ${c.summary}`),
    `  ${'help'.padEnd(12)} Show help for a command: ckpt help COMMAND`,
    '',
    'Options:',
    '  -h, --help        show this help (ckpt COMMAND --help for a command)',
    '  -V, --version     print the version',
    '',
    'Environment:',
    '  CKPT_HOME         where ckpt keeps its data (default ~/.ckpt)',
    '  CKPT_STORE        event store URL (default sqlite:$CKPT_HOME/events.db); --store overrides it',
    '  CKPT_NODE         this node’s name (default: the host name); --node overrides it',
    '  CKPT_INITIAL_NETNS  the initial network namespace as a file, for an agent in another one where',
    '                    /proc/1/ns/net cannot be read (scripts/testbed.sh sets it)',
    '',
    'Exit status: 0 success, 1 failure (the message says what failed), 2 wrong usage.',
  ].join('\n');

/** Turns what went wrong into a message that says what to do. */
const explain = (error: unknown): string => {
  const e = error as NodeJS.ErrnoException & { code?: string };
  if (e?.code === 'ECONNREFUSED' || e?.code === 'ENOTFOUND' || e?.code === 'EHOSTUNREACH' || e?.code === 'ETIMEDOUT') {
    return `cannot reach the event store (${e.message}): is the server running? Choose the store with --store or CKPT_STORE.`;
  }
  if (e?.code === '28P01' || e?.code === '28000' || e?.code === '3D000') {
    return `the PostgreSQL event store refused the connection (${e.message}): check the user, password and database in the store URL.`;
  }
  if (e?.code === 'SQLITE_CANTOPEN') {
    return `cannot open the SQLite event store (${e.message}): check that its directory is writable, or set CKPT_HOME / --store.`;
  }
  if (typeof e?.code === 'string' && e.code.startsWith('SQLITE_')) return `the SQLite event store failed: ${e.message} (${e.code})`;
  return e instanceof Error ? e.message : String(error);
};

export const main = async (argv: readonly string[]): Promise<number> => {
  const [first, ...rest] = argv;
  if (first === undefined || first === '--help' || first === '-h') {
    console.log(topHelp());
    return EXIT.ok;
  }
  if (first === '--version' || first === '-V') {
    console.log(version());
    return EXIT.ok;
  }
  const wanted = first === 'help' ? rest[0] : first;
  const entry = catalogue.find((c) => c.name === wanted);
  if (first === 'help' && wanted === undefined) {
    console.log(topHelp());
    return EXIT.ok;
  }
  if (!entry) {
    process.stderr.write(`ckpt: unknown command "${wanted}"\n\n${topHelp()}\n`);
    return EXIT.usage;
  }
  const command = await entry.load();
  if (first === 'help') {
    console.log(commandHelp(entry, command));
    return EXIT.ok;
  }
  try {
    const args = parseArgs(rest, [...command.options, ...commonOptions], `ckpt ${entry.name}`);
    if (args.options.has('help')) {
      console.log(commandHelp(entry, command));
      return EXIT.ok;
    }
    return await command.run(args);
  } catch (error) {
    if (error instanceof UsageError || error instanceof StoreUrlError) {
      process.stderr.write(`ckpt ${entry.name}: ${error.message}\n\n${commandHelp(entry, command)}\n`);
      return EXIT.usage;
    }
    process.stderr.write(`ckpt ${entry.name}: ${explain(error)}\n`);
    return EXIT.failed;
  }
};

main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (error) => {
    process.stderr.write(`ckpt: ${explain(error)}\n`);
    process.exitCode = EXIT.failed;
  },
);
