// The log's digest chain: each event carries a SHA-256 of its content chained to the previous
// event of its stream, so a row changed, removed or slipped in behind the stores' back is found
// and named. Chained per stream, not globally: an append needs only its own stream's head digest,
// which the stores already read under the lock they take for the expected-revision check.
//
//   content = sha256(canonical JSON of [stream, id, type, schemaVersion, data, metadata])
//   digest  = sha256(previous digest ‖ content ‖ revision as 8 bytes big-endian)
//
// The first event of a stream chains to GENESIS. JSON is canonical (object keys sorted, no white
// space) so a store may keep it in any form that parses back to the same values (PostgreSQL's jsonb
// reorders keys). Split in two so PostgreSQL can chain a batch inside its append function with
// its built-in sha256(): the client sends each event's content digest, the server links them.
//
// What the chain proves: an edit by someone who does not also rewrite every later digest of the
// stream. Anyone who can write the database can recompute a whole stream; to catch that, keep the
// stream heads (`ckpt audit --verify --json` prints them) somewhere the writer cannot reach.
import { createHash } from 'node:crypto';
import type { ChainedRow, EventStore, Position } from '../../domain/event-store.js';

export const GENESIS = '0'.repeat(64);

/** JSON with object keys sorted at every level: the same values always give the same text. */
export const canonicalJson = (value: unknown): string => {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null'; // what JSON.stringify gives
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object':
      break;
    default:
      return 'null';
  }
  if (value === null) return 'null';
  // Loops and concatenation: this runs for every appended event (about 4× JSON.stringify's time).
  let out: string;
  if (Array.isArray(value)) {
    out = '[';
    for (let i = 0; i < value.length; i++) out += (i > 0 ? ',' : '') + canonicalJson(value[i] === undefined ? null : value[i]);
    return out + ']';
  }
  const o = value as Record<string, unknown>;
  const keys = Object.keys(o).sort();
  out = '{';
  for (const k of keys) {
    if (o[k] === undefined) continue;
    out += (out.length > 1 ? ',' : '') + JSON.stringify(k) + ':' + canonicalJson(o[k]);
  }
  return out + '}';
};

export interface EventContent {
  readonly stream: string;
  readonly id: string;
  readonly type: string;
  readonly schemaVersion: number;
  readonly data: unknown;
  readonly metadata: unknown;
}

/**
 * SHA-256 (hex) of an event's content, without its place in the stream: of the canonical JSON of
 * [stream, id, type, schemaVersion, data, metadata]. A batch sharing one metadata object passes
 * its canonical JSON once.
 */
export const contentDigest = (e: EventContent, metadataJson: string = canonicalJson(e.metadata)): string =>
  createHash('sha256')
    .update(`[${canonicalJson(e.stream)},${canonicalJson(e.id)},${canonicalJson(e.type)},${canonicalJson(e.schemaVersion)},${canonicalJson(e.data)},${metadataJson}]`)
    .digest('hex');

/** Links a content digest to the stream's previous digest at a revision (what ckpt_append does in SQL). */
export const chainDigest = (previous: string, content: string, revision: number): string => {
  const rev = Buffer.alloc(8);
  rev.writeBigInt64BE(BigInt(revision));
  return createHash('sha256').update(previous, 'hex').update(content, 'hex').update(rev).digest('hex');
};

/** The digest a stored row should carry, or why its content cannot be read at all. */
const recompute = (row: ChainedRow, previous: string): string | { unreadable: string } => {
  let data: unknown;
  let metadata: unknown;
  try {
    data = JSON.parse(row.data);
    metadata = JSON.parse(row.metadata);
  } catch {
    return { unreadable: 'its data or metadata is not valid JSON' };
  }
  return chainDigest(previous, contentDigest({ stream: row.stream, id: row.id, type: row.type, schemaVersion: row.schemaVersion, data, metadata }), row.revision);
};

export type ChainProblemKind = 'altered' | 'missing' | 'inserted';

export interface ChainProblem {
  readonly kind: ChainProblemKind;
  readonly stream: string;
  readonly revision: number;
  /** The row where the problem shows (for a missing event: the row after the gap, if any). */
  readonly position: Position | null;
  readonly detail: string;
}

export interface ChainReport {
  readonly events: number;
  readonly streams: number;
  /** The earliest problem by position (a problem at the end of a stream, with no row, comes last). */
  readonly problem?: ChainProblem;
  /** How many streams have a problem. */
  readonly damagedStreams: number;
  /** Rows up to this position were written before the chain existed and were chained by a migration. */
  readonly chainedByMigration?: { readonly upTo: Position; readonly at: string };
  /** Each stream's last digest: keep a copy elsewhere to detect a rewrite of a whole stream. */
  readonly heads?: ReadonlyArray<{ readonly stream: string; readonly revision: number; readonly digest: string }>;
}

const PAGE = 1000;

/**
 * Walks the log stream by stream, in pages (memory bounded by a page, plus one head per stream
 * when `heads` is asked for), and names the first altered, missing or inserted event.
 */
export const verifyChain = async (store: Pick<EventStore, 'chain' | 'streamRevision'>, options: { heads?: boolean } = {}): Promise<ChainReport> => {
  const log = store.chain;
  let events = 0;
  let streams = 0;
  let damagedStreams = 0;
  let first: ChainProblem | undefined;
  const heads: Array<{ stream: string; revision: number; digest: string }> = [];
  const note = (p: ChainProblem) => {
    damagedStreams++;
    if (!first || (p.position ?? Infinity) < (first.position ?? Infinity)) first = p;
  };
  for (let page = await log.streams(undefined, PAGE); page.length > 0; page = await log.streams(page[page.length - 1]!.name, PAGE)) {
    for (const { name, revision: head } of page) {
      streams++;
      const problem = await verifyStream(
        log,
        name,
        head,
        (n) => (events += n),
        (stream) => store.streamRevision(stream),
      );
      if (problem) note(problem);
      else if (options.heads && head >= 0) heads.push({ stream: name, revision: head, digest: (await log.rows(name, head, 1))[0]!.digest! });
    }
  }
  const stray = await log.strayRow();
  if (stray) {
    events++;
    note({ kind: 'inserted', stream: stray.stream, revision: stray.revision, position: stray.position, detail: 'the row belongs to no stream the log knows' });
  }
  const chainedByMigration = await log.chainedByMigration();
  return { events, streams, damagedStreams, ...(first && { problem: first }), ...(chainedByMigration && { chainedByMigration }), ...(options.heads && { heads }) };
};

/**
 * A row past the head read when the walk began is an append made since (the store moves the head
 * in the same transaction) or a row inserted behind the store's back (the head does not move):
 * the head is read again before calling it inserted.
 */
const verifyStream = async (
  log: EventStore['chain'],
  stream: string,
  head: number,
  count: (n: number) => void,
  headNow: (stream: string) => Promise<number | undefined>,
  resume: { previous: string; expected: number; recheckedEnd: boolean } = { previous: GENESIS, expected: 0, recheckedEnd: false },
): Promise<ChainProblem | undefined> => {
  let { previous, expected, recheckedEnd } = resume;
  for (;;) {
    const rows = await log.rows(stream, expected, PAGE);
    count(rows.length);
    for (const row of rows) {
      if (row.revision > head && row.revision === expected) head = Math.max(head, (await headNow(stream)) ?? head);
      if (row.revision > head && row.revision === expected) {
        return { kind: 'inserted', stream, revision: row.revision, position: row.position, detail: `the row lies past the stream's recorded head (revision ${head})` };
      }
      if (row.revision !== expected) {
        const gap = row.revision - expected === 1 ? `revision ${expected} is` : `revisions ${expected}–${row.revision - 1} are`;
        return { kind: 'missing', stream, revision: expected, position: row.position, detail: `${gap} missing before this row (revision ${row.revision})` };
      }
      if (row.digest === null || row.previous === null) {
        return { kind: 'inserted', stream, revision: row.revision, position: row.position, detail: 'the row has no digest: it was not written by a store' };
      }
      if (row.previous !== previous) {
        return {
          kind: 'inserted',
          stream,
          revision: row.revision,
          position: row.position,
          detail: `its previous digest ${row.previous.slice(0, 12)}… does not chain to the stream (expected ${previous.slice(0, 12)}…): inserted, or moved from elsewhere`,
        };
      }
      const digest = recompute(row, previous);
      if (typeof digest !== 'string') return { kind: 'altered', stream, revision: row.revision, position: row.position, detail: digest.unreadable };
      if (digest !== row.digest) return { kind: 'altered', stream, revision: row.revision, position: row.position, detail: 'its content no longer matches its digest' };
      previous = row.digest;
      expected++;
    }
    if (rows.length < PAGE) break;
  }
  // Fewer rows than the head read when the walk began: only a read at least as new as that head may
  // call them missing (an append may commit between two statements of the walk).
  if (expected - 1 < head && !recheckedEnd) {
    recheckedEnd = true;
    if ((await log.rows(stream, expected, 1)).length > 0) return verifyStream(log, stream, head, count, headNow, { previous, expected, recheckedEnd });
  }
  if (expected - 1 < head) {
    const gap = head === expected ? `revision ${expected} is` : `revisions ${expected}–${head} are`;
    return { kind: 'missing', stream, revision: expected, position: null, detail: `${gap} missing at the end of the stream (its head is revision ${head})` };
  }
  if (expected - 1 > head) head = Math.max(head, (await headNow(stream)) ?? head);
  if (expected - 1 > head) {
    return { kind: 'inserted', stream, revision: head + 1, position: null, detail: `the stream's rows go past its recorded head (revision ${head})` };
  }
  return undefined;
};

/** One line for `ckpt verify` / `ckpt audit --verify`. */
export const describeChain = (r: ChainReport): string => {
  const since = r.chainedByMigration
    ? ` (events up to position ${r.chainedByMigration.upTo} were written before the chain and chained by the migration of ${r.chainedByMigration.at}: they are vouched for only from then on)`
    : '';
  if (!r.problem) return `log chain: ${r.events} events in ${r.streams} streams intact${since}`;
  const p = r.problem;
  const at = p.position === null ? `stream ${p.stream}, revision ${p.revision}` : `event at position ${p.position} (stream ${p.stream}, revision ${p.revision})`;
  const more = r.damagedStreams > 1 ? `; ${r.damagedStreams - 1} other stream(s) damaged too` : '';
  return `log chain broken: ${p.kind} ${at}: ${p.detail}${more}${since}`;
};
