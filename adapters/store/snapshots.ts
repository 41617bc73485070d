// Read-model snapshots as the stores keep them: beside the events, one row per (model, key),
// each with a SHA-256 over everything it says, so a changed byte is found before it is used.
// (Like the chain, the checksum has no secret: it catches damage and careless edits, not someone
// who rewrites the row and its checksum; the snapshot's event digest still ties it to the log.)
import { createHash } from 'node:crypto';
import { type Snapshot, type SnapshotStore, snapshotList } from '../../domain/event-store.js';

export const snapshotChecksum = (s: Snapshot): string =>
  createHash('sha256')
    .update(JSON.stringify([s.model, s.key, s.version, s.schema, s.position, s.digest]))
    .update('\n')
    .update(s.state)
    .digest('hex');

/** A stored row back as a snapshot, or why it cannot be trusted. */
export const checkedSnapshot = (s: Snapshot, checksum: string): Snapshot | { damaged: string } => (snapshotChecksum(s) === checksum ? s : { damaged: `its content no longer matches its checksum` });

/** The memory store's: kept as the durable stores keep them (text and checksum), for the same checks. */
export class MemorySnapshotStore implements SnapshotStore {
  readonly #rows = new Map<string, { snapshot: Snapshot; checksum: string }>();

  async load(model: string, key: string) {
    const row = this.#rows.get(`${model}\u0000${key}`);
    return row && checkedSnapshot(row.snapshot, row.checksum);
  }

  async save(snapshots: Snapshot | readonly Snapshot[]): Promise<void> {
    const rows = snapshotList(snapshots).map((s) => ({ snapshot: { ...s }, checksum: snapshotChecksum(s) })); // all checked before any is kept
    for (const row of rows) this.#rows.set(`${row.snapshot.model}\u0000${row.snapshot.key}`, row);
  }

  /** Tests: change the stored state without its checksum (a changed byte). */
  tamper(model: string, key: string, change: (state: string) => string): void {
    const row = this.#rows.get(`${model}\u0000${key}`);
    if (row) row.snapshot = { ...row.snapshot, state: change(row.snapshot.state) };
  }
}
