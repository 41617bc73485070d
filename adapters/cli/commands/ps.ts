import { scopeCoverage } from '../../../domain/grouping.js';
import type { CheckpointScope } from '../../../domain/identity.js';
import { classify, type JobMembership, type Member, membersOf } from '../../../domain/membership.js';
import { jobMembership, liveMembership } from '../../../projections/jobs.js';
import { defaultNode } from '../../agent/daemon.js';
import { readCredentials, readStat, userNames } from '../../tracking/procfs.js';
import { checkName, flag, integerOption, stringOption, UsageError } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { writeOut } from '../output.js';
import { openStore } from '../store.js';
import { foldProgress } from '../verbose.js';

/** Whom a process runs as: its real uid, and that uid's name when /etc/passwd has one. */
export interface ProcessUser {
  readonly uid: number;
  readonly name?: string;
}

/**
 * The user each live member of this node runs as, read from /proc (real uid → name), so a user
 * can see their job runs as them before and after a restart. Only a process whose start time is
 * the member's counts (a reused pid is someone else); other nodes' members are unknown here.
 */
export const liveUsers = (node: string = defaultNode()): ((m: Member) => ProcessUser | undefined) => {
  let names: Map<number, string> | undefined;
  return (m) => {
    if (m.state !== 'running' || m.node !== node || readStat(m.pid)?.startTime !== m.startTime) return undefined;
    const uid = readCredentials(m.pid)?.uids[0];
    if (uid === undefined) return undefined;
    names ??= userNames();
    const name = names.get(uid);
    return name === undefined ? { uid } : { uid, name };
  };
};

export const memberJson = (job: JobMembership, m: Member, userOf?: (m: Member) => ProcessUser | undefined) => {
  const { reason, escapes } = classify(job, m);
  const user = userOf?.(m);
  return {
    node: m.node,
    unit: m.unit,
    pid: m.pid,
    ppid: m.ppid,
    pgid: m.pgid,
    sid: m.sid,
    startTime: m.startTime,
    comm: m.comm,
    // null: not running, or not on this node (its user is read from this node's /proc).
    user: user?.name ?? (user ? String(user.uid) : null),
    uid: user?.uid ?? null,
    state: m.state,
    exitStatus: m.exitStatus,
    signal: m.signal,
    reason,
    escapes,
    cgroup: m.cgroup ?? null,
    ...(m.dependsOn ? { dependsOn: m.dependsOn } : {}),
    restoredFrom: m.restoredFrom === undefined ? null : identityOf(m.restoredFrom),
  };
};

/** `node/pid@startTime` → its parts. */
const identityOf = (key: string) => {
  const m = /^(.*)\/(\d+)@(\d+)$/.exec(key);
  return m ? { node: m[1]!, pid: Number(m[2]), startTime: Number(m[3]) } : { key };
};

const stateText = (m: Member) => (m.state === 'running' ? 'running' : m.state === 'vanished' ? 'vanished' : m.signal !== null ? `killed (signal ${m.signal})` : `exited (${m.exitStatus})`);

/** Members by `node/pid`, in the order given. */
export const pidIndex = (members: readonly Member[]): Map<string, Member[]> => {
  const byPid = new Map<string, Member[]>();
  for (const m of members) {
    const at = `${m.node}/${m.pid}`;
    const same = byPid.get(at);
    if (same) same.push(m);
    else byPid.set(at, [m]);
  }
  return byPid;
};

/**
 * The member that forked `m`: a member of the same unit on its node with the pid `m` was forked by,
 * alive when `m` was first seen (pids are reused, so the pid alone is not enough). `byPid` lists the
 * candidates by `node/pid` in `members` order; the first that fits wins.
 */
export const parentOf = (m: Member, byPid: ReadonlyMap<string, readonly Member[]>): Member | undefined =>
  m.forkedBy === undefined ? undefined : byPid.get(`${m.node}/${m.forkedBy}`)?.find((p) => p.since <= m.since && (p.until === undefined || p.until >= m.since));

/**
 * A tree by who forked whom; processes whose parent is unknown or not among `members` (dependents,
 * the root) start a branch. Linear in the members (plus the lines' indentation): a fork loop's 200k
 * children are one list under their shell.
 */
const tree = (job: JobMembership, members: readonly Member[], userOf: (m: Member) => ProcessUser | undefined): string[] => {
  const byPid = pidIndex(members);
  const children = new Map<string | undefined, Member[]>();
  for (const m of members) {
    const at = parentOf(m, byPid)?.key;
    const kids = children.get(at);
    if (kids) kids.push(m);
    else children.set(at, [m]);
  }
  const whyOf = (m: Member) => {
    const { reason, escapes } = classify(job, m);
    return reason === 'escaped'
      ? `escaped: ${escapes.join(', ')}`
      : reason === 'dependent'
        ? `dependent: ${m.dependsOn!.via}${m.dependsOn!.name ? ` ${m.dependsOn!.name}` : ''} with ${m.dependsOn!.member}`
        : reason;
  };
  const userText = (m: Member) => {
    const u = userOf(m);
    return u === undefined ? '-' : (u.name ?? String(u.uid));
  };
  // Each member's columns once (a user is read from /proc), and the widest of each.
  const why = new Map<Member, string>();
  const user = new Map<Member, string>();
  let whyWidth = 8;
  let userWidth = 6;
  for (const m of members) {
    const w = whyOf(m);
    const u = userText(m);
    why.set(m, w);
    user.set(m, u);
    whyWidth = Math.max(whyWidth, w.length);
    userWidth = Math.max(userWidth, u.length);
  }
  whyWidth += 2;
  userWidth += 2;
  const lines = [`${'PID'.padEnd(8)}${'PPID'.padEnd(8)}${'PGID'.padEnd(8)}${'SID'.padEnd(8)}${'USER'.padEnd(userWidth)}${'STATE'.padEnd(20)}${'REASON'.padEnd(whyWidth)}COMMAND`];
  // Depth first without recursion: a chain of forks can be deeper than the call stack.
  const stack: Array<{ m: Member; prefix: string; last: boolean; top: boolean }> = [];
  const pushKids = (kids: readonly Member[] | undefined, prefix: string, top: boolean) => {
    for (let i = (kids?.length ?? 0) - 1; i >= 0; i--) stack.push({ m: kids![i]!, prefix, last: i === kids!.length - 1, top });
  };
  pushKids(children.get(undefined), '', true);
  for (let next = stack.pop(); next; next = stack.pop()) {
    const { m, prefix, last, top } = next;
    const cols = `${String(m.pid).padEnd(8)}${String(m.ppid).padEnd(8)}${String(m.pgid).padEnd(8)}${String(m.sid).padEnd(8)}${user.get(m)!.padEnd(userWidth)}${stateText(m).padEnd(20)}${why.get(m)!.padEnd(whyWidth)}`;
    const restored = m.restoredFrom === undefined ? '' : `  (restored; was pid ${identityOf(m.restoredFrom).pid})`;
    lines.push(`${cols}${top ? '' : prefix + (last ? '└─ ' : '├─ ')}${m.comm}${restored}`);
    pushKids(children.get(m.key), top ? '' : prefix + (last ? '   ' : '│  '), false);
  }
  return lines;
};

/**
 * What the tree view draws of a unit by default: its running members and the exited ones they
 * descend from (so each running process stays under whoever forked it). The rest are counted.
 */
export const runningAndAncestors = (members: readonly Member[]): Member[] => {
  const byPid = pidIndex(members);
  const shown = new Set<Member>();
  for (const m of members) {
    if (m.state !== 'running') continue;
    // Up the fork chain until a member already shown: each member is walked over once.
    for (let at: Member | undefined = m; at && !shown.has(at); at = parentOf(at, byPid)) shown.add(at);
  }
  return members.filter((m) => shown.has(m));
};

/**
 * The tree view, unit by unit: the running members and the exited ones they descend from (`all`:
 * every member; `running`: only the running ones). From a live fold (evolveShownMembership) the
 * same lines as from the whole membership: it keeps what is drawn and counts what it let go.
 */
export const treeView = (state: JobMembership, show: { readonly all?: boolean; readonly running?: boolean }, userOf: (m: Member) => ProcessUser | undefined): string[] => {
  const members = membersOf(state).filter((m) => !show.running || m.state === 'running');
  const gone = (unit?: string) => (show.running || !state.live ? 0 : unit === undefined ? state.live.departed : (state.live.departedByUnit[unit] ?? 0));
  const byUnit = new Map<string, Member[]>();
  let running = 0;
  for (const m of members) {
    if (m.state === 'running') running++;
    const same = byUnit.get(m.unit);
    if (same) same.push(m);
    else byUnit.set(m.unit, [m]);
  }
  const lines = [
    `job ${state.job}: ${state.phase}${state.outcome ? ` (${state.outcome})` : ''}, ${running} running of ${members.length + gone()} processes${state.lostEvents ? `, ${state.lostEvents} kernel events lost and reconciled` : ''}`,
  ];
  for (const unit of Object.values(state.units)) {
    lines.push('', `unit ${unit.unit} on ${unit.node}: ${unit.phase}, cgroup ${unit.cgroup ?? '-'}`);
    const all = byUnit.get(unit.unit) ?? [];
    const shown = show.all ? all : runningAndAncestors(all);
    for (const line of tree(state, shown, userOf)) lines.push(line); // not push(...): 200k arguments overflow the stack
    const hidden = all.length - shown.length + gone(unit.unit);
    if (hidden > 0) lines.push(`(${hidden} exited process${hidden === 1 ? '' : 'es'} not shown: --all lists them)`);
  }
  return lines;
};

const SCOPES: readonly CheckpointScope[] = ['tree', 'pgid', 'session', 'cgroup'];

/** What one checkpointer scope would capture of each unit's running members, and what it would miss. */
const showCoverage = async (state: JobMembership, scope: CheckpointScope, json: boolean): Promise<number> => {
  const coverage = Object.keys(state.units).map((unit) => scopeCoverage(state, unit, scope));
  if (json) {
    const out = coverage.map((c) => ({ unit: c.unit, scope, captured: c.captured.map((m) => m.pid), missed: c.missed.map((m) => ({ pid: m.member.pid, comm: m.member.comm, why: m.why })) }));
    await writeOut(JSON.stringify(out, null, 2) + '\n');
  } else {
    const lines = coverage.flatMap((c) => [
      `unit ${c.unit}: a ${scope} checkpointer would capture ${c.captured.length} of ${c.captured.length + c.missed.length} running processes`,
      ...c.missed.map((m) => `  misses ${m.member.pid} ${m.member.comm}: ${m.why}`),
    ]);
    await writeOut(lines.join('\n') + '\n');
  }
  return EXIT.ok;
};

export const psCommand: Command = {
  usage: 'JOB [--json] [--running | --all] [--at POSITION] [--scope tree|pgid|session|cgroup]',
  description: [
    'Membership is derived from the job’s whole history, so a process that left its session or process',
    'group, moved cgroup, or was re-parented (a double-forked daemon) is still listed. REASON says why',
    'a process belongs: root (the unit’s first process), descendant, escaped (and how), or dependent',
    '(not a descendant, but shares a pipe, unix socket or SysV shared memory with a member).',
    'The tree shows the running processes and the exited ones they were forked by; the other exited',
    'processes are counted under each unit (--all draws them too; --json always lists every process).',
    'The tree and --running read the job’s live membership (what runs, what it was forked by, counts of',
    'the rest), kept as a snapshot: as quick with 200k processes in the history as with 20. --all,',
    '--json (without --running), --at and --scope read the whole membership: their answer is the history.',
    'With --at, membership as it was at that log position (see ckpt history / ckpt log).',
    'With --scope, what a checkpointer of that scope would capture of each unit, and every process it',
    'would miss with the reason (e.g. `tree` misses a re-parented daemon).',
    'After a restart, restored processes are listed with their new identity and the one they had at',
    'checkpoint time (restoredFrom). USER is whom a running process of this node runs as now (its real',
    'uid, read from /proc; "-" when not running or on another node): a job of a user runs as that user,',
    'before and after a restart. JSON fields: node, unit, pid, ppid, pgid, sid, startTime, comm, user,',
    'uid, state, exitStatus, signal, reason, escapes, cgroup, dependsOn, restoredFrom.',
  ].join('\n'),
  options: [
    { name: 'json', description: 'a JSON array of processes for machines' },
    { name: 'at', value: 'POSITION', description: 'membership as it was at this global log position' },
    { name: 'running', description: 'only the processes running now (or at --at)' },
    { name: 'all', description: 'draw every process of the history, exited ones too (a fork loop’s can be many)' },
    { name: 'scope', value: 'SCOPE', description: 'what a tree, pgid, session or cgroup checkpointer would capture and miss, and why' },
  ],
  examples: ['ckpt ps nightly', 'ckpt ps nightly --all', 'ckpt ps nightly --json | jq ".[] | select(.reason == \\"escaped\\")"', 'ckpt ps nightly --at 1200', 'ckpt ps nightly --scope tree'],
  async run(args) {
    const [job, ...extra] = args.positionals;
    if (!job || extra.length > 0) throw new UsageError('name exactly one job');
    checkName('job', job);
    const at = integerOption(args, 'at', 1);
    const scope = stringOption(args, 'scope');
    if (scope !== undefined && !SCOPES.includes(scope as CheckpointScope)) throw new UsageError(`--scope must be one of ${SCOPES.join(', ')}, got "${scope}"`);
    if (flag(args, 'all') && flag(args, 'running')) throw new UsageError('--all and --running contradict each other: --all lists every process, --running only the running ones');
    // Their answer is the whole history: --all, --json of every process, --at, --scope. The tree
    // and --running read the live membership (what runs, what it descends from, counts of the rest).
    const whole = flag(args, 'all') || (flag(args, 'json') && !flag(args, 'running')) || at !== undefined || scope !== undefined;
    const store = openStore(args);
    try {
      const fold = foldProgress('ps', flag(args, 'json'));
      const state = whole ? await jobMembership(store, job, at, fold) : await liveMembership(store, job, fold);
      fold.done();
      if (!state) {
        process.stderr.write(`ckpt ps: unknown job "${job}"${at ? ` at position ${at}` : ''} (ckpt jobs lists them)\n`);
        return EXIT.failed;
      }
      if (scope) return await showCoverage(state, scope as CheckpointScope, flag(args, 'json'));
      const members = membersOf(state).filter((m) => !flag(args, 'running') || m.state === 'running');
      const userOf = liveUsers();
      if (flag(args, 'json')) {
        // One object per line of the array: 200k members print as they are made, not as one huge string.
        for (let i = 0; i < members.length; i += 1000) {
          const page = members.slice(i, i + 1000).map((m) => JSON.stringify(memberJson(state, m, userOf), null, 2).replace(/^/gm, '  '));
          await writeOut(`${i === 0 ? '[\n' : ',\n'}${page.join(',\n')}`);
        }
        await writeOut(members.length === 0 ? '[]\n' : '\n]\n');
        return EXIT.ok;
      }
      const lines = treeView(state, { all: flag(args, 'all'), running: flag(args, 'running') }, userOf);
      await writeOut(lines.join('\n') + '\n');
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
