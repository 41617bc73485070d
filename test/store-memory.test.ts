import { suite } from 'uvu';
import { storeContract } from './store-contract.js';

const test = suite('memory store contract');
storeContract(test, { fresh: async () => 'memory:', shared: false });
test.run();
