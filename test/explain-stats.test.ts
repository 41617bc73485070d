// `ckpt explain` and `ckpt stats`: the projections over the recorded real histories
// (test/histories), checked against figures computed here straight from the files' lines; the
// real CLI over a real SQLite store holding those histories (identical ids, times and causes); and
// a real checkpoint (agent and CRIU) explained and counted.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { explainText } from '../adapters/cli/commands/explain.js';
import { CSV_HEADER } from '../adapters/cli/commands/stats.js';
import { readHistoryFile } from '../adapters/cli/history-file.js';
import { csv } from '../adapters/cli/output.js';
import type { RecordedEvent } from '../domain/event-store.js';
import { definitionOf } from '../domain/events/catalogue.js';
import { foldCheckpoints } from '../projections/checkpoints.js';
import { type Explanation, evolveExplain, explanation, foldExplain, initialExplain, knownOperations, type Operation } from '../projections/explain.js';
import { foldRestarts } from '../projections/restarts.js';
import { type Stats, stats } from '../projections/stats.js';
import { storeRecorded } from './support/history.js';
import { CLI, killMembers, type PsRow } from './support/jobs.js';
import { firstMissing, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until } from './support/wait.js';

const RECORDED = fileURLToPath(new URL('../../test/histories/', import.meta.url));
const MULTI = join(RECORDED, 'two-units-stop-restart-abort.ndjson');
const SINGLE = join(RECORDED, 'checkpoint-stop-restart-kill.ndjson');
const multi = readHistoryFile(MULTI);
const single = readHistoryFile(SINGLE);
const jobEvents = (h: { job: string; events: RecordedEvent[] }) => h.events.filter((e) => e.stream === `job-${h.job}`);
const explain = (events: readonly RecordedEvent[], target: Operation): Explanation => {
  const x = explanation(foldExplain(target, events));
  if (!x) throw new Error(`no ${JSON.stringify(target)}`);
  return x;
};

// Straight from the file's lines, independently of the folds.
type Raw = RecordedEvent & { data: Record<string, any> };
const raw = (h: { events: RecordedEvent[] }) => h.events as Raw[];
const ms = (a: Raw, b: Raw) => Date.parse(b.metadata.recordedAt) - Date.parse(a.metadata.recordedAt);
const one = (events: Raw[], test: (e: Raw) => boolean): Raw => {
  const found = events.filter(test);
  assert.is(found.length, 1, `exactly one event matches ${test}`);
  return found[0]!;
};

const projection = suite('explain: one operation of a recorded history');

projection('the checkpoint aborted at its deadline mid-dump names the unit, the step and the cause', () => {
  const x = explain(multi.events, { kind: 'checkpoint', version: 4 });
  const events = raw(multi);
  const abort = one(events, (e) => e.type === 'CheckpointAbortRequested' && e.data.version === 4);
  const deadline = one(events, (e) => e.id === abort.metadata.causationId);
  const failed = one(events, (e) => e.type === 'UnitDumpFailed' && e.data.version === 4);
  const command = one(events, (e) => e.id === failed.metadata.causationId);
  assert.is(x.outcome, 'aborted');
  assert.is(deadline.type, 'DeadlineReached');
  // The chain: the decision that ended it, back to the deadline that caused it.
  assert.equal(
    x.cause!.chain.map((c) => [c.position, c.type]),
    [
      [abort.position, 'CheckpointAbortRequested'],
      [deadline.position, 'DeadlineReached'],
    ],
  );
  // What it was waiting for then: both units' dumps, asked for before the deadline and not answered by it.
  const dumpsAsked = events.filter((e) => e.type === 'UnitDumpRequested' && e.data.version === 4);
  const answeredBy = (asked: Raw) => events.find((e) => e.metadata.causationId === asked.id)!;
  const waiting = dumpsAsked.filter((asked) => asked.position < deadline.position && answeredBy(asked).position > deadline.position);
  assert.ok(waiting.length > 0);
  assert.equal(
    x.cause!.waitingFor.map((w) => [w.unit, w.node, w.step, w.command.position]),
    waiting.map((e) => [e.data.unit, e.data.node, 'dump', e.position]),
  );
  // The unit that failed, the step, the command it answered, and the checkpointer's class, message and hint.
  assert.is(x.cause!.failures.length, 1);
  const f = x.cause!.failures[0]!;
  assert.equal([f.unit, f.node, f.step, f.position, f.type], [failed.data.unit, failed.data.node, 'dump', failed.position, 'UnitDumpFailed']);
  assert.equal([f.command!.position, f.command!.type], [command.position, 'UnitDumpRequested']);
  assert.equal(f.failure, failed.data.failure);
  assert.is(f.failure!.class, 'timeout');
  // Said in words too.
  const text = explainText(multi.job, x);
  assert.match(text, `checkpoint v4 of multi: aborted`);
  assert.match(text, `← #${deadline.position} DeadlineReached`);
  assert.match(text, `still waiting then for unit ${failed.data.unit} on ${failed.data.node}: dump (asked by #${command.position} UnitDumpRequested)`);
  assert.match(
    text,
    `unit ${failed.data.unit} on ${failed.data.node}: dump failed at #${failed.position} UnitDumpFailed, answering #${command.position} UnitDumpRequested: timeout: ${failed.data.failure.message} — ${failed.data.failure.hint}`,
  );
});

projection('each unit’s steps and frozen window are the recorded times of its requests and answers', () => {
  const events = raw(multi);
  for (const version of [1, 2, 3, 4]) {
    const x = explain(multi.events, { kind: 'checkpoint', version });
    for (const u of x.units) {
      for (const s of u.steps) {
        const asked = one(events, (e) => e.position === s.requested);
        assert.ok(asked.type.endsWith('Requested') && asked.data.unit === u.unit && asked.data.version === version, `${asked.type} is v${version} ${u.unit}'s request`);
        const answer = events.find((e) => e.metadata.causationId === asked.id && e.data.unit === u.unit && definitionOf(e.type)?.kind === 'outcome');
        assert.is(s.ended, answer?.position ?? null, `v${version} ${u.unit} ${s.step}`);
        assert.is(s.durationMs, answer ? ms(asked, answer) : null);
        assert.is(s.result, answer ? (answer.type.endsWith('Failed') ? 'failed' : 'done') : 'unanswered');
      }
      const frozen = one(events, (e) => e.type === 'UnitFrozen' && e.data.version === version && e.data.unit === u.unit);
      const end = events.find((e) => ['UnitThawed', 'UnitStopped', 'UnitStopFailed', 'UnitAborted'].includes(e.type) && e.data.version === version && e.data.unit === u.unit)!;
      assert.is(u.frozen!.ms, ms(frozen, end), `v${version} ${u.unit} frozen window`);
      assert.is(u.frozen!.measuredMs, end.type === 'UnitThawed' ? end.data.frozenMs : null);
    }
  }
  // v4: unit a frozen for the ~10 s CRIU spent trying, unit b only until its abort.
  const v4 = explain(multi.events, { kind: 'checkpoint', version: 4 });
  assert.equal(
    v4.units.map((u) => u.frozen!.endedBy),
    ['abort', 'abort'],
  );
});

projection('every decision is listed with the event it was decided on', () => {
  const events = raw(multi);
  for (const target of [
    { kind: 'checkpoint', version: 4 },
    { kind: 'checkpoint', version: 2 },
    { kind: 'restart', restart: 1 },
  ] as Operation[]) {
    const x = explain(multi.events, target);
    const mine = events.filter(
      (e) =>
        definitionOf(e.type)?.kind === 'decision' &&
        (target.kind === 'checkpoint'
          ? (e.data.version === target.version && e.data.restart === undefined) || e.data.deadline === `checkpoint-v${target.version}`
          : e.data.restart === target.restart || e.data.deadline === `restart-r${target.restart}`),
    );
    assert.ok(mine.length >= 5);
    assert.equal(
      x.decisions.map((d) => d.position),
      mine.map((e) => e.position),
    );
    for (const d of x.decisions) {
      const e = one(events, (e) => e.position === d.position);
      const cause = one(events, (c) => c.id === e.metadata.causationId);
      assert.equal([d.cause?.position, d.cause?.type, d.decidedAt], [cause.position, cause.type, e.metadata.decidedAt]);
    }
  }
});

projection('a committed checkpoint with a failed stop, a restart, and operations that do not exist', () => {
  const v2 = explain(multi.events, { kind: 'checkpoint', version: 2 });
  assert.is(v2.outcome, 'committed');
  assert.equal(v2.cause!.chain, [], 'nothing ended it early');
  assert.equal(
    v2.cause!.failures.map((f) => [f.unit, f.step, f.type]),
    [['a', 'stop', 'UnitStopFailed']],
  );
  assert.equal(
    v2.units.map((u) => u.frozen!.endedBy),
    ['stop', 'stop'],
  );
  assert.equal(
    [v2.commit!.result, v2.commit!.durationMs],
    [
      'done',
      ms(
        one(raw(multi), (e) => e.type === 'CheckpointCommitRequested' && e.data.version === 2),
        one(raw(multi), (e) => e.type === 'CheckpointCommitted' && e.data.version === 2),
      ),
    ],
  );

  const v1 = explain(single.events, { kind: 'checkpoint', version: 1 });
  assert.is(v1.cause, null, 'nothing failed');
  const r1 = explain(multi.events, { kind: 'restart', restart: 1 });
  assert.equal([r1.outcome, r1.version, r1.cause], ['restored', 2, null]);
  assert.equal(
    r1.units.map((u) => [u.unit, u.steps.map((s) => `${s.step}:${s.result}`)]),
    [
      ['a', ['restore-prepare:done', 'images-verify:done', 'restore:done']],
      ['b', ['restore-prepare:done', 'images-verify:done', 'restore:done']],
    ],
  );

  const none = foldExplain({ kind: 'checkpoint', version: 9 }, multi.events);
  assert.is(explanation(none), undefined);
  assert.equal(knownOperations(none), [1, 2, 3, 4]);
  assert.equal(knownOperations(foldExplain({ kind: 'restart', restart: 2 }, multi.events)), [1]);
  // A refused request stops being a candidate: nothing after it is kept for causes.
  const base = multi.events.find((e) => e.type === 'CheckpointRequested')!;
  const asked = { ...base, metadata: base.metadata, id: '00000000-0000-4000-8000-000000000001', data: { request: 'refused', stop: false, timeoutMs: 1000 } } as RecordedEvent;
  const refused = { ...asked, id: '00000000-0000-4000-8000-000000000002', type: 'RequestRejected', data: { request: 'refused', command: 'checkpoint', code: 'busy', reason: 'busy' } } as RecordedEvent;
  const forked = multi.events.find((e) => e.type === 'ProcessForked')!;
  const target: Operation = { kind: 'checkpoint', version: 9 };
  assert.is(foldExplain(target, [asked, forked]).window.size, 2, 'while a request may become the target, events are kept for its causes');
  assert.is(foldExplain(target, [asked, refused, forked]).window.size, 0);
  // A fold like any other: the same as reducing the events one by one.
  assert.equal(multi.events.reduce(evolveExplain, initialExplain({ kind: 'checkpoint', version: 4 })), foldExplain({ kind: 'checkpoint', version: 4 }, multi.events));
});
projection.run();

const counted = suite('stats: rows and aggregates of the recorded histories');

const statsOf = (...hs: Array<typeof multi>) => stats(hs.map((h) => ({ job: h.job, checkpoints: foldCheckpoints(jobEvents(h)), restarts: foldRestarts(jobEvents(h)) })));
/** Nearest-rank percentile, written out again here. */
const nearest = (values: number[], p: number) => values.sort((a, b) => a - b)[Math.ceil((p / 100) * values.length) - 1];

counted('one row per checkpoint and restart with the figures its events carry', () => {
  const s = statsOf(multi, single);
  for (const h of [multi, single]) {
    const events = raw(h).filter((e) => e.stream === `job-${h.job}`);
    const rows = s.rows.filter((r) => r.job === h.job);
    assert.is(rows.length, events.filter((e) => e.type === 'CheckpointRequested' || e.type === 'RestartRequested').length);
    for (const r of rows.filter((r) => r.kind === 'checkpoint')) {
      const v = (e: Raw) => e.data.version === r.version;
      const requested = one(events, (e) => e.type === 'CheckpointRequested' && e.data.request === one(events, (p) => p.type === 'CheckpointPlanned' && v(p)).data.request);
      const end = one(events, (e) => (e.type === 'CheckpointCompleted' || e.type === 'CheckpointAborted') && v(e));
      assert.is(r.durationMs, ms(requested, end));
      assert.is(r.requestedAt, requested.metadata.recordedAt);
      const dumped = events.filter((e) => e.type === 'UnitDumped' && v(e));
      assert.is(
        r.pages,
        dumped.reduce((n, e) => n + e.data.stats.pagesWritten, 0),
      );
      const asked = events.filter((e) => e.type === 'UnitDumpRequested' && v(e));
      const dumpEnds = events.filter((e) => (e.type === 'UnitDumped' || e.type === 'UnitDumpFailed') && v(e));
      assert.is(r.phases.dump, Math.max(...dumpEnds.map((e) => Date.parse(e.metadata.recordedAt))) - Math.min(...asked.map((e) => Date.parse(e.metadata.recordedAt))));
      const planned = one(events, (e) => e.type === 'CheckpointPlanned' && v(e));
      assert.equal([r.units, r.nodes], [planned.data.units.length, [...new Set(planned.data.units.map((u: { node: string }) => u.node))].sort()]);
      if (r.outcome === 'committed') {
        assert.is(r.bytes, one(events, (e) => e.type === 'CheckpointCommitted' && v(e)).data.bytes);
        assert.is(
          r.processes,
          events.filter((e) => e.type === 'UnitVerified' && v(e)).reduce((n, e) => n + e.data.captured.length, 0),
        );
        const thawed = events.filter((e) => e.type === 'UnitThawed' && v(e));
        if (thawed.length > 0) assert.is(r.frozenMs, Math.max(...thawed.map((e) => e.data.frozenMs)));
        assert.is(r.failureClass, null);
      }
    }
  }
  const v4 = s.rows.find((r) => r.job === 'multi' && r.kind === 'checkpoint' && r.number === 4)!;
  assert.equal([v4.outcome, v4.failureClass], ['aborted', 'timeout']);
  const r1 = s.rows.find((r) => r.job === 'multi' && r.kind === 'restart')!;
  const restored = raw(multi).filter((e) => e.type === 'UnitRestored');
  assert.equal(
    [r1.outcome, r1.version, r1.processes, r1.pages],
    ['restored', 2, restored.reduce((n, e) => n + e.data.processes.length, 0), restored.reduce((n, e) => n + e.data.stats!.pagesRestored, 0)],
  );
});

counted('per job and per node: counts, success rate, p50/p95 frozen time, bytes over versions', () => {
  const s = statsOf(multi, single);
  for (const h of [multi, single]) {
    const events = raw(h).filter((e) => e.stream === `job-${h.job}`);
    const committed = events.filter((e) => e.type === 'CheckpointCommitted');
    const aborted = events.filter((e) => e.type === 'CheckpointAborted');
    const j = s.jobs.find((j) => j.job === h.job)!;
    assert.equal([j.committed, j.aborted], [committed.length, aborted.length]);
    assert.is(j.checkpointSuccessRate, committed.length / (committed.length + aborted.length));
    assert.equal(
      j.bytesByVersion,
      committed.map((e) => ({ version: e.data.version, bytes: e.data.bytes })),
    );
    const frozen = s.rows.filter((r) => r.job === h.job && r.frozenMs !== null).map((r) => r.frozenMs!);
    assert.equal([j.frozenP50Ms, j.frozenP95Ms], [nearest([...frozen], 50), nearest([...frozen], 95)]);
  }
  const multiJob = s.jobs.find((j) => j.job === 'multi')!;
  assert.equal([multiJob.checkpoints, multiJob.committed, multiJob.aborted, multiJob.checkpointSuccessRate, multiJob.restored], [4, 3, 1, 0.75, 1]);
  assert.equal(multiJob.failureClasses, { timeout: 1 });
  // One node ran every unit of both jobs: its counts are both jobs' together.
  assert.equal(
    s.nodes.map((n) => n.node),
    ['rec'],
  );
  const rec = s.nodes[0]!;
  assert.is(
    rec.committed,
    s.jobs.reduce((n, j) => n + j.committed, 0),
  );
  // Its frozen percentiles are over every unit it froze: the agent's measure at the thaw, else
  // from UnitFrozen to the unit's stop or abort.
  const unitsFrozen = [multi, single].flatMap((h) => {
    const events = raw(h);
    return events
      .filter((e) => e.type === 'UnitFrozen')
      .map((frozen) => {
        const same = (e: Raw) => e.data.version === frozen.data.version && e.data.unit === frozen.data.unit && e.stream === frozen.stream;
        const thawed = events.find((e) => e.type === 'UnitThawed' && same(e));
        return thawed ? (thawed.data.frozenMs as number) : ms(frozen, events.find((e) => ['UnitStopped', 'UnitStopFailed', 'UnitAborted'].includes(e.type) && same(e))!);
      });
  });
  assert.equal([rec.frozenP50Ms, rec.frozenP95Ms], [nearest([...unitsFrozen], 50), nearest([...unitsFrozen], 95)]);
  // --since keeps what was requested at or after the time.
  const v3 = s.rows.find((r) => r.job === 'multi' && r.number === 3)!;
  const later = stats([{ job: 'multi', checkpoints: foldCheckpoints(jobEvents(multi)), restarts: foldRestarts(jobEvents(multi)) }], v3.requestedAt);
  assert.equal(
    later.rows.map((r) => `${r.kind}${r.number}`),
    ['checkpoint3', 'checkpoint4'],
  );
  assert.equal([later.jobs[0]!.committed, later.jobs[0]!.aborted], [1, 1]);
});

counted('CSV by RFC 4180: header row, CRLF, quoting only where needed', () => {
  assert.is(
    csv(
      ['a', 'b'],
      [
        ['x,y', 'he said "hi"'],
        ['line\nbreak', 'plain'],
      ],
    ),
    'a,b\r\n"x,y","he said ""hi"""\r\n"line\nbreak",plain\r\n',
  );
});
counted.run();

// The real CLI over a real SQLite store that holds the recorded histories as they were recorded.
const cli = suite('explain and stats: the real CLI over a real SQLite store');
const home = mkdtempSync(join(tmpdir(), 'ckpt-explain-'));
const url = `sqlite:${join(home, 'events.db')}`;
const ckpt = (...args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, CKPT_HOME: home, CKPT_STORE: url }, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
};
cli.after(() => rmSync(home, { recursive: true, force: true }));

// The node stream once (both files recorded the same node).
cli.before(() => storeRecorded(url, [...multi.events, ...jobEvents(single)]));

cli('explain --json is the projection of the stored stream; the text names the unit, step and cause', () => {
  const r = ckpt('explain', 'multi', '--version', '4', '--json');
  assert.is(r.code, 0, r.err);
  assert.equal(JSON.parse(r.out), { job: 'multi', ...JSON.parse(JSON.stringify(explain(multi.events, { kind: 'checkpoint', version: 4 }))) });
  const text = ckpt('explain', 'multi', '--version', '4');
  assert.is(text.code, 0, text.err);
  assert.match(text.out, /unit a on rec: dump failed at #\d+ UnitDumpFailed, answering #\d+ UnitDumpRequested: timeout: /);
  const restart = ckpt('explain', 'recorded', '--restart', '1', '--json');
  assert.is(restart.code, 0, restart.err);
  assert.is(JSON.parse(restart.out).outcome, 'restored');
});

cli('explain refuses what it cannot explain, saying what exists', () => {
  const noJob = ckpt('explain', 'nosuch', '--version', '1');
  assert.equal([noJob.code, noJob.err.trim()], [1, 'ckpt explain: unknown job "nosuch" (ckpt jobs --all lists them)']);
  const noVersion = ckpt('explain', 'multi', '--version', '9');
  assert.equal([noVersion.code, noVersion.err.trim()], [1, 'ckpt explain: job multi has no checkpoint v9; its checkpoints: v1, v2, v3, v4 (ckpt checkpoints multi)']);
  const noRestart = ckpt('explain', 'multi', '--restart', '3');
  assert.match(noRestart.err, 'has no restart r3; its restarts: r1');
  for (const args of [
    ['explain', 'multi'],
    ['explain', 'multi', '--version', '1', '--restart', '1'],
  ]) {
    const r = ckpt(...args);
    assert.is(r.code, 2, args.join(' '));
    assert.match(r.err, 'name one operation: --version N (a checkpoint) or --restart N (a restart), not both and not neither');
  }
  assert.is(ckpt('explain', 'multi', '--version', '0').code, 2);
});

cli('stats --json, --csv and the tables: every job, or one, since a time', () => {
  const all = ckpt('stats', '--json');
  assert.is(all.code, 0, all.err);
  const expected: Stats = statsOf(multi, single);
  const got = JSON.parse(all.out) as Stats;
  assert.equal(got.rows, JSON.parse(JSON.stringify(expected.rows)));
  assert.equal(new Set(got.jobs.map((j) => j.job)), new Set(['multi', 'recorded']));
  assert.equal(got.nodes, JSON.parse(JSON.stringify(expected.nodes)));

  const file = ckpt('stats', '--csv');
  assert.is(file.code, 0, file.err);
  const lines = file.out.split('\r\n');
  assert.is(lines.pop(), '', 'CRLF after the last row');
  assert.is(lines[0], CSV_HEADER.join(','));
  assert.is(lines.length - 1, expected.rows.length);
  const v4 = lines.find((l) => l.startsWith('multi,checkpoint,4,4,aborted,timeout,'));
  assert.ok(v4, file.out);
  assert.is(v4!.split(',').length, CSV_HEADER.length);

  const since = expected.rows.find((r) => r.job === 'multi' && r.number === 3)!.requestedAt;
  const one = JSON.parse(ckpt('stats', 'multi', '--since', since, '--json').out) as Stats;
  assert.equal(
    one.rows.map((r) => `${r.job} ${r.kind} ${r.number}`),
    ['multi checkpoint 3', 'multi checkpoint 4'],
  );
  const text = ckpt('stats', 'multi');
  assert.is(text.code, 0, text.err);
  assert.match(text.out, /multi\s+checkpoint v4\s+\S+\s+aborted\s+timeout/);
  assert.match(text.out, /multi\s+3\/4\s+75 %\s+1\/1\s+100 %/);

  assert.is(ckpt('stats', '--since', 'yesterday').code, 2);
  assert.is(ckpt('stats', '--json', '--csv').code, 2);
  assert.equal([ckpt('stats', 'nosuch').code, ckpt('stats', 'nosuch').err.trim()], [1, 'ckpt stats: unknown job "nosuch" (ckpt jobs --all lists them)']);
});
cli.run();

// A real checkpoint: a job run by a real agent, checkpointed by CRIU, then explained and counted.
const criu = locateCriu();
const real = suiteRequiring(
  'explain and stats of a real checkpoint (agent, CRIU)',
  firstMissing(needRoot, () => (criu ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)')),
);
const work = mkdtempSync(join(tmpdir(), 'ckpt-explain-real-'));
const run = (...args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, CKPT_HOME: work, CKPT_NODE: 'exnode', CKPT_STORE: '' }, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};
real.after(() => {
  const ps = run('ps', 'real', '--json');
  if (ps.code === 0) killMembers(JSON.parse(ps.out) as PsRow[]);
  run('agent', 'stop', '--node', 'exnode');
  rmSync(work, { recursive: true, force: true });
});

real('the steps, frozen window and figures of a checkpoint just taken', async () => {
  const file = join(work, 'count');
  const started = run('run', '--detach', '--job', 'real', '--', 'sh', '-c', `i=0; while :; do i=$((i+1)); echo $i > ${file}; sleep 0.05; done`);
  assert.is(started.code, 0, started.err);
  await until('the job counting', () => existsSync(file) && Number(readFileSync(file, 'utf8')) > 2);
  const taken = run('checkpoint', 'real', '--wait');
  assert.is(taken.code, 0, taken.err);

  const x = JSON.parse(run('explain', 'real', '--version', '1', '--json').out) as Explanation;
  assert.is(x.outcome, 'committed');
  assert.is(x.cause, null);
  assert.equal(
    x.units[0]!.steps.map((s) => `${s.step}:${s.result}`),
    ['freeze:done', 'dump:done', 'verify:done', 'thaw:done'],
  );
  const history = run('history', 'real', '--json')
    .out.trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Raw);
  const thawed = one(history, (e) => e.type === 'UnitThawed');
  assert.equal([x.units[0]!.frozen!.endedBy, x.units[0]!.frozen!.measuredMs], ['thaw', thawed.data.frozenMs]);
  assert.equal(
    x.decisions.map((d) => d.type),
    history.filter((e) => definitionOf(e.type)?.kind === 'decision' && (e.data.version === 1 || e.data.deadline === 'checkpoint-v1')).map((e) => e.type),
  );

  const s = JSON.parse(run('stats', 'real', '--json').out) as Stats;
  assert.is(s.rows.length, 1);
  const row = s.rows[0]!;
  const dumped = one(history, (e) => e.type === 'UnitDumped');
  assert.equal(
    [row.outcome, row.frozenMs, row.bytes, row.pages, row.nodes],
    ['committed', thawed.data.frozenMs, one(history, (e) => e.type === 'CheckpointCommitted').data.bytes, dumped.data.stats?.pagesWritten ?? null, ['exnode']],
  );
  assert.equal(Object.keys(row.phases).sort(), ['commit', 'dump', 'freeze', 'thaw', 'verify']);
  assert.equal([s.jobs[0]!.committed, s.jobs[0]!.checkpointSuccessRate, s.nodes[0]!.node], [1, 1, 'exnode']);
});
real.run();
