// `ckpt dashboard`: a read-only HTTP server of the log's read models (dashboard-api.ts) and one
// page of plain HTML/CSS/JS (page/), live through server-sent events fed by the log's
// subscription. node:http is enough for a dozen GET routes and an event stream: a framework would
// add dependencies and nothing this needs. Only GET and HEAD are answered; when a token is set,
// every API request must carry it (Authorization: Bearer, or ?token= for the EventSource).
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';
import type { Subscription } from 'rxjs';
import { NAME_PATTERN } from '../../domain/codecs.js';
import type { EventStore, RecordedEvent } from '../../domain/event-store.js';
import type { Operation } from '../../projections/explain.js';
import type { ListenAddress } from '../cli/args.js';
import { auditView, explainView, jobsView, jobView, nodesView, operationsView } from './dashboard-api.js';
import { hostPort, listenOn } from './listen.js';

/** The page's files, served from the package (no build step, nothing from elsewhere). */
const PAGE_DIR = fileURLToPath(new URL('../../../adapters/http/page/', import.meta.url));
const PAGE: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

/** Every answer: nothing from elsewhere may run or load, the page cannot be framed, the token is never sent on. */
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

const RETRY_MS = 1000;
const PING_MS = 15_000;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * JSON that is inert anywhere it lands: `<`, `>` and `&` escaped (a command line holding
 * `</script>` stays text even if a body were ever read as HTML), and the line separators JS rejects.
 */
export const inertJson = (value: unknown): string => JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

const digest = (text: string) => createHash('sha256').update(text).digest();

/** What the page is told of a change: the log position now, and the jobs whose streams moved (by their last position). */
export interface Change {
  readonly position: number;
  readonly recordedAt: string;
  readonly jobs: Readonly<Record<string, number>>;
  readonly nodes: boolean;
}

export interface DashboardOptions {
  readonly store: EventStore;
  /** Required on every request when set. */
  readonly token?: string;
  readonly log: (line: string) => void;
}

export class DashboardServer {
  readonly #o: DashboardOptions;
  readonly #token: Buffer | undefined;
  readonly #page = new Map<string, { body: Buffer; type: string }>();
  readonly #clients = new Set<ServerResponse>();
  #server: Server | undefined;
  #subscription: Subscription | undefined;
  #position = 0;
  #pending: { position: number; recordedAt: string; jobs: Record<string, number>; nodes: boolean } | undefined;
  #ping: NodeJS.Timeout | undefined;
  #stopped = false;
  url: string | undefined;

  constructor(options: DashboardOptions) {
    this.#o = options;
    this.#token = options.token === undefined ? undefined : digest(options.token);
    for (const [path, { file, type }] of Object.entries(PAGE)) this.#page.set(path, { body: readFileSync(PAGE_DIR + file), type });
  }

  async listen(address: ListenAddress): Promise<void> {
    const server = createServer((request, response) => void this.#answer(request, response));
    await listenOn(server, address, 'the dashboard', '--listen');
    this.#server = server;
    const bound = server.address();
    this.url = `http://${hostPort({ host: address.host, port: typeof bound === 'object' && bound ? bound.port : address.port })}/`;
  }

  /** Follows the log from its head: each page of new events becomes one change sent to every open page. */
  async follow(): Promise<void> {
    this.#position = await this.#o.store.headPosition();
    this.#subscribe();
    this.#ping = setInterval(() => this.#send(': ping\n\n'), PING_MS);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#subscription?.unsubscribe();
    clearInterval(this.#ping);
    for (const client of this.#clients) client.end();
    await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
  }

  #subscribe() {
    this.#subscription = this.#o.store.subscribeAll({ from: this.#position + 1 }).subscribe({
      next: (e) => this.#changed(e),
      error: (error: Error) => {
        this.#o.log(`the dashboard lost the event store (${error.message}); following it again in ${RETRY_MS} ms`);
        setTimeout(() => this.#stopped || this.#subscribe(), RETRY_MS);
      },
    });
  }

  /** Events delivered together (one page of the log) are sent as one change, right after that page. */
  #changed(e: RecordedEvent) {
    this.#position = e.position;
    if (!this.#pending) {
      this.#pending = { position: e.position, recordedAt: e.metadata.recordedAt, jobs: {}, nodes: false };
      setImmediate(() => this.#flush());
    }
    const p = this.#pending;
    p.position = e.position;
    p.recordedAt = e.metadata.recordedAt;
    if (e.stream.startsWith('job-')) p.jobs[e.stream.slice(4)] = e.position;
    else p.nodes = true;
  }

  #flush() {
    const change: Change | undefined = this.#pending;
    this.#pending = undefined;
    if (change) this.#send(`event: change\ndata: ${inertJson(change)}\n\n`);
  }

  #send(text: string) {
    for (const client of this.#clients) client.write(text);
  }

  #authorized(request: IncomingMessage, url: URL): boolean {
    if (!this.#token) return true;
    const header = request.headers.authorization;
    const given = header?.startsWith('Bearer ') ? header.slice(7) : url.searchParams.get('token');
    // Compared as digests: equal lengths, and the time taken says nothing of the token.
    return given !== null && timingSafeEqual(digest(given), this.#token);
  }

  async #answer(request: IncomingMessage, response: ServerResponse) {
    const started = process.hrtime.bigint();
    const head = request.method === 'HEAD';
    const send = (status: number, type: string, body: string | Buffer, extra: Record<string, string> = {}) => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      response.writeHead(status, { ...SECURITY_HEADERS, 'content-type': type, 'server-timing': `read;dur=${ms.toFixed(1)}`, ...extra }).end(head ? undefined : body);
    };
    const fail = (status: number, message: string, extra: Record<string, string> = {}) => send(status, 'application/json; charset=utf-8', inertJson({ error: message }) + '\n', extra);
    try {
      const url = new URL(request.url ?? '/', 'http://dashboard');
      if (request.method !== 'GET' && !head) return fail(405, `the dashboard is read-only: ${request.method} is not answered, only GET and HEAD`, { allow: 'GET, HEAD' });
      // The page's own files hold no data: they load without the token, the API needs it.
      const page = this.#page.get(url.pathname);
      if (page) return send(200, page.type, page.body);
      if (!this.#authorized(request, url)) {
        return fail(401, 'this dashboard needs its token: open the URL `ckpt dashboard` printed (…/?token=TOKEN), or send Authorization: Bearer TOKEN', { 'www-authenticate': 'Bearer' });
      }
      if (url.pathname === '/api/events') return this.#events(request, response);
      const body = await this.#route(url);
      if (body === undefined) return fail(404, `nothing at ${url.pathname}: the API is /api/jobs, /api/jobs/JOB[/operations|/audit|/explain], /api/nodes, /api/head, /api/events`);
      send(200, 'application/json; charset=utf-8', inertJson(body) + '\n');
    } catch (error) {
      if (error instanceof HttpError) return fail(error.status, error.message);
      this.#o.log(`dashboard: ${request.url}: ${(error as Error).stack ?? error}`);
      fail(500, `could not read the log: ${(error as Error).message}`);
    }
  }

  /** The JSON of a route, or undefined when there is none (404). */
  async #route(url: URL): Promise<unknown> {
    const { store } = this.#o;
    const q = url.searchParams;
    if (url.pathname === '/api/head') return { position: await store.headPosition() };
    if (url.pathname === '/api/nodes') return nodesView(store);
    if (url.pathname === '/api/jobs') {
      const state = q.get('state') ?? undefined;
      return jobsView(store, { ...(state && { state }), failed: q.get('failed') === '1' || q.get('failed') === 'true' });
    }
    const m = /^\/api\/jobs\/([^/]+)(?:\/(operations|audit|explain))?$/.exec(url.pathname);
    if (!m) return undefined;
    const job = decoded(m[1]!);
    if (!NAME_PATTERN.test(job)) throw new HttpError(400, `"${job}" is not a job name (letters, digits, '.', '_', '-'; ckpt jobs --all lists them)`);
    const found =
      m[2] === 'operations'
        ? await operationsView(store, job)
        : m[2] === 'audit'
          ? await auditView(store, job)
          : m[2] === 'explain'
            ? await explainView(store, job, operationOf(q))
            : await jobView(store, job, { ...(q.has('at') && { at: count(q, 'at') }), all: q.get('all') === '1' });
    if (found === undefined) throw new HttpError(404, `no job "${job}"${q.has('at') ? ` at position ${q.get('at')}` : ''} (ckpt jobs --all lists them)`);
    return found;
  }

  /** Server-sent events: the position now, then each change. */
  #events(request: IncomingMessage, response: ServerResponse) {
    response.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/event-stream; charset=utf-8', connection: 'keep-alive' });
    if (request.method === 'HEAD') return void response.end();
    response.write(`retry: ${RETRY_MS}\nevent: position\ndata: ${inertJson({ position: this.#position })}\n\n`);
    this.#clients.add(response);
    request.on('close', () => this.#clients.delete(response));
  }
}

const decoded = (segment: string): string => {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, `"${segment}" is not a valid URL path segment (a '%' must start an escape such as %2F)`);
  }
};

const count = (q: URLSearchParams, name: string): number => {
  const n = Number(q.get(name));
  if (!Number.isSafeInteger(n) || n < 1) throw new HttpError(400, `?${name}= needs a whole number ≥ 1, got "${q.get(name)}"`);
  return n;
};

const operationOf = (q: URLSearchParams): Operation => {
  if (q.has('version') === q.has('restart')) throw new HttpError(400, 'name one operation: ?version=N (a checkpoint) or ?restart=N (a restart)');
  return q.has('version') ? { kind: 'checkpoint', version: count(q, 'version') } : { kind: 'restart', restart: count(q, 'restart') };
};
