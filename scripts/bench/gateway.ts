// Request gateway benchmark: what asking the node agent costs beside asking the store. In one run,
// on one SQLite store: a request on a fresh connection (the agent reads SO_PEERCRED through the
// ckpt-peer-credentials helper: one fork+exec per connection), a request on a kept connection,
// and the same read on the store directly.
//
//   node dist/scripts/bench/gateway.js [--requests 200]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { RequestGateway } from '../../adapters/agent/request-gateway.js';
import { AgentConnection } from '../../adapters/cli/agent-client.js';
import { openEventStore } from '../../adapters/store/open.js';

const { values } = parseArgs({ options: { requests: { type: 'string', default: '200' } } });
const N = Number(values.requests);
if (!Number.isSafeInteger(N) || N < 10) throw new Error('--requests takes an integer ≥ 10');

const dir = mkdtempSync(join(tmpdir(), 'ckpt-bench-gateway-'));
const store = openEventStore(`sqlite:${join(dir, 'events.db')}`);
const socket = join(dir, 'agent.sock');
const gateway = new RequestGateway({ store, node: 'bench', socket, ownCgroups: () => [] }); // the bench launches nothing
await gateway.open();

const median = async (what: () => Promise<unknown>): Promise<number> => {
  const times: number[] = [];
  for (let i = 0; i < N; i++) {
    const start = performance.now();
    await what();
    times.push(performance.now() - start);
  }
  return times.sort((a, b) => a - b)[Math.floor(N / 2)]!;
};

try {
  const fresh = await median(async () => {
    const c = await AgentConnection.open(socket);
    await c.request('head');
    c.close();
  });
  const kept = await AgentConnection.open(socket);
  const warm = await median(() => kept.request('head'));
  kept.close();
  const direct = await median(() => store.headPosition());
  console.log(`request gateway, median of ${N} 'head' requests:`);
  console.log(`  new connection (peer credentials read): ${fresh.toFixed(2)} ms`);
  console.log(`  kept connection:                        ${warm.toFixed(3)} ms  (${(fresh / warm).toFixed(0)}× cheaper than a new one)`);
  console.log(`  store directly:                         ${direct.toFixed(3)} ms`);
} finally {
  await gateway.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
