// `replfs serve`: the receiving end of `replfs sync`, on stdin and stdout (--stdio) or as a
// TCP server of replicas by name (--listen).
import fs from 'node:fs';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { ReplfsError, hasCode, messageOf } from '../errors/index.js';
import { ConnectionError } from '../replicate/connection.js';
import { Listener, printable, type Answered } from '../replicate/listener.js';
import { readTokenFile } from '../replicate/token.js';
import type { Command } from './command.js';
import { receiveOn } from './receive.js';
import { inlineSyscalls } from '../volume/index.js';

/** What a replica NAME may be: a plain file name, so that it can only name a child of the root. */
export const REPLICA_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const MAX_NAME = 255;
const DEFAULT_MAX_CONNECTIONS = 16;
const DEFAULT_GRACE_S = 60;

export const serve: Command = {
  name: 'serve',
  summary: 'Receive syncs into a replica directory (what `replfs sync` runs at the far end).',
  args: '<replica-root>',
  description: [
    'With --stdio, answers one sync on standard input and output, then exits: `replfs sync`',
    'runs it as a child for a local destination, and through ssh for a remote one. The',
    'replica root is created (or protected, if it is an empty directory) on the first sync.',
    'A directory that is neither empty nor a replica is refused.',
    '',
    'With --listen HOST:PORT, serves `replfs sync <path> replfs://HOST:PORT/NAME` until',
    'SIGTERM or SIGINT: each NAME is the replica <replica-root>/NAME (made on its first',
    'sync), and <replica-root> must exist. Every sender must present the token of',
    '--token-file; with --tls-cert and --tls-key, also TLS. Port 0 picks a free port. The',
    'first line on stdout is `listening on HOST:PORT`; then one line per connection. The',
    'options below --listen go with it.',
  ].join('\n'),
  options: {
    stdio: { type: 'boolean', description: 'serve one sync on stdin and stdout' },
    listen: { type: 'string', value: 'HOST:PORT', description: 'serve syncs over TCP ([::1]:PORT for IPv6)' },
    'token-file': { type: 'string', value: 'FILE', description: 'the token senders must present (first line, mode 600)' },
    'tls-cert': { type: 'string', value: 'FILE', description: 'require TLS, with this certificate chain (PEM)' },
    'tls-key': { type: 'string', value: 'FILE', description: 'the private key of --tls-cert (PEM)' },
    'max-connections': { type: 'string', value: 'N', description: `syncs served at once, more told to retry (default ${DEFAULT_MAX_CONNECTIONS})` },
    grace: { type: 'string', value: 'SECONDS', description: `on SIGTERM, time left to running syncs (default ${DEFAULT_GRACE_S})` },
  },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    const listen = values.listen as string | undefined;
    if (values.stdio && listen !== undefined) throw new ReplfsError('usage', '--stdio and --listen do not go together: choose one', 'see: replfs serve --help');
    if (!values.stdio && listen === undefined) throw new ReplfsError('usage', 'say how to serve: --stdio or --listen HOST:PORT', 'see: replfs serve --help');
    const root = path.resolve(positionals[0]!);
    if (values.stdio) {
      for (const o of ['token-file', 'tls-cert', 'tls-key', 'max-connections', 'grace']) {
        if (values[o] !== undefined) throw new ReplfsError('usage', `--${o} goes with --listen, not --stdio`, 'see: replfs serve --help');
      }
      return serveStdio(root);
    }
    return serveListen(root, listen!, values);
  },
};

async function serveStdio(root: string): Promise<number> {
  // Nothing may reach stdout but protocol frames.
  console.log = console.error;
  try {
    // One sync and no mount to serve: syscalls inline are cheaper than the thread pool.
    inlineSyscalls(true);
    await receiveOn(() => root, Duplex.from({ readable: process.stdin, writable: process.stdout }));
    return 0;
  } catch (err) {
    process.stderr.write(`replfs serve: ${messageOf(err)}\n`);
    return err instanceof ReplfsError ? err.exitCode : 1;
  }
}

/** HOST:PORT, or [IPv6]:PORT; port 0 means any free port. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]/]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new ReplfsError('usage', `--listen ${JSON.stringify(text)} is not HOST:PORT`, 'e.g. --listen 0.0.0.0:7000 (all addresses), 127.0.0.1:0 (a free port), [::1]:7000');
  }
  return { host: m[1] ?? m[2]!, port };
}

function wholeNumber(option: string, text: unknown, fallback: number, min: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (typeof text !== 'string' || !/^\d+$/.test(text) || n < min) throw new ReplfsError('usage', `--${option} wants a whole number of at least ${min}, got ${JSON.stringify(text)}`);
  return n;
}

function readPem(option: string, file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) throw new ReplfsError('notFound', `--${option} ${file} does not exist`);
    if (hasCode(err, 'EACCES', 'EPERM')) throw new ReplfsError('permission', `--${option} ${file} cannot be read: permission denied`);
    throw new ReplfsError('usage', `--${option} ${file} cannot be read: ${messageOf(err)}`);
  }
}

/**
 * The replica directory for a sender's NAME, refused (nothing created) unless NAME is a plain
 * name and what is there is a real directory or nothing.
 */
export function replicaFor(root: string, target: string | null): string {
  if (target === null) throw new ReplfsError('refused', 'the sender named no replica (sync to replfs://HOST:PORT/NAME)');
  if (!REPLICA_NAME.test(target) || target.length > MAX_NAME) {
    throw new ReplfsError('refused', `${printable(target)} is not a replica name: letters, digits, '.', '_' and '-', not starting with '.', '_' or '-', at most ${MAX_NAME}`);
  }
  const dir = path.join(root, target);
  let st: fs.Stats | null = null;
  try {
    st = fs.lstatSync(dir);
  } catch (err) {
    if (!hasCode(err, 'ENOENT')) throw err;
  }
  if (st && !st.isDirectory()) throw new ReplfsError('refused', `the replica ${target} is not a directory on the server (${st.isSymbolicLink() ? 'a symlink' : 'a file'})`);
  return dir;
}

async function serveListen(root: string, listen: string, values: Record<string, unknown>): Promise<number> {
  const { host, port } = parseListen(listen);
  const maxConnections = wholeNumber('max-connections', values['max-connections'], DEFAULT_MAX_CONNECTIONS, 1);
  const graceMs = wholeNumber('grace', values.grace, DEFAULT_GRACE_S, 0) * 1000;
  const certFile = values['tls-cert'] as string | undefined;
  const keyFile = values['tls-key'] as string | undefined;
  if ((certFile === undefined) !== (keyFile === undefined)) throw new ReplfsError('usage', '--tls-cert and --tls-key go together: give both, or neither');
  const tokenFile = values['token-file'] as string | undefined;
  if (tokenFile === undefined) throw new ReplfsError('usage', '--listen needs --token-file FILE: the token every sender must present', 'make one with: (umask 077; openssl rand -hex 32 > FILE)');
  let st: fs.Stats;
  try {
    st = fs.statSync(root);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) throw new ReplfsError('notFound', `${root} does not exist`, 'make the directory that will hold the replicas first');
    throw err;
  }
  if (!st.isDirectory()) throw new ReplfsError('notFound', `${root} is not a directory`);
  const token = readTokenFile(path.resolve(tokenFile));
  const tls = certFile !== undefined && keyFile !== undefined
    ? { cert: readPem('tls-cert', path.resolve(certFile)), key: readPem('tls-key', path.resolve(keyFile)) }
    : undefined;

  const log = (line: string) => process.stdout.write(`${new Date().toISOString()} ${line}\n`);
  const inUse = new Set<string>();
  const answer = async (stream: Duplex): Promise<Answered> => {
    // Known once the sender is authenticated: a refused sender's NAME is neither logged nor held.
    let name: string | null = null;
    const claim = (target: string | null): (() => void) => {
      if (target !== null && inUse.has(target)) {
        throw new ReplfsError('busy', `the replica ${target} is busy: another sync into it is running; try again later`);
      }
      name = target;
      if (target !== null) inUse.add(target);
      return () => { if (target !== null) inUse.delete(target); };
    };
    try {
      const { replicaSnapshot, target } = await receiveOn((t) => replicaFor(root, t), stream, { token, claim });
      name ??= target;
      return { name, outcome: replicaSnapshot === null ? 'ok: already current, nothing received' : `ok: replica snapshot ${replicaSnapshot}` };
    } catch (err) {
      const transient = (err instanceof ConnectionError && err.transient) || (err instanceof ReplfsError && (err.exit === 'busy' || err.exit === 'unavailable'));
      return { name, outcome: `${transient ? 'failed' : 'refused'}: ${messageOf(err).split('\n')[0]}` };
    }
  };
  const listener = await Listener.start({ host, port, tls, maxConnections, answer, log });
  // Handlers first: a signal sent as soon as the address is out must not find the default.
  const stopped = new Promise<void>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        log(`${signal} again: cutting ${listener.active} connection(s) now`);
        listener.cut();
        return;
      }
      stopping = true;
      log(`${signal}: no new connections; waiting up to ${graceMs / 1000} s for ${listener.active} running sync(s)`);
      void listener.stop(graceMs).then((cut) => {
        log(cut > 0 ? `stopped (${cut} connection(s) cut before they ended)` : 'stopped');
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
        resolve();
      });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  process.stdout.write(`listening on ${listener.address()}\n`);
  log(`serving replicas under ${root}: token required${tls ? ', TLS required' : ''}, at most ${maxConnections} syncs at once`);
  await stopped;
  return 0;
}
