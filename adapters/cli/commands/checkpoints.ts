import { checkpointSummaries, checkpointsModel } from '../../../projections/checkpoints.js';
import { readModel } from '../../../projections/read-model.js';
import { imagesRoot, listVersions } from '../../images/image-store.js';
import { ckptHome } from '../../store/url.js';
import { checkName, flag, UsageError } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { formatBytes, table, whyLine, writeOut } from '../output.js';
import { openStore } from '../store.js';
import { foldProgress, VERBOSE, verboseNotes } from '../verbose.js';
import { nodeOf } from './agent.js';
import { checkpointReport } from './checkpoint.js';

export const checkpointsCommand: Command = {
  usage: 'JOB [--json] [--verbose]',
  description: [
    'Every checkpoint request of the job, oldest first, folded from its history: the version it',
    'became (or why it was refused), outcome (committed, aborted, in progress), processes captured,',
    'bytes, duration from request to completion, how long the job stayed frozen, the reason of an',
    'abort, where the committed images are (each node’s in its own $CKPT_HOME/images/JOB/vN; pruned once a',
    'prune decided it), and CRIU’s',
    'own figures of the dump (CRIU column: the longest time CRIU kept a unit frozen, pages written;',
    '--json has every unit’s stats: freezing, frozen, memdump, memwrite ms; pages scanned, written…).',
    'Read from the job’s checkpoints snapshot in the store and the events after it (--verbose says how).',
  ].join('\n'),
  options: [
    {
      name: 'json',
      description:
        'a JSON array of {version, outcome, phase, reason, units (each with CRIU’s stats and its steps by the log: {freeze: {requestedAt, requested, endedAt, ended, result}, …}), processes, files, bytes, durationMs, frozenMs, manifest, manifests: {NODE: SHA-256 of its manifest}, pruned: {nodes that removed their part}, images, onDisk (here), requestedAt, requestedBy}',
    },
    { name: 'node', value: 'NAME', description: 'this node’s name, whose images root is here (default: $CKPT_NODE, else the host name)' },
    VERBOSE,
  ],
  examples: ['ckpt checkpoints nightly', 'ckpt checkpoints nightly --json | jq ".[] | select(.outcome == \\"committed\\") | .version"'],
  async run(args) {
    const [job, ...extra] = args.positionals;
    if (!job || extra.length > 0) throw new UsageError('name exactly one job: ckpt checkpoints JOB');
    checkName('job', job);
    const store = openStore(args);
    try {
      const fold = foldProgress('checkpoints', flag(args, 'json'));
      const read = await readModel(store, checkpointsModel, job, fold);
      fold.done();
      verboseNotes(args, 'checkpoints', read);
      if (read.position < 0) {
        process.stderr.write(`ckpt checkpoints: unknown job "${job}" (ckpt jobs lists them)\n`);
        return EXIT.failed;
      }
      const home = ckptHome();
      const onDisk = new Set(
        listVersions(imagesRoot(home), job)
          .filter((v) => v.committed)
          .map((v) => v.version),
      );
      const rows = checkpointSummaries(read.state).map((c) => ({
        ...checkpointReport(job, c, home),
        onDisk: c.version !== null && onDisk.has(c.version),
        requestedAt: c.requestedAt,
        requestedBy: c.requestedBy ?? null,
      }));
      if (flag(args, 'json')) {
        await writeOut(JSON.stringify(rows, null, 2) + '\n');
        return EXIT.ok;
      }
      if (rows.length === 0) {
        console.log(`no checkpoints of ${job} yet (take one with: ckpt checkpoint ${job} --wait)`);
        return EXIT.ok;
      }
      // Where the images are: each node holding units has its own part; here is this node's disk.
      const here = nodeOf(args);
      const where = (r: (typeof rows)[number]) => {
        if (r.outcome !== 'committed') return '-';
        if (r.pruned || (!r.onDisk && r.units.every((u) => u.node === here))) return 'pruned';
        const nodes = [...new Set(r.units.map((u) => u.node))];
        return nodes.length === 1 && nodes[0] === here ? 'yes' : nodes.map((n) => (n === here ? `${n} (here)` : n)).join(', ');
      };
      const by = (r: (typeof rows)[number]) => (r.requestedBy?.kind === 'user' ? `uid ${r.requestedBy.uid}` : (r.requestedBy?.kind ?? '-'));
      const ms = (n: number | null) => (n === null ? '-' : `${Math.round(n)} ms`);
      const criu = (r: (typeof rows)[number]) => {
        const stats = r.units.flatMap((u) => (u.stats ? [u.stats] : []));
        if (stats.length === 0) return '-';
        return `${ms(Math.max(...stats.map((s) => s.frozenMs)))}, ${stats.reduce((n, s) => n + s.pagesWritten, 0)} pages`;
      };
      await writeOut(
        table(
          ['VERSION', 'OUTCOME', 'REQUESTED', 'BY', 'UNITS', 'PROCS', 'SIZE', 'DURATION', 'FROZEN', 'CRIU', 'ON DISK', 'REASON'],
          rows.map((r) => [
            r.version === null ? '-' : `v${r.version}`,
            r.outcome === 'committed' && r.stopped ? 'committed (stopped)' : r.outcome,
            r.requestedAt,
            by(r),
            String(r.units.length),
            String(r.processes),
            r.bytes > 0 ? formatBytes(r.bytes) : '-',
            ms(r.durationMs),
            ms(r.frozenMs),
            criu(r),
            where(r),
            whyLine(r.reason, r.failure),
          ]),
        ),
      );
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
