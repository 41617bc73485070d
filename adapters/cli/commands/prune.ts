import { randomUUID } from 'node:crypto';
import { jobCoordinator } from '../../../domain/job-coordinator.js';
import { jobStream } from '../../../domain/identity.js';
import { authorize } from '../../../domain/requests.js';
import { readJobStream } from '../../../projections/checkpoints.js';
import { imagesRoot, listVersions, pruneVersions } from '../../images/image-store.js';
import { ckptHome } from '../../store/open.js';
import { checkName, flag, integerOption, UsageError } from '../args.js';
import { EXIT, type Command } from '../command.js';
import { formatBytes, writeOut } from '../output.js';
import { openStoreAsUser } from '../store.js';

export const pruneCommand: Command = {
  name: 'prune',
  summary: 'Remove a job’s old checkpoint images, keeping the newest N committed versions.',
  usage: 'JOB --keep N [--json]',
  description: [
    'Records a PruneRequested event, then removes the images of every committed version but the',
    'newest N, recording CheckpointPruned (version, bytes) for each. A version that a restart in',
    'progress restores from is never removed. Only the job’s owner or root may prune; a refusal is',
    'recorded. The history keeps every version; only its images go.',
  ].join('\n'),
  options: [
    { name: 'keep', value: 'N', description: 'how many of the newest committed versions to keep (≥ 1: the newest is never pruned)' },
    { name: 'json', description: 'print {job, keep, pruned: [{version, bytes}], kept: [versions]}' },
  ],
  examples: ['sudo ckpt prune nightly --keep 3'],
  async run(args) {
    const [job, ...extra] = args.positionals;
    if (!job || extra.length > 0) throw new UsageError('name exactly one job: ckpt prune JOB --keep N');
    checkName('job', job);
    const keep = integerOption(args, 'keep', 1);
    if (keep === undefined) throw new UsageError('say how many versions to keep: --keep N');
    const store = openStoreAsUser(args);
    try {
      if ((await store.streamRevision(jobStream(job))) === undefined) {
        process.stderr.write(`ckpt prune: unknown job "${job}" (ckpt jobs lists them)\n`);
        return EXIT.failed;
      }
      const request = randomUUID();
      const { revision } = await store.append(jobStream(job), [{ type: 'PruneRequested', data: { request, keep }, metadata: { correlationId: request } }]);
      const events = (await readJobStream(store, job))!;
      const requested = events.find((e) => e.revision === revision)!;
      const coordinator = jobCoordinator(job);
      const state = events.reduce(coordinator.evolve, coordinator.initial);
      const refused = authorize(state.checkpoint.job, requested, 'prune');
      if (refused) {
        await store.append(jobStream(job), [{ type: 'RequestRejected', data: { request, command: 'prune', code: 'unauthorized', reason: refused }, metadata: { causationId: requested.id, correlationId: request } }]);
        process.stderr.write(`ckpt prune: refused: ${refused}\n`);
        return EXIT.failed;
      }
      const root = imagesRoot(ckptHome());
      const inUse = new Set(state.restart.active ? [state.restart.active.version] : []);
      const sizes = new Map(listVersions(root, job).map((v) => [v.version, v.bytes ?? 0]));
      const pruned = pruneVersions(root, job, keep, inUse).map((version) => ({ version, bytes: sizes.get(version) ?? 0 }));
      if (pruned.length > 0) {
        await store.append(jobStream(job), pruned.map((p) => ({ type: 'CheckpointPruned' as const, data: p, metadata: { causationId: requested.id, correlationId: request } })));
      }
      const kept = listVersions(root, job).filter((v) => v.committed).map((v) => v.version);
      if (flag(args, 'json')) await writeOut(JSON.stringify({ job, keep, pruned, kept }, null, 2) + '\n');
      else console.log(pruned.length === 0 ? `nothing to prune: ${job} has ${kept.length} committed version(s) on disk` : `pruned ${pruned.map((p) => `v${p.version}`).join(', ')} of ${job} (${formatBytes(pruned.reduce((n, p) => n + p.bytes, 0))}); kept ${kept.map((v) => `v${v}`).join(', ') || 'none'}`);
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
