// `ckpt demo`, the quick start, as root with real CRIU: the whole story succeeds; at its end the
// job is stopped and so is the node agent the demo started, unless --keep (which keeps both); an
// agent that ran before the demo is left running. And the history of the demo's own job — its
// command spans several lines — keeps one line per event.
import * as assert from 'uvu/assert';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { jobHarness } from './support/jobs.js';
import { firstMissing, needCommand, needRoot, suiteRequiring } from './support/prerequisites.js';

const missing = firstMissing(
  needRoot,
  () => (locateCriu() ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)'),
  () => needCommand('setpriv', 'apt-get install -y util-linux'),
);
const test = suiteRequiring('ckpt demo (real CRIU)', missing);

const { newHome, ckpt, running, cleanup } = jobHarness('ckpt-demo', 'demonode');
test.after(() => cleanup());

const demo = (home: string, extra: string[] = []) => {
  const r = ckpt(['demo', ...extra], home);
  assert.is(r.code, 0, r.out + r.err);
  assert.match(r.out, /the counter went on from the checkpoint/);
  const job = /Start a job[\s\S]*?\$ ckpt run --detach --job (demo-[0-9a-f]{4}) /.exec(r.out)?.[1];
  assert.ok(job, `the demo names its job:\n${r.out}`);
  return { out: r.out, job: job! };
};
const agentPid = (home: string): number | undefined => {
  const r = ckpt(['agent', 'status', '--json'], home);
  const status = JSON.parse(r.out) as { running: boolean; pid?: number };
  return status.running ? status.pid : undefined;
};

test('on a fresh CKPT_HOME: the whole story succeeds, then the job and the agent the demo started are stopped, and it says so', () => {
  const home = newHome();
  const { out, job } = demo(home);
  assert.match(out, /restored from v1/);
  assert.match(out, /all \d+ recorded decisions re-derived identically/);
  assert.match(out, /\$ ckpt agent stop\nstopped the node agent for demonode \(pid \d+\)/);
  assert.match(out, new RegExp(`Done: the job ${job} was stopped\\. The node agent the demo started for demonode \\(pid \\d+\\) was stopped too\\.`));
  assert.is(agentPid(home), undefined, 'no agent left running');
  assert.equal(running(job, home), [], 'no process of the job left running');

  // The job's command spans several lines: its history still has one line per event.
  const history = ckpt(['history', job], home);
  assert.is(history.code, 0, history.err);
  const lines = history.out.trimEnd().split('\n');
  const events = JSON.parse(`[${ckpt(['history', job, '--json'], home).out.trimEnd().split('\n').join(',')}]`) as unknown[];
  assert.is(lines.length, events.length, 'one line per event');
  for (const line of lines) assert.match(line, /^ *\d+ {2}\S+ {2}(job|node)-\S+#\d+ {2}\w+ {2}/, line);
  assert.ok(
    lines.some((l) => / UnitAssigned {2}.*command=sh,-c,\(while :; do sleep 1; done\) &\\nsh -c /.test(l)),
    'the command with its newlines escaped',
  );
});

test('--keep keeps the restarted job and the agent running, and says so', () => {
  const home = newHome();
  const { out, job } = demo(home, ['--keep']);
  assert.match(out, new RegExp(`Done: the job ${job} keeps running \\(ckpt ps ${job}\\), and so does the node agent for demonode`));
  assert.not.match(out, /\$ ckpt agent stop/);
  assert.ok(agentPid(home), 'the agent still runs');
  assert.ok(running(job, home).length > 0, 'the job still runs');
  // cleanup() stops the agent and kills what is left in the job's cgroups
});

test('an agent that ran before the demo is left running', () => {
  const home = newHome();
  assert.is(ckpt(['agent', 'start'], home).code, 0);
  const before = agentPid(home)!;
  assert.ok(before);
  const { out, job } = demo(home);
  assert.match(out, new RegExp(`Done: the job ${job} was stopped\\. The node agent for demonode \\(pid ${before}\\) was running before the demo and still runs\\.`));
  assert.not.match(out, /\$ ckpt agent stop/);
  assert.is(agentPid(home), before);
  assert.equal(running(job, home), []);
});

test.run();
