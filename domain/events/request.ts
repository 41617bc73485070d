// Refusals are events too: an audit must show what was asked and refused, and why.
import * as t from 'io-ts';
import { literals, NonEmptyString, record } from '../codecs.js';
import { defineEvent } from './define.js';

export const RequestRejected = defineEvent(
  'RequestRejected',
  'decision',
  record({
    request: NonEmptyString,
    command: literals('run', 'checkpoint', 'restart', 'prune'),
    code: literals('unauthorized', 'invalid', 'busy', 'unsupported', 'not-found'),
    reason: t.string,
  }),
  'A request was refused (not the owner, job busy, checkpointer cannot do it, …) with the reason.',
);

export const requestEvents = [RequestRejected] as const;
