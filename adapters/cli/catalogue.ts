// Every command ckpt has, with the one line `ckpt --help` shows for it. A command's module (its
// options, help and implementation, and everything they import) is loaded only when it is asked
// for: a read command starts without loading the agent, CRIU's protocol or PostgreSQL's client.
import type { Command } from './command.js';

export interface CommandEntry {
  readonly name: string;
  readonly summary: string;
  load(): Promise<Command>;
}

export const catalogue: readonly CommandEntry[] = [
  { name: 'demo', summary: 'Show the whole story: run a job, checkpoint it, kill it, restart it, audit it.', load: async () => (await import('./commands/demo.js')).demoCommand },
  { name: 'run', summary: 'Run a command as a tracked job unit on this node.', load: async () => (await import('./commands/run.js')).runCommand },
  {
    name: 'checkpoint',
    summary: 'Checkpoint a running job: every unit frozen, dumped, verified and committed together.',
    load: async () => (await import('./commands/checkpoint.js')).checkpointCommand,
  },
  {
    name: 'checkpoints',
    summary: 'List a job’s checkpoints: versions, outcome, size, durations, and refused requests.',
    load: async () => (await import('./commands/checkpoints.js')).checkpointsCommand,
  },
  {
    name: 'restart',
    summary: 'Restart a job from a committed checkpoint: every unit restored, with its limits, tracked again.',
    load: async () => (await import('./commands/restart.js')).restartCommand,
  },
  { name: 'audit', summary: 'Every checkpoint, restart and prune of a job (or of all jobs): who, when, what came of it.', load: async () => (await import('./commands/audit.js')).auditCommand },
  { name: 'prune', summary: 'Remove a job’s old checkpoint images, keeping the newest N committed versions that verify.', load: async () => (await import('./commands/prune.js')).pruneCommand },
  {
    name: 'explain',
    summary: 'Explain one checkpoint or restart: each unit’s steps and frozen window, every decision and why, the cause of a failure.',
    load: async () => (await import('./commands/explain.js')).explainCommand,
  },
  {
    name: 'stats',
    summary: 'Analytics of checkpoints and restarts: one row each (steps, frozen time, bytes, pages, outcome), per-job and per-node aggregates; JSON or CSV.',
    load: async () => (await import('./commands/stats.js')).statsCommand,
  },
  { name: 'verify', summary: 'Re-derive every decision recorded for a job and report any that the code would not make again.', load: async () => (await import('./commands/verify.js')).verifyCommand },
  { name: 'export', summary: 'Write a job’s history as self-describing NDJSON, to replay or verify anywhere.', load: async () => (await import('./commands/export.js')).exportCommand },
  { name: 'jobs', summary: 'List jobs: state, owner, units and how many processes run.', load: async () => (await import('./commands/jobs.js')).jobsCommand },
  { name: 'ps', summary: 'Show every process of a job — including escaped and dependent ones — and why it belongs.', load: async () => (await import('./commands/ps.js')).psCommand },
  { name: 'history', summary: 'Print one job’s events in order: its complete, replayable history.', load: async () => (await import('./commands/history.js')).historyCommand },
  { name: 'log', summary: 'Print the event log: every event of every job and node, in global order.', load: async () => (await import('./commands/log.js')).logCommand },
  {
    name: 'nodes',
    summary: 'List the nodes: alive or lost by their liveness lease, last seen, lease renewed/expires, checkpointer, running units.',
    load: async () => (await import('./commands/nodes.js')).nodesCommand,
  },
  {
    name: 'dashboard',
    summary: 'Serve a live, read-only web page of jobs, membership, checkpoint timelines, audit and nodes (localhost; a token elsewhere).',
    load: async () => (await import('./commands/dashboard.js')).dashboardCommand,
  },
  {
    name: 'agent',
    summary: 'Run, start, stop or inspect the node agent that tracks this node’s jobs and renews its liveness lease (--lease-ttl).',
    load: async () => (await import('./commands/agent.js')).agentCommand,
  },
];
