// Why a checkpoint or restart step failed, in words a user can act on: a class (what kind of
// thing went wrong), the first relevant message (the checkpointer's own, when it has one), and a
// hint (what to do). Every Unit…Failed outcome may carry one; the CLI and the audit show it on
// one line, --json has the fields. Pure: the classes and hints are data, the agent fills them in.

import { literals, record } from './codecs.js';
import * as t from './io-ts.js';

export const FAILURE_CLASSES = [
  'socket', // a socket kind the checkpointer cannot handle (or not on this kernel)
  'connection', // an established connection or a peer outside the unit
  'mount', // mounts / filesystems the checkpointer cannot dump or restore
  'namespace', // PID/mount/… namespaces
  'tty', // terminals: a job on a pty, a controlling terminal outside the unit
  'file-lock', // file locks held without --file-locks
  'file', // a file the job holds open changed, moved or vanished since the checkpoint
  'space', // memory or disk space
  'permission', // credentials, capabilities, ownership
  'version', // checkpointer version or kernel support
  'vanished', // a process ended or changed between plan and dump
  'timeout', // a deadline or a freeze budget ran out
  'images', // images damaged, missing or not matching the plan
  'internal', // anything else: the message says what
] as const;
export type FailureClass = (typeof FAILURE_CLASSES)[number];

export const Failure = record(
  { class: literals(...FAILURE_CLASSES), message: t.string },
  {
    /** What the user can do about it, e.g. "run ckpt checkpoint --tcp-established". */
    hint: t.string,
    /** The checkpointer's own error number and message (CRIU RPC: cr_errno, cr_errmsg). */
    errno: t.number,
    /** Where the details are (a log file on the node). */
    log: t.string,
  },
);
export type Failure = t.TypeOf<typeof Failure>;

/** One line: "connection: … (hint: …)". */
export const describeFailure = (f: Failure): string => `${f.class}: ${f.message}${f.hint ? ` — ${f.hint}` : ''}`;
