// The dashboard in a real browser: Debian's Chromium driven by playwright-core, the real
// `ckpt dashboard` over the store of a real node agent that runs real jobs and checkpoints them
// with CRIU. A checkpoint started while the page is open appears live with its steps in order;
// the time-travel slider shows a process that has since exited; a failed checkpoint shows its
// cause; a hostile command line is shown as text. Screenshots are kept (the directory is printed);
// the latency from an append to the change drawn in the page is reported, never asserted.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as assert from 'uvu/assert';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { CLI, jobHarness, killMembers } from './support/jobs.js';
import { freePort } from './support/postgres.js';
import { firstMissing, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until } from './support/wait.js';

const CHROMIUM = '/usr/bin/chromium';
const hasPlaywright = (): string | undefined => {
  try {
    createRequire(import.meta.url).resolve('playwright-core');
    return undefined;
  } catch {
    return 'needs the npm package playwright-core (run: npm install)';
  }
};
const missing = firstMissing(
  needRoot,
  () => (locateCriu() ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)'),
  () => (existsSync(CHROMIUM) ? undefined : `needs ${CHROMIUM} (install: apt-get install -y chromium)`),
  hasPlaywright,
);
const test = suiteRequiring('dashboard in Chromium: live checkpoints, time travel, failure causes', missing);

const NODE = 'dashnode';
const { work, h, ckpt, ps, history, cleanup } = jobHarness('ckpt-dash-browser', NODE);
const ARTIFACTS = resolve(process.env.CKPT_TEST_ARTIFACTS ?? fileURLToPath(new URL('../../test-artifacts/', import.meta.url)), 'dashboard');
const HOSTILE = '<script>window.pwned = 1</script>';

type Page = import('playwright-core').Page;
type Browser = import('playwright-core').Browser;
let browser: Browser | undefined;
let page: Page;
let dashboard: ChildProcess | undefined;
let base = '';

test.before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  console.log(`artifacts: dashboard screenshots in ${ARTIFACTS}`);
  // A job whose first child exits (the slider shows it), with a daemon that left the session
  // (marked escaped), and whose command line holds markup.
  const r = ckpt(['run', '--detach', '--job', 'watched', '--', 'sh', '-c', `sleep 0.5; echo '${HOSTILE}' > /dev/null; setsid sleep 1001 & exec sleep 1000`]);
  assert.is(r.code, 0, r.err);
  await until('the first sleep to exit', () => ps('watched').some((m) => m.comm === 'sleep' && m.state !== 'running'), 20_000);
  const port = await freePort();
  dashboard = spawn(process.execPath, [CLI, 'dashboard', '--listen', `127.0.0.1:${port}`], {
    env: { ...process.env, CKPT_HOME: h.home, CKPT_NODE: NODE, CKPT_STORE: '' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  dashboard.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  base = await until('the dashboard to serve', () => /on (http:\/\/\S+)/.exec(out)?.[1], 20_000);
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
});

test.after(async () => {
  await browser?.close();
  dashboard?.kill('SIGTERM');
  for (const job of ['watched', 'tcp']) {
    try {
      killMembers(ps(job));
    } catch {
      // never started
    }
  }
  cleanup([NODE]);
});

const shot = async (name: string) => {
  const file = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
};

test('the slider shows a process that has since exited; the command line is text', async () => {
  await page.goto(`${base}#/job/watched`);
  await page.waitForSelector('#membership .member');
  const gone = ps('watched').find((m) => m.comm === 'sleep' && m.state !== 'running')!;
  const execd = history('watched').find((e) => e.type === 'ProcessExecd' && (e.data.process as { pid: number }).pid === gone.pid)!;
  // Now: it exited and descends from nothing that runs, so the tree does not draw it.
  assert.is(await page.locator(`.member[data-pid="${gone.pid}"][data-state="running"]`).count(), 0);
  await page.$eval(
    '#at',
    (input, at) => {
      (input as unknown as { value: string }).value = String(at);
      input.dispatchEvent(new Event('change'));
    },
    execd.position,
  );
  await page.waitForSelector(`.member[data-pid="${gone.pid}"][data-state="running"]`, { timeout: 10_000 });
  assert.match((await page.textContent('#at-label')) ?? '', `at log position ${execd.position}`);
  assert.match((await page.textContent(`.member[data-pid="${gone.pid}"]`)) ?? '', 'sleep');
  await shot('time-travel');
  // The command line holding <script> is shown as it is, and nothing of it ran.
  assert.match((await page.textContent('.unit .command')) ?? '', HOSTILE);
  assert.is(await page.evaluate(() => (globalThis as { pwned?: number }).pwned), undefined);
  await page.click('#at-live');
  await page.waitForSelector('#at-label:has-text("live")');
  // The daemon that left the job's session is drawn, marked escaped, with how.
  const daemon = page.locator('.member[data-reason="escaped"][data-state="running"]');
  await daemon.waitFor();
  assert.match((await daemon.textContent()) ?? '', /sleep — running\s*escaped: session, process-group/);
});

test('a checkpoint started while the page is open appears live, its steps in order', async () => {
  await page.goto(`${base}#/job/watched`);
  await page.waitForSelector('#membership .member');
  assert.is(await page.locator('[data-op="checkpoint-1"]').count(), 0);
  const opened = await page.evaluate(() => performance.timeOrigin);
  const taken = ckpt(['checkpoint', 'watched', '--wait']);
  assert.is(taken.code, 0, taken.err);
  const op = page.locator('[data-op="checkpoint-1"][data-outcome="committed"]');
  await op.waitFor({ timeout: 20_000 });
  assert.is(await page.evaluate(() => performance.timeOrigin), opened, 'drawn live, without a reload');
  const steps = (await op.locator('svg.gantt').getAttribute('data-steps'))!.split(' ');
  assert.equal(
    steps.filter((s) => s.startsWith('main:')),
    ['main:freeze', 'main:dump', 'main:verify', 'main:thaw'],
  );
  assert.ok(steps.indexOf('commit:commit') > steps.indexOf('main:verify') && steps.indexOf('commit:commit') < steps.indexOf('main:thaw'), steps.join(' '));
  assert.equal(await op.locator('rect').evaluateAll((rs) => rs.map((r) => r.getAttribute('data-result'))), ['done', 'done', 'done', 'done', 'done']);
  await shot('checkpoint-live');

  // From each append to the page drawing it: the event's recordedAt to the render that covered its position.
  const rendered = await page.evaluate(() => (globalThis as unknown as { ckptDashboard: { rendered: Array<{ position: number; at: number }> } }).ckptDashboard.rendered);
  const events = history('watched').filter((e) => (e.data as { version?: number }).version === 1 || e.type === 'CheckpointRequested');
  const latencies = events.flatMap((e) => {
    const r = rendered.find((x) => x.position >= e.position);
    return r ? [{ type: e.type, ms: r.at - Date.parse(e.metadata.recordedAt as string) }] : [];
  });
  assert.ok(latencies.length > 0, 'the page drew the checkpoint’s events');
  const sorted = latencies.map((l) => l.ms).sort((a, b) => a - b);
  console.log(
    `figure: append → drawn in the page: median ${sorted[Math.floor(sorted.length / 2)]} ms, max ${sorted.at(-1)} ms over ${sorted.length} events of checkpoint v1 ` +
      `(${rendered.length} renders; first: ${latencies[0]!.type} ${latencies[0]!.ms} ms)`,
  );
});

test('a failed checkpoint shows its cause', async () => {
  const ready = join(work, 'tcp-ready');
  writeFileSync(
    join(work, 'tcp.py'),
    `import socket, time
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()
c = socket.create_connection(s.getsockname()); a, _ = s.accept()
open('${ready}', 'w').write('1'); time.sleep(1000)`,
  );
  const r = ckpt(['run', '--detach', '--job', 'tcp', '--', 'sh', '-c', `exec python3 ${join(work, 'tcp.py')}`]);
  assert.is(r.code, 0, r.err);
  await until('the connection', () => existsSync(ready), 20_000);
  await page.goto(`${base}#/job/tcp`);
  await page.waitForSelector('#membership .member');
  const c = ckpt(['checkpoint', 'tcp', '--wait']);
  assert.is(c.code, 1, c.out);
  const failure = page.locator('.failure[data-op="checkpoint-1"]');
  await failure.waitFor({ timeout: 20_000 });
  const text = (await failure.textContent()) ?? '';
  assert.match(text, 'checkpoint v1 aborted');
  assert.match(text, /unit main on dashnode: freeze failed at #\d+ UnitFreezeFailed/);
  assert.match(text, 'established TCP');
  assert.is(await page.locator('[data-op="checkpoint-1"][data-outcome="aborted"] rect[data-result="failed"]').count(), 1);
  await shot('failed-checkpoint');
  // The jobs list, and the node page.
  await page.goto(`${base}#/`);
  await page.waitForSelector('tr[data-job="tcp"]');
  await shot('jobs');
  await page.goto(`${base}#/nodes`);
  await page.waitForSelector(`tr[data-node="${NODE}"]`);
  assert.match((await page.textContent(`tr[data-node="${NODE}"]`)) ?? '', 'alive', 'the node’s agent renews its lease');
  await shot('nodes');
});

test.run();
