// The TCP side of `replfs serve --listen` (docs/protocol.md, "Transports"): accepts
// connections, tells TLS from plaintext by the first byte, holds the connection cap, and
// hands each connection's stream to `answer` (which runs one sync on it). It stops
// accepting on stop() and gives the running connections a bounded time to finish.
//
// The first byte decides: 0x16 opens a TLS handshake record, while a replfs frame starts
// with the high byte of a length of at most 2 MiB, that is 0x00. A server with a
// certificate requires TLS: a plaintext sender gets a plaintext `error` frame
// `tls-required`. A server without one answers a TLS ClientHello with a TLS alert, so the
// sender's TLS library reports a refused handshake rather than a broken connection.
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { ReplfsError, hasCode, messageOf } from '../errors/index.js';
import { HANDSHAKE_TIMEOUT_MS } from './connection.js';
import { encodeFrame } from './frames.js';
import type { WireError } from './handshake.js';

/** The first byte of a TLS handshake record (a ClientHello). */
const TLS_HANDSHAKE = 0x16;
/** A TLS record: alert (0x15), TLS 1.2 record version, length 2, fatal (2), handshake_failure (40). */
const TLS_ALERT_HANDSHAKE_FAILURE = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 40]);
/** Connections beyond the cap are still answered (`busy`), up to this many more; further ones are dropped. */
const OVERFLOW = 16;
/** How long a connection may stay silent in both directions before it is cut. */
export const IDLE_TIMEOUT_MS = 30 * 60_000;
/** How long a refused connection is given to read its answer and hang up. */
const LINGER_MS = 5000;

export interface ListenerOptions {
  host: string;
  port: number;
  /** Require TLS, with this certificate chain and key (PEM). */
  tls?: { cert: Buffer; key: Buffer };
  /** Connections answered at once; more get a transient `busy` error. */
  maxConnections: number;
  /** How long to wait for a connection's first byte, and for its TLS handshake. */
  openingTimeoutMs?: number;
  /** Runs one connection's exchange on `stream`; resolves with what the log line says of it. */
  answer(stream: Duplex, peer: string): Promise<Answered>;
  /** One line per connection, and a line for anything else worth an operator's eye. */
  log(line: string): void;
}

/** What became of one connection, for its log line. */
export interface Answered {
  /** The replica it named, as far as it got (null before the token was accepted). */
  name: string | null;
  outcome: string;
}

export class Listener {
  private readonly sockets = new Set<net.Socket>();
  /** The TLS socket over a connection's socket, once its handshake is done. */
  private readonly secured = new Map<net.Socket, tls.TLSSocket>();
  private readonly running = new Set<Promise<void>>();
  private readonly secure: tls.SecureContext | null;
  private answering = 0;
  private stopping = false;
  private wasCut = 0;
  private readonly wereCut = new WeakSet<net.Socket>();

  private constructor(private readonly server: net.Server, private readonly opts: ListenerOptions) {
    this.secure = opts.tls ? tls.createSecureContext({ cert: opts.tls.cert, key: opts.tls.key, minVersion: 'TLSv1.2' }) : null;
    server.maxConnections = opts.maxConnections + OVERFLOW;
    server.on('connection', (socket: net.Socket) => this.track(socket));
    server.on('drop', (d?: { remoteAddress?: string; remotePort?: number }) => opts.log(`${peerOf(d?.remoteAddress, d?.remotePort)} - dropped: over ${server.maxConnections} connections`));
  }

  /**
   * Listens on `opts.host`:`opts.port` (port 0: any free port). Refuses a certificate or key
   * that does not load (usage), a port in use (busy), a port this user may not bind
   * (permission), an address that is not this machine's (refused).
   */
  static async start(opts: ListenerOptions): Promise<Listener> {
    const server = net.createServer({ pauseOnConnect: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: 60_000 });
    let listener: Listener;
    try {
      listener = new Listener(server, opts);
    } catch (err) {
      throw new ReplfsError('usage', `the TLS certificate or key does not load: ${messageOf(err)}`, 'both must be PEM files, the key matching the certificate');
    }
    const where = `${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${opts.port}`;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => {
        server.off('listening', onListening);
        if (hasCode(err, 'EADDRINUSE')) reject(new ReplfsError('busy', `${where} is in use by another process`, 'choose another port, or stop what listens there (ss -ltnp)'));
        else if (hasCode(err, 'EACCES')) reject(new ReplfsError('permission', `not allowed to listen on ${where}`, 'ports below 1024 need root or CAP_NET_BIND_SERVICE'));
        else if (hasCode(err, 'EADDRNOTAVAIL')) reject(new ReplfsError('refused', `${opts.host} is not an address of this machine`));
        else if (hasCode(err, 'ENOTFOUND', 'EAI_AGAIN')) reject(new ReplfsError('usage', `cannot resolve ${JSON.stringify(opts.host)}`, 'listen on an address, e.g. 0.0.0.0:7000 or 127.0.0.1:7000'));
        else reject(new ReplfsError('refused', `cannot listen on ${where}: ${err.message}`));
      };
      const onListening = () => {
        server.off('error', onError);
        server.on('error', (err) => opts.log(`accepting failed: ${err.message}`));
        resolve();
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen({ host: opts.host, port: opts.port, exclusive: true });
    });
    return listener;
  }

  /** The address and port actually bound, as HOST:PORT. */
  address(): string {
    const a = this.server.address() as net.AddressInfo;
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  /** Connections being answered now (those refused as `busy` not counted). */
  get active(): number {
    return this.answering;
  }

  /**
   * Stops accepting, waits up to `graceMs` for the running connections to end, then cuts
   * the ones left. Resolves with how many were cut, once every answer has wound down.
   */
  async stop(graceMs: number): Promise<number> {
    this.stopping = true;
    // Its callback waits for every connection to end: the grace below bounds that instead.
    this.server.close();
    const timer = setTimeout(() => this.cut(), graceMs);
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
    clearTimeout(timer);
    return this.wasCut;
  }

  /** Cuts every open connection now (the grace is over, or a second signal came). */
  cut(): void {
    for (const s of this.sockets) {
      if (this.wereCut.has(s)) continue;
      this.wereCut.add(s);
      this.wasCut++;
      this.secured.get(s)?.destroy();
      s.destroy();
    }
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    const counted = !this.stopping && this.answering < this.opts.maxConnections;
    if (counted) this.answering++;
    const task = this.serve(socket, counted).catch((err: unknown) => {
      this.opts.log(`${peerOf(socket.remoteAddress, socket.remotePort)} - internal error: ${messageOf(err)}`);
    }).finally(() => {
      if (counted) this.answering--;
      this.sockets.delete(socket);
      this.secured.get(socket)?.destroy();
      this.secured.delete(socket);
      socket.destroy();
      this.running.delete(task);
    });
    this.running.add(task);
  }

  private async serve(socket: net.Socket, counted: boolean): Promise<void> {
    const started = Date.now();
    const peer = peerOf(socket.remoteAddress, socket.remotePort);
    // The stream the exchange runs on: the socket, or the TLS socket over it.
    let stream: net.Socket = socket;
    const line = (name: string | null, outcome: string) => {
      const secs = ((Date.now() - started) / 1000).toFixed(2);
      this.opts.log(`${peer} ${name === null ? '-' : printable(name)} ${outcome} (${stream.bytesRead} bytes in, ${stream.bytesWritten} out, ${secs} s)`);
    };
    socket.on('error', () => { /* reported by whoever reads the stream; a reset must not crash the server */ });
    const timeout = this.opts.openingTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
    const first = await firstByte(socket, timeout);
    if (first === null) {
      line(null, 'closed: nothing arrived');
      return;
    }
    if (first === TLS_HANDSHAKE) {
      if (!this.secure) {
        socket.end(TLS_ALERT_HANDSHAKE_FAILURE);
        await linger(socket);
        line(null, 'refused: a TLS connection, but this server has no --tls-cert');
        return;
      }
      const secured = await handshake(socket, this.secure, timeout);
      if (typeof secured === 'string') {
        line(null, `refused: TLS handshake failed: ${secured}`);
        return;
      }
      stream = secured;
      this.secured.set(socket, secured);
    } else if (this.secure) {
      await refuse(stream, { code: 'tls-required', message: 'this server requires TLS (sync with --tls-ca)', transient: false });
      line(null, 'refused: a plaintext connection, but this server requires TLS');
      return;
    }
    if (!counted) {
      const why = this.stopping ? 'the server is stopping' : `the server is serving its most syncs at once (${this.opts.maxConnections})`;
      await refuse(stream, { code: 'busy', message: `${why}; try again later`, transient: true });
      line(null, `busy: ${why}`);
      return;
    }
    stream.setTimeout(IDLE_TIMEOUT_MS, () => stream.destroy(new Error(`silent for ${IDLE_TIMEOUT_MS / 60_000} minutes`)));
    const { name, outcome } = await this.opts.answer(stream, peer);
    await linger(stream);
    line(name, this.wereCut.has(socket) ? 'cut: the server stopped before the connection ended' : outcome);
  }
}

function peerOf(address: string | undefined, port: number | undefined): string {
  if (address === undefined) return 'unknown';
  return address.includes(':') ? `[${address}]:${port ?? '?'}` : `${address}:${port ?? '?'}`;
}

/** A name as a sender sent it, safe for a one-line log (quoted when it is not a plain name). */
export function printable(name: string): string {
  const short = name.length > 80 ? `${name.slice(0, 80)}...` : name;
  return /^[A-Za-z0-9._-]+$/.test(short) ? short : JSON.stringify(short);
}

/**
 * The first byte the peer sends, leaving it unread for whoever reads the socket next; null
 * if the peer hangs up or says nothing in `timeoutMs`.
 */
function firstByte(socket: net.Socket, timeoutMs: number): Promise<number | null> {
  return new Promise((resolve) => {
    const done = (value: number | null) => {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('end', onGone);
      socket.off('close', onGone);
      resolve(value);
    };
    const onReadable = () => {
      const chunk = socket.read() as Buffer | null;
      if (chunk === null || chunk.length === 0) return;
      socket.unshift(chunk);
      done(chunk[0]!);
    };
    const onGone = () => done(null);
    const timer = setTimeout(onGone, timeoutMs);
    socket.on('readable', onReadable);
    socket.once('end', onGone);
    socket.once('close', onGone);
  });
}

/** The server side of a TLS handshake on `socket`: the secured stream, or why it failed. */
function handshake(socket: net.Socket, context: tls.SecureContext, timeoutMs: number): Promise<tls.TLSSocket | string> {
  return new Promise((resolve) => {
    const secured = new tls.TLSSocket(socket, { isServer: true, secureContext: context });
    const done = (value: tls.TLSSocket | string) => {
      clearTimeout(timer);
      secured.off('secure', onSecure);
      secured.off('error', onError);
      secured.off('close', onClose);
      if (typeof value === 'string') secured.destroy();
      resolve(value);
    };
    const onSecure = () => done(secured);
    const onError = (err: Error) => done(err.message.split('\n')[0]!.replace(/^.*?:SSL routines:[^:]*:/, ''));
    const onClose = () => done('the peer closed the connection (did it refuse the certificate?)');
    const timer = setTimeout(() => done(`no handshake in ${timeoutMs / 1000} s`), timeoutMs);
    secured.on('error', () => { /* after the handshake, errors reach whoever reads the stream */ });
    secured.once('secure', onSecure);
    secured.once('error', onError);
    secured.once('close', onClose);
  });
}

/** Sends `error` as the only answer (whatever the peer sent), then lingers. */
function refuse(stream: Duplex, error: WireError): Promise<void> {
  stream.end(encodeFrame('error', Buffer.from(JSON.stringify(error), 'utf8')));
  return linger(stream);
}

/**
 * Waits (a bounded time) for the peer to hang up after our last words: closing with its
 * bytes still unread would make the kernel reset the connection, and a reset can overtake
 * the answer the peer has not read yet.
 */
function linger(stream: Duplex): Promise<void> {
  if (stream.destroyed) return Promise.resolve();
  if (!stream.writableEnded) stream.end();
  if (stream.listenerCount('data') === 0) stream.resume();
  return new Promise((resolve) => {
    const timer = setTimeout(done, LINGER_MS);
    function done() { clearTimeout(timer); resolve(); }
    stream.once('close', done);
  });
}
