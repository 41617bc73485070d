// The tamper-evident log and store access, on the real stores: rows changed, deleted or inserted
// behind the store's back (better-sqlite3 on the file, SQL on PostgreSQL) are named by `ckpt audit
// --verify` and `ckpt verify`; a corrupt row gives a clear error in every reading command and in the
// agent's start; SQLite files are 0600; PostgreSQL roles, passwords and their redaction.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import pg from 'pg';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { verifyChain } from '../adapters/store/chain.js';
import { openEventStore } from '../adapters/store/open.js';
import { redactStoreUrl } from '../adapters/store/redact.js';
import { CorruptEventError } from '../domain/event-store.js';
import { jobOn } from './support/coordinator.js';
import { forked, marker } from './support/events.js';
import { jobHarness } from './support/jobs.js';
import { needPostgres, type PostgresCluster, startPostgres } from './support/postgres.js';
import { firstMissing, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until } from './support/wait.js';

const CLI = fileURLToPath(new URL('../adapters/cli/main.js', import.meta.url));
const home = mkdtempSync(join(tmpdir(), 'ckpt-chain-'));
const ckpt = (args: string[], env: Record<string, string> = {}) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, CKPT_HOME: home, ...env }, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

/** A raw SQL door into a store, standing for whoever edits the database behind ckpt's back. */
interface Backend {
  readonly name: string;
  fresh(): Promise<string>;
  sql(url: string, text: string, params?: unknown[]): Promise<void>;
  /** SQL, per dialect, for the edits the tests make. */
  readonly edits: {
    alter: string; // (stream, revision): UnitLaunched.comm becomes "evil"
    remove: string; // (stream, revision)
    insertCopy: string; // (stream, revision to copy): a copy appended at head + 1, the head moved on
    wrongType: string; // (stream, revision): UnitLaunched.pgid becomes a string
  };
}

/** job-j as the coordinator tests build it, plus two other streams. Returns positions by revision of job-j. */
const seed = async (url: string): Promise<number[]> => {
  const store = openEventStore(url);
  try {
    await store.append('node-n1', [marker('n1 up')]);
    await store.append('job-j', jobOn(['n1']));
    await store.append('job-k', [forked(10), forked(11)]);
    await store.append('job-j', [marker('later')]);
    return (await store.readStream('job-j')).map((e) => e.position);
  } finally {
    await store.close();
  }
};

const chainLine = /log chain: (\d+) events in (\d+) streams intact/;

const chainSuite = (backend: Backend, setup: { before?: () => Promise<void>; after?: () => Promise<void> }, missing?: string) => {
  const test = suiteRequiring(`log chain on ${backend.name}`, missing);
  if (setup.before) test.before(setup.before);
  if (setup.after) test.after(setup.after);

  test('an untouched log: ckpt verify and ckpt audit --verify say the chain is intact', async () => {
    const url = await backend.fresh();
    await seed(url);
    const verify = ckpt(['verify', 'j', '--store', url]);
    assert.is(verify.code, 0, verify.err);
    assert.equal(chainLine.exec(verify.out)?.slice(1), ['11', '3']);
    const audit = ckpt(['audit', '--verify', '--store', url]);
    assert.is(audit.code, 0, audit.err);
    assert.match(audit.out, chainLine);
  });

  test('a changed row is named by its position, stream and revision', async () => {
    const url = await backend.fresh();
    const positions = await seed(url);
    await backend.sql(url, backend.edits.alter, ['job-j', 2]);
    for (const args of [
      ['audit', '--verify'],
      ['verify', 'j'],
    ]) {
      const r = ckpt([...args, '--store', url]);
      assert.is(r.code, 1, `${args.join(' ')} exits 1`);
      assert.match(r.err, `log chain broken: altered event at position ${positions[2]} (stream job-j, revision 2): its content no longer matches its digest`);
    }
  });

  test('a deleted row: the gap is named at the row after it; a deleted last row at the stream’s end', async () => {
    const url = await backend.fresh();
    const positions = await seed(url);
    await backend.sql(url, backend.edits.remove, ['job-j', 3]);
    let r = ckpt(['audit', '--verify', '--store', url]);
    assert.is(r.code, 1);
    assert.match(r.err, `log chain broken: missing event at position ${positions[4]} (stream job-j, revision 3): revision 3 is missing before this row (revision 4)`);
    const other = await backend.fresh();
    await seed(other);
    await backend.sql(other, backend.edits.remove, ['job-k', 1]);
    r = ckpt(['verify', 'j', '--store', other]);
    assert.is(r.code, 1);
    assert.match(r.err, 'log chain broken: missing stream job-k, revision 1: revision 1 is missing at the end of the stream (its head is revision 1)');
  });

  test('an inserted row (a copy appended with the stream’s head moved on) does not chain', async () => {
    const url = await backend.fresh();
    const positions = await seed(url);
    await backend.sql(url, backend.edits.insertCopy, ['job-j', 5]);
    const store = openEventStore(url);
    const head = await store.headPosition();
    await store.close();
    assert.ok(head > positions[positions.length - 1]!);
    const r = ckpt(['audit', '--verify', '--store', url]);
    assert.is(r.code, 1);
    assert.match(r.err, new RegExp(`log chain broken: inserted event at position ${head} \\(stream job-j, revision ${positions.length}\\): its previous digest [0-9a-f]{12}… does not chain`));
  });

  test('a row whose data field has the wrong type: every reading command names position and field, no stack trace', async () => {
    const url = await backend.fresh();
    const positions = await seed(url);
    await backend.sql(url, backend.edits.wrongType, ['job-j', 2]);
    const expected = `event at position ${positions[2]} (stream job-j, revision 2, type UnitLaunched): field data.pgid: expected integer ≥ 1, got "seven"`;
    for (const args of [['history', 'j'], ['jobs'], ['ps', 'j'], ['log']]) {
      const r = ckpt([...args, '--store', url]);
      assert.is(r.code, 1, `ckpt ${args.join(' ')}: exit 1`);
      assert.match(r.err, `ckpt ${args[0]}: ${expected}`);
      assert.not.match(r.err, /\n\s+at /, 'no stack trace');
    }
    const audit = ckpt(['audit', '--verify', '--store', url]);
    assert.is(audit.code, 1);
    assert.match(audit.err, `altered event at position ${positions[2]}`);
  });
  return test;
};

// ── SQLite ─────────────────────────────────────────────────────────────────────────────────────

let sqliteFiles = 0;
const sqlitePath = (url: string) => url.slice('sqlite:'.length);
const sqlite: Backend = {
  name: 'SQLite',
  fresh: async () => `sqlite:${join(home, `log-${++sqliteFiles}.db`)}`,
  async sql(url, text, params = []) {
    const db = new Database(sqlitePath(url));
    try {
      db.transaction(() => {
        for (const statement of text
          .split(';')
          .map((s) => s.trim())
          .filter(Boolean)) {
          const prepared = db.prepare(statement);
          const wanted = (statement.match(/\?/g) ?? []).length;
          prepared.run(...params.slice(0, wanted));
        }
      })();
    } finally {
      db.close();
    }
  },
  edits: {
    alter: `UPDATE events SET data = json_set(data, '$.comm', 'evil') WHERE stream_id = (SELECT id FROM streams WHERE name = ?) AND revision = ?`,
    remove: 'DELETE FROM events WHERE stream_id = (SELECT id FROM streams WHERE name = ?) AND revision = ?',
    insertCopy: `INSERT INTO events (stream_id, revision, id, type, schema_version, data, metadata, digest, previous)
      SELECT e.stream_id, s.revision + 1, e.id, e.type, e.schema_version, e.data, e.metadata, e.digest, e.previous
      FROM events e JOIN streams s ON s.id = e.stream_id WHERE s.name = ? AND e.revision = ?;
      UPDATE streams SET revision = revision + 1 WHERE name = ?`,
    wrongType: `UPDATE events SET data = json_set(data, '$.pgid', 'seven') WHERE stream_id = (SELECT id FROM streams WHERE name = ?) AND revision = ?`,
  },
};
// The SQLite UPDATE of streams takes the stream name again.
const sqliteInsert = sqlite.sql;
sqlite.sql = (url, text, params = []) => sqliteInsert(url, text, text === sqlite.edits.insertCopy ? [...params, params[0]] : params);
chainSuite(sqlite, {}).run();

const sqliteOnly = suite('SQLite: bad JSON, the migration of an old log, file modes');

sqliteOnly('a row that is not JSON: named by position and field in history, jobs and the agent’s start (no orphan agent)', async () => {
  const url = await sqlite.fresh();
  const positions = await seed(url);
  await sqlite.sql(url, 'UPDATE events SET data = \'{"unit": \' WHERE stream_id = (SELECT id FROM streams WHERE name = ?) AND revision = ?', ['job-j', 1]);
  const expected = `event at position ${positions[1]} (stream job-j, revision 1, type UnitAssigned): field data: expected JSON, got text that does not parse`;
  for (const args of [['history', 'j'], ['jobs']]) {
    const r = ckpt([...args, '--store', url]);
    assert.is(r.code, 1);
    assert.match(r.err, expected);
    assert.not.match(r.err, /position \d+ in JSON|Unexpected end|\n\s+at /);
  }
  const store = openEventStore(url);
  try {
    await store.readStream('job-j');
    assert.unreachable('a corrupt row must not read');
  } catch (error) {
    assert.instance(error, CorruptEventError);
    assert.is((error as CorruptEventError).position, positions[1]);
  } finally {
    await store.close();
  }
  if (process.getuid?.() !== 0) return console.log('  (agent start skipped: needs root)');
  const node = `chainbad${process.pid}`;
  const r = ckpt(['agent', 'start', '--node', node, '--store', url]);
  assert.is(r.code, 1, r.out);
  assert.match(r.err, 'did not start (it exited with status 1)');
  assert.match(r.err, expected);
  const agents = readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').includes(node);
      } catch {
        return false;
      }
    });
  assert.equal(agents, [], 'no agent process left behind');
});

sqliteOnly('a log written before the chain is chained once by the migration, which the check reports', async () => {
  const path = join(home, 'old.db');
  const db = new Database(path);
  // Schema 1, as ckpt wrote it before the chain.
  db.exec(`
    CREATE TABLE streams (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, revision INTEGER NOT NULL);
    CREATE TABLE events (position INTEGER PRIMARY KEY, stream_id INTEGER NOT NULL REFERENCES streams (id), revision INTEGER NOT NULL,
      id TEXT NOT NULL, type TEXT NOT NULL, schema_version INTEGER NOT NULL, data TEXT NOT NULL, metadata TEXT NOT NULL);
    CREATE UNIQUE INDEX events_stream_revision ON events (stream_id, revision);
    INSERT INTO streams VALUES (1, 'job-old', 1), (2, 'node-n1', 0);
    INSERT INTO events VALUES
      (1, 1, 0, '00000000-0000-4000-8000-000000000001', 'DeadlineScheduled', 1, '{"deadline":"a","at":"2026-01-01T00:00:00.000Z","purpose":"p"}', '{"actor":{"kind":"user","uid":0},"recordedAt":"2026-01-01T00:00:00.000Z"}'),
      (2, 2, 0, '00000000-0000-4000-8000-000000000002', 'DeadlineScheduled', 1, '{"deadline":"b","at":"2026-01-01T00:00:00.000Z","purpose":"p"}', '{"actor":{"kind":"user","uid":0},"recordedAt":"2026-01-01T00:00:00.000Z"}'),
      (3, 1, 1, '00000000-0000-4000-8000-000000000003', 'DeadlineScheduled', 1, '{"deadline":"c","at":"2026-01-01T00:00:00.000Z","purpose":"p"}', '{"actor":{"kind":"user","uid":0},"recordedAt":"2026-01-01T00:00:00.000Z"}');
    PRAGMA user_version = 1;`);
  db.close();
  const store = openEventStore(`sqlite:${path}`);
  await store.append('job-old', [marker('d')]);
  const report = await verifyChain(store);
  await store.close();
  assert.equal([report.events, report.streams, report.problem, report.chainedByMigration?.upTo], [4, 2, undefined, 3]);
  const r = ckpt(['audit', '--verify', '--store', `sqlite:${path}`]);
  assert.is(r.code, 0, r.err);
  assert.match(r.out, /log chain: 4 events in 2 streams intact \(events up to position 3 were written before the chain and chained by the migration of \S+: they are vouched for only from then on\)/);
});

sqliteOnly('appends while the chain is checked are not taken for inserted rows (the head is read again)', async () => {
  const path = join(home, 'concurrent', 'events.db');
  mkdirSync(dirname(path), { recursive: true });
  const store = openEventStore(`sqlite:${path}`);
  try {
    for (let i = 0; i < 3; i++)
      await store.append(
        'job-busy',
        Array.from({ length: 1500 }, (_, j) => marker(`${i}-${j}`)),
      );
    // A writer appends between the check's pages (each page is a separate read, as in a live log).
    let writing = true;
    let appended = 0;
    const writer = (async () => {
      while (writing) {
        await store.append('job-busy', [marker(`w${appended}`)]);
        appended++;
        await new Promise((r) => setImmediate(r));
      }
    })();
    const report = await verifyChain(store);
    writing = false;
    await writer;
    assert.ok(appended > 0, 'the writer ran during the check');
    assert.is(report.problem, undefined, JSON.stringify(report.problem));
    assert.ok(report.events >= 4500);
  } finally {
    await store.close();
  }
});

sqliteOnly('the database, -wal and -shm files are created 0600 whatever the umask', async () => {
  const old = process.umask(0);
  try {
    const path = join(home, 'modes', 'events.db');
    const store = openEventStore(`sqlite:${path}`);
    await store.append('job-m', [marker('m')]);
    for (const file of [path, `${path}-wal`, `${path}-shm`]) {
      assert.ok(existsSync(file), `${file} exists while the store is open`);
      assert.is((statSync(file).mode & 0o777).toString(8), '600', file);
    }
    await store.close();
  } finally {
    process.umask(old);
  }
});

sqliteOnly.run();

// ── PostgreSQL ─────────────────────────────────────────────────────────────────────────────────

let cluster: PostgresCluster;
const postgres: Backend = {
  name: 'PostgreSQL',
  fresh: () => cluster.database(),
  async sql(url, text, params = []) {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      await client.query('BEGIN');
      for (const statement of text
        .split(';')
        .map((s) => s.trim())
        .filter(Boolean)) {
        const wanted = new Set(statement.match(/\$\d/g) ?? []).size;
        await client.query(statement, params.slice(0, wanted));
      }
      await client.query('COMMIT');
    } finally {
      await client.end();
    }
  },
  edits: {
    alter: `UPDATE ckpt_events SET data = jsonb_set(data, '{comm}', '"evil"') WHERE stream = $1 AND revision = $2`,
    remove: 'DELETE FROM ckpt_events WHERE stream = $1 AND revision = $2',
    insertCopy: `INSERT INTO ckpt_events (stream, revision, id, type, schema_version, data, metadata, digest, previous)
      SELECT e.stream, s.revision + 1, e.id, e.type, e.schema_version, e.data, e.metadata, e.digest, e.previous
      FROM ckpt_events e JOIN ckpt_streams s ON s.name = e.stream WHERE e.stream = $1 AND e.revision = $2;
      UPDATE ckpt_streams SET revision = revision + 1 WHERE name = $1`,
    wrongType: `UPDATE ckpt_events SET data = jsonb_set(data, '{pgid}', '"seven"') WHERE stream = $1 AND revision = $2`,
  },
};
const pgSetup = {
  before: async () => {
    cluster = await startPostgres();
  },
  after: async () => {
    await cluster?.stop();
  },
};
chainSuite(postgres, pgSetup, needPostgres()).run();

/** The roles README.md tells an admin to create (PostgreSQL setup). */
const ROLES = (password: string) => `
  CREATE ROLE ckpt_agents NOLOGIN;
  CREATE ROLE ckpt_readers NOLOGIN;
  CREATE ROLE ckpt_agent_n1 LOGIN PASSWORD '${password}' IN ROLE ckpt_agents;
  CREATE ROLE alice LOGIN PASSWORD '${password}' IN ROLE ckpt_readers;`;

const access = suiteRequiring('PostgreSQL: agent roles, passwords never shown', needPostgres());
access.before(async () => {
  cluster = await startPostgres();
  // Passwords are checked for every role but the admin (the test cluster trusts everyone by default).
  const admin = await cluster.admin();
  const hba = (await admin.query<{ hba_file: string }>('SHOW hba_file')).rows[0]!.hba_file;
  await admin.query(`COPY (SELECT unnest(ARRAY['local all all trust', 'host all postgres 127.0.0.1/32 trust', 'host all all 127.0.0.1/32 scram-sha-256'])) TO '${hba}'`);
  await admin.query('SELECT pg_reload_conf()');
  await admin.query(ROLES('s3cret-pw'));
  await admin.end();
});
access.after(async () => {
  await cluster?.stop();
  rmSync(home, { recursive: true, force: true });
});

const as = (url: string, role: string, password?: string) => url.replace('postgres://postgres@', `postgres://${role}${password ? `:${password}` : ''}@`);

access('only an agent role can append; the append records the role; a reader reads', async () => {
  const url = await cluster.database();
  await seed(url); // the owner creates the schema; the roles exist, so the migration grants them
  const agent = openEventStore(as(url, 'ckpt_agent_n1', 's3cret-pw'));
  const reader = openEventStore(as(url, 'alice', 's3cret-pw'));
  try {
    await agent.append('job-j', [marker('by the agent')]);
    assert.is((await reader.readStream('job-j', { direction: 'backwards', limit: 1 }))[0]!.type, 'DeadlineScheduled');
    try {
      await reader.append('job-j', [marker('by a reader')]);
      assert.unreachable('a reader must not append');
    } catch (error) {
      assert.match((error as Error).message, 'permission denied for function ckpt_append');
    }
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    const { rows } = await admin.query<{ appended_by: string; n: string }>('SELECT appended_by, count(*) AS n FROM ckpt_events GROUP BY appended_by ORDER BY appended_by');
    await admin.end();
    assert.equal(
      rows.map((r) => [r.appended_by, Number(r.n)]),
      [
        ['ckpt_agent_n1', 1],
        ['postgres', 11],
      ],
    );
    try {
      await reader.chain.rows('job-j', 0, 1); // reading is allowed…
      const client = new pg.Client({ connectionString: as(url, 'alice', 's3cret-pw') });
      await client.connect();
      try {
        await client.query("INSERT INTO ckpt_streams (name, revision) VALUES ('x', 0)"); // …writing the tables is not
        assert.unreachable('a reader must not write the tables');
      } catch (error) {
        assert.match((error as Error).message, 'permission denied for table ckpt_streams');
      } finally {
        await client.end();
      }
    } finally {
      /* nothing */
    }
  } finally {
    await Promise.all([agent.close(), reader.close()]);
  }
});

access('the password comes from PGPASSWORD or a 0600 PGPASSFILE; a wrong one is refused without showing it', async () => {
  const url = await cluster.database();
  await seed(url);
  const agentUrl = as(url, 'ckpt_agent_n1');
  assert.is(ckpt(['jobs', '--store', agentUrl], { PGPASSWORD: 's3cret-pw' }).code, 0);
  const passfile = join(home, 'pgpass');
  writeFileSync(passfile, `127.0.0.1:${cluster.port}:*:ckpt_agent_n1:s3cret-pw\n`);
  chmodSync(passfile, 0o600);
  const viaFile = ckpt(['jobs', '--store', agentUrl], { PGPASSFILE: passfile });
  assert.is(viaFile.code, 0, viaFile.err);
  const wrong = ckpt(['jobs', '--store', as(url, 'ckpt_agent_n1', 'wrong-pw')]);
  assert.is(wrong.code, 1);
  assert.match(wrong.err, 'password authentication failed for user "ckpt_agent_n1"');
  assert.not.match(wrong.err, 'wrong-pw');
  assert.is(redactStoreUrl('postgres://a:b@h:5/d?password=c&x=1'), 'postgres://a:***@h:5/d?password=***&x=1');
  assert.is(redactStoreUrl('postgres://a@h/d'), 'postgres://a@h/d');
});

const agentAccess = suiteRequiring('PostgreSQL: a node agent with a password shows it nowhere', firstMissing(needPostgres, needRoot));
agentAccess.before(pgSetup.before);
agentAccess.after(pgSetup.after);

agentAccess('ps -eo args, the pid file and ckpt agent status show no password', async () => {
  const admin = await cluster.admin();
  const hba = (await admin.query<{ hba_file: string }>('SHOW hba_file')).rows[0]!.hba_file;
  await admin.query(`COPY (SELECT unnest(ARRAY['local all all trust', 'host all postgres 127.0.0.1/32 trust', 'host all all 127.0.0.1/32 scram-sha-256'])) TO '${hba}'`);
  await admin.query('SELECT pg_reload_conf()');
  await admin.query(ROLES('agent-pw-4711'));
  await admin.end();
  const url = await cluster.database();
  await seed(url);
  const withPassword = as(url, 'ckpt_agent_n1', 'agent-pw-4711');
  const node = `chainpw${process.pid}`;
  const agentHome = mkdtempSync(join(tmpdir(), 'ckpt-chain-agent-'));
  const run = (args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, ...args, '--node', node, '--store', withPassword], { env: { ...process.env, CKPT_HOME: agentHome }, encoding: 'utf8', timeout: 60_000 });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  try {
    const started = run(['agent', 'start']);
    assert.is(started.code, 0, started.err);
    assert.not.match(started.out, 'agent-pw-4711');
    assert.match(started.out, 'postgres://ckpt_agent_n1:***@');
    const ps = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout;
    assert.match(ps, node, 'the agent runs');
    assert.not.match(ps, 'agent-pw-4711');
    const dir = join(agentHome, 'agent');
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
      assert.not.match(readFileSync(join(dir, file), 'utf8'), 'agent-pw-4711');
      assert.is((statSync(join(dir, file)).mode & 0o777).toString(8), '600');
      assert.not.match(file, 'agent-pw-4711');
    }
    const status = run(['agent', 'status', '--json']);
    assert.is(status.code, 0, status.err);
    assert.is(JSON.parse(status.out).store, redactStoreUrl(withPassword));
    assert.not.match(run(['agent', 'status']).out, 'agent-pw-4711');
  } finally {
    run(['agent', 'stop']);
    rmSync(agentHome, { recursive: true, force: true });
  }
});

access('a PostgreSQL log written before the chain is chained once by the migration', async () => {
  const url = await cluster.database();
  const old = new pg.Client({ connectionString: url });
  await old.connect();
  // Schema 1's tables, as ckpt created them before the chain.
  await old.query(`
    CREATE TABLE ckpt_schema (version int NOT NULL);
    CREATE TABLE ckpt_streams (name text PRIMARY KEY, revision bigint NOT NULL);
    CREATE TABLE ckpt_events (position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, stream text NOT NULL, revision bigint NOT NULL,
      id uuid NOT NULL, type text NOT NULL, schema_version int NOT NULL, data jsonb NOT NULL, metadata jsonb NOT NULL, UNIQUE (stream, revision));
    INSERT INTO ckpt_schema VALUES (1);
    INSERT INTO ckpt_streams VALUES ('job-old', 1), ('node-n1', 0);
    INSERT INTO ckpt_events (stream, revision, id, type, schema_version, data, metadata) VALUES
      ('job-old', 0, '00000000-0000-4000-8000-000000000001', 'DeadlineScheduled', 1, '{"deadline":"a","at":"2026-01-01T00:00:00.000Z","purpose":"p"}', '{"actor":{"kind":"user","uid":0},"recordedAt":"2026-01-01T00:00:00.000Z"}'),
      ('node-n1', 0, '00000000-0000-4000-8000-000000000002', 'DeadlineScheduled', 1, '{"deadline":"b","at":"2026-01-01T00:00:00.000Z","purpose":"p"}', '{"actor":{"kind":"user","uid":0},"recordedAt":"2026-01-01T00:00:00.000Z"}'),
      ('job-old', 1, '00000000-0000-4000-8000-000000000003', 'DeadlineScheduled', 1, '{"deadline":"c","at":"2026-01-01T00:00:00.000Z","purpose":"p"}', '{"actor":{"kind":"user","uid":0},"recordedAt":"2026-01-01T00:00:00.000Z"}');`);
  await old.end();
  const store = openEventStore(url);
  await store.append('job-old', [marker('d')]);
  const report = await verifyChain(store);
  await store.close();
  assert.equal([report.events, report.streams, report.problem, report.chainedByMigration?.upTo], [4, 2, undefined, 3]);
  await postgres.sql(url, postgres.edits.alter.replace("'{comm}'", "'{deadline}'"), ['job-old', 0]);
  const r = ckpt(['audit', '--verify', '--store', url]);
  assert.is(r.code, 1);
  assert.match(r.err, 'log chain broken: altered event at position 1 (stream job-old, revision 0): its content no longer matches its digest (events up to position 3 were written before the chain');
});

// ── a manifest against the digest the log recorded at commit ─────────────────────────────────────

const images = suiteRequiring(
  'audit --verify: a version’s manifest is checked against the SHA-256 the log recorded (real CRIU)',
  firstMissing(needRoot, () => (locateCriu() ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)')),
);
const jobs = jobHarness('ckpt-chain-manifest', 'chainnode');
images.after(() => jobs.cleanup());

images('a manifest rewritten consistently (its files still match it) is caught by the digest in CheckpointCommitted', async () => {
  const started = jobs.ckpt(['run', '--detach', '--job', 'mf', '--', 'sh', '-c', 'exec sleep 1000']);
  assert.is(started.code, 0, started.err);
  await until('the job runs', () => jobs.running('mf').length > 0, 30_000, 20);
  const checkpoint = jobs.ckpt(['checkpoint', 'mf', '--wait']);
  assert.is(checkpoint.code, 0, checkpoint.err);
  let audit = jobs.ckpt(['audit', 'mf', '--verify']);
  assert.is(audit.code, 0, audit.err);
  assert.match(audit.out, 'images of v1: ok');
  const manifest = join(jobs.h.home, 'images', 'mf', 'v1', 'manifest.json');
  const edited = { ...JSON.parse(readFileSync(manifest, 'utf8')), createdAt: '2020-01-01T00:00:00.000Z' };
  writeFileSync(manifest, `${JSON.stringify(edited, null, 2)}\n`);
  audit = jobs.ckpt(['audit', 'mf', '--verify']);
  assert.is(audit.code, 1, 'a manifest that differs from the log fails --verify');
  assert.match(audit.out, /images of v1: damaged — [\s\S]*manifest\.json: SHA-256/);
  jobs.killAll('mf');
});

images.run();
agentAccess.run();
access.run();
