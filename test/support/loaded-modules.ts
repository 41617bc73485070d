// `node --import` this to list what a program loads: its imports (loaded-hooks.ts) and, when it
// exits, every CommonJS module in require's cache (what those imports required in turn).
import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';

register('./loaded-hooks.js', import.meta.url);
const { cache } = createRequire(import.meta.url);
process.on('exit', () => {
  if (process.env.CKPT_TEST_LOADED)
    appendFileSync(
      process.env.CKPT_TEST_LOADED,
      Object.keys(cache)
        .map((path) => `file://${path}\n`)
        .join(''),
    );
});
