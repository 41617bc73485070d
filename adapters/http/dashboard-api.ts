// What the dashboard's JSON endpoints answer: each one a read model the CLI already has (jobs,
// membership and `ps --at`, checkpoints and restarts with their unit steps, stats, audit, explain,
// nodes), shaped for the page. No fold of its own: a second fold would be a second truth.

import type { EventStore, Position } from '../../domain/event-store.js';
import { jobStream } from '../../domain/identity.js';
import { classify, type JobMembership, type Member, membersOf } from '../../domain/membership.js';
import { auditEntries, auditModel } from '../../projections/audit.js';
import { checkpointSummaries, checkpointsModel } from '../../projections/checkpoints.js';
import { evolveExplain, explanation, initialExplain, knownOperations, type Operation } from '../../projections/explain.js';
import { allJobs, jobMembership, liveMembership } from '../../projections/jobs.js';
import { foldStream } from '../../projections/project.js';
import { readModel } from '../../projections/read-model.js';
import { restartsModel } from '../../projections/restarts.js';
import { stats } from '../../projections/stats.js';
import { jobSummary } from '../cli/commands/jobs.js';
import { nodeRows } from '../cli/commands/nodes.js';
import { liveUsers, memberJson, parentOf, pidIndex, runningAndAncestors } from '../cli/commands/ps.js';

/** The jobs list; `state` keeps the jobs whose state starts with it (running, ended…), `failed` those that ended failed. */
export const jobsView = async (store: EventStore, filter: { state?: string; failed?: boolean }) =>
  (await allJobs(store))
    .filter((j) => !filter.failed || (j.phase === 'ended' && j.outcome === 'failed'))
    .map(jobSummary)
    .filter((j) => !filter.state || j.state.startsWith(filter.state));

/** A member for the tree: what `ps --json` says of it, with its key and the key of the member that forked it. */
const treeMember = (job: JobMembership, m: Member, parent: Member | undefined, userOf: ReturnType<typeof liveUsers>) => ({
  key: m.key,
  parent: parent?.key ?? null,
  ...memberJson(job, m, userOf),
  why: whyOf(job, m),
  since: m.since,
  until: m.until ?? null,
});

/** Why a member belongs, in words: the same as `ps`'s REASON column. */
const whyOf = (job: JobMembership, m: Member): string => {
  const { reason, escapes } = classify(job, m);
  if (reason === 'escaped') return `escaped: ${escapes.join(', ')}`;
  if (reason === 'dependent') return `dependent: ${m.dependsOn!.via}${m.dependsOn!.name ? ` ${m.dependsOn!.name}` : ''} with ${m.dependsOn!.member}`;
  return reason;
};

/**
 * One job: its units and membership tree as `ckpt ps` draws it (running members and the exited
 * ones they descend from; `all`: every member), now or at a log position (`ps --at`), and the
 * range of positions its history spans (for the time-travel slider).
 */
export const jobView = async (store: EventStore, job: string, options: { at?: Position; all?: boolean }) => {
  const whole = options.at !== undefined || options.all;
  const state = whole ? await jobMembership(store, job, options.at) : await liveMembership(store, job);
  if (!state) return undefined;
  const [first] = await store.readStream(jobStream(job), { limit: 1 });
  const [last] = await store.readStream(jobStream(job), { direction: 'backwards', limit: 1 });
  const userOf = liveUsers();
  const members = membersOf(state);
  const byPid = pidIndex(members);
  const gone = (unit: string) => (whole || !state.live ? 0 : (state.live.departedByUnit[unit] ?? 0));
  const units = Object.values(state.units).map((u) => {
    const all = members.filter((m) => m.unit === u.unit);
    const shown = options.all ? all : runningAndAncestors(all);
    return {
      unit: u.unit,
      node: u.node,
      phase: u.phase,
      cgroup: u.cgroup ?? null,
      command: u.command,
      members: shown.map((m) => treeMember(state, m, parentOf(m, byPid), userOf)),
      hidden: all.length - shown.length + gone(u.unit),
    };
  });
  return {
    job,
    phase: state.phase,
    outcome: state.outcome ?? null,
    lostEvents: state.lostEvents,
    at: options.at ?? null,
    first: first?.position ?? null,
    last: last?.position ?? null,
    units,
  };
};

/** Checkpoints and restarts with each unit's steps (the timeline), and the stats rows and aggregate (the charts). */
export const operationsView = async (store: EventStore, job: string) => {
  const checkpoints = await readModel(store, checkpointsModel, job);
  if (checkpoints.position < 0) return undefined;
  const restarts = await readModel(store, restartsModel, job);
  const summaries = checkpointSummaries(checkpoints.state);
  const s = stats([{ job, checkpoints: summaries, restarts: restarts.state.list }]);
  return { job, checkpoints: summaries, restarts: restarts.state.list, rows: s.rows, aggregate: s.jobs[0] ?? null };
};

export const auditView = async (store: EventStore, job: string) => {
  const read = await readModel(store, auditModel, job);
  return read.position < 0 ? undefined : { job, entries: auditEntries(read.state) };
};

/** One checkpoint or restart explained, as `ckpt explain --json`; `known` lists what exists when it does not. */
export const explainView = async (store: EventStore, job: string, target: Operation) => {
  const { state, events } = await foldStream(store, jobStream(job), evolveExplain, initialExplain(target));
  if (events === 0) return undefined;
  const x = explanation(state);
  return x ? { job, ...x } : { job, missing: target, known: knownOperations(state) };
};

/** The nodes as `ckpt nodes --json` lists them. */
export const nodesView = async (store: EventStore) => (await nodeRows(store)).nodes;
