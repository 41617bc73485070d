// The foreground `ckpt run` passes the job's output through by copying what the job appends to
// its output files, instead of handing the job its own pipes: a job writing into a pipe whose
// reader is the client could not be restarted (CRIU restores a pipe without its outside end: the
// first write after the restore dies of SIGPIPE), a file opened for append is restored as is.
import { open } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

const POLL_MS = 50;

export interface Relay {
  /** Copies what is left up to the file's current end, then stops. */
  finish(): Promise<void>;
}

/** Follows PATH from byte `from` (its end before the job started) and writes what is appended to `to`. */
export const relayAppended = async (path: string, from: number, to: NodeJS.WritableStream): Promise<Relay> => {
  const file = await open(path, 'r');
  let position = from;
  let stopping = false;
  let broken = false; // the reader went away (`| head`): the job keeps writing to its file
  to.on('error', () => (broken = true));
  const buffer = Buffer.alloc(1 << 16);
  const copyAvailable = async () => {
    for (;;) {
      const { bytesRead } = await file.read(buffer, 0, buffer.length, position);
      if (bytesRead === 0) return;
      position += bytesRead;
      const chunk = Buffer.from(buffer.subarray(0, bytesRead));
      if (!broken) await new Promise<void>((resolve) => to.write(chunk, () => resolve()));
    }
  };
  const following = (async () => {
    while (!stopping) {
      await copyAvailable();
      await sleep(POLL_MS);
    }
    await copyAvailable();
    await file.close();
  })();
  return {
    finish: async () => {
      stopping = true;
      await following;
    },
  };
};
