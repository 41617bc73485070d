// verifyVersion in a worker thread: hashing a version's images (~180 ms per 200 MB here) must not
// hold up the node agent's event loop, which also reads the kernel's process events.
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { type Verification, verifyVersion } from './image-store.js';

type Args = Parameters<typeof verifyVersion>;

export const verifyVersionOffThread = (...args: Args): Promise<Verification> =>
  new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: args });
    worker.once('message', (result: { ok: Verification } | { error: string }) => ('ok' in result ? resolve(result.ok) : reject(new Error(result.error))));
    worker.once('error', reject);
  });

/** Images smaller than this are checked on the caller's thread: a worker costs ~40 ms to start. */
const OFF_THREAD_BYTES = 32 << 20;

/** verifyVersion for about `bytes` of images: on this thread when small, else in a worker. */
export const verifyVersionSized = (bytes: number, ...args: Args): Verification | Promise<Verification> => (bytes < OFF_THREAD_BYTES ? verifyVersion(...args) : verifyVersionOffThread(...args));

if (!isMainThread && parentPort) {
  try {
    parentPort.postMessage({ ok: verifyVersion(...(workerData as Args)) });
  } catch (error) {
    parentPort.postMessage({ error: (error as Error).message });
  }
}
