// Reaching a destination: a child `replfs serve --stdio` for a local path, the same through
// the system ssh for a remote one (as rsync does). Either way the sync talks to the
// child's stdin and stdout.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { ReplfsError } from '../errors/index.js';
import { Connection } from './connection.js';
import type { Destination } from './destination.js';

export interface Link {
  conn: Connection;
  /** What the sender presents in its hello (replfs:// destinations): the token, and the NAME. */
  token?: string;
  target?: string;
  /** What the far end wrote on stderr so far (for error messages). */
  stderr(): string;
  close(): Promise<void>;
}

/** Quotes one word for a POSIX shell (the remote side of ssh runs a shell). */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}

/**
 * The command line for `dest`: `REPLFS_SSH` (default `ssh`, split on spaces) reaches the
 * host, and `REPLFS_REMOTE_COMMAND` (default `replfs`) is what runs there.
 */
export function commandFor(dest: Destination, env: NodeJS.ProcessEnv = process.env): { file: string; args: string[] } {
  if (dest.kind === 'local') return { file: process.execPath, args: [process.argv[1]!, 'serve', '--stdio', path.resolve(dest.path)] };
  if (dest.kind === 'ssh') {
    const ssh = (env.REPLFS_SSH ?? 'ssh').split(' ').filter((w) => w !== '');
    const remote = env.REPLFS_REMOTE_COMMAND ?? 'replfs';
    return {
      file: ssh[0]!,
      args: [...ssh.slice(1), ...(dest.port === null ? [] : ['-p', String(dest.port)]), '--', dest.user ? `${dest.user}@${dest.host}` : dest.host,
        `${remote} serve --stdio ${shellQuote(dest.path)}`],
    };
  }
  throw new ReplfsError('refused', 'replfs:// destinations need `replfs serve --listen`, which this version does not have yet', 'sync to a local path or over ssh');
}

/** How to reach a replfs:// destination: the token to present, and TLS. */
export interface ConnectOptions {
  /** A file holding the server's token (its first line). */
  tokenFile?: string;
  /** Speak TLS, trusting this CA (or self-signed) certificate file. */
  tlsCa?: string;
}

export async function connect(dest: Destination, _opts: ConnectOptions = {}): Promise<Link> {
  const { file, args } = commandFor(dest);
  const child: ChildProcess = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => { stderr = (stderr + c.toString('utf8')).slice(-4000); });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', (err) => reject(new ReplfsError('unavailable', `cannot start ${file}: ${err.message}`)));
  });
  const stream = Duplex.from({ readable: child.stdout!, writable: child.stdin! });
  return {
    conn: new Connection(stream),
    stderr: () => stderr.trim(),
    close: async () => {
      child.stdin!.end();
      const timer = setTimeout(() => child.kill('SIGTERM'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
