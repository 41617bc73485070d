// What every store adapter does the same way before and after touching storage: validate and
// encode a proposed batch, check the expected revision, and turn stored rows back into events.
import { randomUUID } from 'node:crypto';
import { NonNegativeInt } from '../../domain/codecs.js';
import {
  CorruptEventError,
  type EventMetadata,
  type ExpectedRevision,
  type ProposedEvent,
  type RecordedEvent,
  type Revision,
  STREAM_PATTERN,
  UnreadableEventError,
  WrongExpectedRevisionError,
} from '../../domain/event-store.js';
import { definitionOf } from '../../domain/events/catalogue.js';
import { decodeEvent, describeProblem, InvalidEventError } from '../../domain/events/decode.js';
import { upcast as upcastData } from '../../domain/events/upcast.js';
import { Actor } from '../../domain/identity.js';
import * as t from '../../domain/io-ts.js';
import { either as E } from '../../domain/io-ts.js';
import { canonicalJson, contentDigest } from './chain.js';

/** The shell's side of an append: who appends by default, the clock, and event ids. */
export interface AppendContext {
  readonly actor: Actor;
  readonly now: () => Date;
  readonly newId: () => string;
}

export const defaultAppendContext = (actor?: Actor): AppendContext => ({
  actor: actor ?? { kind: 'user', uid: process.getuid?.() ?? 0 },
  now: () => new Date(),
  newId: randomUUID,
});

export interface EncodedEvent {
  readonly id: string;
  readonly type: string;
  readonly schemaVersion: number;
  readonly data: string;
  readonly metadata: string;
  /** SHA-256 of the event's content, before it is chained to its stream (chain.ts). */
  readonly content: string;
}

const ProposedMetadata = t.exact(t.partial({ actor: Actor, correlationId: t.string, causationId: t.string, decidedAt: NonNegativeInt }));

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Validates a whole batch before anything is written; the first bad event throws InvalidEventError. */
export const encodeBatch = (stream: string, events: readonly ProposedEvent[], context: AppendContext): EncodedEvent[] => {
  if (typeof stream !== 'string' || !STREAM_PATTERN.test(stream)) {
    throw new InvalidEventError('(stream)', [{ path: 'stream', expected: 'a stream name of 1–200 printable characters without spaces', value: stream }]);
  }
  if (!Array.isArray(events)) {
    throw new InvalidEventError('(batch)', [{ path: 'events', expected: 'an array of events', value: events }]);
  }
  const recordedAt = context.now().toISOString();
  // Most events carry no metadata of their own: the batch shares one encoded default.
  const sharedMetadata: EventMetadata = { actor: context.actor, recordedAt };
  const shared = JSON.stringify(sharedMetadata);
  const sharedCanonical = canonicalJson(sharedMetadata);
  return events.map((event, index) => {
    const where = events.length > 1 ? ` (event ${index + 1} of ${events.length})` : '';
    const decoded = decodeEvent(event?.type, event?.data);
    if (E.isLeft(decoded)) throw new InvalidEventError(decoded.left.eventType + where, decoded.left.problems);
    if (event.id !== undefined && !(typeof event.id === 'string' && UUID.test(event.id))) {
      throw new InvalidEventError(event.type + where, [{ path: 'id', expected: 'a UUID', value: event.id }]);
    }
    let metadata = shared;
    let metadataValue = sharedMetadata;
    if (event.metadata !== undefined) {
      const proposed = ProposedMetadata.decode(event.metadata);
      if (E.isLeft(proposed)) {
        throw new InvalidEventError(event.type + where, [{ path: 'metadata', expected: 'actor, correlationId, causationId, decidedAt', value: event.metadata }]);
      }
      metadataValue = { actor: context.actor, ...proposed.right, recordedAt };
      metadata = JSON.stringify(metadataValue);
    }
    const id = event.id ?? context.newId();
    const schemaVersion = definitionOf(event.type)!.schemaVersion;
    const data = decoded.right.data;
    return {
      id,
      type: event.type,
      schemaVersion,
      data: JSON.stringify(data),
      metadata,
      content: contentDigest({ stream, id, type: event.type, schemaVersion, data, metadata: metadataValue }, metadataValue === sharedMetadata ? sharedCanonical : undefined),
    };
  });
};

export const checkExpectedRevision = (stream: string, expected: ExpectedRevision, current: Revision | undefined): void => {
  const ok =
    expected === 'any' || (expected === 'no_stream' && current === undefined) || (expected === 'stream_exists' && current !== undefined) || (typeof expected === 'number' && expected === current);
  if (!ok) throw new WrongExpectedRevisionError(stream, expected, current ?? 'no_stream');
};

export const validExpectedRevision = (expected: unknown): ExpectedRevision => {
  if (expected === 'any' || expected === 'no_stream' || expected === 'stream_exists') return expected;
  if (Number.isSafeInteger(expected) && (expected as number) >= 0) return expected as number;
  throw new TypeError(`expected revision must be 'any', 'no_stream', 'stream_exists' or a revision ≥ 0, got ${JSON.stringify(expected)}`);
};

/**
 * A stored event, its data upcast to the catalogue's current schema version (domain/events/upcast.ts)
 * and decoded with the catalogue's codec when read. Metadata is parsed on first use: folds that
 * only need `data` (most projections) skip half the JSON work on replay; a damaged metadata column
 * throws CorruptEventError there, naming the event.
 */
class StoredEvent {
  #metadata: EventMetadata | string;
  constructor(
    readonly position: number,
    readonly stream: string,
    readonly revision: number,
    readonly id: string,
    readonly type: string,
    readonly schemaVersion: number,
    readonly data: unknown,
    metadata: string,
    digest: StoredDigest,
    recorded: Recorded | undefined,
  ) {
    this.#metadata = metadata;
    this.#digest = digest;
    this.#recorded = recorded;
  }
  readonly #recorded: Recorded | undefined;
  #digest: StoredDigest;
  /** Hex. A store may give a lookup instead, run on first use: most reads never look at it. */
  get digest(): string | undefined {
    if (typeof this.#digest === 'function') this.#digest = this.#digest(this.position);
    return this.#digest;
  }
  get metadata(): EventMetadata {
    if (typeof this.#metadata === 'string') this.#metadata = parseMetadata(this.#metadata, this);
    return this.#metadata;
  }
  /** As stored (an upcast event with the version and data it was recorded with): what its digest covers. */
  toJSON() {
    const { position, stream, revision, id, type, metadata, digest } = this;
    const { schemaVersion, data } = this.#recorded ?? this;
    return { position, stream, revision, id, type, schemaVersion, data, metadata, ...(digest && { digest }) };
  }
}

/** The schema version and data a row was recorded with, kept when it was upcast on read. */
interface Recorded {
  readonly schemaVersion: number;
  readonly data: unknown;
}

/** The digest as hex, or how to look it up by position (SQLite: reading the column costs ~3 µs a row). */
export type StoredDigest = string | undefined | ((position: number) => string | undefined);

const corrupt = (e: { position: number; stream: string; revision: number; type: string }, problem: string) => new CorruptEventError(e.position, e.stream, e.revision, e.type, problem);

const parseMetadata = (text: string, e: StoredEvent): EventMetadata => {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw corrupt(e, 'field metadata: expected JSON, got text that does not parse');
  }
  const m = value as Partial<EventMetadata> | null;
  if (typeof m !== 'object' || m === null || typeof m.recordedAt !== 'string' || typeof m.actor !== 'object' || m.actor === null) {
    throw corrupt(e, `field metadata: expected an object with actor and recordedAt, got ${JSON.stringify(value)?.slice(0, 80)}`);
  }
  return m as EventMetadata;
};

export const storedEvent = (
  position: number,
  stream: string,
  revision: number,
  id: string,
  type: string,
  schemaVersion: number,
  data: string,
  metadata: string,
  digest?: StoredDigest | null,
): RecordedEvent => {
  const where = { position, stream, revision, type };
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    throw corrupt(where, 'field data: expected JSON, got text that does not parse');
  }
  const definition = definitionOf(type);
  let recorded: Recorded | undefined;
  if (definition && schemaVersion !== definition.schemaVersion) {
    const upcast = upcastData(definition, schemaVersion, parsed);
    if (E.isLeft(upcast)) throw new UnreadableEventError(position, stream, revision, upcast.left);
    recorded = { schemaVersion, data: parsed };
    parsed = upcast.right;
  }
  // The codec's type guard checks without copying (the codecs decode to the same values, ckpt's
  // codecs are not transformations); only a row that fails it is decoded, for the field and value.
  if (!definition?.codec.is(parsed)) {
    const decoded = decodeEvent(type, parsed);
    if (E.isLeft(decoded)) throw corrupt(where, decoded.left.problems.map((p) => `field ${describeProblem(p)}`).join('; '));
    parsed = decoded.right.data;
  }
  return new StoredEvent(position, stream, revision, id, type, definition?.schemaVersion ?? schemaVersion, parsed, metadata, digest ?? undefined, recorded) as unknown as RecordedEvent;
};

export const PAGE_SIZE = 1000;

export const pageLimit = (limit: number | undefined): number => {
  if (limit === undefined) return PAGE_SIZE;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new TypeError(`limit must be an integer ≥ 1, got ${limit}`);
  return limit;
};
