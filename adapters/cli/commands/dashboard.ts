import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { DashboardServer } from '../../http/dashboard-server.js';
import { type ListenAddress, listenOption, stringOption, UsageError } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { openStore } from '../store.js';

const DEFAULT_LISTEN: ListenAddress = { host: '127.0.0.1', port: 7070 };

const loopback = (host: string): boolean => (isIP(host) === 4 ? host.startsWith('127.') : host === '::1');

/** The token of --token-file: its first line, which must hold something. */
const tokenFrom = (file: string): string => {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new UsageError(`--token-file ${file} cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): give a file holding the token on its first line`);
  }
  const token = text.split('\n')[0]!.trim();
  if (token.length < 16) throw new UsageError(`--token-file ${file}: the token on its first line has ${token.length} characters; use at least 16 (e.g. openssl rand -base64 24 > ${file})`);
  return token;
};

export const dashboardCommand: Command = {
  usage: '[--listen [HOST:]PORT] [--token-file FILE]',
  description: [
    'Serves a live, read-only web page of the event log (default http://127.0.0.1:7070/): the jobs (filter',
    'by state, or only the failed ones); a job page with its membership tree (escaped and dependent members',
    'marked, with the reason), a time-travel slider over the log (what ckpt ps --at shows), the timeline',
    'of every checkpoint and restart with one lane per unit (each step from request to answer), bytes and',
    'durations over versions, the restart audit and the cause of each failed operation; and the nodes.',
    'The page follows the log through server-sent events and shows the log position it is at.',
    'Everything shown is a read model the CLI has (jobs, ps, checkpoints, stats, audit, explain, nodes).',
    'The JSON it reads is yours too: GET /api/jobs[?state=running|ended&failed=1], /api/jobs/JOB[?at=POS][&all=1],',
    '/api/jobs/JOB/operations (checkpoints, restarts with unit steps, stats rows), /api/jobs/JOB/audit,',
    '/api/jobs/JOB/explain?version=N|restart=N, /api/nodes, /api/head; /api/events streams changes',
    '(event "change": {position, recordedAt, jobs: {JOB: position}, nodes}). Only GET and HEAD are answered.',
    'It binds 127.0.0.1 unless told otherwise. Any other address needs a token: the first line of',
    '--token-file, else a random one printed at start; every request must then carry it (Authorization:',
    'Bearer TOKEN, or ?token=TOKEN: the printed URL has it). A loopback address with --token-file needs it too.',
    'Runs until interrupted (Ctrl-C, SIGTERM).',
  ].join('\n'),
  options: [
    { name: 'listen', value: '[HOST:]PORT', description: 'where to serve (HOST an IP address; default 127.0.0.1:7070); a non-loopback HOST needs a token' },
    { name: 'token-file', value: 'FILE', description: 'require the token on the first line of FILE (at least 16 characters) on every request' },
  ],
  examples: ['ckpt dashboard', 'ckpt dashboard --listen 8080', 'ckpt dashboard --listen 0.0.0.0:8080 --token-file /etc/ckpt/dashboard.token'],
  async run(args) {
    const address = listenOption(args, 'listen') ?? DEFAULT_LISTEN;
    const file = stringOption(args, 'token-file');
    const token = file !== undefined ? tokenFrom(file) : loopback(address.host) ? undefined : randomBytes(24).toString('base64url');
    const store = openStore(args);
    const server = new DashboardServer({ store, ...(token !== undefined && { token }), log: (line) => process.stderr.write(`${line}\n`) });
    try {
      await server.listen(address);
      await server.follow();
      const url = token === undefined ? server.url : `${server.url}?token=${encodeURIComponent(token)}`;
      process.stdout.write(`dashboard of ${store.location} on ${url}\n`);
      if (token !== undefined && file === undefined) process.stdout.write(`(a token was made for this run, since ${address.host} is not a loopback address; keep it: the URL above holds it)\n`);
      await new Promise<void>((resolve) => {
        for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(s, () => resolve());
      });
      return EXIT.ok;
    } finally {
      await server.stop();
      await store.close();
    }
  },
};
