// The CLI side of the control socket.
import net from 'node:net';
import { ExitCode, ReplfsError, type ExitCodeName } from '../errors/index.js';
import type { ControlResponse } from './protocol.js';

export async function call<T>(socketPath: string, cmd: string, args: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const sock = net.connect(socketPath);
    let buffered = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new ReplfsError('timeout', `the replfs daemon did not answer "${cmd}" within ${timeoutMs / 1000}s`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify({ id: 1, cmd, args }) + '\n'));
    sock.on('data', (chunk: string) => {
      buffered += chunk;
      const nl = buffered.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      sock.end();
      const res = JSON.parse(buffered.slice(0, nl)) as ControlResponse;
      if (res.ok) resolve(res.result as T);
      else {
        const exit = (res.error.exit in ExitCode ? res.error.exit : 'internal') as ExitCodeName;
        reject(new ReplfsError(exit, res.error.message, res.error.hint));
      }
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(new ReplfsError('busy', `cannot reach the replfs daemon at ${socketPath}: ${err.message}`));
    });
    sock.on('close', () => {
      clearTimeout(timer);
      if (!buffered.includes('\n')) reject(new ReplfsError('internal', `the replfs daemon closed the control connection during "${cmd}"`));
    });
  });
}
