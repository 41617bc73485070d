import { randomUUID } from 'node:crypto';
import { jobStream } from '../../../domain/identity.js';
import { type CheckpointSummary, foldCheckpoints } from '../../../projections/checkpoints.js';
import { jobInfo } from '../../../projections/jobs.js';
import { imagesRoot, versionDir } from '../../images/image-store.js';
import { ckptHome } from '../../store/url.js';
import { captureOptions, checkName, durationOption, flag, UsageError } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { DEFAULT_TIMEOUT_MS, PLAN_WAIT_MS, submitRequest } from '../follow.js';
import { formatBytes, whyLine, writeOut } from '../output.js';
import { openStoreAsUser } from '../store.js';
import { ensureAgent, nodeOf } from './agent.js';

const CHECKPOINT_EVENT = /^(Checkpoint|Unit(Freeze|Frozen|Dump|Verif|Thaw|Stop|Abort)|RequestRejected)/;

const ms = (n: number | undefined) => (n === undefined ? '-' : `${Math.round(n)} ms`);

/** What the user sees, and what `--json` prints. */
export const checkpointReport = (job: string, c: CheckpointSummary, home: string) => ({
  job,
  request: c.request,
  version: c.version,
  outcome: c.outcome === 'in progress' ? (c.version === null ? 'requested' : 'planned') : c.outcome,
  phase: c.phase,
  reason: c.reason,
  failure: c.failure ?? null,
  units: c.units,
  processes: c.units.reduce((n, u) => n + (u.captured?.length ?? u.planned), 0),
  files: c.files,
  bytes: c.bytes,
  durationMs: c.durationMs ?? null,
  frozenMs: c.frozenMs ?? null,
  manifest: c.manifest ?? null,
  /** Each node's manifest digest: the units on a node are in its own images root. */
  manifests: c.manifests ?? null,
  pruned: c.pruned ?? null,
  images: c.version !== null && c.outcome === 'committed' ? versionDir(imagesRoot(home), job, c.version) : null,
  stopped: c.completed === 'stopped',
});

/** Where a version's images are: each node's units in its own images root; this node's directory given. */
const whereImages = (c: CheckpointSummary, here: string | null, node: string): string => {
  const nodes = [...new Set(c.units.map((u) => u.node))];
  if (nodes.length === 1 && nodes[0] === node) return `images in ${here}`;
  const units = (n: string) =>
    c.units
      .filter((u) => u.node === n)
      .map((u) => u.unit)
      .join(', ');
  return `images of ${nodes.map((n) => (n === node ? `${units(n)} here in ${here}` : `${units(n)} on ${n}`)).join('; ')}`;
};

const progressLine = (c: CheckpointSummary): string => {
  const v = c.version === null ? '' : ` v${c.version}`;
  const failed = c.units.filter((u) => u.failed).map((u) => `${u.unit}: ${whyLine(u.failed, u.failure)}`);
  if (c.phase === 'aborting') return `checkpoint${v} aborting (${whyLine(c.reason, c.failure)}); thawing every unit and removing partial images`;
  return `checkpoint${v}: ${c.phase}${failed.length > 0 ? ` — ${failed.join('; ')}` : ''}`;
};

export const checkpointCommand: Command = {
  usage: 'JOB [--wait] [--timeout DURATION] [--freeze-budget DURATION] [--stop] [--tcp-established] [--file-locks] [--json]',
  description: [
    'Records a CheckpointRequested event; the coordinator (it runs inside every node agent) plans',
    'the checkpoint from the job’s membership at that point of the log — each unit is captured whole:',
    'its cgroup is frozen and its one process tree (the unit’s init and everything under it, escaped',
    'daemons included) is dumped by CRIU — then freezes every unit, dumps them in parallel, verifies',
    'that the images hold exactly the planned processes, commits the version (manifest with the size',
    'and SHA-256 of every file, fsynced) and thaws the job, or stops it with --stop (for migration).',
    'A failure anywhere, or the timeout, aborts: every unit is thawed and partial images are removed.',
    'A plan that would miss a process (one outside the unit’s cgroup, a dependent) is refused.',
    'Before a unit is frozen, what it holds is checked: an established TCP connection without',
    '--tcp-established, a file lock without --file-locks, a unix socket connected to a process outside',
    'the job, or a socket the node’s CRIU cannot dump refuses the checkpoint, naming each one; the job',
    'keeps running. With --tcp-established --stop the connections stay locked until the restart on',
    'this node repairs them: a peer that stays connected keeps its connection.',
    'A unit that does not freeze cleanly within the freeze budget (a task in uninterruptible I/O)',
    'fails the checkpoint with class timeout, naming each task; the unit is thawed at once.',
    'A failure is shown on one line: its class (socket, connection, mount, namespace, tty, file-lock,',
    'space, permission, version, vanished, timeout, images), CRIU’s own message and what to do.',
    'Images: $CKPT_HOME/images/JOB/vN/UNIT/. Without --wait, ckpt returns once the checkpoint is',
    'planned (or refused); follow it with `ckpt checkpoints JOB`.',
    'With --wait, ckpt returns at the deadline (plus 2 s for the abort to be recorded) even when no agent',
    'is alive, saying which phase was reached. A unit never stays frozen past the deadline: a freeze',
    'guard started with each freeze thaws it, even if the node agent died.',
    'Exit status 0 only when the checkpoint was committed (without --wait: planned); 3 when --wait',
    'reached the deadline with no outcome recorded.',
  ].join('\n'),
  options: [
    { name: 'wait', short: 'w', description: 'wait for the outcome, showing progress' },
    { name: 'timeout', value: 'DURATION', description: 'deadline of the whole checkpoint, e.g. 30s or 2m (default 2m); reached → aborted' },
    { name: 'freeze-budget', value: 'DURATION', description: 'how long each unit may take to freeze cleanly, e.g. 500ms or 5s (default 3s); over it → class timeout' },
    { name: 'stop', description: 'stop the job once the checkpoint is committed (to restart it elsewhere)' },
    { name: 'tcp-established', description: 'take established TCP connections too (TCP repair, the network locked during the dump); also: ckpt run --tcp-established' },
    { name: 'file-locks', description: 'take the file locks the job holds; also: ckpt run --file-locks' },
    { name: 'node', value: 'NAME', description: 'this node’s name, to start its agent if needed (default: $CKPT_NODE, else the host name)' },
    {
      name: 'json',
      description:
        'print {job, request, version, outcome, reason, failure: {class, message, hint, log}, units (each with its node: its images are in that node’s images root), processes, files, bytes, durationMs, frozenMs, manifest, manifests: {NODE: SHA-256 of its manifest}, pruned: {nodes} once pruned, images (this node’s directory)}',
    },
  ],
  examples: ['sudo ckpt checkpoint nightly --wait', 'sudo ckpt checkpoint nightly --wait --timeout 30s --json', 'sudo ckpt checkpoint nightly --wait --stop'],
  async run(args) {
    const [job, ...extra] = args.positionals;
    if (!job || extra.length > 0) throw new UsageError('name exactly one job: ckpt checkpoint JOB');
    checkName('job', job);
    const timeoutMs = durationOption(args, 'timeout') ?? DEFAULT_TIMEOUT_MS;
    const freezeBudgetMs = durationOption(args, 'freeze-budget');
    const options = captureOptions(args);
    const wait = flag(args, 'wait');
    const json = flag(args, 'json');
    const store = openStoreAsUser(args);
    try {
      // Someone else's job reads as empty here (the agent shows a user only their own jobs): it
      // exists if its stream does, and the coordinator refuses the request on record.
      const info = await jobInfo(store, job);
      if (!info && (await store.streamRevision(jobStream(job))) === undefined) {
        process.stderr.write(`ckpt checkpoint: unknown job "${job}" (ckpt jobs lists them)\n`);
        return EXIT.failed;
      }
      if (Object.values(info?.units ?? {}).some((u) => u.node === nodeOf(args))) await ensureAgent(args);

      const request = randomUUID();
      const { summary, timedOut } = await submitRequest({
        store,
        job,
        event: {
          type: 'CheckpointRequested',
          data: { request, stop: flag(args, 'stop'), timeoutMs, ...(options && { options }), ...(freezeBudgetMs !== undefined && { freezeBudgetMs }) },
        },
        relevant: (e) => CHECKPOINT_EVENT.test(e.type),
        summarize: (events) => foldCheckpoints(events).find((c) => c.request === request)!,
        planned: (c) => c.version !== null,
        final: (c) => c.outcome === 'rejected' || c.outcome === 'aborted' || c.phase === 'completed',
        wait,
        json,
        line: progressLine,
      });
      const report = checkpointReport(job, summary, ckptHome());
      if (json) await writeOut(JSON.stringify({ ...report, timedOut }, null, 2) + '\n');
      else if (timedOut) {
        process.stderr.write(
          summary.version === null
            ? `ckpt checkpoint: no coordinator answered request ${request} within ${PLAN_WAIT_MS / 1000} s: is a node agent running? (ckpt agent status)\n`
            : `ckpt checkpoint: timed out: the deadline (${timeoutMs / 1000} s) passed with checkpoint v${summary.version} of ${job} at phase "${summary.phase}" and no outcome recorded: ` +
                `a node agent may be down (ckpt agent status); its units are thawed by their freeze guards; the next agent start records the abort (ckpt checkpoints ${job})\n`,
        );
      } else if (summary.outcome === 'rejected') process.stderr.write(`ckpt checkpoint: refused: ${summary.reason}\n`);
      else if (summary.outcome === 'aborted') process.stderr.write(`ckpt checkpoint: checkpoint v${summary.version} of ${job} aborted: ${whyLine(summary.reason, summary.failure)}\n`);
      else if (!wait) console.log(`checkpoint v${summary.version} of ${job} planned (${summary.units.length} unit(s)); follow it with: ckpt checkpoints ${job}`);
      else {
        console.log(
          `checkpoint v${summary.version} of ${job} committed${report.stopped ? ' and the job stopped' : ''}: ${summary.units.length} unit(s), ${report.processes} processes, ` +
            `${formatBytes(summary.bytes)} in ${summary.files} files, ${ms(summary.durationMs)} (frozen ${ms(summary.frozenMs)}); ${whereImages(summary, report.images, nodeOf(args))}`,
        );
      }
      if (timedOut) return wait && summary.version !== null ? EXIT.timedOut : EXIT.failed;
      return (wait ? summary.outcome === 'committed' : summary.version !== null) ? EXIT.ok : EXIT.failed;
    } finally {
      await store.close();
    }
  },
};
