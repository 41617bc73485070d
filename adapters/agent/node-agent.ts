// The node agent: one per node and store, as root. Its rooms, each in its own file, wired here:
// - process tracking (process-tracker.ts, with reread-schedule.ts and dependency-scan.ts): the
//   kernel's process events and /proc → observations;
// - the launch protocol (launch-protocol.ts): a unit's cgroups, its root tracked, its end;
// - the coordinator host (coordinator-host.ts): follows the log, folds each job's state, runs the
//   job's work (job-work.ts: deciders and this node's commands) and the deadline timer;
// - the outbox (outbox.ts): every event the agent appends, in order, retried while the log is away;
// - the request gateway (request-gateway.ts): requests from users on a unix socket;
// - the liveness lease (lease-renewal.ts), renewed beside the log while the agent runs.
import { readFileSync } from 'node:fs';
import { arch, hostname, release } from 'node:os';
import type { EventStore } from '../../domain/event-store.js';
import { type NodeId, nodeStream, type ProcessRef } from '../../domain/identity.js';
import type { JobMembership } from '../../domain/membership.js';
import { detectCgroups } from '../cgroups/unit-cgroups.js';
import { locateCriu } from '../checkpointers/criu.js';
import { CriuCheckpointer } from '../checkpointers/criu-checkpointer.js';
import { readStat } from '../tracking/procfs.js';
import { type CatchUpProgress, CoordinatorHost } from './coordinator-host.js';
import { LaunchProtocol } from './launch-protocol.js';
import { DEFAULT_LEASE_TTL_MS, LeaseRenewal } from './lease-renewal.js';
import { Outbox } from './outbox.js';
import { ProcessTracker, type Rereads } from './process-tracker.js';
import { RequestGateway } from './request-gateway.js';

export type { CatchUpProgress } from './coordinator-host.js';

export interface NodeAgentOptions {
  /** The store, opened with this node as its default actor. */
  readonly store: EventStore;
  readonly node: NodeId;
  readonly version: string;
  /** Unit cgroups go to PREFIX/JOB/UNIT in each hierarchy; one prefix per store, so two stores'
   *  jobs of the same name never share a cgroup. */
  readonly cgroupPrefix: string;
  /** $CKPT_HOME/images: where this node's units are dumped and versions committed. */
  readonly imagesRoot: string;
  /** Where restore logs go ($CKPT_HOME/restarts). */
  readonly workRoot: string;
  /** Where CRIU's functional probe results are cached ($CKPT_HOME/criu-probe.json); none: probed on every start. */
  readonly criuProbeCache?: string;
  /** Proc connector receive buffer (bytes); tests force a tiny one to provoke overruns. */
  readonly rcvbuf?: number;
  /** The initial network namespace as a file, for an agent running in another one (a testbed host's). */
  readonly initialNetns?: string;
  /** The tick of /proc re-reads, and the shortest interval between two of one process (default 100 ms). */
  readonly rescanMs?: number;
  /** How tracked processes are re-read (default adaptive; see process-tracker.ts). */
  readonly rereads?: Rereads;
  /** How often dependents (shared pipes, sockets, shm) are looked for. */
  readonly dependencyScanMs?: number;
  /** How long the node's liveness lease lasts without a renewal (default 15 s; renewed every third of it). */
  readonly leaseTtlMs?: number;
  /** How far start() has come: the log folded so far, then the checkpointer's probe. */
  readonly starting?: (step: StartStep) => void;
  readonly log?: (line: string) => void;
}

/** A step of the agent's start, for `ckpt agent start` to show and to judge progress by. */
export type StartStep = ({ phase: 'log' } & CatchUpProgress) | { phase: 'probe' };

export class NodeAgent {
  readonly #o: NodeAgentOptions;
  readonly #outbox: Outbox;
  #tracker: ProcessTracker | undefined;
  #host: CoordinatorHost | undefined;
  #launch: LaunchProtocol | undefined;
  #self: ProcessRef | undefined;
  #gateway: RequestGateway | undefined;
  #lease: LeaseRenewal | undefined;

  constructor(options: NodeAgentOptions) {
    this.#o = options;
    // Nothing stays frozen while the log is away (a full disk, a store gone): the units thaw now.
    this.#outbox = new Outbox({ store: options.store, appendFailed: (why) => this.#host?.work.releaseFrozen(why), log: this.#log });
  }

  #log = (line: string) => this.#o.log?.(line);
  #emit = (job: string, e: Parameters<Outbox['emit']>[1]) => this.#outbox.emit(job, e);

  /** Resolves once the kernel stream is live, the log is caught up and /proc reconciled. */
  async start(): Promise<void> {
    const { store, node } = this.#o;
    const self = readStat(process.pid)!;
    this.#self = { pid: self.pid, startTime: self.startTime };
    const checkpointer = new CriuCheckpointer(locateCriu(), this.#o.imagesRoot, this.#o.criuProbeCache);
    const launch = (): LaunchProtocol => this.#launch!;
    const tracker = (): ProcessTracker => this.#tracker!;
    const host = (this.#host = new CoordinatorHost({
      store,
      node,
      checkpointer,
      imagesRoot: this.#o.imagesRoot,
      workRoot: this.#o.workRoot,
      emit: this.#emit,
      units: {
        reconcileUnit: () => tracker().reconcile('reconcile'),
        tracked: (job, unit) => tracker().members(job, unit),
        restartCgroups: (job, unit, restart, limits) => launch().restartCgroups(job, unit, restart, limits),
        ownCgroups: (job, unit, recorded) => launch().own(job, unit, recorded),
        adoptRestored: (job, unit, processes) => {
          launch().reopen(job, unit);
          tracker().adoptRestored(job, unit, processes);
        },
      },
      changed: (job, e) => {
        // Forks of restored processes between criu's return and their adoption: in the unit's new cgroups.
        if (e.type === 'UnitRestored' && e.data.node === node) tracker().reconcile('reconcile');
        launch().actOn(job);
      },
      settled: (job) => launch().forget(job),
      progress: (p) => this.#o.starting?.({ phase: 'log', ...p }),
      log: this.#log,
    }));
    this.#launch = new LaunchProtocol({ node, layout: detectCgroups(), cgroupPrefix: this.#o.cgroupPrefix, jobs: host, tracker, emit: this.#emit, log: this.#log });
    this.#tracker = new ProcessTracker({
      node,
      jobs: host,
      emit: this.#emit,
      ownCgroups: (job, unit) => launch().ownOrNone(job, unit),
      unitEmpty: (job, unit, root) => launch().ended(job, unit, root),
      rcvbuf: this.#o.rcvbuf,
      initialNetns: this.#o.initialNetns,
      tickMs: this.#o.rescanMs,
      rereads: this.#o.rereads,
      dependencyScanMs: this.#o.dependencyScanMs,
      fatal: (message) => this.#fatal(message),
      log: this.#log,
    });

    // Kernel events first (held until the log is caught up), so nothing falls in between.
    await this.#tracker.watchKernel();
    await host.catchUp();
    this.#tracker.goLive();
    for (const job of host.jobs()) this.#launch.actOn(job);
    host.goLive();

    // What this node's checkpointer can really do, probed, not assumed: the coordinator plans from it.
    this.#o.starting?.({ phase: 'probe' });
    const probe = await checkpointer.probe();
    if (!probe.usable) this.#log(`CRIU cannot be used on this node: ${probe.problems.join('; ')}`);
    await store
      .append(nodeStream(node), [
        { type: 'NodeRegistered', data: { node, hostname: hostname(), kernel: release(), bootId: bootId(), arch: arch() } },
        { type: 'NodeAgentStarted', data: { node, agent: this.#self, version: this.#o.version } },
        { type: 'CheckpointerProbed', data: { node, ...probe } },
      ])
      .catch((error) => this.#log(`could not register the node: ${error.message}`));
    // After the registration: the store gives the lease only to the agent start the log records.
    if (store.leases) {
      this.#lease = new LeaseRenewal({
        leases: store.leases,
        node,
        holder: { ...this.#self, bootId: bootId(), hostname: hostname() },
        ttlMs: this.#o.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS,
        log: this.#log,
      });
      await this.#lease.start();
    }

    this.#tracker.startScans();
  }

  /**
   * Opens the request gateway (adapters/agent/request-gateway.ts) on a socket: once this process
   * holds the node's agent lock for the store, so a stale socket it replaces is no one's.
   */
  async openGateway(socket: string): Promise<void> {
    const { store, node } = this.#o;
    const gateway = new RequestGateway({ store, node, socket, ownCgroups: (job, unit, recorded) => this.#launch!.own(job, unit, recorded), log: this.#o.log });
    await gateway.open();
    this.#gateway = gateway;
  }

  /** The last log position the agent folded (its metrics' log lag). */
  position(): number {
    return this.#host?.position ?? 0;
  }

  /** Every job the agent's fold holds (ended ones leave it), as their membership. */
  *memberships(): Iterable<JobMembership> {
    const host = this.#host;
    if (!host) return;
    for (const job of host.jobs()) {
      const membership = host.membership(job);
      if (membership) yield membership;
    }
  }

  async stop(reason: string): Promise<void> {
    await this.#gateway?.close();
    this.#tracker?.stop();
    await this.#host?.stop();
    await this.#outbox.flush();
    await this.#lease?.stop();
    if (this.#self) {
      await this.#o.store.append(nodeStream(this.#o.node), [{ type: 'NodeAgentStopped', data: { node: this.#o.node, agent: this.#self, reason } }]).catch(() => {});
    }
  }

  #fatal(message: string) {
    this.#log(message);
    process.exitCode = 1;
    void this.stop(message).finally(() => process.exit(1));
  }
}

const bootId = (): string => {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
};
