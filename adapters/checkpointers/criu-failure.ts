// What a failed CRIU run means for the user: the first CRIU error line that explains it, its
// class, and what to do. CRIU's own words come from its RPC answer (cr_errno, cr_errmsg) and the
// error lines of its log; the rules below are ordered, most specific first, and each was seen
// on a real failure (the tests hold one line of each).
import { constants } from 'node:os';
import type { Failure, FailureClass } from '../../domain/failure.js';

interface Rule {
  readonly match: RegExp;
  readonly class: FailureClass;
  readonly hint?: string;
}

const INSTALL_42 = 'install CRIU ≥ 4.2 (bash scripts/install-criu.sh), then restart the node agent (ckpt agent stop)';

const RULES: readonly Rule[] = [
  // Before 'socket': the lines after it say "Can't retrieve FD from socket".
  {
    match: /can't dump unprivileged task whose .* doesn't belong to it|parasite.*Can't create a directory \(-13\)/,
    class: 'permission',
    hint: 'a user’s unit that is PID 1 of its own PID namespace cannot be dumped (CRIU’s parasite cannot mount a /proc for it without CAP_SYS_ADMIN in the task): run the user’s job in the host PID namespace (docs/criu.md, Jobs of other users)',
  },
  // Restore: CRIU checks each open regular file against what it recorded (it never saves their content).
  {
    match: /File .* has bad (size|mode|build-id)|Can't open file .* on restore/,
    class: 'file',
    hint: 'a file the job holds open changed or went away since the checkpoint (CRIU keeps no file content): put it back as it was, or restart from a version taken after the change',
  },
  // CRIU 4.1 on kernels ≥ 6.16: getsockopt(SO_PASSCRED/SO_PASSSEC) on inet sockets is EOPNOTSUPP.
  { match: /sockets?: Can't get \d+:\d+ opt: Operation not supported/, class: 'version', hint: `this CRIU cannot dump TCP/UDP sockets on this kernel: ${INSTALL_42}` },
  { match: /Connected TCP socket|consider using --tcp-established|tcp-established/, class: 'connection', hint: 'checkpoint with --tcp-established (or start the job with ckpt run --tcp-established)' },
  { match: /network.?lock|nftables|iptables/i, class: 'connection', hint: 'the network lock for --tcp-established failed: install nftables support or use CRIU ≥ 4.2 with --network-lock nftables' },
  {
    match: /[Ee]xternal (unix )?socket|ext_unix_sk|Can't dump half of stream unix|unix.*(peer|external)/,
    class: 'connection',
    hint: 'the job talks to a process outside it over a unix socket: include that process in the job, or end the connection before checkpointing',
  },
  { match: /file locks|--file-locks|flock|posix lock/i, class: 'file-lock', hint: 'checkpoint with --file-locks (or start the job with ckpt run --file-locks)' },
  { match: /\btty\b|\bptys?\b|\/dev\/pts|shell.?job|terminal/i, class: 'tty', hint: 'the job uses a terminal outside it: run it detached (ckpt run --detach) or give it its own pty' },
  {
    match: /Can't fork for \d+: File exists|pid.*in use|PIDs still in use/i,
    class: 'namespace',
    hint: 'a process holds one of the original PIDs: restore into a new PID namespace, or wait until it is gone',
  },
  {
    match: /pid namespace|PID namespace|namespace without the process init|\bnamespaces?\b|pidns|userns|netns/i,
    class: 'namespace',
    hint: 'a process of the job made a namespace CRIU cannot dump from outside (e.g. a nested PID namespace): run that part as a job of its own',
  },
  {
    match: /\bmnt\b|\bmount|overlayfs|autofs/i,
    class: 'mount',
    hint: 'a process holds a file on a mount CRIU cannot reach (unmounted meanwhile, or only in another mount namespace): close that file or keep its mount',
  },
  {
    match: /socket|\bsk\b|inet|netlink|packet/i,
    class: 'socket',
    hint: 'a process holds a kind of socket CRIU cannot dump (the line names its family): close it before checkpointing, or keep that process out of the job',
  },
  { match: /No space left|ENOSPC|Disk quota/i, class: 'space', hint: 'free disk space where the images go ($CKPT_HOME/images), or prune old versions (ckpt prune JOB --keep N)' },
  { match: /Cannot allocate memory|ENOMEM|Out of memory|oom/i, class: 'space', hint: 'the node is short of memory: free some, or raise the unit’s memory limit' },
  {
    match: /Operation not permitted|Permission denied|EPERM|EACCES|capabilit|cannot act as the job's owner/i,
    class: 'permission',
    hint: 'criu acts as root for root’s units (CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_CHECKPOINT_RESTORE; CAP_SYS_RESOURCE for a member of another user) and as the owner for a user’s units: every process of a unit must run as one user',
  },
  { match: /vdso|vDSO|kernel|not supported|Unsupported|too old|CRIU ≥|no usable criu|criu not found/i, class: 'version', hint: INSTALL_42 },
  {
    match: /Unseizable|state D|killed after \d+ ms|timed out|timeout|deadline|did not freeze/i,
    class: 'timeout',
    hint: 'a process could not be stopped in time (uninterruptible I/O, state D): try again once its I/O completes',
  },
  { match: /No such process|ESRCH|is gone|has ended|exited|vanished/i, class: 'vanished', hint: 'a process of the job ended while it was being checkpointed: try again' },
  {
    match: /images|manifest|SHA-256|pstree|do not match the plan|\.img\b/i,
    class: 'images',
    hint: 'the images are damaged or do not match the job: check them (ckpt audit JOB --verify) or use another version (ckpt checkpoints JOB)',
  },
];

export interface CriuFailureInput {
  /** The step's error message (what ckpt says). */
  readonly message: string;
  /** CRIU's own error lines (from its log), most relevant first or last: all are searched. */
  readonly errorLines?: readonly string[];
  /** CRIU RPC: cr_errno and cr_errmsg. */
  readonly errno?: number;
  readonly errmsg?: string;
  readonly log?: string;
}

const errnoName = (n: number): string | undefined => Object.entries(constants.errno).find(([, v]) => v === n)?.[0];

/**
 * A line with the job's file paths masked: a rule must match CRIU's words, not a directory that
 * happens to be called "pidns" or "mount". Device paths (/dev/pts/3) and CRIU's own source
 * references ("(criu/tty.c:2026)") stay.
 */
const withoutPaths = (line: string): string => line.replace(/(?<![\w(/])\/?(?:[\w.@+-]+\/)+[\w.@+-]*/g, (p) => (/^\/?dev\//.test(p) ? p : '<path>'));

/**
 * The class, message and hint of a failed step. The message is CRIU's first line that a rule
 * explains, in log order (the lines are a chain: the cause first, then what failed because of
 * it); otherwise ckpt's own message.
 */
export const classifyCriuFailure = (input: CriuFailureInput): Failure => {
  // CRIU's "Error (file:line): …" lines first (at -v4 its debug lines say "Can't …" too).
  const all = [...(input.errorLines ?? []), ...(input.errmsg ? [input.errmsg] : [])];
  const lines = [...all.filter((l) => /\bError \(/.test(l)), ...all.filter((l) => !/\bError \(/.test(l))];
  const name = input.errno !== undefined && input.errno > 0 ? errnoName(input.errno) : undefined;
  const extras = { ...(input.errno !== undefined && input.errno > 0 && { errno: input.errno }), ...(input.log && { log: input.log }) };
  for (const line of lines) {
    const rule = RULES.find((r) => r.match.test(withoutPaths(line)));
    if (rule) return { class: rule.class, message: line, ...(rule.hint && { hint: rule.hint }), ...extras };
  }
  for (const rule of RULES) {
    if (rule.match.test(input.message) || (name !== undefined && rule.match.test(name))) return { class: rule.class, message: input.message, ...(rule.hint && { hint: rule.hint }), ...extras };
  }
  return { class: 'internal', message: lines[0] ?? input.message, hint: input.log ? `see ${input.log}` : 'see the node agent’s log (ckpt agent status)', ...extras };
};
