// Where a committed version's images are, node by node, and who can check them: this node checks
// its own images root; another node's images are asked of that node's agent through the log
// (ImagesVerifyRequested), unless that node's manifest is the very one checked here (nodes sharing
// an images filesystem write one manifest, recorded once per node). Pure: `ckpt audit --verify` acts on it.
import type { RecordedEvent } from '../domain/event-store.js';

export interface NodePart {
  readonly version: number;
  readonly node: string;
  readonly units: readonly string[];
  /** The SHA-256 of the node's manifest the log recorded at commit (absent: none recorded). */
  readonly manifest?: string;
  /** here: this node's own; shared: the same manifest as this node's; ask: its agent checks; pruned: decided removed. */
  readonly check: 'here' | 'shared' | 'ask' | 'pruned';
}

export interface CommittedVersion {
  readonly version: number;
  readonly units: ReadonlyArray<{ readonly unit: string; readonly node: string }>;
  /** Each node's manifest digest (CheckpointCommitted.nodes), or the one manifest of older histories. */
  readonly manifests?: Readonly<Record<string, string>>;
  readonly manifest?: string;
}

/** Each node's part of each version, and how it is checked from `here`. */
export const nodeParts = (versions: readonly CommittedVersion[], here: string, pruned: ReadonlySet<number>): NodePart[] =>
  versions.flatMap((v) => {
    const nodes = [...new Set(v.units.map((u) => u.node))].sort((a, b) => (a === here ? -1 : b === here ? 1 : a < b ? -1 : 1));
    const manifestOf = (node: string) => v.manifests?.[node] ?? v.manifest;
    const local = nodes.includes(here) ? manifestOf(here) : undefined;
    return nodes.map((node): NodePart => {
      const manifest = manifestOf(node);
      const units = v.units.filter((u) => u.node === node).map((u) => u.unit);
      const check = pruned.has(v.version) ? 'pruned' : node === here ? 'here' : local !== undefined && manifest === local ? 'shared' : 'ask';
      return { version: v.version, node, units, ...(manifest && { manifest }), check };
    });
  });

/** The answers of other nodes' agents to this audit's requests (by request id), folded from the job stream. */
export type NodeAnswers = Readonly<Record<string, { readonly ok: true; readonly files: number; readonly bytes: number } | { readonly ok: false; readonly reason: string }>>;

export const evolveNodeAnswers =
  (asked: ReadonlySet<string>) =>
  (s: NodeAnswers, e: RecordedEvent): NodeAnswers => {
    if (e.type === 'ImagesVerified' && asked.has(e.data.request) && !s[e.data.request]) return { ...s, [e.data.request]: { ok: true, files: e.data.files, bytes: e.data.bytes } };
    if (e.type === 'ImagesVerifyFailed' && asked.has(e.data.request) && !s[e.data.request]) return { ...s, [e.data.request]: { ok: false, reason: e.data.reason } };
    if (e.type === 'RequestRejected' && e.data.command === 'audit' && asked.has(e.data.request)) return { ...s, [e.data.request]: { ok: false, reason: `refused: ${e.data.reason}` } };
    return s;
  };
