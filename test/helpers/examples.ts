// Plumbing for the tests of examples/: a `replfs` executable on a PATH of the test's own,
// `replfs serve --listen` servers on a port chosen beforehand, and background processes
// whose output is watched, all ended in teardown whatever happens.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { BIN, exited, waitFor, type Scratch } from './env.js';

/**
 * A directory holding a `replfs` that runs this checkout, as `npm install -g` would put one
 * on the PATH. Returns the directory; `path.join(dir, 'replfs')` is the executable.
 */
export function replfsOnPath(s: Scratch): string {
  const dir = path.join(s.dir, 'bin');
  fs.mkdirSync(dir, { recursive: true });
  const exe = path.join(dir, 'replfs');
  fs.writeFileSync(exe, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} "$@"\n`, { mode: 0o755 });
  return dir;
}

/** The environment of the scratch, with `dir` first on the PATH. */
export function withPath(s: Scratch, dir: string, more: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...s.env, PATH: `${dir}:${s.env.PATH ?? '/usr/bin:/bin'}`, ...more };
}

/** A token file as `replfs serve` and `replfs sync` want it (mode 600, 48 characters). */
export function tokenFile(file: string): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, randomBytes(24).toString('hex') + '\n', { mode: 0o600 });
  fs.chmodSync(file, 0o600);
  return file;
}

/** A TCP port of 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export interface Background {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** The exit code (null when ended by a signal). */
  exit: Promise<number | null>;
}

/** Starts a process in the background; killed in teardown if it is still running. */
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

/** `replfs serve <root> --listen 127.0.0.1:<port>`, once it listens. */
export async function serveOn(t: ExecutionContext, s: Scratch, root: string, port: number, token: string): Promise<Background> {
  const srv = background(t, process.execPath, [BIN, 'serve', root, '--listen', `127.0.0.1:${port}`, '--token-file', token], { env: s.env });
  let gone = false;
  void srv.exit.then(() => { gone = true; });
  await waitFor(() => gone || srv.stdout().includes('\n'), 20_000, 'the server to listen');
  if (!srv.stdout().startsWith(`listening on 127.0.0.1:${port}\n`)) {
    throw new Error(`the server did not start: stdout ${JSON.stringify(srv.stdout())}, stderr ${JSON.stringify(srv.stderr())}`);
  }
  return srv;
}
