// PostgreSQL store, for many nodes sharing one log.
//
// The gap problem: with a plain sequence, transaction A can take position 7, transaction B take
// position 8 and commit first; a reader that already delivered 8 would never deliver 7. Filtering
// by pg_snapshot_xmin still skips when the reader's cursor is a bare position and xids and
// positions are taken in different orders. So appends here take a transaction-scoped advisory
// lock before taking positions: positions are assigned and made visible in the same order, and
// "everything after position P" is a complete answer at any moment. The cost is that appends
// from all nodes are serialised; each is a single round trip (one function call), so the lock
// is held for well under a millisecond per batch.
import pg from 'pg';
import { interval, merge, Observable, Subject, share } from 'rxjs';
import { WrongExpectedRevisionError, type AppendResult, type EventStore, type ExpectedRevision, type ProposedEvent, type ReadAllOptions, type ReadStreamOptions, type RecordedEvent, type Revision, type SubscribeOptions } from '../../domain/event-store.js';
import { subscribeAllWith, subscribeStreamWith } from './live.js';
import { checkExpectedRevision, defaultAppendContext, encodeBatch, pageLimit, storedEvent, validExpectedRevision, type AppendContext } from './batch.js';

const SCHEMA_VERSION = 1;
/** Advisory lock keys (arbitrary constants, "ckpt" in ASCII in the high bytes). */
const MIGRATION_LOCK = 0x636b7074_0001;
const APPEND_LOCK = 0x636b7074_0002;
const CHANNEL = 'ckpt_events';
const CONFLICT = 'CK409';

export interface PostgresOptions {
  /** Fallback poll for subscribers, in case a notification is lost with a connection. */
  readonly pollMs?: number;
  readonly context?: AppendContext;
}

/** The URL without its password, for messages. */
export const redactUrl = (url: string): string => {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return 'postgres://(unparseable URL)';
  }
};

type Row = [position: string, stream: string, revision: string, id: string, type: string, schemaVersion: number, data: string, metadata: string];
const COLUMNS = 'position, stream, revision, id, type, schema_version, data::text, metadata::text';

export class PostgresEventStore implements EventStore {
  readonly location: string;
  readonly #pool: pg.Pool;
  readonly #context: AppendContext;
  readonly #appended = new Subject<void>();
  readonly #wakeups: Observable<unknown>;
  #ready: Promise<void> | undefined;
  #listener: pg.Client | undefined;

  constructor(readonly url: string, private readonly options: PostgresOptions = {}) {
    this.location = redactUrl(url);
    this.#context = options.context ?? defaultAppendContext();
    this.#pool = new pg.Pool({ connectionString: url, max: 4 });
    // An idle pooled connection that dies (server restart) must not crash the process.
    this.#pool.on('error', () => {});
    this.#wakeups = merge(this.#appended, this.#notifications(), interval(options.pollMs ?? 1000)).pipe(share());
  }

  /** Creates the schema on first use, once per process; concurrent first users serialise on a lock. */
  #schema(): Promise<void> {
    this.#ready ??= this.#migrate().catch((error) => {
      this.#ready = undefined;
      throw error;
    });
    return this.#ready;
  }

  async #migrate(): Promise<void> {
    const client = await this.#pool.connect();
    try {
      await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
      await client.query('CREATE TABLE IF NOT EXISTS ckpt_schema (version int NOT NULL)');
      const { rows } = await client.query<{ version: number }>('SELECT max(version) AS version FROM ckpt_schema');
      const version = rows[0]?.version ?? 0;
      if (version > SCHEMA_VERSION) {
        throw new Error(`${this.location} has event log schema ${version}, newer than this ckpt understands (${SCHEMA_VERSION}): upgrade ckpt`);
      }
      if (version < SCHEMA_VERSION) await client.query(SCHEMA);
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {});
      client.release();
    }
  }

  /** Wake-ups from NOTIFY, on one dedicated connection while anyone subscribes (shared). */
  #notifications(): Observable<void> {
    return new Observable<void>((subscriber) => {
      const listener = new pg.Client({ connectionString: this.url });
      this.#listener = listener;
      listener.on('notification', () => subscriber.next());
      listener.on('error', (error) => subscriber.error(new Error(`lost the connection to ${this.location}: ${error.message}`)));
      listener
        .connect()
        .then(() => listener.query(`LISTEN ${CHANNEL}`))
        .then(() => subscriber.next()) // anything appended while connecting is read now
        .catch((error: Error) => subscriber.error(new Error(`cannot listen on ${this.location}: ${error.message}`)));
      return () => {
        if (this.#listener === listener) this.#listener = undefined;
        void listener.end().catch(() => {});
      };
    });
  }

  async append(stream: string, events: readonly ProposedEvent[], options: { expectedRevision?: ExpectedRevision } = {}): Promise<AppendResult> {
    const expected = validExpectedRevision(options.expectedRevision ?? 'any');
    const encoded = encodeBatch(stream, events, this.#context);
    await this.#schema();
    if (encoded.length === 0) {
      const revision = await this.streamRevision(stream);
      checkExpectedRevision(stream, expected, revision);
      return { revision: revision ?? -1, position: await this.headPosition() };
    }
    // data and metadata are already JSON: the batch is one JSON document, built by concatenation.
    const batch = `[${encoded.map((e) => `{"id":"${e.id}","type":${JSON.stringify(e.type)},"v":${e.schemaVersion},"data":${e.data},"metadata":${e.metadata}}`).join(',')}]`;
    try {
      const { rows } = await this.#pool.query<{ revision: string; position: string }>(
        'SELECT revision, position FROM ckpt_append($1, $2, $3::json)',
        [stream, String(expected), batch],
      );
      this.#appended.next();
      return { revision: Number(rows[0]!.revision), position: Number(rows[0]!.position) };
    } catch (error) {
      if ((error as { code?: string }).code === CONFLICT) {
        const actual = (error as { detail?: string }).detail;
        throw new WrongExpectedRevisionError(stream, expected, actual === 'no_stream' || actual === undefined ? 'no_stream' : Number(actual));
      }
      throw error;
    }
  }

  async #rows(sql: string, params: unknown[]): Promise<RecordedEvent[]> {
    await this.#schema();
    const { rows } = await this.#pool.query<Row>({ text: sql, values: params, rowMode: 'array' });
    return rows.map(([position, stream, revision, id, type, schemaVersion, data, metadata]) =>
      storedEvent(Number(position), stream, Number(revision), id, type, schemaVersion, data, metadata),
    );
  }

  readAll(options: ReadAllOptions = {}): Promise<RecordedEvent[]> {
    return this.#rows(`SELECT ${COLUMNS} FROM ckpt_events WHERE position >= $1 ORDER BY position LIMIT $2`, [
      Math.max(1, options.from ?? 1),
      pageLimit(options.limit),
    ]);
  }

  readStream(stream: string, options: ReadStreamOptions = {}): Promise<RecordedEvent[]> {
    const limit = pageLimit(options.limit);
    return options.direction === 'backwards'
      ? this.#rows(`SELECT ${COLUMNS} FROM ckpt_events WHERE stream = $1 AND revision <= $2 ORDER BY revision DESC LIMIT $3`, [stream, options.from ?? Number.MAX_SAFE_INTEGER, limit])
      : this.#rows(`SELECT ${COLUMNS} FROM ckpt_events WHERE stream = $1 AND revision >= $2 ORDER BY revision LIMIT $3`, [stream, options.from ?? 0, limit]);
  }

  async streamRevision(stream: string): Promise<Revision | undefined> {
    await this.#schema();
    const { rows } = await this.#pool.query<{ revision: string }>('SELECT revision FROM ckpt_streams WHERE name = $1', [stream]);
    return rows[0] ? Number(rows[0].revision) : undefined;
  }

  async headPosition(): Promise<number> {
    await this.#schema();
    const { rows } = await this.#pool.query<{ head: string }>('SELECT coalesce(max(position), 0) AS head FROM ckpt_events');
    return Number(rows[0]!.head);
  }

  subscribeAll(options: SubscribeOptions = {}) {
    return subscribeAllWith((from, limit) => this.readAll({ from, limit }), this.#wakeups, options);
  }

  subscribeStream(stream: string, options: SubscribeOptions = {}) {
    return subscribeStreamWith((from, limit) => this.readStream(stream, { from, limit }), this.#wakeups, options);
  }

  async close(): Promise<void> {
    this.#appended.complete();
    await this.#listener?.end().catch(() => {});
    await this.#pool.end();
  }
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS ckpt_streams (
  name     text PRIMARY KEY,
  revision bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS ckpt_events (
  position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  stream         text NOT NULL,
  revision       bigint NOT NULL,
  id             uuid NOT NULL,
  type           text NOT NULL,
  schema_version int NOT NULL,
  data           jsonb NOT NULL,
  metadata       jsonb NOT NULL,
  UNIQUE (stream, revision)
);
CREATE OR REPLACE FUNCTION ckpt_append(p_stream text, p_expected text, p_batch json)
RETURNS TABLE (revision bigint, "position" bigint) LANGUAGE plpgsql AS $$
DECLARE
  current bigint;
  last_position bigint;
  n int := json_array_length(p_batch);
BEGIN
  PERFORM pg_advisory_xact_lock(${APPEND_LOCK});
  SELECT s.revision INTO current FROM ckpt_streams s WHERE s.name = p_stream;
  IF (p_expected = 'no_stream' AND current IS NOT NULL)
     OR (p_expected = 'stream_exists' AND current IS NULL)
     OR (p_expected ~ '^[0-9]+$' AND current IS DISTINCT FROM p_expected::bigint) THEN
    RAISE EXCEPTION 'wrong expected revision for %', p_stream
      USING ERRCODE = '${CONFLICT}', DETAIL = coalesce(current::text, 'no_stream');
  END IF;
  current := coalesce(current, -1);
  INSERT INTO ckpt_events (stream, revision, id, type, schema_version, data, metadata)
  SELECT p_stream, current + e.ord, (e.value->>'id')::uuid, e.value->>'type', (e.value->>'v')::int, e.value->'data', e.value->'metadata'
  FROM json_array_elements(p_batch) WITH ORDINALITY AS e(value, ord)
  ORDER BY e.ord;
  last_position := currval(pg_get_serial_sequence('ckpt_events', 'position'));
  INSERT INTO ckpt_streams AS s (name, revision) VALUES (p_stream, current + n)
  ON CONFLICT (name) DO UPDATE SET revision = excluded.revision;
  PERFORM pg_notify('${CHANNEL}', '');
  RETURN QUERY SELECT current + n, last_position;
END $$;
INSERT INTO ckpt_schema (version) VALUES (${SCHEMA_VERSION});
`;
