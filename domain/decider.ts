// Deciders, and re-deriving their recorded decisions (what `ckpt verify` checks): fold the
// history up to the event a decision was caused by, decide again, and compare with what was
// recorded. A code change that alters a past decision shows up as a difference.
import type { ProposedEvent, RecordedEvent } from './event-store.js';

export interface Decider<S> {
  readonly initial: S;
  readonly evolve: (state: S, event: RecordedEvent) => S;
  readonly decide: (state: S, event: RecordedEvent) => ProposedEvent[];
  /** The events this decider folds (others are skipped). */
  readonly concerns: (event: RecordedEvent) => boolean;
}

export interface Difference {
  /** The event the decisions were caused by. */
  readonly cause: { readonly position: number; readonly type: string };
  readonly recorded: ReadonlyArray<{ readonly type: string; readonly data: unknown }>;
  readonly rederived: ReadonlyArray<{ readonly type: string; readonly data: unknown }>;
}

const canonical = (value: unknown): string =>
  JSON.stringify(value, (_, v) => (v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1))) : v));

const same = (a: ReadonlyArray<{ type: string; data: unknown }>, b: ReadonlyArray<{ type: string; data: unknown }>) =>
  a.length === b.length && a.every((e, i) => e.type === b[i]!.type && canonical(e.data) === canonical(b[i]!.data));

/**
 * Checks every recorded decision of a history (in global order). A decision is recorded with
 * `causationId` = the id of the event it answered and `decidedAt` = that event's position.
 */
export const rederive = <S>(decider: Decider<S>, history: readonly RecordedEvent[]): { checked: number; differences: Difference[] } => {
  const decisionsBy = new Map<string, RecordedEvent[]>();
  for (const e of history) {
    const cause = e.metadata.causationId;
    if (cause !== undefined && e.metadata.decidedAt !== undefined) decisionsBy.set(cause, [...(decisionsBy.get(cause) ?? []), e]);
  }
  let state = decider.initial;
  let checked = 0;
  const differences: Difference[] = [];
  for (const event of history) {
    if (!decider.concerns(event)) continue;
    state = decider.evolve(state, event);
    const recorded = decisionsBy.get(event.id);
    if (!recorded) continue;
    checked++;
    const rederived = decider.decide(state, event).map(({ type, data }) => ({ type, data }));
    const wasRecorded = recorded.map(({ type, data }) => ({ type, data }));
    if (!same(wasRecorded, rederived)) differences.push({ cause: { position: event.position, type: event.type }, recorded: wasRecorded, rederived });
  }
  return { checked, differences };
};
