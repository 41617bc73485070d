// Checkpoint options (established TCP, file locks) in the job's coordinator, given histories: the
// job's and the request's options are fixed by the plan, a restart carries the version's, and old
// histories re-derive unchanged. What a node lacks is judged before the freeze (test/preflight.test.ts).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { rederive } from '../domain/decider.js';
import type { ProposedEvent } from '../domain/event-store.js';
import { jobCoordinator } from '../domain/job-coordinator.js';
import { jobOn, p, probe, worldOf } from './support/coordinator.js';

const test = suite('checkpoint options');
const coordinator = jobCoordinator('j');
const world = worldOf(coordinator);

const request = (extra: object = {}): ProposedEvent => ({ type: 'CheckpointRequested', data: { request: 'c1', stop: false, timeoutMs: 30_000, ...extra } }) as ProposedEvent;
const ck = (type: string, extra: object = {}): ProposedEvent => ({ type, data: { version: 1, unit: 'u0', node: 'n1', ...extra } }) as ProposedEvent;
const withJobOptions = (options: object): ProposedEvent[] => jobOn(['n1']).map((e) => (e.type === 'JobSubmitted' ? { ...e, data: { ...(e.data as object), options } } : e)) as ProposedEvent[];
const probed = (capabilities: object): ProposedEvent => {
  const e = probe('n1');
  const data = e.data as { capabilities: object };
  return { ...e, data: { ...data, capabilities: { ...data.capabilities, ...capabilities } } } as ProposedEvent;
};

test('no option anywhere: the plan records none (as before options existed)', async () => {
  const w = await world(['n1']);
  await w.said(request());
  assert.not.ok('options' in (await w.last('CheckpointPlanned'))!.data);
});

test('the request’s option is fixed by the plan, and the restart of that version carries it', async () => {
  const w = await world(['n1']);
  await w.said(request({ options: { tcpEstablished: true } }));
  assert.equal((await w.last('CheckpointPlanned'))!.data.options, { tcpEstablished: true, fileLocks: false });
  await w.said(ck('UnitFrozen', { processes: 3, durationMs: 1 }));
  await w.said(ck('UnitDumped', { files: 3, bytes: 100, durationMs: 5 }));
  await w.said(ck('UnitVerified', { captured: [100, 101, 102], processes: [p(100), p(101), p(102)] }));
  await w.said({ type: 'CheckpointCommitted', data: { version: 1, files: 3, bytes: 100, durationMs: 1, manifest: 'b'.repeat(64) } });
  await w.said(ck('UnitThawed', { frozenMs: 9 }));
  await w.said({ type: 'RestartRequested', data: { request: 'r1', version: null, placement: [], timeoutMs: 30_000 } });
  assert.equal((await w.last('RestartPlanned'))!.data.options, { tcpEstablished: true, fileLocks: false });
  assert.equal(rederive(coordinator, await w.store.readAll({ limit: 1000 })).differences, []);
});

test('the job’s options (ckpt run) apply to every checkpoint, or-ed with the request’s', async () => {
  const w = await world(['n1'], undefined, withJobOptions({ fileLocks: true }));
  await w.said(request({ options: { tcpEstablished: true } }));
  assert.equal((await w.last('CheckpointPlanned'))!.data.options, { tcpEstablished: true, fileLocks: true });
});

test('a node whose probe says it lacks an option’s capability still plans: the preflight judges what the unit holds then', async () => {
  const w = await world(['n1'], [probed({ tcpEstablished: false, networkLock: null, fileLocks: false })]);
  await w.said(request({ options: { tcpEstablished: true, fileLocks: true } }));
  assert.equal((await w.last('CheckpointPlanned'))!.data.options, { tcpEstablished: true, fileLocks: true });
  assert.ok(await w.last('UnitFreezeRequested'));
});

test.run();
