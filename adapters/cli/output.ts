// Writing to stdout with back-pressure, and quietly stopping when the reader goes away
// (`ckpt log | head`).
import type { RecordedEvent } from '../../domain/event-store.js';
import { describeFailure, type Failure } from '../../domain/failure.js';

process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

export const writeOut = (text: string): Promise<void> => new Promise((resolve) => (process.stdout.write(text) ? resolve() : process.stdout.once('drain', resolve)));

const ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
/** A value on one line: newlines and other control characters escaped (a unit's command may hold any). */
const oneLine = (v: unknown): string =>
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
  typeof v === 'string' ? v.replace(/[\u0000-\u001f\u007f]/g, (c) => ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) : JSON.stringify(v);

/** A compact `key=value …` rendering of event data, one line; a process reference reads `pid@startTime`. */
export const summarize = (value: unknown, prefix = ''): string[] => {
  if (value === null || typeof value !== 'object') return [`${prefix}=${oneLine(value)}`];
  const o = value as Record<string, unknown>;
  if (Object.keys(o).length === 2 && typeof o.pid === 'number' && typeof o.startTime === 'number') return [`${prefix}=${o.pid}@${o.startTime}`];
  if (Array.isArray(value)) {
    const simple = value.every((v) => v === null || typeof v !== 'object');
    return [`${prefix}=${simple ? value.map((v) => (typeof v === 'string' ? oneLine(v) : v === null ? '' : String(v))).join(',') : `[${value.length}]`}`];
  }
  return Object.entries(o).flatMap(([k, v]) => summarize(v, prefix ? `${prefix}.${k}` : k));
};

export const eventLine = (e: RecordedEvent): string => `${String(e.position).padStart(8)}  ${e.metadata.recordedAt}  ${e.stream}#${e.revision}  ${e.type}  ${summarize(e.data).join(' ')}`;

export const eventJson = (e: RecordedEvent): string => JSON.stringify(e);

/** Left-aligned columns, two spaces apart. */
export const table = (header: readonly string[], rows: ReadonlyArray<readonly string[]>): string => {
  // A loop, not Math.max(...column): 150k jobs as arguments overflow the stack.
  const widths = header.map((h) => h.length);
  for (const r of rows) for (let i = 0; i < widths.length; i++) widths[i] = Math.max(widths[i]!, r[i]!.length);
  const line = (r: readonly string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
};

export const formatBytes = (n: number): string =>
  n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(2)} GiB` : n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`;

/** Why something failed, on one line: the failure's class, message and hint when recorded, else the reason. */
export const whyLine = (reason: string | null | undefined, failure?: Failure | null): string => (failure ? describeFailure(failure) : (reason ?? ''));

const csvField = (v: string): string => (/[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
/** CSV by RFC 4180: a header row, CRLF line ends, a field holding a comma, quote or line break quoted (its quotes doubled). */
export const csv = (header: readonly string[], rows: ReadonlyArray<readonly string[]>): string => [header, ...rows].map((r) => r.map(csvField).join(',')).join('\r\n') + '\r\n';

/** Who asked, in a few characters. */
export const actorName = (a: { kind: string; uid?: number; user?: string } | null | undefined): string => (a?.kind === 'user' ? (a.user ?? `uid ${a.uid}`) : (a?.kind ?? '-'));
