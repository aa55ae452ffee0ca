// Shared test plumbing: unique temp directories, running the real `replfs` command,
// mounting with guaranteed teardown, and comparing directory trees.
import { execFile, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';
import { ExitCode, type ExitCodeName } from '../../src/errors/index.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = path.join(ROOT, 'src/cli/replfs.mjs');
/** Every test directory lives under here, so leftover mounts are easy to find (one per run). */
export const TEST_TMP = process.env.REPLFS_TEST_TMP ?? path.join(os.tmpdir(), 'replfs-test', 'adhoc');

export interface Scratch {
  dir: string;
  /** REPLFS_RUNTIME_DIR for the commands this test runs. */
  runtime: string;
  env: NodeJS.ProcessEnv;
}

/** A fresh directory for one test, removed afterwards (after its mounts are gone). */
export function scratch(t: ExecutionContext): Scratch {
  fs.mkdirSync(TEST_TMP, { recursive: true });
  const dir = fs.mkdtempSync(path.join(TEST_TMP, 't-'));
  // Reachable by other users, for the tests that act as one.
  fs.chmodSync(dir, 0o755);
  fs.chmodSync(TEST_TMP, 0o755);
  const runtime = path.join(dir, '.run');
  fs.mkdirSync(runtime);
  const env = { ...process.env, REPLFS_RUNTIME_DIR: runtime };
  t.teardown(async () => {
    await unmountAllUnder(dir);
    await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  });
  return { dir, runtime, env };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `replfs <args>` as a user would, from the checkout. */
export function replfs(s: Scratch, args: string[], opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return run(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? s.dir, env: { ...s.env, ...opts.env }, timeoutMs: opts.timeoutMs ?? 120_000 });
}

export function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { cwd: opts.cwd, env: opts.env, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        resolve({ code, stdout, stderr });
      });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** A command that must fail: with exit code `exit`, nothing on stdout, and `message` on stderr. */
export function fails(t: ExecutionContext, r: RunResult, exit: ExitCodeName, message: RegExp, what: string): void {
  t.is(r.code, ExitCode[exit], `${what}: expected exit ${ExitCode[exit]} (${exit}); stderr: ${r.stderr}`);
  t.is(r.stdout, '', `${what}: nothing on stdout`);
  t.regex(r.stderr, message, what);
}

/** Runs a shell snippet; fails the test with its output if it exits non-zero. */
export async function sh(t: ExecutionContext, script: string, cwd?: string): Promise<string> {
  const r = await run('/bin/sh', ['-c', script], { cwd });
  if (r.code !== 0) t.fail(`sh failed (${r.code}): ${script}\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** `replfs init` that must succeed. */
export async function initVolume(t: ExecutionContext, s: Scratch, dir: string, extra: string[] = []): Promise<void> {
  const r = await replfs(s, ['init', dir, ...extra]);
  t.is(r.code, 0, `init failed: ${r.stderr}`);
}

/** `replfs mount`, with an unmount registered for teardown whatever happens. */
export async function mountVolume(t: ExecutionContext, s: Scratch, dir: string, mountpoint?: string, extra: string[] = []): Promise<string> {
  const mnt = mountpoint ?? dir;
  t.teardown(() => forceUnmount(s, mnt));
  const r = await replfs(s, ['mount', dir, ...(mountpoint ? [mountpoint] : []), ...extra]);
  if (r.code !== 0) t.fail(`mount failed (${r.code}): ${r.stderr}${r.stdout}`);
  return mnt;
}

/** Unmounts through the CLI, and clears the mount by force if that did not work. */
export async function forceUnmount(s: Scratch, mnt: string): Promise<void> {
  if (!(await isMounted(mnt))) return;
  await replfs(s, ['unmount', '--lazy', mnt], { timeoutMs: 30_000 });
  if (await isMounted(mnt)) await run('fusermount', ['-uz', mnt]);
}

export async function mountsUnder(dir: string): Promise<string[]> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  return text.split('\n').map((l) => l.split(' ')[4] ?? '')
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p === dir || p.startsWith(dir + '/'));
}

export async function isMounted(p: string): Promise<boolean> {
  return (await mountsUnder(p)).includes(p);
}

async function unmountAllUnder(dir: string): Promise<void> {
  for (const m of (await mountsUnder(dir)).reverse()) {
    await run('fusermount', ['-uz', m]);
    if (await isMounted(m)) await run('umount', ['-l', m]);
  }
}

/** Waits until `fn` returns true, polling. */
export async function waitFor(fn: () => Promise<boolean> | boolean, timeoutMs = 20_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface TreeEntry {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  ino: string;
  mtimeNs: string;
  content?: string;
  target?: string;
  xattrs?: Record<string, string>;
}

/**
 * A tree's observable state: every entry's type, mode, owner, size, link count, inode,
 * mtime (ns), content hash, symlink target and user xattrs. `.replfs` is never part of it.
 */
export async function describeTree(root: string, opts: { xattrs?: boolean; inodes?: boolean } = {}): Promise<Record<string, TreeEntry>> {
  const out: Record<string, TreeEntry> = {};
  const walk = async (rel: string): Promise<void> => {
    const names = (await fsp.readdir(path.join(root, rel))).filter((n) => !(rel === '' && n === '.replfs')).sort();
    for (const name of names) {
      const r = rel ? `${rel}/${name}` : name;
      const p = path.join(root, r);
      const st = await fsp.lstat(p, { bigint: true });
      const e: TreeEntry = {
        type: st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : st.isFile() ? 'file' : 'other',
        mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), size: st.isDirectory() ? 0 : Number(st.size), nlink: Number(st.nlink),
        ino: opts.inodes === false ? '' : st.ino.toString(), mtimeNs: st.isDirectory() ? '' : st.mtimeNs.toString(),
      };
      if (st.isFile()) e.content = await hashFile(p);
      if (st.isSymbolicLink()) e.target = await fsp.readlink(p);
      if (opts.xattrs && (st.isFile() || st.isDirectory())) {
        const r2 = await run('getfattr', ['-d', '--absolute-names', '-m', '^user\\.', p]);
        e.xattrs = Object.fromEntries(r2.stdout.split('\n').filter((l) => l.includes('=')).map((l) => l.split('=', 2) as [string, string]));
      }
      out[r] = e;
      if (st.isDirectory()) await walk(r);
    }
  };
  await walk('');
  return out;
}

export async function hashFile(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(p, { highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Seeded pseudo-random numbers (mulberry32), so a failing run can be repeated. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function seedFromEnv(name: string): number {
  const v = process.env[name];
  return v ? Number(v) : Math.floor(Math.random() * 2 ** 31);
}

/**
 * A gate letting at most `n` bodies run at once: for test files whose cases each start
 * many processes and daemons, where running every case together only makes all slow.
 */
export function concurrencyGate(n: number): (fn: () => Promise<void>) => Promise<void> {
  let running = 0;
  const waiting: Array<() => void> = [];
  return async (fn) => {
    if (running >= n) await new Promise<void>((r) => waiting.push(r));
    else running++;
    try {
      await fn();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else running--;
    }
  };
}

/** Whether process `pid` runs; a zombie still answers kill(0) but counts as dead. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** Resolves once `child` has exited (at once if it already has). */
export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Every file under `dir`/.replfs/ with its type, size and mtime, or null when there is none. */
export function stateOf(dir: string): Record<string, string> | null {
  const state = path.join(dir, '.replfs');
  if (!fs.existsSync(state)) return null;
  const out: Record<string, string> = {};
  const walk = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(state, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(path.join(state, r), { bigint: true });
      out[r] = st.isDirectory() ? 'dir' : `${st.isFile() ? 'file' : 'other'} ${st.size} ${st.mtimeNs}`;
      if (st.isDirectory()) walk(r);
    }
  };
  walk('');
  return out;
}
