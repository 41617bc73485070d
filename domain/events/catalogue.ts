// The event catalogue: every event ckpt records, by concern. docs/events.md is generated from it.

import { checkpointEvents } from './checkpoint.js';
import { deadlineEvents } from './deadline.js';
import type { EventDefinition, EventOf } from './define.js';
import { imageEvents } from './images.js';
import { jobEvents } from './job.js';
import { nodeEvents } from './node.js';
import { processEvents } from './process.js';
import { requestEvents } from './request.js';
import { restartEvents } from './restart.js';

export const concerns = [
  { title: 'Job and unit lifecycle', events: jobEvents },
  { title: 'Process observations', events: processEvents },
  { title: 'Nodes and checkpointer capabilities', events: nodeEvents },
  { title: 'Checkpoint phases', events: checkpointEvents },
  { title: 'Images on each node: verify and prune', events: imageEvents },
  { title: 'Restart phases', events: restartEvents },
  { title: 'Deadlines', events: deadlineEvents },
  { title: 'Refused requests', events: requestEvents },
] as const;

export const catalogue = [...jobEvents, ...processEvents, ...nodeEvents, ...checkpointEvents, ...imageEvents, ...restartEvents, ...deadlineEvents, ...requestEvents] as const;

export type DomainEvent = EventOf<(typeof catalogue)[number]>;
export type EventType = DomainEvent['type'];
/** The event of one type, e.g. `EventNamed<'ProcessForked'>`. */
export type EventNamed<T extends EventType> = Extract<DomainEvent, { type: T }>;

const byType: ReadonlyMap<string, EventDefinition> = new Map(catalogue.map((d) => [d.type, d]));
export const definitionOf = (type: string): EventDefinition | undefined => byType.get(type);
export const eventTypes: readonly string[] = catalogue.map((d) => d.type);
