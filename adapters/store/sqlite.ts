// The embedded default store: one SQLite file in WAL mode, safe for several processes at once.
//
// Schema, designed for append and replay speed: events are keyed by their global position (the
// rowid, so a replay is one sequential B-tree scan); streams get small integer ids so the
// (stream, revision) index stays compact; each stream's current revision lives in `streams`, so
// an expected-revision check is one primary-key lookup. Appends take the write lock up front
// (BEGIN IMMEDIATE), which also makes positions commit in order: a reader never sees position
// N+1 before N. Appends issued concurrently in one process are committed as a group.
import { closeSync, constants, existsSync, type FSWatcher, fchmodSync, mkdirSync, openSync, watch } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import type Database from 'better-sqlite3';
import {
  type AppendResult,
  type ChainedLog,
  type ChainedRow,
  type EventStore,
  type ExpectedRevision,
  type Lease,
  type LeaseHolder,
  LeaseRefusedError,
  type LeaseStore,
  type ProposedEvent,
  type ReadAllOptions,
  type ReadStreamOptions,
  type RecordedEvent,
  type Revision,
  type Snapshot,
  SnapshotNotWritableError,
  type SnapshotStore,
  type SubscribeOptions,
  snapshotList,
} from '../../domain/event-store.js';
import { nodeStream } from '../../domain/identity.js';
import { filter, merge, Observable, Subject, share } from '../../domain/rx.js';
import { type AppendContext, checkExpectedRevision, defaultAppendContext, type EncodedEvent, encodeBatch, pageLimit, storedEvent, validExpectedRevision } from './batch.js';
import { chainDigest, contentDigest, GENESIS } from './chain.js';
import { checkRenewal, refusedByLog, toLease } from './leases.js';
import { subscribeAllWith, subscribeStreamWith } from './live.js';
import { checkedSnapshot, snapshotChecksum } from './snapshots.js';

/** better-sqlite3, required (as domain/io-ts.ts explains). */
const Sqlite = createRequire(import.meta.url)('better-sqlite3') as typeof Database;

/**
 * 1: events and streams; 2: the digest chain (events.digest and .previous as 32-byte BLOBs, half
 * the size of hex text; streams.digest, the head, as hex; meta); 3: read-model snapshots;
 * 4: node liveness leases.
 */
const SCHEMA_VERSION = 4;
const INSERT_CHUNK = 64;

export interface SqliteOptions {
  /** `full` (default) syncs the WAL at every commit: a committed event survives power loss.
   *  `normal` survives a process crash (kill -9) but may lose the last commits on power loss. */
  readonly synchronous?: 'full' | 'normal';
  /** How often subscribers look for commits made by other processes (default: 5 ms, or 1 s while the WAL file is watched). */
  readonly pollMs?: number;
  readonly context?: AppendContext;
}

/** Another process's commit reaches subscribers within this; a data_version check costs ~10 µs. */
const POLL_MS = 5;
/** While the WAL file is watched (inotify: every commit writes it), a poll this rare only backs the watch up. */
const WATCHED_POLL_MS = 1000;

/**
 * When to look for another process's commit: at every write to the WAL file, as inotify reports
 * it, and every WATCHED_POLL_MS; or, with no file to watch (in memory, a watch refused), every
 * POLL_MS — 200 wake-ups a second, what an idle agent spent most of its CPU on.
 */
const commitSignals = (path: string, pollMs: number | undefined): Observable<void> =>
  new Observable<void>((subscriber) => {
    const signal = () => subscriber.next();
    let watcher: FSWatcher | undefined;
    let timer: NodeJS.Timeout | undefined;
    const poll = (ms: number) => {
      clearInterval(timer);
      timer = setInterval(signal, ms);
    };
    if (path !== ':memory:') {
      try {
        watcher = watch(`${path}-wal`, { persistent: false }, signal).on('error', () => {
          watcher?.close();
          watcher = undefined;
          poll(pollMs ?? POLL_MS);
        });
      } catch {
        watcher = undefined;
      }
    }
    poll(pollMs ?? (watcher ? WATCHED_POLL_MS : POLL_MS));
    return () => {
      clearInterval(timer);
      watcher?.close();
    };
  });

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

  constructor(
    readonly path: string,
    options: SqliteOptions = {},
  ) {
    this.location = `sqlite:${path}`;
    this.#context = options.context ?? defaultAppendContext();
    if (path !== ':memory:') {
      ensureDirectory(dirname(path));
      createPrivate(path);
    }
    const db = new Sqlite(path);
    this.#db = db;
    db.pragma('busy_timeout = 30000');
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${options.synchronous === 'normal' ? 'NORMAL' : 'FULL'}`);
    db.pragma('cache_size = -65536');
    migrate(db);
    this.#sql = {
      stream: db.prepare<[string], { id: number; revision: number; digest: string | null }>('SELECT id, revision, digest FROM streams WHERE name = ?'),
      streamName: db.prepare<[number], { name: string }>('SELECT name FROM streams WHERE id = ?'),
      insertStream: db.prepare<[string]>('INSERT INTO streams (name, revision) VALUES (?, -1)'),
      setRevision: db.prepare<[number, string, number]>('UPDATE streams SET revision = ?, digest = ? WHERE id = ?'),
      readAll: db.prepare<[number, number]>(`SELECT ${COLUMNS} FROM events WHERE position >= ? ORDER BY position LIMIT ?`).raw(),
      readForwards: db.prepare<[number, number, number]>(`SELECT ${COLUMNS} FROM events WHERE stream_id = ? AND revision >= ? ORDER BY revision LIMIT ?`).raw(),
      readBackwards: db.prepare<[number, number, number]>(`SELECT ${COLUMNS} FROM events WHERE stream_id = ? AND revision <= ? ORDER BY revision DESC LIMIT ?`).raw(),
      head: db.prepare('SELECT coalesce(max(position), 0) AS head FROM events').pluck(),
      dataVersion: db.prepare('PRAGMA data_version').pluck(),
      chainStreams: db.prepare<[string, number], { name: string; revision: number }>('SELECT name, revision FROM streams WHERE name > ? ORDER BY name LIMIT ?'),
      chainRows: db.prepare<[string, number, number], ChainedRow>(
        `SELECT e.position, s.name AS stream, e.revision, e.id, e.type, e.schema_version AS schemaVersion, CAST(e.data AS TEXT) AS data, CAST(e.metadata AS TEXT) AS metadata, ${HEX('e.digest')} AS digest, ${HEX('e.previous')} AS previous
         FROM events e JOIN streams s ON s.id = e.stream_id WHERE s.name = ? AND e.revision >= ? ORDER BY e.revision LIMIT ?`,
      ),
      strayRow: db.prepare<[], ChainedRow>(
        `SELECT position, '(unknown stream id ' || stream_id || ')' AS stream, revision, id, type, schema_version AS schemaVersion, CAST(data AS TEXT) AS data, CAST(metadata AS TEXT) AS metadata, ${HEX('digest')} AS digest, ${HEX('previous')} AS previous
         FROM events WHERE stream_id NOT IN (SELECT id FROM streams) LIMIT 1`,
      ),
      meta: db.prepare<[string], string>('SELECT value FROM meta WHERE key = ?').pluck(),
      digest: db.prepare<[number], string | null>(`SELECT ${HEX('digest')} FROM events WHERE position = ?`).pluck(),
      snapshot: db.prepare<[string, string], Snapshot & { checksum: string }>(
        'SELECT model, key, code_version AS version, schema, position, digest, CAST(state AS TEXT) AS state, checksum FROM snapshots WHERE model = ? AND key = ?',
      ),
      saveSnapshot: db.prepare<[string, string, number, string, number, string, string, string, string]>(
        'INSERT OR REPLACE INTO snapshots (model, key, code_version, schema, position, digest, state, checksum, saved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      startedAgent: db
        .prepare<[string], string>("SELECT CAST(e.data AS TEXT) FROM events e JOIN streams s ON s.id = e.stream_id WHERE s.name = ? AND e.type = 'NodeAgentStarted' ORDER BY e.revision DESC LIMIT 1")
        .pluck(),
      renewLease: db.prepare<[string, string, number, number]>('INSERT OR REPLACE INTO leases (node, holder, renewed_at, expires_at) VALUES (?, ?, ?, ?)'),
      leases: db.prepare<[], { node: string; holder: string; renewedAt: number; expiresAt: number }>('SELECT node, holder, renewed_at AS renewedAt, expires_at AS expiresAt FROM leases ORDER BY node'),
      releaseLease: db.prepare<[string]>('DELETE FROM leases WHERE node = ?'),
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
    // Commits by other processes are seen by checking PRAGMA data_version, which changes only when
    // another connection committed: a cheap check, made whenever the WAL file was written.
    let seen = this.#sql.dataVersion.get();
    const otherCommits = commitSignals(path, options.pollMs).pipe(
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
    let digest = row?.digest ?? GENESIS;
    let position = 0;
    // Multi-row INSERTs: one statement call per 64 events instead of one per event.
    for (let start = 0; start < encoded.length; start += INSERT_CHUNK) {
      const chunk = encoded.slice(start, start + INSERT_CHUNK);
      const values: unknown[] = [];
      for (const e of chunk) {
        const previous = digest;
        digest = chainDigest(previous, e.content, ++revision);
        values.push(streamId, revision, e.id, e.type, e.schemaVersion, e.data, e.metadata, Buffer.from(digest, 'hex'), Buffer.from(previous, 'hex'));
      }
      position = Number(this.#insert(chunk.length).run(values).lastInsertRowid);
    }
    this.#sql.setRevision.run(revision, digest, streamId);
    return { revision, position };
  };

  readonly #inserts = new Map<number, Database.Statement>();
  #insert(rows: number): Database.Statement {
    let statement = this.#inserts.get(rows);
    if (!statement) {
      const values = Array.from({ length: rows }, () => '(?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ');
      statement = this.#db.prepare(`INSERT INTO events (stream_id, revision, id, type, schema_version, data, metadata, digest, previous) VALUES ${values}`);
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
    let outcomes: Array<{ result: AppendResult } | { error: unknown }>;
    try {
      outcomes = this.#commitGroup(group);
    } catch (error) {
      for (const append of group) append.reject(error);
      return;
    }
    for (const [i, outcome] of outcomes.entries()) {
      if ('result' in outcome) group[i]!.resolve(outcome.result);
      else group[i]!.reject(outcome.error);
    }
    this.#appended.next();
  };

  /** An event's digest, looked up when asked for (a replay never asks). */
  #digestAt = (position: number): string | undefined => (this.#db.open ? (this.#sql.digest.get(position) ?? undefined) : undefined);

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
      events[i] = storedEvent(position, this.#name(streamId), revision, id, type, schemaVersion, data, metadata, this.#digestAt);
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

  readonly chain: ChainedLog = {
    streams: async (after, limit) => this.#sql.chainStreams.all(after ?? '', limit),
    rows: async (stream, from, limit) => this.#sql.chainRows.all(stream, from, limit),
    strayRow: async () => this.#sql.strayRow.get(),
    chainedByMigration: async () => {
      const upTo = this.#sql.meta.get('chain_migrated_up_to');
      return upTo === undefined ? undefined : { upTo: Number(upTo), at: this.#sql.meta.get('chain_migrated_at') ?? '?' };
    },
  };

  readonly snapshots: SnapshotStore = {
    load: async (model, key) => {
      const row = this.#sql.snapshot.get(model, key);
      if (!row) return undefined;
      const { checksum, ...snapshot } = row;
      return checkedSnapshot(snapshot, checksum);
    },
    save: async (snapshots) => {
      try {
        const savedAt = new Date().toISOString();
        this.#db.transaction(() => {
          for (const s of snapshotList(snapshots)) this.#sql.saveSnapshot.run(s.model, s.key, s.version, s.schema, s.position, s.digest, s.state, snapshotChecksum(s), savedAt);
        })();
      } catch (error) {
        const code = (error as { code?: string }).code ?? '';
        if (code.startsWith('SQLITE_READONLY') || code.startsWith('SQLITE_CANTOPEN') || code === 'SQLITE_PERM') throw new SnapshotNotWritableError(`${this.location} is read-only here (${code})`);
        throw error;
      }
    },
  };

  /** Judged by this process's clock: the agents sharing a SQLite file share a machine. */
  readonly leases: LeaseStore = {
    renew: async (node: string, holder: LeaseHolder, ttlMs: number): Promise<Lease> => {
      checkRenewal(node, holder, ttlMs);
      const started = this.#sql.startedAgent.get(nodeStream(node));
      const refused = refusedByLog(node, holder, started === undefined ? undefined : (JSON.parse(started) as { agent: { pid: number; startTime: number } }).agent);
      if (refused) throw new LeaseRefusedError(refused);
      const kept = { pid: holder.pid, startTime: holder.startTime, bootId: holder.bootId, hostname: holder.hostname };
      const now = Date.now();
      this.#sql.renewLease.run(node, JSON.stringify(kept), now, now + ttlMs);
      return toLease(node, { holder: kept, renewedAt: now, expiresAt: now + ttlMs }, now);
    },
    list: async () => {
      const now = Date.now();
      return this.#sql.leases.all().map((r) => toLease(r.node, { holder: JSON.parse(r.holder) as LeaseHolder, renewedAt: r.renewedAt, expiresAt: r.expiresAt }, now));
    },
    release: async (node: string) => {
      this.#sql.releaseLease.run(node);
    },
  };

  async close(): Promise<void> {
    this.#appended.complete();
    if (this.#db.open) this.#db.close();
  }
}

/**
 * Creates the database file 0600 whatever the umask: SQLite gives its -wal and -shm files the
 * database file's mode, so all three are private. An existing file is left as it is.
 */
const createPrivate = (path: string): void => {
  let fd: number;
  try {
    fd = openSync(path, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return;
    const e = error as NodeJS.ErrnoException;
    throw Object.assign(new Error(`cannot create the event store ${path}: ${e.code ?? e.message}`), { code: 'SQLITE_CANTOPEN' });
  }
  try {
    fchmodSync(fd, 0o600);
  } finally {
    closeSync(fd);
  }
};
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

/** A digest BLOB as hex; NULL stays NULL (hex() would make it ''). */
const HEX = (column: string) => `CASE WHEN ${column} IS NULL THEN NULL ELSE lower(hex(${column})) END`;
const COLUMNS = 'position, stream_id, revision, id, type, schema_version, data, metadata';

const migrate = (db: Database.Database): void => {
  // Several processes may open a new file at once: create the schema under the write lock.
  db.transaction(() => {
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw new Error(`${db.name} has event log schema ${version}, newer than this ckpt understands (${SCHEMA_VERSION}): upgrade ckpt`);
    }
    if (version === SCHEMA_VERSION) return;
    if (version === 1) chainExistingRows(db);
    if (version === 1 || version === 2) db.exec(SNAPSHOTS);
    if (version >= 1 && version <= 3) return addLeases(db);
    db.exec(`
      CREATE TABLE streams (
        id       INTEGER PRIMARY KEY,
        name     TEXT NOT NULL UNIQUE,
        revision INTEGER NOT NULL,
        digest   TEXT
      );
      CREATE TABLE events (
        position       INTEGER PRIMARY KEY,
        stream_id      INTEGER NOT NULL REFERENCES streams (id),
        revision       INTEGER NOT NULL,
        id             TEXT NOT NULL,
        type           TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        data           TEXT NOT NULL,
        metadata       TEXT NOT NULL,
        digest         BLOB,
        previous       BLOB
      );
      CREATE UNIQUE INDEX events_stream_revision ON events (stream_id, revision);
      CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      ${SNAPSHOTS}
      ${LEASES}
      PRAGMA user_version = ${SCHEMA_VERSION};
    `);
  }).immediate();
};

/** Read-model snapshots (projections/snapshot-read.ts), one per model and key; rebuilt from the log at will. */
const SNAPSHOTS = `
  CREATE TABLE snapshots (
    model        TEXT NOT NULL,
    key          TEXT NOT NULL,
    code_version INTEGER NOT NULL,
    schema       TEXT NOT NULL,
    position     INTEGER NOT NULL,
    digest       TEXT NOT NULL,
    state        BLOB NOT NULL,
    checksum     TEXT NOT NULL,
    saved_at     TEXT NOT NULL,
    PRIMARY KEY (model, key)
  );`;

/** Node liveness leases (LeaseStore): one row per node, replaced at each renewal; times in ms since the epoch. */
const LEASES = `
  CREATE TABLE leases (
    node       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    renewed_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
  );`;

/** Schema 2 → 3 adds the snapshot table, 3 → 4 the lease table, both empty. */
const addLeases = (db: Database.Database): void => {
  db.exec(LEASES);
  db.pragma(`user_version = ${SCHEMA_VERSION}`);
};

/**
 * Schema 1 → 2: the rows written before the chain get their digests now, once. The chain can
 * vouch for them only from this moment on; meta records up to which position that holds.
 */
const chainExistingRows = (db: Database.Database): void => {
  db.exec(`
    ALTER TABLE events ADD COLUMN digest BLOB;
    ALTER TABLE events ADD COLUMN previous BLOB;
    ALTER TABLE streams ADD COLUMN digest TEXT;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  `);
  const update = db.prepare('UPDATE events SET digest = ?, previous = ? WHERE position = ?');
  const setHead = db.prepare('UPDATE streams SET digest = ? WHERE id = ?');
  const streams = db.prepare<[], { id: number; name: string }>('SELECT id, name FROM streams').all();
  const page = db.prepare<[number, number], { position: number; revision: number; id: string; type: string; schemaVersion: number; data: string; metadata: string }>(
    'SELECT position, revision, id, type, schema_version AS schemaVersion, data, metadata FROM events WHERE stream_id = ? AND revision >= ? ORDER BY revision LIMIT 1000',
  );
  for (const stream of streams) {
    let digest = GENESIS;
    for (let rows = page.all(stream.id, 0); rows.length > 0; rows = page.all(stream.id, rows[rows.length - 1]!.revision + 1)) {
      for (const r of rows) {
        let content: string;
        try {
          content = contentDigest({ ...r, stream: stream.name, data: JSON.parse(r.data), metadata: JSON.parse(r.metadata) });
        } catch {
          continue; // an unreadable row stays without a digest: the chain check names it
        }
        const previous = digest;
        digest = chainDigest(previous, content, r.revision);
        update.run(Buffer.from(digest, 'hex'), Buffer.from(previous, 'hex'), r.position);
      }
    }
    setHead.run(digest, stream.id);
  }
  const head = db.prepare('SELECT coalesce(max(position), 0) FROM events').pluck().get() as number;
  db.prepare("INSERT INTO meta (key, value) VALUES ('chain_migrated_up_to', ?), ('chain_migrated_at', ?)").run(String(head), new Date().toISOString());
};
