// Kernel process events (fork, exec, exit, setsid, comm, uid/gid, ptrace) from the Linux proc connector, read
// through the small C helper adapters/tracking/proc-connector.c (built by scripts/build-native.sh
// into dist/native/proc-connector). The helper prints one JSON object per line; see the C file.
//
// Readiness contract: the first value every subscription receives is `{ e: 'ready' }`, emitted
// once the kernel has acknowledged the subscription. Nothing happening before it is reported;
// every fork/exec/exit of processes started after it is (unless an `overrun` says events were
// lost). So: subscribe, wait for `ready`, then launch. The Observable is cold: each subscription
// starts its own helper, so share one subscription (e.g. `share()`) rather than subscribing twice.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Observable } from '../../domain/rx.js';

/** dist/native/proc-connector, resolved from dist/adapters/tracking/proc-connector.js. */
export const procConnectorPath: string = fileURLToPath(new URL('../../native/proc-connector', import.meta.url));

/** Fields shared by events about one task. `ts` is the kernel timestamp (ns since boot). */
interface TaskEvent {
  /** Kernel timestamp_ns. A double: exact below 2^53 ns (~104 days of uptime), ±1–2 ns after. */
  readonly ts: number;
  /** Thread id (the kernel's pid). */
  readonly pid: number;
  /** Process id (thread group id). pid !== tgid means a thread other than the main one. */
  readonly tgid: number;
}

export interface KernelReady {
  readonly e: 'ready';
  /** Effective SO_RCVBUF in bytes (the kernel reports twice the requested size). */
  readonly rcvbuf: number;
  /**
   * 'initial': the helper runs in the initial network namespace; 'entered': it runs in another one
   * (a testbed host's) and opened its socket in the initial one (see the C file).
   */
  readonly netns?: 'initial' | 'entered';
}
/** A new task: a process when pid === tgid, otherwise a thread of process tgid. */
export interface KernelFork {
  readonly e: 'fork';
  readonly ts: number;
  readonly ppid: number;
  readonly ptgid: number;
  readonly pid: number;
  readonly tgid: number;
}
export interface KernelExec extends TaskEvent {
  readonly e: 'exec';
}
export interface KernelExit extends TaskEvent {
  readonly e: 'exit';
  /** Raw wait status (the kernel's exit_code): status << 8, or the signal number (| 0x80 if it dumped core). */
  readonly code: number;
  /** Signal the parent is sent (exit_signal): normally 17 (SIGCHLD); -1 for threads. */
  readonly signal: number;
  readonly ppid: number;
  readonly ptgid: number;
  /** WEXITSTATUS(code) when the task exited normally, else null. */
  readonly status: number | null;
  /** WTERMSIG(code) when the task was killed by a signal, else null. */
  readonly termsig: number | null;
}
export interface KernelSid extends TaskEvent {
  readonly e: 'sid';
}
export interface KernelComm extends TaskEvent {
  readonly e: 'comm';
  readonly comm: string;
}
/** A process's real or effective user (uid) or group (gid) changed. */
export interface KernelIds extends TaskEvent {
  readonly e: 'uid' | 'gid';
  readonly real: number;
  readonly effective: number;
}
/** A tracer attached to the task (tracer: its tgid) or detached (tracer 0). */
export interface KernelPtrace extends TaskEvent {
  readonly e: 'ptrace';
  readonly tracer: number;
}
/** The kernel dropped events because the receive buffer was full; the stream continues. */
export interface KernelOverrun {
  readonly e: 'overrun';
  /** How many times receiving failed with ENOBUFS so far (one per congestion episode). */
  readonly count: number;
  /** Events the kernel dropped for this subscription so far (absent if the kernel cannot say). */
  readonly lost?: number;
}

export type KernelProcessEvent = KernelReady | KernelFork | KernelExec | KernelExit | KernelSid | KernelComm | KernelIds | KernelPtrace | KernelOverrun;

/** The helper's fatal-error line; never emitted: the Observable errors with its message instead. */
export interface KernelHelperError {
  readonly e: 'error';
  readonly message: string;
}

export interface ProcConnectorOptions {
  /** Netlink receive buffer in bytes (default 16 MiB in the helper). Too small loses events. */
  readonly rcvbuf?: number;
  /** Helper executable; defaults to procConnectorPath. */
  readonly helperPath?: string;
  /**
   * The initial network namespace, as a file (default /proc/1/ns/net): a helper in another one
   * opens its socket there. Needed only where /proc/1 is closed to root (some sandboxes).
   */
  readonly initialNetns?: string;
}

const EVENT_KINDS: ReadonlySet<string> = new Set(['ready', 'fork', 'exec', 'exit', 'sid', 'comm', 'uid', 'gid', 'ptrace', 'overrun']);
const MAX_PENDING_CHARS = 1 << 20; // no helper line is anywhere near this long
const MAX_STDERR_CHARS = 8192;
const KILL_GRACE_MS = 2000;

/**
 * Spawns the helper and emits its events; `ready` first (see the contract at the top of the file).
 * Errors when the helper is missing or not executable, when it reports a fatal error or exits
 * non-zero (e.g. without root), or when it prints something that is not a JSON line. Completes if
 * the helper ends on its own with status 0. Unsubscribing terminates the helper.
 */
export const watchKernelProcessEvents = (options: ProcConnectorOptions = {}): Observable<KernelProcessEvent> =>
  new Observable<KernelProcessEvent>((subscriber) => {
    const helper = options.helperPath ?? procConnectorPath;
    const args: string[] = [];
    if (options.rcvbuf !== undefined) {
      if (!Number.isSafeInteger(options.rcvbuf) || options.rcvbuf <= 0 || options.rcvbuf > 0x7fffffff) {
        subscriber.error(new RangeError(`rcvbuf must be a positive integer number of bytes, got ${options.rcvbuf}`));
        return;
      }
      args.push('--rcvbuf', String(options.rcvbuf));
    }
    if (options.initialNetns !== undefined) {
      if (!options.initialNetns.startsWith('/')) {
        subscriber.error(new RangeError(`the initial network namespace must be an absolute path, got ${JSON.stringify(options.initialNetns)}`));
        return;
      }
      args.push('--netns', options.initialNetns);
    }

    const child = spawn(helper, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let finished = false; // we errored/completed or the subscriber left
    let pending = '';
    let stderr = '';
    let helperError: string | undefined;
    let killTimer: NodeJS.Timeout | undefined;

    const fail = (err: Error) => {
      if (finished) return;
      finished = true;
      subscriber.error(err);
    };

    const handleLine = (line: string) => {
      if (line.length === 0) return;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        fail(new Error(`proc-connector printed a line that is not JSON: ${line.slice(0, 200)}`));
        return;
      }
      if (typeof parsed !== 'object' || parsed === null) return;
      const kind = (parsed as { e?: unknown }).e;
      if (kind === 'error') {
        const message = (parsed as { message?: unknown }).message;
        helperError = typeof message === 'string' ? message : 'unknown error';
      } else if (typeof kind === 'string' && EVENT_KINDS.has(kind)) {
        subscriber.next(parsed as KernelProcessEvent);
      }
      // Unknown kinds are skipped, so a newer helper can add some.
    };

    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      if (finished) return;
      let start = 0;
      let newline = chunk.indexOf('\n');
      if (newline === -1) {
        pending += chunk;
      } else {
        // The first line may continue what the previous chunk left over.
        handleLine(pending.length > 0 ? pending + chunk.slice(0, newline) : chunk.slice(0, newline));
        pending = '';
        start = newline + 1;
        while (!finished && (newline = chunk.indexOf('\n', start)) !== -1) {
          handleLine(chunk.slice(start, newline));
          start = newline + 1;
        }
        if (!finished && start < chunk.length) pending = chunk.slice(start);
      }
      if (pending.length > MAX_PENDING_CHARS) fail(new Error('proc-connector printed an over-long line'));
    });

    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      if (stderr.length < MAX_STDERR_CHARS) stderr += chunk.slice(0, MAX_STDERR_CHARS - stderr.length);
    });

    child.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') {
        fail(
          new Error(
            `proc-connector helper not found at ${helper}: run \`npm run build\` (it compiles the helper, ` +
              'which needs a C compiler: apt-get install gcc); the helper also needs root (CAP_NET_ADMIN)',
          ),
        );
      } else if (err.code === 'EACCES') {
        fail(new Error(`proc-connector helper at ${helper} is not executable: run \`npm run build\` again`));
      } else {
        fail(new Error(`cannot run proc-connector helper ${helper}: ${err.message}`));
      }
    });

    child.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
      if (killTimer) clearTimeout(killTimer);
      if (finished) return;
      if (pending.length > 0) {
        handleLine(pending);
        pending = '';
      }
      if (finished) return;
      if (code === 0) {
        finished = true;
        subscriber.complete();
        return;
      }
      const detail = helperError ?? (stderr.trim() || 'no message');
      const how = code !== null ? `exited with status ${code}` : `was killed by ${signal}`;
      fail(new Error(`proc-connector ${how}: ${detail}`));
    });

    return () => {
      finished = true;
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        child.kill('SIGTERM');
        killTimer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
        killTimer.unref();
      }
    };
  });
