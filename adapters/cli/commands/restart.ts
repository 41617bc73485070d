import { randomUUID } from 'node:crypto';
import { NAME_PATTERN } from '../../../domain/codecs.js';
import { jobStream } from '../../../domain/identity.js';
import { jobInfo } from '../../../projections/jobs.js';
import { foldRestarts, type RestartSummary } from '../../../projections/restarts.js';
import { checkName, durationOption, flag, integerOption, listOption, UsageError } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { DEFAULT_TIMEOUT_MS, PLAN_WAIT_MS, submitRequest } from '../follow.js';
import { whyLine, writeOut } from '../output.js';
import { openStoreAsUser } from '../store.js';
import { ensureAgent } from './agent.js';

const RESTART_EVENT = /^(Restart|Unit(ImagesVerif|RestorePrepare|Restor|Rollback|RolledBack)|RequestRejected)/;

const progressLine = (r: RestartSummary): string =>
  `restart${r.restart === null ? '' : ` r${r.restart}`}${r.version === null ? '' : ` from v${r.version}`}: ${r.phase}${r.phase === 'rolling back' ? ` (${whyLine(r.reason, r.failure)})` : ''}`;

export const restartReport = (job: string, r: RestartSummary) => ({
  job,
  request: r.request,
  restart: r.restart,
  version: r.version,
  outcome: r.outcome === 'in progress' ? (r.restart === null ? 'requested' : 'planned') : r.outcome,
  phase: r.phase,
  reason: r.reason,
  failure: r.failure ?? null,
  units: r.units,
  processes: r.processes,
  durationMs: r.durationMs ?? null,
});

/** `--place UNIT=NODE`, repeatable. */
const placementOf = (values: readonly string[]) =>
  values.map((v) => {
    const [unit, node, ...rest] = v.split('=');
    if (!unit || !node || rest.length > 0 || !NAME_PATTERN.test(unit) || !NAME_PATTERN.test(node)) throw new UsageError(`--place needs UNIT=NODE (names matching ${NAME_PATTERN.source}), got "${v}"`);
    return { unit, node };
  });

export const restartCommand: Command = {
  usage: 'JOB [--version N] [--place UNIT=NODE]… [--wait] [--timeout DURATION] [--json]',
  description: [
    'Records a RestartRequested event; the coordinator (inside every node agent) plans the restart',
    'from a committed version (default: the latest) and places each unit on the node it was dumped on',
    '(or --place). Per unit, its node agent creates the unit’s cgroups with the limits recorded for it,',
    'makes sure the restored PIDs cannot collide — it waits until the original processes are gone and',
    'reaped, or, when their PIDs are taken (the original still runs: a clone), restores into a new PID',
    'namespace — then restores with CRIU into those cgroups while it checks every image file against',
    'the manifest (size and SHA-256): the restored processes run only once the check passed; a changed',
    'byte fails the restart, naming the file. Each process’s new identity is recorded, linked to the',
    'one it had at checkpoint time; `ckpt ps` then shows them and everything they fork. A failed unit',
    'or the timeout rolls back every restored part. Only the',
    'job’s owner or root may restart it; a refusal is recorded. Exit 0 only when restored (without',
    '--wait: planned); 3 when --wait reached the deadline (plus 2 s) with no outcome recorded (no agent alive?).',
  ].join('\n'),
  options: [
    { name: 'version', value: 'N', description: 'the committed version to restart from (default: the latest; ckpt checkpoints JOB lists them)' },
    { name: 'place', value: 'UNIT=NODE', description: 'restore UNIT on NODE (repeatable; default: the node it was dumped on)', repeatable: true },
    { name: 'wait', short: 'w', description: 'wait for the outcome, showing progress' },
    { name: 'timeout', value: 'DURATION', description: 'deadline of the whole restart, e.g. 30s or 2m (default 2m); reached → rolled back' },
    { name: 'node', value: 'NAME', description: 'this node’s name, to start its agent if needed (default: $CKPT_NODE, else the host name)' },
    { name: 'json', description: 'print {job, request, restart, version, outcome (restored | failed | rejected), reason, units, processes: [{unit, was, now, nsPid}], durationMs}' },
  ],
  examples: ['sudo ckpt restart nightly --wait', 'sudo ckpt restart nightly --version 3 --wait --json', 'sudo ckpt restart sim --place rank1=n2 --wait'],
  async run(args) {
    const [job, ...extra] = args.positionals;
    if (!job || extra.length > 0) throw new UsageError('name exactly one job: ckpt restart JOB');
    checkName('job', job);
    const version = integerOption(args, 'version', 1) ?? null;
    const placement = placementOf(listOption(args, 'place'));
    const timeoutMs = durationOption(args, 'timeout') ?? DEFAULT_TIMEOUT_MS;
    const wait = flag(args, 'wait');
    const json = flag(args, 'json');
    const store = openStoreAsUser(args);
    try {
      // Someone else's job reads as empty here (the agent shows a user only their own jobs): it
      // exists if its stream does, and the coordinator refuses the request on record.
      const info = await jobInfo(store, job);
      if (!info && (await store.streamRevision(jobStream(job))) === undefined) {
        process.stderr.write(`ckpt restart: unknown job "${job}" (ckpt jobs lists them)\n`);
        return EXIT.failed;
      }
      await ensureAgent(args);

      const request = randomUUID();
      const { summary, timedOut } = await submitRequest({
        store,
        job,
        event: { type: 'RestartRequested', data: { request, version, placement, timeoutMs } },
        relevant: (e) => RESTART_EVENT.test(e.type),
        summarize: (events) => foldRestarts(events).find((r) => r.request === request)!,
        planned: (r) => r.restart !== null,
        final: (r) => r.outcome !== 'in progress',
        wait,
        json,
        line: progressLine,
      });
      const report = restartReport(job, summary);
      if (json) await writeOut(JSON.stringify({ ...report, timedOut }, null, 2) + '\n');
      else if (timedOut) {
        process.stderr.write(
          summary.restart === null
            ? `ckpt restart: no coordinator answered request ${request} within ${PLAN_WAIT_MS / 1000} s: is a node agent running? (ckpt agent status)\n`
            : `ckpt restart: timed out: the deadline (${timeoutMs / 1000} s) passed with restart r${summary.restart} of ${job} at phase "${summary.phase}" and no outcome recorded: a node agent may be down (ckpt agent status)\n`,
        );
      } else if (summary.outcome === 'rejected') process.stderr.write(`ckpt restart: refused: ${summary.reason}\n`);
      else if (summary.outcome === 'failed') process.stderr.write(`ckpt restart: restart r${summary.restart} of ${job} failed and was rolled back: ${whyLine(summary.reason, summary.failure)}\n`);
      else if (!wait) console.log(`restart r${summary.restart} of ${job} from v${summary.version} planned; follow it with: ckpt audit ${job}`);
      else {
        const ns = summary.units.filter((u) => u.pidNamespace).map((u) => u.unit);
        console.log(
          `${job} restored from v${summary.version} (restart r${summary.restart}): ${summary.processes.length} processes in ${summary.units.length} unit(s), ` +
            `${summary.durationMs ?? '-'} ms${ns.length > 0 ? `; ${ns.join(', ')} in a new PID namespace (the original PIDs were taken)` : ''}`,
        );
        for (const p of summary.processes) console.log(`  ${p.unit}  ${p.was.pid} → ${p.now.pid}${p.nsPid !== null ? ` (pid ${p.nsPid} in its namespace)` : ''}`);
      }
      if (timedOut) return wait && summary.restart !== null ? EXIT.timedOut : EXIT.failed;
      return (wait ? summary.outcome === 'restored' : summary.restart !== null) ? EXIT.ok : EXIT.failed;
    } finally {
      await store.close();
    }
  },
};
