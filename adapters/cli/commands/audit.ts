import { allJobs } from '../../../projections/jobs.js';
import { auditEntries, auditModel, type AuditEntry } from '../../../projections/audit.js';
import { readModel } from '../../../projections/read-model.js';
import { foldProgress, VERBOSE, verboseNotes } from '../verbose.js';
import { describeProblems, imagesRoot, readManifest, verifyVersion } from '../../images/image-store.js';
import { ckptHome } from '../../store/url.js';
import { describeChain, verifyChain } from '../../store/chain.js';
import { checkName, flag, UsageError } from '../args.js';
import { EXIT, type Command } from '../command.js';
import { actorName, formatBytes, table, whyLine, writeOut } from '../output.js';
import { openStore } from '../store.js';

type ImagesCheck = { version: number; state: 'ok' | 'pruned' | 'damaged'; problems?: string };

/**
 * Re-checks a committed version's images against its manifest (every file's size and SHA-256),
 * and the manifest against the SHA-256 the log recorded when the version was committed.
 */
const checkImages = (home: string, job: string, version: number, manifestSha256: string | undefined): ImagesCheck => {
  const root = imagesRoot(home);
  try {
    if (!readManifest(root, job, version)) return { version, state: 'pruned' };
    const result = verifyVersion(root, job, version, manifestSha256 ? { manifestSha256 } : {});
    return result.ok ? { version, state: 'ok' } : { version, state: 'damaged', problems: describeProblems(root, job, version, result.problems) };
  } catch (error) {
    return { version, state: 'damaged', problems: (error as Error).message };
  }
};

const who = (e: AuditEntry) => actorName(e.requestedBy);
const ms = (n: number | undefined) => (n === undefined ? '-' : `${Math.round(n)} ms`);

const row = (e: AuditEntry): string[] => {
  if (e.kind === 'checkpoint') {
    return [e.requestedAt, who(e), 'checkpoint', e.version === null ? '-' : `v${e.version}`, e.outcome, ms(e.durationMs), e.bytes ? formatBytes(e.bytes) : '-', String(e.units.length), String(e.membership.length), whyLine(e.reason, e.failure)];
  }
  if (e.kind === 'restart') {
    const ns = e.units.some((u) => u.pidNamespace) ? ' (new PID ns)' : '';
    return [e.requestedAt, who(e), `restart${e.restart === null ? '' : ` r${e.restart}`}`, e.version === null ? '-' : `v${e.version}`, e.outcome + ns, ms(e.durationMs), '-', String(e.units.length), String(e.membership.length), whyLine(e.reason, e.failure)];
  }
  return [e.requestedAt, who(e), `prune --keep ${e.keep}`, e.pruned.map((p) => `v${p.version}`).join(',') || '-', e.outcome, '-', e.pruned.length ? formatBytes(e.pruned.reduce((n, p) => n + p.bytes, 0)) : '-', '-', '-', e.reason ?? ''];
};

export const auditCommand: Command = {
  usage: '[JOB] [--json] [--verify] [--verbose]',
  description: [
    'Folded from the log: each request with who asked (user and uid), when, the version (and restart',
    'number), outcome, reason, duration, bytes, units, and the job’s running processes at that moment',
    '(--json lists them, and each unit’s CRIU statistics of its dump or restore). Refused requests',
    '(not the owner, busy, nothing to restore) are listed too.',
    'With --verify, the log’s digest chain is checked (every event of every stream, naming the first',
    'altered, missing or inserted event by position), every committed version still on disk is checked',
    'against its manifest (size and SHA-256 of every file), and each manifest against the SHA-256 the log',
    'recorded when it was committed; exit status 1 on any problem.',
    'Read from each job’s audit snapshot in the store and the events after it (--verbose says how).',
  ].join('\n'),
  options: [
    { name: 'json', description: 'a JSON array per job: {job, entries: [{kind, request, requestedBy, requestedAt, version, restart, outcome, reason, durationMs, bytes, units (each with CRIU’s stats), processes, membership}], images, chain}; chain (with --verify) is the whole log’s: {events, streams, problem, heads}' },
    { name: 'verify', description: 'check the log’s digest chain, and the images and manifest of every committed version against the log' },
    VERBOSE,
  ],
  examples: ['ckpt audit', 'ckpt audit nightly --verify', 'ckpt audit nightly --json | jq ".[0].entries[] | select(.kind == \\"restart\\")"'],
  async run(args) {
    const [only, ...extra] = args.positionals;
    if (extra.length > 0) throw new UsageError('name at most one job: ckpt audit [JOB]');
    if (only !== undefined) checkName('job', only);
    const verify = flag(args, 'verify');
    const store = openStore(args);
    try {
      // The chain first: a damaged log is reported as such before any of it is folded.
      const chain = verify ? await verifyChain(store, { heads: flag(args, 'json') }) : undefined;
      if (chain?.problem) process.stderr.write(`${describeChain(chain)}\n`);
      const jobs = only ? [only] : (await allJobs(store)).map((j) => j.job);
      const home = ckptHome();
      const reports = [];
      for (const job of jobs) {
        const fold = foldProgress('audit', flag(args, 'json'));
        const read = await readModel(store, auditModel, job, fold);
        fold.done();
        verboseNotes(args, 'audit', read);
        if (read.position < 0) {
          process.stderr.write(`ckpt audit: unknown job "${job}" (ckpt jobs lists them)\n`);
          return EXIT.failed;
        }
        const entries = auditEntries(read.state);
        const committed = entries.flatMap((e) => (e.kind === 'checkpoint' && e.outcome === 'committed' && e.version !== null ? [[e.version, e.manifest] as const] : []));
        const images = verify ? committed.map(([v, manifest]) => checkImages(home, job, v, manifest)) : undefined;
        reports.push({ job, entries, ...(images && { images }) });
      }
      const damaged = reports.flatMap((r) => (r.images ?? []).filter((i) => i.state === 'damaged').map((i) => ({ job: r.job, ...i })));
      if (flag(args, 'json')) await writeOut(JSON.stringify(chain ? reports.map((r) => ({ ...r, chain })) : reports, null, 2) + '\n');
      else {
        const out: string[] = [];
        for (const r of reports) {
          out.push(`job ${r.job}: ${r.entries.length} request(s)`);
          if (r.entries.length > 0) out.push(table(['REQUESTED', 'BY', 'WHAT', 'VERSION', 'OUTCOME', 'DURATION', 'SIZE', 'UNITS', 'PROCS', 'REASON'], r.entries.map(row)).trimEnd());
          for (const i of r.images ?? []) out.push(`  images of v${i.version}: ${i.state}${i.problems ? ` — ${i.problems}` : ''}`);
          out.push('');
        }
        if (chain && !chain.problem) out.push(describeChain(chain), '');
        await writeOut(out.join('\n'));
      }
      return damaged.length > 0 || chain?.problem ? EXIT.failed : EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
