// Deadlines pending in the log: scheduled by a decider, neither reached nor cancelled yet.
// A pure fold; the timer adapter turns the wall clock into DeadlineReached events. Only pending
// ones are kept: one reached or cancelled is never armed again, so the fold stays as small as
// what is under way however long the history.
import type { RecordedEvent, Revision } from './event-store.js';
import { emptyMap, type PersistentMap, removeIn, setIn, valuesOf } from './persistent-map.js';

export interface PendingDeadline {
  readonly stream: string;
  readonly deadline: string;
  readonly at: string;
  /** Revision of the DeadlineScheduled event in its stream. */
  readonly revision: Revision;
}

export type Deadlines = PersistentMap<PendingDeadline>;

/** A deadline is named within its stream. */
export const deadlineKey = (d: { readonly stream: string; readonly deadline: string }): string => `${d.stream} ${d.deadline}`;

export const evolveDeadlines = (s: Deadlines, e: RecordedEvent): Deadlines => {
  switch (e.type) {
    case 'DeadlineScheduled':
      return setIn(s, deadlineKey({ stream: e.stream, deadline: e.data.deadline }), { stream: e.stream, deadline: e.data.deadline, at: e.data.at, revision: e.revision });
    case 'DeadlineReached':
    case 'DeadlineCancelled':
      return removeIn(s, deadlineKey({ stream: e.stream, deadline: e.data.deadline }));
    default:
      return s;
  }
};

export const pendingDeadlines = (s: Deadlines): PendingDeadline[] => [...valuesOf(s)];

export const noDeadlines: Deadlines = emptyMap();
