// A coordinator's world for given/when/then tests: a memory store with node probes and a job of
// one unit per node (root, a child, a setsid daemon still in the unit's cgroup), and a loop that
// plays the coordinator — decides after every new event and records the decisions.
import { MemoryEventStore } from '../../adapters/store/memory.js';
import type { Decider } from '../../domain/decider.js';
import type { EventStore, ProposedEvent, RecordedEvent } from '../../domain/event-store.js';

export const p = (pid: number) => ({ pid, startTime: pid * 10 });

export const probe = (node: string, usable = true, freezeCgroup = true): ProposedEvent => ({
  type: 'CheckpointerProbed',
  data: {
    node,
    checkpointer: 'criu',
    version: '4.1.1',
    usable,
    problems: usable ? [] : ['criu check failed: vdso'],
    capabilities: { scopes: freezeCgroup ? ['tree', 'cgroup'] : ['tree'], leaveRunning: true, incremental: false, lazyPages: true, pidNamespace: true, freezeCgroup },
    kernel: '6.18.0',
    cgroups: { v1: ['freezer'], v2: [] },
    softDirty: false,
  },
});

/** A job with one unit per node: root, a child, and a setsid daemon still in the unit's cgroup. */
export const jobOn = (nodes: string[]): ProposedEvent[] => [
  { type: 'JobSubmitted', data: { job: 'j', owner: { uid: 1000 } } },
  ...nodes.flatMap((node, i): ProposedEvent[] => {
    const unit = `u${i}`;
    const base = 100 * (i + 1);
    const on = (pid: number) => ({ node, unit, process: p(pid) });
    return [
      { type: 'UnitAssigned', data: { unit, node, command: ['sim'], cwd: '/', limits: {} } },
      { type: 'UnitLaunched', data: { unit, node, root: p(base), pgid: base, sid: base, comm: 'sim', cgroup: `/ckpt/j/${unit}` } },
      { type: 'UnitTracked', data: { unit, node, root: p(base), stdio: [] } },
      { type: 'ProcessForked', data: { node, unit, parent: p(base), child: p(base + 1) } },
      { type: 'ProcessForked', data: { node, unit, parent: p(base + 1), child: p(base + 2) } },
      { type: 'ProcessSessionChanged', data: { ...on(base + 2), sid: base + 2, pgid: base + 2 } },
    ];
  }),
];

/** Plays the coordinator: decides after every new event and records the decisions. */
const settle = async <S>(coordinator: Decider<S>, store: EventStore, state: { s: S; next: number }) => {
  for (;;) {
    const events = await store.readAll({ from: state.next, limit: 1000 });
    if (events.length === 0) return;
    for (const e of events) {
      state.next = e.position + 1;
      if (!coordinator.concerns(e)) continue;
      state.s = coordinator.evolve(state.s, e);
      const decisions = coordinator.decide(state.s, e);
      if (decisions.length > 0) {
        await store.append(
          'job-j',
          decisions.map((d) => ({ ...d, metadata: { decidedAt: e.position, causationId: e.id, actor: { kind: 'coordinator' } } }) as ProposedEvent),
        );
      }
    }
  }
};

export const worldOf =
  <S>(coordinator: Decider<S>) =>
  async (nodes: string[], probes: ProposedEvent[] = nodes.map((n) => probe(n)), job: ProposedEvent[] = jobOn(nodes)) => {
    const store = new MemoryEventStore();
    for (const [i, pr] of probes.entries()) await store.append(`node-${nodes[i] ?? 'x'}`, [pr]);
    await store.append('job-j', job);
    const state = { s: coordinator.initial, next: 1 };
    const said = async (...events: ProposedEvent[]) => {
      await store.append('job-j', events);
      await settle(coordinator, store, state);
    };
    const types = async () => (await store.readStream('job-j', { limit: 1000 })).map((e) => e.type);
    const last = async (type: string) => (await store.readStream('job-j', { limit: 1000 })).filter((e) => e.type === type).pop() as (RecordedEvent & { data: any }) | undefined; // eslint-disable-line @typescript-eslint/no-explicit-any
    return { store, state, said, types, last };
  };
