// Read models kept as snapshots: a read loads the model's snapshot and folds only what the log
// got since, instead of the whole history. A snapshot is a cache, never a source of truth: it is
// used only while its fold's code version, the catalogue's schema versions and the digest of the
// last event it folded (still in the log at that position) all match; otherwise it is rebuilt from
// the log and saved again. Every read says what it did (`notes`, shown with --verbose).
// Pure apart from the ports it is given (the store and its snapshot table).
import { type EventStore, type RecordedEvent, type Snapshot, SnapshotNotWritableError, type SnapshotStore } from '../domain/event-store.js';
import { catalogue } from '../domain/events/catalogue.js';

export interface ReadModel<S> {
  /** Names the snapshot (with the key). */
  readonly name: string;
  /** Bump whenever the fold or the encoding changes: older snapshots are then rebuilt. */
  readonly version: number;
  /** A per-stream model folds one stream (positions are its revisions); a whole-log model the log. */
  readonly stream?: (key: string) => string;
  readonly initial: (key: string) => S;
  readonly evolve: (state: S, event: RecordedEvent) => S;
  /** To JSON-able values and back (decode may throw on anything it does not recognise). */
  readonly encode: (state: S) => unknown;
  readonly decode: (encoded: unknown, key: string) => S;
  /**
   * A whole-log model that would otherwise grow with the history keeps what rarely changes again
   * (ended jobs) as rows of their own: snapshots of model `rowsOf(model)`, one per key, written with
   * its snapshot in one save. Given the state and the event it is saved at: the rows to write
   * (encoded) and the state the snapshot keeps. Reading rows back is the model's (loadRow, loadRows).
   */
  readonly rows?: (state: S, last: RecordedEvent) => { readonly state: S; readonly rows: ReadonlyArray<readonly [key: string, row: unknown]> };
}

type ModelName = Pick<ReadModel<unknown>, 'name' | 'version'>;

/** The model name a model's rows are saved under. */
export const rowsOf = (model: ModelName): string => `${model.name}.rows`;

export interface ModelRead<S> {
  readonly state: S;
  /** Revision (per-stream; -1: no events) or global position (whole log; 0: none) of the last event folded. */
  readonly position: number;
  /** Events folded by this read (after the snapshot, or all of them). */
  readonly folded: number;
  readonly notes: readonly string[];
  /** This read saved a new snapshot at `position`. */
  readonly saved?: boolean;
}

/** The catalogue's schema versions, as a snapshot records them. */
export const CATALOGUE_SCHEMAS = catalogue.map((d) => `${d.type}@${d.schemaVersion}`).join(',');

/** A read that folded more than this many events saves a new snapshot. */
export const SAVE_AFTER = 1000;
/** A long fold (a model rebuilt from a long log) saves what it has every this many events, so an
 *  interrupted one resumes from there. */
export const SAVE_EVERY = 500_000;
const PAGE = 2000;

export interface ReadOptions {
  /** Save when more than this many events were folded (default SAVE_AFTER). */
  readonly saveAfter?: number;
  /** Save on the way every this many events (default SAVE_EVERY). */
  readonly saveEvery?: number;
  /** Fold from the start, neither loading nor saving a snapshot (what `verify` and `--at` do). */
  readonly ignoreSnapshots?: boolean;
  /** Fold from the start and save: the snapshot cannot be used, for this reason. */
  readonly rebuild?: string;
  /** After each page folded: events folded so far by this read, and the position reached. */
  readonly progress?: (folded: number, position: number) => void;
}

export interface PreparedReadOptions<S> extends ReadOptions {
  /** Before an event is folded: a state to fold it into instead (a model whose state lets go of
   *  what may come back: the agent's settled jobs), or undefined to go on as is. */
  readonly prepare?: (state: S, event: RecordedEvent) => Promise<S> | undefined;
}

/** Stores that refused a write once are not asked again (a reader's role on PostgreSQL). */
const readOnly = new WeakSet<SnapshotStore>();

/** The model's state as of now: from its snapshot when that still holds, else from the log. */
export const readModel = async <S>(store: EventStore, model: ReadModel<S>, key: string, options: PreparedReadOptions<S> = {}): Promise<ModelRead<S>> => {
  if (store.models && !options.ignoreSnapshots) {
    const remote = await store.models.read(model.name, key);
    return { ...remote, state: model.decode(remote.state, key) };
  }
  const what = `snapshot ${model.name}${key ? `/${key}` : ''}`;
  const at = model.stream ? 'revision' : 'position';
  const notes: string[] = [];
  const snapshots = options.ignoreSnapshots ? undefined : store.snapshots;
  const start = { state: model.initial(key), position: model.stream ? -1 : 0 };
  if (options.rebuild) notes.push(`${what} ${options.rebuild}: rebuilt from the log`);
  const loaded = snapshots && !options.rebuild ? await usableSnapshot(snapshots, model, key, (problem) => notes.push(`${what} ${problem}: rebuilt from the log`)) : undefined;
  let discarded = notes.length > 0;
  // Fold from the snapshot's own event on: it must still be there with the digest it had.
  const pages = model.stream ? streamPages(store, model.stream(key)) : allPages(store);
  let from = loaded ?? start;
  let page = await pages(loaded ? loaded.position : start.position + 1);
  let last: RecordedEvent | undefined;
  let skip = 0;
  if (loaded) {
    const e = page[0];
    const there = e !== undefined && (model.stream ? e.revision : e.position) === loaded.position;
    if (there && e.digest === loaded.digest) (last = e), (skip = 1);
    else {
      notes.push(`${what} at ${at} ${loaded.position} no longer matches the log (${there ? 'that event’s digest differs' : 'that event is gone'}): rebuilt from the log`);
      discarded = true;
      from = start;
      page = await pages(start.position + 1);
    }
  }
  let { state, position } = from;
  let folded = 0;
  let savedAt = 0;
  for (;;) {
    const { prepare } = options;
    for (let i = skip; i < page.length; i++) {
      const prepared = prepare?.(state, page[i]!);
      if (prepared) state = await prepared;
      state = model.evolve(state, page[i]!);
    }
    folded += page.length - skip;
    skip = 0;
    last = page[page.length - 1] ?? last;
    if (last) position = model.stream ? last.revision : last.position;
    options.progress?.(folded, position);
    if (page.length < PAGE) break;
    if (snapshots && last && folded - savedAt >= (options.saveEvery ?? SAVE_EVERY)) {
      const on = await saveSplit(snapshots, model, key, state, last);
      if (on.saved) (state = on.kept), (savedAt = folded);
    }
    page = await pages(position + 1);
  }
  if (savedAt > 0) notes.push(`${what} saved on the way, every ${(options.saveEvery ?? SAVE_EVERY).toLocaleString('en-US')} events folded`);
  if (from !== start) notes.push(`${what} at ${at} ${from.position} used: ${folded} event(s) folded after it`);
  else if (!snapshots) notes.push(`snapshots not used: ${folded} event(s) folded from the log`);
  else if (!discarded) notes.push(`${what}: none yet, ${folded} event(s) folded from the log`);
  let saved = false;
  if (snapshots && last && folded > savedAt && (discarded || folded > (options.saveAfter ?? SAVE_AFTER))) {
    const outcome = await saveModel(snapshots, model, key, state, last);
    saved = outcome.startsWith('saved');
    notes.push(`${what} ${outcome}`);
  }
  return { state, position, folded, notes, saved };
};

/** Saves the model's state as folded up to `last` (whose digest pins it to the log); says what came of it. */
export const saveModel = async <S>(snapshots: SnapshotStore, model: ReadModel<S>, key: string, state: S, last: RecordedEvent): Promise<string> =>
  (await saveSplit(snapshots, model, key, state, last)).note;

/** The same, with the state the snapshot kept (without the rows written beside it), to fold on from. */
const saveSplit = async <S>(snapshots: SnapshotStore, model: ReadModel<S>, key: string, state: S, last: RecordedEvent) => {
  const [at, position] = model.stream ? ['revision', last.revision] : ['position', last.position];
  if (last.digest === undefined) return { note: `not saved: the store gives no digest for ${at} ${position}`, saved: false, kept: state };
  const stamp = { version: model.version, schema: CATALOGUE_SCHEMAS, position, digest: last.digest };
  const split = model.rows?.(state, last) ?? { state, rows: [] };
  const rows = split.rows.map(([rowKey, row]) => ({ model: rowsOf(model), key: rowKey, ...stamp, state: JSON.stringify(row) }));
  rows.push({ model: model.name, key, ...stamp, state: JSON.stringify(model.encode(split.state)) });
  const outcome = await save(snapshots, rows, at);
  const saved = outcome.startsWith('saved');
  return { note: rows.length > 1 && saved ? `${outcome} (and ${rows.length - 1} of ${rowsOf(model)})` : outcome, saved, kept: saved ? split.state : state };
};

/**
 * Rows of a model by key, as saved by this code with these schemas, and why any of them cannot be
 * used (missing, a changed byte, another code version, or not the state's: `decode` leaves out
 * rows of another lineage — a rebuilt model does not delete the rows of the one before).
 */
export const loadRows = async <R>(
  snapshots: SnapshotStore,
  model: ModelName,
  keys: readonly string[],
  decode: (row: unknown, key: string) => R | undefined,
): Promise<{ rows: Map<string, R>; problems: string[] }> => {
  const rows = new Map<string, R>();
  const problems: string[] = [];
  for (const key of keys) {
    const s = await snapshots.load(rowsOf(model), key);
    const problem = !s ? 'is missing' : rowProblem(model, s);
    const row = problem ? undefined : decode(JSON.parse((s as Snapshot).state), key);
    if (row !== undefined) rows.set(key, row);
    else problems.push(`${rowsOf(model)}/${key} ${problem ?? 'is of another lineage'}`);
  }
  return { rows, problems };
};

const rowProblem = (model: ModelName, s: Snapshot | { damaged: string }): string | undefined => {
  if ('damaged' in s) return s.damaged;
  if (s.version !== model.version) return `was folded by code version ${s.version} (this ckpt folds with ${model.version})`;
  if (s.schema !== CATALOGUE_SCHEMAS) return 'was folded with other event schema versions';
  return undefined;
};

/** The stored snapshot and its decoded state, if it was folded by this code with these schemas. */
const usableSnapshot = async <S>(snapshots: SnapshotStore, model: ReadModel<S>, key: string, discard: (problem: string) => void) => {
  const s = await snapshots.load(model.name, key).catch((error: Error) => ({ damaged: `cannot be read (${error.message})` }));
  if (!s) return undefined;
  if ('damaged' in s) return void discard(s.damaged);
  if (s.version !== model.version) return void discard(`was folded by code version ${s.version} (this ckpt folds with ${model.version})`);
  if (s.schema !== CATALOGUE_SCHEMAS) return void discard('was folded with other event schema versions');
  try {
    return { state: model.decode(JSON.parse(s.state), key), position: s.position, digest: s.digest };
  } catch (error) {
    return void discard(`does not decode (${(error as Error).message})`);
  }
};

/** Saves unless this store refused before; says what came of it. */
const save = async (snapshots: SnapshotStore, all: Snapshot[], at: string): Promise<string> => {
  if (readOnly.has(snapshots)) return 'not saved: this connection may not write snapshots';
  try {
    await snapshots.save(all);
    return `saved at ${at} ${all.at(-1)!.position}`;
  } catch (error) {
    if (!(error instanceof SnapshotNotWritableError)) throw error;
    readOnly.add(snapshots);
    return `not saved: ${error.message}`;
  }
};

const streamPages = (store: EventStore, stream: string) => (from: number) => store.readStream(stream, { from: Math.max(0, from), limit: PAGE });
const allPages = (store: EventStore) => (from: number) => store.readAll({ from: Math.max(1, from), limit: PAGE });
