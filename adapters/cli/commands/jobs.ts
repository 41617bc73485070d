import { listJobs, readJobs, type JobListing } from '../../../projections/jobs.js';
import { flag } from '../args.js';
import { VERBOSE, verboseNotes } from '../verbose.js';
import { EXIT, type Command } from '../command.js';
import { table, writeOut } from '../output.js';
import { openStore } from '../store.js';

export const jobSummary = ({ job: j, running, total }: JobListing) => {
  return {
    job: j.job,
    state: j.phase === 'ended' ? `ended (${j.outcome})` : j.phase,
    owner: j.owner ?? null,
    submittedAt: j.submittedAt ?? null,
    units: Object.values(j.units).map((u) => ({ unit: u.unit, node: u.node, phase: u.phase, exitStatus: u.exitStatus, signal: u.signal, command: u.command })),
    processes: { running, total },
    lostEvents: j.lostEvents,
  };
};

export const jobsCommand: Command = {
  name: 'jobs',
  summary: 'List jobs: state, owner, units and how many processes run.',
  usage: '[--json] [--verbose]',
  description: [
    'Every job in the event log, oldest first, derived by folding the log: from the jobs snapshot',
    'kept in the store and the events after it (a snapshot that no longer matches the log or this',
    'ckpt is rebuilt from the whole log; --verbose says which).',
  ].join('\n'),
  options: [
    { name: 'json', description: 'a JSON array for machines' },
    VERBOSE,
  ],
  examples: ['ckpt jobs', 'ckpt jobs --json | jq ".[] | select(.state == \\"running\\") | .job"'],
  async run(args) {
    const store = openStore(args);
    try {
      const read = await readJobs(store);
      verboseNotes(args, 'jobs', read);
      const jobs = listJobs(read.state).map(jobSummary);
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
