// Process plumbing for the benchmark: running commands with a wall-clock time, knowing
// which children are alive (so a signal can stop them), the mount table, and CPU time
// of a daemon read from /proc.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';

export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall-clock seconds from spawn to exit. */
  seconds: number;
}

/** Workload and helper processes currently running; a signal handler kills them. */
export const running = new Set<ChildProcess>();

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
}

export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd ?? '/', stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : null;
    child.on('error', (err) => {
      running.delete(child);
      if (timer) clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      running.delete(child);
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, seconds: Number(process.hrtime.bigint() - started) / 1e9 });
    });
  });
}

/** Like `run`, but a non-zero exit is an error that carries the command's output. */
export async function must(cmd: string, args: string[], opts: RunOptions = {}): Promise<Ran> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    const why = r.signal ? `was killed by ${r.signal}` : `exited with ${r.code}`;
    throw new Error(`${cmd} ${args.join(' ')} ${why}\n${(r.stderr + r.stdout).trim()}`);
  }
  return r;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface MountEntry {
  mountpoint: string;
  fstype: string;
  source: string;
}

const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

export function readMounts(): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const [fstype, source] = right.split(' ');
    out.push({ mountpoint: unescape(left.split(' ')[4] ?? ''), fstype: fstype ?? '', source: unescape(source ?? '') });
  }
  return out;
}

export function mountAt(p: string): MountEntry | undefined {
  return readMounts().filter((m) => m.mountpoint === p).pop();
}

/** Every mount at or below `dir`, deepest last. */
export function mountsUnder(dir: string): MountEntry[] {
  return readMounts().filter((m) => m.mountpoint === dir || m.mountpoint.startsWith(dir + '/'));
}

/** The filesystem a path lives on: the mount with the longest matching prefix. */
export function filesystemOf(p: string): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const m of readMounts()) {
    const under = m.mountpoint === '/' || p === m.mountpoint || p.startsWith(m.mountpoint + '/');
    if (under && (!best || m.mountpoint.length >= best.mountpoint.length)) best = m;
  }
  return best;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let clockTicks = 100;
export function setClockTicks(n: number): void {
  if (Number.isFinite(n) && n > 0) clockTicks = n;
}

/** User + system CPU seconds of a task from its /proc stat line (fields 14 and 15). */
function cpuOfStat(text: string): number {
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  return (Number(rest[11]) + Number(rest[12])) / clockTicks;
}

export interface CpuSample {
  /** The whole process: every thread, including ones that already exited. */
  total: number;
  /** The main thread only: for a Node daemon, the JavaScript event loop. */
  main: number;
}

export async function cpuOf(pid: number): Promise<CpuSample | null> {
  try {
    const [all, main] = await Promise.all([
      fsp.readFile(`/proc/${pid}/stat`, 'utf8'),
      fsp.readFile(`/proc/${pid}/task/${pid}/stat`, 'utf8'),
    ]);
    return { total: cpuOfStat(all), main: cpuOfStat(main) };
  } catch {
    return null;
  }
}

export interface IoSample {
  /** Bytes the process asked read() and friends for, cache hits included. */
  rchar: number;
  /** Bytes the process caused to be fetched from storage. */
  readBytes: number;
  wchar: number;
  writeBytes: number;
}

/** The I/O counters of a process (/proc/<pid>/io, root only), all threads. */
export async function ioOf(pid: number): Promise<IoSample | null> {
  try {
    const text = await fsp.readFile(`/proc/${pid}/io`, 'utf8');
    const field = (k: string) => Number(new RegExp(`^${k}: (\\d+)`, 'm').exec(text)?.[1] ?? NaN);
    return { rchar: field('rchar'), readBytes: field('read_bytes'), wchar: field('wchar'), writeBytes: field('write_bytes') };
  } catch {
    return null;
  }
}
