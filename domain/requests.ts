// What every request of a user goes through: authorization, and refusals recorded as events.
import type { ProposedEvent, RecordedEvent } from './event-store.js';
import type { RequestRejected } from './events/request.js';
import type { Actor } from './identity.js';
import type { JobMembership } from './membership.js';

type Rejection = (typeof RequestRejected)['codec']['_A'];

export const reject = (request: string, command: Rejection['command'], code: Rejection['code'], reason: string): ProposedEvent[] => [
  { type: 'RequestRejected', data: { request, command, code, reason } },
];

/** A request's deadline: when it was recorded plus its timeout (no clock read). */
export const requestDeadline = (request: RecordedEvent & { data: { timeoutMs: number } }): string => new Date(Date.parse(request.metadata.recordedAt) + request.data.timeoutMs).toISOString();

/** The refusal of a request whose deadline a node agent saw pass before it was planned. */
export const rejectExpired = (request: string, command: 'checkpoint' | 'restart', deadline: string): ProposedEvent[] =>
  reject(request, command, 'expired', `its deadline ${deadline} passed before it could be planned (were the node agents paused, down or busy?); nothing was frozen`);

/** How an actor is named in a refusal: `nobody (uid 65534)`. */
export const actorName = (actor: Actor): string => (actor.kind !== 'user' ? actor.kind : actor.user ? `${actor.user} (uid ${actor.uid})` : `uid ${actor.uid}`);

/**
 * The job's owner (the uid that submitted it) or root may act on it (checkpoint, restart, prune,
 * launch or add units); the reason another user is refused, or undefined. Agents and the
 * coordinator act for the job already.
 */
export const authorizeActor = (job: JobMembership, actor: Actor, command: string): string | undefined => {
  if (actor.kind !== 'user' || actor.uid === 0 || actor.uid === job.owner?.uid) return undefined;
  return `${actorName(actor)} may not ${command} job ${job.job}: only its owner (uid ${job.owner?.uid ?? '?'}) or root may`;
};

/** authorizeActor for a recorded request: the uid is the one the request was recorded with. */
export const authorize = (job: JobMembership, request: RecordedEvent, command: string): string | undefined => authorizeActor(job, request.metadata.actor, command);
