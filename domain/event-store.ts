// The EventStore port: the one log every part of ckpt reads and appends to. Adapters (SQLite,
// PostgreSQL, KurrentDB, in-memory) implement it and pass the same contract suite (test/store-contract.ts).
import type { Observable } from 'rxjs';
import type { DomainEvent } from './events/catalogue.js';
import type { SchemaVersionError } from './events/upcast.js';
import type { Actor } from './identity.js';

/** Global position in the log: ≥ 1, strictly increasing in commit order, may skip numbers. */
export type Position = number;
/** Revision of an event in its stream: 0 for the first, then +1 without gaps. */
export type Revision = number;

/**
 * What the appender believes about the stream. Observations use `any`; decisions give the exact
 * revision they were decided from, so a racing second coordinator cannot issue a duplicate.
 */
export type ExpectedRevision = 'any' | 'no_stream' | 'stream_exists' | Revision;

export interface EventMetadata {
  readonly actor: Actor;
  /** Wall-clock time of the append (adapter clock). Deciders may read it from the log, never the clock. */
  readonly recordedAt: string;
  readonly correlationId?: string;
  readonly causationId?: string;
  /** Decisions only: the global position of the last event the decider had folded. */
  readonly decidedAt?: Position;
}

export interface Envelope {
  readonly id: string;
  readonly stream: string;
  readonly revision: Revision;
  readonly position: Position;
  readonly schemaVersion: number;
  readonly metadata: EventMetadata;
  /** SHA-256 chaining this event to the previous one of its stream (adapters/store/chain.ts). */
  readonly digest?: string;
}

/** An event as stored; narrowing on `type` narrows `data`. */
export type RecordedEvent<E extends { type: string; data: unknown } = DomainEvent> = E extends unknown ? Envelope & Readonly<E> : never;

export type ProposedMetadata = Partial<Omit<EventMetadata, 'recordedAt'>>;
/** An event to append; id and metadata are filled in by the store when absent. */
export type ProposedEvent = DomainEvent & { readonly id?: string; readonly metadata?: ProposedMetadata };

export interface AppendResult {
  /** Revision of the last event appended (the next expected revision). */
  readonly revision: Revision;
  /** Global position of the last event appended. */
  readonly position: Position;
}

export interface ReadStreamOptions {
  readonly direction?: 'forwards' | 'backwards';
  /** First revision to return (inclusive); default: the start (forwards) or the end (backwards). */
  readonly from?: Revision;
  readonly limit?: number;
}

export interface ReadAllOptions {
  /** First position to return (inclusive); default 1. */
  readonly from?: Position;
  readonly limit?: number;
}

export interface SubscribeOptions {
  /** First position (subscribeAll) or revision (subscribeStream) to deliver, inclusive. */
  readonly from?: number;
  /** Called once, when everything committed before the catch-up ended has been delivered. */
  readonly onCaughtUp?: () => void;
}

export interface EventStore {
  /** Where the log lives, for messages (never contains a password). */
  readonly location: string;
  /**
   * Appends a batch atomically: all or nothing. Throws WrongExpectedRevisionError on a revision
   * mismatch and InvalidEventError for an event the catalogue rejects; in both cases nothing is written.
   */
  append(stream: string, events: readonly ProposedEvent[], options?: { expectedRevision?: ExpectedRevision }): Promise<AppendResult>;
  /** Events of one stream in revision order (or reverse); an unknown stream reads as empty. */
  readStream(stream: string, options?: ReadStreamOptions): Promise<RecordedEvent[]>;
  /** The revision of a stream's last event, or undefined for a stream with no events. */
  streamRevision(stream: string): Promise<Revision | undefined>;
  /** One page of the whole log in global order. */
  readAll(options?: ReadAllOptions): Promise<RecordedEvent[]>;
  /** Global position of the last committed event, 0 for an empty log. */
  headPosition(): Promise<Position>;
  /** Catches up from a position, then stays live: in order, no gaps, no duplicates. */
  subscribeAll(options?: SubscribeOptions): Observable<RecordedEvent>;
  /** Same for one stream, by revision. */
  subscribeStream(stream: string, options?: SubscribeOptions): Observable<RecordedEvent>;
  close(): Promise<void>;
  /** The stored rows as written, for checking the digest chain. */
  readonly chain: ChainedLog;
  /** Snapshots of read models, kept beside the events (absent: every read folds from the log). */
  readonly snapshots?: SnapshotStore;
  /** A store read through the node agent: the agent folds read models and answers with them. */
  readonly models?: RemoteReadModels;
  /** Node liveness leases, kept beside the log, not in it (absent: the KurrentDB store). */
  readonly leases?: LeaseStore;
}

/** The agent process that holds a node's lease: enough to tell whether it is the one the log recorded. */
export interface LeaseHolder {
  readonly pid: number;
  readonly startTime: number;
  readonly bootId: string;
  readonly hostname: string;
}

/** A node's lease as the store's clock judges it now. */
export interface Lease {
  readonly node: string;
  readonly holder: LeaseHolder;
  /** ISO times by the store's clock (PostgreSQL's, so hosts' clock skew does not matter). */
  readonly renewedAt: string;
  readonly expiresAt: string;
  /** Past expiresAt by the store's clock when listed. */
  readonly expired: boolean;
  /** The store's clock when it judged `expired` (ISO). */
  readonly asOf: string;
}

/**
 * Liveness: each node agent renews its node's lease every few seconds; a lease not renewed within
 * its ttl has expired (the host is down or cut off, or its agent died). A renewal replaces a row:
 * the log does not grow with it.
 */
export interface LeaseStore {
  /** Renews (or takes) the node's lease for ttlMs from now; throws LeaseRefusedError when this connection may not. */
  renew(node: string, holder: LeaseHolder, ttlMs: number): Promise<Lease>;
  /** Every node's lease, by node name. */
  list(): Promise<Lease[]>;
  /** Gives the lease up on a clean stop (the node is then stopped, not lost). */
  release(node: string): Promise<void>;
}

export class LeaseRefusedError extends Error {
  override readonly name = 'LeaseRefusedError';
}

/**
 * A read model's state as folded up to a log position (global, or a stream revision for a
 * per-stream model), with what it was folded by: a snapshot is used only when all of it still holds.
 */
export interface Snapshot {
  readonly model: string;
  readonly key: string;
  /** The fold's code version: a snapshot from another version is rebuilt, never trusted. */
  readonly version: number;
  /** The catalogue's schema versions the events were decoded with. */
  readonly schema: string;
  /** Global position (whole-log models) or stream revision (per-stream models) of the last event folded; -1 for none. */
  readonly position: number;
  /** That event's chain digest; the log must still have it there. */
  readonly digest: string;
  /** The state as JSON text. */
  readonly state: string;
}

export interface SnapshotStore {
  /** The snapshot of a model and key; `damaged` when its bytes no longer match its checksum. */
  load(model: string, key: string): Promise<Snapshot | { readonly damaged: string } | undefined>;
  /** Replaces the snapshot, or the snapshots, all or none; throws SnapshotNotWritableError when this connection may not write them. */
  save(snapshots: Snapshot | readonly Snapshot[]): Promise<void>;
}

/** One snapshot or many, as a list. */
export const snapshotList = (s: Snapshot | readonly Snapshot[]): readonly Snapshot[] => ('model' in s ? [s as Snapshot] : (s as readonly Snapshot[]));

export class SnapshotNotWritableError extends Error {
  override readonly name = 'SnapshotNotWritableError';
}

/** A read model folded by the node agent for the caller, encoded as its snapshot would be. */
export interface RemoteModelRead {
  readonly state: unknown;
  readonly position: number;
  /** Events folded after the snapshot (or from the start). */
  readonly folded: number;
  /** What happened to the snapshot (used, rebuilt and why), for --verbose. */
  readonly notes: readonly string[];
}

export interface RemoteReadModels {
  /** `all`: the whole of a model that keeps rows (every job, not only those its snapshot keeps). */
  read(model: string, key: string, options?: { readonly all?: boolean }): Promise<RemoteModelRead>;
}

/** A row as stored, undecoded: what the digest chain is checked against. */
export interface ChainedRow {
  readonly position: Position;
  readonly stream: string;
  readonly revision: Revision;
  readonly id: string;
  readonly type: string;
  readonly schemaVersion: number;
  /** JSON text as the store returns it. */
  readonly data: string;
  readonly metadata: string;
  /** null on a row no store wrote (inserted behind the store's back). */
  readonly digest: string | null;
  readonly previous: string | null;
}

export interface ChainedLog {
  /** Streams by name after `after` (exclusive), with the head revision each stream records. */
  streams(after: string | undefined, limit: number): Promise<Array<{ name: string; revision: Revision }>>;
  /** Rows of one stream from a revision, in revision order. */
  rows(stream: string, from: Revision, limit: number): Promise<ChainedRow[]>;
  /** A row that belongs to no known stream, if any. */
  strayRow(): Promise<ChainedRow | undefined>;
  /** When rows written before the chain were chained by a schema migration, up to which position. */
  chainedByMigration(): Promise<{ upTo: Position; at: string } | undefined>;
}

export class WrongExpectedRevisionError extends Error {
  override readonly name = 'WrongExpectedRevisionError';
  constructor(
    readonly stream: string,
    readonly expected: ExpectedRevision,
    readonly actual: Revision | 'no_stream',
  ) {
    super(`stream ${stream}: expected revision ${expected}, but the stream is at ${actual}; nothing was written`);
  }
}

/** Stream names: printable, no white space, at most 200 characters (e.g. `job-nightly`, `node-n1`). */
export const STREAM_PATTERN = /^[\x21-\x7e]{1,200}$/;

/**
 * A stored row that does not decode: damaged or written behind the store's back. Names where it
 * is and what is wrong, never a parser's offset.
 */
export class CorruptEventError extends Error {
  override readonly name = 'CorruptEventError';
  constructor(
    readonly position: Position,
    readonly stream: string,
    readonly revision: Revision,
    readonly type: string,
    readonly problem: string,
  ) {
    super(`event at position ${position} (stream ${stream}, revision ${revision}, type ${type}): ${problem}; the log is damaged (ckpt audit --verify checks it)`);
  }
}

/**
 * A stored row recorded with a schema version this ckpt cannot read (a newer ckpt wrote it): the
 * log is not damaged, this ckpt is too old for it.
 */
export class UnreadableEventError extends Error {
  override readonly name = 'UnreadableEventError';
  constructor(
    readonly position: Position,
    readonly stream: string,
    readonly revision: Revision,
    readonly schemaProblem: SchemaVersionError,
  ) {
    super(`event at position ${position} (stream ${stream}, revision ${revision}): ${schemaProblem.message}`);
  }
}
