import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import { storeContract } from './store-contract.js';

const dir = mkdtempSync(join(tmpdir(), 'ckpt-sqlite-'));
let n = 0;
const test = suite('sqlite store contract');
storeContract(test, { fresh: async () => `sqlite:${join(dir, `${++n}.db`)}`, shared: true });
test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
