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
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content, { mode });
  fs.chmodSync(file, mode);
  return file;
}

export interface Background {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** The exit code (null when ended by a signal). */
  exit: Promise<number | null>;
}

/** Starts a process in the background, its output watched; killed in teardown if it is still running. */
export function background(t: ExecutionContext, cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Background {
  const child = spawn(cmd, args, { env: opts.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited(child);
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => { out += c.toString('utf8'); });
  child.stderr!.on('data', (c: Buffer) => { err += c.toString('utf8'); });
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, stdout: () => out, stderr: () => err, exit };
}

/** `replfs serve <root> --listen 127.0.0.1:0 ...`, up and listening; killed in teardown whatever happens. */
export async function startServer(t: ExecutionContext, root: string, args: string[], listen = '127.0.0.1:0', env?: NodeJS.ProcessEnv): Promise<Server> {
  const srv = background(t, process.execPath, [BIN, 'serve', root, '--listen', listen, ...args], env ? { env } : {});
  let gone = false;
  void srv.exit.then(() => { gone = true; });
  await waitFor(() => gone || /\n/.test(srv.stdout()), 20_000, 'the server to listen');
  const m = /^listening on 127\.0\.0\.1:(\d+)\n/.exec(srv.stdout());
  const asked = listen.slice(listen.lastIndexOf(':') + 1);
  if (!m || (asked !== '0' && m[1] !== asked)) throw new Error(`the server did not start on ${listen}: stdout ${JSON.stringify(srv.stdout())}, stderr ${JSON.stringify(srv.stderr())}`);
  return { port: Number(m[1]), child: srv.child, log: srv.stdout, stderr: srv.stderr, exit: srv.exit };
}
