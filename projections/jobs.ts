// Job membership read models for the CLI and the dashboard: one job from its stream (optionally
// as it was at a log position), or every job from the whole log.
import type { EventStore, Position } from '../domain/event-store.js';
import { jobStream } from '../domain/identity.js';
import { evolveMembership, initialMembership, type JobMembership } from '../domain/membership.js';
import { emptyMap, getIn, setIn, valuesOf, type PersistentMap } from '../domain/persistent-map.js';
import { replay } from './project.js';

/** A job's membership from its stream; `at` stops at that global position. Undefined if unknown. */
export const jobMembership = async (store: EventStore, job: string, at?: Position): Promise<JobMembership | undefined> => {
  let state = initialMembership(job);
  for (let from = 0; ; ) {
    const page = await store.readStream(jobStream(job), { from, limit: 1000 });
    for (const e of page) {
      if (at !== undefined && e.position > at) return state.phase === 'new' ? undefined : state;
      state = evolveMembership(state, e);
    }
    if (page.length < 1000) break;
    from = page[page.length - 1]!.revision + 1;
  }
  return state.phase === 'new' ? undefined : state;
};

/** Every job in the log, folded with the same evolve as a single job. */
export const allJobs = async (store: EventStore): Promise<JobMembership[]> => {
  const { state } = await replay<PersistentMap<JobMembership>>(
    store,
    (jobs, e) => {
      if (!e.stream.startsWith('job-')) return jobs;
      const job = e.stream.slice(4);
      return setIn(jobs, job, evolveMembership(getIn(jobs, job) ?? initialMembership(job), e));
    },
    emptyMap(),
  );
  return [...valuesOf(state)].filter((j) => j.phase !== 'new').sort((a, b) => (a.submittedAt ?? '').localeCompare(b.submittedAt ?? '') || a.job.localeCompare(b.job));
};
