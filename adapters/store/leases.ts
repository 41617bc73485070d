// Node liveness leases beside the log (domain/event-store.ts, LeaseStore). What every store checks
// before a renewal, and the memory store's leases, judged by the process clock.
import { NAME_PATTERN } from '../../domain/codecs.js';
import { type Lease, type LeaseHolder, LeaseRefusedError, type LeaseStore, type RecordedEvent } from '../../domain/event-store.js';
import { nodeStream } from '../../domain/identity.js';

/** A day: longer than any sensible lease, short enough that a typo (ms for s) is refused. */
export const MAX_LEASE_TTL_MS = 86_400_000;

/** Refuses what no store should keep: a bad node name, ttl or holder. */
export const checkRenewal = (node: string, holder: LeaseHolder, ttlMs: number): void => {
  if (typeof node !== 'string' || !NAME_PATTERN.test(node)) throw new LeaseRefusedError(`lease: node name ${JSON.stringify(node)} is not valid (${NAME_PATTERN.source})`);
  if (!Number.isSafeInteger(ttlMs) || ttlMs < 1 || ttlMs > MAX_LEASE_TTL_MS) throw new LeaseRefusedError(`lease of ${node}: ttl must be 1 ms to ${MAX_LEASE_TTL_MS} ms, got ${ttlMs}`);
  const ok =
    holder &&
    Number.isSafeInteger(holder.pid) &&
    holder.pid > 0 &&
    Number.isSafeInteger(holder.startTime) &&
    holder.startTime >= 0 &&
    typeof holder.bootId === 'string' &&
    typeof holder.hostname === 'string';
  if (!ok) throw new LeaseRefusedError(`lease of ${node}: the holder must give pid, startTime, bootId and hostname, got ${JSON.stringify(holder)}`);
};

/**
 * The lease goes to the agent process the log says started on the node: the node stream's latest
 * NodeAgentStarted must name the holder (pid and start time). An agent registers before it renews.
 */
export const refusedByLog = (node: string, holder: LeaseHolder, started: { pid: number; startTime: number } | undefined): string | undefined =>
  !started
    ? `the log records no agent start on ${node} (${nodeStream(node)}): an agent renews its lease only after it registered`
    : started.pid !== holder.pid || started.startTime !== holder.startTime
      ? `the log's latest agent start on ${node} is pid ${started.pid} (start time ${started.startTime}), not the holder pid ${holder.pid} (start time ${holder.startTime})`
      : undefined;

/** The latest NodeAgentStarted's agent among a node stream's events read backwards. */
export const startedAgent = (newestFirst: readonly RecordedEvent[]): { pid: number; startTime: number } | undefined => {
  for (const e of newestFirst) if (e.type === 'NodeAgentStarted') return e.data.agent;
  return undefined;
};

export class MemoryLeaseStore implements LeaseStore {
  readonly #leases = new Map<string, { holder: LeaseHolder; renewedAt: number; expiresAt: number }>();

  constructor(private readonly nodeStreamNewestFirst: (stream: string) => Promise<readonly RecordedEvent[]>) {}

  async renew(node: string, holder: LeaseHolder, ttlMs: number): Promise<Lease> {
    checkRenewal(node, holder, ttlMs);
    const refused = refusedByLog(node, holder, startedAgent(await this.nodeStreamNewestFirst(nodeStream(node))));
    if (refused) throw new LeaseRefusedError(refused);
    const now = Date.now();
    const row = { holder: { pid: holder.pid, startTime: holder.startTime, bootId: holder.bootId, hostname: holder.hostname }, renewedAt: now, expiresAt: now + ttlMs };
    this.#leases.set(node, row);
    return toLease(node, row, now);
  }

  async list(): Promise<Lease[]> {
    const now = Date.now();
    return [...this.#leases].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([node, row]) => toLease(node, row, now));
  }

  async release(node: string): Promise<void> {
    this.#leases.delete(node);
  }
}

/** A lease row (times in ms since the epoch) as judged at `now` by the same clock. */
export const toLease = (node: string, row: { holder: LeaseHolder; renewedAt: number; expiresAt: number }, now: number): Lease => ({
  node,
  holder: row.holder,
  renewedAt: new Date(row.renewedAt).toISOString(),
  expiresAt: new Date(row.expiresAt).toISOString(),
  expired: now >= row.expiresAt,
  asOf: new Date(now).toISOString(),
});
