// Restart overhead benchmark: one committed checkpoint of a job restored through ckpt and by
// calling criu directly with the options ckpt gives it (`criu restore -D IMAGES -W WORKDIR -d
// --pidfile … --manage-cgroups=ignore -o restore.log -v4`, started inside fresh cgroups), alternating
// in one run. The job, `big`, is one process with ~200 MB of touched non-zero memory; both sides
// restore the same images of the same version. Before each side the job's processes are killed and
// their PIDs reaped, outside the timed window. Reports, per round and as medians, ckpt's wall time
// (RestartRequested appended → RestartCommitted seen), its parts (images check, prepare, criu
// restore, the rest), criu alone, and the ratio. The images check runs beside criu's restore. Aim (from the issue): ≤ 1.10× criu alone.
//
//   npm run bench:restart -- [--rounds 5] [--mb 200]
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { storeId } from '../../adapters/agent/daemon.js';
import { locateCriu } from '../../adapters/checkpointers/criu.js';
import { readPstree } from '../../adapters/checkpointers/criu-images.js';
import { imagesRoot, unitImagesDir, verifyVersion } from '../../adapters/images/image-store.js';
import { openEventStore } from '../../adapters/store/open.js';
import { waitPidsGone } from '../../adapters/tracking/pids.js';
import { readStat } from '../../adapters/tracking/procfs.js';
import type { EventStore } from '../../domain/event-store.js';
import { exec, HOG_C, median, must, progress, sleep, watch } from './run.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    mb: { type: 'string', default: '200' },
  },
});
const ROUNDS = Number(values.rounds);
const MB = Number(values.mb);
if (![ROUNDS, MB].every((n) => Number.isSafeInteger(n) && n >= 1)) throw new Error('--rounds and --mb take integers ≥ 1');
const CLI = fileURLToPath(new URL('../../adapters/cli/main.js', import.meta.url));
const CRIU = locateCriu();
if (!CRIU) throw new Error('no criu found: run scripts/install-criu.sh or set CKPT_CRIU');
const JOB = 'big';
const STREAM = `job-${JOB}`;

const kill = (pid: number) => {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
};

interface Row {
  pid: number;
  startTime: number;
  comm: string;
  state: string;
  cgroup: string;
}
interface Restart {
  total: number;
  check: number;
  prepare: number;
  restore: number;
  files: number;
  bytes: number;
  pidNamespace: boolean;
}
interface Round extends Omit<Restart, 'files' | 'bytes' | 'pidNamespace'> {
  rest: number;
  criu: number;
  hash: number;
}

const dir = mkdtempSync(join(tmpdir(), 'ckpt-bench-restart-'));
const home = join(dir, 'home');
// A fresh home and a node name of our own: nothing here touches another agent or its jobs.
const env: NodeJS.ProcessEnv = { ...process.env, CKPT_HOME: home, CKPT_NODE: 'benchnode' };
delete env.CKPT_STORE;
/** Where the agent makes this store's cgroups (ckpt/<store id>/JOB/UNIT in every hierarchy). */
const cgroupPrefix = `ckpt/${storeId(`sqlite:${join(home, 'events.db')}`)}`;
const ownCgroups: string[] = []; // criu alone's, removed after each run (and in finally if a run failed)
let store: EventStore | undefined;

const ps = async () => (JSON.parse(await must(process.execPath, [CLI, 'ps', JOB, '--json'], env)) as Row[]).filter((r) => r.state === 'running');

/** Starts the job and waits until the agent knows both its processes (unit init + hog) and the memory is touched. */
const start = async (hog: string) => {
  await must(process.execPath, [CLI, 'run', '--detach', '--job', JOB, '--', hog, String(MB)], env);
  store = openEventStore(`sqlite:${join(home, 'events.db')}`); // the first `ckpt run` started the agent and made the log
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(200)) {
    const rows = await ps();
    const h = rows.find((r) => r.comm === 'hog');
    if (rows.some((r) => !r.cgroup.startsWith(`/${cgroupPrefix}/`))) throw new Error(`the job runs in ${rows[0]!.cgroup}, not under /${cgroupPrefix}: cleanup would miss it`);
    if (rows.length === 2 && h && vmRssKb(h.pid) >= MB * 1024) return;
  }
  throw new Error(`job ${JOB} did not get ready within 30 s`);
};

const vmRssKb = (pid: number) => Number(/VmRSS:\s*(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);

/**
 * No process of the job runs and none of the image's PIDs is taken (zombies included: PID 1 reaps
 * orphans ~1 s late here), and the agent has seen the job end: so neither side pays for that.
 */
const clear = async (pids: readonly number[]) => {
  for (const r of await ps()) if (readStat(r.pid)?.startTime === r.startTime) kill(r.pid);
  for (const deadline = Date.now() + 30_000; (await ps()).length > 0; await sleep(100)) {
    if (Date.now() > deadline) throw new Error(`the agent still lists processes of ${JOB} as running 30 s after they were killed`);
  }
  await waitPidsGone(pids, 30_000);
};

/** One ckpt restart of `version` through the log, timed wall-clock; its parts come from its events. */
const restart = async (version: number): Promise<Restart> => {
  const request = randomUUID();
  const t0 = performance.now();
  const { revision } = await store!.append(STREAM, [{ type: 'RestartRequested', data: { request, version, placement: [], timeoutMs: 120_000 }, metadata: { correlationId: request } }]);
  let id: number | undefined;
  let checkRequestedAt = 0;
  const r: Restart = { total: 0, check: 0, prepare: 0, restore: 0, files: 0, bytes: 0, pidNamespace: false };
  await watch(store!, STREAM, revision, 180_000, (e) => {
    const ours = (d: { restart: number }) => id !== undefined && d.restart === id;
    if (e.type === 'UnitImagesVerifyRequested' && ours(e.data)) checkRequestedAt = Date.parse(e.metadata.recordedAt);
    if (e.type === 'RequestRejected' && e.data.request === request) throw new Error(`restart of ${JOB} from v${version} refused: ${e.data.reason}`);
    if (e.type === 'RestartPlanned' && e.data.request === request) id = e.data.restart;
    if (e.type === 'RestartFailed' && ours(e.data)) throw new Error(`restart r${id} of ${JOB} failed: ${e.data.reason}`);
    if (e.type === 'UnitImagesVerified' && ours(e.data)) (r.check = Date.parse(e.metadata.recordedAt) - checkRequestedAt), (r.files = e.data.files), (r.bytes = e.data.bytes);
    if (e.type === 'UnitRestorePrepared' && ours(e.data)) (r.prepare = e.data.waitedMs), (r.pidNamespace = e.data.pidNamespace);
    if (e.type === 'UnitRestored' && ours(e.data)) r.restore = e.data.durationMs;
    if (e.type === 'RestartCommitted' && ours(e.data)) return (r.total = performance.now() - t0);
    return undefined;
  });
  return r;
};

/** criu alone, as ckpt's restore step calls it: entered into fresh cgroups first, logs in a work dir. */
let criuRuns = 0;
const criuAlone = async (images: string) => {
  const n = ++criuRuns;
  const work = join(dir, 'criu', String(n));
  mkdirSync(work, { recursive: true, mode: 0o700 });
  const cgroups = ['freezer', 'memory'].map((h) => join('/sys/fs/cgroup', h, `ckpt-bench-${process.pid}-${n}`));
  for (const cg of cgroups) mkdirSync(cg), ownCgroups.push(cg);
  const pidfile = join(work, 'pid');
  const args = ['restore', '-D', images, '-W', work, '-o', 'restore.log', '-v4', '-d', '--pidfile', pidfile, '--manage-cgroups=ignore'];
  const enter = 'echo $$ > "$1/cgroup.procs" && echo $$ > "$2/cgroup.procs" && shift 2 && exec "$@"';
  const t0 = performance.now();
  const { code, out } = await exec('/bin/sh', ['-c', enter, 'sh', ...cgroups, CRIU, ...args]);
  const ms = performance.now() - t0;
  try {
    if (code !== 0) throw new Error(`criu ${args.join(' ')} exited with ${code}:\n${out}\n(log: ${work}/restore.log)`);
    const root = Number(readFileSync(pidfile, 'utf8').trim());
    if (readStat(root)?.state === undefined || readStat(root)?.state === 'Z') throw new Error(`criu alone restored pid ${root}, which is not running (log: ${work}/restore.log)`);
  } finally {
    await removeCgroups(cgroups);
  }
  rmSync(work, { recursive: true, force: true });
  return ms;
};

/** The processes in a cgroup directory ([] when it is gone). */
const procsOf = (cg: string) => {
  try {
    return readFileSync(join(cg, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
};

/** Kills whatever runs in these cgroup directories (deepest first), waits until they are empty, removes them. */
const removeCgroups = async (cgroups: readonly string[]) => {
  for (const cg of cgroups) {
    for (const deadline = Date.now() + 10_000; existsSync(cg); await sleep(20)) {
      procsOf(cg).forEach(kill);
      try {
        rmdirSync(cg);
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`cannot remove ${cg}: ${(e as Error).message}`);
      }
    }
    if (ownCgroups.includes(cg)) ownCgroups.splice(ownCgroups.indexOf(cg), 1);
  }
};

/** Every directory under /sys/fs/cgroup/H/PREFIX in every hierarchy H, deepest first. */
const cgroupTree = (prefix: string): string[] => {
  const walk = (d: string): string[] => {
    try {
      return [
        ...readdirSync(d, { withFileTypes: true })
          .filter((e) => e.isDirectory())
          .flatMap((e) => walk(join(d, e.name))),
        d,
      ];
    } catch {
      return []; // removed meanwhile
    }
  };
  return readdirSync('/sys/fs/cgroup')
    .map((h) => join('/sys/fs/cgroup', h, prefix))
    .filter((d) => existsSync(d))
    .flatMap(walk);
};

const f1 = (n: number) => n.toFixed(1).padStart(8);

const report = (rounds: Round[], first: Restart, version: number) => {
  console.log(`\n${JOB}: v${version}, ${first.files} image files, ${(first.bytes / 1e6).toFixed(1)} MB`);
  console.log('  round   ckpt ms    check  prepare  restore     rest  criu ms   sha256   ratio');
  const line = (label: string, r: Round) =>
    console.log(`  ${label.padEnd(6)}${[r.total, r.check, r.prepare, r.restore, r.rest, r.criu, r.hash].map(f1).join(' ')} ${(r.total / r.criu).toFixed(2).padStart(6)}×`);
  for (const [i, r] of rounds.entries()) line(String(i + 1), r);
  const m = (k: keyof Round) => median(rounds.map((r) => r[k]));
  const med: Round = { total: m('total'), check: m('check'), prepare: m('prepare'), restore: m('restore'), rest: m('rest'), criu: m('criu'), hash: m('hash') };
  line('median', med);
  const ratio = med.total / med.criu;
  const added = med.total - med.criu;
  console.log(`  ratio ckpt / criu alone ${ratio.toFixed(2)}×   (aim ≤ 1.10×: ${ratio <= 1.1 ? 'met' : 'NOT met'})`);
  console.log(`  added ${added.toFixed(1)} ms; the SHA-256 check alone takes ≈ ${med.hash.toFixed(1)} ms of CPU, run beside criu's restore`);
  console.log(
    `  criu restore inside ckpt ${med.restore.toFixed(1)} ms vs criu alone ${med.criu.toFixed(1)} ms (${(med.restore / med.criu).toFixed(2)}×: the check and criu share ${cpus().length} cores)`,
  );
};

try {
  console.log(`ckpt restart benchmark: ${ROUNDS} rounds alternating ckpt / criu alone (after one warm-up each); criu ${CRIU}; node ${process.version}`);
  console.log('  ckpt ms = RestartRequested appended → RestartCommitted seen (includes polling hops between this process and the agent)');
  console.log('  prepare = UnitRestorePrepared.waitedMs; then side by side: check = the SHA-256 check of every image file (UnitImagesVerifyRequested → UnitImagesVerified)');
  console.log('  and restore = UnitRestored.durationMs (criu inside ckpt, its processes held at pre-resume until the check passed); rest = ckpt ms − prepare − max(check, restore)');
  console.log('  sha256 = verifyVersion of the same images in this process, outside the timed windows (the pure hashing cost)');
  writeFileSync(join(dir, 'hog.c'), HOG_C);
  const hog = join(dir, 'hog');
  await must('cc', ['-O2', '-o', hog, join(dir, 'hog.c')]);
  progress(`${JOB}: starting`);
  await start(hog);
  progress(`${JOB}: checkpoint`);
  const cp = JSON.parse(await must(process.execPath, [CLI, 'checkpoint', JOB, '--wait', '--json'], env)) as { version: number; outcome: string; reason: string | null };
  if (cp.outcome !== 'committed') throw new Error(`checkpoint of ${JOB}: ${cp.outcome} (${cp.reason})`);
  const version = cp.version;
  const images = unitImagesDir(imagesRoot(home), JOB, version, 'main');
  const pids = readPstree(images).flatMap((e) => [e.pid, ...e.threads]);

  const ckptSide = async () => (await clear(pids), restart(version));
  const criuSide = async () => (await clear(pids), criuAlone(images));
  const hash = () => {
    const t0 = performance.now();
    const v = verifyVersion(imagesRoot(home), JOB, version);
    if (!v.ok) throw new Error(`v${version} no longer verifies: ${v.problems.map((p) => `${p.path} ${p.problem}`).join(', ')}`);
    return performance.now() - t0;
  };
  progress(`${JOB}: warm-up`);
  const first = await ckptSide();
  await criuSide();
  const rounds: Round[] = [];
  let pidNamespaces = 0;
  for (let i = 1; i <= ROUNDS; i++) {
    progress(`${JOB}: round ${i}/${ROUNDS}`);
    // Alternate which side goes first, so page cache and other load favour neither.
    const c = i % 2 ? await ckptSide() : undefined;
    const criu = await criuSide();
    const k = c ?? (await ckptSide());
    if (k.pidNamespace) pidNamespaces++;
    rounds.push({ total: k.total, check: k.check, prepare: k.prepare, restore: k.restore, rest: k.total - k.prepare - Math.max(k.check, k.restore), criu, hash: hash() });
  }
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  report(rounds, first, version);
  // Units run in a PID namespace of their own: CRIU makes a new one at every restore.
  console.log(`  ckpt restored into a new PID namespace in ${pidNamespaces} of ${ROUNDS} rounds`);
  const v = verifyVersion(imagesRoot(home), JOB, version);
  console.log(
    `  committed v${version} after all restores: ${v.ok ? `verifies (${v.files} files, ${(v.bytes / 1e6).toFixed(1)} MB)` : `DOES NOT verify: ${v.problems.map((p) => `${p.path} ${p.problem}`).join(', ')}`}`,
  );
} finally {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  // Kill the job while the agent runs, so it records the end and removes the job's cgroups.
  for (const cg of cgroupTree(cgroupPrefix)) procsOf(cg).forEach(kill);
  if (store) {
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; await sleep(200)) {
      if ((await ps().catch(() => [])).length === 0) break;
    }
  }
  await store?.close();
  const stopped = await exec(process.execPath, [CLI, 'agent', 'stop'], env).catch((e: Error) => ({ code: -1, out: e.message }));
  if (stopped.code !== 0) console.error(`ckpt agent stop failed (${stopped.code}): ${stopped.out}`);
  // Anything the agent logged besides starting and stopping is worth reading.
  const logDir = join(home, 'agent');
  const logs = existsSync(logDir)
    ? readdirSync(logDir)
        .filter((f) => f.endsWith('.log'))
        .flatMap((f) => readFileSync(join(logDir, f), 'utf8').trim().split('\n'))
    : [];
  const odd = logs.filter((l) => l && !/; ready$|stopping \(SIG/.test(l));
  console.log(`\n  agent log: ${odd.length === 0 ? 'nothing but start and stop' : `${odd.length} lines:\n    ${odd.slice(0, 10).join('\n    ')}`}`);
  // The agent removes a job's cgroups when it ends; say so if any were left, and remove them.
  const left = cgroupTree(cgroupPrefix);
  for (const cg of left) console.error(`  left behind by the agent: ${cg}`);
  await removeCgroups([...left, ...ownCgroups]).catch((e: Error) => console.error(`  ${e.message}`));
  rmSync(dir, { recursive: true, force: true });
}
