// Fork-loop benchmark: a job that forks all the time (a shell loop running /bin/true, plus three
// sleepers) checkpointed N times in a row, as a user would with `ckpt checkpoint --wait`.
// Reports the share committed (aim ≥ 99%), the longest freeze (UnitThawed.frozenMs: how long
// the job stood still), the freeze step itself (UnitFrozen.durationMs), and why the others failed.
//
//   npm run bench:forkloop -- [--checkpoints 50] [--cli PATH/TO/dist/adapters/cli/main.js] [--history 1M]
// --cli runs another build of ckpt (e.g. the main branch's) for before/after figures.
// --history N: the same checkpoints taken twice, while the job's history is young (~1,000 events)
// and again once the loop has written N events of it (1M takes ~6 minutes), side by side: does a
// long history slow a checkpoint down?
import { parseArgs } from 'node:util';
import { locateCriu } from '../../adapters/checkpointers/criu.js';
import { benchHome, type Checkpoint, DEFAULT_CLI } from './harness.js';
import { count, median, progress } from './run.js';

const { values } = parseArgs({ options: { checkpoints: { type: 'string', default: '50' }, cli: { type: 'string', default: DEFAULT_CLI }, history: { type: 'string' } } });
const N = Number(values.checkpoints);
const HISTORY = values.history === undefined ? undefined : count('history', values.history);
if (!Number.isSafeInteger(N) || N < 1) throw new Error('--checkpoints takes an integer ≥ 1');
const CRIU = locateCriu();
if (!CRIU) throw new Error('no criu found: run scripts/install-criu.sh or set CKPT_CRIU');

const LOOP = 'while :; do /bin/true; done & for i in 1 2 3; do sleep 100000 & done; wait';
const bench = benchHome('forkloop', 'benchfork', values.cli);
const f1 = (n: number) => n.toFixed(1);

try {
  console.log(`ckpt fork-loop benchmark: ${N} checkpoints in a row of sh -c '${LOOP}'; criu ${CRIU}; ckpt ${values.cli}`);
  progress('starting');
  await bench.start({ job: 'forkloop', command: ['sh', '-c', LOOP], processes: 5, ready: (rows) => rows.filter((r) => r.comm === 'sleep').length === 3 });
  const checkpoints = async (what: string): Promise<Checkpoint[]> => {
    const results: Checkpoint[] = [];
    for (let i = 1; i <= N; i++) {
      progress(`${what}checkpoint ${i}/${N}`);
      results.push(await bench.checkpoint('forkloop'));
    }
    return results;
  };
  let results = await checkpoints('');
  if (HISTORY !== undefined) {
    const young = { events: await bench.events('forkloop'), results };
    for (let n = young.events; n < HISTORY; n = await bench.events('forkloop')) {
      progress(`the loop's history: ${n.toLocaleString('en-US')} of ${HISTORY.toLocaleString('en-US')} events`);
      await new Promise((r) => setTimeout(r, 2000));
    }
    const old = await bench.events('forkloop');
    results = await checkpoints(`history ${old.toLocaleString('en-US')} events: `);
    if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
    const row = (label: string, k: 'frozen' | 'total', of: Checkpoint[]) => {
      const ok = of.filter((r) => r.outcome === 'committed');
      return `${label.padEnd(34)}${ok.length > 0 ? `median ${f1(median(ok.map((r) => r[k])))}, max ${f1(Math.max(...ok.map((r) => r[k])))}` : 'none committed'}`;
    };
    console.log(`\n  the job's history at the first ${N} checkpoints: ${young.events.toLocaleString('en-US')} events; at the last ${N}: ${old.toLocaleString('en-US')} events`);
    console.log(`  ${row('young: request → completed ms', 'total', young.results)}`);
    console.log(`  ${row('long:  request → completed ms', 'total', results)}`);
    console.log(`  ${row('young: frozen ms', 'frozen', young.results)}`);
    console.log(`  ${row('long:  frozen ms', 'frozen', results)}`);
    console.log(`  (below: the checkpoints on the long history)`);
  }
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  const ok = results.filter((r) => r.outcome === 'committed');
  const share = ok.length / N;
  console.log(`\n  committed ${ok.length} of ${N} (${(share * 100).toFixed(1)}%)   (aim ≥ 99%: ${share >= 0.99 ? 'met' : 'NOT met'})`);
  if (ok.length > 0) {
    const stat = (k: 'frozen' | 'freeze' | 'dump' | 'total') => `median ${f1(median(ok.map((r) => r[k])))}, max ${f1(Math.max(...ok.map((r) => r[k])))}`;
    console.log(`  frozen (UnitThawed.frozenMs) ms:  ${stat('frozen')}   ← the longest freeze`);
    console.log(`  freeze step (UnitFrozen) ms:      ${stat('freeze')}`);
    console.log(`  criu dump (UnitDumped) ms:        ${stat('dump')}`);
    console.log(`  request → completed ms:           ${stat('total')}`);
  }
  const failed = results.filter((r) => r.outcome === 'aborted');
  if (failed.length > 0) {
    console.log(`  aborted ${failed.length}, after (ms) ${failed.map((r) => f1(r.total)).join(', ')}:`);
    // Group by reason with PIDs and times blanked, so the same cause counts once.
    const reasons = new Map<string, { n: number; example: string }>();
    for (const r of failed) {
      const key = (r.reason ?? '').replace(/\d+/g, 'N');
      const e = reasons.get(key);
      reasons.set(key, { n: (e?.n ?? 0) + 1, example: e?.example ?? r.reason ?? '' });
    }
    for (const { n, example } of reasons.values()) console.log(`    ${n}× ${example.slice(0, 400)}`);
  }
} finally {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  await bench.cleanup();
}
