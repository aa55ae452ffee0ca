// The daemon side of the control socket.
import net from 'node:net';
import { unlink, chmod } from 'node:fs/promises';
import { ReplfsError, messageOf } from '../errors/index.js';
import { MAX_LINE, type ControlErrorBody, type ControlRequest, type ControlResponse } from './protocol.js';

/** A command. `progress` sends a progress line to the client that asked (long commands). */
export type Handler = (args: Record<string, unknown>, progress: (p: unknown) => void) => Promise<unknown>;

/**
 * A command that takes its connection over (`receive`). It is called with the request's
 * arguments; it may refuse by throwing, which answers like any command. Otherwise it
 * returns the session: the server answers `ok`, and from then on the socket carries raw
 * bytes both ways and belongs to the session, which must end or destroy it.
 */
export type StreamHandler = (args: Record<string, unknown>) => Promise<(sock: net.Socket) => Promise<void>>;

export class ControlServer {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  private constructor(private readonly path: string, private readonly handlers: Record<string, Handler>, private readonly streams: Record<string, StreamHandler>) {
    // Half-open: a streaming peer may finish sending and still wait for our last bytes.
    this.server = net.createServer({ allowHalfOpen: true }, (sock) => this.serve(sock));
  }

  static async listen(path: string, handlers: Record<string, Handler>, streams: Record<string, StreamHandler> = {}): Promise<ControlServer> {
    await unlink(path).catch(() => undefined);
    const s = new ControlServer(path, handlers, streams);
    await new Promise<void>((resolve, reject) => {
      s.server.once('error', reject);
      s.server.listen(path, () => { s.server.off('error', reject); resolve(); });
    });
    await chmod(path, 0o600);
    return s;
  }

  private serve(sock: net.Socket): void {
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => undefined);
    let streaming = false;
    let pending = 0;
    let ended = false;
    // A line-mode peer that is done sending is done: close our side once its answers are out.
    sock.on('end', () => {
      ended = true;
      if (!streaming && pending === 0) sock.end();
    });
    let buffered: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
      let nl: number;
      while ((nl = buffered.indexOf(0x0a)) >= 0) {
        const line = buffered.subarray(0, nl).toString('utf8');
        buffered = buffered.subarray(nl + 1);
        const req = parseRequest(line);
        if (req && Object.hasOwn(this.streams, req.cmd)) {
          // Everything after this line is the stream's: stop reading lines, keep the rest.
          streaming = true;
          sock.off('data', onData);
          sock.pause();
          if (buffered.length) sock.unshift(buffered);
          void this.startStream(sock, req, this.streams[req.cmd]!);
          return;
        }
        pending++;
        void this.answer(sock, req).finally(() => {
          if (--pending === 0 && ended && !streaming) sock.end();
        });
      }
      if (buffered.length > MAX_LINE) {
        sock.off('data', onData);
        sock.end(JSON.stringify({ id: 0, ok: false, error: { exit: 'usage', message: 'control request too large' } }) + '\n');
      }
    };
    sock.on('data', onData);
  }

  private async answer(sock: net.Socket, req: ControlRequest | null): Promise<void> {
    if (!req) {
      sock.write(JSON.stringify({ id: 0, ok: false, error: { exit: 'usage', message: 'malformed control request' } }) + '\n');
      return;
    }
    let res: ControlResponse;
    const handler = Object.hasOwn(this.handlers, req.cmd) ? this.handlers[req.cmd] : undefined;
    if (!handler) {
      res = { id: req.id, ok: false, error: { exit: 'usage', message: `unknown control command ${JSON.stringify(req.cmd)}` } };
    } else {
      const progress = (p: unknown) => { if (!sock.destroyed) sock.write(JSON.stringify({ id: req.id, progress: p }) + '\n'); };
      try {
        res = { id: req.id, ok: true, result: await handler(req.args ?? {}, progress) };
      } catch (err) {
        res = { id: req.id, ok: false, error: errorBody(err) };
      }
    }
    if (!sock.destroyed) sock.write(JSON.stringify(res) + '\n');
  }

  private async startStream(sock: net.Socket, req: ControlRequest, handler: StreamHandler): Promise<void> {
    let session: (sock: net.Socket) => Promise<void>;
    try {
      session = await handler(req.args ?? {});
    } catch (err) {
      sock.end(JSON.stringify({ id: req.id, ok: false, error: errorBody(err) } satisfies ControlResponse) + '\n');
      return;
    }
    if (sock.destroyed) return;
    sock.write(JSON.stringify({ id: req.id, ok: true, result: { streaming: true } } satisfies ControlResponse) + '\n');
    try {
      await session(sock);
    } catch {
      // The session reports its own failures; all that is left is to hang up.
      sock.destroy();
    }
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await unlink(this.path).catch(() => undefined);
  }
}

function parseRequest(line: string): ControlRequest | null {
  try {
    const req = JSON.parse(line) as ControlRequest;
    if (typeof req !== 'object' || req === null || typeof req.cmd !== 'string') return null;
    if (req.args !== undefined && (typeof req.args !== 'object' || req.args === null || Array.isArray(req.args))) return null;
    return req;
  } catch {
    return null;
  }
}

function errorBody(err: unknown): ControlErrorBody {
  return err instanceof ReplfsError
    ? { exit: err.exit, message: err.message, ...(err.hint ? { hint: err.hint } : {}) }
    : { exit: 'internal', message: messageOf(err) };
}
