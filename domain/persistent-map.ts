// An immutable string-keyed map with structural sharing (a fixed-depth hash trie), so a pure
// fold can add the 20,000th process of a fork storm without copying the other 19,999:
// `set` copies one path of three 32-slot arrays and a small leaf.
const BITS = 5;
const WIDTH = 1 << BITS;
const DEPTH = 3; // 32,768 leaves: short collision lists up to ~100k members

type Leaf<V> = readonly (readonly [string, V])[];
type Branch<V> = readonly (Branch<V> | Leaf<V> | undefined)[];

export interface PersistentMap<V> {
  readonly size: number;
  readonly root: Branch<V>;
}

const hash = (key: string): number => {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0;
};

export const emptyMap = <V>(): PersistentMap<V> => ({ size: 0, root: [] });

export const getIn = <V>(map: PersistentMap<V>, key: string): V | undefined => {
  const h = hash(key);
  let node: Branch<V> | Leaf<V> | undefined = map.root;
  for (let level = 0; level < DEPTH && node; level++) node = (node as Branch<V>)[(h >>> (level * BITS)) & (WIDTH - 1)];
  return (node as Leaf<V> | undefined)?.find(([k]) => k === key)?.[1];
};

export const setIn = <V>(map: PersistentMap<V>, key: string, value: V): PersistentMap<V> => {
  const h = hash(key);
  let added = false;
  const update = (node: Branch<V> | Leaf<V> | undefined, level: number): Branch<V> | Leaf<V> => {
    if (level === DEPTH) {
      const leaf = (node as Leaf<V> | undefined) ?? [];
      const at = leaf.findIndex(([k]) => k === key);
      if (at < 0) {
        added = true;
        return [...leaf, [key, value]];
      }
      const copy = leaf.slice();
      copy[at] = [key, value];
      return copy;
    }
    const slot = (h >>> (level * BITS)) & (WIDTH - 1);
    const branch = (node as Branch<V> | undefined) ?? [];
    const copy = branch.slice();
    copy[slot] = update(branch[slot], level + 1);
    return copy;
  };
  const root = update(map.root, 0) as Branch<V>;
  return { size: map.size + (added ? 1 : 0), root };
};

/** Values in no particular order (callers sort what they show). */
export function* valuesOf<V>(map: PersistentMap<V>): Generator<V> {
  const walk = function* (node: Branch<V> | Leaf<V> | undefined, level: number): Generator<V> {
    if (!node) return;
    if (level === DEPTH) {
      for (const [, v] of node as Leaf<V>) yield v;
      return;
    }
    for (const child of node as Branch<V>) yield* walk(child, level + 1);
  };
  yield* walk(map.root, 0);
}

/**
 * A map built at once from entries (a snapshot being loaded): the same trie `setIn` would give,
 * built in place instead of one copied path per entry. Later entries replace earlier ones.
 */
export const mapOf = <V>(entries: Iterable<readonly [string, V]>): PersistentMap<V> => {
  const root: unknown[] = [];
  let size = 0;
  for (const [key, value] of entries) {
    const h = hash(key);
    let node = root;
    for (let level = 0; level < DEPTH - 1; level++) node = (node[(h >>> (level * BITS)) & (WIDTH - 1)] ??= []) as unknown[];
    const leaf = (node[(h >>> ((DEPTH - 1) * BITS)) & (WIDTH - 1)] ??= []) as Array<readonly [string, V]>;
    const at = leaf.findIndex(([k]) => k === key);
    if (at < 0) leaf.push([key, value]), size++;
    else leaf[at] = [key, value];
  }
  return { size, root: root as Branch<V> };
};

/** Entries in the order `valuesOf` gives them: `mapOf(entriesOf(m))` rebuilds the same trie. */
export function* keysOf<V>(map: PersistentMap<V>): Generator<string> {
  for (const [key] of entriesOf(map)) yield key;
}

export function* entriesOf<V>(map: PersistentMap<V>): Generator<readonly [string, V]> {
  const walk = function* (node: Branch<V> | Leaf<V> | undefined, level: number): Generator<readonly [string, V]> {
    if (!node) return;
    if (level === DEPTH) return yield* node as Leaf<V>;
    for (const child of node as Branch<V>) yield* walk(child, level + 1);
  };
  yield* walk(map.root, 0);
}

/** The map without a key (the same map when the key is absent). */
export const removeIn = <V>(map: PersistentMap<V>, key: string): PersistentMap<V> => {
  if (getIn(map, key) === undefined) return map;
  const h = hash(key);
  const update = (node: Branch<V> | Leaf<V>, level: number): Branch<V> | Leaf<V> => {
    if (level === DEPTH) return (node as Leaf<V>).filter(([k]) => k !== key);
    const slot = (h >>> (level * BITS)) & (WIDTH - 1);
    const copy = (node as Branch<V>).slice();
    copy[slot] = update((node as Branch<V>)[slot]!, level + 1);
    return copy;
  };
  return { size: map.size - 1, root: update(map.root, 0) as Branch<V> };
};
