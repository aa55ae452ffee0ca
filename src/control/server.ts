// The daemon side of the control socket.
import net from 'node:net';
import { unlink, chmod } from 'node:fs/promises';
import { ReplfsError, messageOf } from '../errors/index.js';
import { MAX_LINE, type ControlRequest, type ControlResponse } from './protocol.js';

export type Handler = (args: Record<string, unknown>) => Promise<unknown>;

export class ControlServer {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  private constructor(private readonly path: string, private readonly handlers: Record<string, Handler>) {
    this.server = net.createServer((sock) => this.serve(sock));
  }

  static async listen(path: string, handlers: Record<string, Handler>): Promise<ControlServer> {
    await unlink(path).catch(() => undefined);
    const s = new ControlServer(path, handlers);
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
    let buffered = '';
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buffered += chunk;
      if (buffered.length > MAX_LINE) {
        sock.end(JSON.stringify({ id: 0, ok: false, error: { exit: 'usage', message: 'control request too large' } }) + '\n');
        return;
      }
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        void this.answer(sock, line);
      }
    });
  }

  private async answer(sock: net.Socket, line: string): Promise<void> {
    let req: ControlRequest;
    try {
      req = JSON.parse(line) as ControlRequest;
      if (typeof req !== 'object' || req === null || typeof req.cmd !== 'string') throw new Error('not a request');
    } catch {
      sock.write(JSON.stringify({ id: 0, ok: false, error: { exit: 'usage', message: 'malformed control request' } }) + '\n');
      return;
    }
    let res: ControlResponse;
    const handler = Object.hasOwn(this.handlers, req.cmd) ? this.handlers[req.cmd] : undefined;
    if (!handler) {
      res = { id: req.id, ok: false, error: { exit: 'usage', message: `unknown control command ${JSON.stringify(req.cmd)}` } };
    } else {
      try {
        res = { id: req.id, ok: true, result: await handler(req.args ?? {}) };
      } catch (err) {
        res = err instanceof ReplfsError
          ? { id: req.id, ok: false, error: { exit: err.exit, message: err.message, ...(err.hint ? { hint: err.hint } : {}) } }
          : { id: req.id, ok: false, error: { exit: 'internal', message: messageOf(err) } };
      }
    }
    if (!sock.destroyed) sock.write(JSON.stringify(res) + '\n');
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await unlink(this.path).catch(() => undefined);
  }
}
