// In-memory EventStore for pure projection tests and `--store memory:`. Same contract as the
// durable stores (test/store-contract.ts), nothing survives the process.
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
import { Subject } from '../../domain/rx.js';
import { type AppendContext, checkExpectedRevision, defaultAppendContext, encodeBatch, pageLimit, storedEvent, validExpectedRevision } from './batch.js';
import { chainDigest, GENESIS } from './chain.js';
import { MemoryLeaseStore } from './leases.js';
import { subscribeAllWith, subscribeStreamWith } from './live.js';
import { MemorySnapshotStore } from './snapshots.js';

export class MemoryEventStore implements EventStore {
  readonly location = 'memory:';
  readonly #all: RecordedEvent[] = [];
  readonly #streams = new Map<string, RecordedEvent[]>();
  /** The rows as "stored", for the chain check. */
  readonly #rows = new Map<string, ChainedRow[]>();
  readonly #appended = new Subject<void>();
  readonly snapshots = new MemorySnapshotStore();
  readonly leases = new MemoryLeaseStore((stream) => this.readStream(stream, { direction: 'backwards', limit: Number.MAX_SAFE_INTEGER }));

  constructor(private readonly context: AppendContext = defaultAppendContext()) {}

  async append(stream: string, events: readonly ProposedEvent[], options: { expectedRevision?: ExpectedRevision } = {}): Promise<AppendResult> {
    const expected = validExpectedRevision(options.expectedRevision ?? 'any');
    const encoded = encodeBatch(stream, events, this.context);
    const existing = this.#streams.get(stream);
    checkExpectedRevision(stream, expected, existing ? existing.length - 1 : undefined);
    const target = existing ?? [];
    const rows = this.#rows.get(stream) ?? [];
    for (const e of encoded) {
      const position = this.#all.length + 1;
      const revision = target.length;
      const previous = rows[revision - 1]?.digest ?? GENESIS;
      const digest = chainDigest(previous, e.content, revision);
      const recorded = storedEvent(position, stream, revision, e.id, e.type, e.schemaVersion, e.data, e.metadata, digest);
      target.push(recorded);
      rows.push({ position, stream, revision, id: e.id, type: e.type, schemaVersion: e.schemaVersion, data: e.data, metadata: e.metadata, digest, previous });
      this.#all.push(recorded);
    }
    if (target.length > 0) {
      this.#streams.set(stream, target);
      this.#rows.set(stream, rows);
    }
    if (encoded.length > 0) this.#appended.next();
    return { revision: target.length - 1, position: this.#all.length };
  }

  async readStream(stream: string, options: ReadStreamOptions = {}): Promise<RecordedEvent[]> {
    const events = this.#streams.get(stream) ?? [];
    const limit = pageLimit(options.limit);
    if (options.direction === 'backwards') {
      const from = Math.min(options.from ?? events.length - 1, events.length - 1);
      return events.slice(Math.max(0, from - limit + 1), from + 1).reverse();
    }
    const from = options.from ?? 0;
    return events.slice(from, from + limit);
  }

  async streamRevision(stream: string): Promise<Revision | undefined> {
    const events = this.#streams.get(stream);
    return events ? events.length - 1 : undefined;
  }

  async readAll(options: ReadAllOptions = {}): Promise<RecordedEvent[]> {
    const from = Math.max(1, options.from ?? 1);
    return this.#all.slice(from - 1, from - 1 + pageLimit(options.limit));
  }

  async headPosition(): Promise<number> {
    return this.#all.length;
  }

  subscribeAll(options: SubscribeOptions = {}) {
    return subscribeAllWith((from, limit) => this.readAll({ from, limit }), this.#appended, options);
  }

  subscribeStream(stream: string, options: SubscribeOptions = {}) {
    return subscribeStreamWith((from, limit) => this.readStream(stream, { from, limit }), this.#appended, options);
  }

  readonly chain: ChainedLog = {
    streams: async (after, limit) =>
      [...this.#streams]
        .filter(([name]) => after === undefined || name > after)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .slice(0, limit)
        .map(([name, events]) => ({ name, revision: events.length - 1 })),
    rows: async (stream, from, limit) => (this.#rows.get(stream) ?? []).slice(from, from + limit),
    strayRow: async () => undefined,
    chainedByMigration: async () => undefined,
  };

  async close(): Promise<void> {
    this.#appended.complete();
  }
}
