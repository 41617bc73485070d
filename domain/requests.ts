// What every request of a user goes through: authorization, and refusals recorded as events.
import type { ProposedEvent, RecordedEvent } from './event-store.js';
import type { RequestRejected } from './events/request.js';
import type { JobMembership } from './membership.js';

type Rejection = (typeof RequestRejected)['codec']['_A'];

export const reject = (request: string, command: Rejection['command'], code: Rejection['code'], reason: string): ProposedEvent[] => [
  { type: 'RequestRejected', data: { request, command, code, reason } },
];

/**
 * The job's owner (the uid that submitted it) or root may checkpoint, restart or prune it; the
 * reason another user is refused, or undefined. The uid is the one the request was recorded with.
 */
export const authorize = (job: JobMembership, request: RecordedEvent, command: string): string | undefined => {
  const actor = request.metadata.actor;
  if (actor.kind !== 'user' || actor.uid === 0 || actor.uid === job.owner?.uid) return undefined;
  const who = actor.user ? `${actor.user} (uid ${actor.uid})` : `uid ${actor.uid}`;
  return `${who} may not ${command} job ${job.job}: only its owner (uid ${job.owner?.uid ?? '?'}) or root may`;
};
