// Time enters the log only as events: a decider schedules a deadline; the timer adapter appends
// DeadlineReached once the wall clock passes it. Replays never read the clock.
import { literals, NonEmptyString, record, Timestamp } from '../codecs.js';
import { defineEvent } from './define.js';

export const DeadlineScheduled = defineEvent(
  'DeadlineScheduled',
  'decision',
  record({ deadline: NonEmptyString, at: Timestamp, purpose: NonEmptyString }),
  'A decider set a deadline (id derived from what it guards) at a wall-clock instant.',
);
export const DeadlineReached = defineEvent('DeadlineReached', 'observation', record({ deadline: NonEmptyString }), 'The timer saw the wall clock pass a scheduled deadline.');
export const DeadlineCancelled = defineEvent(
  'DeadlineCancelled',
  'decision',
  record({ deadline: NonEmptyString, reason: literals('completed', 'aborted', 'superseded') }),
  'What the deadline guarded finished first.',
);

export const deadlineEvents = [DeadlineScheduled, DeadlineReached, DeadlineCancelled] as const;
