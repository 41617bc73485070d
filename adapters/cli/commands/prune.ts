import { RequestRefusedError } from '../agent-client.js';
import { checkName, flag, integerOption, UsageError } from '../args.js';
import { EXIT, type Command } from '../command.js';
import { formatBytes, writeOut } from '../output.js';
import { openStoreAsUser } from '../store.js';

export const pruneCommand: Command = {
  usage: 'JOB --keep N [--json]',
  description: [
    'Asks the node agent to prune: it records a PruneRequested event, then removes the images of every',
    'committed version but the newest N that verify (every file re-hashed against the manifest: a damaged',
    'version cannot be restored, so it never counts as one of the N; a damaged one newer than those is',
    'kept for you to look at), recording CheckpointPruned (version, bytes) for each. A version that a restart in',
    'progress restores from is never removed. Only the job’s owner or root may prune; a refusal is',
    'recorded. The history keeps every version; only its images go.',
  ].join('\n'),
  options: [
    { name: 'keep', value: 'N', description: 'how many of the newest committed versions that verify to keep (≥ 1)' },
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
      // The node agent prunes: it records the request as the caller, refuses (on record) anyone
      // but the owner and root, and removes the images as root.
      const { pruned, kept } = await store.prune(job, keep).catch((error: Error) => {
        if (error instanceof RequestRefusedError) throw new Error(error.code === 'not-found' ? error.message : `refused: ${error.message}`);
        throw error;
      });
      if (flag(args, 'json')) await writeOut(JSON.stringify({ job, keep, pruned, kept }, null, 2) + '\n');
      else console.log(pruned.length === 0 ? `nothing to prune: ${job} has ${kept.length} committed version(s) on disk` : `pruned ${pruned.map((p) => `v${p.version}`).join(', ')} of ${job} (${formatBytes(pruned.reduce((n, p) => n + p.bytes, 0))}); kept ${kept.map((v) => `v${v}`).join(', ') || 'none'}`);
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
