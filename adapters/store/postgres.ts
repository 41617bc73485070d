// PostgreSQL store, for many nodes sharing one log.
//
// The gap problem: with a plain sequence, transaction A can take position 7, transaction B take
// position 8 and commit first; a reader that already delivered 8 would never deliver 7.
//
// Schema 4 solves it without serialising commits. An append takes its transaction id and its
// positions together under a short global lock (released before the rows are even written), so
// positions ascend with transaction ids, and records the id with each row (txid). A reader then
// reads only rows whose transaction is older than its snapshot's xmin: every transaction below
// xmin has ended, and every one that has not ended holds only positions above what the reader
// sees, so "everything after position P" is complete. Appends to one stream still serialise on
// that stream's own lock (expected revision, digest chain). The price: a committed event becomes
// readable only once every older transaction in the cluster has ended (an append in flight,
// autovacuum's ANALYZE, a long write elsewhere) — it is delayed, never skipped.
// Schema 3 held one advisory lock until commit instead: with 3–8 appenders schema 4 measured
// 1.1–1.6× its throughput (`npm run bench:pg-append` compares both, and an (xid, position)
// cursor with no global lock at all, which did no better).
import { createRequire } from 'node:module';
import type pg from 'pg';
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
  WrongExpectedRevisionError,
} from '../../domain/event-store.js';
import { interval, merge, Observable, Subject, share } from '../../domain/rx.js';
import { type AppendContext, checkExpectedRevision, defaultAppendContext, encodeBatch, pageLimit, storedEvent, validExpectedRevision } from './batch.js';
import { chainDigest, contentDigest, GENESIS } from './chain.js';
import { checkRenewal } from './leases.js';
import { subscribeAllWith, subscribeStreamWith } from './live.js';
import { redactStoreUrl } from './redact.js';
import { checkedSnapshot, snapshotChecksum } from './snapshots.js';

/**
 * 1: events and streams; 2: the digest chain, the appending role, ckpt_append SECURITY DEFINER;
 * 3: read-model snapshots; 4: positions ordered by transaction id (txid), readers bounded by xmin;
 * 5: node liveness leases (ckpt_leases, ckpt_renew_lease, ckpt_release_lease).
 */
const SCHEMA_VERSION = 5;
/** Advisory lock keys (arbitrary constants, "ckpt" in ASCII in the high bytes). */
const MIGRATION_LOCK = 0x636b7074_0001;
const APPEND_LOCK = 0x636b7074_0002;
/** Per-stream locks: the two-int4 key space ("ckpt", hash of the stream name), apart from the bigint keys above. */
const STREAM_LOCK_CLASS = 0x636b7074;
const CHANNEL = 'ckpt_events';
const CONFLICT = 'CK409';
/** A lease renewal this role may not make (see LEASES). */
const LEASE_REFUSED = 'CK403';
/** Snapshots per INSERT when many are saved together. */
const SAVE_CHUNK = 5000;

/** The client library, loaded when a PostgreSQL store is opened rather than by every command that could open one. */
const pgLibrary = (): typeof pg => createRequire(import.meta.url)('pg') as typeof pg;

export interface PostgresOptions {
  /** Fallback poll for subscribers, in case a notification is lost with a connection. */
  readonly pollMs?: number;
  readonly context?: AppendContext;
}

type Row = [position: string, stream: string, revision: string, id: string, type: string, schemaVersion: number, data: string, metadata: string, digest: string | null];
const COLUMNS = 'position, stream, revision, id, type, schema_version, data::text, metadata::text, digest';
/** Rows every reader may deliver: their transaction, and every older one, has ended (see the top). */
const ENDED = 'txid < (SELECT pg_snapshot_xmin(pg_current_snapshot()))';
const CHAIN_COLUMNS = 'position, stream, revision, id, type, schema_version AS "schemaVersion", data::text AS data, metadata::text AS metadata, digest, previous';

export class PostgresEventStore implements EventStore {
  readonly location: string;
  readonly #pool: pg.Pool;
  readonly #context: AppendContext;
  readonly #appended = new Subject<void>();
  readonly #wakeups: Observable<unknown>;
  #ready: Promise<void> | undefined;
  #listener: pg.Client | undefined;

  constructor(
    readonly url: string,
    options: PostgresOptions = {},
  ) {
    this.location = redactStoreUrl(url);
    this.#context = options.context ?? defaultAppendContext();
    this.#pool = new (pgLibrary().Pool)({ connectionString: url, max: 4 });
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
    // An agent's role may not create anything: a log already at this schema needs no DDL at all.
    const version = async () => {
      const { rows } = await client.query<{ version: number | null }>("SELECT CASE WHEN to_regclass('ckpt_schema') IS NULL THEN 0 END AS version");
      if (rows[0]!.version === 0) return 0;
      return (await client.query<{ version: number }>('SELECT coalesce(max(version), 0) AS version FROM ckpt_schema')).rows[0]!.version;
    };
    try {
      const found = await version();
      if (found > SCHEMA_VERSION) {
        throw new Error(`${this.location} has event log schema ${found}, newer than this ckpt understands (${SCHEMA_VERSION}): upgrade ckpt`);
      }
      if (found === SCHEMA_VERSION) return;
      if (
        found > 0 &&
        !(await client.query<{ owner: boolean }>("SELECT pg_has_role((SELECT tableowner FROM pg_tables WHERE tablename = 'ckpt_events' AND schemaname = current_schema()), 'USAGE') AS owner")).rows[0]!
          .owner
      ) {
        throw new Error(
          `${this.location} has event log schema ${found}, this ckpt needs schema ${SCHEMA_VERSION}: run ckpt once as the role that owns the log's tables (e.g. ckpt jobs --store postgres://OWNER@…) to migrate it`,
        );
      }
      await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
      await client.query('CREATE TABLE IF NOT EXISTS ckpt_schema (version int NOT NULL)');
      const current = await version();
      if (current === 0) await client.query(SCHEMA);
      if (current === 1) await chainExistingRows(client);
      if (current === 1 || current === 2) await client.query(`${SNAPSHOTS} INSERT INTO ckpt_schema (version) VALUES (3);`);
      if (current >= 1 && current <= 3) await client.query(ORDER_BY_TXID);
      if (current >= 1 && current <= 4) await client.query(`${LEASES} INSERT INTO ckpt_schema (version) VALUES (5);`);
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {});
      client.release();
    }
  }

  /** Wake-ups from NOTIFY, on one dedicated connection while anyone subscribes (shared). */
  #notifications(): Observable<void> {
    return new Observable<void>((subscriber) => {
      const listener = new (pgLibrary().Client)({ connectionString: this.url });
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
    const batch = `[${encoded.map((e) => `{"id":"${e.id}","type":${JSON.stringify(e.type)},"v":${e.schemaVersion},"c":"${e.content}","data":${e.data},"metadata":${e.metadata}}`).join(',')}]`;
    try {
      const { rows } = await this.#pool.query<{ revision: string; position: string }>('SELECT revision, position FROM ckpt_append($1, $2, $3::json)', [stream, String(expected), batch]);
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
    return rows.map(([position, stream, revision, id, type, schemaVersion, data, metadata, digest]) =>
      storedEvent(Number(position), stream, Number(revision), id, type, schemaVersion, data, metadata, digest),
    );
  }

  readAll(options: ReadAllOptions = {}): Promise<RecordedEvent[]> {
    return this.#rows(`SELECT ${COLUMNS} FROM ckpt_events WHERE position >= $1 AND ${ENDED} ORDER BY position LIMIT $2`, [Math.max(1, options.from ?? 1), pageLimit(options.limit)]);
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
    const { rows } = await this.#pool.query<{ head: string }>(`SELECT coalesce(max(position), 0) AS head FROM ckpt_events WHERE ${ENDED}`);
    return Number(rows[0]!.head);
  }

  subscribeAll(options: SubscribeOptions = {}) {
    return subscribeAllWith((from, limit) => this.readAll({ from, limit }), this.#wakeups, options);
  }

  subscribeStream(stream: string, options: SubscribeOptions = {}) {
    return subscribeStreamWith((from, limit) => this.readStream(stream, { from, limit }), this.#wakeups, options);
  }

  async #chainRows(sql: string, params: unknown[]): Promise<ChainedRow[]> {
    await this.#schema();
    const { rows } = await this.#pool.query<ChainedRow & { position: string; revision: string }>(sql, params);
    return rows.map((r) => ({ ...r, position: Number(r.position), revision: Number(r.revision) }));
  }

  readonly chain: ChainedLog = {
    streams: async (after, limit) => {
      await this.#schema();
      const { rows } = await this.#pool.query<{ name: string; revision: string }>('SELECT name, revision FROM ckpt_streams WHERE $1::text IS NULL OR name > $1 ORDER BY name LIMIT $2', [
        after ?? null,
        limit,
      ]);
      return rows.map((r) => ({ name: r.name, revision: Number(r.revision) }));
    },
    rows: (stream, from, limit) => this.#chainRows(`SELECT ${CHAIN_COLUMNS} FROM ckpt_events WHERE stream = $1 AND revision >= $2 ORDER BY revision LIMIT $3`, [stream, from, limit]),
    strayRow: async () =>
      (await this.#chainRows(`SELECT ${CHAIN_COLUMNS} FROM ckpt_events e WHERE NOT EXISTS (SELECT 1 FROM ckpt_streams s WHERE s.name = e.stream) ORDER BY position LIMIT 1`, []))[0],
    chainedByMigration: async () => {
      await this.#schema();
      const { rows } = await this.#pool.query<{ key: string; value: string }>("SELECT key, value FROM ckpt_meta WHERE key IN ('chain_migrated_up_to', 'chain_migrated_at')");
      const meta = new Map(rows.map((r) => [r.key, r.value]));
      const upTo = meta.get('chain_migrated_up_to');
      return upTo === undefined ? undefined : { upTo: Number(upTo), at: meta.get('chain_migrated_at') ?? '?' };
    },
  };

  /** Snapshots: the agents' role writes them (ckpt_agents), readers only read; the owner does both. */
  readonly snapshots: SnapshotStore = {
    load: async (model, key) => {
      await this.#schema();
      const { rows } = await this.#pool.query<Snapshot & { checksum: string; position: string }>(
        'SELECT model, key, code_version AS version, schema, position, digest, state, checksum FROM ckpt_snapshots WHERE model = $1 AND key = $2',
        [model, key],
      );
      if (!rows[0]) return undefined;
      const { checksum, ...snapshot } = rows[0];
      return checkedSnapshot({ ...snapshot, position: Number(snapshot.position) }, checksum);
    },
    save: async (snapshots) => {
      await this.#schema();
      const all = snapshotList(snapshots);
      const client = await this.#pool.connect();
      try {
        // One transaction, in statements of SAVE_CHUNK rows (a rebuilt jobs list writes one per job ever ended).
        await client.query('BEGIN');
        for (let i = 0; i < all.length; i += SAVE_CHUNK) {
          const chunk = all.slice(i, i + SAVE_CHUNK);
          const column = <K extends keyof Snapshot>(k: K) => chunk.map((s) => s[k]);
          await client.query(
            `INSERT INTO ckpt_snapshots (model, key, code_version, schema, position, digest, state, checksum)
             SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[])
             ON CONFLICT (model, key) DO UPDATE SET code_version = excluded.code_version, schema = excluded.schema, position = excluded.position,
               digest = excluded.digest, state = excluded.state, checksum = excluded.checksum, saved_at = now(), saved_by = session_user`,
            [column('model'), column('key'), column('version'), column('schema'), column('position'), column('digest'), column('state'), chunk.map(snapshotChecksum)],
          );
        }
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {});
        if ((error as { code?: string }).code === '42501') throw new SnapshotNotWritableError(`this role may not write snapshots in ${this.location} (${(error as Error).message})`);
        throw error;
      } finally {
        client.release();
      }
    },
  };

  /** Leases judged by the server's clock: hosts' clocks may disagree, the database's is one. */
  readonly leases: LeaseStore = {
    renew: async (node: string, holder: LeaseHolder, ttlMs: number): Promise<Lease> => {
      checkRenewal(node, holder, ttlMs);
      await this.#schema();
      const kept = { pid: holder.pid, startTime: holder.startTime, bootId: holder.bootId, hostname: holder.hostname };
      try {
        const { rows } = await this.#pool.query<{ renewed_at: Date; expires_at: Date }>('SELECT renewed_at, expires_at FROM ckpt_renew_lease($1, $2::jsonb, $3)', [node, JSON.stringify(kept), ttlMs]);
        return { node, holder: kept, renewedAt: rows[0]!.renewed_at.toISOString(), expiresAt: rows[0]!.expires_at.toISOString(), expired: false, asOf: rows[0]!.renewed_at.toISOString() };
      } catch (error) {
        if ((error as { code?: string }).code === LEASE_REFUSED) throw new LeaseRefusedError((error as Error).message);
        if ((error as { code?: string }).code === '42501')
          throw new LeaseRefusedError(`this role may not renew leases in ${this.location} (${(error as Error).message}): node agents log in as a member of ckpt_agents`);
        throw error;
      }
    },
    list: async () => {
      await this.#schema();
      const { rows } = await this.#pool.query<{ node: string; holder: LeaseHolder; renewed_at: Date; expires_at: Date; expired: boolean; as_of: Date }>(
        'SELECT node, holder, renewed_at, expires_at, expires_at <= t AS expired, t AS as_of FROM ckpt_leases, clock_timestamp() AS t ORDER BY node',
      );
      return rows.map((r) => ({ node: r.node, holder: r.holder, renewedAt: r.renewed_at.toISOString(), expiresAt: r.expires_at.toISOString(), expired: r.expired, asOf: r.as_of.toISOString() }));
    },
    release: async (node: string) => {
      await this.#schema();
      await this.#pool.query('SELECT ckpt_release_lease($1)', [node]);
    },
  };

  async close(): Promise<void> {
    this.#appended.complete();
    await this.#listener?.end().catch(() => {});
    await this.#pool.end();
  }
}

/**
 * How appends are ordered globally. 'allocation' is ckpt's (schema 4, see the top); the others
 * exist for `npm run bench:pg-append`: 'commit' holds the global lock to commit (schema 3), 'none'
 * takes no global lock — positions then do not ascend with txid, and a gap-free reader has to
 * follow (txid, position) instead, as Emmett does.
 */
export type GlobalOrder = 'allocation' | 'commit' | 'none';

/**
 * ckpt_append is SECURITY DEFINER: it is the only way to append (EXECUTE is granted to the
 * ckpt_agents group role, revoked from PUBLIC; nobody but the owner may write the tables), and it
 * records who appended with `session_user`, the role that logged in (inside a SECURITY DEFINER
 * function current_user is the function's owner). It links each event's content digest (sent by
 * the client, chain.ts) to its stream's previous digest with PostgreSQL's own sha256().
 *
 * Ordering (schema 4): the transaction's id must not exist before the global lock (so it must be
 * the transaction's first write), and is assigned under the lock together with the positions; the
 * position sequence must keep CACHE 1 (a cache hands each session its own range). The lock is a
 * session lock, released by hand — also when taking the id or positions fails or is cancelled.
 */
export const appendFunction = (order: GlobalOrder = 'allocation') => `
CREATE OR REPLACE FUNCTION ckpt_append(p_stream text, p_expected text, p_batch json)
RETURNS TABLE (revision bigint, "position" bigint) LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
  current bigint;
  head text;
  n int := json_array_length(p_batch);
  sequence text := pg_get_serial_sequence('ckpt_events', 'position');
  tx xid8;
  positions bigint[];
  digests text[];
  previous text[];
  d text;
  contents text[];
BEGIN
  IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
    RAISE EXCEPTION 'ckpt_append must be the first write of its transaction: positions follow transaction ids';
  END IF;${
    order === 'commit'
      ? `
  PERFORM pg_advisory_xact_lock(${APPEND_LOCK});`
      : ''
  }
  -- One append at a time per stream, to commit: the expected revision and the chain's head hold.
  PERFORM pg_advisory_xact_lock(${STREAM_LOCK_CLASS}, hashtext(p_stream));
  SELECT s.revision, s.digest INTO current, head FROM ckpt_streams s WHERE s.name = p_stream;
  IF (p_expected = 'no_stream' AND current IS NOT NULL)
     OR (p_expected = 'stream_exists' AND current IS NULL)
     OR (p_expected ~ '^[0-9]+$' AND current IS DISTINCT FROM p_expected::bigint) THEN
    RAISE EXCEPTION 'wrong expected revision for %', p_stream
      USING ERRCODE = '${CONFLICT}', DETAIL = coalesce(current::text, 'no_stream');
  END IF;
  current := coalesce(current, -1);
  d := coalesce(head, '${GENESIS}');
  -- The batch is parsed twice (digests, then rows), not once per field and event.
  SELECT array_agg(x.c ORDER BY x.ord) INTO contents FROM ROWS FROM (json_to_recordset(p_batch) AS (c text)) WITH ORDINALITY AS x(c, ord);
  FOR i IN 1..n LOOP
    IF coalesce(contents[i], '') !~ '^[0-9a-f]{64}$' THEN
      RAISE EXCEPTION 'ckpt_append: event % of the batch has no content digest: this log has a digest chain, upgrade ckpt', i;
    END IF;
    previous[i] := d;
    d := encode(sha256(decode(d, 'hex') || decode(contents[i], 'hex') || int8send(current + i)), 'hex');
    digests[i] := d;
  END LOOP;${
    order === 'allocation'
      ? `
  PERFORM pg_advisory_lock(${APPEND_LOCK});
  BEGIN`
      : ''
  }
    tx := pg_current_xact_id();
    SELECT array_agg(p ORDER BY p) INTO positions FROM (SELECT nextval(sequence) AS p FROM generate_series(1, n)) AS taken;${
      order === 'allocation'
        ? `
  EXCEPTION WHEN OTHERS OR query_canceled THEN
    PERFORM pg_advisory_unlock(${APPEND_LOCK});
    RAISE;
  END;
  PERFORM pg_advisory_unlock(${APPEND_LOCK});`
        : ''
    }
  INSERT INTO ckpt_events (position, txid, stream, revision, id, type, schema_version, data, metadata, digest, previous, appended_by)
  OVERRIDING SYSTEM VALUE
  SELECT positions[e.ord], tx, p_stream, current + e.ord, e.id, e.type, e.v, e.data, e.metadata, digests[e.ord], previous[e.ord], session_user
  FROM ROWS FROM (json_to_recordset(p_batch) AS (id uuid, type text, v int, data jsonb, metadata jsonb)) WITH ORDINALITY AS e(id, type, v, data, metadata, ord)
  ORDER BY e.ord;
  INSERT INTO ckpt_streams AS s (name, revision, digest) VALUES (p_stream, current + n, d)
  ON CONFLICT (name) DO UPDATE SET revision = excluded.revision, digest = excluded.digest;
  PERFORM pg_notify('${CHANNEL}', '');
  RETURN QUERY SELECT current + n, positions[n];
END $$;
REVOKE ALL ON FUNCTION ckpt_append(text, text, json) FROM PUBLIC;
DO $$ BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ckpt_agents') THEN
    GRANT EXECUTE ON FUNCTION ckpt_append(text, text, json) TO ckpt_agents;
    GRANT SELECT ON ckpt_schema, ckpt_streams, ckpt_events, ckpt_meta TO ckpt_agents;
  END IF;
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ckpt_readers') THEN
    GRANT SELECT ON ckpt_schema, ckpt_streams, ckpt_events, ckpt_meta TO ckpt_readers;
  END IF;
END $$;
`;
const APPEND_FUNCTION = appendFunction();

/** Read-model snapshots (projections/snapshot-read.ts): the agents write them, readers read them. */
const SNAPSHOTS = `
CREATE TABLE IF NOT EXISTS ckpt_snapshots (
  model        text NOT NULL,
  key          text NOT NULL,
  code_version int NOT NULL,
  schema       text NOT NULL,
  position     bigint NOT NULL,
  digest       text NOT NULL,
  state        text NOT NULL,
  checksum     text NOT NULL,
  saved_at     timestamptz NOT NULL DEFAULT now(),
  saved_by     text NOT NULL DEFAULT session_user,
  PRIMARY KEY (model, key)
);
DO $$ BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ckpt_agents') THEN
    GRANT SELECT, INSERT, UPDATE ON ckpt_snapshots TO ckpt_agents;
  END IF;
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ckpt_readers') THEN
    GRANT SELECT ON ckpt_snapshots TO ckpt_readers;
  END IF;
END $$;
`;

/**
 * Node liveness leases, beside the log: one row per node, replaced at each renewal, times by the
 * server's clock. Like ckpt_append, the two functions are the only way to write the table
 * (SECURITY DEFINER; EXECUTE for ckpt_agents), and they tie a node's lease to its agent the way
 * the log ties events to their writers: by the role that logged in (session_user). A renewal must
 * come from the role that appended the node stream's latest NodeAgentStarted, for the agent process
 * (pid, start time) that event names; a release only from the role that renewed.
 * What a holder of an agent role's credentials can fake: anything that role may append — it may
 * append a NodeAgentStarted to another node's stream and then hold that node's lease — but on
 * record, as itself (appended_by, renewed_by). It cannot renew under another role's name, write
 * the table behind the functions, or set the times: they are the server's. The owner (and a
 * superuser) can write anything here, as in the log.
 */
const LEASES = `
CREATE TABLE IF NOT EXISTS ckpt_leases (
  node       text PRIMARY KEY,
  holder     jsonb NOT NULL,
  renewed_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  renewed_by text NOT NULL
);
CREATE OR REPLACE FUNCTION ckpt_renew_lease(p_node text, p_holder jsonb, p_ttl_ms bigint)
RETURNS TABLE (renewed_at timestamptz, expires_at timestamptz) LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
  started record;
  t timestamptz := clock_timestamp();
BEGIN
  SELECT e.appended_by, e.data->'agent' AS agent INTO started FROM ckpt_events e
  WHERE e.stream = 'node-' || p_node AND e.type = 'NodeAgentStarted' ORDER BY e.revision DESC LIMIT 1;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'the log records no agent start on % (node-%): an agent renews its lease only after it registered', p_node, p_node USING ERRCODE = '${LEASE_REFUSED}';
  END IF;
  IF started.appended_by IS DISTINCT FROM session_user THEN
    RAISE EXCEPTION 'the lease of % belongs to the role that recorded its agent start (%), not to %', p_node, coalesce(started.appended_by, 'unknown'), session_user USING ERRCODE = '${LEASE_REFUSED}';
  END IF;
  IF (started.agent->>'pid') IS DISTINCT FROM (p_holder->>'pid') OR (started.agent->>'startTime') IS DISTINCT FROM (p_holder->>'startTime') THEN
    RAISE EXCEPTION 'the log''s latest agent start on % is pid % (start time %), not the holder pid % (start time %)', p_node, started.agent->>'pid', started.agent->>'startTime', p_holder->>'pid', p_holder->>'startTime' USING ERRCODE = '${LEASE_REFUSED}';
  END IF;
  INSERT INTO ckpt_leases AS l (node, holder, renewed_at, expires_at, renewed_by)
  VALUES (p_node, p_holder, t, t + p_ttl_ms * interval '1 millisecond', session_user)
  ON CONFLICT (node) DO UPDATE SET holder = excluded.holder, renewed_at = excluded.renewed_at, expires_at = excluded.expires_at, renewed_by = excluded.renewed_by;
  RETURN QUERY SELECT t, t + p_ttl_ms * interval '1 millisecond';
END $$;
CREATE OR REPLACE FUNCTION ckpt_release_lease(p_node text) RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path FROM CURRENT AS $$
  DELETE FROM ckpt_leases WHERE node = p_node AND renewed_by = session_user;
$$;
REVOKE ALL ON FUNCTION ckpt_renew_lease(text, jsonb, bigint), ckpt_release_lease(text) FROM PUBLIC;
DO $$ BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ckpt_agents') THEN
    GRANT EXECUTE ON FUNCTION ckpt_renew_lease(text, jsonb, bigint), ckpt_release_lease(text) TO ckpt_agents;
    GRANT SELECT ON ckpt_leases TO ckpt_agents;
  END IF;
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ckpt_readers') THEN
    GRANT SELECT ON ckpt_leases TO ckpt_readers;
  END IF;
END $$;
`;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS ckpt_streams (
  name     text PRIMARY KEY,
  revision bigint NOT NULL,
  digest   text
);
CREATE TABLE IF NOT EXISTS ckpt_events (
  position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  txid           xid8 NOT NULL DEFAULT '0',
  stream         text NOT NULL,
  revision       bigint NOT NULL,
  id             uuid NOT NULL,
  type           text NOT NULL,
  schema_version int NOT NULL,
  data           jsonb NOT NULL,
  metadata       jsonb NOT NULL,
  digest         text,
  previous       text,
  appended_by    text,
  UNIQUE (stream, revision)
);
CREATE TABLE IF NOT EXISTS ckpt_meta (key text PRIMARY KEY, value text NOT NULL);
${APPEND_FUNCTION}
${SNAPSHOTS}
${LEASES}
INSERT INTO ckpt_schema (version) VALUES (${SCHEMA_VERSION});
`;

/**
 * Schema 3 → 4, one transaction (one multi-statement query): rows already written count as ended
 * (txid 0); the new ckpt_append records its transaction id. ALTER TABLE waits for appends in
 * flight; the column's constant default is not written into existing rows.
 */
const ORDER_BY_TXID = `
ALTER TABLE ckpt_events ADD COLUMN IF NOT EXISTS txid xid8 NOT NULL DEFAULT '0';
${APPEND_FUNCTION}
INSERT INTO ckpt_schema (version) VALUES (4);
`;

/**
 * Schema 1 → 2, in one transaction that holds the append lock: the rows written before the chain
 * get their digests now, once; ckpt_meta records up to which position the chain vouches for them
 * only from this migration on.
 */
const chainExistingRows = async (client: pg.PoolClient): Promise<void> => {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [APPEND_LOCK]);
    await client.query(`
      ALTER TABLE ckpt_streams ADD COLUMN IF NOT EXISTS digest text;
      ALTER TABLE ckpt_events ADD COLUMN IF NOT EXISTS digest text, ADD COLUMN IF NOT EXISTS previous text, ADD COLUMN IF NOT EXISTS appended_by text;
      CREATE TABLE IF NOT EXISTS ckpt_meta (key text PRIMARY KEY, value text NOT NULL);`);
    await client.query(APPEND_FUNCTION);
    const { rows: streams } = await client.query<{ name: string }>('SELECT name FROM ckpt_streams');
    for (const { name } of streams) {
      let digest = GENESIS;
      for (let from = 0; ; ) {
        const { rows } = await client.query<ChainedRow & { position: string; revision: string }>(
          `SELECT ${CHAIN_COLUMNS} FROM ckpt_events WHERE stream = $1 AND revision >= $2 ORDER BY revision LIMIT 1000`,
          [name, from],
        );
        if (rows.length === 0) break;
        const positions: string[] = [];
        const digests: string[] = [];
        const previous: string[] = [];
        for (const r of rows) {
          const content = contentDigest({ stream: name, id: r.id, type: r.type, schemaVersion: r.schemaVersion, data: JSON.parse(r.data), metadata: JSON.parse(r.metadata) });
          previous.push(digest);
          digest = chainDigest(digest, content, Number(r.revision));
          digests.push(digest);
          positions.push(r.position);
        }
        await client.query(
          'UPDATE ckpt_events e SET digest = u.digest, previous = u.previous FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(position, digest, previous) WHERE e.position = u.position',
          [positions, digests, previous],
        );
        from = Number(rows[rows.length - 1]!.revision) + 1;
      }
      await client.query('UPDATE ckpt_streams SET digest = $1 WHERE name = $2', [digest, name]);
    }
    await client.query("INSERT INTO ckpt_meta (key, value) SELECT 'chain_migrated_up_to', coalesce(max(position), 0)::text FROM ckpt_events UNION ALL SELECT 'chain_migrated_at', $1", [
      new Date().toISOString(),
    ]);
    await client.query('INSERT INTO ckpt_schema (version) VALUES (2)');
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  }
};
