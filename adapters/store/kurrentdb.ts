// KurrentDB (formerly EventStoreDB) store, through the official client. How ckpt's streams,
// revisions, gap-free positions and metadata map onto KurrentDB, and why: kurrentdb-mapping.ts.
//
// Appends: read the stream's head (revision and digest, for the expected revision and the chain)
// and the log's head, then write the events and their pointers in one multi-stream append that
// expects exactly both heads. A writer that loses the race on either re-reads and tries again;
// a caller's exact expectation that no longer holds is then a WrongExpectedRevisionError, as on
// every store. Appends of one store instance go one at a time (they would only race each other).
// Subscriptions are the shared catch-up loop (live.ts) over the positions stream, woken by local
// appends, by a KurrentDB catch-up subscription to the positions stream's end, and by a slow poll.
// Not exercised against a server on the machine ckpt is developed on (none can be installed
// there): test/store-kurrentdb.test.ts runs the store contract when KURRENTDB_URL is set.
import { createRequire } from 'node:module';
import type * as Kurrent from '@kurrent/kurrentdb-client';
import type {
  AppendResult,
  ChainedLog,
  ChainedRow,
  EventStore,
  ExpectedRevision,
  ProposedEvent,
  ReadAllOptions,
  ReadStreamOptions,
  RecordedEvent,
  Revision,
  SubscribeOptions,
} from '../../domain/event-store.js';
import { interval, merge, Observable, Subject, share } from '../../domain/rx.js';
import { type AppendContext, defaultAppendContext, encodeBatch, pageLimit, storedEvent, validExpectedRevision } from './batch.js';
import {
  ckptStream,
  headOf,
  KURRENT_URL_FORM,
  type KurrentRecord,
  type KurrentTarget,
  kurrentStream,
  misplaced,
  type Pointer,
  parseKurrentUrl,
  planAppend,
  pointerOf,
  pointerRevision,
  positionsStream,
  revisionOf,
  rowOf,
  rowsOfRun,
  runsOf,
} from './kurrentdb-mapping.js';
import { subscribeAllWith, subscribeStreamWith } from './live.js';
import { StoreUrlError } from './url.js';

/** The client library, loaded when a KurrentDB store is opened rather than by every command that could open one. */
const kurrentLibrary = (): typeof Kurrent => createRequire(import.meta.url)('@kurrent/kurrentdb-client') as typeof Kurrent;

/** Lost races on the heads before an append gives up (each retry re-reads both heads). */
const ATTEMPTS = 200;
/** Stream reads in flight at once while a page of the log is read. */
const RUNS_AT_ONCE = 32;

/** The client for a parsed URL; what its own parser refuses is a StoreUrlError, without the URL's text (it may hold a password). */
const clientFor = (lib: typeof Kurrent, target: KurrentTarget): Kurrent.KurrentDBClient => {
  try {
    return lib.KurrentDBClient.connectionString(target.connectionString);
  } catch (error) {
    const expected = (error as { expected?: unknown }).expected;
    throw new StoreUrlError(`store URL "${target.location}": the KurrentDB client cannot read it${typeof expected === 'string' ? ` (it expected ${expected})` : ''}: use ${KURRENT_URL_FORM}`);
  }
};

export interface KurrentOptions {
  /** Fallback poll for subscribers, in case the server's subscription misses a wake-up. */
  readonly pollMs?: number;
  readonly context?: AppendContext;
}

/**
 * No snapshots and no liveness leases (`leases` absent): KurrentDB has no table beside the log to
 * replace a row in, and a renewal every few seconds must not grow the history. `ckpt nodes` then
 * judges agents as before a lease existed: by /proc on this machine, "not checked" elsewhere.
 */
export class KurrentEventStore implements EventStore {
  readonly location: string;
  readonly #prefix: string;
  readonly #positions: string;
  readonly #lib: typeof Kurrent;
  readonly #client: Kurrent.KurrentDBClient;
  readonly #context: AppendContext;
  readonly #appended = new Subject<void>();
  readonly #wakeups: Observable<unknown>;
  /** The tail of this instance's appends: the next one starts when it settles. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(url: string, options: KurrentOptions = {}) {
    const target = parseKurrentUrl(url);
    this.location = target.location;
    this.#prefix = target.prefix;
    this.#positions = positionsStream(target.prefix);
    this.#context = options.context ?? defaultAppendContext();
    this.#lib = kurrentLibrary();
    this.#client = clientFor(this.#lib, target);
    this.#wakeups = merge(this.#appended, this.#serverWakeups(), interval(options.pollMs ?? 1000)).pipe(share());
  }

  /** The client's errors, with the store they came from (never the password) and, for an unreachable server, what to check. */
  #failed(doing: string, error: unknown): Error {
    const unreachable = error instanceof this.#lib.UnavailableError || (error as { code?: unknown })?.code === 14; // gRPC UNAVAILABLE
    const why = unreachable
      ? 'no KurrentDB server answers there: is it running, and does ?tls= match how it serves (tls=false for an insecure node)?'
      : error instanceof this.#lib.AccessDeniedError
        ? `access denied to the user the URL names (${(error as Error).message}): it must read and write the store's streams (PREFIX-*, PREFIX.positions), and read $all for the chain check`
        : ((error as Error)?.message ?? String(error));
    return new Error(`${this.location}: ${doing}: ${why}`, { cause: error });
  }

  /** Every event of a KurrentDB stream in a range; a stream that does not exist reads as empty. */
  async #read(name: string, options: Kurrent.ReadStreamOptions): Promise<KurrentRecord[]> {
    const records: KurrentRecord[] = [];
    try {
      for await (const resolved of this.#client.readStream(name, options)) if (resolved.event) records.push(resolved.event as KurrentRecord);
    } catch (error) {
      if (error instanceof this.#lib.StreamNotFoundError) return [];
      throw this.#failed(`reading ${name}`, error);
    }
    return records;
  }

  /**
   * A stream's last event as a row (revision and digest), undefined for none. An append reads the
   * heads from the leader (`leader`): a follower's may lag, and an append planned on it would only
   * lose its race again and again.
   */
  async #head(stream: string, leader = false): Promise<ChainedRow | undefined> {
    const [last] = await this.#read(kurrentStream(this.#prefix, stream), { direction: this.#lib.BACKWARDS, fromRevision: this.#lib.END, maxCount: 1, requiresLeader: leader });
    return last && rowOf(this.#prefix, last);
  }

  async #lastPointer(leader = false): Promise<Revision | undefined> {
    const [last] = await this.#read(this.#positions, { direction: this.#lib.BACKWARDS, fromRevision: this.#lib.END, maxCount: 1, requiresLeader: leader });
    return last && revisionOf(last.revision);
  }

  /** Async: a batch refused before anything is sent is a rejection, like every other failure. */
  async append(stream: string, events: readonly ProposedEvent[], options: { expectedRevision?: ExpectedRevision } = {}): Promise<AppendResult> {
    const expected = validExpectedRevision(options.expectedRevision ?? 'any');
    const encoded = encodeBatch(stream, events, this.#context);
    const appended = this.#queue.then(() => this.#append(stream, encoded, expected));
    this.#queue = appended.catch(() => {});
    return appended;
  }

  async #append(stream: string, encoded: ReturnType<typeof encodeBatch>, expected: ExpectedRevision): Promise<AppendResult> {
    const lib = this.#lib;
    for (let attempt = 1; ; attempt++) {
      const [head, lastPointer] = await Promise.all([this.#head(stream, true), this.#lastPointer(true)]);
      const plan = planAppend(stream, expected, encoded, head, lastPointer, this.#context.newId);
      if (encoded.length === 0) return plan.result;
      try {
        await this.#client.multiStreamAppend([
          { streamName: kurrentStream(this.#prefix, stream), expectedState: plan.stream.state, events: [...plan.stream.events] },
          { streamName: this.#positions, expectedState: plan.positions.state, events: [...plan.positions.events] },
        ]);
      } catch (error) {
        if (error instanceof lib.WrongExpectedVersionError && attempt < ATTEMPTS) {
          // Another writer moved a head since it was read: back off a little (more after each loss) and plan again.
          await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(50, attempt * 2)));
          continue;
        }
        if (error instanceof lib.UnsupportedError) throw this.#failed('appending needs multi-stream appends (KurrentDB 25.1 or later)', error);
        throw this.#failed(`appending to ${stream}`, error);
      }
      this.#appended.next();
      return plan.result;
    }
  }

  /** A row read from its stream as an event; one never placed in the log's order is damage, named by the row. */
  #event(row: ChainedRow): RecordedEvent {
    if (row.position === 0) throw misplaced(row);
    return storedEvent(row.position, row.stream, row.revision, row.id, row.type, row.schemaVersion, row.data, row.metadata, row.digest);
  }

  async #rows(stream: string, options: Kurrent.ReadStreamOptions): Promise<ChainedRow[]> {
    return (await this.#read(kurrentStream(this.#prefix, stream), options)).map((r) => rowOf(this.#prefix, r));
  }

  async readStream(stream: string, options: ReadStreamOptions = {}): Promise<RecordedEvent[]> {
    const lib = this.#lib;
    const maxCount = pageLimit(options.limit);
    if (options.direction === 'backwards') {
      // From past the end reads from the end, as the other stores do.
      const head = options.from === undefined ? undefined : await this.streamRevision(stream);
      if (head === undefined && options.from !== undefined) return [];
      const from = head === undefined ? lib.END : BigInt(Math.min(options.from!, head));
      return (await this.#rows(stream, { direction: lib.BACKWARDS, fromRevision: from, maxCount })).map((r) => this.#event(r));
    }
    return (await this.#rows(stream, { direction: lib.FORWARDS, fromRevision: BigInt(options.from ?? 0), maxCount })).map((r) => this.#event(r));
  }

  async streamRevision(stream: string): Promise<Revision | undefined> {
    return (await this.#head(stream))?.revision;
  }

  /** A page of pointers, then each run of them (an appended batch) in one read of its stream, in position order. */
  async readAll(options: ReadAllOptions = {}): Promise<RecordedEvent[]> {
    const maxCount = pageLimit(options.limit);
    const pointers: Pointer[] = [];
    for (const record of await this.#read(this.#positions, { direction: this.#lib.FORWARDS, fromRevision: pointerRevision(options.from ?? 1), maxCount })) {
      const pointer = pointerOf(record);
      if ('problem' in pointer) throw this.#failed('reading the log', new Error(`${pointer.problem}; the log is damaged`));
      pointers.push(pointer);
    }
    // Interleaved streams make short runs (down to one event each): read RUNS_AT_ONCE of them at a time.
    const runs = runsOf(pointers);
    const events: RecordedEvent[] = [];
    for (let i = 0; i < runs.length; i += RUNS_AT_ONCE) {
      const chunk = runs.slice(i, i + RUNS_AT_ONCE);
      const read = await Promise.all(chunk.map((run) => this.#rows(run.stream, { direction: this.#lib.FORWARDS, fromRevision: BigInt(run.from), maxCount: run.count })));
      chunk.forEach((run, k) => {
        for (const row of rowsOfRun(run, read[k]!)) events.push(this.#event(row));
      });
    }
    return events;
  }

  async headPosition(): Promise<number> {
    return headOf(await this.#lastPointer());
  }

  /** Wake-ups from the server: a catch-up subscription to the end of the positions stream, while anyone subscribes (shared). */
  #serverWakeups(): Observable<void> {
    return new Observable<void>((subscriber) => {
      const subscription = this.#client.subscribeToStream(this.#positions, { fromRevision: this.#lib.END });
      subscription.on('data', () => subscriber.next());
      subscription.on('error', (error: Error) => subscriber.error(this.#failed('lost the subscription to the log', error)));
      subscriber.next(); // anything appended while subscribing is read now
      return () => void subscription.unsubscribe().catch(() => {});
    });
  }

  subscribeAll(options: SubscribeOptions = {}) {
    return subscribeAllWith((from, limit) => this.readAll({ from, limit }), this.#wakeups, options);
  }

  subscribeStream(stream: string, options: SubscribeOptions = {}) {
    return subscribeStreamWith((from, limit) => this.readStream(stream, { from, limit }), this.#wakeups, options);
  }

  /**
   * The chain's view: the streams and heads the positions stream records (pointer data, read
   * once per store instance and then from where it stopped), the rows as the streams hold them.
   */
  readonly #known = { streams: new Map<string, Revision>(), read: 0 };

  async #knownStreams(): Promise<Map<string, Revision>> {
    const known = this.#known;
    for (;;) {
      const page = await this.#read(this.#positions, { direction: this.#lib.FORWARDS, fromRevision: BigInt(known.read), maxCount: 4096 });
      for (const record of page) {
        const pointer = pointerOf(record);
        if ('problem' in pointer) throw this.#failed('reading the log', new Error(`${pointer.problem}; the log is damaged`));
        known.streams.set(pointer.stream, Math.max(known.streams.get(pointer.stream) ?? -1, pointer.revision));
        known.read = pointer.position;
      }
      if (page.length < 4096) return known.streams;
    }
  }

  readonly chain: ChainedLog = {
    streams: async (after, limit) =>
      [...(await this.#knownStreams())]
        .filter(([name]) => after === undefined || name > after)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .slice(0, limit)
        .map(([name, revision]) => ({ name, revision })),
    rows: (stream, from, limit) => this.#rows(stream, { direction: this.#lib.FORWARDS, fromRevision: BigInt(from), maxCount: limit }),
    // A stream of the store's prefix that no pointer names was written behind the store's back:
    // found by reading $all, filtered to the prefix on the server.
    strayRow: async () => {
      const known = await this.#knownStreams();
      const prefix = `${this.#prefix}-`;
      try {
        for await (const resolved of this.#client.readAll({ filter: this.#lib.streamNameFilter({ prefixes: [prefix] }) })) {
          const record = resolved.event as KurrentRecord | undefined;
          const stream = record && ckptStream(this.#prefix, record.streamId);
          if (record && stream !== undefined && !known.has(stream)) return rowOf(this.#prefix, record);
        }
      } catch (error) {
        throw this.#failed('reading $all for streams no pointer names', error);
      }
      return undefined;
    },
    chainedByMigration: async () => undefined, // every event is chained as it is appended
  };

  async close(): Promise<void> {
    this.#appended.complete();
    await this.#client.dispose();
  }
}
