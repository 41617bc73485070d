// Running commands from the benchmarks: output collected, exit status checked.
import { spawn } from 'node:child_process';

export const exec = (command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env) =>
  new Promise<{ code: number | null; out: string }>((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    for (const stream of [child.stdout, child.stderr]) stream.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, out }));
  });

export const must = async (command: string, args: readonly string[], env?: NodeJS.ProcessEnv) => {
  const r = await exec(command, args, env);
  if (r.code !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${r.code}:\n${r.out}`);
  return r.out;
};
