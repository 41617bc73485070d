// The store contract on KurrentDB, whenever KURRENTDB_URL names a server (e.g.
// KURRENTDB_URL='kurrentdb://127.0.0.1:2113?tls=false'). Each test gets a store of its own: a
// fresh stream prefix on that server. The mapping's pure tests run everywhere (kurrentdb-mapping.test.ts).
import { storeContract } from './store-contract.js';
import { suiteRequiring } from './support/prerequisites.js';

const server = process.env.KURRENTDB_URL;
const test = suiteRequiring('KurrentDB store contract', server ? undefined : 'KURRENTDB_URL not set (no KurrentDB server can be installed here)');

let stores = 0;
/** The server's URL with a prefix no earlier run used (letters and digits: a prefix holds no "-"). */
const fresh = async (): Promise<string> => {
  const prefix = `t${process.pid}x${Date.now().toString(36)}x${++stores}`;
  const url = server!.replace(/([?&])prefix=[^&]*&?/, '$1').replace(/[?&]$/, '');
  return `${url}${url.includes('?') ? '&' : '?'}prefix=${prefix}`;
};

storeContract(test, { fresh, shared: true, leases: false });
test.run();
