import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { firstValueFrom, filter, timeout } from 'rxjs';
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
watched.after(() => rmSync(dir, { recursive: true, force: true }));

watched('a commit by another process reaches a follower through the WAL file’s writes alone (the backing poll set to an hour)', async () => {
  const path = join(dir, 'watched.db');
  const store = new SqliteEventStore(path, { pollMs: 3_600_000 });
  try {
    await store.append('s', [marker('ours')]);
    const theirs = firstValueFrom(store.subscribeStream('s').pipe(filter((e) => markerOf(e).startsWith('theirs')), timeout(30_000)));
    execFileSync(process.execPath, [WORKER, `sqlite:${path}`, 'exact', 's', '1', 'theirs']);
    assert.is(markerOf(await theirs), 'theirs 0');
  } finally {
    await store.close();
  }
});

watched.run();
