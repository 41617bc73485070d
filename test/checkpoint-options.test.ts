// Checkpoint options (established TCP, file locks) in the job's coordinator, given histories: the
// job's and the request's options are fixed by the plan, a restart carries the version's, a node
// whose probe says it lacks one is refused at the plan, and old histories re-derive unchanged.
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
  await w.said(request({ tcpEstablished: true }));
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
  await w.said(request({ tcpEstablished: true }));
  assert.equal((await w.last('CheckpointPlanned'))!.data.options, { tcpEstablished: true, fileLocks: true });
});

test('a node whose probe says it lacks what the options need: refused at the plan with the reason; unknown is not refused', async () => {
  for (const [capabilities, options, reason] of [
    [{ tcpEstablished: false, networkLock: 'nftables' }, { tcpEstablished: true }, /cannot checkpoint established TCP connections .*install CRIU ≥ 4\.2/],
    [{ tcpEstablished: true, networkLock: null }, { tcpEstablished: true }, /no way to lock the network/],
    [{ fileLocks: false }, { fileLocks: true }, /cannot checkpoint file locks/],
  ] as const) {
    const w = await world(['n1'], [probed(capabilities)]);
    await w.said(request(options));
    const rejected = (await w.last('RequestRejected'))!;
    assert.is(rejected.data.code, 'unsupported');
    assert.match(rejected.data.reason, reason);
    assert.not.ok(await w.last('CheckpointPlanned'));
  }
  const w = await world(['n1'], [probed({ tcpEstablished: false })]);
  await w.said(request());
  assert.ok(await w.last('CheckpointPlanned'), 'without the option the capability does not matter');
});

test.run();
