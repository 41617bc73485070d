// Multi-host benchmark on the testbed (scripts/testbed.sh: hosts as network namespaces with their
// own CKPT_HOME and agent, one PostgreSQL on the bridge), as root:
//   1. Coordinated checkpoint time of the same per-unit work (one unit per host, each holding MB of
//      non-zero memory) with 1, 2, 3 and 4 hosts: ckpt's wall time (request → completed, by the
//      log), how long the job stayed frozen and the slowest unit's dump, medians over the rounds,
//      and the ratio to one host. Flat is the aim: units are frozen, dumped and committed side by
//      side, each on its own disk. (Here the hosts share this machine's 2 cores and one disk, so
//      more hosts also means more work on the same hardware: the ratio is an upper bound.)
//   2. PostgreSQL aggregate append throughput over the bridge with 1, 3 and 8 appending agents
//      (fork-heavy batches, the log's gap-free global order checked by a follower): the
//      pg-append bench's measurement, against the testbed's server.
//
//   npm run bench:multihost -- [--hosts 1,2,3,4] [--rounds 3] [--mb 64] [--agents 1,3,8] [--seconds 3]
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { locateCriu } from '../../adapters/checkpointers/criu.js';
import { killMembers, type PsRow } from '../../test/support/jobs.js';
import { freePort, needPostgres } from '../../test/support/postgres.js';
import { measureAppends } from './pg-append.js';
import { count, median, progress, sleep } from './run.js';

const { values } = parseArgs({
  options: {
    hosts: { type: 'string', default: '1,2,3,4' },
    rounds: { type: 'string', default: '3' },
    mb: { type: 'string', default: '64' },
    agents: { type: 'string', default: '1,3,8' },
    seconds: { type: 'string', default: '3' },
  },
});
const HOSTS = values.hosts.split(',').map((t) => count('hosts', t));
const AGENTS = values.agents.split(',').map((t) => count('agents', t));
const ROUNDS = count('rounds', values.rounds);
const MB = count('mb', values.mb);
const SECONDS = count('seconds', values.seconds);
if (HOSTS.some((n) => n < 1 || n > 50)) throw new Error('--hosts: each count must be 1..50');

const problem =
  (process.getuid?.() !== 0 && 'needs root (network namespaces, cgroups, CRIU)') ||
  needPostgres() ||
  (!locateCriu() && 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)') ||
  (existsSync('/sys/class/net/ckpt-br0') && 'a testbed is up on this machine: scripts/testbed.sh down first');
if (problem) {
  console.log(`multi-host benchmark: skipped, ${problem}`);
  process.exit(0);
}

const SCRIPT = fileURLToPath(new URL('../../../scripts/testbed.sh', import.meta.url));
const CLI = fileURLToPath(new URL('../../adapters/cli/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ckpt-bench-multihost-'));
chmodSync(dir, 0o711); // the postgres user keeps its cluster inside
const env = { ...process.env, CKPT_TESTBED_DIR: join(dir, 'tb'), CKPT_TESTBED_PG_PORT: String(await freePort()) };

const testbed = (args: string[]) => {
  const r = spawnSync('bash', [SCRIPT, ...args], { env, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`testbed.sh ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return r.stdout;
};
const ckptOn = (k: number, args: string[]) => testbed(['run', String(k), '--', process.execPath, CLI, ...args]);

/** A unit's work: MB of random (non-zero) memory, then nothing. */
const HOG = `import os, time\nb = bytearray(os.urandom(${MB} << 20))\nopen(os.environ['READY'], 'w').close()\ntime.sleep(1e6)`;

interface Report {
  durationMs: number;
  frozenMs: number;
  units: Array<{ dumpMs?: number }>;
}

const checkpointTimes = async (hosts: number) => {
  const job = `w${hosts}`;
  for (let k = 1; k <= hosts; k++) {
    const ready = join(dir, `${job}-${k}.ready`);
    testbed(['run', String(k), '--', 'env', `READY=${ready}`, process.execPath, CLI, 'run', '--detach', '--job', job, '--unit', `u${k}`, '--', 'python3', '-c', HOG]);
  }
  for (let k = 1; k <= hosts; k++) while (!existsSync(join(dir, `${job}-${k}.ready`))) await sleep(100);
  const rounds: Report[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    progress(`${hosts} host(s): checkpoint ${round}/${ROUNDS}`);
    rounds.push(JSON.parse(ckptOn(1, ['checkpoint', job, '--wait', '--json'])) as Report);
  }
  for (let k = 1; k <= hosts; k++) {
    // Killed by pid and start time (killMembers checks both): never a process that took a pid since.
    killMembers((JSON.parse(ckptOn(k, ['ps', job, '--json'])) as PsRow[]).filter((m) => m.state === 'running' && m.node === `host${k}`));
  }
  return {
    total: median(rounds.map((r) => r.durationMs)),
    frozen: median(rounds.map((r) => r.frozenMs)),
    dump: median(rounds.map((r) => Math.max(...r.units.map((u) => u.dumpMs ?? 0)))),
  };
};

try {
  const most = Math.max(...HOSTS);
  progress(`testbed of ${most} hosts`);
  testbed(['up', String(most)]);
  for (let k = 1; k <= most; k++) ckptOn(k, ['agent', 'start', '--json']);

  console.log(`\ncoordinated checkpoint, one unit of ${MB} MB per host, ${ROUNDS} round(s) each (medians; node ${process.version})\n`);
  // What coordinating costs beyond the work itself: the checkpoint's time less its slowest unit's dump.
  console.log('hosts   checkpoint ms   ×1 host   frozen ms   slowest dump ms   coordination ms');
  let one: number | undefined;
  for (const hosts of HOSTS) {
    const t = await checkpointTimes(hosts);
    one ??= t.total;
    const cells = [
      t.total.toFixed(0).padStart(13),
      (t.total / one).toFixed(2).padStart(7),
      t.frozen.toFixed(0).padStart(9),
      t.dump.toFixed(0).padStart(15),
      (t.total - t.dump).toFixed(0).padStart(15),
    ];
    console.log(`${String(hosts).padStart(5)}   ${cells.join('   ')}`);
  }

  console.log(`\nPostgreSQL over the bridge: aggregate appends, batches of 100 process events, ${SECONDS} s per run\n`);
  console.log('agents   events/s   ×1 agent   p50 ms   follower');
  const admin = new pg.Client({ connectionString: `postgres://postgres@10.77.0.254:${env.CKPT_TESTBED_PG_PORT}/postgres` });
  await admin.connect();
  let base: number | undefined;
  try {
    for (const agents of AGENTS) {
      progress(`${agents} agent(s) appending`);
      const db = `bench_${agents}`;
      await admin.query(`DROP DATABASE IF EXISTS ${db}`);
      await admin.query(`CREATE DATABASE ${db}`);
      const r = await measureAppends(`postgres://postgres@10.77.0.254:${env.CKPT_TESTBED_PG_PORT}/${db}`, { variant: 'allocation', agents, batch: 100, seconds: SECONDS });
      const rate = r.events / r.seconds;
      base ??= rate;
      const followed = r.problem ? `OUT OF ORDER: ${r.problem}` : r.followed === r.events ? 'all, in order' : `MISSED ${r.events - r.followed}`;
      console.log(
        `${String(agents).padStart(6)}   ${Math.round(rate).toLocaleString('en-US').padStart(8)}   ${(rate / base).toFixed(2).padStart(8)}   ${median(r.latencies).toFixed(1).padStart(6)}   ${followed}`,
      );
    }
  } finally {
    await admin.end();
  }
} finally {
  progress('testbed down');
  try {
    testbed(['down']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.stderr.write('\n');
}
