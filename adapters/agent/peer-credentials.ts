// Who is at the other end of a connection to the node agent, as the kernel says: SO_PEERCRED (uid,
// gid, pid when it connected) and SO_PEERGROUPS (supplementary groups). Node cannot call
// getsockopt itself, so a tiny helper (peer-credentials.c → dist/native/ckpt-peer-credentials) is
// given the connection's descriptor as fd 3 and prints them: one fork+exec per connection.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';

export const peerCredentialsPath: string = fileURLToPath(new URL('../../native/ckpt-peer-credentials', import.meta.url));

/** Who is at the other end of a connection, as the kernel says. */
export interface Caller {
  readonly uid: number;
  readonly gid: number;
  readonly pid: number;
  readonly groups: readonly number[];
  readonly user?: string;
}

/** SO_PEERCRED and SO_PEERGROUPS of a connection, read by a tiny helper given it as fd 3. */
export const peerCredentials = (connection: Socket): Promise<Caller> =>
  new Promise((resolve, reject) => {
    if (!existsSync(peerCredentialsPath)) return reject(new Error(`${peerCredentialsPath} is missing: build ckpt with a C compiler (npm run build)`));
    // The descriptor itself, not the stream: given a stream, Node stops reading it here.
    const fd = (connection as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
    if (typeof fd !== 'number' || fd < 0) return reject(new Error('the connection has no file descriptor'));
    const helper = spawn(peerCredentialsPath, [], { stdio: ['ignore', 'pipe', 'pipe', fd] });
    let out = '';
    let err = '';
    helper.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
    helper.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
    helper.once('error', reject);
    // Not 'close': that waits for every stdio stream, the connection (fd 3) included.
    const exited = new Promise<number | null>((done) => helper.once('exit', (code) => done(code)));
    const read = new Promise<void>((done) => helper.stdout!.once('end', done));
    void Promise.all([exited, read]).then(([code]) => {
      const [uid, gid, pid, ...groups] = out.trim().split(' ').map(Number);
      if (code !== 0 || [uid, gid, pid, ...groups].some((n) => !Number.isSafeInteger(n))) {
        return reject(new Error(`could not read the peer's credentials (${err.trim() || `exit ${code}`})`));
      }
      resolve({ uid: uid!, gid: gid!, pid: pid!, groups, ...userEntry(uid!) });
    });
  });

/** The user's name from /etc/passwd, for messages and the audit (the uid is what counts). */
const userEntry = (uid: number): { user?: string } => {
  try {
    const line = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .find((l) => l.split(':')[2] === String(uid));
    const name = line?.split(':')[0];
    return name ? { user: name } : {};
  } catch {
    return {};
  }
};
