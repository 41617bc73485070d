// The CLI's side of the node agent's request gateway (adapters/agent/request-gateway.ts): the
// EventStore port over the agent's socket. Every append is a request the agent records as the
// caller (the kernel says who that is); reads go to the store directly when the caller may open
// it (root), else through the agent, which shows a user only their own jobs and the node streams.
import { connect, type Socket } from 'node:net';
import {
  type AppendResult,
  type ChainedLog,
  type EventStore,
  type ExpectedRevision,
  type Lease,
  LeaseRefusedError,
  type LeaseStore,
  type Position,
  type ProposedEvent,
  type ReadAllOptions,
  type ReadStreamOptions,
  type RecordedEvent,
  type RemoteModelRead,
  type RemoteReadModels,
  type Revision,
  type SubscribeOptions,
  WrongExpectedRevisionError,
} from '../../domain/event-store.js';
import { InvalidEventError } from '../../domain/events/decode.js';
import { Observable } from '../../domain/rx.js';
import { agentSocket, startAgent, storeSockets } from '../agent/daemon.js';
import { ckptHome } from '../store/url.js';

/** What the agent refused (not the owner, not a request a client may make, …): its message says why. */
export class RequestRefusedError extends Error {
  override readonly name = 'RequestRefusedError';
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

export class NoAgentError extends Error {
  override readonly name = 'NoAgentError';
}

type Reply = { id: number | null; ok?: boolean; result?: unknown; error?: Record<string, unknown>; event?: RecordedEvent; caughtUp?: boolean };

/** One connection to an agent: requests answered in order, lines of JSON each way. */
export class AgentConnection {
  readonly #socket: Socket;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #next = 1;
  #closed: Error | undefined;
  /** Lines of a subscription (they carry its id but no `ok`). */
  onStreamed?: (reply: Reply) => void;

  private constructor(
    socket: Socket,
    readonly path: string,
  ) {
    this.#socket = socket;
    // A reply may be large (a read model): only each new chunk is searched for the line's end.
    let parts: string[] = [];
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      for (let start = 0; ; ) {
        const newline = chunk.indexOf('\n', start);
        if (newline === -1) {
          if (start < chunk.length) parts.push(chunk.slice(start));
          return;
        }
        parts.push(chunk.slice(start, newline));
        start = newline + 1;
        const reply = JSON.parse(parts.join('')) as Reply;
        parts = [];
        if (reply.ok === undefined) this.onStreamed?.(reply);
        else this.#settle(reply);
      }
    });
    socket.on('error', (error) => this.#fail(new Error(`the node agent's connection (${path}) failed: ${error.message}`)));
    socket.on('close', () => this.#fail(new Error(`the node agent closed the connection (${path}): it may have stopped (ckpt agent status)`)));
  }

  static open(path: string): Promise<AgentConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new AgentConnection(socket, path));
      });
      socket.once('error', reject);
    });
  }

  /** Sends one request; resolves with its result, rejects with the agent's error as the same class. */
  request(op: string, body: Record<string, unknown> = {}): Promise<unknown> {
    if (this.#closed) return Promise.reject(this.#closed);
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#socket.write(JSON.stringify({ id, op, ...body }) + '\n');
    });
  }

  /** Sends a request whose answer is streamed (subscribe): lines go to onStreamed. */
  stream(op: string, body: Record<string, unknown>, onError: (error: Error) => void): void {
    const id = this.#next++;
    this.#pending.set(id, { resolve: () => undefined, reject: onError });
    this.#socket.write(JSON.stringify({ id, op, ...body }) + '\n');
  }

  close(): void {
    this.#closed ??= new Error('the connection to the node agent is closed');
    this.#socket.destroy();
  }

  #settle(reply: Reply) {
    const waiting = reply.id === null ? [...this.#pending.values()] : [this.#pending.get(reply.id)].filter((w) => !!w);
    if (reply.id !== null) this.#pending.delete(reply.id);
    else this.#pending.clear();
    for (const w of waiting) {
      if (reply.ok) w!.resolve(reply.result);
      else w!.reject(errorOf(reply.error ?? {}));
    }
  }

  #fail(error: Error) {
    if (this.#closed) return;
    this.#closed = error;
    for (const w of this.#pending.values()) w.reject(error);
    this.#pending.clear();
  }
}

const errorOf = (e: Record<string, unknown>): Error => {
  const message = String(e.message ?? 'the node agent refused the request');
  if (e.name === 'WrongExpectedRevisionError') return new WrongExpectedRevisionError(String(e.stream), e.expected as ExpectedRevision, e.actual as Revision | 'no_stream');
  if (e.name === 'InvalidEventError') return new InvalidEventError(String(e.eventType), (e.problems as InvalidEventError['problems']) ?? []);
  if (e.name === 'RequestRefused') return new RequestRefusedError(message, e.code as string | undefined);
  return new Error(message);
};

/**
 * Connects to the agent for (node, store), else to any agent of the store on this machine (requests
 * are job-level). None: root starts this node's agent; anyone else is told to ask root.
 */
export const connectAgent = async (node: string, store: string): Promise<AgentConnection> => {
  const preferred = agentSocket(node, store);
  for (const path of [preferred, ...storeSockets(store).filter((p) => p !== preferred)]) {
    try {
      return await AgentConnection.open(path);
    } catch {
      // not listening (a stale socket of a stopped agent): try the next
    }
  }
  if (process.getuid?.() !== 0) throw new NoAgentError(`no node agent runs for ${store} on this machine: ask root to start one (sudo ckpt agent start)`);
  await startAgent(ckptHome(), node, store);
  // An agent that has just claimed its pid file opens its socket a moment later (a stale socket
  // of a dead agent may still be there until then).
  for (const end = Date.now() + 10_000; ; await new Promise((r) => setTimeout(r, 25))) {
    try {
      return await AgentConnection.open(preferred);
    } catch (error) {
      if (Date.now() > end) throw new NoAgentError(`the node agent for ${node} runs but does not answer on ${preferred} (${(error as Error).message}); see ckpt agent status`);
    }
  }
};

export interface GatewayEventStoreOptions {
  readonly node: string;
  /** The store URL the agent serves (names its socket). */
  readonly url: string;
  /** The store itself, when the caller may open it: reads go there. */
  readonly direct?: EventStore;
}

/** The EventStore port with every append a request to the node agent. Connects on first use. */
export class GatewayEventStore implements EventStore {
  readonly location: string;
  readonly #o: GatewayEventStoreOptions;
  #connection: Promise<AgentConnection> | undefined;
  readonly #subscriptions = new Set<AgentConnection>();

  constructor(options: GatewayEventStoreOptions) {
    this.#o = options;
    this.location = options.direct?.location ?? `${options.url} (through the node agent)`;
  }

  #agent(): Promise<AgentConnection> {
    this.#connection ??= connectAgent(this.#o.node, this.#o.url);
    return this.#connection;
  }

  async #ask<T>(op: string, body: Record<string, unknown> = {}): Promise<T> {
    return (await (await this.#agent()).request(op, body)) as T;
  }

  append(stream: string, events: readonly ProposedEvent[], options?: { expectedRevision?: ExpectedRevision }): Promise<AppendResult> {
    return this.#ask('append', { stream, events, expectedRevision: options?.expectedRevision });
  }

  /** Read models (snapshot-backed) folded by the agent, when the caller cannot open the store. */
  get models(): RemoteReadModels | undefined {
    if (this.#o.direct) return undefined;
    return { read: (model, key, options) => this.#ask<RemoteModelRead>('model', { model, key, ...(options?.all && { all: true }) }) };
  }

  /** Liveness leases: listed by the agent for callers who cannot open the store; only agents renew them. */
  get leases(): LeaseStore | undefined {
    if (this.#o.direct) return this.#o.direct.leases;
    const refuse = () => Promise.reject(new LeaseRefusedError('only a node agent renews or releases its lease'));
    return {
      list: async () => (await this.#ask<Lease[] | null>('leases')) ?? [], // null: a store without leases (KurrentDB)
      renew: refuse,
      release: refuse,
    };
  }

  /** Read-model snapshots: in the store, for callers who can open it (root); the agent keeps them for others. */
  get snapshots() {
    return this.#o.direct?.snapshots;
  }

  /** The stored rows, for checking the digest chain: only for callers who can open the store (root). */
  get chain(): ChainedLog {
    if (this.#o.direct) return this.#o.direct.chain;
    const refuse = () => Promise.reject(new Error(`checking the log's digest chain reads every stored row: it needs the store itself (${this.location}); run it as root`));
    return { streams: refuse, rows: refuse, strayRow: refuse, chainedByMigration: refuse };
  }

  /** The coordinator decides which committed versions go (all but the newest `keep`); every node
   *  holding units of them removes its part. Waits up to `timeoutMs` for every node's answer. */
  prune(job: string, keep: number, timeoutMs?: number): Promise<PruneAnswer> {
    return this.#ask('prune', { job, keep, ...(timeoutMs !== undefined && { timeoutMs }) });
  }

  readStream(stream: string, options: ReadStreamOptions = {}): Promise<RecordedEvent[]> {
    return this.#o.direct ? this.#o.direct.readStream(stream, options) : this.#ask('read', { stream, ...options });
  }

  async streamRevision(stream: string): Promise<Revision | undefined> {
    return this.#o.direct ? this.#o.direct.streamRevision(stream) : ((await this.#ask<Revision | null>('revision', { stream })) ?? undefined);
  }

  readAll(options: ReadAllOptions = {}): Promise<RecordedEvent[]> {
    return this.#o.direct ? this.#o.direct.readAll(options) : this.#ask('readAll', { ...options });
  }

  headPosition(): Promise<Position> {
    return this.#o.direct ? this.#o.direct.headPosition() : this.#ask('head');
  }

  subscribeAll(options: SubscribeOptions = {}): Observable<RecordedEvent> {
    return this.#o.direct ? this.#o.direct.subscribeAll(options) : this.#subscribe(undefined, options);
  }

  subscribeStream(stream: string, options: SubscribeOptions = {}): Observable<RecordedEvent> {
    return this.#o.direct ? this.#o.direct.subscribeStream(stream, options) : this.#subscribe(stream, options);
  }

  /** A subscription has its own connection: closing it ends the subscription at the agent. */
  #subscribe(stream: string | undefined, options: SubscribeOptions): Observable<RecordedEvent> {
    return new Observable<RecordedEvent>((subscriber) => {
      let connection: AgentConnection | undefined;
      let closed = false;
      (async () => {
        const first = await this.#agent();
        if (closed) return;
        connection = await AgentConnection.open(first.path);
        if (closed) return connection.close();
        this.#subscriptions.add(connection);
        connection.onStreamed = (reply) => {
          if (reply.event) subscriber.next(reply.event);
          else if (reply.caughtUp) options.onCaughtUp?.();
        };
        connection.stream('subscribe', { stream, from: options.from }, (error) => subscriber.error(error));
      })().catch((error: Error) => subscriber.error(error));
      return () => {
        closed = true;
        if (connection) this.#subscriptions.delete(connection), connection.close();
      };
    });
  }

  async close(): Promise<void> {
    for (const c of this.#subscriptions) c.close();
    this.#subscriptions.clear();
    const connection = this.#connection;
    this.#connection = undefined;
    await Promise.all([
      connection?.then(
        (c) => c.close(),
        () => undefined,
      ),
      this.#o.direct?.close(),
    ]);
  }
}

/** What came of a prune: each removed version's bytes per node, the nodes still to remove their part, and those that could not. */
export interface PruneAnswer {
  readonly pruned: ReadonlyArray<{ readonly version: number; readonly bytes: number; readonly nodes: Readonly<Record<string, number>> }>;
  readonly kept: readonly number[];
  readonly waiting: ReadonlyArray<{ readonly version: number; readonly nodes: readonly string[] }>;
  readonly failed: ReadonlyArray<{ readonly version: number; readonly node: string; readonly reason: string }>;
  readonly timedOut?: boolean;
}
