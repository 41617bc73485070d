// Deadlines pending in the log: scheduled by a decider, neither reached nor cancelled yet.
// A pure fold; the timer adapter turns the wall clock into DeadlineReached events.
import type { RecordedEvent, Revision } from './event-store.js';
import { emptyMap, getIn, setIn, valuesOf, type PersistentMap } from './persistent-map.js';

export interface PendingDeadline {
  readonly stream: string;
  readonly deadline: string;
  readonly at: string;
  /** Revision of the DeadlineScheduled event in its stream. */
  readonly revision: Revision;
  readonly state: 'pending' | 'reached' | 'cancelled';
}

export type Deadlines = PersistentMap<PendingDeadline>;

const keyOf = (stream: string, deadline: string) => `${stream} ${deadline}`;

export const evolveDeadlines = (s: Deadlines, e: RecordedEvent): Deadlines => {
  switch (e.type) {
    case 'DeadlineScheduled':
      return setIn(s, keyOf(e.stream, e.data.deadline), { stream: e.stream, deadline: e.data.deadline, at: e.data.at, revision: e.revision, state: 'pending' });
    case 'DeadlineReached':
    case 'DeadlineCancelled': {
      const known = getIn(s, keyOf(e.stream, e.data.deadline));
      return known ? setIn(s, keyOf(e.stream, e.data.deadline), { ...known, state: e.type === 'DeadlineReached' ? 'reached' : 'cancelled' }) : s;
    }
    default:
      return s;
  }
};

export const pendingDeadlines = (s: Deadlines): PendingDeadline[] => [...valuesOf(s)].filter((d) => d.state === 'pending');

export const noDeadlines: Deadlines = emptyMap();
