// Choosing the event store: `--store URL`, else CKPT_STORE, else the SQLite file in CKPT_HOME.
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { EventStore } from '../../domain/event-store.js';
import type { AppendContext } from './batch.js';
import { MemoryEventStore } from './memory.js';
import { PostgresEventStore } from './postgres.js';
import { redactStoreUrl } from './redact.js';
import { SqliteEventStore } from './sqlite.js';

/** The password of a PostgreSQL URL comes from PGPASSWORD or a 0600 PGPASSFILE (~/.pgpass), never argv. */
export const STORE_URL_FORMS = 'sqlite:PATH, postgres://USER@HOST:PORT/DATABASE (password from PGPASSWORD or PGPASSFILE) or memory:';

export class StoreUrlError extends Error {
  override readonly name = 'StoreUrlError';
}

/** `$CKPT_HOME`, default `~/.ckpt`. */
export const ckptHome = (env: NodeJS.ProcessEnv = process.env): string => resolve(env.CKPT_HOME || join(homedir(), '.ckpt'));

export const storeUrl = (flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string =>
  flag || env.CKPT_STORE || `sqlite:${join(ckptHome(env), 'events.db')}`;

export const openEventStore = (url: string, context?: AppendContext): EventStore => {
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) return new PostgresEventStore(url, { context });
  if (url === 'memory:') return new MemoryEventStore(context);
  if (url.startsWith('sqlite:')) {
    const [path = '', query = ''] = url.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '').split('?');
    if (!path) throw new StoreUrlError(`store URL "${url}" names no file: use sqlite:PATH, e.g. sqlite:/var/lib/ckpt/events.db`);
    const synchronous = new URLSearchParams(query).get('synchronous') ?? 'full';
    if (synchronous !== 'full' && synchronous !== 'normal') {
      throw new StoreUrlError(`store URL "${url}": synchronous must be full or normal, got "${synchronous}"`);
    }
    return new SqliteEventStore(resolve(path), { synchronous, context });
  }
  throw new StoreUrlError(`unknown store URL "${redactStoreUrl(url)}": use ${STORE_URL_FORMS}`);
};
