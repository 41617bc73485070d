import { hiddenJobs, type JobRow, listJobs, readAllJobs, readJobs } from '../../../projections/jobs.js';
import { flag } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { table, writeOut } from '../output.js';
import { openStore } from '../store.js';
import { foldProgress, VERBOSE, verboseNotes } from '../verbose.js';

export const jobSummary = (j: JobRow) => ({
  job: j.job,
  state: j.phase === 'ended' ? `ended (${j.outcome})` : j.phase,
  owner: j.owner ?? null,
  submittedAt: j.submittedAt ?? null,
  units: j.units.map((u) => ({ unit: u.unit, node: u.node, phase: u.phase, exitStatus: u.exitStatus, signal: u.signal, command: u.command })),
  processes: { running: j.running, total: j.total },
  lostEvents: j.lostEvents,
});

export const jobsCommand: Command = {
  usage: '[--all] [--json] [--verbose]',
  description: [
    'Jobs in the event log, oldest first: every job that has not ended and the last 20 that did',
    '(--all: every job ever run). Derived by folding the log: from the jobs snapshot kept in the',
    'store and the events after it. A job that ends leaves the snapshot for a row of its own, so the',
    'list costs what runs, not what ever ran; --all reads the rows too. A snapshot that no longer',
    'matches the log or this ckpt is rebuilt from the whole log (--verbose says which).',
  ].join('\n'),
  options: [
    { name: 'all', short: 'a', description: 'every job, ended ones included (reads one row per ended job)' },
    { name: 'json', description: 'a JSON array for machines (the same jobs as the table)' },
    VERBOSE,
  ],
  examples: ['ckpt jobs', 'ckpt jobs --all', 'ckpt jobs --json | jq ".[] | select(.state == \\"running\\") | .job"'],
  async run(args) {
    const store = openStore(args);
    try {
      const all = flag(args, 'all');
      const fold = foldProgress('jobs', flag(args, 'json'));
      let listed: JobRow[];
      let hidden: number | undefined = 0;
      if (all) {
        const read = await readAllJobs(store, fold);
        fold.done();
        verboseNotes(args, 'jobs', read);
        listed = read.state;
      } else {
        const read = await readJobs(store, fold);
        fold.done();
        verboseNotes(args, 'jobs', read);
        listed = listJobs(read.state);
        hidden = hiddenJobs(read.state);
      }
      const jobs = listed.map(jobSummary);
      if (flag(args, 'json')) {
        await writeOut(JSON.stringify(jobs, null, 2) + '\n');
        return EXIT.ok;
      }
      const more = hidden === undefined ? 'older ended jobs are not shown' : hidden > 0 ? `${hidden} older ended job(s) not shown` : '';
      if (jobs.length === 0) {
        console.log(more ? `no job runs now; ${more}: ckpt jobs --all` : 'no jobs yet (start one with: ckpt run -- COMMAND)');
        return EXIT.ok;
      }
      const rows = jobs.map((j) => [
        j.job,
        j.state,
        j.owner ? `uid ${j.owner.uid}` : '-',
        j.units.map((u) => `${u.unit}@${u.node}`).join(','),
        `${j.processes.running}/${j.processes.total}`,
        j.submittedAt ?? '-',
      ]);
      await writeOut(table(['JOB', 'STATE', 'OWNER', 'UNITS', 'RUNNING/ALL', 'SUBMITTED'], rows) + (more ? `(${more}: ckpt jobs --all)\n` : ''));
      return EXIT.ok;
    } finally {
      await store.close();
    }
  },
};
