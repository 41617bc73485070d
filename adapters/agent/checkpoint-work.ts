// A node agent's part in checkpoints, driven only by the log:
// - the CheckpointCoordinator runs here as a projection: after each event of a job it decides,
//   and appends the decisions with the stream revision it decided on, after checking that no
//   decision for that cause is in the log yet. Every agent runs it; for each cause exactly one
//   append wins, and a restarted agent decides what was left undecided.
// - the commands addressed to this node are executed exactly once: a command whose outcome is
//   in the log is never repeated. After a crash the idempotent steps (freeze, verify, thaw,
//   stop, abort, commit) simply run again; a dump that may have started is not — it is
//   answered as failed, so the checkpoint aborts cleanly instead of dumping twice.
import { existsSync } from 'node:fs';
import type { Checkpointer, UnitTarget } from '../../domain/checkpointer.js';
import { evolveCommands, noCommands, pendingOn, type CheckpointCommands, type PendingCommand } from '../../domain/checkpoint-commands.js';
import { decideCheckpoint, type CheckpointState } from '../../domain/checkpoint-coordinator.js';
import { WrongExpectedRevisionError, type EventStore, type ProposedEvent, type RecordedEvent } from '../../domain/event-store.js';
import { jobStream, type NodeId, type UnitId } from '../../domain/identity.js';
import { getIn } from '../../domain/persistent-map.js';
import { criuWritingTo } from '../checkpointers/criu-checkpointer.js';
import { freezerOf, thawUnit, unitFreezeState, unitProcesses } from '../cgroups/unit-cgroups.js';
import { commitVersion, hashFile, ImageStoreError, manifestPath, readManifest, unitImagesDir } from '../images/image-store.js';
import { readStat } from '../tracking/procfs.js';

export interface CheckpointWorkOptions {
  readonly store: EventStore;
  readonly node: NodeId;
  readonly checkpointer: Checkpointer;
  readonly imagesRoot: string;
  /** The agent's ordered outbox: an outcome lands after the observations made before it. */
  readonly emit: (job: string, event: ProposedEvent) => void;
  /** Makes every process now in the unit a member (a fork just before the freeze may be queued). */
  readonly reconcileUnit: (job: string, unit: UnitId) => void;
  /** The processes the agent tracks in a unit: pid → start time. */
  readonly tracked: (job: string, unit: UnitId) => ReadonlyMap<number, number>;
  readonly log: (line: string) => void;
}

interface JobWork {
  state: CheckpointState;
  commands: CheckpointCommands;
  /** Revision of the last event of the job stream folded. */
  revision: number;
  /** Causes whose decisions are not in the log yet, in log order. */
  undecided: Array<{ cause: RecordedEvent; decisions: ProposedEvent[] }>;
  appending: boolean;
}

const FAILED: Record<PendingCommand['step'], string> = {
  freeze: 'UnitFreezeFailed', dump: 'UnitDumpFailed', verify: 'UnitVerifyFailed', thaw: 'UnitThawFailed',
  stop: 'UnitStopFailed', abort: 'UnitAbortFailed', commit: 'CheckpointCommitFailed',
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class CheckpointWork {
  readonly #o: CheckpointWorkOptions;
  readonly #jobs = new Map<string, JobWork>();
  /** Commands this process started (answered or not yet): never started twice. */
  readonly #started = new Set<string>();
  /** One step at a time per unit: an abort waits for a dump in progress. */
  readonly #unitQueue = new Map<string, Promise<void>>();
  /** When this process froze a unit (for frozenMs; after a restart the UnitFrozen event's time). */
  readonly #frozenAt = new Map<string, number>();
  #live = false;

  constructor(options: CheckpointWorkOptions) {
    this.#o = options;
  }

  /** Called for every event of a job's stream, with the coordinator state folded up to it. */
  fold(job: string, state: CheckpointState, e: RecordedEvent): void {
    let w = this.#jobs.get(job);
    if (!w) this.#jobs.set(job, (w = { state, commands: noCommands, revision: -1, undecided: [], appending: false }));
    w.state = state;
    w.commands = evolveCommands(w.commands, e);
    w.revision = e.revision;
    const cause = e.metadata.decidedAt !== undefined ? e.metadata.causationId : undefined;
    if (cause !== undefined) w.undecided = w.undecided.filter((u) => u.cause.id !== cause);
    const decisions = decideCheckpoint(state, e);
    if (decisions.length > 0) w.undecided.push({ cause: e, decisions });
    if (this.#live) this.#drive(job, w);
  }

  /** Node streams change what the coordinator may plan with; job states are updated by the caller. */
  updateState(job: string, state: CheckpointState): void {
    const w = this.#jobs.get(job);
    if (w) w.state = state;
  }

  /** After the agent caught up with the log: no unit left frozen by accident, then everything pending. */
  goLive(): void {
    this.#live = true;
    for (const [job, w] of this.#jobs) {
      this.#thawForgotten(job, w);
      this.#drive(job, w);
    }
  }

  #drive(job: string, w: JobWork) {
    void this.#decide(job, w);
    for (const command of pendingOn(w.commands, this.#o.node)) {
      if (this.#started.has(`${job} ${command.key}`)) continue;
      this.#started.add(`${job} ${command.key}`);
      const queueKey = `${job}/${command.unit ?? ''}`;
      const run = (this.#unitQueue.get(queueKey) ?? Promise.resolve()).then(() => this.#execute(job, command));
      this.#unitQueue.set(queueKey, run.catch(() => {}));
    }
  }

  // ── the coordinator ───────────────────────────────────────────────────────────────────────

  /** Check-and-append: decisions for the oldest undecided cause, with the revision last folded. */
  async #decide(job: string, w: JobWork): Promise<void> {
    const next = w.undecided[0];
    if (w.appending || !next) return;
    w.appending = true;
    const metadata = {
      actor: { kind: 'coordinator' as const, node: this.#o.node },
      causationId: next.cause.id,
      decidedAt: next.cause.position,
      ...(next.cause.metadata.correlationId !== undefined && { correlationId: next.cause.metadata.correlationId }),
    };
    const revision = w.revision;
    try {
      await this.#o.store.append(jobStream(job), next.decisions.map((d) => ({ ...d, metadata })), { expectedRevision: revision });
      w.appending = false;
    } catch (error) {
      w.appending = false;
      if (error instanceof WrongExpectedRevisionError) {
        // Someone appended first (maybe this very decision, from another agent). Once the fold
        // has gone past what it decided on, it knows whether the decision is still missing.
        if (w.revision !== revision) return this.#decide(job, w);
        return;
      }
      this.#o.log(`could not record the coordinator's decision for ${job}: ${(error as Error).message}; retrying`);
      await sleep(1000);
      return this.#decide(job, w);
    }
  }

  // ── commands for this node ────────────────────────────────────────────────────────────────

  async #execute(job: string, c: PendingCommand): Promise<void> {
    const w = this.#jobs.get(job)!;
    const step = c.unit ? { version: c.version, unit: c.unit, node: c.node } : { version: c.version };
    const answer = (type: string, data: object) =>
      this.#o.emit(job, { type, data: { ...step, ...data }, metadata: { causationId: c.request.id } } as ProposedEvent);
    try {
      if (c.step === 'commit') return answer('CheckpointCommitted', await this.#commit(job, w, c));
      const u = this.#target(job, w, c);
      const running = () => w.state.active?.version === c.version && w.state.active.phase === 'running';
      const key = `${job}/${c.unit}`;
      switch (c.step) {
        case 'freeze': {
          if (!running()) throw new Error(`checkpoint v${c.version} is no longer running (${w.state.active?.reason ?? 'ended'})`);
          const frozen = await this.#o.checkpointer.freeze(u);
          this.#frozenAt.set(key, performance.now() - frozen.durationMs);
          return answer('UnitFrozen', frozen);
        }
        case 'dump': {
          if (!running()) throw new Error(`checkpoint v${c.version} is no longer running (${w.state.active?.reason ?? 'ended'})`);
          if (existsSync(u.imagesDir)) {
            await this.#waitForCriu(u.imagesDir);
            throw new Error('the node agent restarted while this unit was being dumped; the images cannot be trusted and are not dumped again');
          }
          return answer('UnitDumped', await this.#o.checkpointer.dump(u));
        }
        case 'verify':
          return answer('UnitVerified', { captured: await this.#verify(job, w, c, u) });
        case 'thaw': {
          await this.#o.checkpointer.thaw(u);
          const since = this.#frozenAt.get(key);
          const frozenMs = since !== undefined ? performance.now() - since : Math.max(0, Date.now() - Date.parse(w.commands.versions[c.version]?.frozenAt[c.unit!] ?? c.request.recordedAt));
          return answer('UnitThawed', { frozenMs });
        }
        case 'stop':
          await this.#o.checkpointer.stop(u);
          return answer('UnitStopped', {});
        case 'abort': {
          await this.#waitForCriu(u.imagesDir);
          return answer('UnitAborted', await this.#o.checkpointer.abort(u));
        }
      }
    } catch (error) {
      const reason = (error as Error).message;
      this.#o.log(`${c.key} of ${job} failed: ${reason}`);
      answer(FAILED[c.step], { reason });
    }
  }

  #target(job: string, w: JobWork, c: PendingCommand): UnitTarget {
    const unit = w.state.job.units[c.unit!];
    const planned = w.commands.versions[c.version]?.units.find((p) => p.unit === c.unit);
    const root = unit?.root ? getIn(w.state.job.members, unit.root) : undefined;
    if (!unit || !planned) throw new Error(`unit ${c.unit} of ${job} is not known to this node's log (no plan for it)`);
    return {
      job,
      unit: unit.unit,
      version: c.version,
      scope: planned.scope,
      ...(root && { root: { pid: root.pid, startTime: root.startTime } }),
      cgroups: unit.cgroups,
      imagesDir: unitImagesDir(this.#o.imagesRoot, job, c.version, unit.unit),
    };
  }

  /**
   * What the images hold must be exactly the unit: every process in its (frozen) cgroup, each a
   * member the log knows, and every planned process that still lives. Returns the captured PIDs.
   */
  async #verify(job: string, w: JobWork, c: PendingCommand, u: UnitTarget): Promise<number[]> {
    if (w.state.active?.version !== c.version || w.state.active.phase !== 'running') throw new Error(`checkpoint v${c.version} is no longer running`);
    const captured = [...new Set(await this.#o.checkpointer.captured(u))].sort((a, b) => a - b);
    const inImages = new Set(captured);
    this.#o.reconcileUnit(job, u.unit);
    const problems: string[] = [];
    const comm = (pid: number) => readStat(pid)?.comm ?? '?';
    if (u.scope === 'cgroup' || freezerOf(u.cgroups)) {
      const inUnit = unitProcesses(u.cgroups);
      const missed = inUnit.filter((pid) => !inImages.has(pid));
      if (missed.length > 0) problems.push(`the images miss ${missed.map((p) => `${p} ${comm(p)}`).join(', ')}, which are in the unit’s cgroup`);
      const outside = captured.filter((pid) => !inUnit.includes(pid));
      if (outside.length > 0) problems.push(`the images hold ${outside.join(', ')}, which are not in the unit’s cgroup`);
    }
    const tracked = this.#o.tracked(job, u.unit);
    const unknown = captured.filter((pid) => !tracked.has(pid));
    if (unknown.length > 0) problems.push(`the images hold ${unknown.map((p) => `${p} ${comm(p)}`).join(', ')}, which the log does not know as members`);
    const planned = w.commands.versions[c.version]?.units.find((p) => p.unit === u.unit)?.targets ?? [];
    const lost = planned.filter((t) => readStat(t.pid)?.startTime === t.startTime && !inImages.has(t.pid));
    if (lost.length > 0) problems.push(`planned processes ${lost.map((t) => `${t.pid} ${comm(t.pid)}`).join(', ')} are alive but not in the images`);
    if (problems.length > 0) throw new Error(`the images of unit ${u.unit} do not match the plan: ${problems.join('; ')}`);
    return captured;
  }

  /** Writes the manifest (fsynced) once every unit is dumped; after a crash, finds a manifest already written. */
  async #commit(job: string, w: JobWork, c: PendingCommand) {
    const a = w.state.active;
    if (a?.version !== c.version || a.phase !== 'committing') throw new Error(`checkpoint v${c.version} is no longer committing (${a?.reason ?? 'ended'})`);
    const v = w.commands.versions[c.version]!;
    const units = v.units.map((u) => {
      const dump = v.dumps[u.unit];
      return { unit: u.unit, node: u.node, durationMs: dump?.durationMs ?? 0, ...(dump?.images && { files: dump.images }) };
    });
    try {
      const done = commitVersion(this.#o.imagesRoot, { job, version: c.version, parent: v.parent, units, createdAt: c.request.recordedAt });
      return { files: done.manifest.files, bytes: done.manifest.bytes, durationMs: done.durationMs, manifest: done.manifestSha256 };
    } catch (error) {
      const manifest = error instanceof ImageStoreError ? readManifest(this.#o.imagesRoot, job, c.version) : undefined;
      if (!manifest) throw error;
      // Committed by this node before a crash, the outcome not yet recorded.
      return { files: manifest.files, bytes: manifest.bytes, durationMs: 0, manifest: hashFile(manifestPath(this.#o.imagesRoot, job, c.version)).sha256 };
    }
  }

  async #waitForCriu(imagesDir: string) {
    for (let i = 0; criuWritingTo(imagesDir).length > 0; i++) {
      if (i % 50 === 0) this.#o.log(`waiting for criu (pids ${criuWritingTo(imagesDir).join(' ')}) still writing ${imagesDir}`);
      await sleep(100);
    }
  }

  /** A unit frozen while no checkpoint of its job is under way (a crash at the wrong moment): thaw it. */
  #thawForgotten(job: string, w: JobWork) {
    if (w.state.active) return; // the abort or thaw commands of the checkpoint will
    for (const unit of Object.values(w.state.job.units)) {
      if (unit.node !== this.#o.node || unit.phase !== 'running' || !freezerOf(unit.cgroups)) continue;
      try {
        if (unitFreezeState(unit.cgroups) === 'thawed') continue;
        this.#o.log(`unit ${unit.unit} of ${job} was frozen with no checkpoint under way: thawing it`);
        thawUnit(unit.cgroups).catch((error: Error) => this.#o.log(`could not thaw unit ${unit.unit} of ${job}: ${error.message}`));
      } catch (error) {
        this.#o.log(`could not check whether unit ${unit.unit} of ${job} is frozen: ${(error as Error).message}`);
      }
    }
  }
}

