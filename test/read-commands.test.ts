// ps, history and log over a long history: a job with thousands of processes in its stream
// (appended directly, shaped like a node agent's records of a fork loop), read with the real CLI
// from a real SQLite store. The tree must be the one the quadratic version drew.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { memberJson, treeView } from '../adapters/cli/commands/ps.js';
import { openEventStore } from '../adapters/store/open.js';
import type { ProposedEvent } from '../domain/event-store.js';
import { classify, type JobMembership, type Member, membersOf } from '../domain/membership.js';
import { jobMembership } from '../projections/jobs.js';
import { CLI } from './support/jobs.js';

const test = suite('read commands over a long history');
const home = mkdtempSync(join(tmpdir(), 'ckpt-read-'));
const url = `sqlite:${join(home, 'events.db')}`;
const nobody = (): undefined => undefined;
const env = { ...process.env, CKPT_HOME: home, CKPT_STORE: url };
const ckpt = (...args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8', maxBuffer: 1 << 30 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};
test.after(() => rmSync(home, { recursive: true, force: true }));

// Another node than this machine's: USER reads "-" (no /proc lookups), the same in both versions.
const node = 'far-node';
const unit = 'main';
const LOOPS = 3000;
const on = (pid: number, startTime: number) => ({ node, unit, process: { pid, startTime } });

/**
 * A shell loop (root 100) forking `true` LOOPS times with pids reused every 40 forks; every 500th
 * child is a subshell with a grandchild; at 1000 a double-forked daemon (its parent exits, it calls
 * setsid and is re-parented to 1, and keeps running); the last 3 children keep running.
 */
const history = (): ProposedEvent[] => {
  const events: ProposedEvent[] = [
    { type: 'JobSubmitted', data: { job: 'big', owner: { uid: 0 } } },
    { type: 'UnitAssigned', data: { unit, node, command: ['sh', '-c', 'while :; do true; done'], cwd: '/', limits: {} } },
    { type: 'UnitLaunched', data: { unit, node, root: { pid: 100, startTime: 1 }, pgid: 100, sid: 100, comm: 'sh', cgroup: '/ckpt/s/big/main' } },
    { type: 'UnitTracked', data: { unit, node, root: { pid: 100, startTime: 1 }, stdio: [] } },
  ];
  const root = { pid: 100, startTime: 1 };
  for (let i = 0; i < LOOPS; i++) {
    const child = { pid: 1000 + (i % 40), startTime: 10 + i * 3 };
    events.push({ type: 'ProcessForked', data: { node, unit, parent: root, child, pgid: 100, sid: 100, comm: 'sh', cgroup: '/ckpt/s/big/main' } });
    if (i % 500 === 7) {
      const grandchild = { pid: 5000 + i, startTime: child.startTime + 1 };
      events.push({ type: 'ProcessForked', data: { node, unit, parent: child, child: grandchild, pgid: 100, sid: 100, comm: 'sh', cgroup: '/ckpt/s/big/main' } });
      events.push({ type: 'ProcessExecd', data: { ...on(grandchild.pid, grandchild.startTime), comm: 'sleep', argv: ['sleep', '0'] } });
      events.push({ type: 'ProcessExited', data: { ...on(grandchild.pid, grandchild.startTime), status: 0, signal: null } });
    }
    if (i === 1000) {
      const daemon = { pid: 9000, startTime: child.startTime + 1 };
      events.push({ type: 'ProcessForked', data: { node, unit, parent: child, child: daemon, pgid: 100, sid: 100, comm: 'sh', cgroup: '/ckpt/s/big/main' } });
      events.push({ type: 'ProcessExited', data: { ...on(child.pid, child.startTime), status: 0, signal: null } });
      events.push({ type: 'ProcessReparented', data: { ...on(daemon.pid, daemon.startTime), ppid: 1 } });
      events.push({ type: 'ProcessSessionChanged', data: { ...on(daemon.pid, daemon.startTime), sid: 9000, pgid: 9000 } });
      events.push({ type: 'ProcessExecd', data: { ...on(daemon.pid, daemon.startTime), comm: 'daemon', argv: ['daemon'] } });
      continue;
    }
    events.push({ type: 'ProcessExecd', data: { ...on(child.pid, child.startTime), comm: 'true', argv: ['true'] } });
    if (i < LOOPS - 3) events.push({ type: 'ProcessExited', data: { ...on(child.pid, child.startTime), status: i % 7 === 0 ? 1 : 0, signal: null } });
  }
  return events;
};

// ── the tree as the quadratic version drew it, kept here as the reference ─────────────────────
const identityOf = (key: string) => {
  const m = /^(.*)\/(\d+)@(\d+)$/.exec(key);
  return m ? { node: m[1]!, pid: Number(m[2]), startTime: Number(m[3]) } : { key };
};
const stateText = (m: Member) => (m.state === 'running' ? 'running' : m.state === 'vanished' ? 'vanished' : m.signal !== null ? `killed (signal ${m.signal})` : `exited (${m.exitStatus})`);
const referenceTree = (job: JobMembership, members: Member[]): string[] => {
  const byKey = new Map(members.map((m) => [m.key, m]));
  const parentKey = (m: Member) =>
    m.forkedBy === undefined ? undefined : members.find((p) => p.pid === m.forkedBy && p.node === m.node && p.since <= m.since && (p.until === undefined || p.until >= m.since))?.key;
  const children = new Map<string | undefined, Member[]>();
  for (const m of members) {
    const p = parentKey(m);
    const at = p && byKey.has(p) ? p : undefined;
    children.set(at, [...(children.get(at) ?? []), m]);
  }
  const lines: string[] = [];
  const whyOf = (m: Member) => {
    const { reason, escapes } = classify(job, m);
    return reason === 'escaped'
      ? `escaped: ${escapes.join(', ')}`
      : reason === 'dependent'
        ? `dependent: ${m.dependsOn!.via}${m.dependsOn!.name ? ` ${m.dependsOn!.name}` : ''} with ${m.dependsOn!.member}`
        : reason;
  };
  const whyWidth = members.reduce((w, m) => Math.max(w, whyOf(m).length), 8) + 2;
  const userWidth = 6 + 2;
  lines.push(`${'PID'.padEnd(8)}${'PPID'.padEnd(8)}${'PGID'.padEnd(8)}${'SID'.padEnd(8)}${'USER'.padEnd(userWidth)}${'STATE'.padEnd(20)}${'REASON'.padEnd(whyWidth)}COMMAND`);
  const walk = (m: Member, prefix: string, last: boolean, top: boolean) => {
    const cols = `${String(m.pid).padEnd(8)}${String(m.ppid).padEnd(8)}${String(m.pgid).padEnd(8)}${String(m.sid).padEnd(8)}${'-'.padEnd(userWidth)}${stateText(m).padEnd(20)}${whyOf(m).padEnd(whyWidth)}`;
    const restored = m.restoredFrom === undefined ? '' : `  (restored; was pid ${identityOf(m.restoredFrom).pid})`;
    lines.push(`${cols}${top ? '' : prefix + (last ? '└─ ' : '├─ ')}${m.comm}${restored}`);
    const kids = children.get(m.key) ?? [];
    for (const [i, k] of kids.entries()) walk(k, top ? '' : prefix + (last ? '   ' : '│  '), i === kids.length - 1, false);
  };
  for (const m of children.get(undefined) ?? []) walk(m, '', true, true);
  return lines;
};

let state: JobMembership;

test.before(async () => {
  const store = openEventStore(url);
  await store.append('job-big', history());
  await store.append('job-small', [{ type: 'JobSubmitted', data: { job: 'small', owner: { uid: 0 } } }]);
  state = (await jobMembership(store, 'big'))!;
  await store.close();
});

test('ps --all draws the same tree as the quadratic version, every process of the history', () => {
  const members = membersOf(state);
  assert.ok(members.length > LOOPS, `${members.length} members`);
  const r = ckpt('ps', 'big', '--all');
  assert.is(r.code, 0, r.err);
  const [header, blank, unitLine, ...rest] = r.out.trimEnd().split('\n');
  assert.is(header, `job big: running, 5 running of ${members.length} processes`);
  assert.equal([blank, unitLine], ['', 'unit main on far-node: running, cgroup /ckpt/s/big/main']);
  assert.equal(rest, referenceTree(state, members));
  // The daemon forked by an exited child hangs under it, escaped; pids reused 75 times each find their own parent.
  assert.match(r.out, /\n9000 +1 +9000 +9000 +- +running +escaped: session, process-group, reparented +│ {2}└─ daemon\n/);
});

test('ps draws the running processes and the exited ones they descend from, and counts the rest', () => {
  const members = membersOf(state);
  const r = ckpt('ps', 'big');
  assert.is(r.code, 0, r.err);
  const rows = r.out.split('\n').filter((l) => /^\d/.test(l));
  // The root, the daemon's exited parent, the daemon and the last 3 children.
  assert.equal(
    rows.map((l) => l.split(/\s+/)[0]),
    ['100', String(1000 + (1000 % 40)), '9000', ...[LOOPS - 3, LOOPS - 2, LOOPS - 1].map((i) => String(1000 + (i % 40)))],
  );
  assert.match(r.out, `\n(${members.length - 6} exited processes not shown: --all lists them)\n`);
  assert.match(rows[1]!, /exited \(0\) .*├─ sh$/);
  assert.match(rows[2]!, /│ {2}└─ daemon$/);
  assert.match(rows[5]!, /└─ true$/);
  assert.equal(
    ckpt('ps', 'big', '--running')
      .out.split('\n')
      .filter((l) => /^\d/.test(l)).length,
    5,
  );
  const both = ckpt('ps', 'big', '--all', '--running');
  assert.equal([both.code, /--all and --running contradict/.test(both.err)], [2, true]);
});

test('ps and ps --running print from the live membership what the whole membership prints', async () => {
  const store = openEventStore(url);
  try {
    const r = ckpt('ps', 'big');
    assert.is(r.code, 0, r.err);
    assert.is(r.out, treeView(state, {}, nobody).join('\n') + '\n');
    const saved = await store.snapshots!.load('live-membership', 'big');
    assert.ok(saved && 'state' in saved, 'ps read (and saved) the live membership');
    const live = JSON.parse(saved.state) as { members: unknown[] };
    assert.ok(live.members.length < 20, `it keeps ${live.members.length} of ${state.members.size} members`);
    // From its snapshot now, the same again; --running and --json --running too.
    assert.is(ckpt('ps', 'big').out, r.out);
    assert.is(ckpt('ps', 'big', '--running').out, treeView(state, { running: true }, nobody).join('\n') + '\n');
    const running = JSON.parse(ckpt('ps', 'big', '--json', '--running').out);
    assert.equal(
      running,
      membersOf(state)
        .filter((m) => m.state === 'running')
        .map((m) => memberJson(state, m)),
    );
  } finally {
    await store.close();
  }
});

test('ps --json lists every process, formatted as one JSON array', () => {
  const r = ckpt('ps', 'big', '--json');
  assert.is(r.code, 0, r.err);
  const expected = membersOf(state).map((m) => memberJson(state, m, () => undefined));
  assert.is(r.out, JSON.stringify(expected, null, 2) + '\n');
  assert.is(ckpt('ps', 'small', '--json').out, '[]\n');
});

const revisions = (out: string) =>
  out
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { revision: number }).revision);

test('history --tail N: the last N events in order; --from and --limit page through', async () => {
  const head = (await (async () => {
    const store = openEventStore(url);
    try {
      return await store.streamRevision('job-big');
    } finally {
      await store.close();
    }
  })())!;
  let r = ckpt('history', 'big', '--tail', '5', '--json');
  assert.is(r.code, 0, r.err);
  assert.equal(revisions(r.out), [head - 4, head - 3, head - 2, head - 1, head]);
  assert.equal(
    revisions(ckpt('history', 'big', '--tail', '2500', '--json').out),
    Array.from({ length: 2500 }, (_, i) => head - 2499 + i),
  );
  assert.equal(revisions(ckpt('history', 'small', '--tail', '10', '--json').out), [0]);
  assert.equal(
    revisions(ckpt('history', 'big', '--from', '1500', '--limit', '1200', '--json').out),
    Array.from({ length: 1200 }, (_, i) => 1500 + i),
  );
  assert.equal(revisions(ckpt('history', 'big', '--from', String(head - 1), '--json').out), [head - 1, head]);
  assert.is(ckpt('history', 'big').out.trimEnd().split('\n').length, head + 1);
  r = ckpt('history', 'big', '--tail', '3');
  assert.match(r.out.split('\n')[2]!, new RegExp(`job-big#${head}  ProcessExecd  `));
  assert.is(ckpt('history', 'big', '--from', String(head + 1)).out, '');
  r = ckpt('history', 'big', '--tail', '3', '--from', '2');
  assert.equal([r.code, /--tail N prints the last N events/.test(r.err)], [2, true]);
  r = ckpt('history', 'nosuchjob', '--tail', '3');
  assert.equal([r.code, r.err.trim()], [1, 'ckpt history: unknown job "nosuchjob" (ckpt jobs lists them)']);
});

test('log --tail N: the last N events of the whole log; --from and --limit page through', async () => {
  const store = openEventStore(url);
  const head = await store.headPosition();
  await store.close();
  const positions = (out: string) =>
    out
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { position: number }).position);
  assert.equal(positions(ckpt('log', '--tail', '3', '--json').out), [head - 2, head - 1, head]);
  assert.equal(
    positions(ckpt('log', '--tail', '1234', '--json').out),
    Array.from({ length: 1234 }, (_, i) => head - 1233 + i),
  );
  assert.is(positions(ckpt('log', '--tail', String(head + 10), '--json').out).length, head);
  assert.equal(
    positions(ckpt('log', '--from', '10', '--limit', '2500', '--json').out),
    Array.from({ length: 2500 }, (_, i) => 10 + i),
  );
  assert.match(ckpt('log', '--tail', '1').out, /job-small#0 {2}JobSubmitted {2}job=small owner.uid=0\n$/);
  let r = ckpt('log', '--tail', '1', '--limit', '3');
  assert.equal([r.code, /--tail N prints the last N events/.test(r.err)], [2, true]);
  r = ckpt('log', '--follow', '--limit', '3');
  assert.equal([r.code, /takes no --limit/.test(r.err)], [2, true]);
});

test.run();
