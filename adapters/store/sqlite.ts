// The embedded default store: one SQLite file in WAL mode, safe for several processes at once.
//
// Schema, designed for append and replay speed: events are keyed by their global position (the
// rowid, so a replay is one sequential B-tree scan); streams get small integer ids so the
// (stream, revision) index stays compact; each stream's current revision lives in `streams`, so
// an expected-revision check is one primary-key lookup. Appends take the write lock up front
// (BEGIN IMMEDIATE), which also makes positions commit in order: a reader never sees position
// N+1 before N. Appends issued concurrently in one process are committed as a group.
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { interval, merge, Subject, filter, share, type Observable } from 'rxjs';
import type { AppendResult, EventStore, ExpectedRevision, ProposedEvent, ReadAllOptions, ReadStreamOptions, RecordedEvent, Revision, SubscribeOptions } from '../../domain/event-store.js';
import { subscribeAllWith, subscribeStreamWith } from './live.js';
import { checkExpectedRevision, defaultAppendContext, encodeBatch, pageLimit, storedEvent, validExpectedRevision, type AppendContext, type EncodedEvent } from './batch.js';

const SCHEMA_VERSION = 1;
const INSERT_CHUNK = 64;

export interface SqliteOptions {
  /** `full` (default) syncs the WAL at every commit: a committed event survives power loss.
   *  `normal` survives a process crash (kill -9) but may lose the last commits on power loss. */
  readonly synchronous?: 'full' | 'normal';
  /** How often subscribers look for commits made by other processes. */
  readonly pollMs?: number;
  readonly context?: AppendContext;
}

/** Another process's commit reaches subscribers within this; a data_version check costs ~10 µs. */
const POLL_MS = 5;

interface PendingAppend {
  readonly stream: string;
  readonly encoded: EncodedEvent[];
  readonly expected: ExpectedRevision;
  readonly resolve: (result: AppendResult) => void;
  readonly reject: (error: unknown) => void;
}

type EventRow = [position: number, streamId: number, revision: number, id: string, type: string, schemaVersion: number, data: string, metadata: string];

export class SqliteEventStore implements EventStore {
  readonly location: string;
  readonly #db: Database.Database;
  readonly #context: AppendContext;
  readonly #streamNames = new Map<number, string>();
  readonly #appended = new Subject<void>();
  readonly #wakeups: Observable<unknown>;
  readonly #sql;
  readonly #commitGroup: (group: readonly PendingAppend[]) => Array<{ result: AppendResult } | { error: unknown }>;
  #pending: PendingAppend[] = [];

  constructor(readonly path: string, options: SqliteOptions = {}) {
    this.location = `sqlite:${path}`;
    this.#context = options.context ?? defaultAppendContext();
    if (path !== ':memory:') ensureDirectory(dirname(path));
    const db = new Database(path);
    this.#db = db;
    db.pragma('busy_timeout = 30000');
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${options.synchronous === 'normal' ? 'NORMAL' : 'FULL'}`);
    db.pragma('cache_size = -65536');
    migrate(db);
    this.#sql = {
      stream: db.prepare<[string], { id: number; revision: number }>('SELECT id, revision FROM streams WHERE name = ?'),
      streamName: db.prepare<[number], { name: string }>('SELECT name FROM streams WHERE id = ?'),
      insertStream: db.prepare<[string]>('INSERT INTO streams (name, revision) VALUES (?, -1)'),
      setRevision: db.prepare<[number, number]>('UPDATE streams SET revision = ? WHERE id = ?'),
      readAll: db.prepare<[number, number]>(`SELECT ${COLUMNS} FROM events WHERE position >= ? ORDER BY position LIMIT ?`).raw(),
      readForwards: db.prepare<[number, number, number]>(`SELECT ${COLUMNS} FROM events WHERE stream_id = ? AND revision >= ? ORDER BY revision LIMIT ?`).raw(),
      readBackwards: db.prepare<[number, number, number]>(`SELECT ${COLUMNS} FROM events WHERE stream_id = ? AND revision <= ? ORDER BY revision DESC LIMIT ?`).raw(),
      head: db.prepare('SELECT coalesce(max(position), 0) AS head FROM events').pluck(),
      dataVersion: db.prepare('PRAGMA data_version').pluck(),
    };
    // Group commit: appends issued together share one transaction and one fsync. Each stays
    // atomic on its own: a nested transaction is a savepoint, so a conflict undoes only its append.
    const one = db.transaction(this.#append);
    const group = db.transaction((appends: readonly PendingAppend[]) =>
      appends.map((a) => {
        try {
          return { result: one(a.stream, a.encoded, a.expected) };
        } catch (error) {
          return { error };
        }
      }),
    );
    this.#commitGroup = (appends) => group.immediate(appends);
    // Commits by other processes are seen by polling PRAGMA data_version, which changes only when
    // another connection committed: a cheap check, so the poll can be frequent.
    let seen = this.#sql.dataVersion.get();
    const otherCommits = interval(options.pollMs ?? POLL_MS).pipe(
      filter(() => {
        if (!this.#db.open) return false;
        const now = this.#sql.dataVersion.get();
        const changed = now !== seen;
        seen = now;
        return changed;
      }),
    );
    this.#wakeups = merge(this.#appended, otherCommits).pipe(share());
  }

  #append = (stream: string, encoded: EncodedEvent[], expected: ExpectedRevision): AppendResult => {
    const row = this.#sql.stream.get(stream);
    checkExpectedRevision(stream, expected, row && row.revision >= 0 ? row.revision : undefined);
    const streamId = row ? row.id : Number(this.#sql.insertStream.run(stream).lastInsertRowid);
    let revision = row ? row.revision : -1;
    let position = 0;
    // Multi-row INSERTs: one statement call per 64 events instead of one per event.
    for (let start = 0; start < encoded.length; start += INSERT_CHUNK) {
      const chunk = encoded.slice(start, start + INSERT_CHUNK);
      const values: unknown[] = [];
      for (const e of chunk) values.push(streamId, ++revision, e.id, e.type, e.schemaVersion, e.data, e.metadata);
      position = Number(this.#insert(chunk.length).run(values).lastInsertRowid);
    }
    this.#sql.setRevision.run(revision, streamId);
    return { revision, position };
  };

  readonly #inserts = new Map<number, Database.Statement>();
  #insert(rows: number): Database.Statement {
    let statement = this.#inserts.get(rows);
    if (!statement) {
      const values = Array.from({ length: rows }, () => '(?, ?, ?, ?, ?, ?, ?)').join(', ');
      statement = this.#db.prepare(`INSERT INTO events (stream_id, revision, id, type, schema_version, data, metadata) VALUES ${values}`);
      this.#inserts.set(rows, statement);
    }
    return statement;
  }
  async append(stream: string, events: readonly ProposedEvent[], options: { expectedRevision?: ExpectedRevision } = {}): Promise<AppendResult> {
    const expected = validExpectedRevision(options.expectedRevision ?? 'any');
    const encoded = encodeBatch(stream, events, this.#context);
    if (encoded.length === 0) {
      const revision = await this.streamRevision(stream);
      checkExpectedRevision(stream, expected, revision);
      return { revision: revision ?? -1, position: await this.headPosition() };
    }
    return new Promise<AppendResult>((resolve, reject) => {
      this.#pending.push({ stream, encoded, expected, resolve, reject });
      if (this.#pending.length === 1) queueMicrotask(this.#flush);
    });
  }

  #flush = (): void => {
    const group = this.#pending;
    this.#pending = [];
    let outcomes;
    try {
      outcomes = this.#commitGroup(group);
    } catch (error) {
      for (const append of group) append.reject(error);
      return;
    }
    outcomes.forEach((outcome, i) => ('result' in outcome ? group[i]!.resolve(outcome.result) : group[i]!.reject(outcome.error)));
    this.#appended.next();
  };

  #name(streamId: number): string {
    let name = this.#streamNames.get(streamId);
    if (name === undefined) {
      name = this.#sql.streamName.get(streamId)!.name;
      this.#streamNames.set(streamId, name);
    }
    return name;
  }

  #toEvents(rows: unknown[]): RecordedEvent[] {
    const events = new Array<RecordedEvent>(rows.length);
    for (let i = 0; i < rows.length; i++) {
      const [position, streamId, revision, id, type, schemaVersion, data, metadata] = rows[i] as EventRow;
      events[i] = storedEvent(position, this.#name(streamId), revision, id, type, schemaVersion, data, metadata);
    }
    return events;
  }

  /** Synchronous page read: replays fold pages without a promise per page. */
  readAllSync(from: number, limit: number): RecordedEvent[] {
    return this.#toEvents(this.#sql.readAll.all(from, limit));
  }

  async readAll(options: ReadAllOptions = {}): Promise<RecordedEvent[]> {
    return this.readAllSync(Math.max(1, options.from ?? 1), pageLimit(options.limit));
  }

  async readStream(stream: string, options: ReadStreamOptions = {}): Promise<RecordedEvent[]> {
    const row = this.#sql.stream.get(stream);
    if (!row) return [];
    this.#streamNames.set(row.id, stream);
    const limit = pageLimit(options.limit);
    return options.direction === 'backwards'
      ? this.#toEvents(this.#sql.readBackwards.all(row.id, options.from ?? row.revision, limit))
      : this.#toEvents(this.#sql.readForwards.all(row.id, options.from ?? 0, limit));
  }

  async streamRevision(stream: string): Promise<Revision | undefined> {
    const row = this.#sql.stream.get(stream);
    return row && row.revision >= 0 ? row.revision : undefined;
  }

  async headPosition(): Promise<number> {
    return this.#sql.head.get() as number;
  }

  subscribeAll(options: SubscribeOptions = {}) {
    return subscribeAllWith((from, limit) => this.readAllSync(from, limit), this.#wakeups, options);
  }

  subscribeStream(stream: string, options: SubscribeOptions = {}) {
    return subscribeStreamWith((from, limit) => this.readStream(stream, { from, limit }), this.#wakeups, options);
  }

  async close(): Promise<void> {
    this.#appended.complete();
    if (this.#db.open) this.#db.close();
  }
}

/**
 * mkdir -p, one level at a time: Node's recursive mkdirSync never returns on some pseudo file
 * systems (e.g. a path under /proc), and every error here must reach the user.
 */
const ensureDirectory = (dir: string): void => {
  if (existsSync(dir)) return;
  const parent = dirname(dir);
  if (parent !== dir) ensureDirectory(parent);
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    if (e.code !== 'EEXIST') throw Object.assign(new Error(`cannot create ${dir} for the event store: ${e.code ?? e.message}`), { code: 'SQLITE_CANTOPEN' });
  }
};

const COLUMNS = 'position, stream_id, revision, id, type, schema_version, data, metadata';

const migrate = (db: Database.Database): void => {
  // Several processes may open a new file at once: create the schema under the write lock.
  db.transaction(() => {
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw new Error(`${db.name} has event log schema ${version}, newer than this ckpt understands (${SCHEMA_VERSION}): upgrade ckpt`);
    }
    if (version === SCHEMA_VERSION) return;
    db.exec(`
      CREATE TABLE streams (
        id       INTEGER PRIMARY KEY,
        name     TEXT NOT NULL UNIQUE,
        revision INTEGER NOT NULL
      );
      CREATE TABLE events (
        position       INTEGER PRIMARY KEY,
        stream_id      INTEGER NOT NULL REFERENCES streams (id),
        revision       INTEGER NOT NULL,
        id             TEXT NOT NULL,
        type           TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        data           TEXT NOT NULL,
        metadata       TEXT NOT NULL
      );
      CREATE UNIQUE INDEX events_stream_revision ON events (stream_id, revision);
      PRAGMA user_version = ${SCHEMA_VERSION};
    `);
  }).immediate();
};
