// What a node agent records for a busy job, for benchmarks: forks, execs, exits and some group changes.
import type { ProposedEvent } from '../../domain/event-store.js';

/** Batch `seq` of `size` events for job stream number `stream`. */
export const processEvents = (stream: number, seq: number, size: number): ProposedEvent[] =>
  Array.from({ length: size }, (_, i): ProposedEvent => {
    const n = seq * size + i;
    const pid = 10_000 + (n % 50_000);
    const process = { pid, startTime: 1_000_000 + n };
    const on = { node: `node-${stream % 16}`, unit: `unit-${stream % 4}` };
    switch (n % 4) {
      case 0:
        return {
          type: 'ProcessForked',
          data: { ...on, parent: { pid: 9000 + stream, startTime: 500 }, child: process, pgid: 9000 + stream, sid: 9000 + stream, comm: 'worker', cgroup: `/ckpt/job-${stream}/${on.unit}` },
        };
      case 1:
        return { type: 'ProcessExecd', data: { ...on, process, comm: 'solver', argv: ['/usr/bin/solver', '--chunk', String(n)] } };
      case 2:
        return { type: 'ProcessGroupChanged', data: { ...on, process, pgid: pid } };
      default:
        return { type: 'ProcessExited', data: { ...on, process, status: n % 7 === 0 ? 1 : 0, signal: null } };
    }
  });
