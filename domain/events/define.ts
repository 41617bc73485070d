import type * as t from 'io-ts';

/**
 * What an event is, which says how it may be appended:
 * - request: someone asked for something (CLI, dashboard); validated, then decided upon;
 * - decision: emitted by a decider from the log; carries the position it was decided on and is
 *   appended with the expected revision it was decided from (`ckpt verify` re-derives these);
 * - outcome: a node agent reports what happened when it executed a decision;
 * - observation: a fact seen on a node (kernel, /proc, cgroups, probes); appended as it comes.
 */
export type EventKind = 'request' | 'decision' | 'outcome' | 'observation';

/**
 * How the data of one schema version became the next one's. Old rows stay as they were written
 * (their digests cover that); they are upcast when read, one version at a time.
 */
export interface SchemaChange {
  /** What changed and why, one line for docs/events.md. */
  readonly change: string;
  /** The previous version's data (as stored: JSON, not yet decoded) in this version's shape. Pure; never changes its argument. */
  readonly up: (data: Readonly<Record<string, unknown>>) => Record<string, unknown>;
}

export interface EventDefinition<T extends string = string, C extends t.Mixed = t.Mixed> {
  readonly type: T;
  readonly kind: EventKind;
  /** The version the codec reads and appends write: 1 + the number of changes. */
  readonly schemaVersion: number;
  /** changes[i] upcasts version i + 1 to version i + 2. */
  readonly changes: readonly SchemaChange[];
  readonly codec: C;
  /** One line for docs/events.md. */
  readonly summary: string;
}

export const defineEvent = <T extends string, C extends t.Mixed>(type: T, kind: EventKind, codec: C, summary: string, changes: readonly SchemaChange[] = []): EventDefinition<T, C> => ({
  type,
  kind,
  codec,
  summary,
  changes,
  schemaVersion: changes.length + 1,
});

/** The event a definition describes: `{ type, data }`. */
export type EventOf<D> = D extends EventDefinition<infer T, infer C> ? { readonly type: T; readonly data: t.TypeOf<C> } : never;
