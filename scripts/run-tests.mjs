#!/usr/bin/env node
// Runs every compiled uvu suite (dist/test/**/*.test.js), each in its own process, and ends with
// the plain line "N passed, N failed, N skipped". Exits non-zero on any failure.
// Usage: node scripts/run-tests.mjs [SUBSTRING…]   (only files whose path below dist/test contains one)
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const testDir = join(root, 'dist', 'test');
const filters = process.argv.slice(2);

const find = (dir) =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === 'support' ? [] : find(path);
    return name.endsWith('.test.js') ? [path] : [];
  });

const files = find(testDir)
  // Matched against the path below dist/test: a checkout whose own path holds the word (a worktree
  // named after a suite) must not select every file.
  .filter((f) => filters.length === 0 || filters.some((s) => relative(testDir, f).includes(s)))
  .sort();

// A suite must end by itself: one still running 10 s after uvu's summary left handles open (a
// leak, counted as a failure), and none may run longer than the per-file limit.
const FILE_LIMIT_MS = Number(process.env.CKPT_TEST_FILE_LIMIT_S ?? 900) * 1000;
const AFTER_SUMMARY_MS = 10_000;

const count = (output, label) => Number(output.match(new RegExp(`^\\s*${label}:\\s+(\\d+)`, 'm'))?.[1] ?? NaN);

const runFile = (file) =>
  new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--enable-source-maps', file], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let killedBecause = '';
    const kill = (why) => {
      killedBecause = why;
      child.kill('SIGKILL');
    };
    const limit = setTimeout(() => kill(`ran longer than ${FILE_LIMIT_MS / 1000} s`), FILE_LIMIT_MS);
    let lingering;
    const collect = (d) => {
      output += d;
      if (!lingering && /^\s*Duration:/m.test(output)) {
        lingering = setTimeout(() => kill('still running 10 s after its summary: it leaves handles open'), AFTER_SUMMARY_MS);
      }
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('close', (code, signal) => {
      clearTimeout(limit);
      clearTimeout(lingering);
      if (killedBecause) output += `\nkilled: ${killedBecause}\n`;
      const total = count(output, 'Total');
      const passed = count(output, 'Passed');
      const skipped = count(output, 'Skipped');
      const parsed = Number.isFinite(total) && Number.isFinite(passed);
      // A suite that crashed or printed no summary counts as one failure.
      const failed = parsed ? total - passed + (code === 0 && !killedBecause ? 0 : total === passed ? 1 : 0) : 1;
      resolve({ file, code, signal, output, passed: parsed ? passed : 0, failed, skipped: Number.isFinite(skipped) ? skipped : 0, ms: Date.now() - started });
    });
  });

let passed = 0;
let failed = 0;
let skipped = 0;
for (const file of files) {
  const result = await runFile(file);
  passed += result.passed;
  failed += result.failed;
  skipped += result.skipped;
  const name = relative(testDir, file);
  const status = result.failed > 0 ? 'FAIL' : 'ok  ';
  console.log(`${status} ${name}  (${result.passed} passed, ${result.failed} failed, ${result.skipped} skipped, ${(result.ms / 1000).toFixed(1)} s)`);
  // Shown even when a suite passes: what it skipped, the figures it reports, where it kept artifacts.
  // (uvu prints a suite's title on the line of its first output, so a figure may start mid-line.)
  const skipLines = result.output.split('\n').flatMap((l) => (l.startsWith('skip:') ? [l] : (/(?:figure|artifacts): .*/.exec(l) ?? [])));
  for (const line of skipLines) console.log(`     ${line}`);
  if (result.failed > 0) {
    const lines = result.output.split('\n');
    const shown = lines.length > 400 ? [...lines.slice(0, 200), `… ${lines.length - 400} lines left out …`, ...lines.slice(-200)] : lines;
    console.log(shown.join('\n').replace(/^/gm, '     | '));
  }
}
if (files.length === 0) {
  console.log(`no test files found under ${relative(root, testDir)}${filters.length ? ` matching ${filters.join(', ')}` : ''}`);
  failed += 1;
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exitCode = failed > 0 ? 1 : 0;
