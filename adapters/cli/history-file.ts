// Reading an exported history (`ckpt export`): its header checked, every event read as a store
// reads its rows (storedEvent: data upcast from the version it was recorded with and checked
// against the catalogue, metadata), so a file that is not what it says is refused line by line,
// and one cut short (an interrupted export) is refused too.
import { readFileSync } from 'node:fs';
import { NAME_PATTERN } from '../../domain/codecs.js';
import { CorruptEventError, type RecordedEvent, UnreadableEventError } from '../../domain/event-store.js';
import { storedEvent } from '../store/batch.js';

export const HISTORY_FORMAT = { format: 'ckpt-history', formatVersion: 1 } as const;

export class HistoryFileError extends Error {
  override readonly name = 'HistoryFileError';
}

const isInt = (v: unknown): v is number => Number.isSafeInteger(v);

/** The job and events of an exported history file. */
export const readHistoryFile = (file: string): { job: string; ckpt: string; events: RecordedEvent[] } => {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new HistoryFileError(`${file}: cannot be read (${(error as Error).message})`);
  }
  const lines = text.split('\n');
  const parse = (i: number): Record<string, unknown> => {
    try {
      const v = JSON.parse(lines[i]!) as unknown;
      if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
    } catch {
      // below
    }
    throw new HistoryFileError(`${file}:${i + 1}: not a JSON object`);
  };
  const header = parse(0);
  if (header.format !== HISTORY_FORMAT.format) throw new HistoryFileError(`${file}:1: not an exported ckpt history (write one with: ckpt export JOB > FILE)`);
  if (header.formatVersion !== HISTORY_FORMAT.formatVersion) {
    throw new HistoryFileError(
      `${file}:1: history format ${JSON.stringify(header.formatVersion)}; this ckpt reads format ${HISTORY_FORMAT.formatVersion} (exported by ckpt ${String(header.ckpt)}: use that version or newer)`,
    );
  }
  if (typeof header.job !== 'string' || !NAME_PATTERN.test(header.job)) throw new HistoryFileError(`${file}:1: the header names no valid job`);
  const events: RecordedEvent[] = [];
  let previous = 0;
  for (let i = 1; i < lines.length; i++) {
    if (lines[i]!.trim() === '') continue;
    const e = parse(i);
    const at = `${file}:${i + 1}`;
    if (!isInt(e.position) || e.position <= previous) throw new HistoryFileError(`${at}: position must be an integer after ${previous}, got ${JSON.stringify(e.position)}`);
    if (typeof e.stream !== 'string' || !isInt(e.revision) || typeof e.id !== 'string' || typeof e.type !== 'string' || !isInt(e.schemaVersion)) {
      throw new HistoryFileError(`${at}: an event needs stream, revision, id, type and schemaVersion`);
    }
    try {
      const event = storedEvent(
        e.position,
        e.stream,
        e.revision,
        e.id,
        e.type,
        e.schemaVersion,
        JSON.stringify(e.data),
        JSON.stringify(e.metadata ?? null),
        typeof e.digest === 'string' ? e.digest : null,
      );
      void event.metadata; // read lazily by stores: checked here, where the line is known
      events.push(event);
    } catch (error) {
      if (error instanceof CorruptEventError) throw new HistoryFileError(`${at}: ${e.type}: ${error.problem}`);
      if (error instanceof UnreadableEventError) throw new HistoryFileError(`${at}: ${error.schemaProblem.message}`);
      throw error;
    }
    previous = e.position;
  }
  if (header.events !== events.length) throw new HistoryFileError(`${file}: the header says ${JSON.stringify(header.events)} events, the file holds ${events.length} (an export cut short?)`);
  return { job: header.job, ckpt: String(header.ckpt), events };
};
