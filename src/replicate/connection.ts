// A replication connection: frames in and out of one duplex byte stream (a pipe, ssh's
// stdio, or a TCP socket), with the handshake on top. Both ends use it.
import type { Duplex, Writable } from 'node:stream';
import { FrameDecoder, ProtocolError, decodeJson, encodeJson, encodeFrame, type Frame, type FrameTypeName } from './frames.js';
import { answerHello, makeHello, type Welcome, type WireError } from './handshake.js';

/** The connection failed. `transient` says whether trying again may help. */
export class ConnectionError extends Error {
  constructor(readonly code: string, message: string, readonly transient: boolean) {
    super(message);
    this.name = 'ConnectionError';
  }
}

/** How long a side waits for the other's first frame. */
export const HANDSHAKE_TIMEOUT_MS = 15_000;

export interface ConnectionOptions {
  /** Most bytes per second this side sends (--bwlimit); unlimited when absent. */
  sendRate?: number;
  /**
   * Where to write, when `stream` only wraps it (Duplex.from over a child's stdin): writing
   * to the real stream tells when the bytes have left (see sendParts), the wrapper does not.
   */
  output?: Writable;
}

export class Connection {
  private readonly decoder = new FrameDecoder();
  private readonly frames: Frame[] = [];
  private waiter: { resolve: (f: Frame) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;
  /** Bytes written to and read from the stream. */
  bytesOut = 0;
  bytesIn = 0;
  /** When the rate limit lets the next byte go (ms, performance.now()). */
  private nextSend = 0;

  private readonly out: Writable;

  constructor(private readonly stream: Duplex, private opts: ConnectionOptions = {}) {
    this.out = opts.output ?? stream;
    // Writing to a peer that is gone fails here (EPIPE): the connection fails, the process goes on.
    if (this.out !== stream) this.out.on('error', (err) => this.fail(new ConnectionError('io', `connection failed: ${err.message}`, true)));
    stream.on('data', (chunk: Buffer) => {
      this.bytesIn += chunk.length;
      if (this.failure) return;
      try {
        for (const f of this.decoder.push(chunk)) this.deliver(f);
      } catch (err) {
        this.fail(err as Error);
        // The peer sent bytes we refuse: tell it why if we still can, then hang up.
        this.sendError({ code: 'protocol', message: (err as Error).message, transient: false });
      }
    });
    stream.on('end', () => {
      try {
        this.decoder.end();
        this.fail(new ConnectionError('closed', 'the peer closed the connection', true));
      } catch (err) {
        this.fail(err as Error);
      }
    });
    stream.on('error', (err) => this.fail(new ConnectionError('io', `connection failed: ${err.message}`, true)));
    stream.on('close', () => this.fail(new ConnectionError('closed', 'the connection closed', true)));
  }

  /** The next frame; rejects when the stream fails, ends, or nothing comes in `timeoutMs`. */
  next(timeoutMs = 0): Promise<Frame> {
    const ready = this.frames.shift();
    if (ready) return Promise.resolve(ready);
    if (this.failure) return Promise.reject(this.failure);
    if (this.waiter) return Promise.reject(new Error('Connection.next: one reader at a time'));
    return new Promise<Frame>((resolve, reject) => {
      let timer: NodeJS.Timeout | null = null;
      const settle = () => { if (timer) clearTimeout(timer); this.waiter = null; };
      this.waiter = { resolve: (f) => { settle(); resolve(f); }, reject: (e) => { settle(); reject(e); } };
      if (timeoutMs > 0) {
        timer = setTimeout(() => this.waiter?.reject(new ConnectionError('timeout', `no answer from the peer in ${timeoutMs / 1000} s`, true)), timeoutMs);
      }
    });
  }

  /** Writes a frame, waiting while the stream's buffer is full. */
  send(frame: Buffer): Promise<void> {
    return this.sendParts([frame]);
  }

  /**
   * Writes one frame given in pieces (a header and a block, say), without copying them
   * together; nothing else is written between them. Resolves once the stream took them,
   * or (`flushed`) once it has handed them on, after which the caller may reuse their memory.
   */
  async sendParts(parts: Buffer[], opts: { flushed?: boolean } = {}): Promise<void> {
    if (this.failure) throw this.failure;
    const length = parts.reduce((n, p) => n + p.length, 0);
    const rate = this.opts.sendRate;
    if (rate) {
      // A leaky bucket: each frame takes its share of time; a short burst (50 ms) may go at once.
      const now = performance.now();
      const start = Math.max(this.nextSend, now - 50);
      this.nextSend = start + (length / rate) * 1000;
      if (this.nextSend > now) await new Promise((r) => setTimeout(r, this.nextSend - now));
      if (this.failure) throw this.failure;
    }
    this.bytesOut += length;
    let ok = true;
    let written: Promise<void> | null = null;
    this.out.cork();
    for (let i = 0; i < parts.length; i++) {
      if (opts.flushed && i === parts.length - 1) {
        written = new Promise<void>((resolve, reject) => {
          ok = this.out.write(parts[i], (err) => (err ? reject(this.failure ?? err) : resolve())) && ok;
        });
      } else {
        ok = this.out.write(parts[i]) && ok;
      }
    }
    this.out.uncork();
    // Failing first (the peer gone), the drain wait throws; the write's own failure then has nobody waiting.
    (written as Promise<void> | null)?.catch(() => undefined);
    if (!ok) await this.drained();
    if (written) await written;
  }

  /** One wait for 'drain' shared by every sender that found the buffer full. */
  private draining: Promise<void> | null = null;
  private drained(): Promise<void> {
    this.draining ??= new Promise<void>((resolve, reject) => {
      const onDrain = () => { this.out.off('close', onClose); this.draining = null; resolve(); };
      const onClose = () => { this.out.off('drain', onDrain); this.draining = null; reject(this.failure ?? new ConnectionError('closed', 'the connection closed', true)); };
      this.out.once('drain', onDrain);
      this.out.once('close', onClose);
    });
    return this.draining;
  }

  /** Sends at most `bytesPerSecond` from now on. */
  limitSendRate(bytesPerSecond: number): void {
    this.opts = { ...this.opts, sendRate: bytesPerSecond };
  }

  sendJson(type: FrameTypeName, value: unknown): Promise<void> {
    return this.send(encodeJson(type, value));
  }

  /** Sends an `error` frame and closes the stream once it is written. */
  sendError(error: WireError): void {
    if (this.out.writableEnded || this.out.destroyed) return;
    this.out.end(encodeFrame('error', Buffer.from(JSON.stringify(error), 'utf8')));
  }

  close(): void {
    if (!this.out.destroyed) this.out.end();
  }

  /**
   * Ends the writing side if it is still open and resolves once what was written has been
   * handed on (or the stream failed, or `timeoutMs` passed): a process about to exit waits
   * for this, or its last frame (often an `error`) may never leave.
   */
  async flushed(timeoutMs = 5000): Promise<void> {
    const s = this.out;
    if (s.writableFinished || s.destroyed) return;
    if (!s.writableEnded) s.end();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      function done() { clearTimeout(timer); resolve(); }
      s.once('finish', done);
      s.once('close', done);
      s.once('error', done);
    });
  }

  destroy(): void {
    this.stream.destroy();
    if (this.out !== this.stream) this.out.destroy();
  }

  private deliver(f: Frame): void {
    if (this.waiter) this.waiter.resolve(f);
    else this.frames.push(f);
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.waiter?.reject(err);
  }
}

/** The error a peer's `error` frame carries, as a ConnectionError. */
function peerError(frame: Frame): ConnectionError {
  const body = decodeJson(frame) as Partial<WireError>;
  return new ConnectionError(String(body.code ?? 'unknown'), `the peer refused: ${String(body.message ?? 'no reason given')}`, body.transient === true);
}

/** Sender side: says hello and returns the receiver's welcome, or throws its refusal. */
export async function greet(conn: Connection, software: string, token?: string, target?: string): Promise<Welcome> {
  await conn.sendJson('hello', makeHello(software, token, target));
  const frame = await conn.next(HANDSHAKE_TIMEOUT_MS);
  if (frame.type === 'error') throw peerError(frame);
  if (frame.type !== 'welcome') throw new ProtocolError('unknown-type', `expected welcome, got ${frame.type}`);
  const w = decodeJson(frame) as Partial<Welcome>;
  if (!Number.isInteger(w.version)) throw new ProtocolError('bad-json', 'the welcome names no protocol version');
  return { version: w.version!, software: String(w.software ?? '') };
}

/** What the receiver agreed to, and which replica the sender asked for (if it named one). */
export type Accepted = Welcome & { target: string | null };

/**
 * Receiver side: waits for the hello and answers it. Returns the agreed welcome, or sends
 * the refusal, closes, and throws it.
 */
export async function accept(conn: Connection, opts: { software: string; token?: string; timeoutMs?: number }): Promise<Accepted> {
  let frame: Frame;
  try {
    frame = await conn.next(opts.timeoutMs ?? HANDSHAKE_TIMEOUT_MS);
  } catch (err) {
    // Nothing usable arrived in time: hang up without explaining more than that.
    if (err instanceof ConnectionError && err.code === 'timeout') conn.sendError({ code: 'timeout', message: 'no hello in time', transient: true });
    throw err;
  }
  let body: unknown = null;
  if (frame.type === 'hello') {
    try { body = decodeJson(frame); } catch { body = null; }
  }
  const answer = answerHello(body, opts);
  if (!answer.ok) {
    conn.sendError(answer.error);
    throw new ConnectionError(answer.error.code, answer.error.message, false);
  }
  await conn.sendJson('welcome', answer.welcome);
  const target = (body as { target?: unknown }).target;
  return { ...answer.welcome, target: typeof target === 'string' ? target : null };
}
