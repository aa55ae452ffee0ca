// Where `replfs sync` sends to, from the command line's destination argument (pure).
//   /path or ./path or path      a local replica directory
//   [user@]host:/path            through ssh, as rsync does
//   ssh://[user@]host[:port]/path
//   replfs://host:port/NAME      a `replfs serve --listen` server
import { ReplfsError } from '../errors/index.js';

export type Destination =
  | { kind: 'local'; path: string }
  | { kind: 'ssh'; user: string | null; host: string; port: number | null; path: string }
  | { kind: 'tcp'; host: string; port: number; name: string };

const bad = (dest: string, why: string) => new ReplfsError('usage', `${JSON.stringify(dest)} is not a destination: ${why}`,
  'use a local path, [user@]host:/path, ssh://[user@]host[:port]/path or replfs://host:port/NAME');

function port(dest: string, text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > 65535) throw bad(dest, `the port ${JSON.stringify(text)} is not a number from 1 to 65535`);
  return n;
}

function checkHost(dest: string, host: string): string {
  if (host === '' || host.startsWith('-') || /[\s/@]/.test(host)) throw bad(dest, `the host ${JSON.stringify(host)} is not a host name`);
  return host;
}

function checkUser(dest: string, user: string): string {
  if (user === '' || user.startsWith('-') || /[\s/:@]/.test(user)) throw bad(dest, `the user ${JSON.stringify(user)} is not a user name`);
  return user;
}

export function parseDestination(dest: string): Destination {
  if (dest === '' || dest.includes('\0')) throw bad(dest, 'it is empty or holds a NUL');
  if (dest.startsWith('replfs://')) {
    const m = /^replfs:\/\/([^/:]*):([^/]*)\/(.*)$/.exec(dest);
    if (!m) throw bad(dest, 'expected replfs://host:port/NAME');
    const name = m[3]!;
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw bad(dest, `the name ${JSON.stringify(name)} must be letters, digits, '.', '_' or '-'`);
    return { kind: 'tcp', host: checkHost(dest, m[1]!), port: port(dest, m[2]!), name };
  }
  if (dest.startsWith('ssh://')) {
    const m = /^ssh:\/\/(?:([^@/]*)@)?([^/:]*)(?::([^/]*))?(\/.*)$/.exec(dest);
    if (!m) throw bad(dest, 'expected ssh://[user@]host[:port]/path');
    return { kind: 'ssh', user: m[1] === undefined ? null : checkUser(dest, m[1]), host: checkHost(dest, m[2]!), port: m[3] === undefined ? null : port(dest, m[3]), path: m[4]! };
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(dest)) throw bad(dest, 'unknown scheme');
  // host:path as rsync reads it: a colon before any slash.
  const colon = dest.indexOf(':');
  const slash = dest.indexOf('/');
  if (colon > 0 && (slash < 0 || colon < slash)) {
    const left = dest.slice(0, colon);
    const path = dest.slice(colon + 1);
    if (path === '') throw bad(dest, 'no path after the colon');
    const at = left.lastIndexOf('@');
    return { kind: 'ssh', user: at < 0 ? null : checkUser(dest, left.slice(0, at)), host: checkHost(dest, at < 0 ? left : left.slice(at + 1)), port: null, path };
  }
  return { kind: 'local', path: dest };
}
