// Pruning decided from the log, and what a node's images are checked by: pure, on recorded
// histories of a job with units on two nodes (a loop plays the coordinator).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { evolveCommands, noCommands, pendingOn } from '../domain/checkpoint-commands.js';
import { rederive } from '../domain/decider.js';
import type { ProposedEvent, RecordedEvent } from '../domain/event-store.js';
import { jobCoordinator } from '../domain/job-coordinator.js';
import { evolvePruneProgress, pruneProgress, pruneSettled } from '../domain/prune.js';
import { evolveNodeAnswers, nodeParts } from '../projections/node-images.js';
import { p, worldOf } from './support/coordinator.js';

const test = suite('prune decided from the log; node images');
const coordinator = jobCoordinator('j');
const world = worldOf(coordinator);
const NODES = ['n1', 'n2'];
const digest = (c: string) => c.repeat(64);

/** Versions 1..n committed, each with unit u0 on n1 and u1 on n2, each node its own manifest. */
const committed = async (n: number) => {
  const w = await world(NODES);
  for (let version = 1; version <= n; version++) {
    await w.said({ type: 'CheckpointRequested', data: { request: `c${version}`, stop: false, timeoutMs: 30_000 } });
    for (const [i, node] of NODES.entries()) {
      const unit = { version, unit: `u${i}`, node };
      const base = 100 * (i + 1);
      await w.said({ type: 'UnitFrozen', data: { ...unit, processes: 3, durationMs: 1 } });
      await w.said({ type: 'UnitDumped', data: { ...unit, files: 3, bytes: 100, durationMs: 5 } });
      await w.said({ type: 'UnitVerified', data: { ...unit, captured: [base, base + 1, base + 2], processes: [p(base), p(base + 1), p(base + 2)] } });
    }
    const nodes = Object.fromEntries(NODES.map((node, i) => [node, { units: [`u${i}`], files: 3, bytes: 100, manifest: digest(String(i + 1)) }]));
    await w.said({ type: 'CheckpointCommitted', data: { version, files: 6, bytes: 200, durationMs: 1, nodes } });
    for (const [i, node] of NODES.entries()) await w.said({ type: 'UnitThawed', data: { version, unit: `u${i}`, node, frozenMs: 9 } });
  }
  return w;
};
const prune = (keep: number, extra: object = {}, metadata?: object): ProposedEvent =>
  ({ type: 'PruneRequested', data: { request: 'p1', keep, timeoutMs: 30_000, ...extra }, ...(metadata && { metadata }) }) as ProposedEvent;
const all = async (w: Awaited<ReturnType<typeof world>>) => (await w.store.readStream('job-j', { limit: 10_000 })) as Array<RecordedEvent & { data: any }>; // eslint-disable-line @typescript-eslint/no-explicit-any

test('all but the newest N committed versions go, each node holding units of one asked to remove its part', async () => {
  const w = await committed(3);
  await w.said(prune(1));
  assert.equal((await w.last('PrunePlanned'))!.data, { request: 'p1', versions: [1, 2], kept: [3] });
  const asked = (await all(w)).filter((e) => e.type === 'ImagesPruneRequested').map((e) => `v${e.data.version} ${e.data.node}`);
  assert.equal(asked, ['v1 n1', 'v1 n2', 'v2 n1', 'v2 n2']);
  // Each node is told its own part: the pending commands of each node.
  const commands = (await all(w)).reduce(evolveCommands, noCommands);
  assert.equal(
    pendingOn(commands, 'n2')
      .filter((c) => c.step === 'prune')
      .map((c) => c.key),
    ['prune v1 n2', 'prune v2 n2'],
  );
  // A second prune finds nothing more to remove: the decided ones are gone from the log's view.
  await w.said(prune(1, { request: 'p2' }));
  assert.equal((await all(w)).filter((e) => e.type === 'PrunePlanned').pop()!.data, { request: 'p2', versions: [], kept: [3] });
  assert.equal(rederive(coordinator, await w.store.readAll({ limit: 10_000 })).differences, []);
});

test('a version pruned on any node is not restorable: from the decision on, a restart of it is refused naming it', async () => {
  const w = await committed(2);
  await w.said(prune(1));
  await w.said({ type: 'CheckpointPruned', data: { version: 1, node: 'n1', bytes: 100 } }); // n2 has not answered
  await w.said({ type: 'RestartRequested', data: { request: 'r1', version: 1, placement: [], timeoutMs: 30_000 } } as ProposedEvent);
  const refused = await w.last('RequestRejected');
  assert.equal([refused!.data.request, refused!.data.code], ['r1', 'not-found']);
  assert.match(refused!.data.reason, 'version 1 of j');
  assert.not.ok(await w.last('RestartPlanned'));
});

test('never the version a restart in progress restores from; a stranger is refused; a request of older agents decides nothing', async () => {
  const w = await committed(3);
  await w.said({ type: 'RestartRequested', data: { request: 'r1', version: 1, placement: [], timeoutMs: 30_000 } } as ProposedEvent);
  assert.ok(await w.last('RestartPlanned'));
  await w.said(prune(1));
  assert.equal((await w.last('PrunePlanned'))!.data, { request: 'p1', versions: [2], kept: [1, 3] });
  await w.said(prune(1, { request: 'p2' }, { actor: { kind: 'user', uid: 2000 } }));
  const refused = await w.last('RequestRejected');
  assert.equal([refused!.data.request, refused!.data.command, refused!.data.code], ['p2', 'prune', 'unauthorized']);
  const before = (await all(w)).length;
  await w.said({ type: 'PruneRequested', data: { request: 'old', keep: 1 } }); // no timeoutMs: its agent pruned on its own
  assert.is((await all(w)).length, before + 1, 'no decision for a prune request of an older agent');
});

test('a version a node’s agent found damaged does not count as one of the N: the newest sound one is kept too', async () => {
  const w = await committed(3);
  await w.said({ type: 'ImagesVerifyFailed', data: { request: 'a1', version: 3, node: 'n2', reason: 'pages-1.img: SHA-256 …' } } as ProposedEvent);
  await w.said(prune(1));
  assert.equal((await w.last('PrunePlanned'))!.data, { request: 'p1', versions: [1], kept: [2, 3] });
  assert.equal(rederive(coordinator, await w.store.readAll({ limit: 10_000 })).differences, []);
});

test('a prune’s progress: settled when every node answered; a node that has not is still waited for', async () => {
  const w = await committed(2);
  await w.said(prune(1));
  const from = (await all(w)).find((e) => e.type === 'PruneRequested')!.revision;
  const fold = (events: RecordedEvent[]) => events.filter((e) => e.revision > from).reduce(evolvePruneProgress, pruneProgress('p1'));
  const events = await all(w);
  const planned = events.findIndex((e) => e.type === 'PrunePlanned');
  assert.not.ok(pruneSettled(fold(events.slice(0, planned + 1))), 'not settled before its nodes are asked');
  let progress = fold(events);
  assert.equal([progress.planned?.versions, progress.waiting, pruneSettled(progress)], [[1], { 1: ['n1', 'n2'] }, false]);
  await w.said({ type: 'CheckpointPruned', data: { version: 1, node: 'n1', bytes: 100 } });
  progress = fold(await all(w));
  assert.equal([progress.waiting, progress.removed, pruneSettled(progress)], [{ 1: ['n2'] }, { 1: { n1: 100 } }, false]);
  await w.said({ type: 'ImagesPruneFailed', data: { version: 1, node: 'n2', reason: 'EACCES' } });
  progress = fold(await all(w));
  assert.equal([progress.failed, pruneSettled(progress)], [[{ version: 1, node: 'n2', reason: 'EACCES' }], true]);
});

test('an images check asked of a node is that node’s command until it answers', async () => {
  const w = await committed(1);
  await w.said({ type: 'ImagesVerifyRequested', data: { request: 'a1', version: 1, node: 'n2' } } as ProposedEvent);
  let commands = (await all(w)).reduce(evolveCommands, noCommands);
  assert.equal(
    pendingOn(commands, 'n2').map((c) => [c.step, c.asked]),
    [['images-audit', 'a1']],
  );
  assert.equal(pendingOn(commands, 'n1'), []);
  assert.equal(commands.versions[1]!.manifests, { n1: digest('1'), n2: digest('2') });
  await w.said({ type: 'ImagesVerified', data: { request: 'a1', version: 1, node: 'n2', files: 3, bytes: 100 } } as ProposedEvent);
  commands = (await all(w)).reduce(evolveCommands, noCommands);
  assert.equal(pendingOn(commands, 'n2'), []);
  const answers = (await all(w)).reduce(evolveNodeAnswers(new Set(['a1'])), {});
  assert.equal(answers, { a1: { ok: true, files: 3, bytes: 100 } });
});

test('who checks which node’s part: here, the same manifest as here (a shared disk), its own agent, or nobody (pruned)', () => {
  const units = [
    { unit: 'a', node: 'n1' },
    { unit: 'b', node: 'n2' },
    { unit: 'c', node: 'n3' },
  ];
  const parts = nodeParts(
    [
      { version: 1, units, manifests: { n1: digest('1'), n2: digest('1'), n3: digest('3') } },
      { version: 2, units, manifest: digest('9') },
      { version: 3, units, manifests: { n1: digest('1'), n2: digest('2'), n3: digest('3') } },
    ],
    'n2',
    new Set([3]),
  );
  assert.equal(
    parts.map((q) => `v${q.version} ${q.node} ${q.units.join()} ${q.check}`),
    ['v1 n2 b here', 'v1 n1 a shared', 'v1 n3 c ask', 'v2 n2 b here', 'v2 n1 a shared', 'v2 n3 c shared', 'v3 n2 b pruned', 'v3 n1 a pruned', 'v3 n3 c pruned'],
  );
});

test.run();
