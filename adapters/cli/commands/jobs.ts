import { runningMembers, type JobMembership } from '../../../domain/membership.js';
import { valuesOf } from '../../../domain/persistent-map.js';
import { allJobs } from '../../../projections/jobs.js';
import { flag } from '../args.js';
import { EXIT, type Command } from '../command.js';
import { table, writeOut } from '../output.js';
import { openStore } from '../store.js';

export const jobSummary = (j: JobMembership) => {
  const members = [...valuesOf(j.members)];
  return {
    job: j.job,
    state: j.phase === 'ended' ? `ended (${j.outcome})` : j.phase,
    owner: j.owner ?? null,
    submittedAt: j.submittedAt ?? null,
    units: Object.values(j.units).map((u) => ({ unit: u.unit, node: u.node, phase: u.phase, exitStatus: u.exitStatus, signal: u.signal, command: u.command })),
    processes: { running: runningMembers(j).length, total: members.length },
    lostEvents: j.lostEvents,
  };
};

export const jobsCommand: Command = {
  name: 'jobs',
  summary: 'List jobs: state, owner, units and how many processes run.',
  usage: '[--json]',
  description: 'Every job in the event log, oldest first, derived by folding the log.',
  options: [{ name: 'json', description: 'a JSON array for machines' }],
  examples: ['ckpt jobs', 'ckpt jobs --json | jq ".[] | select(.state == \\"running\\") | .job"'],
  async run(args) {
    const store = openStore(args);
    try {
      const jobs = (await allJobs(store)).map(jobSummary);
      if (flag(args, 'json')) {
        await writeOut(JSON.stringify(jobs, null, 2) + '\n');
        return EXIT.ok;
      }
      if (jobs.length === 0) {
        console.log('no jobs yet (start one with: ckpt run -- COMMAND)');
        return EXIT.ok;
      }
      const rows = jobs.map((j) => [j.job, j.state, j.owner ? `uid ${j.owner.uid}` : '-', j.units.map((u) => `${u.unit}@${u.node}`).join(','), `${j.processes.running}/${j.processes.total}`, j.submittedAt ?? '-']);
      await writeOut(table(['JOB', 'STATE', 'OWNER', 'UNITS', 'RUNNING/ALL', 'SUBMITTED'], rows));
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
