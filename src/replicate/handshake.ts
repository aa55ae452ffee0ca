// The opening exchange of a replication connection (docs/protocol.md, section 2): the
// sender's `hello`, the receiver's `welcome` or `error`. Pure decisions, so that every
// answer to every malformed or hostile hello is table-tested without a socket.
import { createHash, timingSafeEqual } from 'node:crypto';

/** Protocol versions this build speaks, oldest first. */
export const PROTOCOL_VERSIONS: readonly number[] = [1, 2];

export interface Hello {
  protocol: 'replfs';
  versions: number[];
  software: string;
  token?: string;
  /** Which replica of a `serve --listen` server (the NAME of replfs://host:port/NAME). */
  target?: string;
}

export interface Welcome {
  version: number;
  software: string;
}

export interface WireError {
  code: string;
  message: string;
  transient: boolean;
  /** What the user might do about it. */
  hint?: string;
  /** The exit code the sender should end with (a name from docs/cli.md's table). */
  exit?: string;
}

export type HelloAnswer = { ok: true; welcome: Welcome } | { ok: false; error: WireError };

/** The same words for a wrong token, a missing one, or a malformed one: nothing to learn. */
export const AUTH_FAILED: WireError = { code: 'auth', message: 'authentication failed', transient: false };

export function makeHello(software: string, token?: string, target?: string): Hello {
  return {
    protocol: 'replfs', versions: [...PROTOCOL_VERSIONS], software,
    ...(token === undefined ? {} : { token }), ...(target === undefined ? {} : { target }),
  };
}

/**
 * Whether `given` is the expected token, in time that does not depend on where they
 * differ or on their lengths (both are hashed first).
 */
export function tokenMatches(expected: string, given: unknown): boolean {
  const a = createHash('sha256').update(expected, 'utf8').digest();
  const b = createHash('sha256').update(typeof given === 'string' ? given : '', 'utf8').digest();
  return timingSafeEqual(a, b) && typeof given === 'string';
}

/**
 * The receiver's answer to a decoded `hello` body. With `token` set (a TCP listener), the
 * token is checked before anything else, and any failure to present it is AUTH_FAILED.
 */
export function answerHello(body: unknown, opts: { software: string; token?: string }): HelloAnswer {
  const hello = typeof body === 'object' && body !== null && !Array.isArray(body) ? body as Record<string, unknown> : null;
  if (opts.token !== undefined && !tokenMatches(opts.token, hello?.token)) return { ok: false, error: AUTH_FAILED };
  if (!hello || hello.protocol !== 'replfs') {
    return { ok: false, error: { code: 'protocol', message: 'the peer does not speak the replfs protocol', transient: false } };
  }
  if (hello.target !== undefined && typeof hello.target !== 'string') {
    return { ok: false, error: { code: 'protocol', message: 'the hello names its target replica with something that is not a string', transient: false } };
  }
  const versions = Array.isArray(hello.versions) ? hello.versions.filter((v): v is number => Number.isInteger(v)) : [];
  const common = PROTOCOL_VERSIONS.filter((v) => versions.includes(v));
  if (common.length === 0) {
    const theirs = versions.length ? versions.join(', ') : 'none';
    return {
      ok: false,
      error: { code: 'version', message: `no common protocol version: this side speaks ${PROTOCOL_VERSIONS.join(', ')}, the peer ${theirs}`, transient: false },
    };
  }
  return { ok: true, welcome: { version: Math.max(...common), software: opts.software } };
}
