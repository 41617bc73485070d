import type { ProposedEvent } from '../../domain/event-store.js';

/** A catalogue event whose `deadline` field carries a test marker. */
export const marker = (text: string): ProposedEvent => ({
  type: 'DeadlineScheduled',
  data: { deadline: text, at: '2026-01-01T00:00:00.000Z', purpose: 'contract-test' },
});

export const markerOf = (e: { data: unknown }): string => (e.data as { deadline: string }).deadline;

export const forked = (pid: number, parent = 1): ProposedEvent => ({
  type: 'ProcessForked',
  data: { node: 'n1', unit: 'u1', parent: { pid: parent, startTime: 100 }, child: { pid, startTime: 200 + pid } },
});
