// `ckpt nodes` with a real agent: alive while its process lives (with its probed checkpointer and
// the units it runs), stopped with the reason when it stopped cleanly, dead when its process was
// killed; and the fold itself on a node seen from another machine (its agent not checked).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { agentFiles } from '../adapters/agent/daemon.js';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { nodeState } from '../adapters/cli/commands/nodes.js';
import { openEventStore } from '../adapters/store/open.js';
import { evolveNode } from '../projections/nodes.js';
import { jobHarness, sigkill } from './support/jobs.js';
import { firstMissing, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until } from './support/wait.js';

interface NodeRow {
  node: string;
  state: string;
  stopped: { reason: string } | null;
  agent: { pid: number } | null;
  checkpointer: { name: string; usable: boolean } | null;
  units: string[];
  lastSeen: string;
}

const missing = firstMissing(needRoot, () => (locateCriu() ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)'));
const test = suiteRequiring('ckpt nodes (real agent)', missing);
const NODE = 'nodesnode';
const { h, ckpt, json, cleanup } = jobHarness('ckpt-nodes', NODE);
test.after(() => cleanup());
const node = () => json<NodeRow[]>(['nodes']).find((n) => n.node === NODE)!;

test('alive with its checkpointer and units; stopped, with why; dead when its process is killed', async () => {
  assert.is(ckpt(['run', '--detach', '--job', 'nj', '--', 'sleep', '600']).code, 0);
  let n = node();
  assert.is(n.state, 'alive');
  assert.is(n.checkpointer?.name, 'criu');
  assert.ok(n.checkpointer?.usable);
  assert.equal(n.units, ['nj/main']);
  const table = ckpt(['nodes']);
  assert.is(table.code, 0, table.err);
  assert.match(table.out, new RegExp(`^${NODE} +alive +pid ${n.agent!.pid}`, 'm'));
  assert.is(ckpt(['agent', 'stop']).code, 0);
  n = node();
  assert.is(n.state, 'stopped');
  assert.ok(n.stopped && n.stopped.reason.length > 0, 'the reason it stopped');
  assert.is(ckpt(['agent', 'start']).code, 0);
  n = node();
  assert.is(n.state, 'alive');
  const pid = (JSON.parse(readFileSync(agentFiles(h.home, NODE, `sqlite:${join(h.home, 'events.db')}`).pidFile, 'utf8')) as { pid: number }).pid;
  assert.is(n.agent!.pid, pid);
  sigkill(pid);
  await until('the agent is gone', () => node().state.startsWith('dead'), 10_000, 100);
  assert.match(ckpt(['nodes']).out, new RegExp(`^${NODE} +dead \\(its agent ended without stopping\\)`, 'm'));
});
test.run();

const fold = suite('ckpt nodes: the fold');
fold('a node of another machine: what its agent recorded, not checked from here', async () => {
  const store = openEventStore('memory:');
  await store.append('node-far', [
    { type: 'NodeRegistered', data: { node: 'far', hostname: 'far.example', kernel: '6.1', bootId: 'another-boot', arch: 'x64' } },
    { type: 'NodeAgentStarted', data: { node: 'far', agent: { pid: 4242, startTime: 1 }, version: '0.1.0' } },
  ]);
  await store.append('job-x', [{ type: 'ProcessForked', data: { node: 'far', unit: 'main', parent: { pid: 4243, startTime: 2 }, child: { pid: 4244, startTime: 3 } } }]);
  const events = await store.readAll({ from: 1 });
  await store.close();
  const v = events.reduce(evolveNode, { node: 'far', lastSeen: '' });
  assert.is(v.hostname, 'far.example');
  assert.is(v.agent?.pid, 4242);
  assert.is(v.lastSeen, events[2]!.metadata.recordedAt, 'last seen: its latest event in any stream');
  assert.is(nodeState(v, 'this-boot'), 'started (elsewhere: not checked)');
  assert.is(nodeState({ node: 'new', lastSeen: '' }, 'this-boot'), 'no agent yet');
});
fold.run();
