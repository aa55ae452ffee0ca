// The CLI side of the control socket.
import net from 'node:net';
import { ExitCode, ReplfsError, type ExitCodeName } from '../errors/index.js';
import type { ControlProgress, ControlResponse } from './protocol.js';

/**
 * Runs a command in the daemon. `timeoutMs` is how long to wait without a word from it: a
 * progress line (`onProgress` gets each) starts the wait again.
 */
export async function call<T>(socketPath: string, cmd: string, args: Record<string, unknown> = {}, timeoutMs = 60_000, onProgress?: (p: unknown) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const sock = net.connect(socketPath);
    let buffered = '';
    let answered = false;
    const expire = () => {
      sock.destroy();
      reject(new ReplfsError('timeout', `the replfs daemon did not answer "${cmd}" within ${timeoutMs / 1000}s`));
    };
    let timer = setTimeout(expire, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify({ id: 1, cmd, args }) + '\n'));
    sock.on('data', (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while (!answered && (nl = buffered.indexOf('\n')) >= 0) {
        const line = JSON.parse(buffered.slice(0, nl)) as ControlResponse | ControlProgress;
        buffered = buffered.slice(nl + 1);
        clearTimeout(timer);
        if ('progress' in line) {
          onProgress?.(line.progress);
          timer = setTimeout(expire, timeoutMs);
          continue;
        }
        answered = true;
        sock.end();
        if (line.ok) resolve(line.result as T);
        else {
          const exit = (line.error.exit in ExitCode ? line.error.exit : 'internal') as ExitCodeName;
          reject(new ReplfsError(exit, line.error.message, line.error.hint));
        }
      }
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(new ReplfsError('busy', `cannot reach the replfs daemon at ${socketPath}: ${err.message}`));
    });
    sock.on('close', () => {
      clearTimeout(timer);
      if (!answered) reject(new ReplfsError('internal', `the replfs daemon closed the control connection during "${cmd}"`));
    });
  });
}

/**
 * Sends a streaming command (`receive`) and, once the daemon has agreed, returns the
 * connection: from then on it carries raw bytes both ways. A refusal rejects like `call`.
 */
export async function openStream(socketPath: string, cmd: string, args: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve, reject) => {
    const sock = net.connect(socketPath);
    let buffered: Buffer = Buffer.alloc(0);
    let settled = false;
    const settle = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.off('data', onData);
      if (err) {
        sock.destroy();
        reject(err);
      } else {
        sock.pause();
        resolve(sock);
      }
    };
    const timer = setTimeout(() => settle(new ReplfsError('timeout', `the replfs daemon did not answer "${cmd}" within ${timeoutMs / 1000}s`)), timeoutMs);
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const nl = buffered.indexOf(0x0a);
      if (nl < 0) return;
      let res: ControlResponse;
      try {
        res = JSON.parse(buffered.subarray(0, nl).toString('utf8')) as ControlResponse;
      } catch {
        settle(new ReplfsError('internal', `the replfs daemon answered "${cmd}" with something that is not JSON`));
        return;
      }
      if (!res.ok) {
        const exit = (res.error.exit in ExitCode ? res.error.exit : 'internal') as ExitCodeName;
        settle(new ReplfsError(exit, res.error.message, res.error.hint));
        return;
      }
      // Detached and paused first, so that the bytes put back wait for the stream's reader.
      settle(null);
      const rest = buffered.subarray(nl + 1);
      if (rest.length) sock.unshift(rest);
    };
    sock.on('connect', () => sock.write(JSON.stringify({ id: 1, cmd, args }) + '\n'));
    sock.on('data', onData);
    sock.on('error', (err) => settle(new ReplfsError('busy', `cannot reach the replfs daemon at ${socketPath}: ${err.message}`)));
    sock.on('close', () => settle(new ReplfsError('internal', `the replfs daemon closed the control connection during "${cmd}"`)));
  });
}
