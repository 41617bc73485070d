import { scopeCoverage } from '../../../domain/grouping.js';
import type { CheckpointScope } from '../../../domain/identity.js';
import { classify, membersOf, type JobMembership, type Member } from '../../../domain/membership.js';
import { jobMembership } from '../../../projections/jobs.js';
import { defaultNode } from '../../agent/daemon.js';
import { readCredentials, readStat, userNames } from '../../tracking/procfs.js';
import { checkName, flag, integerOption, stringOption, UsageError } from '../args.js';
import { EXIT, type Command } from '../command.js';
import { writeOut } from '../output.js';
import { openStore } from '../store.js';

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

const stateText = (m: Member) =>
  m.state === 'running' ? 'running' : m.state === 'vanished' ? 'vanished' : m.signal !== null ? `killed (signal ${m.signal})` : `exited (${m.exitStatus})`;

/** A tree by who forked whom; processes whose parent is unknown (dependents, the root) start a branch. */
const tree = (job: JobMembership, members: Member[], userOf: (m: Member) => ProcessUser | undefined): string[] => {
  const byKey = new Map(members.map((m) => [m.key, m]));
  const parentKey = (m: Member) => (m.forkedBy === undefined ? undefined : members.find((p) => p.pid === m.forkedBy && p.node === m.node && p.since <= m.since && (p.until === undefined || p.until >= m.since))?.key);
  const children = new Map<string | undefined, Member[]>();
  for (const m of members) {
    const p = parentKey(m);
    const at = p && byKey.has(p) ? p : undefined;
    children.set(at, [...(children.get(at) ?? []), m]);
  }
  const lines: string[] = [];
  const whyOf = (m: Member) => {
    const { reason, escapes } = classify(job, m);
    return reason === 'escaped' ? `escaped: ${escapes.join(', ')}` : reason === 'dependent' ? `dependent: ${m.dependsOn!.via}${m.dependsOn!.name ? ` ${m.dependsOn!.name}` : ''} with ${m.dependsOn!.member}` : reason;
  };
  const whyWidth = Math.max(8, ...members.map((m) => whyOf(m).length)) + 2;
  const userText = (m: Member) => {
    const u = userOf(m);
    return u === undefined ? '-' : (u.name ?? String(u.uid));
  };
  const userWidth = Math.max(6, ...members.map((m) => userText(m).length)) + 2;
  lines.push(`${'PID'.padEnd(8)}${'PPID'.padEnd(8)}${'PGID'.padEnd(8)}${'SID'.padEnd(8)}${'USER'.padEnd(userWidth)}${'STATE'.padEnd(20)}${'REASON'.padEnd(whyWidth)}COMMAND`);
  const walk = (m: Member, prefix: string, last: boolean, top: boolean) => {
    const cols = `${String(m.pid).padEnd(8)}${String(m.ppid).padEnd(8)}${String(m.pgid).padEnd(8)}${String(m.sid).padEnd(8)}${userText(m).padEnd(userWidth)}${stateText(m).padEnd(20)}${whyOf(m).padEnd(whyWidth)}`;
    const restored = m.restoredFrom === undefined ? '' : `  (restored; was pid ${identityOf(m.restoredFrom).pid})`;
    lines.push(`${cols}${top ? '' : prefix + (last ? '└─ ' : '├─ ')}${m.comm}${restored}`);
    const kids = children.get(m.key) ?? [];
    kids.forEach((k, i) => walk(k, top ? '' : prefix + (last ? '   ' : '│  '), i === kids.length - 1, false));
  };
  for (const m of children.get(undefined) ?? []) walk(m, '', true, true);
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
  name: 'ps',
  summary: 'Show every process of a job — including escaped and dependent ones — and why it belongs.',
  usage: 'JOB [--json] [--running] [--at POSITION] [--scope tree|pgid|session|cgroup]',
  description: [
    'Membership is derived from the job’s whole history, so a process that left its session or process',
    'group, moved cgroup, or was re-parented (a double-forked daemon) is still listed. REASON says why',
    'a process belongs: root (the unit’s first process), descendant, escaped (and how), or dependent',
    '(not a descendant, but shares a pipe, unix socket or SysV shared memory with a member).',
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
    { name: 'scope', value: 'SCOPE', description: 'what a tree, pgid, session or cgroup checkpointer would capture and miss, and why' },
  ],
  examples: ['ckpt ps nightly', 'ckpt ps nightly --json | jq ".[] | select(.reason == \\"escaped\\")"', 'ckpt ps nightly --at 1200', 'ckpt ps nightly --scope tree'],
  async run(args) {
    const [job, ...extra] = args.positionals;
    if (!job || extra.length > 0) throw new UsageError('name exactly one job');
    checkName('job', job);
    const at = integerOption(args, 'at', 1);
    const scope = stringOption(args, 'scope');
    if (scope !== undefined && !SCOPES.includes(scope as CheckpointScope)) throw new UsageError(`--scope must be one of ${SCOPES.join(', ')}, got "${scope}"`);
    const store = openStore(args);
    try {
      const state = await jobMembership(store, job, at);
      if (!state) {
        process.stderr.write(`ckpt ps: unknown job "${job}"${at ? ` at position ${at}` : ''} (ckpt jobs lists them)\n`);
        return EXIT.failed;
      }
      if (scope) return await showCoverage(state, scope as CheckpointScope, flag(args, 'json'));
      const members = membersOf(state).filter((m) => !flag(args, 'running') || m.state === 'running');
      const userOf = liveUsers();
      if (flag(args, 'json')) {
        await writeOut(JSON.stringify(members.map((m) => memberJson(state, m, userOf)), null, 2) + '\n');
        return EXIT.ok;
      }
      const running = members.filter((m) => m.state === 'running').length;
      const lines = [`job ${state.job}: ${state.phase}${state.outcome ? ` (${state.outcome})` : ''}, ${running} running of ${members.length} processes${state.lostEvents ? `, ${state.lostEvents} kernel events lost and reconciled` : ''}`];
      for (const unit of Object.values(state.units)) {
        lines.push('', `unit ${unit.unit} on ${unit.node}: ${unit.phase}, cgroup ${unit.cgroup ?? '-'}`);
        lines.push(...tree(state, members.filter((m) => m.unit === unit.unit), userOf));
      }
      await writeOut(lines.join('\n') + '\n');
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
