// `ckpt agent start` on a long log, as root: the agent reports how far it has folded the log,
// `agent start` waits while that moves and shows it, `agent status` says "catching up", and a
// start whose agent stops making progress fails saying so (not at a fixed time, not silently).
import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { agentFiles, startingAgent } from '../adapters/agent/daemon.js';
import { openEventStore } from '../adapters/store/open.js';
import type { ProposedEvent } from '../domain/event-store.js';
import { CLI, jobHarness } from './support/jobs.js';
import { firstMissing, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until } from './support/wait.js';

const test = suiteRequiring('agent start on a long log', firstMissing(needRoot));
const node = 'startnode';
const { h, ckpt, cleanup } = jobHarness('ckpt-agent-start', node);
const url = `sqlite:${join(h.home, 'events.db')}`;
const EVENTS = 200_000;

test.after(() => cleanup());

/** A finished fork-heavy history on another node: forks and exits of short-lived processes, 1,000 to a batch. */
const writeHistory = async () => {
  const store = openEventStore(url);
  try {
    const on = { node: 'elsewhere', unit: 'main' };
    for (let i = 0; i < EVENTS / 2; i += 500) {
      const batch: ProposedEvent[] = [];
      for (let pid = i + 2; pid < i + 502; pid++) {
        const child = { pid, startTime: 1000 + pid };
        batch.push({ type: 'ProcessForked', data: { ...on, parent: { pid: 1, startTime: 100 }, child } });
        batch.push({ type: 'ProcessExited', data: { ...on, process: child, status: 0, signal: null } });
      }
      await store.append(`job-loop${i % 7}`, batch);
    }
  } finally {
    await store.close();
  }
};

test('a start shows its progress, waits while it is made, and says when it stops', async () => {
  await writeHistory();
  // The agent is paused as soon as it reports folding the log: progress stops, visibly.
  const start = spawn(process.execPath, [CLI, 'agent', 'start', '--stall', '3s'], { env: { ...process.env, CKPT_HOME: h.home, CKPT_NODE: node, CKPT_STORE: url } });
  let err = '';
  start.stderr.on('data', (d) => (err += d));
  const ended = new Promise<number | null>((resolve) => start.once('close', resolve));
  const starting = await until(
    'the agent reports folding the log',
    () => {
      const p = startingAgent(h.home, node, url);
      return p?.phase === 'log' && p;
    },
    60_000,
    5,
  );
  process.kill(starting.pid, 'SIGSTOP');
  try {
    assert.is(statSync(agentFiles(h.home, node, url).startFile).mode & 0o777, 0o600, 'the start file is root’s alone');
    const status = ckpt(['agent', 'status']);
    assert.is(status.code, 0, status.err);
    const shown = /starting: pid (\d+), catching up: ([\d,]+) of ([\d,]+) events/.exec(status.out);
    assert.ok(shown, status.out);
    const [folded, head] = [Number(shown[2]!.replace(/,/g, '')), Number(shown[3]!.replace(/,/g, ''))];
    assert.is(Number(shown[1]), starting.pid);
    assert.ok(head >= EVENTS && folded < head, status.out);
    const json = JSON.parse(ckpt(['agent', 'status', '--json']).out) as Record<string, unknown>;
    assert.equal([json.running, json.ready, json.phase, json.pid], [true, false, 'log', starting.pid]);

    assert.is(await ended, 1, err);
    assert.match(err, /the node agent is starting: catching up: [\d,]+ of [\d,]+ events/);
    assert.match(err, new RegExp(`did not start: it made no progress for 3 s \\(last: catching up: [\\d,]+ of [\\d,]+ events\\); it still runs as pid ${starting.pid}`));
  } finally {
    process.kill(starting.pid, 'SIGCONT');
  }
  // Resumed, it finishes: a second start waits for the same agent (no second one races it).
  const again = ckpt(['agent', 'start', '--json']);
  assert.is(again.code, 0, again.err);
  const info = JSON.parse(again.out) as { pid: number; running: boolean };
  assert.equal([info.running, info.pid], [true, starting.pid]);
  assert.is(startingAgent(h.home, node, url), undefined, 'a ready agent has no start file');
  assert.match(ckpt(['agent', 'status']).out, `node agent for ${node} running: pid ${starting.pid}`);
});

test.run();
