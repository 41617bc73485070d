// Tests that need root, CRIU, PostgreSQL or a browser run for real; on a machine without them
// the whole suite is skipped with one line saying what is missing and how to install it.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { suite, type Test } from 'uvu';

/** A reason the suite cannot run here, or undefined when it can. */
export type Missing = string | undefined;

export const needRoot = (): Missing => (process.getuid?.() === 0 ? undefined : 'needs root (run the tests as root, as .ci/run does)');

export const needCommand = (command: string, install: string): Missing => {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return undefined;
  } catch {
    return `needs ${command} (install: ${install})`;
  }
};

export const firstMissing = (...checks: Array<() => Missing>): Missing => {
  for (const check of checks) {
    const missing = check();
    if (missing) return missing;
  }
  return undefined;
};

const noop = () => {};

/** A uvu suite that runs when nothing is missing, and otherwise skips every test and hook. */
export const suiteRequiring = (name: string, missing: Missing): Test => {
  const real = suite(name);
  if (!missing) return real;
  console.log(`skip: ${name} — ${missing}`);
  const hook = Object.assign(noop, { each: noop });
  const skipping = ((title: string) => real.skip(title, noop)) as unknown as Test;
  return Object.assign(skipping, { skip: real.skip, only: real.skip, run: real.run, before: hook, after: hook });
};

/** CRIU 4.1 for the tests that force the old version: $CKPT_CRIU_OLD, else <repo>/.criu-4.1 (.ci/run installs it there). */
export const OLD_CRIU: string = process.env.CKPT_CRIU_OLD || fileURLToPath(new URL('../../../.criu-4.1/bin/criu', import.meta.url));
export const OLD_CRIU_INSTALL = 'bash scripts/install-criu.sh --suite trixie --prefix .criu-4.1';
