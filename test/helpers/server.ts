// A `replfs serve --listen` server for tests: on an ephemeral port of 127.0.0.1, killed in
// teardown whatever happens.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { BIN, waitFor, exited, type Scratch } from './env.js';

export interface Server {
  port: number;
  child: ChildProcess;
  /** Everything on stdout so far. */
  log(): string;
  stderr(): string;
  /** The exit code (null when killed by a signal). */
  exit: Promise<number | null>;
}

export function tokenFile(s: Scratch, name = 'token', content = randomBytes(24).toString('hex') + '\n', mode = 0o600): string {
  const file = path.join(s.dir, name);
  fs.writeFileSync(file, content, { mode });
  fs.chmodSync(file, mode);
  return file;
}

/** `replfs serve <root> --listen 127.0.0.1:0 ...`, up and listening; killed in teardown whatever happens. */
export async function startServer(t: ExecutionContext, root: string, args: string[], listen = '127.0.0.1:0', env?: NodeJS.ProcessEnv): Promise<Server> {
  const child = spawn(process.execPath, [BIN, 'serve', root, '--listen', listen, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...(env ? { env } : {}) });
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited(child);
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => { out += c.toString('utf8'); });
  child.stderr!.on('data', (c: Buffer) => { err += c.toString('utf8'); });
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let gone = false;
  void exit.then(() => { gone = true; });
  await waitFor(() => gone || /\n/.test(out), 20_000, 'the server to listen');
  const m = /^listening on 127\.0\.0\.1:(\d+)\n/.exec(out);
  if (!m) throw new Error(`the server did not start: stdout ${JSON.stringify(out)}, stderr ${JSON.stringify(err)}`);
  return { port: Number(m[1]), child, log: () => out, stderr: () => err, exit };
}

