// Opening the event store a URL names (url.ts says which URL that is).
import { resolve } from 'node:path';
import type { EventStore } from '../../domain/event-store.js';
import type { AppendContext } from './batch.js';
import { KurrentEventStore } from './kurrentdb.js';
import { KURRENT_URL } from './kurrentdb-mapping.js';
import { MemoryEventStore } from './memory.js';
import { PostgresEventStore } from './postgres.js';
import { redactStoreUrl } from './redact.js';
import { SqliteEventStore } from './sqlite.js';
import { STORE_URL_FORMS, StoreUrlError } from './url.js';

export const openEventStore = (url: string, context?: AppendContext): EventStore => {
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) return new PostgresEventStore(url, { context });
  if (KURRENT_URL.test(url)) return new KurrentEventStore(url, { context });
  if (url === 'memory:') return new MemoryEventStore(context);
  if (url.startsWith('sqlite:')) {
    const [path = '', query = ''] = url
      .slice('sqlite:'.length)
      .replace(/^\/\/(?=\/)/, '')
      .split('?');
    if (!path) throw new StoreUrlError(`store URL "${url}" names no file: use sqlite:PATH, e.g. sqlite:/var/lib/ckpt/events.db`);
    const synchronous = new URLSearchParams(query).get('synchronous') ?? 'full';
    if (synchronous !== 'full' && synchronous !== 'normal') {
      throw new StoreUrlError(`store URL "${url}": synchronous must be full or normal, got "${synchronous}"`);
    }
    return new SqliteEventStore(resolve(path), { synchronous, context });
  }
  throw new StoreUrlError(`unknown store URL "${redactStoreUrl(url)}": use ${STORE_URL_FORMS}`);
};
