// Node liveness leases with real agents (`ckpt agent start --lease-ttl`, `ckpt nodes`): alive while
// the agent renews; after kill -9 its lease expires (on this machine the kernel's answer, dead, is
// shown); a new agent takes the lease again; a clean stop releases it. On PostgreSQL, an agent cut
// off from the store (its renewal held back by a lock on its lease row) is shown lost, and alive
// again once the renewal goes through, with both moments in its log. And the pure state judgement
// for a node of another machine.
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { agentFiles } from '../adapters/agent/daemon.js';
import { leaseOf, nodeState } from '../adapters/cli/commands/nodes.js';
import type { Lease } from '../domain/event-store.js';
import type { NodeView } from '../projections/nodes.js';
import { CLI, jobHarness, sigkill } from './support/jobs.js';
import { needPostgres, type PostgresCluster, startPostgres } from './support/postgres.js';
import { firstMissing, needCommand, needRoot, suiteRequiring } from './support/prerequisites.js';
import { until } from './support/wait.js';

interface NodeRow {
  node: string;
  state: string;
  agent: { pid: number; startTime: number } | null;
  lease: { renewedAt: string; expiresAt: string; expired: boolean; holder: { pid: number; startTime: number; bootId: string; hostname: string } } | null;
}

const NODE = 'leasenode';
const TTL = ['--lease-ttl', '1s'];
const { work, h, ckpt, json, cleanup } = jobHarness('ckpt-lease', NODE);
const node = (env: Record<string, string> = {}) => json<NodeRow[]>(['nodes'], h.home, env).find((n) => n.node === NODE)!;
const agentPid = (store: string): number => (JSON.parse(readFileSync(agentFiles(h.home, NODE, store).pidFile, 'utf8')) as { pid: number }).pid;

const NOBODY = 65534;
const nobodyExists = () => (spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout.trim() === String(NOBODY) ? undefined : 'needs the user nobody (uid 65534)');
/** `ckpt nodes --json` as nobody, who cannot open root's store: the agent answers for them. */
const nodesAsNobody = (store: string): NodeRow[] => {
  const home = join(work, 'nobody');
  chmodSync(work, 0o755);
  mkdirSync(home, { recursive: true, mode: 0o700 });
  chownSync(home, NOBODY, NOBODY);
  const r = spawnSync('runuser', ['-u', 'nobody', '--', process.execPath, CLI, 'nodes', '--json'], {
    cwd: '/tmp',
    env: { ...process.env, CKPT_HOME: home, CKPT_NODE: NODE, CKPT_STORE: store },
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.is(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as NodeRow[];
};

const test = suiteRequiring(
  'node leases (real agents, SQLite)',
  firstMissing(needRoot, () => needCommand('runuser', 'apt-get install -y util-linux'), nobodyExists),
);
test.after(() => cleanup());

test('alive while renewed; kill -9: the lease expires, shown dead here; a new agent is alive again; a clean stop releases the lease', async () => {
  const start = ckpt(['agent', 'start', ...TTL]);
  assert.is(start.code, 0, start.err);
  const store = `sqlite:${join(h.home, 'events.db')}`;
  const first = agentPid(store);
  let n = node();
  assert.is(n.state, 'alive');
  assert.is(n.lease?.holder.pid, first);
  assert.is(n.lease?.expired, false);
  assert.equal(n.lease?.holder.startTime, n.agent?.startTime);
  const table = ckpt(['nodes']);
  assert.match(table.out, /LAST RENEWED +LEASE EXPIRES/);
  assert.match(table.out, new RegExp(`^${NODE} +alive +pid ${first}, \\S+ +\\S+ +\\d{4}-\\d\\d-\\d\\dT\\S+ +\\d{4}-\\d\\d-\\d\\dT\\S+ `, 'm'));
  const theirs = nodesAsNobody(store).find((r) => r.node === NODE)!;
  assert.equal([theirs.state, theirs.lease?.holder.pid, theirs.lease?.expired], ['alive', first, false], 'a user reads the leases through the agent');
  const renewedAt = n.lease!.renewedAt;
  await until('a renewal', () => Date.parse(node().lease!.renewedAt) > Date.parse(renewedAt), 10_000, 100);

  sigkill(first);
  n = await until(
    'the dead agent’s lease to expire',
    () => {
      const now = node();
      return now.lease?.expired ? now : undefined;
    },
    15_000,
    100,
  );
  assert.is(n.state, 'dead (its agent ended without stopping)', 'on this machine the kernel says more than the lease');
  assert.is(n.lease!.holder.pid, first);

  assert.is(ckpt(['agent', 'start', ...TTL]).code, 0);
  const second = agentPid(store);
  assert.is.not(second, first);
  n = node();
  assert.is(n.state, 'alive');
  assert.equal([n.lease?.holder.pid, n.lease?.expired], [second, false], 'the new agent holds the lease');

  assert.is(ckpt(['agent', 'stop']).code, 0);
  n = node();
  assert.is(n.state, 'stopped');
  assert.is(n.lease, null, 'released on a clean stop');
});
test.run();

let cluster: PostgresCluster | undefined;
const cut = suiteRequiring('node leases (real agent, PostgreSQL): cut off from the store', firstMissing(needRoot, needPostgres));
cut.before(async () => {
  cluster = await startPostgres();
});
cut.after(async () => {
  await cluster?.stop();
});

cut('an agent that cannot renew is lost, by the server’s clock, and alive again once it renews; its log says both', async () => {
  const url = await cluster!.database();
  const env = { CKPT_STORE: url };
  const start = ckpt(['agent', 'start', ...TTL], h.home, env);
  assert.is(start.code, 0, start.err);
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    assert.is(node(env).state, 'alive');
    // The store answers everyone but the renewal: its lease row is locked by this transaction.
    await db.query('BEGIN');
    await db.query('SELECT 1 FROM ckpt_leases WHERE node = $1 FOR UPDATE', [NODE]);
    const lost = await until(
      'the node to be lost',
      () => {
        const now = node(env);
        return now.state.startsWith('lost') ? now : undefined;
      },
      15_000,
      100,
    );
    assert.match(lost.state, /^lost \(no renewal for \d+ s: its agent runs here but cannot renew/);
    assert.is(lost.lease?.expired, true);
    await db.query('COMMIT');
    await until('the node to be alive again', () => node(env).state === 'alive', 15_000, 100);
    const log = readFileSync(agentFiles(h.home, NODE, url).log, 'utf8');
    assert.match(log, `could not renew the lease of ${NODE}`);
    assert.match(log, `lease of ${NODE} renewed again`);
    assert.is(log.split(`could not renew the lease of ${NODE}`).length, 2, 'said once for the outage');
  } finally {
    await db.query('ROLLBACK').catch(() => {});
    await db.end();
    ckpt(['agent', 'stop'], h.home, env);
  }
});
cut.run();

const judged = suite('node leases: the state of a node of another machine');
judged('alive while its lease holds, lost once it expired, started when there is no lease; a lease of an earlier agent says nothing', () => {
  const v: NodeView = { node: 'far', hostname: 'far.example', bootId: 'another-boot', agent: { pid: 4242, startTime: 7, version: 'v', startedAt: '' }, lastSeen: '' };
  const lease = (expired: boolean, pid = 4242): Lease => ({
    node: 'far',
    holder: { pid, startTime: 7, bootId: 'another-boot', hostname: 'far.example' },
    renewedAt: '2026-01-01T00:00:00.000Z',
    expiresAt: '2026-01-01T00:00:15.000Z',
    expired,
    asOf: expired ? '2026-01-01T00:00:42.000Z' : '2026-01-01T00:00:05.000Z',
  });
  assert.is(nodeState(v, 'this-boot', leaseOf(v, [lease(false)])), 'alive');
  assert.is(nodeState(v, 'this-boot', leaseOf(v, [lease(true)])), 'lost (no renewal for 42 s: host down, cut off, or its agent dead)');
  assert.is(leaseOf(v, [lease(false, 4241)]), undefined, 'an earlier agent’s lease');
  assert.is(nodeState(v, 'this-boot', undefined), 'started (elsewhere: not checked)');
  assert.is(nodeState({ ...v, stopped: { reason: 'stopped by SIGTERM', at: '' } }, 'this-boot', leaseOf(v, [lease(true)])), 'stopped');
});
judged.run();
