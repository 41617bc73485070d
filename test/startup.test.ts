// What `ckpt` loads to start (adapters/cli/catalogue.ts): a command loads its own module and what
// that needs, never the agent, CRIU's protocol, PostgreSQL's or KurrentDB's client, prom-client (only
// an agent given --metrics loads it) or all of RxJS for a read — each of those costs tens of
// milliseconds at every start, most of a read's time on a short log.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { catalogue } from '../adapters/cli/catalogue.js';

const CLI = fileURLToPath(new URL('../adapters/cli/main.js', import.meta.url));
const HOOK = fileURLToPath(new URL('./support/loaded-modules.js', import.meta.url));
const home = mkdtempSync(join(tmpdir(), 'ckpt-startup-'));
let runs = 0;

/** The modules `ckpt ARGS` loads (URLs), and how it exited. */
const loaded = (...args: string[]) => {
  const list = join(home, `loaded-${++runs}`);
  const r = spawnSync(process.execPath, ['--import', HOOK, CLI, ...args], {
    env: { ...process.env, CKPT_HOME: home, CKPT_STORE: `sqlite:${join(home, 'events.db')}`, CKPT_TEST_LOADED: list },
    encoding: 'utf8',
  });
  return { code: r.status, err: r.stderr, modules: readFileSync(list, 'utf8').split('\n').filter(Boolean) };
};
const any = (modules: string[], pattern: RegExp) => modules.filter((m) => pattern.test(m));

const NEVER_FOR_A_READ = [
  /\/node_modules\/pg\//,
  /\/node_modules\/@kurrent\//,
  /\/node_modules\/@grpc\//,
  /\/node_modules\/prom-client\//,
  /\/node_modules\/protobufjs\//,
  /\/node_modules\/rxjs\/dist\/cjs\/index\.js$/,
  /\/dist\/adapters\/agent\/node-agent\.js$/,
  /\/dist\/adapters\/checkpointers\//,
];

const test = suite('ckpt start-up: what each command loads');
test.after(() => rmSync(home, { recursive: true, force: true }));

test('ckpt --version loads neither a store nor any command', () => {
  const r = loaded('--version');
  assert.is(r.code, 0, r.err);
  assert.ok(any(r.modules, /\/dist\/adapters\/cli\/main\.js$/).length === 1, 'the list has the modules the program loaded');
  assert.equal(
    any(r.modules, /\/node_modules\/(rxjs|pg|better-sqlite3|protobufjs|prom-client|@kurrent)\/|\/dist\/adapters\/(store\/(sqlite|postgres|kurrentdb|memory)|agent|checkpointers|cli\/commands)\//),
    [],
  );
});

test('a read loads its store, and none of the agent, CRIU’s protocol, PostgreSQL’s or KurrentDB’s client or the whole of RxJS', () => {
  for (const args of [['log', '--tail', '5'], ['jobs'], ['history', 'nosuchjob'], ['ps', 'nosuchjob'], ['checkpoints', 'nosuchjob'], ['audit', 'nosuchjob']]) {
    const r = loaded(...args);
    assert.ok(r.code === 0 || (r.code === 1 && /nosuchjob/.test(r.err)), `${args.join(' ')}: ${r.err}`);
    assert.ok(any(r.modules, /\/node_modules\/better-sqlite3\//).length > 0 && any(r.modules, /\/dist\/adapters\/store\/sqlite\.js$/).length === 1, 'it opened the SQLite store');
    for (const never of NEVER_FOR_A_READ) assert.equal(any(r.modules, never), [], `${args.join(' ')} loads ${never}`);
  }
});

test('every command’s module loads on its own: its help', () => {
  for (const { name, summary } of catalogue) {
    const r = spawnSync(process.execPath, [CLI, name, '--help'], { env: { ...process.env, CKPT_HOME: home }, encoding: 'utf8' });
    assert.is(r.status, 0, `${name} --help: ${r.stderr}`);
    assert.ok(r.stdout.startsWith(`Usage: ckpt ${name}`) && r.stdout.includes(summary), `${name} --help shows its usage and summary`);
  }
});

test.run();
