import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { filter, firstValueFrom, timeout } from 'rxjs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SqliteEventStore } from '../adapters/store/sqlite.js';
import { storeContract } from './store-contract.js';
import { marker, markerOf } from './support/events.js';

const dir = mkdtempSync(join(tmpdir(), 'ckpt-sqlite-'));
let n = 0;
const test = suite('sqlite store contract');
storeContract(test, { fresh: async () => `sqlite:${join(dir, `${++n}.db`)}`, shared: true });
test.run();

const WORKER = fileURLToPath(new URL('./support/store-worker.js', import.meta.url));
const watched = suite('sqlite store: noticing other processes’ commits');

watched('a commit by another process reaches a follower through the WAL file’s writes alone (the backing poll set to an hour)', async () => {
  const path = join(dir, 'watched.db');
  const store = new SqliteEventStore(path, { pollMs: 3_600_000 });
  try {
    await store.append('s', [marker('ours')]);
    const theirs = firstValueFrom(
      store.subscribeStream('s').pipe(
        filter((e) => markerOf(e).startsWith('theirs')),
        timeout(30_000),
      ),
    );
    execFileSync(process.execPath, [WORKER, `sqlite:${path}`, 'exact', 's', '1', 'theirs']);
    assert.is(markerOf(await theirs), 'theirs 0');
  } finally {
    await store.close();
  }
});

watched.run();

const leases = suite('sqlite store: schema 3 gains leases');
leases.after(() => rmSync(dir, { recursive: true, force: true }));
leases('a schema 3 log opened by this ckpt gets an empty lease table (schema 4) and keeps its events', async () => {
  const path = join(dir, 'schema3.db');
  const before = new SqliteEventStore(path);
  await before.append('node-n1', [{ type: 'NodeAgentStarted', data: { node: 'n1', agent: { pid: 7, startTime: 70 }, version: 'old' } }]);
  await before.close();
  const db = new Database(path);
  db.exec('DROP TABLE leases; PRAGMA user_version = 3;'); // as a ckpt before leases left it
  db.close();
  const after = new SqliteEventStore(path);
  try {
    assert.equal(await after.leases.list(), []);
    const lease = await after.leases.renew('n1', { pid: 7, startTime: 70, bootId: 'b', hostname: 'h' }, 60_000);
    assert.is(lease.expired, false);
    assert.equal(
      (await after.readAll()).map((e) => e.type),
      ['NodeAgentStarted'],
    );
  } finally {
    await after.close();
  }
  const check = new Database(path);
  assert.is(check.pragma('user_version', { simple: true }), 4);
  check.close();
});
leases.run();
