import { randomUUID } from 'node:crypto';
import type { EventStore } from '../../../domain/event-store.js';
import { jobStream } from '../../../domain/identity.js';
import { type AuditEntry, auditEntries, auditModel } from '../../../projections/audit.js';
import { allJobs } from '../../../projections/jobs.js';
import { type CommittedVersion, evolveNodeAnswers, type NodeAnswers, nodeParts } from '../../../projections/node-images.js';
import { readModel } from '../../../projections/read-model.js';
import { describeProblems, imagesRoot, readManifest, verifyVersion } from '../../images/image-store.js';
import { awaitFold } from '../../store/await-fold.js';
import { describeChain, verifyChain } from '../../store/chain.js';
import { ckptHome } from '../../store/url.js';
import { checkName, durationOption, flag, type ParsedArgs, UsageError } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { actorName, formatBytes, table, whyLine, writeOut } from '../output.js';
import { openStore, openStoreAsUser } from '../store.js';
import { foldProgress, VERBOSE, verboseNotes } from '../verbose.js';
import { nodeOf } from './agent.js';

type ImagesCheck = { version: number; state: 'ok' | 'pruned' | 'damaged'; problems?: string };
/** One node's part of a version: checked here, or by its own agent (asked through the log), or not answered. */
type NodeCheck = { version: number; node: string; units: readonly string[]; checkedBy: 'here' | 'agent' | 'nobody'; state: ImagesCheck['state'] | 'no answer'; problems?: string };

/** How long `--verify` waits for other nodes' agents unless told. */
const ANSWER_TIMEOUT_MS = 15_000;

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

/**
 * Every node's part of the job's committed versions: this node's images are checked here; another
 * node's are asked of its agent through the log (ImagesVerifyRequested), and its answer awaited up to
 * timeoutMs — the log is the only channel between hosts, and a node may not share this one's disk.
 */
const checkNodes = async (args: ParsedArgs, store: EventStore, home: string, job: string, entries: readonly AuditEntry[], timeoutMs: number): Promise<NodeCheck[]> => {
  const here = nodeOf(args);
  const versions: CommittedVersion[] = entries.flatMap((e) =>
    e.kind === 'checkpoint' && e.outcome === 'committed' && e.version !== null
      ? [{ version: e.version, units: e.units, ...(e.manifests && { manifests: e.manifests }), ...(e.manifest && { manifest: e.manifest }) }]
      : [],
  );
  const pruned = new Set(entries.flatMap((e) => (e.kind === 'prune' ? e.pruned.map((p) => p.version) : [])));
  const parts = nodeParts(versions, here, pruned);
  const checked: NodeCheck[] = parts.map((p) => {
    const part = { version: p.version, node: p.node, units: p.units };
    if (p.check === 'pruned') return { ...part, checkedBy: 'nobody', state: 'pruned' };
    if (p.check === 'ask') return { ...part, checkedBy: 'agent', state: 'no answer' };
    const { state, problems } = checkImages(home, job, p.version, p.manifest);
    return { ...part, checkedBy: 'here', state, ...(problems && { problems }) };
  });
  const asking = checked.flatMap((c, i) => (c.checkedBy === 'agent' ? [{ i, request: randomUUID() }] : []));
  if (asking.length === 0) return checked;
  const requests = openStoreAsUser(args);
  try {
    const from = ((await store.streamRevision(jobStream(job))) ?? -1) + 1;
    for (const { i, request } of asking) {
      const { version, node } = checked[i]!;
      try {
        await requests.append(jobStream(job), [{ type: 'ImagesVerifyRequested', data: { request, version, node }, metadata: { correlationId: request } }]);
      } catch (error) {
        checked[i] = { ...checked[i]!, checkedBy: 'nobody', problems: `could not ask ${node}'s agent: ${(error as Error).message}` };
      }
    }
    const asked = new Set(asking.map((a) => a.request));
    const { state: answers } = await awaitFold(
      store,
      jobStream(job),
      from,
      { initial: {} as NodeAnswers, evolve: evolveNodeAnswers(asked), settled: (a) => Object.keys(a).length === asked.size },
      timeoutMs,
    );
    for (const { i, request } of asking) {
      const answer = answers[request];
      const c = checked[i]!;
      if (!answer) {
        if (c.checkedBy === 'agent') checked[i] = { ...c, problems: `${c.node} did not answer within ${timeoutMs / 1000} s: its agent may be down (ckpt nodes)` };
        continue;
      }
      checked[i] = answer.ok ? { ...c, state: 'ok' } : { ...c, state: /was pruned/.test(answer.reason) ? 'pruned' : 'damaged', problems: answer.reason };
    }
    return checked;
  } finally {
    await requests.close();
  }
};

const nodeLine = (c: NodeCheck, here: string, alone: boolean): string => {
  if (alone && c.checkedBy === 'here') return `  images of v${c.version}: ${c.state}${c.problems ? ` — ${c.problems}` : ''}`;
  const where = `${c.units.join(', ')} on ${c.node}`;
  const by =
    c.checkedBy === 'here' ? (c.node === here ? '' : ` (the same manifest as ${here}'s, checked here)`) : c.node !== here && c.state !== 'pruned' ? `: not on this node — ${c.node}'s agent says` : '';
  return `  images of v${c.version} (${where})${by}: ${c.state}${c.problems ? ` — ${c.problems}` : ''}`;
};

const who = (e: AuditEntry) => actorName(e.requestedBy);
const ms = (n: number | undefined) => (n === undefined ? '-' : `${Math.round(n)} ms`);

const row = (e: AuditEntry): string[] => {
  if (e.kind === 'checkpoint') {
    return [
      e.requestedAt,
      who(e),
      'checkpoint',
      e.version === null ? '-' : `v${e.version}`,
      e.outcome,
      ms(e.durationMs),
      e.bytes ? formatBytes(e.bytes) : '-',
      String(e.units.length),
      String(e.membership.length),
      whyLine(e.reason, e.failure),
    ];
  }
  if (e.kind === 'restart') {
    const ns = e.units.some((u) => u.pidNamespace) ? ' (new PID ns)' : '';
    return [
      e.requestedAt,
      who(e),
      `restart${e.restart === null ? '' : ` r${e.restart}`}`,
      e.version === null ? '-' : `v${e.version}`,
      e.outcome + ns,
      ms(e.durationMs),
      '-',
      String(e.units.length),
      String(e.membership.length),
      whyLine(e.reason, e.failure),
    ];
  }
  return [
    e.requestedAt,
    who(e),
    `prune --keep ${e.keep}`,
    e.pruned.map((p) => `v${p.version}`).join(',') || '-',
    e.outcome,
    '-',
    e.pruned.length ? formatBytes(e.pruned.reduce((n, p) => n + p.bytes, 0)) : '-',
    '-',
    '-',
    e.reason ?? '',
  ];
};

export const auditCommand: Command = {
  usage: '[JOB] [--json] [--verify [--timeout DURATION] [--node NAME]] [--verbose]',
  description: [
    'Folded from the log: each request with who asked (user and uid), when, the version (and restart',
    'number), outcome, reason, duration, bytes, units, and the job’s running processes at that moment',
    '(--json lists them, and each unit’s CRIU statistics of its dump or restore). Refused requests',
    '(not the owner, busy, nothing to restore) are listed too.',
    'With --verify, the log’s digest chain is checked (every event of every stream, naming the first',
    'altered, missing or inserted event by position), every committed version still on disk is checked',
    'against its manifest (size and SHA-256 of every file), and each manifest against the SHA-256 the log',
    'recorded when it was committed; exit status 1 on any problem. Images are checked where they are: this',
    'node’s (--node, $CKPT_NODE or the host name) here; another node’s by that node’s agent, asked through',
    'the log (ImagesVerifyRequested, answered by ImagesVerified or ImagesVerifyFailed naming each damaged',
    'file); a node that does not answer within --timeout is named (its agent may be down: ckpt nodes).',
    'Read from each job’s audit snapshot in the store and the events after it (--verbose says how).',
  ].join('\n'),
  options: [
    {
      name: 'json',
      description:
        'a JSON array per job: {job, entries: [{kind, request, requestedBy, requestedAt, version, restart, outcome, reason, durationMs, bytes, units (each with CRIU’s stats), processes, membership}], images: [{version, node, units, checkedBy (here, agent, nobody), state (ok, damaged, pruned, no answer), problems}], chain}; chain (with --verify) is the whole log’s: {events, streams, problem, heads}',
    },
    { name: 'verify', description: 'check the log’s digest chain, and the images and manifest of every committed version against the log, on every node holding them' },
    { name: 'timeout', value: 'DURATION', description: 'with --verify: how long to wait for other nodes’ agents to answer, e.g. 30s (default 15s)' },
    { name: 'node', value: 'NAME', description: 'this node’s name: whose images are checked here (default: $CKPT_NODE, else the host name)' },
    VERBOSE,
  ],
  examples: ['ckpt audit', 'ckpt audit nightly --verify', 'ckpt audit nightly --json | jq ".[0].entries[] | select(.kind == \\"restart\\")"'],
  async run(args) {
    const [only, ...extra] = args.positionals;
    if (extra.length > 0) throw new UsageError('name at most one job: ckpt audit [JOB]');
    if (only !== undefined) checkName('job', only);
    const verify = flag(args, 'verify');
    const timeoutMs = durationOption(args, 'timeout') ?? ANSWER_TIMEOUT_MS;
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
        const images = verify ? await checkNodes(args, store, home, job, entries, timeoutMs) : undefined;
        reports.push({ job, entries, ...(images && { images }) });
      }
      const damaged = reports.flatMap((r) => (r.images ?? []).filter((i) => i.state === 'damaged' || i.state === 'no answer').map((i) => ({ job: r.job, ...i })));
      if (flag(args, 'json')) await writeOut(JSON.stringify(chain ? reports.map((r) => ({ ...r, chain })) : reports, null, 2) + '\n');
      else {
        const out: string[] = [];
        for (const r of reports) {
          out.push(`job ${r.job}: ${r.entries.length} request(s)`);
          if (r.entries.length > 0) out.push(table(['REQUESTED', 'BY', 'WHAT', 'VERSION', 'OUTCOME', 'DURATION', 'SIZE', 'UNITS', 'PROCS', 'REASON'], r.entries.map(row)).trimEnd());
          for (const i of r.images ?? [])
            out.push(
              nodeLine(
                i,
                nodeOf(args),
                (r.images ?? []).every((o) => o.version !== i.version || o === i),
              ),
            );
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
