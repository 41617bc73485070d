import { jobStream } from '../../../domain/identity.js';
import { type EventRef, type ExplainedStep, type Explanation, evolveExplain, explanation, initialExplain, knownOperations, type Operation } from '../../../projections/explain.js';
import { foldStream } from '../../../projections/project.js';
import { checkName, flag, integerOption, UsageError } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { actorName, summarize, whyLine, writeOut } from '../output.js';
import { openStore } from '../store.js';
import { foldProgress } from '../verbose.js';

const at = (r: EventRef) => `#${r.position} ${r.type}${r.unit ? ` (unit ${r.unit}${r.node ? ` on ${r.node}` : ''})` : ''}`;
const ms = (n: number | null | undefined) => (n === null || n === undefined ? '-' : `${Math.round(n)} ms`);

/** The explanation as a readable timeline; times are offsets from the request, by the log's clock. */
export const explainText = (job: string, x: Explanation): string => {
  const t0 = Date.parse(x.requestedAt);
  const offset = (iso: string | null) => (iso === null ? '-' : `+${Date.parse(iso) - t0} ms`);
  const name = x.kind === 'checkpoint' ? `checkpoint v${x.version}` : `restart r${x.restart}${x.version === null ? '' : ` (of v${x.version})`}`;
  const why = x.reason || x.failure ? ` — ${whyLine(x.reason, x.failure)}` : '';
  const out = [
    `${name} of ${job}: ${x.outcome}${why}`,
    `requested ${x.requestedAt} by ${actorName(x.requestedBy)} (request ${x.request}); ${x.endedAt ? `ended ${x.endedAt}, after ${ms(x.durationMs)}` : 'not ended'}`,
    '',
  ];
  const stepLine = (s: ExplainedStep) =>
    `    ${s.step.padEnd(9)}${offset(s.requestedAt).padStart(11)} → ${offset(s.endedAt).padEnd(11)}${ms(s.durationMs).padStart(10)}  ${s.result.padEnd(10)} #${s.requested} → ${s.ended === null ? '-' : `#${s.ended}`}`;
  for (const u of x.units) {
    out.push(`  unit ${u.unit} on ${u.node}`);
    out.push(...u.steps.map(stepLine));
    if (u.frozen) {
      const measured = u.frozen.measuredMs === null ? '' : `; its agent measured ${ms(u.frozen.measuredMs)}`;
      out.push(
        `    frozen   ${offset(u.frozen.from).padStart(11)} → ${offset(u.frozen.to ?? null).padEnd(11)}${ms(u.frozen.ms).padStart(10)}  until ${u.frozen.endedBy ?? 'now (not ended)'}${measured}`,
      );
    }
  }
  if (x.commit) out.push('  commit', stepLine(x.commit));
  if (x.cause) {
    out.push('', x.cause.chain.length > 0 ? 'why it ended so:' : 'failed steps:');
    for (const [i, c] of x.cause.chain.entries()) out.push(`  ${i === 0 ? '' : '← '}${at(c)}  ${summarize(c.data).join(' ')}`);
    for (const w of x.cause.waitingFor) out.push(`  still waiting then for unit ${w.unit} on ${w.node}: ${w.step} (asked by #${w.command.position} ${w.command.type})`);
    for (const f of x.cause.failures) {
      const answering = f.command ? `, answering #${f.command.position} ${f.command.type}` : '';
      out.push(`  unit ${f.unit} on ${f.node}: ${f.step} failed at #${f.position} ${f.type}${answering}: ${whyLine(f.reason, f.failure)}${f.failure?.log ? ` (log: ${f.failure.log})` : ''}`);
    }
  }
  out.push('', 'decisions:');
  for (const d of x.decisions)
    out.push(
      `  ${offset(d.recordedAt).padStart(11)}  ${at(d)}  ${summarize(d.data).join(' ')}`,
      `               because of ${d.cause ? at(d.cause) : 'an event not in the job’s stream since the request'}${d.decidedAt === null ? '' : `, decided at #${d.decidedAt}`}`,
    );
  return out.join('\n') + '\n';
};

export const explainCommand: Command = {
  usage: 'JOB (--version N | --restart N) [--json]',
  description: [
    'One checkpoint (--version) or restart (--restart) of the job, folded from its history: each unit’s',
    'steps (freeze, dump, verify, thaw or stop, abort; a restart’s images-verify, restore-prepare, restore,',
    'rollback; the checkpoint’s commit) with when the coordinator asked, when the node agent answered, the',
    'duration and the result; each unit’s frozen window; every decision of the coordinator with the event it was',
    'decided on; and, when it failed, why: the chain of causes from the decision that ended it back to its',
    'first cause (each event by log position), the steps still unanswered when a deadline was reached, and',
    'each unit’s failed step (unit, node, the command it answered, the checkpointer’s failure class,',
    'message, hint and log). Times are the events’ recorded times (offsets from the request), never',
    'the clock of the machine reading them.',
  ].join('\n'),
  options: [
    { name: 'version', value: 'N', description: 'the checkpoint version to explain (ckpt checkpoints JOB lists them)' },
    { name: 'restart', value: 'N', description: 'the restart number to explain (ckpt audit JOB lists them)' },
    {
      name: 'json',
      description:
        'one JSON object: {job, kind, version, restart, request, requestedBy, requestedAt, endedAt, durationMs, outcome, reason, failure, ' +
        'units: [{unit, node, steps: [{step, requestedAt, requested, endedAt, ended, result, durationMs}], frozen: {from, to, ms, endedBy, measuredMs}, failures}], commit, ' +
        'decisions: [{position, type, recordedAt, unit, node, decidedAt, data, cause: {position, type, recordedAt, unit, node}}], ' +
        'cause: {chain: [{position, type, recordedAt, unit, node, data}], waitingFor: [{unit, node, step, command}], failures: [{position, type, unit, node, step, reason, failure, command}]}} ' +
        '(requested, ended, position, decidedAt: log positions; cause is null when nothing failed)',
    },
  ],
  examples: [
    'ckpt explain nightly --version 4',
    'ckpt explain nightly --restart 1 --json | jq .units',
    'ckpt explain nightly --version 4 --json | jq ".cause.failures[] | {unit, step, class: .failure.class}"',
  ],
  async run(args) {
    const [job, ...extra] = args.positionals;
    if (!job || extra.length > 0) throw new UsageError('name exactly one job: ckpt explain JOB --version N | --restart N');
    checkName('job', job);
    const version = integerOption(args, 'version', 1);
    const restart = integerOption(args, 'restart', 1);
    if ((version === undefined) === (restart === undefined)) {
      throw new UsageError('name one operation: --version N (a checkpoint) or --restart N (a restart), not both and not neither');
    }
    const target: Operation = version !== undefined ? { kind: 'checkpoint', version } : { kind: 'restart', restart: restart! };
    const store = openStore(args);
    try {
      // Page by page: only the operation's events and those around it are kept.
      const fold = foldProgress('explain', flag(args, 'json'), false);
      const { state, events } = await foldStream(store, jobStream(job), evolveExplain, initialExplain(target), fold.progress);
      fold.done();
      if (events === 0) {
        process.stderr.write(`ckpt explain: unknown job "${job}" (ckpt jobs --all lists them)\n`);
        return EXIT.failed;
      }
      const x = explanation(state);
      if (!x) {
        const known = knownOperations(state);
        const [what, prefix, list] = target.kind === 'checkpoint' ? ['checkpoint', 'v', `ckpt checkpoints ${job}`] : ['restart', 'r', `ckpt audit ${job}`];
        const number = target.kind === 'checkpoint' ? target.version : target.restart;
        const has = known.length > 0 ? `its ${what}s: ${known.map((n) => `${prefix}${n}`).join(', ')}` : `it has no ${what}s yet`;
        process.stderr.write(`ckpt explain: job ${job} has no ${what} ${prefix}${number}; ${has} (${list})\n`);
        return EXIT.failed;
      }
      await writeOut(flag(args, 'json') ? JSON.stringify({ job, ...x }, null, 2) + '\n' : explainText(job, x));
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
