// Binding an HTTP server to a --listen / --metrics address, with an error that says what to do.
import type { Server } from 'node:http';
import type { ListenAddress } from '../cli/args.js';

/** `host:port`, with an IPv6 host in brackets. */
export const hostPort = (address: ListenAddress): string => `${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;

/** Listens on the address; a busy or foreign address rejects naming the option to change. */
export const listenOn = (server: Server, address: ListenAddress, what: string, option: string): Promise<void> =>
  new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      const why = error.code === 'EADDRINUSE' ? 'another process listens there: choose another port' : error.code === 'EADDRNOTAVAIL' ? 'no interface of this machine has that address' : error.message;
      reject(new Error(`cannot serve ${what} on ${hostPort(address)}: ${why} (${option} [HOST:]PORT)`));
    });
    server.listen(address.port, address.host, resolve);
  });
