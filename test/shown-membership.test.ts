// The fold `ckpt ps` reads by default (evolveShownMembership: the live fold that also keeps every
// exited member a kept member was forked by) against the fold of everything: the same tree drawn
// at every step of a simulated job, while it keeps exactly what runs, unit roots, what kept
// checkpoints captured, and the members those were forked by. Pure: the history is generated.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { treeView } from '../adapters/cli/commands/ps.js';
import type { RecordedEvent } from '../domain/event-store.js';
import { evolveMembership, evolveShownMembership, initialMembership, type JobMembership, type Member, membersOf } from '../domain/membership.js';
import { entriesOf, getIn } from '../domain/persistent-map.js';
import { decodeMembership, encodeMembership } from '../projections/jobs.js';

const test = suite('shown membership');

/** A deterministic stream of numbers in [0, 1) (a test's own generator, seeded). */
const generator = (seed: number) => () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0), seed / 2 ** 32);

interface Proc {
  readonly node: string;
  readonly unit: string;
  readonly pid: number;
  readonly startTime: number;
}

/**
 * A job of two units whose processes fork, exit, daemonize (setsid, re-parented to 1), vanish and
 * are found by /proc reconciliation; pids come from a small pool, so they are reused; checkpoints
 * capture a unit's running processes, some versions are pruned, and a killed unit is restored
 * from a kept version. Each kind of event the fold keeps or lets members go on occurs often.
 */
const simulate = (seed: number, steps: number): RecordedEvent[] => {
  const random = generator(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  const events: RecordedEvent[] = [];
  const at = (type: string, data: object) =>
    events.push({
      type,
      data,
      stream: 'job-j',
      revision: events.length,
      position: events.length + 1,
      id: String(events.length + 1),
      metadata: { recordedAt: '2026-01-01T00:00:00.000Z' },
    } as unknown as RecordedEvent);
  const units = [
    { unit: 'u0', node: 'n1', base: 100 },
    { unit: 'u1', node: 'n2', base: 200 },
  ];
  let clock = 1;
  const running: Proc[] = [];
  const versions = new Map<number, Proc[]>();
  const ref = (p: Proc) => ({ pid: p.pid, startTime: p.startTime });
  const on = (p: Proc) => ({ node: p.node, unit: p.unit, process: ref(p) });
  /** A pid of the unit's pool that no running process of its node holds (60 of them: reused often). */
  const freePid = (node: string, base: number) => {
    for (;;) {
      const pid = base + 1 + Math.floor(random() * 60);
      if (!running.some((p) => p.node === node && p.pid === pid)) return pid;
    }
  };
  const start = (node: string, unit: string, base: number): Proc => {
    const p = { node, unit, pid: freePid(node, base), startTime: clock++ };
    running.push(p);
    return p;
  };
  const end = (p: Proc) => running.splice(running.indexOf(p), 1);
  at('JobSubmitted', { job: 'j', owner: { uid: 1000 } });
  for (const u of units) {
    const root = { node: u.node, unit: u.unit, pid: u.base, startTime: clock++ };
    running.push(root);
    at('UnitAssigned', { unit: u.unit, node: u.node, command: ['sim'], cwd: '/', limits: {} });
    at('UnitLaunched', { unit: u.unit, node: u.node, root: ref(root), pgid: u.base, sid: u.base, comm: 'sim', cgroup: `/ckpt/j/${u.unit}` });
    at('UnitTracked', { unit: u.unit, node: u.node, root: ref(root), stdio: [] });
  }
  let version = 0;
  for (let i = 0; i < steps; i++) {
    const u = pick(units);
    // Below a handful of processes a unit only forks (a job that dies out draws nothing), above 40 it
    // only lets them exit (its pool of 60 pids stays big enough to pick a free one).
    const count = running.filter((x) => x.unit === u.unit).length;
    const r = count < 4 ? 0 : count > 40 ? 0.5 : random();
    const mine = running.filter((p) => p.unit === u.unit);
    if (mine.length === 0) continue;
    const p = pick(mine);
    if (r < 0.45) {
      const child = start(p.node, p.unit, u.base);
      at('ProcessForked', { node: p.node, unit: p.unit, parent: ref(p), child: ref(child), ...(random() < 0.5 && { comm: 'sh' }) });
    } else if (r < 0.82) {
      end(p);
      at('ProcessExited', { ...on(p), status: 0, signal: null });
    } else if (r < 0.86) {
      end(p);
      at('ProcessVanished', { ...on(p) });
    } else if (r < 0.9) {
      at('ProcessSessionChanged', { ...on(p), sid: p.pid, pgid: p.pid });
      at('ProcessReparented', { ...on(p), ppid: 1 });
    } else if (r < 0.93) {
      const seen = start(p.node, p.unit, u.base);
      at('ProcessObserved', { ...on(seen), ppid: p.pid, pgid: u.base, sid: u.base, comm: 'found', source: 'reconcile', parent: ref(p) });
    } else if (r < 0.96) {
      versions.set(++version, [...mine]);
      at('UnitVerified', { version, unit: u.unit, node: u.node, captured: mine.map((x) => x.pid), processes: mine.map(ref) });
    } else if (r < 0.98 && versions.size > 0) {
      const v = pick([...versions.keys()]);
      versions.delete(v);
      at('CheckpointPruned', { version: v, bytes: 1 });
    } else if (versions.size > 0) {
      // The unit is killed and restored from a kept version of it, with new pids.
      const v = pick([...versions.keys()]);
      const captured = versions.get(v)!;
      const from = units.find((x) => x.unit === captured[0]!.unit)!;
      for (const x of running.filter((x) => x.unit === from.unit)) end(x), at('ProcessExited', { ...on(x), status: null, signal: 9 });
      const now = captured.map(() => start(from.node, from.unit, from.base));
      at('UnitRestored', { restart: v, unit: from.unit, node: from.node, durationMs: 1, processes: captured.map((was, k) => ({ was: ref(was), now: ref(now[k]!), nsPid: null })) });
    }
  }
  return events;
};

const nobody = (): undefined => undefined;
const views = (m: JobMembership) => ({ tree: treeView(m, {}, nobody), running: treeView(m, { running: true }, nobody) });

/**
 * What the fold keeps: running members, unit roots, captured ones, and whoever forked a kept one
 * (parents found as ps finds them). A restore can link its processes in a cycle (a restored pid
 * that equals another's parent's old pid): ps draws none of a cycle, and the fold keeps it.
 */
const mustKeep = (full: JobMembership, pinned: ReadonlySet<string>): string[] => {
  const members = membersOf(full);
  const roots = new Set(Object.values(full.units).map((u) => u.root));
  const byPid = new Map<string, Member[]>();
  for (const p of members) byPid.set(`${p.unit}/${p.node}/${p.pid}`, [...(byPid.get(`${p.unit}/${p.node}/${p.pid}`) ?? []), p]);
  const parentOf = (m: Member) => byPid.get(`${m.unit}/${m.node}/${m.forkedBy}`)?.find((p) => p.since <= m.since && (p.until === undefined || p.until >= m.since));
  const onCycle = (m: Member) => {
    const seen = new Set<Member>();
    for (let at = parentOf(m); at && !seen.has(at); at = parentOf(at))
      if (at === m) return true;
      else seen.add(at);
    return false;
  };
  const kept = new Set<string>();
  for (const m of members) {
    if (m.state !== 'running' && !roots.has(m.key) && !pinned.has(m.key) && !onCycle(m)) continue;
    for (let at: Member | undefined = m; at && !kept.has(at.key); at = parentOf(at)) kept.add(at.key);
  }
  return [...kept].sort();
};

for (const seed of [1, 2]) {
  test(`a simulated job (seed ${seed}): the same tree at every step, keeping only what it draws or decisions need (and fork cycles)`, () => {
    const history = simulate(seed, 2500);
    let full = initialMembership('j');
    let shown = initialMembership('j');
    const formerRoots = new Set<string>();
    for (const [i, e] of history.entries()) {
      full = evolveMembership(full, e);
      shown = evolveShownMembership(shown, e);
      for (const u of Object.values(full.units)) if (u.root) formerRoots.add(u.root);
      if (i % 40 !== 0 && e.type !== 'UnitRestored' && e.type !== 'CheckpointPruned' && i !== history.length - 1) continue;
      assert.equal(views(shown), views(full), `after ${e.type} at ${e.position}`);
      // Exactly what must be kept (a restore's former roots stay, as in the coordinator's fold).
      const pinned = new Set([...entriesOf(shown.live!.pins)].map(([k]) => k).concat([...formerRoots].filter((k) => getIn(shown.members, k))));
      assert.equal([...entriesOf(shown.members)].map(([k]) => k).sort(), mustKeep(full, pinned), `kept after ${e.type} at ${e.position}`);
    }
    const kinds = new Set<string>(history.map((e) => e.type));
    for (const k of ['ProcessVanished', 'ProcessReparented', 'ProcessObserved', 'UnitVerified', 'CheckpointPruned', 'UnitRestored']) assert.ok(kinds.has(k), `the history has ${k}`);
    assert.is(shown.members.size + shown.live!.departed, full.members.size, 'each member kept or counted');
    assert.ok(shown.live!.departed > full.members.size / 2, `${shown.members.size} kept of ${full.members.size}`);
    assert.ok(
      views(full).tree.some((l) => / exited .*[├└]─ /.test(l)),
      'an exited ancestor is drawn',
    );
  });
}

test('through its snapshot encoding the shown fold folds on to the same tree and the same fork tree', () => {
  const history = simulate(7, 2000);
  const fold = (from: JobMembership, events: readonly RecordedEvent[]) => events.reduce(evolveShownMembership, from);
  const plain = fold(initialMembership('j'), history);
  const forks = (m: JobMembership) => {
    const t = m.live!.forks!;
    const sorted = <V>(map: Parameters<typeof entriesOf<V>>[0]) =>
      [...entriesOf(map)].map(([k, v]) => [k, Array.isArray(v) ? [...v].sort() : v]).sort(([a], [b]) => String(a).localeCompare(String(b)));
    return { running: sorted(t.running), parent: sorted(t.parent), children: sorted(t.children) };
  };
  for (let cut = 100; cut < history.length; cut += 150) {
    const before = fold(initialMembership('j'), history.slice(0, cut));
    const decoded = decodeMembership(JSON.parse(JSON.stringify(encodeMembership(before))));
    assert.equal(forks(decoded), forks(before), `the fork tree decoded as encoded at ${cut}`);
    const after = fold(decoded, history.slice(cut));
    assert.equal(views(after), views(plain), `folded on from ${cut}`);
    assert.equal(forks(after), forks(plain));
    assert.is(after.live!.departed, plain.live!.departed);
  }
});

test.run();
