// A throwaway PostgreSQL cluster for one test file: initdb into a temp dir, start on a free
// loopback port, one fresh database per `database()` call, stopped and removed by `stop()`.
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { Missing } from './prerequisites.js';

const binDir = (): string | undefined => {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base)
    .filter((v) => existsSync(join(base, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(base, versions[0], 'bin') : undefined;
};

export const needPostgres = (): Missing => (binDir() ? undefined : 'needs the PostgreSQL server (install: apt-get install -y postgresql)');

/** A TCP port nothing listens on now (asked of the kernel on loopback). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });

export interface PostgresCluster {
  readonly port: number;
  /** A URL to a new, empty database. */
  database(): Promise<string>;
  /** A superuser client on the `postgres` database (remember to end it). */
  admin(): Promise<pg.Client>;
  /** Stops the server (fast shutdown: clients are disconnected), keeping its data. */
  pause(): void;
  /** Starts it again on the same port. */
  resume(): void;
  stop(): Promise<void>;
}

/** `durable: true` keeps fsync on (benchmarks); tests run with fsync off for speed. */
export const startPostgres = async (options: { durable?: boolean } = {}): Promise<PostgresCluster> => {
  const bin = binDir();
  if (!bin) throw new Error(needPostgres());
  const dir = mkdtempSync(join(tmpdir(), 'ckpt-pg-'));
  const data = join(dir, 'data');
  const asRoot = process.getuid?.() === 0;
  // PostgreSQL refuses to run as root: run it as the postgres user, which owns the directory.
  const run = (tool: string, args: string[]) => execFileSync(asRoot ? 'runuser' : join(bin, tool), asRoot ? ['-u', 'postgres', '--', join(bin, tool), ...args] : args, { stdio: 'pipe' });
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString());
    chownSync(dir, uid, gid);
  }
  run('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync']);
  const port = await freePort();
  const start = () =>
    run('pg_ctl', ['-D', data, '-w', '-l', join(dir, 'log'), '-o', `-k ${dir} -p ${port} -c listen_addresses=127.0.0.1 -c fsync=${options.durable ? 'on' : 'off'} -c max_connections=200`, 'start']);
  start();
  const url = (db: string) => `postgres://postgres@127.0.0.1:${port}/${db}`;
  const admin = async () => {
    const client = new pg.Client({ connectionString: url('postgres') });
    await client.connect();
    return client;
  };
  let databases = 0;
  return {
    port,
    admin,
    async database() {
      const name = `t${++databases}`;
      const client = await admin();
      await client.query(`CREATE DATABASE ${name}`);
      await client.end();
      return url(name);
    },
    pause: () => run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']),
    resume: start,
    async stop() {
      try {
        run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
};
