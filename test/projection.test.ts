import { from, lastValueFrom } from 'rxjs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { MemoryEventStore } from '../adapters/store/memory.js';
import type { RecordedEvent } from '../domain/event-store.js';
import { type Evolve, project, replay } from '../projections/project.js';
import { forked, marker } from './support/events.js';

const test = suite('projections');

interface Children {
  readonly byParent: Readonly<Record<number, number[]>>;
  readonly markers: number;
}
const evolve: Evolve<Children> = (s, e) => {
  if (e.type === 'ProcessForked') {
    const parent = e.data.parent.pid;
    return { ...s, byParent: { ...s.byParent, [parent]: [...(s.byParent[parent] ?? []), e.data.child.pid] } };
  }
  return e.type === 'DeadlineScheduled' ? { ...s, markers: s.markers + 1 } : s;
};
const initial: Children = { byParent: {}, markers: 0 };

const history = async () => {
  const store = new MemoryEventStore();
  for (let i = 0; i < 30; i++) await store.append(`job-${i % 3}`, [forked(100 + i, 1 + (i % 4)), marker(`m${i}`)]);
  return { store, events: await store.readAll({ limit: 1000 }) };
};

test('a projection equals the plain fold of the same events', async () => {
  const { events } = await history();
  const projected = await lastValueFrom(from(events).pipe(project(evolve, initial)));
  assert.equal(projected, events.reduce(evolve, initial));
  assert.is(projected.markers, 30);
  assert.equal(projected.byParent[1], [100, 104, 108, 112, 116, 120, 124, 128]);
});

test('replaying the log gives the same state as folding it, from any position', async () => {
  const { store, events } = await history();
  const replayed = await replay(store, evolve, initial);
  assert.equal(replayed.state, events.reduce(evolve, initial));
  assert.is(replayed.position, events[events.length - 1]!.position);
  assert.is(replayed.events, 60);
  const tail = await replay(store, evolve, initial, 41);
  assert.equal(tail.state, events.slice(40).reduce(evolve, initial));
  assert.equal((await replay(new MemoryEventStore(), evolve, initial)).state, initial);
});

test('a live projection and a replay of the same history agree', async () => {
  const store = new MemoryEventStore();
  const states: Children[] = [];
  const subscription = store
    .subscribeAll()
    .pipe(project(evolve, initial))
    .subscribe((s) => states.push(s));
  for (let i = 0; i < 10; i++) await store.append('job-live', [forked(200 + i)]);
  await new Promise((r) => setTimeout(r, 10));
  subscription.unsubscribe();
  const events: RecordedEvent[] = await store.readAll();
  assert.equal(states[states.length - 1], (await replay(store, evolve, initial)).state);
  assert.equal(states[states.length - 1], events.reduce(evolve, initial));
});

test.run();
