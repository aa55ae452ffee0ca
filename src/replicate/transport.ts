// Reaching a destination: a child `replfs serve --stdio` for a local path, the same through
// the system ssh for a remote one (as rsync does), where the sync talks to the child's
// stdin and stdout; or a TCP connection (TLS with --tls-ca) to `replfs serve --listen`
// for replfs://host:port/NAME.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { ReplfsError, hasCode, messageOf } from '../errors/index.js';
import { Connection, HANDSHAKE_TIMEOUT_MS } from './connection.js';
import type { Destination } from './destination.js';
import { readTokenFile } from './token.js';

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
  throw new Error(`${dest.host}:${dest.port} is reached over TCP, not by a command`);
}

/** How to reach a replfs:// destination: the token to present, and TLS. */
export interface ConnectOptions {
  /** A file holding the server's token (its first line). */
  tokenFile?: string;
  /** Speak TLS, trusting this CA (or self-signed) certificate file. */
  tlsCa?: string;
}

export async function connect(dest: Destination, opts: ConnectOptions = {}): Promise<Link> {
  if (dest.kind === 'tcp') return connectTcp(dest, opts);
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
    conn: new Connection(stream, { output: child.stdin! }),
    stderr: () => stderr.trim(),
    close: async () => {
      child.stdin!.end();
      const timer = setTimeout(() => child.kill('SIGTERM'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Socket errors that say the server could not be reached now (worth trying again), in words. */
const UNREACHABLE: Record<string, string> = {
  ECONNREFUSED: 'connection refused', ECONNRESET: 'connection reset', EPIPE: 'connection reset', ETIMEDOUT: 'timed out',
  EHOSTUNREACH: 'host unreachable', EHOSTDOWN: 'host down', ENETUNREACH: 'network unreachable', ENETDOWN: 'network down',
  ENOTFOUND: 'unknown host', EAI_AGAIN: 'the host name could not be resolved now', EADDRNOTAVAIL: 'address not available',
};

/**
 * A replfs://host:port/NAME destination: the token first (none is a usage error, before any
 * connection), then TCP, and TLS over it with --tls-ca. Not reaching the server is transient
 * (`unavailable`); a certificate that does not verify, or a server that refuses TLS, is not.
 */
async function connectTcp(dest: Extract<Destination, { kind: 'tcp' }>, opts: ConnectOptions, env: NodeJS.ProcessEnv = process.env): Promise<Link> {
  const where = `${dest.host}:${dest.port}`;
  const tokenFile = opts.tokenFile ?? (env.REPLFS_TOKEN_FILE || undefined);
  if (tokenFile === undefined) {
    throw new ReplfsError('usage', `replfs://${where}/${dest.name} needs the server's token: --token-file FILE, or REPLFS_TOKEN_FILE in the environment`,
      'the file holds the token of the server (`replfs serve --listen --token-file`), mode 600');
  }
  const token = readTokenFile(path.resolve(tokenFile));
  let ca: Buffer | null = null;
  if (opts.tlsCa !== undefined) {
    try {
      ca = fs.readFileSync(opts.tlsCa);
    } catch (err) {
      if (hasCode(err, 'ENOENT')) throw new ReplfsError('notFound', `--tls-ca ${opts.tlsCa} does not exist`);
      if (hasCode(err, 'EACCES', 'EPERM')) throw new ReplfsError('permission', `--tls-ca ${opts.tlsCa} cannot be read: permission denied`);
      throw new ReplfsError('usage', `--tls-ca ${opts.tlsCa} cannot be read: ${messageOf(err)}`);
    }
  }
  const socket = await dial(dest.host, dest.port, ca === null ? null : { ca, file: opts.tlsCa! });
  return {
    conn: new Connection(socket),
    token,
    target: dest.name,
    stderr: () => '',
    close: async () => {
      if (socket.destroyed) return;
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      socket.end();
      const timer = setTimeout(() => socket.destroy(), 5000);
      await closed;
      clearTimeout(timer);
    },
  };
}

/** A connected socket to host:port (TLS-secured and verified with `tlsCa`), or why not. */
function dial(host: string, port: number, tlsCa: { ca: Buffer; file: string } | null): Promise<net.Socket> {
  const where = `${host}:${port}`;
  return new Promise((resolve, reject) => {
    const socket: net.Socket = tlsCa === null
      ? net.connect({ host, port })
      // servername: SNI and the name checked against the certificate (an IP is checked as such).
      : tls.connect({ host, port, ca: tlsCa.ca, minVersion: 'TLSv1.2', ...(net.isIP(host) ? {} : { servername: host }) });
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    const ready = tlsCa === null ? 'connect' : 'secureConnect';
    const done = (err: ReplfsError | null) => {
      clearTimeout(timer);
      socket.off(ready, onReady);
      socket.off('error', onError);
      if (err) {
        socket.destroy();
        reject(err);
      } else {
        resolve(socket);
      }
    };
    const onReady = () => done(null);
    const onError = (err: NodeJS.ErrnoException) => {
      const code = err.code ?? '';
      if (code in UNREACHABLE) {
        done(new ReplfsError('unavailable', `cannot reach ${where}: ${UNREACHABLE[code]}`, 'is `replfs serve --listen` running there? retrying may succeed'));
      } else if (tlsCa !== null && /^ERR_SSL_.*ALERT/.test(code)) {
        done(new ReplfsError('refused', `${where} refused the TLS handshake (${alertOf(err.message)}): it may not serve TLS`, 'a server without --tls-cert refuses TLS; sync without --tls-ca, or give the server a certificate'));
      } else if (tlsCa !== null && code !== '' && !code.startsWith('ERR_SSL_') && (code.startsWith('ERR_TLS_CERT') || /^[A-Z_]+$/.test(code))) {
        done(new ReplfsError('refused', `the certificate of ${where} does not verify against ${tlsCa.file}: ${err.message} (${code})`,
          `--tls-ca must hold the server's certificate or the CA that signed it, for the name ${host}`));
      } else {
        done(new ReplfsError('refused', `${tlsCa === null ? 'connecting' : 'the TLS handshake'} with ${where} failed: ${err.message.split('\n')[0]}`));
      }
    };
    const timer = setTimeout(() => done(new ReplfsError('unavailable', `no answer from ${where} in ${HANDSHAKE_TIMEOUT_MS / 1000} s`, 'retrying may succeed')), HANDSHAKE_TIMEOUT_MS);
    socket.once(ready, onReady);
    socket.on('error', onError);
  });
}

/** The alert's words out of an OpenSSL message ("... sslv3 alert handshake failure:..."). */
function alertOf(message: string): string {
  const m = /alert ([a-z ]+)/.exec(message);
  return m ? `alert: ${m[1]!.trim()}` : message.split('\n')[0]!;
}
