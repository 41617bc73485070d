// Refusals are events too: an audit must show what was asked and refused, and why.

import { literals, NonEmptyString, record, Timestamp } from '../codecs.js';
import * as t from '../io-ts.js';
import { defineEvent } from './define.js';

export const RequestRejected = defineEvent(
  'RequestRejected',
  'decision',
  record({
    request: NonEmptyString,
    command: literals('run', 'checkpoint', 'restart', 'prune', 'audit'),
    code: literals('unauthorized', 'invalid', 'busy', 'unsupported', 'not-found', 'expired'),
    reason: t.string,
  }),
  'A request was refused (not the owner, job busy, checkpointer cannot do it, …) with the reason.',
);

// The coordinator is pure and cannot see the clock: a node agent about to record a plan for a
// request whose deadline has passed records this instead, and the coordinator refuses the request.
export const RequestExpired = defineEvent(
  'RequestExpired',
  'observation',
  record({ request: NonEmptyString, command: literals('checkpoint', 'restart'), deadline: Timestamp }),
  'A node agent saw a request’s deadline pass before the coordinator’s plan for it was recorded; nothing was planned or frozen.',
);

export const requestEvents = [RequestRejected, RequestExpired] as const;
