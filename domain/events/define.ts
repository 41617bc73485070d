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

export interface EventDefinition<T extends string = string, C extends t.Mixed = t.Mixed> {
  readonly type: T;
  readonly kind: EventKind;
  /** Bumped when the data shape changes; older versions are upcast on read. */
  readonly schemaVersion: number;
  readonly codec: C;
  /** One line for docs/events.md. */
  readonly summary: string;
}

export const defineEvent = <T extends string, C extends t.Mixed>(
  type: T,
  kind: EventKind,
  codec: C,
  summary: string,
  schemaVersion = 1,
): EventDefinition<T, C> => ({ type, kind, codec, summary, schemaVersion });

/** The event a definition describes: `{ type, data }`. */
export type EventOf<D> = D extends EventDefinition<infer T, infer C> ? { readonly type: T; readonly data: t.TypeOf<C> } : never;
