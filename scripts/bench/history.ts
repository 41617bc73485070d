// Long-history benchmark: a log of 1M (or 10M) events made of realistic jobs, then what every read
// costs on it — agent start-up (to "ready": caught up with the log) folding the whole log and then
// from the snapshot of its state it saved, the agent's RSS after each, and each read command of
// the CLI — printed as a table (--json for machines).
//
// The jobs are copies of jobs the real agent recorded a moment earlier in a private home (a fork
// loop checkpointed once, a long-lived loop checkpointed twice, a small job), so every event is
// shaped exactly as the agent writes it. Copies get fresh ids (request ids, causation and
// correlation ids mapped consistently), their own job names, and decidedAt re-pointed at the new
// position of their cause (`ckpt verify` re-derives them). A fork loop is made long by stamping
// more fork → exec → exit cycles of its shell (shaped like its shortest-lived captured child);
// one job keeps 200k processes of history with 1,000 still running. Everything is appended
// directly, in large batches, into a fresh store.
//
//   npm run build && node dist/scripts/bench/history.js [--events 1M] [--live-processes 200k] [--keep DIR]
//       [--store postgres | postgres://…] [--runs 1] [--limit 600] [--compare OTHER/dist/adapters/cli/main.js] [--build-only | --reads-only] [--json]
//
// --keep DIR builds the SQLite log there once and reuses it (a 10M log takes minutes to build);
// each measurement works on a copy, so the agent's own appends never change the kept log.
// --store postgres builds into a throwaway PostgreSQL cluster of its own (a URL: into that
// database, which must be empty). --compare CLI times each read command through another build too
// (e.g. the commit before a change), right after this one's, on its own copy of the same log:
// before and after in one run. --reads-only times the read commands with no agent running (the
// agent's whole-log start takes minutes at 10M events). With --runs N > 1 the first run of each
// command (the one that builds its snapshot) is reported beside the median. The template jobs are kept in --keep DIR too (templates.json).
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultAppendContext } from '../../adapters/store/batch.js';
import { openEventStore } from '../../adapters/store/open.js';
import type { EventStore, ProposedEvent, RecordedEvent } from '../../domain/event-store.js';
import { readWholeStream } from '../../projections/project.js';
import { needPostgres, type PostgresCluster, startPostgres } from '../../test/support/postgres.js';
import { benchHome, DEFAULT_CLI } from './harness.js';
import { count, sleep, watch } from './run.js';

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '1M' },
    keep: { type: 'string' },
    store: { type: 'string' },
    runs: { type: 'string', default: '1' },
    'live-processes': { type: 'string', default: '200k' },
    limit: { type: 'string', default: '600' },
    json: { type: 'boolean', default: false },
    'build-only': { type: 'boolean', default: false },
    'reads-only': { type: 'boolean', default: false },
    compare: { type: 'string' },
  },
});

const EVENTS = count('events', values.events!);
const RUNS = Number(values.runs);
/** Seconds a read command may take before it is killed and reported as unfinished. */
const LIMIT = Number(values.limit);
/** Processes in the history of the one big live job (of which 1,000 still run). */
const LIVE = count('live-processes', values['live-processes']!);
const say = (text: string) => process.stderr.write(`${text}\n`);

// ── templates: jobs the real agent records ───────────────────────────────────────────────────

interface Templates {
  /** Stream name → its events, as recorded. */
  readonly jobs: Record<'loop' | 'long' | 'small', RecordedEvent[]>;
  readonly node: RecordedEvent[];
  readonly jobNames: Record<'loop' | 'long' | 'small', string>;
}

const TEMPLATE_JOBS = { loop: 'tmplloop', long: 'tmpllong', small: 'tmplsmall' } as const;

/** Runs three jobs under a private agent, checkpoints two, kills them and returns their histories. */
const recordTemplates = async (): Promise<Templates> => {
  const node = `bench-tmpl-${process.pid}`;
  const h = benchHome('history', node);
  try {
    // The small job first: it must still run when `ps` first looks (the loop keeps the machine busy).
    await h.start({ job: TEMPLATE_JOBS.small, command: ['sh', '-c', 'echo small; sleep 5'], processes: 1, ready: () => true });
    await h.start({ job: TEMPLATE_JOBS.long, command: ['sh', '-c', 'while :; do sleep 0.3; done'], processes: 1, ready: () => true });
    await h.start({ job: TEMPLATE_JOBS.loop, command: ['sh', '-c', 'while :; do /bin/true; done'], processes: 1, ready: () => true });
    await sleep(1500);
    for (const job of [TEMPLATE_JOBS.loop, TEMPLATE_JOBS.long, TEMPLATE_JOBS.long]) {
      const c = await h.checkpoint(job);
      say(`  template ${job}: checkpoint ${c.outcome}${c.reason ? ` (${c.reason})` : ''}`);
    }
    await sleep(500);
    const store = openEventStore(`sqlite:${join(h.home, 'events.db')}`);
    try {
      // Each unit's init leads its own process group: killing the group ends a loop and its
      // children (the small job ends by itself; its cgroup path names it).
      for (const r of h.seen.values()) if (r.reason === 'root' && r.pgid === r.pid && r.pid > 1 && !r.cgroup.includes(`/${TEMPLATE_JOBS.small}/`)) process.kill(-r.pid, 'SIGKILL');
      for (const job of Object.values(TEMPLATE_JOBS)) await watch(store, `job-${job}`, 0, 30_000, (e) => (e.type === 'JobEnded' ? true : undefined));
      // Plain objects (a stored event parses its metadata lazily, behind a getter): they are saved as JSON.
      const read = async (stream: string) =>
        (await readWholeStream(store, stream)).map(
          (e) => ({ position: e.position, stream: e.stream, revision: e.revision, id: e.id, type: e.type, schemaVersion: e.schemaVersion, data: e.data, metadata: e.metadata }) as RecordedEvent,
        );
      return {
        jobs: { loop: await read(`job-${TEMPLATE_JOBS.loop}`), long: await read(`job-${TEMPLATE_JOBS.long}`), small: await read(`job-${TEMPLATE_JOBS.small}`) },
        node: await read(`node-${node}`),
        jobNames: TEMPLATE_JOBS,
      };
    } finally {
      await store.close();
    }
  } finally {
    await h.cleanup();
  }
};

// ── copies ───────────────────────────────────────────────────────────────────────────────────

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;

/** One process's fork → exec → exit in a loop's history, found in the template: the shapes to stamp. */
interface Cycle {
  /** Index in the template of the exit: cycles are stamped in right after it. */
  readonly after: number;
  readonly fork: RecordedEvent & { type: 'ProcessForked' };
  readonly execd: RecordedEvent & { type: 'ProcessExecd' };
  readonly exited: RecordedEvent & { type: 'ProcessExited' };
}

/**
 * The loop's body: of the first forks that exec and exit, the shortest-lived (a /bin/true the loop
 * shell forked, not the shell itself, which lives until the job is killed).
 */
const cycleOf = (events: readonly RecordedEvent[]): Cycle => {
  let best: Cycle | undefined;
  let found = 0;
  for (let i = 0; i < events.length && found < 50; i++) {
    const fork = events[i]!;
    if (fork.type !== 'ProcessForked') continue;
    const { pid, startTime } = fork.data.child;
    const same = (e: RecordedEvent) => {
      const p = (e.data as { process?: { pid: number; startTime: number } }).process;
      return p?.pid === pid && p.startTime === startTime;
    };
    const execAt = events.findIndex((e, j) => j > i && e.type === 'ProcessExecd' && same(e));
    const exitAt = events.findIndex((e, j) => j > i && e.type === 'ProcessExited' && same(e));
    if (execAt < 0 || exitAt < execAt) continue;
    found++;
    if (!best || exitAt - i < best.after - events.indexOf(best.fork)) best = { after: exitAt, fork, execd: events[execAt] as Cycle['execd'], exited: events[exitAt] as Cycle['exited'] };
  }
  if (!best) throw new Error('the fork loop template has no complete fork → exec → exit: did the loop run?');
  return best;
};

/** A planned job: a template copy with `cycles` extra processes (and `running` of them left running). */
interface Plan {
  readonly kind: 'loop' | 'long' | 'small' | 'live';
  readonly job: string;
  readonly cycles: number;
  readonly running: number;
}

/** Events of one job copy, made lazily: a 200k-process job is not held twice. */
interface CopiedEvent {
  readonly event: ProposedEvent;
  /** The template event's position and recording time (absent for stamped processes). */
  readonly old?: number;
  readonly at?: string;
  /** A decision: its template cause's position. */
  readonly cause?: number;
  /** Some decision answers this event: it must be appended with its template time (see build). */
  readonly answered?: boolean;
}

function* copyOf(t: Templates, plan: Plan, nextPid: () => number): Generator<CopiedEvent> {
  const template = t.jobs[plan.kind === 'live' ? 'loop' : plan.kind];
  const oldName = t.jobNames[plan.kind === 'live' ? 'loop' : plan.kind];
  const ids = new Map<string, string>();
  const fresh = (text: string) => text.replace(UUID, (u) => ids.get(u) ?? (ids.set(u, randomUUID()), ids.get(u)!));
  const rename = (text: string) => fresh(text.split(oldName).join(plan.job));
  const copy = (e: RecordedEvent): ProposedEvent => {
    const { actor, correlationId, causationId } = e.metadata;
    return {
      id: fresh(e.id),
      type: e.type,
      data: JSON.parse(rename(JSON.stringify(e.data))),
      metadata: { actor, ...(correlationId && { correlationId: fresh(correlationId) }), ...(causationId && { causationId: fresh(causationId) }) },
    } as ProposedEvent;
  };
  const cycle = plan.cycles > 0 || plan.running > 0 ? cycleOf(template) : undefined;
  // The live job stops where the stamped processes end: it is still running (no checkpoints, no end).
  const upTo = plan.kind === 'live' ? cycle!.after + 1 : template.length;
  const answered = new Set(template.flatMap((e) => (e.metadata.causationId && e.metadata.decidedAt !== undefined ? [e.metadata.causationId] : [])));
  let stamp = 0;
  // The shapes' renamed copies are made once: a stamped process costs three object spreads.
  const shapes = new Map<RecordedEvent, ProposedEvent>();
  const stamped = (shape: RecordedEvent, data: object): ProposedEvent => {
    let base = shapes.get(shape);
    if (!base) shapes.set(shape, (base = copy(shape)));
    return { ...base, id: randomUUID(), data: { ...(base.data as object), ...data } } as ProposedEvent;
  };
  for (let i = 0; i < upTo; i++) {
    const e = template[i]!;
    yield { event: copy(e), old: e.position, at: e.metadata.recordedAt, answered: answered.has(e.id), ...(e.metadata.decidedAt !== undefined && { cause: e.metadata.decidedAt }) };
    if (i !== cycle?.after) continue;
    for (let k = 0; k < plan.cycles + plan.running; k++) {
      // Start times far above any real one: every stamped process is a new identity.
      const child = { pid: nextPid(), startTime: 1e10 + ++stamp };
      const on = { process: child };
      yield { event: stamped(cycle.fork, { child }) };
      const running = k >= plan.cycles;
      yield { event: stamped(cycle.execd, running ? { ...on, comm: 'sleep', argv: ['sleep', '3600'] } : on) };
      if (!running) yield { event: stamped(cycle.exited, { ...on, status: 0, signal: null }) };
    }
  }
}

/** The mix: one live job of 200k processes (1,000 running), fork loops, long-lived jobs and many small ones. */
const planFor = (t: Templates, events: number): Plan[] => {
  const per = (kind: 'loop' | 'long' | 'small') => t.jobs[kind].length;
  const plans: Plan[] = [{ kind: 'live', job: 'live-forks', cycles: LIVE - 1000, running: 1000 }];
  let left = events - ((LIVE - 1000) * 3 + 1000 * 2 + cycleOf(t.jobs.loop).after);
  // Of the rest: 50% fork loops of 10k processes, 25% long-lived jobs of 1k, 25% small jobs.
  const loops = Math.max(1, Math.floor((left * 0.5) / (per('loop') + 30_000)));
  const longs = Math.max(1, Math.floor((left * 0.25) / (per('long') + 3000)));
  for (let i = 0; i < loops; i++) plans.push({ kind: 'loop', job: `loop-${i}`, cycles: 10_000, running: 0 });
  for (let i = 0; i < longs; i++) plans.push({ kind: 'long', job: `long-${i}`, cycles: 1000, running: 0 });
  left -= loops * (per('loop') + 30_000) + longs * (per('long') + 3000);
  for (let i = 0; left > 0; i++, left -= per('small')) plans.push({ kind: 'small', job: `small-${i}`, cycles: 0, running: 0 });
  return plans;
};

/**
 * Appends every planned job, interleaved (up to 64 jobs at a time, batches of up to 1,000 events),
 * as one writer: positions are known before each append (and checked after it), so a decision's
 * decidedAt can name its cause's new position. A batch is recorded at the template time of its
 * first event (`clock`), and an event a decision answers starts a batch: deciders derive times
 * from their cause's recordedAt (a deadline), so the copied decisions stay the ones re-derived.
 */
const build = async (store: EventStore, clock: { at: string }, t: Templates, plans: readonly Plan[]): Promise<number> => {
  let position = await store.headPosition();
  if (position !== 0) throw new Error(`the store ${store.location} is not empty (head ${position}): the benchmark builds into a fresh one`);
  for (const e of t.node) {
    clock.at = e.metadata.recordedAt;
    await appendChecked(store, e.stream, [{ id: randomUUID(), type: e.type, data: e.data, metadata: { actor: e.metadata.actor } } as ProposedEvent], (position += 1));
  }
  let pid = 300;
  const nextPid = () => (pid = pid >= 4_000_000 ? 300 : pid + 1);
  const queue = [...plans];
  interface Active {
    plan: Plan;
    events: Generator<CopiedEvent>;
    held?: CopiedEvent;
    at: string;
    positions: Map<number, number>;
    done: boolean;
  }
  const active: Active[] = [];
  const started = performance.now();
  let reported = started;
  while (queue.length > 0 || active.length > 0) {
    while (active.length < 64 && queue.length > 0) {
      const plan = queue.shift()!;
      active.push({ plan, events: copyOf(t, plan, nextPid), at: '', positions: new Map(), done: false });
    }
    for (const job of active) {
      const batch: ProposedEvent[] = [];
      let batchAt: string | undefined;
      while (batch.length < 1000) {
        let item = job.held;
        job.held = undefined;
        if (!item) {
          const next = job.events.next();
          if (next.done) {
            job.done = true;
            break;
          }
          item = next.value;
        }
        if (item.answered && batch.length > 0) {
          job.held = item;
          break;
        }
        const { event, old, cause } = item;
        if (item.at) job.at = item.at;
        batchAt ??= job.at;
        const at = position + batch.length + 1;
        if (old !== undefined) job.positions.set(old, at);
        const decidedAt = cause === undefined ? undefined : causePosition(job.positions, cause);
        batch.push(decidedAt === undefined ? event : ({ ...event, metadata: { ...event.metadata, decidedAt } } as ProposedEvent));
      }
      if (batch.length === 0) continue;
      clock.at = batchAt!;
      await appendChecked(store, `job-${job.plan.job}`, batch, (position += batch.length));
    }
    for (let i = active.length - 1; i >= 0; i--) if (active[i]!.done) active.splice(i, 1);
    if (performance.now() - reported > 5000) {
      reported = performance.now();
      say(`  ${position.toLocaleString('en-US')} events appended (${Math.round(position / ((reported - started) / 1000)).toLocaleString('en-US')}/s)`);
    }
  }
  return position;
};

/** The new position of a decision's cause: the copy of the template event at or before it. */
const causePosition = (positions: ReadonlyMap<number, number>, cause: number): number | undefined => {
  let best: number | undefined;
  let bestOld = -1;
  for (const [old, now] of positions) if (old <= cause && old > bestOld) (best = now), (bestOld = old);
  return best;
};

const appendChecked = async (store: EventStore, stream: string, events: ProposedEvent[], last: number) => {
  const r = await store.append(stream, events);
  if (r.position !== last) throw new Error(`${stream}: the batch ended at position ${r.position}, not ${last}: another writer is using the store, so decidedAt positions would be wrong`);
};

// ── measuring ────────────────────────────────────────────────────────────────────────────────

interface Measure {
  readonly what: string;
  readonly seconds: number;
  readonly exit: number | null;
  readonly note?: string;
  /** The same command through the --compare CLI, measured right after. */
  readonly compared?: { readonly seconds: number; readonly exit: number | null; readonly note?: string };
}

/** Runs one command to its end, or kills it (that one pid) after `limitS` seconds. */
const runFor = (cli: string, args: readonly string[], env: NodeJS.ProcessEnv, limitS: number) =>
  new Promise<{ code: number | null; out: string; timedOut: boolean }>((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let out = '';
    let timedOut = false;
    child.stderr.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-2000)));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, limitS * 1000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, timedOut });
    });
  });

const timed = async (cli: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<Measure> => {
  const times: number[] = [];
  let first: number | undefined;
  let last: { code: number | null; out: string; timedOut: boolean } | undefined;
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    last = await runFor(cli, args, env, LIMIT);
    times.push((performance.now() - t0) / 1000);
    first ??= times[0];
    if (last.timedOut) break;
  }
  times.sort((a, b) => a - b);
  const what = `ckpt ${args.join(' ')}`;
  if (last!.timedOut) return { what, seconds: LIMIT, exit: null, note: `did not finish in ${LIMIT} s (killed)` };
  const note = last!.code !== 0 ? last!.out.trim().split('\n')[0] : RUNS > 1 ? `first run ${first!.toFixed(2)} s` : undefined;
  return { what, seconds: times[times.length >> 1]!, exit: last!.code, ...(note && { note }) };
};

/** Starts `ckpt agent run` on the log and waits for its "ready" line: start-up time and RSS then. */
const agentStartUp = async (home: string, store: string, node: string) => {
  const env = { ...process.env, CKPT_HOME: home, CKPT_STORE: store, CKPT_NODE: node };
  mkdirSync(home, { recursive: true, mode: 0o700 });
  const logFile = join(home, `agent-${node}.out`);
  let log = '';
  const t0 = performance.now();
  const child = spawn(process.execPath, [DEFAULT_CLI, 'agent', 'run', '--node', node], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  for (const s of [child.stdout, child.stderr]) s.on('data', (d: Buffer) => (log += d.toString()));
  let exited: number | null | undefined;
  child.once('exit', (code) => (exited = code));
  while (!/; ready\b/.test(log)) {
    if (exited !== undefined) throw new Error(`the agent exited with ${exited} before it was ready:\n${log}`);
    if (performance.now() - t0 > 30 * 60_000) throw new Error('the agent was not ready after 30 minutes');
    await sleep(20);
  }
  const seconds = (performance.now() - t0) / 1000;
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1]) * 1024;
  const stop = async () => {
    writeFileSync(logFile, log);
    if (exited === undefined) {
      const gone = new Promise((r) => child.once('exit', r));
      process.kill(child.pid!, 'SIGTERM');
      await gone;
    }
  };
  return { seconds, rss, stop, env };
};

const main = async () => {
  const work = mkdtempSync(join(tmpdir(), 'ckpt-bench-history-'));
  const keep = values.keep;
  const kept = keep && existsSync(join(keep, 'plan.json')) ? (JSON.parse(readFileSync(join(keep, 'plan.json'), 'utf8')) as { events: number; plans: Plan[] }) : undefined;
  // `--store postgres`: a throwaway cluster of this run's own (fsync on), removed at the end.
  let cluster: PostgresCluster | undefined;
  try {
    if (values.store === 'postgres') {
      const missing = needPostgres();
      if (missing) throw new Error(`--store postgres: ${missing}`);
      cluster = await startPostgres({ durable: true });
      values.store = await cluster.database();
    }
    let plans: Plan[];
    let built: number;
    let url: string;
    if (kept && !values.store) {
      say(`reusing the log of ${kept.events.toLocaleString('en-US')} events in ${keep}`);
      plans = kept.plans;
      built = kept.events;
      copyFileSync(join(keep!, 'events.db'), join(work, 'events.db'));
      url = `sqlite:${join(work, 'events.db')}`;
    } else {
      const saved = keep ? join(keep, 'templates.json') : undefined;
      let t: Templates;
      if (saved && existsSync(saved)) {
        say(`using the template jobs recorded in ${saved}`);
        t = JSON.parse(readFileSync(saved, 'utf8')) as Templates;
      } else {
        say('recording template jobs with the real agent (fork loop, long-lived loop, small job; 3 checkpoints)…');
        t = await recordTemplates();
        if (saved) {
          mkdirSync(keep!, { recursive: true });
          writeFileSync(saved, JSON.stringify(t));
        }
      }
      plans = planFor(t, EVENTS);
      const target = values.store ?? `sqlite:${join(keep ?? work, 'events.db')}`;
      if (keep) mkdirSync(keep, { recursive: true });
      say(`building ${EVENTS.toLocaleString('en-US')} events: ${plans.length} jobs into ${target.replace(/:[^:@/]*@/, ':***@')}…`);
      const t0 = performance.now();
      const clock = { at: new Date().toISOString() };
      const context = { ...defaultAppendContext(), now: () => new Date(clock.at) };
      const store = openEventStore(target.startsWith('sqlite:') ? `${target}?synchronous=normal` : target, context);
      try {
        built = await build(store, clock, t, plans);
      } finally {
        await store.close();
      }
      say(`  built ${built.toLocaleString('en-US')} events in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      if (keep && !values.store) {
        writeFileSync(join(keep, 'plan.json'), JSON.stringify({ events: built, plans }));
        copyFileSync(join(keep, 'events.db'), join(work, 'events.db'));
        url = `sqlite:${join(work, 'events.db')}`;
      } else url = target;
    }
    if (values['build-only']) return;
    const size = url.startsWith('sqlite:') ? statSync(url.slice(7)).size : undefined;
    // The other build reads a copy of its own, made before any agent writes: it may migrate the
    // log's schema, which this build would then refuse (or the other way round).
    let compareStore: string | undefined;
    if (values.compare) {
      if (!url.startsWith('sqlite:')) throw new Error('--compare needs the SQLite log (each build reads its own copy of it)');
      copyFileSync(url.slice(7), join(work, 'compare.db'));
      compareStore = `sqlite:${join(work, 'compare.db')}`;
    }
    const node = `bench-reader-${process.pid}`;
    const home = join(work, 'home');
    const mib = (bytes: number) => `RSS ${(bytes / 2 ** 20).toFixed(0)} MiB`;
    const rows: Measure[] = [];
    let agent: Awaited<ReturnType<typeof agentStartUp>> | undefined;
    let cold: Awaited<ReturnType<typeof agentStartUp>> | undefined;
    if (!values['reads-only']) {
      // A first start probes CRIU (a real dump and restore) and caches the result in the home: done on
      // an empty log first, which is also the start-up time the long log is compared with.
      const empty = await agentStartUp(home, `sqlite:${join(work, 'empty.db')}`, node);
      await empty.stop();
      const emptyAgain = await agentStartUp(home, `sqlite:${join(work, 'empty.db')}`, node);
      await emptyAgain.stop();
      // First with no snapshot of the agent's state (it folds the whole log, and saves one when it
      // stops), then again from that snapshot: before and after in one run.
      say('starting the agent on the long log (no snapshot of its state yet)…');
      cold = await agentStartUp(home, url, node);
      await cold.stop();
      say('starting it again (from the snapshot it saved when it stopped)…');
      agent = await agentStartUp(home, url, node);
      rows.push(
        { what: 'agent start-up, empty log (to ready)', seconds: emptyAgain.seconds, exit: 0, note: mib(emptyAgain.rss) },
        { what: 'agent start-up, whole log folded (to ready)', seconds: cold.seconds, exit: 0, note: `${mib(cold.rss)} after start-up` },
        { what: 'agent start-up from its snapshot (to ready)', seconds: agent.seconds, exit: 0, note: `${mib(agent.rss)} after start-up` },
      );
    } else mkdirSync(home, { recursive: true, mode: 0o700 });
    try {
      const loop = plans.find((p) => p.kind === 'loop')!.job;
      const env = agent?.env ?? { ...process.env, CKPT_HOME: home, CKPT_STORE: url, CKPT_NODE: node };
      for (const args of [
        ['--version'],
        ['jobs'],
        ['jobs', '--all'],
        ['ps', 'live-forks'],
        ['ps', 'live-forks', '--json'],
        ['history', 'live-forks', '--tail', '100'],
        ['log', '--tail', '100'],
        ['checkpoints', loop],
        ['audit', loop],
        ['verify', loop],
      ]) {
        say(`  ckpt ${args.join(' ')}…`);
        const now = await timed(DEFAULT_CLI, args, env);
        const before = compareStore ? await timed(values.compare!, args, { ...env, CKPT_HOME: join(work, 'compare-home'), CKPT_STORE: compareStore }) : undefined;
        rows.push(before ? { ...now, compared: { seconds: before.seconds, exit: before.exit, ...(before.note && { note: before.note }) } } : now);
      }
    } finally {
      await agent?.stop();
    }
    const result = {
      events: built,
      jobs: plans.length,
      mix: {
        liveProcesses: plans[0]!.cycles + plans[0]!.running,
        running: 1000,
        loops: plans.filter((p) => p.kind === 'loop').length,
        longLived: plans.filter((p) => p.kind === 'long').length,
        small: plans.filter((p) => p.kind === 'small').length,
      },
      store: url.startsWith('sqlite:') ? 'sqlite' : 'postgres',
      bytes: size,
      runs: RUNS,
      compare: values.compare ?? null,
      agentRssBytes: cold && agent ? { wholeLog: cold.rss, fromSnapshot: agent.rss } : null,
      rows,
    };
    if (values.json) console.log(JSON.stringify(result, null, 2));
    else {
      const m = result.mix;
      console.log(
        `${built.toLocaleString('en-US')} events in ${plans.length} jobs (${result.store}${size ? `, ${(size / 2 ** 20).toFixed(0)} MiB` : ''}): live-forks with ${m.liveProcesses.toLocaleString('en-US')} processes of history (1,000 running), ${m.loops} fork loops of 10k processes, ${m.longLived} long-lived jobs, ${m.small} small jobs; median of ${RUNS} run(s)`,
      );
      const width = Math.max(...rows.map((r) => r.what.length));
      const cell = (m: { seconds: number; exit: number | null }) =>
        m.exit === null ? `${`> ${m.seconds.toFixed(0)}`.padStart(8)} s killed ` : `${m.seconds.toFixed(2).padStart(8)} s${m.exit === 0 ? '        ' : ` exit ${String(m.exit).padEnd(2)}`}`;
      if (values.compare) console.log(`  ${''.padEnd(width)}  ${'this ckpt'.padStart(18)}  ${'--compare'.padStart(18)}`);
      for (const r of rows)
        console.log(`  ${r.what.padEnd(width)}  ${cell(r)}${r.compared ? `  ${cell(r.compared)}` : ''}${r.note ? `  ${r.note}` : ''}${r.compared?.note ? `  (--compare: ${r.compared.note})` : ''}`);
    }
  } finally {
    await cluster?.stop();
    rmSync(work, { recursive: true, force: true });
  }
};

await main();
