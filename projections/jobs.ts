// Job membership read models for the CLI and the dashboard: one job from its stream (optionally
// as it was at a log position), or every job from the whole log — both kept as snapshots.
import type { EventStore, Position, RecordedEvent } from '../domain/event-store.js';
import { jobStream, processKey } from '../domain/identity.js';
import { evolveMembership, evolveShownMembership, type ForkTree, initialMembership, type JobMembership, type LiveBookkeeping, type Member, type MemberState, type Unit } from '../domain/membership.js';
import { emptyMap, entriesOf, getIn, mapOf, type PersistentMap, removeIn, setIn, valuesOf } from '../domain/persistent-map.js';
import { loadRows, type ModelRead, type ReadModel, type ReadOptions, readModel } from './read-model.js';

/** Strings that repeat across members (node, unit, comm, cgroup, state) are written once. */
const interning = () => {
  const index = new Map<string, number>();
  const table: string[] = [];
  const of = (s: string | undefined): number | null => {
    if (s === undefined) return null;
    let i = index.get(s);
    if (i === undefined) (i = table.length), index.set(s, i), table.push(s);
    return i;
  };
  return { of, table };
};

type MemberRow = [
  node: number,
  unit: number,
  pid: number,
  startTime: number,
  ppid: number,
  forkedBy: number | null,
  pgid: number,
  sid: number,
  comm: number,
  cgroup: number | null,
  state: number,
  exitStatus: number | null,
  signal: number | null,
  dependsOn: Member['dependsOn'] | null,
  restoredFrom: string | null,
  since: number,
  until: number | null,
];

export const encodeMembership = (m: JobMembership) => {
  const strings = interning();
  const members = [...valuesOf(m.members)].map(
    (x): MemberRow => [
      strings.of(x.node)!,
      strings.of(x.unit)!,
      x.pid,
      x.startTime,
      x.ppid,
      x.forkedBy ?? null,
      x.pgid,
      x.sid,
      strings.of(x.comm)!,
      strings.of(x.cgroup),
      strings.of(x.state)!,
      x.exitStatus,
      x.signal,
      x.dependsOn ?? null,
      x.restoredFrom ?? null,
      x.since,
      x.until ?? null,
    ],
  );
  const { live, ...rest } = m;
  return { ...rest, members, strings: strings.table, ...(live && { live: encodeLive(live) }) };
};

/**
 * A live fold's bookkeeping: its maps as entry lists (a snapshot without `live` is a full fold's).
 * Of the fork tree only the parent links: the pid index and the child counts follow from them.
 */
const encodeLive = (l: LiveBookkeeping) => ({
  departed: l.departed,
  departedByUnit: l.departedByUnit,
  captured: l.captured,
  pins: [...entriesOf(l.pins)],
  recent: [...entriesOf(l.recent)],
  ring: [...entriesOf(l.ring)],
  ...(l.forks && { parents: [...entriesOf(l.forks.parent)] }),
});

const decodeLive = (encoded: unknown, members: PersistentMap<Member>): LiveBookkeeping => {
  const l = encoded as ReturnType<typeof encodeLive>;
  const entries = <V>(name: string, list: unknown) => {
    if (!Array.isArray(list)) throw new Error(`membership: live.${name} is not a list of entries`);
    return mapOf(list as Array<readonly [string, V]>);
  };
  const isRecord = (x: unknown) => typeof x === 'object' && x !== null;
  if (typeof l?.departed !== 'number' || !isRecord(l.departedByUnit) || !isRecord(l.captured)) throw new Error('membership: live.departed, departedByUnit or captured missing');
  const live = {
    departed: l.departed,
    departedByUnit: l.departedByUnit,
    captured: l.captured,
    pins: entries<number>('pins', l.pins),
    recent: entries<number>('recent', l.recent),
    ring: entries<string>('ring', l.ring),
  };
  return l.parents === undefined ? live : { ...live, forks: forkTree(entries<string>('parents', l.parents), members) };
};

/** The fork tree from its parent links: running members by `node/pid`, kept children per parent. */
const forkTree = (parent: PersistentMap<string>, members: PersistentMap<Member>): ForkTree => {
  const running = new Map<string, string[]>();
  for (const m of valuesOf(members)) {
    if (m.until !== undefined) continue;
    const at = `${m.node}/${m.pid}`;
    running.set(at, [...(running.get(at) ?? []), m.key]);
  }
  const children = new Map<string, number>();
  for (const [, up] of entriesOf(parent)) children.set(up, (children.get(up) ?? 0) + 1);
  return { running: mapOf(running), parent, children: mapOf(children) };
};

export const decodeMembership = (encoded: unknown): JobMembership => {
  const { members, strings, live, ...rest } = encoded as ReturnType<typeof encodeMembership>;
  if (!Array.isArray(members) || !Array.isArray(strings)) throw new Error('membership: members or strings missing');
  const s = (i: number | null) => (i === null ? undefined : strings[i]);
  // One literal with every field in newMember's order: decoded members share one shape, as folded ones do.
  const decoded = (members as MemberRow[]).map(
    ([node, unit, pid, startTime, ppid, forkedBy, pgid, sid, comm, cgroup, state, exitStatus, signal, dependsOn, restoredFrom, since, until]): readonly [string, Member] => {
      const m: Member = {
        key: processKey(strings[node]!, { pid, startTime }),
        node: strings[node]!,
        unit: strings[unit]!,
        pid,
        startTime,
        ppid,
        forkedBy: forkedBy ?? undefined,
        pgid,
        sid,
        comm: strings[comm]!,
        cgroup: s(cgroup),
        state: strings[state] as MemberState,
        exitStatus,
        signal,
        dependsOn: dependsOn ?? undefined,
        restoredFrom: restoredFrom ?? undefined,
        since,
        until: until ?? undefined,
      };
      return [m.key, m];
    },
  );
  const membersMap = mapOf(decoded);
  return { ...(rest as Omit<JobMembership, 'members' | 'live'>), members: membersMap, ...(live !== undefined && { live: decodeLive(live, membersMap) }) };
};

/** A per-job model of a membership fold: its stream, encoded as memberships are. */
const membershipFold = (name: string, version: number, evolve: ReadModel<JobMembership>['evolve']): ReadModel<JobMembership> => ({
  name,
  version,
  stream: jobStream,
  initial: initialMembership,
  evolve,
  encode: encodeMembership,
  decode: decodeMembership,
});

/** A job's membership: every process it ever had, folded from its stream. */
export const membershipModel = membershipFold('membership', 2, evolveMembership);

/** A job's state in a membership model, from its snapshot and what came after; undefined if the job is unknown. */
const knownJob = async (store: EventStore, model: ReadModel<JobMembership>, job: string, options: ReadOptions): Promise<JobMembership | undefined> => {
  const { state } = await readModel(store, model, job, options);
  return state.phase === 'new' ? undefined : state;
};

/** A job's membership from its stream; `at` stops at that global position (from the whole history). Undefined if unknown. */
export const jobMembership = async (store: EventStore, job: string, at?: Position, options: ReadOptions = {}): Promise<JobMembership | undefined> => {
  if (at === undefined) return knownJob(store, membershipModel, job, options);
  let state = initialMembership(job);
  for (let from = 0; ; ) {
    const page = await store.readStream(jobStream(job), { from, limit: 1000 });
    for (const e of page) {
      if (e.position > at) return state.phase === 'new' ? undefined : state;
      state = evolveMembership(state, e);
    }
    options.progress?.(from + page.length, page.at(-1)?.revision ?? from);
    if (page.length < 1000) break;
    from = page[page.length - 1]!.revision + 1;
  }
  return state.phase === 'new' ? undefined : state;
};

/** The same, with what the read did (snapshot used or rebuilt, events folded). */
export const readMembership = (store: EventStore, job: string, options: ReadOptions = {}): Promise<ModelRead<JobMembership>> => readModel(store, membershipModel, job, options);

/**
 * What `ckpt ps` draws by default (and --running): the members that run, the exited ones they
 * descend from, unit roots and what kept checkpoints captured; the others are counted per unit.
 * As small as what runs, however long the history (evolveShownMembership).
 */
export const liveMembershipModel = membershipFold('live-membership', 1, evolveShownMembership);

/** A job's live membership (liveMembershipModel); undefined if the job is unknown. */
export const liveMembership = (store: EventStore, job: string, options: ReadOptions = {}) => knownJob(store, liveMembershipModel, job, options);

/** Events that change only members: the membership fold needs not see them for a job's info. */
const MEMBER_EVENTS = new Set([
  'ProcessForked',
  'ProcessExecd',
  'ProcessRenamed',
  'ProcessExited',
  'ProcessVanished',
  'ProcessSessionChanged',
  'ProcessGroupChanged',
  'ProcessReparented',
  'ProcessCgroupChanged',
  'ProcessObserved',
  'DependencyObserved',
]);

/**
 * A job without its processes: units (node, phase, cgroups), owner, phase, outcome — the
 * membership fold's own, with no members kept. (A restored unit's pgid, sid and cgroup come from
 * its restored root as the event says; an older event that left them out reads 0 / none here.)
 */
export const evolveJobInfo = (job: JobMembership, e: RecordedEvent): JobMembership => {
  const next = MEMBER_EVENTS.has(e.type) ? { ...job, position: e.position } : evolveMembership(job, e);
  return next.members.size > 0 ? { ...next, members: emptyMap() } : next;
};

/** A job's info (evolveJobInfo) for the callers that need no processes: a snapshot of a few units. */
export const jobInfoModel = membershipFold('job', 1, evolveJobInfo);

/** A job's info (jobInfoModel); undefined if the job is unknown (or not the caller's to read). */
export const jobInfo = (store: EventStore, job: string, options: ReadOptions = {}) => knownJob(store, jobInfoModel, job, options);

/**
 * What `ckpt jobs` shows of a job: its membership without the members — units, phase, owner and
 * outcome are the membership fold's own — and of its processes only which run now and how many
 * there were, so the list stays as small as what runs, however long the history.
 */
export interface JobListing {
  readonly job: JobMembership;
  /** The members that run (what the fold needs to go on). */
  readonly processes: PersistentMap<true>;
  /** What the list shows: how many run, and how many members the job ever had. */
  readonly running: number;
  readonly total: number;
}

const initialListing = (job: string): JobListing => ({ job: initialMembership(job), processes: emptyMap(), running: 0, total: 0 });

/**
 * Which processes run and how many members there were, as evolveMembership counts them. An ended
 * process is forgotten here: a member is only ever new when the agent first sees it alive (fork,
 * observation, launch, restore), and a process that ended is never seen alive again.
 */
export const evolveListing = (l: JobListing, e: RecordedEvent): JobListing => {
  let { processes, total } = l;
  const started = (key: string) => {
    if (getIn(processes, key)) return;
    processes = setIn(processes, key, true);
    total++;
  };
  switch (e.type) {
    case 'UnitLaunched':
      started(processKey(e.data.node, e.data.root));
      break;
    case 'ProcessForked':
      started(processKey(e.data.node, e.data.child));
      break;
    case 'ProcessObserved':
    case 'DependencyObserved':
      started(processKey(e.data.node, e.data.process));
      break;
    case 'ProcessExited':
    case 'ProcessVanished':
      processes = removeIn(processes, processKey(e.data.node, e.data.process));
      break;
    case 'UnitRestored':
      if (l.job.units[e.data.unit]) for (const p of e.data.processes) started(processKey(e.data.node, p.now));
      break;
    default:
  }
  // The members the membership fold adds (a unit's root, restored processes) are counted above.
  return { job: evolveJobInfo(l.job, e), processes, running: processes.size, total };
};

/** What the list shows of a job (`ckpt jobs`, `--json`): all it keeps of a job that ended. */
export interface JobRow {
  readonly job: string;
  readonly phase: JobMembership['phase'];
  readonly outcome?: JobMembership['outcome'];
  readonly owner?: JobMembership['owner'];
  readonly submittedAt?: string;
  readonly units: ReadonlyArray<Pick<Unit, 'unit' | 'node' | 'phase' | 'exitStatus' | 'signal' | 'command'>>;
  /** Members that run, and how many the job ever had. */
  readonly running: number;
  readonly total: number;
  readonly lostEvents: number;
}

export const rowOf = ({ job: j, running, total }: JobListing): JobRow => ({
  job: j.job,
  phase: j.phase,
  ...(j.outcome !== undefined && { outcome: j.outcome }),
  ...(j.owner !== undefined && { owner: j.owner }),
  ...(j.submittedAt !== undefined && { submittedAt: j.submittedAt }),
  units: Object.values(j.units).map(({ unit, node, phase, exitStatus, signal, command }) => ({ unit, node, phase, exitStatus, signal, command })),
  running,
  total,
  lostEvents: j.lostEvents,
});

const decodeRow = (r: unknown): JobRow => {
  const row = r as JobRow;
  if (typeof row?.job !== 'string' || typeof row.phase !== 'string' || !Array.isArray(row.units) || typeof row.total !== 'number') throw new Error('jobs: a row without job, phase, units or total');
  return row;
};

/** Ended jobs `ckpt jobs` shows without --all: the ones that ended last. */
export const RECENT_ENDED = 20;

/**
 * Every job in the log, kept as small as what runs: a job that ended is kept as its row only
 * (what the list shows of it), and at the list's next save the rows of the jobs that ended since
 * leave the snapshot for a chunk of their own (a snapshot of `jobs.rows`, one per save that had
 * any), so that a list of 150,000 jobs loads the few that run and the last few that ended, not all
 * of them. An ended job that gets events again (a restart, a late exit) is folded again from its
 * stream before the event (readJobs does it); its stored row is then stale, and a later one wins.
 */
export interface JobsList {
  /** Jobs that have not ended, folded on. */
  readonly active: PersistentMap<JobListing>;
  /** Jobs that ended since the list was last saved (then written as a chunk and dropped from here). */
  readonly ended: PersistentMap<JobRow>;
  /** Rows in the stored chunks, and how many of them are stale (their job was folded again since);
   *  rows is UNKNOWN_ROWS in a list the agent filtered for a user (the rows are everyone's). */
  readonly rows: number;
  readonly stale: number;
  /** Chunks stored: keys 0 … chunks-1. */
  readonly chunks: number;
  /** Which chunks are this list's: position and digest of its first save. A list rebuilt from the
   *  log starts a lineage of its own, so the chunks of the one before are never mistaken for its own. */
  readonly lineage?: string;
  /** The RECENT_ENDED jobs that ended last, in the order they ended. */
  readonly recent: readonly JobRow[];
}

export const UNKNOWN_ROWS = -1;

const emptyList = (): JobsList => ({ active: emptyMap(), ended: emptyMap(), rows: 0, stale: 0, chunks: 0, recent: [] });

/** A chunk's key: its number, zero-padded so keys sort in save order. */
const chunkKey = (n: number) => String(n).padStart(8, '0');

const encodeListing = (l: JobListing) => ({ job: encodeMembership(l.job), running: [...entriesOf(l.processes)].map(([key]) => key), total: l.total });

const decodeListing = (encoded: unknown): JobListing => {
  const l = encoded as ReturnType<typeof encodeListing>;
  if (!Array.isArray(l?.running) || typeof l.total !== 'number') throw new Error('jobs: a listing without running or total');
  const job = decodeMembership(l.job);
  const processes = mapOf(l.running.map((key) => [key, true] as const));
  return { job, processes, running: processes.size, total: l.total };
};

const list = <T>(name: string, value: unknown, decode: (x: unknown) => T): T[] => {
  if (!Array.isArray(value)) throw new Error(`jobs: ${name} is not a list`);
  return value.map(decode);
};

/** Every job in the log (a whole-log model: positions are global). Fold it with readJobs. */
export const jobsModel: ReadModel<JobsList> = {
  name: 'jobs',
  version: 5,
  initial: emptyList,
  evolve: (jobs, e) => {
    if (!e.stream.startsWith('job-')) return jobs;
    const job = e.stream.slice(4);
    const before = getIn(jobs.active, job);
    if (!before && e.revision > 0) throw new Error(`jobs: event ${e.position} is of job ${job}, which ended: fold the list with readJobs, which folds it again first`);
    const next = evolveListing(before ?? initialListing(job), e);
    const wasEnded = before?.job.phase === 'ended';
    if (next.job.phase !== 'ended') {
      return { ...jobs, active: setIn(jobs.active, job, next), ...(wasEnded && { recent: jobs.recent.filter((r) => r.job !== job) }) };
    }
    const row = rowOf(next);
    const recent = wasEnded && jobs.recent.some((r) => r.job === job) ? jobs.recent.map((r) => (r.job === job ? row : r)) : [...jobs.recent.filter((r) => r.job !== job), row].slice(-RECENT_ENDED);
    return { ...jobs, active: removeIn(jobs.active, job), ended: setIn(jobs.ended, job, row), recent };
  },
  encode: (jobs) => ({
    active: [...valuesOf(jobs.active)].map(encodeListing),
    ended: [...valuesOf(jobs.ended)],
    rows: jobs.rows,
    stale: jobs.stale,
    chunks: jobs.chunks,
    lineage: jobs.lineage ?? null,
    recent: jobs.recent,
  }),
  decode: (encoded) => {
    const e = encoded as { active: unknown; ended: unknown; rows: unknown; stale: unknown; chunks: unknown; lineage: unknown; recent: unknown };
    if (typeof e?.rows !== 'number' || typeof e.stale !== 'number' || typeof e.chunks !== 'number' || (e.lineage !== null && typeof e.lineage !== 'string'))
      throw new Error('jobs: rows, chunks or lineage missing');
    return {
      active: mapOf(list('active', e.active, decodeListing).map((l) => [l.job.job, l] as const)),
      ended: mapOf(list('ended', e.ended, decodeRow).map((r) => [r.job, r] as const)),
      rows: e.rows,
      stale: e.stale,
      chunks: e.chunks,
      ...(e.lineage !== null && { lineage: e.lineage }),
      recent: list('recent', e.recent, decodeRow),
    };
  },
  rows: (jobs, last) => {
    if (jobs.ended.size === 0) return { state: jobs, rows: [] };
    const lineage = jobs.lineage ?? `${last.position}:${last.digest!.slice(0, 16)}`;
    const chunk = { lineage, rows: [...valuesOf(jobs.ended)] };
    return { state: { ...jobs, ended: emptyMap(), rows: jobs.rows + chunk.rows.length, chunks: jobs.chunks + 1, lineage }, rows: [[chunkKey(jobs.chunks), chunk]] };
  },
};

/** The rows of a stored chunk, if it is of this lineage. */
const chunkRows =
  (lineage: string | undefined) =>
  (stored: unknown): JobRow[] | undefined => {
    const c = stored as { lineage?: unknown; rows?: unknown };
    return lineage !== undefined && c?.lineage === lineage ? list('chunk', c.rows, decodeRow) : undefined;
  };

/** The list's snapshot does not hold what an event needs (a job that ended with no rows stored). */
class ListInconsistent extends Error {}

/** A job's listing folded from its stream, up to a revision. */
const foldListing = async (store: EventStore, job: string, upTo: number): Promise<JobListing> => {
  let l = initialListing(job);
  for (let from = 0; from <= upTo; ) {
    const page = await store.readStream(jobStream(job), { from, limit: Math.min(2000, upTo - from + 1) });
    for (const e of page) l = evolveListing(l, e);
    if (page.length === 0) break;
    from = page[page.length - 1]!.revision + 1;
  }
  return l;
};

/**
 * Before an event of a job that ended (any event but a job's first, revision 0, of a job the list
 * does not hold as active): the job folded again from its stream up to that event, back among the
 * active ones (the event may end it again); a stored row of it is stale from now on.
 */
const foldAgain =
  (store: EventStore) =>
  (jobs: JobsList, e: RecordedEvent): Promise<JobsList> | undefined => {
    if (!e.stream.startsWith('job-') || e.revision === 0) return undefined;
    const job = e.stream.slice(4);
    if (getIn(jobs.active, job)) return undefined;
    const inMemory = getIn(jobs.ended, job) !== undefined;
    if (!inMemory && jobs.rows - jobs.stale <= 0) return Promise.reject(new ListInconsistent(`job ${job} has events after it ended, but the list stores no row of it`));
    return foldListing(store, job, e.revision - 1).then((listing) => ({
      ...jobs,
      active: setIn(jobs.active, job, listing),
      ended: removeIn(jobs.ended, job),
      stale: inMemory ? jobs.stale : jobs.stale + 1,
    }));
  };

const bySubmission = (a: JobRow, b: JobRow) => (a.submittedAt ?? '').localeCompare(b.submittedAt ?? '') || a.job.localeCompare(b.job);

/** A listing without its process keys (what a client of the agent needs: the counts). */
export const withoutProcesses = (l: JobListing): JobListing => ({ ...l, processes: emptyMap<true>() });

/** What `ckpt jobs` shows by default: every job that has not ended and the last ones that did, oldest first. */
export const listJobs = (jobs: JobsList): JobRow[] => [...[...valuesOf(jobs.active)].map(rowOf), ...jobs.recent].filter((r) => r.phase !== 'new').sort(bySubmission);

/** How many ended jobs the default list leaves out, if known. */
export const hiddenJobs = (jobs: JobsList): number | undefined => (jobs.rows === UNKNOWN_ROWS ? undefined : jobs.rows - jobs.stale + jobs.ended.size - jobs.recent.length);

/** The list from its snapshot and what came after it (only the jobs it keeps: see readAllJobs). */
export const readJobs = async (store: EventStore, options: ReadOptions = {}): Promise<ModelRead<JobsList>> => {
  try {
    return await readModel(store, jobsModel, '', { ...options, prepare: foldAgain(store) });
  } catch (error) {
    if (!(error instanceof ListInconsistent)) throw error;
    return readModel(store, jobsModel, '', { ...options, prepare: foldAgain(store), rebuild: error.message });
  }
};

/**
 * Every job in the log, oldest first: the list with all its stored rows. Chunks that cannot be
 * trusted (a changed byte, one missing, rows missing) make it rebuild the list from the log, saying why.
 */
export const readAllJobs = async (store: EventStore, options: ReadOptions = {}): Promise<ModelRead<JobRow[]>> => {
  if (store.models && !options.ignoreSnapshots) {
    const remote = await store.models.read(jobsModel.name, '', { all: true });
    return { ...remote, state: listAll(jobsModel.decode(remote.state, ''), []) };
  }
  const read = await readJobs(store, options);
  const first = await withRows(store, read.state);
  if (!('why' in first)) return { ...read, state: first };
  const rebuilt = await readModel(store, jobsModel, '', { ...options, prepare: foldAgain(store), rebuild: `its rows cannot be used (${first.why})` });
  const again = await withRows(store, rebuilt.state);
  if ('why' in again) throw new Error(`the jobs list was rebuilt from the log and saved, and its rows still cannot be read back (${again.why}): check the store`);
  return { ...rebuilt, notes: [...read.notes, ...rebuilt.notes], state: again };
};

/** Every job: the list's own and the rows of its stored chunks (later chunks win: a job that ended again), or why they cannot be used. */
const withRows = async (store: EventStore, jobs: JobsList): Promise<JobRow[] | { why: string }> => {
  if (jobs.chunks === 0 || !store.snapshots) return listAll(jobs, []);
  const keys = Array.from({ length: jobs.chunks }, (_, n) => chunkKey(n));
  const { rows: chunks, problems } = await loadRows(store.snapshots, jobsModel, keys, chunkRows(jobs.lineage));
  const stored = new Map<string, JobRow>();
  let count = 0;
  for (const key of keys) {
    const chunk = chunks.get(key) ?? [];
    count += chunk.length;
    for (const row of chunk) stored.set(row.job, row);
  }
  if (problems.length === 0 && count !== jobs.rows) problems.push(`${jobs.rows} row(s) expected, ${count} found`);
  if (problems.length > 0) return { why: [...problems.slice(0, 3), ...(problems.length > 3 ? [`and ${problems.length - 3} more`] : [])].join('; ') };
  return listAll(
    jobs,
    [...stored.values()].filter((r) => !getIn(jobs.active, r.job) && !getIn(jobs.ended, r.job)),
  );
};

const listAll = (jobs: JobsList, rows: Iterable<JobRow>): JobRow[] => [...[...valuesOf(jobs.active)].map(rowOf), ...valuesOf(jobs.ended), ...rows].filter((r) => r.phase !== 'new').sort(bySubmission);

/** Every job in the log (readAllJobs). */
export const allJobs = async (store: EventStore, options: ReadOptions = {}): Promise<JobRow[]> => (await readAllJobs(store, options)).state;
