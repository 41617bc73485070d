// What the benchmarks share: running commands (output collected, exit status checked), a memory
// hog, medians, and waiting for an event.
import { spawn } from 'node:child_process';
import { filter, firstValueFrom, map, throwError, timeout } from 'rxjs';
import type { EventStore, RecordedEvent } from '../../domain/event-store.js';

export const exec = (command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env) =>
  new Promise<{ code: number | null; out: string }>((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    for (const stream of [child.stdout, child.stderr]) stream.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, out }));
  });

export const must = async (command: string, args: readonly string[], env?: NodeJS.ProcessEnv) => {
  const r = await exec(command, args, env);
  if (r.code !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${r.code}:\n${r.out}`);
  return r.out;
};

/** Touches MB megabytes with a non-zero pattern (CRIU skips zero pages), then sleeps forever. */
export const HOG_C = `#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
  size_t n = (size_t)atol(argv[1]) << 20;
  unsigned char *p = malloc(n);
  if (!p) return 1;
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)((i * 2654435761u) >> 13) | 1;
  for (;;) pause();
}
`;

/** A count as a flag gives it: 1000000, 500k or 10M. */
export const count = (flag: string, text: string): number => {
  const m = /^(\d+(?:\.\d+)?)([kKmM]?)$/.exec(text);
  if (!m) throw new Error(`--${flag} needs a count such as 1000000, 500k or 10M, got "${text}"`);
  return Math.round(Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2]!) ? 1e3 : 1e6));
};
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const progress = (what: string) => process.stderr.isTTY && process.stderr.write(`\r\x1b[K${what}…`);
export const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** The first non-undefined answer of `look` over a stream's events from revision `from`; rejects when `look` throws. */
export const watch = <T>(store: EventStore, stream: string, from: number, timeoutMs: number, look: (e: RecordedEvent) => T | undefined) =>
  firstValueFrom(
    store.subscribeStream(stream, { from }).pipe(
      map(look),
      filter((x): x is T => x !== undefined),
      timeout({ first: timeoutMs, with: () => throwError(() => new Error(`${stream}: no answer within ${timeoutMs} ms`)) }),
    ),
  );
