import { RequestRefusedError } from '../agent-client.js';
import { checkName, durationOption, flag, integerOption, UsageError } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { formatBytes, writeOut } from '../output.js';
import { openStoreAsUser } from '../store.js';

export const pruneCommand: Command = {
  usage: 'JOB --keep N [--timeout DURATION] [--json]',
  description: [
    'Asks the node agent to prune: it records a PruneRequested event; the coordinator decides from the',
    'log which committed versions go — all but the newest N (a version a node’s agent reported damaged',
    'or gone, ckpt audit --verify, does not count as one of them and newer damaged ones stay for a look),',
    'never one a restart in progress restores from — (PrunePlanned, and ImagesPruneRequested for each',
    'node holding units of each), and every such',
    'node’s agent removes its own part of the images (CheckpointPruned with its node), with leftovers of',
    'aborted checkpoints older than it. From the decision on, a pruned version cannot be restarted. A node',
    'whose agent is down removes its part when it runs again: the answer names it. Only the job’s owner or',
    'root may prune; a refusal is recorded. The history keeps every version; only its images go.',
  ].join('\n'),
  options: [
    { name: 'keep', value: 'N', description: 'how many of the newest committed versions to keep (≥ 1)' },
    { name: 'timeout', value: 'DURATION', description: 'how long to wait for every node to remove its part, e.g. 30s (default 30s)' },
    { name: 'json', description: 'print {job, keep, pruned: [{version, bytes, nodes: {NODE: bytes}}], kept: [versions], waiting: [{version, nodes}], failed: [{version, node, reason}]}' },
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
      const { pruned, kept, waiting, failed } = await store.prune(job, keep, durationOption(args, 'timeout')).catch((error: Error) => {
        if (error instanceof RequestRefusedError) throw new Error(error.code === 'not-found' ? error.message : `refused: ${error.message}`);
        throw error;
      });
      if (flag(args, 'json')) await writeOut(JSON.stringify({ job, keep, pruned, kept, waiting, failed }, null, 2) + '\n');
      else {
        const where = (nodes: Readonly<Record<string, number>>) => Object.keys(nodes).join(', ');
        console.log(
          pruned.length === 0
            ? `nothing to prune: ${job} has ${kept.length} committed version(s)`
            : `pruned ${pruned.map((p) => `v${p.version}${Object.keys(p.nodes).length > 0 ? ` (on ${where(p.nodes)})` : ''}`).join(', ')} of ${job} (${formatBytes(pruned.reduce((n, p) => n + p.bytes, 0))}); kept ${kept.map((v) => `v${v}`).join(', ') || 'none'}`,
        );
        for (const w of waiting) process.stderr.write(`v${w.version}: ${w.nodes.join(', ')} did not answer in time: its agent may be down (ckpt nodes); it removes its part when it runs again\n`);
        for (const f of failed) process.stderr.write(`v${f.version} on ${f.node}: could not remove its part: ${f.reason}\n`);
      }
      return waiting.length > 0 || failed.length > 0 ? EXIT.failed : EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
