// Choosing the event store: `--store URL`, else CKPT_STORE, else the SQLite file in CKPT_HOME.
// Kept apart from open.ts so that naming a store does not load every store's implementation.
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

/** The password of a PostgreSQL URL comes from PGPASSWORD or a 0600 PGPASSFILE (~/.pgpass), never argv. */
export const STORE_URL_FORMS = 'sqlite:PATH, postgres://USER@HOST:PORT/DATABASE (password from PGPASSWORD or PGPASSFILE), kurrentdb://HOST:PORT[?tls=false][&prefix=NAME] (or esdb://…) or memory:';

export class StoreUrlError extends Error {
  override readonly name = 'StoreUrlError';
}

/** `$CKPT_HOME`, default `~/.ckpt`. */
export const ckptHome = (env: NodeJS.ProcessEnv = process.env): string => resolve(env.CKPT_HOME || join(homedir(), '.ckpt'));

export const storeUrl = (flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string => flag || env.CKPT_STORE || `sqlite:${join(ckptHome(env), 'events.db')}`;
