// Jobs that fork all the time, checkpointed with real CRIU: the cut is what the frozen cgroup
// holds (births, exits and unreaped zombies between plan and freeze are no failure), and a task
// CRIU cannot seize — a vfork parent whose child never execs — fails the freeze within the job's
// freeze budget, class 'timeout', naming it, with the unit thawed again.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { FreezeTimeoutError, freezeForDump, thawUnit, unitFreezeState } from '../adapters/cgroups/unit-cgroups.js';
import { locateCriu } from '../adapters/checkpointers/criu.js';
import { openEventStore } from '../adapters/store/open.js';
import type { UnitCgroup } from '../domain/events/job.js';
import { jobHarness, type PsRow } from './support/jobs.js';
import { firstMissing, needCommand, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until } from './support/wait.js';

const criu = locateCriu();
const missing = firstMissing(
  needRoot,
  () => (criu ? undefined : 'no CRIU ≥ 4.1 (run: bash scripts/install-criu.sh)'),
  () => needCommand('cc', 'apt-get install -y gcc'),
);
const test = suiteRequiring('fork-loop checkpoints (real CRIU)', missing);

const NODE = 'forknode';
const { work, h, ckpt, ps, history, cleanup } = jobHarness('ckpt-forkloop', NODE);
test.after(() => cleanup());

const running = (rows: PsRow[]) => rows.filter((r) => r.state === 'running');
const start = (job: string, command: string[]) => {
  const r = ckpt(['run', '--detach', '--job', job, '--', ...command]);
  assert.is(r.code, 0, r.err);
};

test('ten checkpoints in a row of a shell fork loop all commit', async () => {
  start('loop', ['sh', '-c', 'while :; do /bin/true; done & for i in 1 2 3; do sleep 100000 & done; wait']);
  await until('the loop and its sleepers', () => running(ps('loop')).filter((r) => r.comm === 'sleep').length === 3, 30_000, 100);
  const outcomes: string[] = [];
  for (let i = 1; i <= 10; i++) {
    const r = ckpt(['checkpoint', 'loop', '--wait', '--json']);
    const report = JSON.parse(r.out) as { version: number; outcome: string; reason: string | null };
    outcomes.push(`v${report.version} ${report.outcome}${report.reason ? `: ${report.reason}` : ''}`);
  }
  assert.equal(
    outcomes.filter((o) => !o.endsWith('committed')),
    [],
    outcomes.join('\n'),
  );
  assert.is(running(ps('loop')).filter((r) => r.comm === 'sleep').length, 3, 'the job runs on');
});

/** A parent that vforks a child which never execs: the parent waits in the kernel for good. */
const VFORKER_C = `#include <unistd.h>
int main(void) {
  if (vfork() == 0) for (;;) pause();
  return 0;
}
`;

test('a vfork parent whose child never execs fails the freeze within the budget, class timeout, named, the unit thawed', async () => {
  writeFileSync(join(work, 'vforker.c'), VFORKER_C);
  const bin = join(work, 'vforker');
  const cc = spawnSync('cc', ['-O2', '-o', bin, join(work, 'vforker.c')], { encoding: 'utf8' });
  assert.is(cc.status, 0, cc.stderr);
  start('vf', [bin]);
  const rows = await until(
    'the vforker and its child',
    () => {
      const r = running(ps('vf')).filter((m) => m.comm === 'vforker');
      return r.length === 2 && r;
    },
    30_000,
    100,
  );
  const parent = rows.find((r) => rows.some((c) => c.ppid === r.pid))!;

  // Through the log, with a short budget of the request's own (the default is 3 s).
  const store = openEventStore(`sqlite:${join(h.home, 'events.db')}`);
  try {
    await store.append('job-vf', [{ type: 'CheckpointRequested', data: { request: 'r-vfork', stop: false, timeoutMs: 60_000, freezeBudgetMs: 1000 } }]);
  } finally {
    await store.close();
  }
  const failed = await until('the freeze to fail', () => history('vf').find((e) => e.type === 'UnitFreezeFailed'), 30_000, 100);
  const reason = String(failed.data.reason);
  assert.match(reason, 'freeze budget of 1000 ms');
  assert.match(reason, `${parent.pid} vforker (state D, waiting for its vfork child to exec)`);
  await until('the checkpoint to be aborted', () => history('vf').some((e) => e.type === 'CheckpointAborted'), 30_000, 100);

  // The failure itself, from the freezer: class timeout, the same task named, the unit thawed.
  const cgroups = history('vf').find((e) => e.type === 'UnitCgroupsCreated')!.data.cgroups as UnitCgroup[];
  assert.is(unitFreezeState(cgroups), 'thawed');
  try {
    await freezeForDump(cgroups, 1000);
    await thawUnit(cgroups);
    assert.unreachable('the freeze should have failed');
  } catch (error) {
    assert.instance(error, FreezeTimeoutError);
    const e = error as FreezeTimeoutError;
    assert.is(e.failure.class, 'timeout');
    // Named always; alone once the rest of the unit froze (on a loaded machine, maybe not within the budget).
    assert.ok(
      e.tasks.some((t) => t.pid === parent.pid && t.state === 'D'),
      JSON.stringify(e.tasks),
    );
    assert.ok(e.failure.hint?.includes('vfork'), e.failure.hint);
  }
  assert.is(unitFreezeState(cgroups), 'thawed');
});

test.run();
