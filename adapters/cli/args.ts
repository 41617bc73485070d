// A small, strict argument parser: every option is declared, anything else is a usage error.
import { isIP } from 'node:net';
import { NAME_PATTERN } from '../../domain/codecs.js';
import type { JobOptions } from '../../domain/events/job.js';

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export interface OptionSpec {
  readonly name: string;
  readonly short?: string;
  /** Placeholder of the value; options without one are flags. */
  readonly value?: string;
  readonly description: string;
  /** May be given several times; read with listOption. */
  readonly repeatable?: boolean;
}

export interface ParsedArgs {
  readonly options: ReadonlyMap<string, string | true>;
  readonly positionals: readonly string[];
  /** Everything after a bare `--`, untouched (e.g. the command of `ckpt run`). */
  readonly rest: readonly string[];
  /** Every value of each repeatable option, in order. */
  readonly lists: ReadonlyMap<string, readonly string[]>;
}

export const parseArgs = (argv: readonly string[], specs: readonly OptionSpec[], command: string): ParsedArgs => {
  const options = new Map<string, string | true>();
  const lists = new Map<string, string[]>();
  const positionals: string[] = [];
  const find = (arg: string) => specs.find((s) => `--${s.name}` === arg || (s.short && `-${s.short}` === arg));
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') return { options, positionals, rest: argv.slice(i + 1), lists };
    if (!arg.startsWith('-') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const spec = find(flag);
    if (!spec) throw new UsageError(`unknown option ${flag} for ${command}`);
    if (!spec.value) {
      if (eq > 0) throw new UsageError(`option --${spec.name} takes no value`);
      options.set(spec.name, true);
      continue;
    }
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined || (eq < 0 && value.startsWith('--'))) throw new UsageError(`option --${spec.name} needs a value (${spec.value})`);
    options.set(spec.name, value);
    if (spec.repeatable) lists.set(spec.name, [...(lists.get(spec.name) ?? []), value]);
  }
  return { options, positionals, rest: [], lists };
};

export const stringOption = (args: ParsedArgs, name: string): string | undefined => {
  const value = args.options.get(name);
  return typeof value === 'string' ? value : undefined;
};

export const flag = (args: ParsedArgs, name: string): boolean => args.options.get(name) === true;

/** --tcp-established and --file-locks (ckpt run, ckpt checkpoint) as recorded: only those given, none → undefined. */
export const captureOptions = (args: ParsedArgs): JobOptions | undefined =>
  flag(args, 'tcp-established') || flag(args, 'file-locks') ? { ...(flag(args, 'tcp-established') && { tcpEstablished: true }), ...(flag(args, 'file-locks') && { fileLocks: true }) } : undefined;

export const integerOption = (args: ParsedArgs, name: string, min: number): number | undefined => {
  const value = stringOption(args, name);
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`option --${name} needs an integer ≥ ${min}, got "${value}"`);
  }
  return n;
};

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/**
 * An address to serve on: `[HOST:]PORT`, HOST an IP address (IPv6 in brackets). Without HOST:
 * localhost only, so nothing is exposed beyond the machine unless asked for.
 */
export const listenOption = (args: ParsedArgs, name: string): ListenAddress | undefined => {
  const value = stringOption(args, name);
  if (value === undefined) return undefined;
  const match = /^(?:(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):)?(\d{1,5})$/.exec(value);
  const host = match?.[1]?.replace(/^\[|\]$/g, '') ?? '127.0.0.1';
  const port = Number(match?.[2]);
  if (!match || !isIP(host) || port < 1 || port > 65535) {
    throw new UsageError(`option --${name} needs [HOST:]PORT with HOST an IP address and PORT 1–65535 (e.g. 127.0.0.1:9464), got "${value}"`);
  }
  return { host, port };
};

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** Sizes like `256M`, `1.5G`, `4096` (bytes; K, M, G, T are powers of 1024). */
export const sizeOption = (args: ParsedArgs, name: string): number | undefined => {
  const value = stringOption(args, name);
  if (value === undefined) return undefined;
  const match = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(value.trim());
  const bytes = match ? Math.floor(Number(match[1]) * UNITS[match[2]!.toLowerCase()]!) : NaN;
  if (!Number.isSafeInteger(bytes) || bytes < 1) throw new UsageError(`option --${name} needs a size such as 256M or 2G, got "${value}"`);
  return bytes;
};

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A duration in milliseconds: `500ms`, `30s`, `2m`, `1h`, or plain seconds. */
export const durationOption = (args: ParsedArgs, name: string): number | undefined => {
  const value = stringOption(args, name);
  if (value === undefined) return undefined;
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(value.trim());
  const ms = match ? Math.round(Number(match[1]) * DURATION_UNITS[match[2] ?? 's']!) : NaN;
  if (!Number.isSafeInteger(ms) || ms < 1) throw new UsageError(`option --${name} needs a duration such as 30s, 2m or 500ms, got "${value}"`);
  return ms;
};

export const listOption = (args: ParsedArgs, name: string): readonly string[] => args.lists.get(name) ?? [];

/** A job, unit or node name from the command line: it becomes a stream, a path and a cgroup, so
 *  anything but a valid name is refused before anything is read or recorded. */
export const checkName = (what: 'job' | 'unit' | 'node', name: string): string => {
  if (!NAME_PATTERN.test(name))
    throw new UsageError(`${what} name ${JSON.stringify(name)} is not valid: use 1–64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit (${NAME_PATTERN.source})`);
  return name;
};
