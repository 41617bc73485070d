// The agent's liveness lease (LeaseStore, beside the log): renewed every ttl/3, so two renewals
// may fail before the lease lapses. A failed renewal never stops the agent — its units keep
// running, and the log is what it records to — it is logged once per outage, and the return too.
// A renewal the store has not answered by the next tick counts as failed (a store that hangs is
// as gone as one that refuses); it is not doubled, and its late answer ends the outage.
import type { LeaseHolder, LeaseStore } from '../../domain/event-store.js';

export const DEFAULT_LEASE_TTL_MS = 15_000;

export interface LeaseRenewalOptions {
  readonly leases: LeaseStore;
  readonly node: string;
  readonly holder: LeaseHolder;
  readonly ttlMs: number;
  readonly log: (line: string) => void;
}

export class LeaseRenewal {
  readonly #o: LeaseRenewalOptions;
  #timer: NodeJS.Timeout | undefined;
  #renewing: Promise<void> | undefined;
  /** When the current outage began (the first failed renewal), if one is under way. */
  #failingSince: number | undefined;
  #sentAt = 0;

  constructor(options: LeaseRenewalOptions) {
    this.#o = options;
  }

  /** Takes the lease now (waiting for the store at most one ttl), then renews it every ttl/3 until stopped. */
  async start(): Promise<void> {
    let wait: NodeJS.Timeout | undefined;
    await Promise.race([this.#renew(), new Promise((resolve) => (wait = setTimeout(resolve, this.#o.ttlMs)))]);
    clearTimeout(wait);
    this.#timer = setInterval(() => void this.#renew(), Math.max(1, Math.floor(this.#o.ttlMs / 3)));
  }

  #renew(): Promise<void> {
    if (this.#renewing) {
      this.#failed(new Error(`the store has not answered the renewal for ${Math.round((Date.now() - this.#sentAt) / 1000)} s`));
      return this.#renewing;
    }
    this.#sentAt = Date.now();
    this.#renewing = this.#o.leases
      .renew(this.#o.node, this.#o.holder, this.#o.ttlMs)
      .then(
        () => {
          if (this.#failingSince !== undefined) this.#o.log(`lease of ${this.#o.node} renewed again, after ${Math.round((Date.now() - this.#failingSince) / 1000)} s of failed renewals`);
          this.#failingSince = undefined;
        },
        (error: Error) => this.#failed(error),
      )
      .finally(() => (this.#renewing = undefined));
    return this.#renewing;
  }

  #failed(error: Error): void {
    if (this.#failingSince !== undefined) return;
    this.#failingSince = this.#sentAt;
    this.#o.log(`could not renew the lease of ${this.#o.node} (the agent keeps running; other hosts see the node lost once its lease of ${this.#o.ttlMs / 1000} s expires): ${error.message}`);
  }

  /** Stops renewing and gives the lease up (a clean stop: the node is stopped, not lost). */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#renewing;
    await this.#o.leases.release(this.#o.node).catch((error: Error) => this.#o.log(`could not release the lease of ${this.#o.node}: ${error.message}`));
  }
}
