// Module hooks (run in the loader's thread) that write every module the program loads through
// `import` to the file CKPT_TEST_LOADED names, one URL per line (test/startup.test.ts).
import { appendFileSync } from 'node:fs';

type Next = (url: string, context: unknown) => Promise<unknown>;

export const load = async (url: string, context: unknown, next: Next): Promise<unknown> => {
  if (process.env.CKPT_TEST_LOADED) appendFileSync(process.env.CKPT_TEST_LOADED, `${url}\n`);
  return next(url, context);
};
