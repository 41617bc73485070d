// Read models kept as snapshots in the store (projections/read-model.ts), on real SQLite and
// PostgreSQL and the memory store: a snapshot is used (reads fold only what came after it), is
// advanced, is discarded and rebuilt when its code version, the event schemas or the log at its
// position changed or a byte of it changed, and every model gives what a fold of the whole
// history gives, at every step of a history with checkpoints, restarts, aborts and a prune.

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import pg from 'pg';
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import { treeView } from '../adapters/cli/commands/ps.js';
import { openEventStore } from '../adapters/store/open.js';
import type { EventStore, ProposedEvent } from '../domain/event-store.js';
import { classify, evolveMembership, initialMembership, type JobMembership, membersOf, runningMembers } from '../domain/membership.js';
import { emptyMap, entriesOf, getIn, mapOf, removeIn, setIn, valuesOf } from '../domain/persistent-map.js';
import { agentModel } from '../projections/agent-state.js';
import { auditEntries, auditModel, foldAudit } from '../projections/audit.js';
import { checkpointSummaries, checkpointsModel, foldCheckpoints } from '../projections/checkpoints.js';
import { hiddenJobs, jobInfoModel, jobMembership, jobsModel, listJobs, liveMembershipModel, membershipModel, readAllJobs, readJobs, readMembership } from '../projections/jobs.js';
import { metricsModel } from '../projections/metrics.js';
import { nodesModel } from '../projections/nodes.js';
import { readWholeStream } from '../projections/project.js';
import { type ReadModel, readModel } from '../projections/read-model.js';
import { foldRestarts, restartsModel } from '../projections/restarts.js';
import { jobPhases, submitted } from './support/history.js';
import { needPostgres, type PostgresCluster, startPostgres } from './support/postgres.js';
import { suiteRequiring } from './support/prerequisites.js';

interface Setup {
  /** A new, empty store. */
  fresh(): Promise<{ store: EventStore; sql?: (query: string, ...params: unknown[]) => Promise<void> }>;
  /** SQL that gives an event a digest it was not written with. */
  readonly alterDigest?: string;
  /** SQL that changes one byte of a snapshot's state. */
  readonly alterSnapshot?: string;
  /** SQL that deletes a snapshot (model, key). */
  readonly deleteSnapshot?: string;
  after?(): Promise<void>;
}

/** JSON as the commands print it: what a user sees of a state. */
const shown = (value: unknown) => JSON.parse(JSON.stringify(value));
const membershipShown = (m: JobMembership) => shown({ ...m, members: membersOf(m) });
const nobody = (): undefined => undefined;

const readsSuite = (name: string, setup: Setup, missing?: string) => {
  const test: Test = missing === undefined ? suite(`read-model snapshots: ${name}`) : suiteRequiring(`read-model snapshots: ${name}`, missing);
  test.after(async () => setup.after?.());

  /** Appends a job's whole history, phase by phase. */
  const append = async (store: EventStore, job: string, phases: ProposedEvent[][]) => {
    for (const phase of phases) for (let i = 0; i < phase.length; i += 500) await store.append(`job-${job}`, phase.slice(i, i + 500));
  };

  test('a snapshot is used: a read folds only the events after it, and advances it', async () => {
    const { store } = await setup.fresh();
    try {
      const [first, ...rest] = jobPhases('j', 100);
      await append(store, 'j', [first!, rest[0]!]);
      const one = await readMembership(store, 'j', { saveAfter: 10 });
      assert.is(one.folded, first!.length + rest[0]!.length);
      assert.match(one.notes.join('\n'), 'none yet');
      assert.match(one.notes.join('\n'), `saved at revision ${one.position}`);
      const two = await readMembership(store, 'j', { saveAfter: 10 });
      assert.is(two.folded, 0, 'nothing new: nothing folded');
      assert.match(two.notes.join('\n'), `used: 0 event(s) folded after it`);
      assert.equal(membershipShown(two.state), membershipShown(one.state));
      await append(store, 'j', [rest[1]!]);
      const three = await readMembership(store, 'j', { saveAfter: 10 });
      assert.is(three.folded, rest[1]!.length, 'only the new events are folded');
      const four = await readMembership(store, 'j', { saveAfter: 10 });
      assert.is(four.folded, 0, 'the snapshot advanced to them');
      assert.is(four.position, three.position);
    } finally {
      await store.close();
    }
  });

  test('every model gives what the whole history gives, after every phase (checkpoints, an abort, restarts, a prune)', async () => {
    const { store } = await setup.fresh();
    try {
      const phases = jobPhases('j', 40);
      const others = jobPhases('k', 5);
      for (let i = 0; i < phases.length; i++) {
        await append(store, 'j', [phases[i]!]);
        if (others[i]) await append(store, 'k', [others[i]!]);
        const events = await readWholeStream(store, 'job-j');
        const full = events.reduce(evolveMembership, initialMembership('j'));
        // saveAfter 0: every read that folded anything saves, so each phase is read from the last one's snapshot.
        const membership = await readModel(store, membershipModel, 'j', { saveAfter: 0 });
        assert.equal(membershipShown(membership.state), membershipShown(full), `membership after phase ${i}`);
        // The live membership draws the same tree (and keeps fewer), the job info is the membership without members.
        const live = await readModel(store, liveMembershipModel, 'j', { saveAfter: 0 });
        assert.equal(treeView(live.state, {}, nobody), treeView(full, {}, nobody), `live membership after phase ${i}`);
        assert.equal(treeView(live.state, { running: true }, nobody), treeView(full, { running: true }, nobody));
        assert.ok(
          live.state.members.size <= full.members.size && (i < phases.length - 1 || live.state.members.size < full.members.size),
          `the live membership keeps ${live.state.members.size} of ${full.members.size}`,
        );
        const info = await readModel(store, jobInfoModel, 'j', { saveAfter: 0 });
        assert.equal(shown({ ...info.state, members: [] }), shown({ ...full, members: [] }), `job info after phase ${i}`);
        assert.is(info.state.members.size, 0);
        const checkpoints = await readModel(store, checkpointsModel, 'j', { saveAfter: 0 });
        assert.equal(shown(checkpointSummaries(checkpoints.state)), shown(foldCheckpoints(events)), `checkpoints after phase ${i}`);
        const restarts = await readModel(store, restartsModel, 'j', { saveAfter: 0 });
        assert.equal(shown(restarts.state.list), shown(foldRestarts(events)), `restarts after phase ${i}`);
        const audit = await readModel(store, auditModel, 'j', { saveAfter: 0 });
        assert.equal(shown(auditEntries(audit.state)), shown(foldAudit('j', events)), `audit after phase ${i}`);
        const jobs = await readJobs(store, { saveAfter: 0 });
        const listed = listJobs(jobs.state).find((l) => l.job === 'j')!;
        const units = Object.values(full.units).map(({ unit, node, phase, exitStatus, signal, command }) => ({ unit, node, phase, exitStatus, signal, command }));
        assert.equal(
          [listed.running, listed.total, listed.phase, listed.outcome, shown(listed.units)],
          [runningMembers(full).length, full.members.size, full.phase, full.outcome, shown(units)],
          `jobs after phase ${i}`,
        );
        if (i > 0) assert.ok(membership.folded === phases[i]!.length, `phase ${i}: only its ${phases[i]!.length} events folded (got ${membership.folded})`);
      }
      const entries = auditEntries((await readModel(store, auditModel, 'j')).state);
      assert.equal(
        entries.map((e) => `${e.kind} ${e.outcome}`),
        ['checkpoint committed', 'checkpoint aborted', 'checkpoint rejected', 'restart restored', 'restart failed', 'prune pruned'],
      );
      // Who ran at each request, as the whole membership (every process ever) says: the audit
      // forgets ended processes that no checkpoint held, and still lists the same.
      let full = initialMembership('j');
      const ranAt = new Map<string, unknown>();
      for (const e of await readWholeStream(store, 'job-j')) {
        full = evolveMembership(full, e);
        if (e.type === 'CheckpointRequested' || e.type === 'RestartRequested') {
          ranAt.set(
            e.data.request,
            runningMembers(full).map((m) => ({ unit: m.unit, node: m.node, pid: m.pid, startTime: m.startTime, comm: m.comm, reason: classify(full, m).reason })),
          );
        }
      }
      for (const e of entries) if (e.kind !== 'prune') assert.equal(e.membership, ranAt.get(e.request), `who ran at ${e.request}`);
      assert.ok(
        entries.some((e) => e.kind === 'restart' && e.membership.length > 0 && e.membership.some((m) => m.reason === 'escaped')),
        'the restored processes keep what they were (an escaped daemon)',
      );
      assert.equal(
        listJobs((await readJobs(store)).state).map((l) => l.job),
        ['j', 'k'],
      );
    } finally {
      await store.close();
    }
  });

  /** Jobs e00…e29 that ended and r1 that runs. */
  const endedAndRunning = async (store: EventStore) => {
    const done: ProposedEvent[] = [
      { type: 'UnitEnded', data: { unit: 'main', node: 'n1', status: 0, signal: null } },
      { type: 'JobEnded', data: { outcome: 'succeeded', status: 0, signal: null } },
    ];
    for (let i = 0; i < 30; i++) {
      const job = `e${String(i).padStart(2, '0')}`;
      await append(store, job, [submitted(job), done]);
    }
    await append(store, 'r1', [submitted('r1')]);
  };
  /** Every job as a fold of the whole log lists it. */
  const everyJob = async (store: EventStore) => shown((await readAllJobs(store, { ignoreSnapshots: true })).state);
  const names = (jobs: ReadonlyArray<{ job: string }>) => jobs.map((l) => l.job);

  test('the jobs list keeps what runs and the last jobs that ended; ended jobs leave it for rows, read back when they get events again', async () => {
    const { store } = await setup.fresh();
    try {
      await endedAndRunning(store);
      const first = await readJobs(store, { saveAfter: 0 });
      assert.match(first.notes.join('\n'), 'and 1 of jobs.rows'); // one chunk of 30 rows
      const saved = await store.snapshots!.load('jobs', '');
      assert.ok(saved && !('damaged' in saved));
      const kept = JSON.parse(saved.state);
      assert.equal([kept.active.length, kept.ended.length, kept.recent.length, kept.rows], [1, 0, 20, 30], 'the snapshot keeps the running job and the last 20 that ended');
      const again = await readJobs(store);
      assert.is(again.folded, 0);
      const tail = Array.from({ length: 20 }, (_, i) => `e${i + 10}`);
      assert.equal(names(listJobs(again.state)), [...tail, 'r1']);
      assert.is(hiddenJobs(again.state), 10);
      const all = await readAllJobs(store);
      assert.equal(shown(all.state), await everyJob(store));
      assert.is(all.state.length, 31);
      // e05 runs again (a unit launched): it is read back from its row and folded on.
      await store.append('job-e05', [{ type: 'UnitLaunched', data: { unit: 'main', node: 'n1', root: { pid: 300, startTime: 3000 }, pgid: 300, sid: 300, comm: 'sh', cgroup: '/ckpt/s/e05/main' } }]);
      const revived = await readJobs(store, { saveAfter: 0 });
      assert.is(revived.folded, 1);
      assert.equal(names(listJobs(revived.state)), ['e05', ...tail, 'r1']);
      assert.is(listJobs(revived.state)[0]!.phase, 'running');
      assert.is(hiddenJobs(revived.state), 9);
      assert.equal(shown((await readAllJobs(store)).state), await everyJob(store));
      const after = await readAllJobs(store);
      assert.is(after.folded, 0);
      assert.equal(shown(after.state), await everyJob(store));
    } finally {
      await store.close();
    }
  });

  test('a long fold saves on the way (an interrupted one resumes from there); the jobs list’s rows saved on the way are read back', async () => {
    const { store } = await setup.fresh();
    try {
      await endedAndRunning(store);
      await append(store, 'big', jobPhases('big', 400)); // > 2 pages
      await endedAndRunning(store); // e00… again: they end a second time
      const read = await readJobs(store, { saveEvery: 1 });
      assert.match(read.notes.join('\n'), 'saved on the way');
      const again = await readJobs(store);
      assert.is(again.folded, 0);
      assert.ok(again.state.chunks >= 2, `chunks saved on the way and at the end (${again.state.chunks})`);
      assert.equal(names(listJobs(again.state)), names(listJobs(read.state)));
      assert.is(hiddenJobs(again.state), hiddenJobs(read.state));
      assert.equal(shown((await readAllJobs(store)).state), await everyJob(store));
      const membership = await readMembership(store, 'big', { saveEvery: 1 });
      assert.match(membership.notes.join('\n'), 'saved on the way');
      assert.equal(membershipShown((await readMembership(store, 'big')).state), membershipShown(membership.state));
    } finally {
      await store.close();
    }
  });

  test('a snapshot from another code version, or of other event schemas, is rebuilt from the log, not trusted', async () => {
    const { store } = await setup.fresh();
    try {
      await append(store, 'j', jobPhases('j', 20));
      const total = (await readWholeStream(store, 'job-j')).length;
      await readModel(store, checkpointsModel, 'j', { saveAfter: 0 });
      const next: ReadModel<ReturnType<typeof checkpointsModel.initial>> = { ...checkpointsModel, version: checkpointsModel.version + 1 };
      const rebuilt = await readModel(store, next, 'j', { saveAfter: 0 });
      assert.is(rebuilt.folded, total, 'the whole stream is folded again');
      assert.match(rebuilt.notes.join('\n'), `was folded by code version ${checkpointsModel.version} (this ckpt folds with ${next.version}): rebuilt from the log`);
      assert.is((await readModel(store, next, 'j')).folded, 0, 'saved again with the new version');
      // The old version, in turn, does not take the new one's snapshot.
      assert.is((await readModel(store, checkpointsModel, 'j')).folded, total);
      const snapshot = await store.snapshots!.load('checkpoints', 'j');
      assert.ok(snapshot && !('damaged' in snapshot));
      await store.snapshots!.save({ ...snapshot, schema: snapshot.schema.replace('CheckpointRequested@2', 'CheckpointRequested@9') });
      const schemas = await readModel(store, checkpointsModel, 'j');
      assert.is(schemas.folded, total);
      assert.match(schemas.notes.join('\n'), 'was folded with other event schema versions: rebuilt from the log');
    } finally {
      await store.close();
    }
  });

  test('a snapshot that decodes to nothing sensible is rebuilt; reads at a position and verify never use snapshots', async () => {
    const { store } = await setup.fresh();
    try {
      await append(store, 'j', jobPhases('j', 20));
      const truth = await readModel(store, membershipModel, 'j', { saveAfter: 0 });
      const snapshot = (await store.snapshots!.load('membership', 'j')) as Exclude<Awaited<ReturnType<NonNullable<EventStore['snapshots']>['load']>>, { damaged: string } | undefined>;
      // A forged snapshot (checksum and digest right, content wrong) is what a read trusts…
      const forged = JSON.parse(snapshot.state);
      forged.phase = 'ended';
      await store.snapshots!.save({ ...snapshot, state: JSON.stringify(forged) });
      assert.is((await jobMembership(store, 'j'))!.phase, 'ended');
      // …but `--at` and verify fold the whole history.
      const events = await readWholeStream(store, 'job-j');
      assert.is((await jobMembership(store, 'j', events.at(-1)!.position))!.phase, truth.state.phase);
      assert.is((await readModel(store, membershipModel, 'j', { ignoreSnapshots: true })).state.phase, truth.state.phase);
      await store.snapshots!.save({ ...snapshot, state: JSON.stringify({ units: 'garbage' }) });
      const garbage = await readModel(store, membershipModel, 'j');
      assert.match(garbage.notes.join('\n'), 'does not decode');
      assert.equal(membershipShown(garbage.state), membershipShown(truth.state));
    } finally {
      await store.close();
    }
  });

  if (setup.alterDigest && setup.alterSnapshot) {
    test('a snapshot whose event no longer has its digest in the log is rebuilt', async () => {
      const { store, sql } = await setup.fresh();
      try {
        await append(store, 'j', jobPhases('j', 20));
        const first = await readModel(store, restartsModel, 'j', { saveAfter: 0 });
        const at = (await readWholeStream(store, 'job-j')).find((e) => e.revision === first.position)!;
        await sql!(setup.alterDigest!, at.position);
        const again = await readModel(store, restartsModel, 'j', { saveAfter: 0 });
        assert.match(again.notes.join('\n'), `snapshot restarts/j at revision ${first.position} no longer matches the log (that event’s digest differs): rebuilt from the log`);
        assert.is(again.folded, first.folded);
        assert.equal(shown(again.state), shown(first.state));
        // The jobs list (whole log, global positions) checks the same way.
        const jobs = await readJobs(store, { saveAfter: 0 });
        await sql!(setup.alterDigest!, jobs.position);
        const jobsAgain = await readJobs(store);
        assert.match(jobsAgain.notes.join('\n'), `snapshot jobs at position ${jobs.position} no longer matches the log`);
        assert.is(jobsAgain.folded, jobs.folded);
      } finally {
        await store.close();
      }
    });

    test('many snapshots are saved in one write, all or none', async () => {
      const { store } = await setup.fresh();
      try {
        const row = (key: string, state: string | null) => ({ model: 'many', key, version: 1, schema: 's', position: 1, digest: 'd'.repeat(64), state: state as string });
        const many = Array.from({ length: 150_000 }, (_, i) => row(`k${i}`, `{"i":${i}}`));
        await store.snapshots!.save(many);
        for (const i of [0, 1, 74_999, 149_999]) assert.is(((await store.snapshots!.load('many', `k${i}`)) as { state: string }).state, `{"i":${i}}`);
        // A write that fails part way (a state that cannot be stored) leaves nothing of it.
        const failed = await store.snapshots!.save([row('new', '{}'), row('k7', '{"changed":1}'), row('bad', null)]).then(
          () => false,
          () => true,
        );
        assert.ok(failed, 'a row without a state is refused');
        assert.is(await store.snapshots!.load('many', 'new'), undefined);
        assert.is(((await store.snapshots!.load('many', 'k7')) as { state: string }).state, '{"i":7}');
      } finally {
        await store.close();
      }
    });

    test('rows of the jobs list with a changed byte, or one missing, are not trusted: the list is rebuilt from the log', async () => {
      const { store, sql } = await setup.fresh();
      try {
        await endedAndRunning(store);
        await readJobs(store, { saveAfter: 0 });
        const truth = await everyJob(store);
        await sql!(setup.alterSnapshot!, 'jobs.rows');
        const damaged = await readAllJobs(store);
        assert.match(damaged.notes.join('\n'), /snapshot jobs its rows cannot be used \(jobs\.rows\/00000000 its content no longer matches its checksum\): rebuilt from the log/);
        assert.equal(shown(damaged.state), truth);
        const rebuilt = await readAllJobs(store);
        assert.is(rebuilt.folded, 0, 'saved again with new rows');
        assert.not.match(rebuilt.notes.join('\n'), 'rebuilt');
        // e03 runs again (folded again from its stream), e04 ends late; then the first chunk goes.
        await store.append('job-e03', [{ type: 'UnitLaunched', data: { unit: 'main', node: 'n1', root: { pid: 300, startTime: 3000 }, pgid: 300, sid: 300, comm: 'sh', cgroup: '/ckpt/s/e03/main' } }]);
        await readJobs(store, { saveAfter: 0 });
        await store.append('job-e03', [
          { type: 'UnitEnded', data: { unit: 'main', node: 'n1', status: 1, signal: null } },
          { type: 'JobEnded', data: { outcome: 'failed', status: 1, signal: null } },
        ]);
        const again = await readJobs(store, { saveAfter: 0 });
        assert.match(again.notes.join('\n'), 'and 1 of jobs.rows');
        const twice = await readAllJobs(store);
        assert.equal(shown(twice.state), await everyJob(store), 'the later row of a job that ended twice wins');
        assert.is(twice.state.find((r) => r.job === 'e03')!.outcome, 'failed');
        assert.is(hiddenJobs(again.state), 30 - 20);
        await sql!(setup.deleteSnapshot!, 'jobs.rows', '00000000');
        const missing = await readAllJobs(store);
        assert.match(missing.notes.join('\n'), 'its rows cannot be used (jobs.rows/00000000 is missing): rebuilt from the log');
        assert.equal(shown(missing.state), await everyJob(store));
        assert.equal(shown((await readAllJobs(store)).state), await everyJob(store));
      } finally {
        await store.close();
      }
    });

    test('a snapshot with a changed byte is rejected and rebuilt', async () => {
      const { store, sql } = await setup.fresh();
      try {
        await append(store, 'j', jobPhases('j', 20));
        const first = await readModel(store, auditModel, 'j', { saveAfter: 0 });
        await sql!(setup.alterSnapshot!, 'audit');
        const again = await readModel(store, auditModel, 'j');
        assert.match(again.notes.join('\n'), 'snapshot audit/j its content no longer matches its checksum: rebuilt from the log');
        assert.is(again.folded, first.folded);
        assert.equal(shown(auditEntries(again.state)), shown(auditEntries(first.state)));
        assert.is((await readModel(store, auditModel, 'j')).folded, 0, 'saved again, whole');
      } finally {
        await store.close();
      }
    });
  }
  return test;
};

// --- memory -----------------------------------------------------------------------------------
readsSuite('memory store', { fresh: async () => ({ store: openEventStore('memory:') }) }).run();

// --- SQLite -----------------------------------------------------------------------------------
const dir = mkdtempSync(join(tmpdir(), 'ckpt-reads-'));
let files = 0;
readsSuite('SQLite', {
  fresh: async () => {
    const path = join(dir, `events-${++files}.db`);
    const store = openEventStore(`sqlite:${path}`);
    const sql = async (query: string, ...params: unknown[]) => {
      const db = new Database(path);
      try {
        db.prepare(query).run(...params);
      } finally {
        db.close();
      }
    };
    return { store, sql };
  },
  alterDigest: 'UPDATE events SET digest = randomblob(32) WHERE position = ?',
  alterSnapshot: 'UPDATE snapshots SET state = CAST(replace(CAST(state AS TEXT), \'"running"\', \'"runninG"\') AS BLOB) WHERE model = ?',
  deleteSnapshot: 'DELETE FROM snapshots WHERE model = ? AND key = ?',
  after: async () => rmSync(dir, { recursive: true, force: true }),
}).run();

// --- PostgreSQL -------------------------------------------------------------------------------
let cluster: PostgresCluster | undefined;
const pgQuery =
  (url: string) =>
  async (query: string, ...params: unknown[]) => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      await client.query(query, params);
    } finally {
      await client.end();
    }
  };
const pgSuite = readsSuite(
  'PostgreSQL',
  {
    fresh: async () => {
      cluster ??= await startPostgres();
      const url = await cluster.database();
      return { store: openEventStore(url), sql: pgQuery(url) };
    },
    alterDigest: 'UPDATE ckpt_events SET digest = md5(digest) || md5(digest) WHERE position = $1',
    alterSnapshot: 'UPDATE ckpt_snapshots SET state = replace(state, \'"running"\', \'"runninG"\') WHERE model = $1',
    deleteSnapshot: 'DELETE FROM ckpt_snapshots WHERE model = $1 AND key = $2',
  },
  needPostgres(),
);

pgSuite('PostgreSQL: the agents’ role writes snapshots; a reader’s role reads without saving; both get the same answer', async () => {
  cluster ??= await startPostgres();
  const admin = await cluster.admin();
  await admin.query(`DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ckpt_agents') THEN
      CREATE ROLE ckpt_agents NOLOGIN; CREATE ROLE ckpt_readers NOLOGIN;
      CREATE ROLE snap_agent LOGIN IN ROLE ckpt_agents; CREATE ROLE snap_reader LOGIN IN ROLE ckpt_readers;
    END IF; END $$`);
  await admin.end();
  const url = await cluster.database();
  const as = (role: string) => url.replace('postgres://postgres@', `postgres://${role}@`);
  const owner = openEventStore(url);
  const agent = openEventStore(as('snap_agent'));
  const reader = openEventStore(as('snap_reader'));
  try {
    await owner.append('job-j', jobPhases('j', 20).flat()); // the owner creates the schema and grants the roles
    const read = await readModel(reader, checkpointsModel, 'j', { saveAfter: 0 });
    assert.match(read.notes.join('\n'), 'not saved: this role may not write snapshots');
    assert.is(await reader.snapshots!.load('checkpoints', 'j'), undefined);
    const written = await readModel(agent, checkpointsModel, 'j', { saveAfter: 0 });
    assert.match(written.notes.join('\n'), 'saved at revision');
    const used = await readModel(reader, checkpointsModel, 'j');
    assert.is(used.folded, 0, 'the reader uses the agent’s snapshot');
    assert.equal(shown(checkpointSummaries(used.state)), shown(checkpointSummaries(read.state)));
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const { rows } = await client.query<{ saved_by: string }>("SELECT saved_by FROM ckpt_snapshots WHERE model = 'checkpoints'");
    await client.end();
    assert.equal(
      rows.map((r) => r.saved_by),
      ['snap_agent'],
    );
  } finally {
    await Promise.all([owner.close(), agent.close(), reader.close()]);
  }
});
pgSuite.after(async () => {
  await cluster?.stop();
});
pgSuite.run();

// --- fold versions ----------------------------------------------------------------------------
// A snapshot is trusted only by its model's code version: a change to a fold (or to the code it
// calls, or to its encoding) without a version bump would let old snapshots answer wrongly. Each
// model's version is recorded here with a digest of its sources; a change to them fails this test
// until the model's version is bumped and the new digest recorded with it.
const sources = (...files: string[]) =>
  createHash('sha256')
    .update(files.map((f) => readFileSync(fileURLToPath(new URL(`../../${f}`, import.meta.url)), 'utf8')).join('\0'))
    .digest('hex')
    .slice(0, 16);
const FOLDS: Array<{ model: ReadModel<unknown>; files: string[]; version: number; digest: string }> = [
  { model: membershipModel, files: ['domain/membership.ts', 'domain/persistent-map.ts', 'projections/jobs.ts'], version: 2, digest: 'ed4836f561209cc0' },
  { model: liveMembershipModel, files: ['domain/membership.ts', 'domain/persistent-map.ts', 'projections/jobs.ts'], version: 1, digest: 'ed4836f561209cc0' },
  { model: jobInfoModel, files: ['domain/membership.ts', 'domain/persistent-map.ts', 'projections/jobs.ts'], version: 1, digest: 'ed4836f561209cc0' },
  { model: jobsModel, files: ['domain/membership.ts', 'domain/persistent-map.ts', 'projections/jobs.ts'], version: 5, digest: 'ed4836f561209cc0' },
  { model: checkpointsModel, files: ['projections/checkpoints.ts', 'projections/steps.ts', 'projections/project.ts'], version: 3, digest: 'b523df54ee1d71fe' },
  { model: restartsModel, files: ['projections/restarts.ts', 'projections/steps.ts', 'projections/project.ts'], version: 3, digest: 'af8586c75c2dc8cb' },
  { model: nodesModel, files: ['projections/nodes.ts'], version: 1, digest: '0a4815c5a0a0bff6' },
  {
    model: metricsModel,
    files: ['projections/metrics.ts', 'domain/membership.ts', 'domain/persistent-map.ts', 'projections/checkpoints.ts', 'projections/restarts.ts', 'projections/steps.ts', 'projections/project.ts'],
    version: 2,
    digest: 'f078f4f2a6d21024',
  },
  {
    model: auditModel,
    files: [
      'domain/membership.ts',
      'domain/persistent-map.ts',
      'projections/jobs.ts',
      'projections/checkpoints.ts',
      'projections/restarts.ts',
      'projections/steps.ts',
      'projections/audit.ts',
      'projections/project.ts',
    ],
    version: 4,
    digest: 'b392b47d555daf10',
  },
  {
    model: agentModel,
    files: [
      'projections/agent-state.ts',
      'domain/job-coordinator.ts',
      'domain/checkpoint-coordinator.ts',
      'domain/restart-coordinator.ts',
      'domain/checkpoint-commands.ts',
      'domain/prune.ts',
      'domain/deadlines.ts',
      'domain/membership.ts',
      'domain/persistent-map.ts',
      'projections/jobs.ts',
    ],
    version: 5,
    digest: '7ecf762a487cdac1',
  },
] as never;
const versions = suite('read-model snapshots: fold versions');
versions('every model’s version was bumped when its fold changed', () => {
  for (const f of FOLDS) {
    const now = sources(...f.files);
    assert.ok(
      f.model.version === f.version && now === f.digest,
      `the ${f.model.name} fold changed (${f.files.join(', ')}): if what it folds to changed, bump its version (now ${f.model.version}), so older snapshots are rebuilt; then record {version: ${f.model.version}, digest: '${now}'} for it in test/read-models.test.ts`,
    );
  }
});
versions.run();

const maps = suite('read-model snapshots: persistent maps rebuilt at once');
maps('mapOf(entriesOf(m)) is the trie setIn built; removeIn takes one key out', () => {
  let m = emptyMap<number>();
  for (let i = 0; i < 5000; i++) m = setIn(m, `n1/${i}@${i * 7}`, i);
  m = setIn(m, 'n1/3@21', -3); // a replaced value keeps its place
  assert.equal(mapOf(entriesOf(m)), m);
  const less = removeIn(m, 'n1/10@70');
  assert.is(less.size, 4999);
  assert.is(getIn(less, 'n1/10@70'), undefined);
  assert.is(getIn(m, 'n1/10@70'), 10, 'the original is unchanged');
  assert.is(removeIn(less, 'n1/10@70'), less, 'removing an absent key changes nothing');
  assert.equal(
    [...valuesOf(less)].sort((a, b) => a - b),
    [...valuesOf(m)].filter((v) => v !== 10).sort((a, b) => a - b),
  );
});
maps.run();

const cli = suite('read-model snapshots: the commands say how they read (--verbose)');
cli('jobs, checkpoints and audit: the first read folds the log and saves, the next uses the snapshot; the answers are the same', async () => {
  const home = mkdtempSync(join(tmpdir(), 'ckpt-reads-cli-'));
  const url = `sqlite:${join(home, 'events.db')}`;
  const store = openEventStore(url);
  try {
    for (const phase of jobPhases('j', 400)) await store.append('job-j', phase);
    const events = (await readWholeStream(store, 'job-j')).length;
    const run = (...args: string[]) => {
      const r = spawnSync(process.execPath, [fileURLToPath(new URL('../adapters/cli/main.js', import.meta.url)), ...args, '--store', url, '--verbose'], {
        encoding: 'utf8',
        env: { ...process.env, CKPT_HOME: home },
      });
      assert.is(r.status, 0, r.stderr);
      return { out: r.stdout, err: r.stderr };
    };
    for (const [command, ...args] of [
      ['jobs', '--json'],
      ['checkpoints', 'j', '--json'],
      ['audit', 'j', '--json'],
    ] as const) {
      const first = run(command, ...args);
      assert.match(first.err, `ckpt ${command}: ${events} event(s) folded`);
      assert.match(first.err, 'saved at');
      const later = run(command, ...args);
      assert.match(later.err, 'used: 0 event(s) folded after it');
      assert.match(later.err, `ckpt ${command}: 0 event(s) folded`);
      assert.is(later.out, first.out);
    }
    assert.not.match(run('jobs').err.replace(/ckpt jobs: .*\n/g, ''), /\S/, 'nothing but the notes on stderr');
    // A long fold shows its progress (here from the first page on): a new job's history.
    for (const phase of jobPhases('k', 400)) await store.append('job-k', phase);
    const slow = spawnSync(process.execPath, [fileURLToPath(new URL('../adapters/cli/main.js', import.meta.url)), 'jobs', '--store', url], {
      encoding: 'utf8',
      env: { ...process.env, CKPT_HOME: home, CKPT_PROGRESS_AFTER_MS: '0' },
    });
    assert.is(slow.status, 0, slow.stderr);
    assert.match(slow.stderr, /^ckpt jobs: folding the log: [\d,]+ event\(s\) so far \(position [\d,]+\); its snapshot is saved when done$/m);
  } finally {
    await store.close();
    rmSync(home, { recursive: true, force: true });
  }
});
cli.run();

const migration = suite('read-model snapshots: a log of schema 2 gets the snapshot table');
migration('SQLite: opened by this ckpt, a schema-2 log gains an empty snapshot table and keeps its events', async () => {
  const home = mkdtempSync(join(tmpdir(), 'ckpt-reads-v2-'));
  const path = join(home, 'events.db');
  try {
    const before = openEventStore(`sqlite:${path}`);
    await before.append('job-j', jobPhases('j', 5)[0]!);
    await before.close();
    const db = new Database(path);
    db.exec('DROP TABLE snapshots; DROP TABLE leases; PRAGMA user_version = 2;'); // as a ckpt before snapshots left it
    db.close();
    const after = openEventStore(`sqlite:${path}`);
    try {
      const read = await readModel(after, membershipModel, 'j', { saveAfter: 0 });
      assert.is(read.state.phase, 'running');
      assert.match(read.notes.join('\n'), 'saved at revision');
      assert.is((await readModel(after, membershipModel, 'j')).folded, 0);
    } finally {
      await after.close();
    }
    const check = new Database(path);
    assert.is(check.pragma('user_version', { simple: true }), 4, 'on through 3 to 4 (leases)');
    check.close();
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
migration.run();
