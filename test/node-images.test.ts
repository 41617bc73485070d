// Images without a shared filesystem: two real node agents on this machine, each with its own
// CKPT_HOME (its own images root), sharing one SQLite store — the log is the only thing they share.
// `ckpt audit --verify` on one node checks its own images and asks the other node's agent through
// the log; that agent names a damaged file; a stopped agent is named as not answering; a prune is
// decided once and each node removes its own part (one whose agent is down, when it returns).
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { storeId } from '../adapters/agent/daemon.js';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { imagesRoot, versionDir } from '../adapters/images/image-store.js';
import { jobHarness, killMembers, type PsRow, removeCgroups } from './support/jobs.js';
import { firstMissing, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until as wait } from './support/wait.js';

const until = <T>(what: string, probe: () => T | undefined | false, ms = 30_000) => wait(what, probe, ms, 100);
const missing = firstMissing(needRoot, () => (locateCriu() ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)'));
const test = suiteRequiring('images on each node: audit --verify and prune across agents with their own CKPT_HOME (real agents, real CRIU)', missing);

const { work, h, newHome, ckpt } = jobHarness('ckpt-node-images', 'na');
const url = `sqlite:${join(work, 'shared.db')}`;
/** Each node: its own home, the one shared store. */
const homes = { na: h.home, nb: newHome() } as const;
type Node = keyof typeof homes;
const on = (node: Node, args: string[]) => ckpt(args, homes[node], { CKPT_STORE: url, CKPT_NODE: node });
const json = <T>(node: Node, args: string[]): T => {
  const r = on(node, [...args, '--json']);
  if (r.out.trim() === '') throw new Error(`ckpt ${args.join(' ')} on ${node}: exit ${r.code}: ${r.err}`);
  return JSON.parse(r.out) as T;
};
const history = () =>
  on('na', ['history', 'two', '--json'])
    .out.trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { type: string; data: Record<string, unknown>; metadata: { actor: { kind: string; node?: string } } });
const imagesOf = (node: Node, version: number) => versionDir(imagesRoot(homes[node]), 'two', version);

interface NodeCheck {
  version: number;
  node: string;
  units: string[];
  checkedBy: string;
  state: string;
  problems?: string;
}
const audit = (timeout = '20s') => {
  const r = on('na', ['audit', 'two', '--verify', '--timeout', timeout, '--json']);
  const [report] = JSON.parse(r.out) as Array<{ images: NodeCheck[] }>;
  return { code: r.code, images: report!.images, text: on('na', ['audit', 'two', '--verify', '--timeout', timeout]).out };
};

test.after(() => {
  for (const node of Object.keys(homes) as Node[]) {
    try {
      killMembers(json<PsRow[]>(node, ['ps', 'two']).filter((m) => m.state === 'running'));
    } catch {
      // nothing of the job left
    }
    on(node, ['agent', 'stop', '--node', node]);
  }
  for (const hierarchy of readdirSync('/sys/fs/cgroup')) removeCgroups(join('/sys/fs/cgroup', hierarchy, 'ckpt', storeId(url)));
  rmSync(work, { recursive: true, force: true });
});

test('a job with a unit on each node, checkpointed twice: each node commits its own part on its own disk', async () => {
  for (const [node, unit] of [
    ['na', 'a'],
    ['nb', 'b'],
  ] as const) {
    const r = on(node, ['run', '--detach', '--job', 'two', '--unit', unit, '--node', node, '--', 'sh', '-c', 'exec sleep 1000']);
    assert.is(r.code, 0, r.err);
  }
  await until(
    'both units run',
    () =>
      new Set(
        json<PsRow[]>('na', ['ps', 'two'])
          .filter((m) => m.state === 'running')
          .map((m) => m.unit),
      ).size === 2,
  );
  for (const version of [1, 2]) {
    const r = on('na', ['checkpoint', 'two', '--wait']);
    assert.is(r.code, 0, r.err);
    assert.match(r.out, `images of a here in ${imagesOf('na', version)}; b on nb`);
    assert.ok(existsSync(join(imagesOf('na', version), 'a')) && !existsSync(join(imagesOf('na', version), 'b')), `v${version}: only unit a on na's disk`);
    assert.ok(existsSync(join(imagesOf('nb', version), 'b')) && !existsSync(join(imagesOf('nb', version), 'a')), `v${version}: only unit b on nb's disk`);
  }
  // Where each unit's images are, and each node's manifest digest.
  const [v1] = json<Array<{ units: Array<{ unit: string; node: string }>; manifests: Record<string, string> }>>('na', ['checkpoints', 'two']);
  assert.equal(
    v1!.units.map((u) => `${u.unit}@${u.node}`),
    ['a@na', 'b@nb'],
  );
  assert.equal(Object.keys(v1!.manifests).sort(), ['na', 'nb']);
  assert.is.not(v1!.manifests.na, v1!.manifests.nb);
});

test('audit --verify on na checks na’s images here and gets nb’s verdict from nb’s agent, through the log', () => {
  const { code, images, text } = audit();
  assert.is(code, 0, text);
  assert.equal(
    images.map((i) => `v${i.version} ${i.node} ${i.units.join()} ${i.checkedBy} ${i.state}`),
    ['v1 na a here ok', 'v1 nb b agent ok', 'v2 na a here ok', 'v2 nb b agent ok'],
  );
  assert.match(text, 'images of v1 (b on nb): not on this node — nb’s agent says: ok'.replace('’', "'"));
  const answers = history().filter((e) => e.type === 'ImagesVerified');
  assert.ok(answers.length >= 2 && answers.every((e) => e.data.node === 'nb' && e.metadata.actor.node === 'nb'), 'answered by nb’s agent');
});

test('a damaged file on nb is reported by nb’s agent, naming the file', () => {
  const dir = join(imagesOf('nb', 1), 'b');
  const file = readdirSync(dir).find((f) => f.startsWith('pages-'))!;
  const bytes = readFileSync(join(dir, file));
  bytes[0] = bytes[0]! ^ 0xff;
  writeFileSync(join(dir, file), bytes);
  const { code, images, text } = audit();
  assert.is(code, 1, 'a damaged part fails --verify');
  const nb1 = images.find((i) => i.version === 1 && i.node === 'nb')!;
  assert.equal([nb1.checkedBy, nb1.state], ['agent', 'damaged']);
  assert.match(nb1.problems!, `${join(dir, file)}: SHA-256`);
  assert.equal(images.filter((i) => i.state !== 'ok').length, 1, 'only that part');
  assert.match(text, `b/${file}: SHA-256`);
});

test('nb’s agent stopped: the answer says nb did not answer and that its agent may be down', () => {
  assert.is(on('nb', ['agent', 'stop', '--node', 'nb']).code, 0);
  const { code, images, text } = audit('2s');
  assert.is(code, 1);
  const nb = images.filter((i) => i.node === 'nb');
  assert.equal(
    nb.map((i) => i.state),
    ['no answer', 'no answer'],
  );
  assert.match(nb[0]!.problems!, 'nb did not answer within 2 s: its agent may be down (ckpt nodes)');
  assert.equal(
    images.filter((i) => i.node === 'na').map((i) => i.state),
    ['ok', 'ok'],
    'na’s own images checked all the same',
  );
  assert.match(text, 'nb did not answer within 2 s');
});

test('prune with nb down: v1 decided pruned, removed on na at once and on nb when its agent returns; a restart of v1 is refused', async () => {
  const r = on('na', ['prune', 'two', '--keep', '1', '--timeout', '3s']);
  assert.is(r.code, 1, 'not every node removed its part yet');
  assert.match(r.out, /pruned v1 \(on na\) of two/);
  assert.match(r.err, 'v1: nb did not answer in time: its agent may be down (ckpt nodes); it removes its part when it runs again');
  assert.not.ok(existsSync(imagesOf('na', 1)), 'na removed its part');
  assert.ok(existsSync(imagesOf('nb', 1)), 'nb’s part waits for its agent');
  assert.ok(existsSync(imagesOf('na', 2)) && existsSync(imagesOf('nb', 2)), 'v2 kept on both');
  const restart = on('na', ['restart', 'two', '--version', '1', '--wait']);
  assert.is.not(restart.code, 0);
  assert.match(restart.err, 'version 1 of two');
  assert.is(on('nb', ['agent', 'start', '--node', 'nb']).code, 0);
  await until('nb removes its part of v1', () => !existsSync(imagesOf('nb', 1)));
  const pruned = history()
    .filter((e) => e.type === 'CheckpointPruned')
    .map((e) => `v${e.data.version} ${e.data.node}`)
    .sort();
  assert.equal(pruned, ['v1 na', 'v1 nb']);
  const { code, images } = audit();
  assert.is(code, 0);
  assert.equal(
    images.map((i) => `v${i.version} ${i.node} ${i.state}`),
    ['v1 na pruned', 'v1 nb pruned', 'v2 na ok', 'v2 nb ok'],
  );
});

test('prune with both agents up: removes both nodes’ parts and says where', () => {
  assert.is(on('na', ['checkpoint', 'two', '--wait']).code, 0);
  const r = json<{ pruned: Array<{ version: number; nodes: Record<string, number> }>; kept: number[]; waiting: unknown[] }>('na', ['prune', 'two', '--keep', '1']);
  assert.equal(
    r.pruned.map((p) => [p.version, Object.keys(p.nodes).sort()]),
    [[2, ['na', 'nb']]],
  );
  assert.equal([r.kept, r.waiting], [[3], []]);
  for (const node of ['na', 'nb'] as const) assert.not.ok(existsSync(imagesOf(node, 2)), `v2 gone from ${node}`);
  const verify = on('na', ['verify', 'two']);
  assert.is(verify.code, 0, verify.err);
});

test.run();
