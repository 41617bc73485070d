// The node agent's request gateway: the one way clients (the CLI, as root or as any user) record
// requests. A root-owned unix socket that anyone may connect to; who connected is the kernel's
// answer (SO_PEERCRED), never the client's. Newline-delimited JSON, one request per line, answered
// in order on the same connection:
//   {id, op: 'append', stream, events, expectedRevision?}  → {revision, position}
//   {id, op: 'read', stream, from?, limit?, direction?}    → events
//   {id, op: 'revision', stream} · {id, op: 'head'}         → a number (or null)
//   {id, op: 'readAll', from?, limit?}                     → the events the caller may read
//   {id, op: 'subscribe', stream?, from?}                  → {id, event} lines, {id, caughtUp: true}, until the client closes
//   {id, op: 'prune', job, keep, timeoutMs?}               → {pruned: [{version, bytes, nodes}], kept, waiting, failed, timedOut?}
//   {id, op: 'model', model, key, all?}                    → {state, position, folded, notes}: a read model
//                                                            (projections/models.ts) as the caller may see it
//   {id, op: 'leases'}                                     → the nodes' liveness leases (null: the store keeps none)
// Answers: {id, ok: true, result} or {id, ok: false, error: {name, message, …}}.
// The rules: the actor of every request is the caller; a job belongs to who submitted it and only
// its owner or root may act on it or read it (node streams are readable by all); a unit's root is
// moved into the unit's cgroups by the agent, after it checked that the process is the caller's;
// refusals that concern a job are recorded there (RequestRejected).
import { randomUUID } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { type EventStore, type ExpectedRevision, type ProposedEvent, type RecordedEvent, WrongExpectedRevisionError } from '../../domain/event-store.js';
import { decodeEvent, InvalidEventError } from '../../domain/events/decode.js';
import type { JobOwner, UnitCgroup } from '../../domain/events/job.js';
import { type Actor, jobOfStream, jobStream, type NodeId, newUnitNameProblem } from '../../domain/identity.js';
import { either as E } from '../../domain/io-ts.js';
import type { JobMembership } from '../../domain/membership.js';
import { emptyMap, mapOf, valuesOf } from '../../domain/persistent-map.js';
import { evolvePruneProgress, pruneProgress, pruneSettled } from '../../domain/prune.js';
import { authorizeActor, reject } from '../../domain/requests.js';
import { concatMap, from as fromPromise, Observable, type Subscription } from '../../domain/rx.js';
import { type JobRow, jobInfo, jobsModel, readAllJobs, readJobs, UNKNOWN_ROWS, withoutProcesses } from '../../projections/jobs.js';
import { readModels } from '../../projections/models.js';
import { readModel } from '../../projections/read-model.js';
import { addProcess } from '../cgroups/unit-cgroups.js';
import { awaitFold } from '../store/await-fold.js';
import { primaryCgroup, readCgroups, readStat } from '../tracking/procfs.js';
import { rootProblem } from './launch-claim.js';
import { type Caller, peerCredentials } from './peer-credentials.js';

export interface RequestGatewayOptions {
  readonly store: EventStore;
  readonly node: NodeId;
  /** The socket to listen on; the caller holds the node's agent lock for this store. */
  readonly socket: string;
  /** The unit's cgroups as this agent derives them (never the paths the log names); throws on foreign ones. */
  readonly ownCgroups: (job: string, unit: string, recorded: readonly UnitCgroup[]) => UnitCgroup[];
  readonly log?: (line: string) => void;
}

/** A refusal: its message says what was refused and why; `code` as in RequestRejected. */
export class RequestRefused extends Error {
  override readonly name = 'RequestRefused';
  constructor(
    readonly code: 'unauthorized' | 'invalid' | 'not-found',
    message: string,
  ) {
    super(message);
  }
}

/** What a client may append, one batch at a time; everything else is the agents' to record. */
const CLIENT_REQUESTS = ['JobSubmitted', 'UnitAssigned', 'UnitLaunched', 'UnitLaunchFailed', 'CheckpointRequested', 'RestartRequested', 'ImagesVerifyRequested'];
const MAX_LINE = 16 << 20;
const CAUGHT_UP = Symbol('caught up');

export class RequestGateway {
  readonly #o: RequestGatewayOptions;
  readonly #connections = new Set<Socket>();
  /** Job owners' uids, once known (a job's owner never changes). */
  readonly #owners = new Map<string, number>();
  /** Who made each request of a job stream (see #requester). */
  readonly #requests = new Map<string, { next: number; by: Map<string, number> }>();
  /** Launches are verified and moved one at a time: two claims on one unit cannot both pass. */
  #launching: Promise<unknown> = Promise.resolve();
  #server: Server | undefined;

  constructor(options: RequestGatewayOptions) {
    this.#o = options;
  }

  /** Listens on the socket (a stale one is replaced: the caller is the only agent for it). */
  async open(): Promise<void> {
    const { socket } = this.#o;
    mkdirSync(dirname(socket), { recursive: true, mode: 0o755 });
    // Others must not be able to swap the socket: the directory is the agent's (root's) own, not a link.
    const dir = lstatSync(dirname(socket));
    if (!dir.isDirectory() || dir.uid !== process.getuid?.() || (dir.mode & 0o022) !== 0) {
      throw new Error(`${dirname(socket)} must be a directory owned by root and writable only by it (chown root: it; chmod 755 it)`);
    }
    chmodSync(dirname(socket), 0o755); // whatever the umask: everyone must reach the socket
    rmSync(socket, { force: true });
    const server = createServer((connection) => this.#serve(connection));
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(socket, () => resolve()));
    // Anyone may connect: who they are comes from the kernel, what they may do from the log.
    chmodSync(socket, 0o666);
    this.#server = server;
  }

  async close(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (!server) return;
    for (const c of this.#connections) c.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(this.#o.socket, { force: true });
  }

  #serve(connection: Socket) {
    this.#connections.add(connection);
    const subscriptions: Subscription[] = [];
    connection.once('close', () => {
      this.#connections.delete(connection);
      for (const s of subscriptions) s.unsubscribe();
    });
    connection.on('error', () => connection.destroy());
    const send = (message: unknown) => connection.writable && connection.write(JSON.stringify(message) + '\n');
    let queue: Promise<unknown> = peerCredentials(connection).catch((error: Error) => {
      this.#o.log?.(`request gateway: ${error.message}; connection closed`);
      connection.destroy();
      throw error;
    });
    const caller = queue as Promise<Caller>;
    caller.catch(() => undefined); // logged above; requests queued behind it are dropped
    let buffered = '';
    connection.setEncoding('utf8');
    connection.on('data', (chunk: string) => {
      buffered += chunk;
      if (buffered.length > MAX_LINE) {
        send({ id: null, ok: false, error: { name: 'RequestRefused', message: `a request line is longer than ${MAX_LINE} bytes` } });
        connection.destroy();
        return;
      }
      for (let newline = buffered.indexOf('\n'); newline !== -1; newline = buffered.indexOf('\n')) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (line.trim() === '') continue;
        queue = queue.then(
          async () => {
            let request: Record<string, unknown>;
            try {
              request = JSON.parse(line);
            } catch {
              return send({ id: null, ok: false, error: { name: 'RequestRefused', message: 'a request line is not JSON' } });
            }
            const id = request.id ?? null;
            try {
              const who = await caller;
              if (request.op === 'subscribe') return subscriptions.push(this.#subscribe(who, request, id, send));
              send({ id, ok: true, result: await this.#handle(who, request) });
            } catch (error) {
              send({ id, ok: false, error: errorJson(error as Error) });
            }
          },
          () => undefined,
        );
      }
    });
  }

  #handle(caller: Caller, r: Record<string, unknown>): Promise<unknown> {
    const { store } = this.#o;
    switch (r.op) {
      case 'append':
        return this.#append(caller, streamOf(r), r.events, expectedRevisionOf(r.expectedRevision));
      case 'read':
        return this.#readStream(caller, streamOf(r), { ...numbers(r, 'from', 'limit'), ...(r.direction === 'backwards' && { direction: 'backwards' as const }) });
      case 'revision':
        // How far a stream is (a job exists) is no secret; what is in it is.
        return store.streamRevision(streamOf(r)).then((rev) => rev ?? null);
      case 'head':
        return store.headPosition();
      case 'readAll':
        return this.#readAll(caller, numbers(r, 'from', 'limit'));
      case 'prune':
        return this.#prune(caller, r.job, r.keep, r.timeoutMs);
      case 'model':
        return this.#model(caller, r.model, r.key, r.all === true);
      case 'leases':
        // Readable by all, like the node streams they stand beside; renewed only by the agents themselves.
        return store.leases ? store.leases.list() : Promise.resolve(null);
      default:
        throw new RequestRefused('invalid', `unknown request "${String(r.op)}": use append, read, revision, head, readAll, subscribe, prune, model or leases`);
    }
  }

  #subscribe(caller: Caller, r: Record<string, unknown>, id: unknown, send: (m: unknown) => void): Subscription {
    const { store } = this.#o;
    const from = numbers(r, 'from').from;
    const stream = r.stream === undefined || r.stream === null ? undefined : streamOf(r);
    // The caught-up mark travels with the events, so it cannot overtake one still being checked.
    const marked = new Observable<RecordedEvent | typeof CAUGHT_UP>((subscriber) => {
      const onCaughtUp = () => subscriber.next(CAUGHT_UP);
      return (stream === undefined ? store.subscribeAll({ from, onCaughtUp }) : store.subscribeStream(stream, { from, onCaughtUp })).subscribe(subscriber);
    });
    // In log order: each event waits for the owner lookup of the one before.
    return marked.pipe(concatMap((e) => fromPromise(e === CAUGHT_UP ? Promise.resolve(e) : this.#visible(caller, e).then((ok) => (ok ? e : undefined))))).subscribe({
      next: (e) => e !== undefined && send(e === CAUGHT_UP ? { id, caughtUp: true } : { id, event: e }),
      error: (error: Error) => send({ id, ok: false, error: errorJson(error) }),
    });
  }

  /**
   * A read model as the caller may see it, folded here with the snapshots (which the agent may
   * write). A snapshot never shows more than the log would: the jobs list holds only the caller's
   * own jobs (all for root), and a job model of a job the caller may not read is folded, without
   * snapshots, from the events of it they may see (their own requests and the refusals of them).
   */
  async #model(caller: Caller, name: unknown, key: unknown, all: boolean) {
    const model = typeof name === 'string' && Object.hasOwn(readModels, name) ? readModels[name]! : undefined;
    if (!model) throw new RequestRefused('invalid', `model: unknown read model ${JSON.stringify(name)} (one of ${Object.keys(readModels).join(', ')})`);
    const { store } = this.#o;
    if (model === jobsModel) return this.#jobs(caller, all);
    if (!model.stream) {
      // The nodes list: node streams are readable by all.
      const read = await readModel(store, model, '');
      return { ...read, state: model.encode(read.state) };
    }
    const stream = typeof key === 'string' ? model.stream(key) : undefined;
    if (typeof key !== 'string' || jobOfStream(stream!) !== key) throw new RequestRefused('invalid', `model: key must be a job name, got ${JSON.stringify(key)}`);
    if (await this.#mayRead(caller, stream!)) {
      const read = await readModel(store, model, key);
      return { ...read, state: model.encode(read.state) };
    }
    const visible = await this.#readStream(caller, stream!, {});
    const state = visible.reduce(model.evolve, model.initial(key));
    return {
      state: model.encode(state),
      position: visible.at(-1)?.revision ?? -1,
      folded: visible.length,
      notes: [`${model.name}/${key}: folded from the ${visible.length} event(s) of it you may see (not your job)`],
    };
  }

  /**
   * The jobs list as the caller may see it: their own jobs (all for root), without each job's
   * process keys (the counts travel; the caller folds nothing further). How many ended jobs the
   * list leaves out is said only to root: the rows are everyone's.
   */
  async #jobs(caller: Caller, all: boolean) {
    const mine = (owner: JobRow['owner']) => caller.uid === 0 || owner?.uid === caller.uid;
    const rows = (jobs: Iterable<JobRow>) => mapOf([...jobs].filter((r) => mine(r.owner)).map((r) => [r.job, r] as const));
    const { store } = this.#o;
    if (all) {
      const read = await readAllJobs(store);
      return { ...read, state: jobsModel.encode({ active: emptyMap(), ended: rows(read.state), rows: 0, stale: 0, chunks: 0, recent: [] }) };
    }
    const read = await readJobs(store);
    const l = read.state;
    const active = mapOf([...valuesOf(l.active)].filter((a) => mine(a.job.owner)).map((a) => [a.job.job, withoutProcesses(a)] as const));
    const list = { active, ended: rows(valuesOf(l.ended)), rows: caller.uid === 0 ? l.rows : UNKNOWN_ROWS, stale: l.stale, chunks: 0, recent: l.recent.filter((r) => mine(r.owner)) };
    return { ...read, state: jobsModel.encode(list) };
  }

  /** A page of the caller's events: full (limit) unless the log ends, so paging readers stop right. */
  async #readAll(caller: Caller, options: { from?: number; limit?: number }): Promise<RecordedEvent[]> {
    const limit = options.limit ?? Infinity;
    const size = Math.min(limit, 1000);
    const readable: RecordedEvent[] = [];
    for (let from = options.from ?? 1; readable.length < limit; ) {
      const page = await this.#o.store.readAll({ from, limit: size });
      for (const e of page) if (readable.length < limit && (await this.#visible(caller, e))) readable.push(e);
      if (page.length < size) break;
      from = page[page.length - 1]!.position + 1;
    }
    return readable;
  }

  /** A page of one stream as the caller may see it: full (limit) unless the stream ends. */
  async #readStream(caller: Caller, stream: string, options: { from?: number; limit?: number; direction?: 'backwards' }): Promise<RecordedEvent[]> {
    if (await this.#mayRead(caller, stream)) return this.#o.store.readStream(stream, options);
    const limit = options.limit ?? Infinity;
    const size = Math.min(limit, 1000);
    const visible: RecordedEvent[] = [];
    for (let from = options.from; visible.length < limit; ) {
      const page = await this.#o.store.readStream(stream, { ...options, ...(from !== undefined && { from }), limit: size });
      for (const e of page) if (visible.length < limit && (await this.#visible(caller, e))) visible.push(e);
      if (page.length < size) break;
      from = page[page.length - 1]!.revision + (options.direction === 'backwards' ? -1 : 1);
      if (from < 0) break;
    }
    return visible;
  }

  /** Root reads everything, anyone node streams; a job stream only its owner. */
  async #mayRead(caller: Caller, stream: string): Promise<boolean> {
    if (caller.uid === 0 || stream.startsWith('node-')) return true;
    const job = stream.startsWith('job-') ? stream.slice(4) : undefined;
    const owner = job === undefined ? 0 : await this.#owner(job);
    return owner === undefined || owner === caller.uid;
  }

  /**
   * Whether the caller may see an event: all of a stream they may read; in someone else's job,
   * their own requests and the refusals of those (so they learn why, and nothing else).
   */
  async #visible(caller: Caller, e: RecordedEvent): Promise<boolean> {
    if (await this.#mayRead(caller, e.stream)) return true;
    const actor = e.metadata.actor;
    if (actor.kind === 'user' && actor.uid === caller.uid) return true;
    return e.type === 'RequestRejected' && (await this.#requester(e.stream, e.data.request)) === caller.uid;
  }

  /** Who made a request of a job stream (uid), from the stream; scanned on from where the last scan ended. */
  async #requester(stream: string, request: string): Promise<number | undefined> {
    const known = this.#requests.get(stream) ?? { next: 0, by: new Map<string, number>() };
    this.#requests.set(stream, known);
    while (!known.by.has(request)) {
      const page = await this.#o.store.readStream(stream, { from: known.next, limit: 1000 });
      for (const e of page) {
        const id = (e.data as { request?: unknown }).request;
        if (e.type.endsWith('Requested') && typeof id === 'string' && e.metadata.actor.kind === 'user') known.by.set(id, e.metadata.actor.uid);
      }
      if (page.length > 0) known.next = page[page.length - 1]!.revision + 1;
      if (page.length < 1000) break;
    }
    return known.by.get(request);
  }

  async #owner(job: string): Promise<number | undefined> {
    const known = this.#owners.get(job);
    if (known !== undefined) return known;
    const [first] = await this.#o.store.readStream(jobStream(job), { limit: 1 });
    const owner = first?.type === 'JobSubmitted' ? first.data.owner.uid : first ? 0 : undefined;
    if (owner !== undefined) this.#owners.set(job, owner);
    return owner;
  }

  async #append(caller: Caller, stream: string, events: unknown, expectedRevision: ExpectedRevision | undefined) {
    const job = typeof stream === 'string' ? jobOfStream(stream) : undefined;
    if (!job) throw new RequestRefused('invalid', `requests go to job streams (job-NAME, NAME a valid job name), not to ${JSON.stringify(stream)}`);
    if (!Array.isArray(events) || events.length === 0) throw new RequestRefused('invalid', 'an append needs a non-empty list of events');
    const types = events.map((e: { type?: unknown }) => String(e?.type));
    const other = types.find((t) => !CLIENT_REQUESTS.includes(t));
    if (other) throw new RequestRefused('invalid', `${other} is not a request a client may make (only ${CLIENT_REQUESTS.join(', ')}); the node agents record everything else`);
    const actor = actorOf(caller);
    const proposed = (events as ProposedEvent[]).map((e, index) => {
      const decoded = decodeEvent(e.type, e.data);
      if (E.isLeft(decoded)) throw new InvalidEventError(`${decoded.left.eventType} (event ${index + 1} of ${events.length})`, decoded.left.problems);
      return asRequest(e, actor);
    });
    for (const e of proposed) {
      const problem = e.type === 'UnitAssigned' ? newUnitNameProblem(e.data.unit) : undefined;
      if (problem) throw new RequestRefused('invalid', problem);
    }
    if (types[0] === 'JobSubmitted') {
      if (types.join() !== 'JobSubmitted,UnitAssigned') throw new RequestRefused('invalid', 'a job is submitted as JobSubmitted followed by its first UnitAssigned');
      const submitted = proposed[0] as ProposedEvent & { data: { job: unknown; owner: JobOwner } };
      if (submitted.data?.job !== job) throw new RequestRefused('invalid', `JobSubmitted names job ${JSON.stringify(submitted.data?.job)} but goes to ${stream}`);
      // The owner is who asked, as the kernel says; what the client wrote there is ignored.
      const owner: JobOwner = { uid: caller.uid, gid: caller.gid, groups: [...caller.groups], ...(caller.user && { user: caller.user }) };
      proposed[0] = { ...submitted, data: { ...submitted.data, owner } } as ProposedEvent;
      return this.#o.store.append(stream, proposed, { expectedRevision: 'no_stream' });
    }
    if (proposed.length !== 1) throw new RequestRefused('invalid', `one request per append (got ${types.join(', ')})`);
    const [request] = proposed as [ProposedEvent];
    const info = await jobInfo(this.#o.store, job);
    if (!info) throw new RequestRefused('not-found', `unknown job "${job}" (ckpt jobs lists them)`);
    switch (request.type) {
      case 'CheckpointRequested':
      case 'RestartRequested':
        // Authorized by the coordinator from the recorded actor: its refusal is a recorded
        // decision that `ckpt verify` re-derives.
        return this.#o.store.append(stream, [request], expectedRevision === undefined ? {} : { expectedRevision });
      case 'UnitAssigned':
        await this.#authorize(info, actor, `add a unit to`, request);
        return this.#o.store.append(stream, [request], { expectedRevision: 'stream_exists' });
      case 'UnitLaunchFailed':
        await this.#authorize(info, actor, 'launch a unit of', request);
        return this.#o.store.append(stream, [request]);
      case 'ImagesVerifyRequested':
        // Read-only, but what another node's images hold is the owner's business.
        await this.#authorize(info, actor, 'verify the images of', request, 'audit');
        return this.#o.store.append(stream, [request]);
      case 'UnitLaunched': {
        await this.#authorize(info, actor, 'launch a unit of', request);
        const launch = this.#launching.then(() => this.#launch(caller, info, request as ProposedEvent & { type: 'UnitLaunched' }));
        this.#launching = launch.catch(() => undefined);
        return launch;
      }
      default:
        throw new RequestRefused('invalid', `${request.type} cannot be appended to an existing job`);
    }
  }

  /** Refuses (and records the refusal in the job) unless the actor owns the job or is root. */
  async #authorize(job: JobMembership, actor: Actor, what: string, request: ProposedEvent, command: 'run' | 'audit' = 'run') {
    const refused = authorizeActor(job, actor, what);
    if (refused) await this.#refuse(job.job, actor, request.metadata?.correlationId, command, 'unauthorized', refused);
  }

  async #refuse(job: string, actor: Actor, correlationId: string | undefined, command: 'run' | 'audit', code: RequestRefused['code'], reason: string): Promise<never> {
    const id = correlationId ?? randomUUID();
    const [rejected] = reject(id, command, code, reason);
    await this.#o.store.append(jobStream(job), [{ ...rejected!, metadata: { actor, correlationId: id } }]);
    throw new RequestRefused(code, reason);
  }

  /**
   * A unit's root, as the caller claims it: the agent checks it is the caller's own fresh process,
   * moves it into the unit's cgroups itself and records UnitLaunched from what it reads.
   */
  async #launch(caller: Caller, job: JobMembership, request: ProposedEvent & { type: 'UnitLaunched' }) {
    const actor = actorOf(caller);
    const { unit: name, root } = request.data;
    const unit = job.units[name];
    const refuse = (reason: string) => this.#refuse(job.job, actor, request.metadata?.correlationId, 'run', 'invalid', reason);
    if (!unit) return refuse(`job ${job.job} has no unit ${name} to launch`);
    if (unit.phase !== 'assigned' || unit.cgroups.length === 0) {
      return refuse(`unit ${name} of job ${job.job} is ${unit.phase}${unit.cgroups.length === 0 ? ' without cgroups' : ''}: only an assigned unit whose cgroups exist can be launched`);
    }
    const problem = rootProblem(caller, root);
    if (problem) return refuse(`the process claimed as the root of unit ${name} of job ${job.job} ${problem}`);
    try {
      addProcess(this.#o.ownCgroups(job.job, name, unit.cgroups), root.pid);
    } catch (error) {
      return refuse(`could not move the root into the unit’s cgroups: ${(error as Error).message}`);
    }
    const stat = readStat(root.pid);
    const groups = readCgroups(root.pid);
    if (!stat || stat.startTime !== root.startTime || !groups) return refuse(`the root process ${root.pid} exited before it was launched`);
    return this.#o.store.append(jobStream(job.job), [
      {
        type: 'UnitLaunched',
        data: { unit: name, node: unit.node, root, pgid: stat.pgid, sid: stat.sid, comm: stat.comm, cgroup: primaryCgroup(groups) },
        metadata: { actor, ...(request.metadata?.correlationId && { correlationId: request.metadata.correlationId }) },
      },
    ]);
  }

  /**
   * A prune is the coordinator's decision from the log (PrunePlanned) and each node removes its own
   * part (CheckpointPruned with its node): this records the request as the caller and waits up to
   * timeoutMs for every node's answer. A node that has not answered yet (its agent down) removes its
   * part when its agent runs again; the versions are no longer restorable either way.
   */
  async #prune(caller: Caller, job: unknown, keep: unknown, timeoutMs: unknown) {
    if (typeof job !== 'string' || jobOfStream(jobStream(job)) === undefined) throw new RequestRefused('invalid', `prune: job must be a job name, got ${JSON.stringify(job)}`);
    if (!Number.isSafeInteger(keep) || (keep as number) < 1)
      throw new RequestRefused('invalid', `prune: keep must be an integer ≥ 1 (the newest version is never pruned), got ${JSON.stringify(keep)}`);
    const timeout = timeoutMs ?? DEFAULT_PRUNE_TIMEOUT_MS;
    if (!Number.isSafeInteger(timeout) || (timeout as number) < 1) throw new RequestRefused('invalid', `prune: timeoutMs must be a positive integer, got ${JSON.stringify(timeoutMs)}`);
    const { store } = this.#o;
    if ((await store.streamRevision(jobStream(job))) === undefined) throw new RequestRefused('not-found', `unknown job "${job}" (ckpt jobs lists them)`);
    const request = randomUUID();
    const metadata = { actor: actorOf(caller), correlationId: request };
    const { revision } = await store.append(jobStream(job), [{ type: 'PruneRequested', data: { request, keep: keep as number, timeoutMs: timeout as number }, metadata }]);
    const { state: p, timedOut } = await awaitFold(store, jobStream(job), revision + 1, { initial: pruneProgress(request), evolve: evolvePruneProgress, settled: pruneSettled }, timeout as number);
    if (p.refused !== undefined) throw new RequestRefused('unauthorized', p.refused);
    if (!p.planned) throw new Error(`prune of ${job}: no node agent decided it within ${timeout} ms (is any agent of the store running and caught up? ckpt nodes)`);
    const pruned = p.planned.versions.map((version) => {
      const nodes = p.removed[version] ?? {};
      return { version, bytes: Object.values(nodes).reduce((n, b) => n + b, 0), nodes };
    });
    const waiting = Object.entries(p.waiting)
      .filter(([, nodes]) => nodes.length > 0)
      .map(([version, nodes]) => ({ version: Number(version), nodes }));
    return { pruned, kept: p.planned.kept, waiting, failed: p.failed, ...(timedOut && { timedOut: true }) };
  }
}

/** How long a prune waits for every node's answer unless the caller says. */
export const DEFAULT_PRUNE_TIMEOUT_MS = 30_000;

const actorOf = (c: Caller): Actor => ({ kind: 'user', uid: c.uid, gid: c.gid, ...(c.pid > 0 && { pid: c.pid }), ...(c.user && { user: c.user }) });

/** A client's event as a request: its actor is the caller; only its correlation and causation ids are kept. */
const asRequest = (e: ProposedEvent, actor: Actor): ProposedEvent => {
  const { correlationId, causationId } = (e.metadata ?? {}) as { correlationId?: unknown; causationId?: unknown };
  const ids = { ...(typeof correlationId === 'string' && { correlationId }), ...(typeof causationId === 'string' && { causationId }) };
  return { type: e.type, data: e.data, metadata: { actor, ...ids } } as ProposedEvent;
};

const streamOf = (r: Record<string, unknown>): string => {
  if (typeof r.stream !== 'string') throw new RequestRefused('invalid', `${String(r.op)}: stream must be a stream name`);
  return r.stream;
};

const numbers = (r: Record<string, unknown>, ...names: string[]): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const name of names) {
    const value = r[name];
    if (value === undefined || value === null) continue;
    if (!Number.isSafeInteger(value) || (value as number) < 0) throw new RequestRefused('invalid', `${String(r.op)}: ${name} must be a non-negative integer`);
    out[name] = value as number;
  }
  return out;
};

const expectedRevisionOf = (value: unknown): ExpectedRevision | undefined => {
  if (value === undefined || value === null) return undefined;
  if (value === 'any' || value === 'no_stream' || value === 'stream_exists' || (Number.isSafeInteger(value) && (value as number) >= 0)) return value as ExpectedRevision;
  throw new RequestRefused('invalid', `expectedRevision must be any, no_stream, stream_exists or a revision, got ${JSON.stringify(value)}`);
};

/** Errors the client turns back into the same classes (WrongExpectedRevisionError, InvalidEventError). */
const errorJson = (error: Error) => {
  if (error instanceof WrongExpectedRevisionError) return { name: error.name, message: error.message, stream: error.stream, expected: error.expected, actual: error.actual };
  if (error instanceof InvalidEventError) return { name: error.name, message: error.message, eventType: error.eventType, problems: error.problems };
  if (error instanceof RequestRefused) return { name: error.name, message: error.message, code: error.code };
  return { name: 'Error', message: error.message };
};
