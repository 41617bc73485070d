// ckpt's log on KurrentDB: the pure half of kurrentdb.ts (no client, no I/O), so that the mapping
// is tested where no KurrentDB server can run.
//
// Streams: ckpt stream S of a store is the KurrentDB stream `PREFIX-S`, at the same revisions
// (0, 1, 2…). PREFIX (`?prefix=NAME`, default `ckpt`) has no `-`, so the first `-` ends it and
// two stores on one server never share a stream.
//
// Positions: KurrentDB's own ($all commit/prepare positions) are not gap-free and include every
// other writer's events, while ckpt needs 1, 2, 3… over the store's events alone. So every append
// also writes one pointer event per ckpt event to the store's positions stream `PREFIX.positions`
// (`.` cannot occur in a prefix), in the same atomic multi-stream append, expecting that stream's
// head: pointer revision r is ckpt position r + 1, and the server's expected-revision check makes
// the numbering gap-free and the same for every reader. Each event also carries its position in
// its metadata, so a stream read needs no lookup.
//   The alternative, numbering the store's events while reading $all filtered to the prefix,
// needs no second stream but makes every `readAll({ from })` count from the start of $all (or
// keep an index beside it), and it renumbers the log if a scavenge ever drops an event. The price
// of the positions stream: appends from all writers serialise on its head (an optimistic lock:
// a writer that loses re-reads and tries again, as PostgreSQL's appends queue on its lock), each
// event is written twice (the pointer is ~50 bytes), and the server must have multi-stream appends
// (KurrentDB ≥ 25.1). Pointers are ordinary JSON events of ckpt's own type rather than KurrentDB
// link events (`$>`), so reading them depends on no link resolution: a page of pointers is read,
// then each run of consecutive revisions of one stream (an appended batch) in one read.
import { type AppendResult, type ChainedRow, CorruptEventError, type ExpectedRevision, type Position, type Revision } from '../../domain/event-store.js';
import { checkExpectedRevision, type EncodedEvent } from './batch.js';
import { chainDigest, GENESIS } from './chain.js';
import { redactStoreUrl } from './redact.js';
import { StoreUrlError } from './url.js';

export const KURRENT_URL = /^(kurrentdb|esdb)(\+discover)?:\/\//;
export const KURRENT_URL_FORM = 'kurrentdb://HOST:PORT[,HOST:PORT…][?tls=false][&prefix=NAME] (or esdb://…, kurrentdb+discover://…)';
export const DEFAULT_PREFIX = 'ckpt';
const PREFIX = /^[A-Za-z0-9_]{1,64}$/;

/** The options @kurrent/kurrentdb-client's connection strings take, by their case- and `_`/`-`-blind spelling, as it compares them. */
const flatCase = (key: string): string => key.trim().toLowerCase().replace(/[_-]/g, '');
const CLIENT_OPTIONS = new Map(
  [
    'tls',
    'tlsVerifyCert',
    'tlsCAFile',
    'userCertFile',
    'userKeyFile',
    'nodePreference',
    'connectionName',
    'defaultDeadline',
    'maxDiscoverAttempts',
    'discoveryInterval',
    'gossipTimeout',
    'keepAliveInterval',
    'keepAliveTimeout',
    'throwOnAppendFailure',
  ].map((k) => [flatCase(k), k]),
);

export interface KurrentTarget {
  /** What the client is given: the URL without ckpt's own `prefix` parameter, `esdb` spelled `kurrentdb`. */
  readonly connectionString: string;
  readonly prefix: string;
  /** For messages: the URL with any password replaced by ***. */
  readonly location: string;
}

/** Splits a store URL into the client's connection string and the store's stream prefix; a bad URL is refused saying why. */
export const parseKurrentUrl = (url: string): KurrentTarget => {
  const location = redactStoreUrl(url);
  const scheme = KURRENT_URL.exec(url);
  if (!scheme) throw new StoreUrlError(`store URL "${location}" is not a KurrentDB URL: use ${KURRENT_URL_FORM}`);
  const rest = url.slice(scheme[0].length);
  const queryAt = rest.indexOf('?');
  const authorityAndPath = queryAt < 0 ? rest : rest.slice(0, queryAt);
  const query = new URLSearchParams(queryAt < 0 ? '' : rest.slice(queryAt + 1));
  const slash = authorityAndPath.indexOf('/');
  const authority = slash < 0 ? authorityAndPath : authorityAndPath.slice(0, slash);
  if (slash >= 0 && authorityAndPath.slice(slash + 1) !== '') {
    throw new StoreUrlError(`store URL "${location}": KurrentDB has no databases to name in a path; keep stores apart with ?prefix=NAME`);
  }
  const hosts = authority.slice(authority.lastIndexOf('@') + 1);
  if (hosts === '') throw new StoreUrlError(`store URL "${location}" names no host: use ${KURRENT_URL_FORM}`);
  for (const host of hosts.split(',')) {
    const m = /^([^:[\]]+)(?::(\d+))?$/.exec(host); // the client takes no [IPv6] literal
    const port = m?.[2] === undefined ? 2113 : Number(m[2]);
    if (!m || port < 1 || port > 65535) throw new StoreUrlError(`store URL "${location}": "${host}" is not HOST or HOST:PORT (a port 1–65535; default 2113)`);
  }
  const prefixes = query.getAll('prefix');
  if (prefixes.length > 1) throw new StoreUrlError(`store URL "${location}" gives prefix ${prefixes.length} times: give it once`);
  const prefix = prefixes[0] ?? DEFAULT_PREFIX;
  if (!PREFIX.test(prefix)) {
    throw new StoreUrlError(`store URL "${location}": prefix must be 1–64 letters, digits or _ (it begins every stream name of the store), got "${prefix}"`);
  }
  // The client's own options pass on as written (re-encoding would turn tlsCAFile=/a/b into %2Fa%2Fb).
  const kept =
    queryAt < 0
      ? ''
      : rest
          .slice(queryAt + 1)
          .split('&')
          .filter((p) => p !== '' && p.split('=')[0] !== 'prefix')
          .join('&');
  for (const option of kept === '' ? [] : kept.split('&')) {
    const key = option.split('=')[0]!;
    // The client would only warn about an unknown option, printing the whole URL, password included.
    if (!CLIENT_OPTIONS.has(flatCase(key))) {
      throw new StoreUrlError(`store URL "${location}": unknown option "${key}": the KurrentDB client takes ${[...CLIENT_OPTIONS.values()].join(', ')}, and ckpt takes prefix`);
    }
  }
  const connectionString = `kurrentdb${scheme[2] ?? ''}://${authorityAndPath}${kept ? `?${kept}` : ''}`;
  return { connectionString, prefix, location };
};

/** KurrentDB's name for a ckpt stream of the store. */
export const kurrentStream = (prefix: string, stream: string): string => `${prefix}-${stream}`;

/** The ckpt stream a KurrentDB stream holds, or undefined for a stream of no store with this prefix. */
export const ckptStream = (prefix: string, name: string): string | undefined => (name.startsWith(`${prefix}-`) && name.length > prefix.length + 1 ? name.slice(prefix.length + 1) : undefined);

/** The stream whose revision r is ckpt position r + 1. */
export const positionsStream = (prefix: string): string => `${prefix}.positions`;

/** A KurrentDB revision (bigint on the wire) as a ckpt revision. */
export const revisionOf = (value: bigint | number): Revision => {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`KurrentDB revision ${value} is beyond what ckpt counts (0…2^53)`);
  return n;
};

/**
 * The expected state ckpt sends for a stream whose head it has just read: always exact, whatever
 * the caller expected (checked before, by checkExpectedRevision), because each event's digest
 * chains to the head that was read and must not land after another one.
 */
export const exactState = (head: Revision | undefined): 'no_stream' | bigint => (head === undefined ? 'no_stream' : BigInt(head));

/** KurrentDB's actual state in a conflict, as WrongExpectedRevisionError names it. */
export const actualRevision = (state: bigint | number | string | undefined): Revision | 'no_stream' =>
  typeof state === 'bigint' || typeof state === 'number' ? (Number(state) < 0 ? 'no_stream' : revisionOf(state)) : 'no_stream';

/** The log's head position from the positions stream's last revision (undefined: no stream, an empty log). */
export const headOf = (lastPointer: Revision | undefined): Position => (lastPointer === undefined ? 0 : lastPointer + 1);

/** The pointer revision a position is read from. */
export const pointerRevision = (position: Position): bigint => BigInt(Math.max(1, position) - 1);

/** Where a stored event sits and what chains it: kept in its KurrentDB metadata beside ckpt's own. */
export interface Placement {
  readonly position: Position;
  readonly schemaVersion: number;
  readonly digest: string;
  readonly previous: string;
}

/**
 * ckpt's metadata (encodeBatch's JSON) and the event's placement as KurrentDB metadata: a flat
 * object of strings (KurrentDB's multi-stream append takes nothing else), correlation and
 * causation under KurrentDB's own `$correlationId` / `$causationId`, which its projections and UI
 * follow. A field the mapping does not know is refused rather than dropped.
 */
export const toKurrentMetadata = (metadataJson: string, placement: Placement): Record<string, string> => {
  const { actor, recordedAt, correlationId, causationId, decidedAt, ...unknown } = JSON.parse(metadataJson) as Record<string, unknown>;
  const extra = Object.keys(unknown);
  if (extra.length > 0) throw new TypeError(`metadata field ${extra.join(', ')} has no place in KurrentDB's metadata: map it in kurrentdb-mapping.ts`);
  return {
    actor: JSON.stringify(actor),
    recordedAt: String(recordedAt),
    ...(correlationId !== undefined && { $correlationId: String(correlationId) }),
    ...(causationId !== undefined && { $causationId: String(causationId) }),
    ...(decidedAt !== undefined && { decidedAt: String(decidedAt) }),
    position: String(placement.position),
    schemaVersion: String(placement.schemaVersion),
    digest: placement.digest,
    previous: placement.previous,
  };
};

const integer = (text: unknown): number | undefined => (typeof text === 'string' && /^\d{1,15}$/.test(text) ? Number(text) : undefined);

/** A string that is JSON back to its value; anything else stays as it is, for the event's decoder to name. */
const jsonValue = (text: unknown): unknown => {
  if (typeof text !== 'string') return text;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
};

/** An event as the client returns it (its fields that ckpt reads). */
export interface KurrentRecord {
  readonly streamId: string;
  readonly id: string;
  readonly revision: bigint | number;
  readonly type: string;
  /** Parsed JSON for a JSON event (a string if it did not parse), bytes otherwise. */
  readonly data: unknown;
  /** Parsed JSON, bytes when it did not parse, undefined when empty. */
  readonly metadata: unknown;
}

const text = (value: unknown): string => (value instanceof Uint8Array ? Buffer.from(value).toString('utf8') : typeof value === 'string' ? value : JSON.stringify(value ?? null));

/**
 * A stored event as the row the digest chain is checked against: ckpt's metadata rebuilt as the
 * JSON encodeBatch wrote, position 0 when the event carries none (written behind the store's
 * back: never placed in the log's order), digest and previous null when it has no chain.
 */
export const rowOf = (prefix: string, record: KurrentRecord): ChainedRow => {
  const raw = record.metadata instanceof Uint8Array ? jsonValue(text(record.metadata)) : record.metadata;
  const m = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
  const decidedAt = m.decidedAt === undefined ? undefined : (integer(m.decidedAt) ?? m.decidedAt);
  const metadata = {
    actor: jsonValue(m.actor),
    ...(m.$correlationId !== undefined && { correlationId: m.$correlationId }),
    ...(m.$causationId !== undefined && { causationId: m.$causationId }),
    ...(decidedAt !== undefined && { decidedAt }),
    recordedAt: m.recordedAt,
  };
  const chained = typeof m.digest === 'string' && typeof m.previous === 'string';
  return {
    position: integer(m.position) ?? 0,
    stream: ckptStream(prefix, record.streamId) ?? record.streamId,
    revision: revisionOf(record.revision),
    id: record.id,
    type: record.type,
    schemaVersion: integer(m.schemaVersion) ?? 0,
    data: text(record.data),
    metadata: JSON.stringify(metadata),
    digest: chained ? (m.digest as string) : null,
    previous: chained ? (m.previous as string) : null,
  };
};

/** The event type of pointers in the positions stream. */
export const POINTER_TYPE = 'ckpt.position';

export interface Pointer {
  readonly position: Position;
  readonly stream: string;
  readonly revision: Revision;
}

export const pointerData = (stream: string, revision: Revision) => ({ stream, revision });

/** A pointer event back as a pointer, or why it is not one (a positions stream written by someone else). */
export const pointerOf = (record: Pick<KurrentRecord, 'revision' | 'type' | 'data'>): Pointer | { problem: string } => {
  const position = revisionOf(record.revision) + 1;
  // JSON as the client parsed it, or bytes/text should the server not mark the event as JSON.
  const data = typeof record.data === 'object' && !(record.data instanceof Uint8Array) ? record.data : jsonValue(text(record.data));
  const d = data as { stream?: unknown; revision?: unknown } | null;
  if (record.type !== POINTER_TYPE || typeof d !== 'object' || d === null || typeof d.stream !== 'string' || !Number.isSafeInteger(d.revision) || (d.revision as number) < 0) {
    return { problem: `position ${position}: the positions stream holds a ${record.type} event that is not a ckpt pointer ({"stream", "revision"})` };
  }
  return { position, stream: d.stream, revision: d.revision as number };
};

export interface Run {
  readonly stream: string;
  readonly from: Revision;
  readonly count: number;
  readonly position: Position;
}

/** Consecutive pointers to consecutive revisions of one stream (an appended batch): one read each. */
export const runsOf = (pointers: readonly Pointer[]): Run[] => {
  const runs: Run[] = [];
  for (const p of pointers) {
    const last = runs[runs.length - 1];
    if (last && last.stream === p.stream && last.from + last.count === p.revision && last.position + last.count === p.position) {
      runs[runs.length - 1] = { ...last, count: last.count + 1 };
    } else {
      runs.push({ stream: p.stream, from: p.revision, count: 1, position: p.position });
    }
  }
  return runs;
};

/** An event as the client appends it (its JSON event data). */
export interface KurrentEventData {
  readonly id: string;
  readonly contentType: 'application/json';
  readonly type: string;
  readonly data: Record<string, unknown>;
  readonly metadata: Record<string, string> | undefined;
}

/** One attempt at an append: what to send, expecting which heads, and what it returns when it lands. */
export interface AppendPlan {
  readonly stream: { readonly state: 'no_stream' | bigint; readonly events: readonly KurrentEventData[] };
  readonly positions: { readonly state: 'no_stream' | bigint; readonly events: readonly KurrentEventData[] };
  readonly result: AppendResult;
}

/**
 * An append planned from the heads just read: the stream's last event (revision and digest) and
 * the positions stream's last revision. Throws WrongExpectedRevisionError when the caller's
 * expectation does not hold; otherwise each event is chained to the head, placed after the log's
 * head, and both heads are expected exactly (a writer that moved either makes the attempt fail,
 * and the store plans again from the new heads).
 */
export const planAppend = (
  stream: string,
  expected: ExpectedRevision,
  encoded: readonly EncodedEvent[],
  head: { readonly revision: Revision; readonly digest: string | null } | undefined,
  lastPointer: Revision | undefined,
  newId: () => string,
): AppendPlan => {
  checkExpectedRevision(stream, expected, head?.revision);
  const firstRevision = (head?.revision ?? -1) + 1;
  const firstPosition = headOf(lastPointer) + 1;
  let previous = head?.digest ?? GENESIS;
  const events = encoded.map((e, i): KurrentEventData => {
    const digest = chainDigest(previous, e.content, firstRevision + i);
    const metadata = toKurrentMetadata(e.metadata, { position: firstPosition + i, schemaVersion: e.schemaVersion, digest, previous });
    previous = digest;
    return { id: e.id, contentType: 'application/json', type: e.type, data: JSON.parse(e.data) as Record<string, unknown>, metadata };
  });
  const pointers = encoded.map((_, i): KurrentEventData => ({ id: newId(), contentType: 'application/json', type: POINTER_TYPE, data: pointerData(stream, firstRevision + i), metadata: undefined }));
  return {
    stream: { state: exactState(head?.revision), events },
    positions: { state: exactState(lastPointer), events: pointers },
    result: { revision: firstRevision + encoded.length - 1, position: firstPosition + encoded.length - 1 },
  };
};

/**
 * The rows a run of pointers names, in order, or the damage: a pointer whose event is not in its
 * stream, or an event whose own position is not the pointer's.
 */
export const rowsOfRun = (run: Run, rows: readonly ChainedRow[]): ChainedRow[] =>
  Array.from({ length: run.count }, (_, i) => {
    const row = rows[i];
    const position = run.position + i;
    if (!row || row.revision !== run.from + i) {
      throw new CorruptEventError(position, run.stream, run.from + i, '?', 'the positions stream points at this event, and it is not in its stream');
    }
    if (row.position !== position) throw misplaced(row, position);
    return row;
  });

/** A row whose metadata gives no position, or another than the positions stream does. */
export const misplaced = (row: ChainedRow, position: Position = row.position): CorruptEventError =>
  new CorruptEventError(
    position,
    row.stream,
    row.revision,
    row.type,
    row.position === 0 ? 'metadata: no position: the event was not written by ckpt' : `metadata: position ${row.position}, but the positions stream has it at ${position}`,
  );
