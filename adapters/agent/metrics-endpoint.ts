// The node agent's Prometheus endpoint (`ckpt agent run --metrics [HOST:]PORT`): GET /metrics.
// Operation totals and histograms are the log's (projections/metrics.ts, folded from its snapshot
// and then live from the subscription), so a restarted agent serves the same totals; the gauges
// are read from the agent's own fold when scraped. prom-client formats them: it is loaded only
// here, when --metrics is given, so no other command pays for it.
import { createServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import type { Metric, MetricValueWithName, Registry } from 'prom-client';
import type { Subscription } from 'rxjs';
import type { EventStore, RecordedEvent } from '../../domain/event-store.js';
import type { JobMembership } from '../../domain/membership.js';
import { BOUNDS, evolveMetrics, type Histogram, type LogMetrics, metricsModel, trackedProcesses } from '../../projections/metrics.js';
import { readModel, saveModel } from '../../projections/read-model.js';
import type { ListenAddress } from '../cli/args.js';
import { hostPort, listenOn } from '../http/listen.js';

/** What the endpoint reads of the agent when scraped. */
export interface AgentFold {
  /** The last log position the agent folded. */
  position(): number;
  memberships(): Iterable<JobMembership>;
}

export interface MetricsEndpointOptions {
  readonly store: EventStore;
  readonly node: string;
  readonly agent: AgentFold;
  readonly log: (line: string) => void;
}

const RETRY_MS = 1000;
/** Events folded while live between two snapshots of the figures. */
const SAVE_EVERY = 20_000;

type Sample = MetricValueWithName<string>;

/**
 * A metric whose values the fold already holds: prom-client's own Histogram can only observe
 * values one by one, so each metric is registered as a collector that reports them as they are,
 * in the shape prom-client's metrics give from get().
 */
const folded = (name: string, type: 'counter' | 'gauge' | 'histogram', help: string, values: () => Sample[] | Promise<Sample[]>) =>
  ({ name, help, type, aggregator: 'sum', get: async () => ({ name, help, type, aggregator: 'sum', values: await values() }) }) as unknown as Metric;

/** A histogram's samples: cumulative buckets by upper bound (`le`), then +Inf, sum and count. */
const histogramSamples = (name: string, h: Histogram, bounds: readonly number[]): Sample[] => {
  let below = 0;
  const buckets = h.buckets.map((n, i): Sample => ({ metricName: `${name}_bucket`, labels: { le: i < bounds.length ? bounds[i]! : '+Inf' }, value: (below += n) }));
  return [...buckets, { metricName: `${name}_sum`, labels: {}, value: h.sum }, { metricName: `${name}_count`, labels: {}, value: h.count }];
};

export class MetricsEndpoint {
  readonly #o: MetricsEndpointOptions;
  readonly #registry: Registry;
  #server: Server | undefined;
  #metrics: LogMetrics | undefined;
  #position = 0;
  #last: RecordedEvent | undefined;
  #unsaved = 0;
  #subscription: Subscription | undefined;
  #stopped = false;
  #saving: Promise<void> | undefined;
  /** Where it serves, once listening. */
  url: string | undefined;

  constructor(options: MetricsEndpointOptions) {
    this.#o = options;
    const prom = createRequire(import.meta.url)('prom-client') as typeof import('prom-client');
    this.#registry = new prom.Registry();
    const m = () => this.#metrics!;
    const histogram = (name: string, help: string, of: (m: LogMetrics) => Histogram, bounds: readonly number[]) => folded(name, 'histogram', help, () => histogramSamples(name, of(m()), bounds));
    // Labels stay bounded: results are a fixed set, gaps are per node of the store, and only
    // tracked_processes is per job — the jobs with running members on this node now, so the series
    // of a job ends with it. Per-job history is `ckpt checkpoints` / `ckpt audit`, not labels here.
    // The job's label is `ckpt_job`: Prometheus owns `job` (the scrape job) and would rename ours.
    for (const metric of [
      folded('ckpt_checkpoint_operations_total', 'counter', 'Checkpoints committed or aborted, in the whole log', () =>
        (['committed', 'aborted'] as const).map((result) => ({ labels: { result }, value: m().checkpoints[result] })),
      ),
      histogram('ckpt_checkpoint_duration_seconds', 'Request to completion of committed checkpoints, by the log’s clock', (x) => x.checkpointSeconds, BOUNDS.checkpointSeconds),
      histogram('ckpt_checkpoint_frozen_seconds', 'Longest time a unit stayed frozen, per checkpoint that froze', (x) => x.frozenSeconds, BOUNDS.frozenSeconds),
      histogram('ckpt_checkpoint_size_bytes', 'Image bytes of committed checkpoints', (x) => x.sizeBytes, BOUNDS.sizeBytes),
      folded('ckpt_restore_operations_total', 'counter', 'Restarts restored or failed, in the whole log', () =>
        (['restored', 'failed'] as const).map((result) => ({ labels: { result }, value: m().restores[result] })),
      ),
      histogram('ckpt_restore_duration_seconds', 'Request to commit of restored restarts, by the log’s clock', (x) => x.restoreSeconds, BOUNDS.restoreSeconds),
      folded('ckpt_tracked_processes', 'gauge', 'Running members of each job on this node, as the agent tracks them', () =>
        Object.entries(trackedProcesses(options.agent.memberships(), options.node)).map(([job, value]) => ({ labels: { ckpt_job: job }, value })),
      ),
      folded('ckpt_observation_gaps_total', 'counter', 'Times a node agent lost kernel process events (then reconciled from /proc), per node', () =>
        Object.entries({ [options.node]: 0, ...m().gaps }).map(([node, value]) => ({ labels: { node }, value })),
      ), // this node's from 0, so rate() works before a first gap
      folded('ckpt_log_lag_events', 'gauge', 'Events in the log this agent has not folded yet', async () => [
        { labels: {}, value: Math.max(0, (await options.store.headPosition()) - options.agent.position()) },
      ]),
    ])
      this.#registry.registerMetric(metric);
  }

  /** Binds the address (before the agent starts: a bad or busy one ends the start with nothing done). */
  async listen(address: ListenAddress): Promise<void> {
    const server = createServer((request, response) => void this.#answer(request.method, request.url, response));
    const where = hostPort(address);
    await listenOn(server, address, 'metrics', '--metrics');
    this.#server = server;
    this.url = `http://${where}/metrics`;
    this.#o.log(`metrics on ${this.url}`);
  }

  /** Folds the log's figures from their snapshot, then follows the log; scrapes are answered from then on. */
  async follow(): Promise<void> {
    const read = await readModel(this.#o.store, metricsModel, '');
    if (read.folded > 0) for (const note of read.notes) this.#o.log(note);
    this.#metrics = read.state;
    this.#position = read.position;
    this.#subscribe();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#subscription?.unsubscribe();
    await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
    await this.#saving;
    if (this.#unsaved > 0) await this.#save();
  }

  #subscribe() {
    this.#subscription = this.#o.store.subscribeAll({ from: this.#position + 1 }).subscribe({
      next: (e) => {
        this.#metrics = evolveMetrics(this.#metrics!, e);
        this.#position = e.position;
        this.#last = e;
        if (++this.#unsaved >= SAVE_EVERY) void this.#save();
      },
      error: (error: Error) => {
        this.#o.log(`metrics lost the event store (${error.message}); following it again in ${RETRY_MS} ms`);
        setTimeout(() => this.#stopped || this.#subscribe(), RETRY_MS);
      },
    });
  }

  /** The figures are immutable: saved beside the fold, which goes on (one save at a time). */
  #save(): Promise<void> | undefined {
    const { snapshots } = this.#o.store;
    if (this.#saving || !snapshots || !this.#last) return this.#saving;
    this.#unsaved = 0;
    this.#saving = saveModel(snapshots, metricsModel, '', this.#metrics!, this.#last)
      .then((what) => void (what.startsWith('saved') || this.#o.log(`metrics ${what}`)))
      .catch((error: Error) => this.#o.log(`could not save the metrics snapshot: ${error.message}`))
      .finally(() => (this.#saving = undefined));
    return this.#saving;
  }

  async #answer(method: string | undefined, url: string | undefined, response: import('node:http').ServerResponse) {
    const path = (url ?? '').split('?')[0];
    try {
      if (path !== '/metrics') return void response.writeHead(404, { 'content-type': 'text/plain' }).end('ckpt serves Prometheus metrics at /metrics\n');
      if (method !== 'GET' && method !== 'HEAD') return void response.writeHead(405, { allow: 'GET, HEAD' }).end();
      if (!this.#metrics) return void response.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1' }).end('the node agent is starting: it is folding the log\n');
      const body = await this.#registry.metrics();
      response.writeHead(200, { 'content-type': this.#registry.contentType }).end(method === 'HEAD' ? undefined : body);
    } catch (error) {
      response.writeHead(500, { 'content-type': 'text/plain' }).end(`could not collect the metrics: ${(error as Error).message}\n`);
    }
  }
}
