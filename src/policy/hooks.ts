// Quiesce hooks: their configuration (the `quiesce` object of .replfs/config.json) and
// running them. Hooks are child processes spawned asynchronously: a synchronous spawn
// would block the event loop that serves the mount, and a hook touching the mount would
// then deadlock.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

export interface QuiesceConfig {
  /** Shell command run before the cut, while writes still flow. */
  pre: string | null;
  /** Shell command run after the cut; it always runs once the pre-hook has been tried. */
  post: string | null;
  preTimeoutMs: number;
  postTimeoutMs: number;
  barrierTimeoutMs: number;
  /** What to do when the pre-hook fails or times out: take a crash-consistent snapshot, or none. */
  onPreFailure: 'crash' | 'abort';
  /** `replfs sync` quiesces the snapshot it takes, as if given --quiesce. */
  onSync: boolean;
  /** Added to the environment the hooks run with. */
  env: Record<string, string>;
}

export const QUIESCE_DEFAULTS: QuiesceConfig = {
  pre: null, post: null, preTimeoutMs: 30_000, postTimeoutMs: 30_000, barrierTimeoutMs: 10_000, onPreFailure: 'crash', onSync: false, env: {},
};

export class ConfigError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
  }
}

const KEYS = new Set(Object.keys(QUIESCE_DEFAULTS));

/** Validates the `quiesce` object; every error names its field. */
export function parseQuiesce(raw: unknown): QuiesceConfig {
  if (raw === undefined || raw === null) return { ...QUIESCE_DEFAULTS };
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError('quiesce', 'must be an object');
  const out: QuiesceConfig = { ...QUIESCE_DEFAULTS, env: {} };
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    const field = `quiesce.${key}`;
    if (!KEYS.has(key)) throw new ConfigError(field, `unknown key (known: ${[...KEYS].join(', ')})`);
    if (key === 'pre' || key === 'post') {
      if (value !== null && (typeof value !== 'string' || value.trim() === '')) throw new ConfigError(field, 'must be a shell command (a non-empty string) or null');
      out[key] = value as string | null;
    } else if (key === 'env') {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ConfigError(field, 'must be an object of NAME: "value"');
      for (const [name, v] of Object.entries(value as Record<string, unknown>)) {
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new ConfigError(`${field}.${name}`, 'is not an environment variable name (letters, digits and _, not starting with a digit)');
        if (typeof v !== 'string' || v.includes('\0')) throw new ConfigError(`${field}.${name}`, 'must be a string');
        out.env[name] = v;
      }
    } else if (key === 'onSync') {
      if (typeof value !== 'boolean') throw new ConfigError(field, 'must be true or false');
      out.onSync = value;
    } else if (key === 'onPreFailure') {
      if (value !== 'crash' && value !== 'abort') throw new ConfigError(field, 'must be "crash" or "abort"');
      out.onPreFailure = value;
    } else {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 3_600_000) {
        throw new ConfigError(field, 'must be a whole number of milliseconds between 1 and 3600000');
      }
      (out as unknown as Record<string, number>)[key] = value;
    }
  }
  return out;
}

export interface HookOutcome {
  status: 'ok' | 'failed' | 'timeout';
  exitCode: number | null;
  signal: string | null;
  ms: number;
  /** The end of what the hook wrote to stderr. */
  stderr: string;
}

const STDERR_TAIL = 2000;

/**
 * The file mode mask hooks run with. A mount daemon works with umask 0 (files it makes
 * for callers take their modes as asked); hooks get the mask it was started with instead,
 * as any program the user runs would.
 */
let hookUmask: number | null = null;

/** The first call wins: a second daemon in the process (the demo's replica) finds umask 0 already. */
export function setHookUmask(mask: number): void {
  hookUmask ??= mask & 0o777;
}

const KILL_GRACE_MS = 2000;

/**
 * Runs `command` with /bin/sh in its own process group. On timeout the group gets
 * SIGTERM, then SIGKILL. Never throws: the outcome says what happened.
 */
export function runHook(command: string, env: Record<string, string>, timeoutMs: number, cwd: string): Promise<HookOutcome> {
  const started = Date.now();
  return new Promise((resolve) => {
    let stderr = '';
    let timedOut = false;
    let child;
    try {
      // Started in / and moved to `cwd` by the shell: until the child has exec'd, spawn
      // holds the event loop, and a child entering a mount served by this very process
      // would wait for it forever. The shell's cd happens once the loop is free again.
      const umask = hookUmask === null ? '' : `umask ${hookUmask.toString(8).padStart(3, '0')} && `;
      child = spawn('/bin/sh', ['-c', `${umask}cd -- "$0" && eval "$1"`, cwd, command],
        { cwd: '/', env: { ...process.env, ...env }, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      resolve({ status: 'failed', exitCode: null, signal: null, ms: 0, stderr: String(err) });
      return;
    }
    const group = (sig: NodeJS.Signals) => { try { process.kill(-child.pid!, sig); } catch { /* already gone */ } };
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => { stderr = (stderr + d).slice(-STDERR_TAIL); });
    const timer = setTimeout(() => {
      timedOut = true;
      group('SIGTERM');
      setTimeout(() => group('SIGKILL'), KILL_GRACE_MS).unref();
    }, timeoutMs);
    child.on('error', (err) => { stderr += String(err); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        status: timedOut ? 'timeout' : code === 0 ? 'ok' : 'failed',
        exitCode: code, signal, ms: Date.now() - started, stderr: stderr.trim(),
      });
    });
  });
}

const SHELL_WORDS = new Set([
  '.', ':', '[', 'alias', 'bg', 'break', 'cd', 'command', 'continue', 'eval', 'exec', 'exit', 'export', 'false', 'fg', 'getopts',
  'hash', 'jobs', 'kill', 'printf', 'echo', 'pwd', 'read', 'readonly', 'return', 'set', 'shift', 'test', 'times', 'trap', 'true',
  'type', 'ulimit', 'umask', 'unalias', 'unset', 'wait', 'if', 'while', 'until', 'for', 'case', '{', '!', 'sleep',
]);

/**
 * What stands in the way of running `command` (its program is missing or not executable),
 * or null when nothing visible does. Only the first program is checked: after variable
 * assignments, unquoted; anything the shell would expand first is left to the shell.
 * Relative paths are taken from `cwd`, where hooks run (unchecked when it is null). Asynchronous on purpose: the
 * program may live inside the mount this process serves.
 */
export async function commandProblem(command: string, cwd: string | null, searchPath = process.env.PATH ?? '/usr/bin:/bin'): Promise<string | null> {
  let rest = command.trimStart();
  for (;;) {
    const assign = /^[A-Za-z_][A-Za-z0-9_]*=(?:'[^']*'|"[^"]*"|[^\s;|&<>()]*)\s+/.exec(rest);
    if (!assign) break;
    rest = rest.slice(assign[0].length);
  }
  const m = /^(?:'([^']*)'|"([^"$`\\]*)"|([^\s;|&<>()'"]+))/.exec(rest);
  if (!m) return null;
  const word = m[1] ?? m[2] ?? m[3]!;
  if (word === '' || /[$`\\*?[~]/.test(word) || SHELL_WORDS.has(word)) return null;
  if (word.includes('/')) {
    if (cwd === null && !path.isAbsolute(word)) return null;
    const file = path.resolve(cwd ?? '/', word);
    const st = await fsp.stat(file).catch(() => null);
    if (!st) return `${JSON.stringify(word)} does not exist${path.isAbsolute(word) ? '' : ` (relative paths are taken from ${cwd}, where hooks run)`}`;
    if (!st.isFile()) return `${JSON.stringify(word)} is not a file`;
    if (!(await executable(file))) return `${JSON.stringify(word)} is not executable (chmod +x ${file})`;
    return null;
  }
  for (const dir of searchPath.split(':')) {
    if (!dir) continue;
    const file = path.join(dir, word);
    if ((await fsp.stat(file).catch(() => null))?.isFile() && (await executable(file))) return null;
  }
  return `${JSON.stringify(word)} is not a command found in PATH (${searchPath})`;
}

function executable(file: string): Promise<boolean> {
  return fsp.access(file, fs.constants.X_OK).then(() => true, () => false);
}
