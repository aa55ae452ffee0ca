// Where running mount daemons can be found. A protected directory mounted in place hides
// its own .replfs/, so the CLI cannot reach the control socket by its plain path; each
// daemon therefore leaves a small record in a runtime directory, and the socket is reached
// through the daemon's descriptor of the directory (/proc/<pid>/fd/<fd>/.replfs/...).
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isUnder } from '../volume/mounts.js';

export interface DaemonRecord {
  pid: number;
  /** The protected directory. */
  root: string;
  mountpoint: string;
  inPlace: boolean;
  /** Mounted with --read-only: a replica, whose daemon also receives the syncs into it. */
  replica?: boolean;
  /** The control socket, as reachable from other processes. */
  socket: string;
  volumeId: string;
  startedAt: string;
  version: string;
}

export function runtimeDir(): string {
  if (process.env.REPLFS_RUNTIME_DIR) return process.env.REPLFS_RUNTIME_DIR;
  if (process.getuid?.() === 0) return '/run/replfs';
  if (process.env.XDG_RUNTIME_DIR) return path.join(process.env.XDG_RUNTIME_DIR, 'replfs');
  return path.join(os.tmpdir(), `replfs-${process.getuid?.() ?? 'user'}`);
}

function recordFile(mountpoint: string): string {
  const key = createHash('sha256').update(mountpoint).digest('hex').slice(0, 20);
  return path.join(runtimeDir(), `${key}.json`);
}

export async function register(rec: DaemonRecord): Promise<void> {
  await mkdir(runtimeDir(), { recursive: true, mode: 0o700 });
  const file = recordFile(rec.mountpoint);
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(rec, null, 2) + '\n', { mode: 0o600 });
  await rename(tmp, file);
}

export async function unregister(mountpoint: string, pid = process.pid): Promise<void> {
  const file = recordFile(mountpoint);
  try {
    const rec = JSON.parse(await readFile(file, 'utf8')) as DaemonRecord;
    if (rec.pid === pid) await unlink(file);
  } catch { /* already gone */ }
}

/** True when `pid` is a live replfs process (not a recycled pid of something else). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('replfs');
  } catch {
    return false;
  }
}

export async function listRecords(): Promise<Array<DaemonRecord & { alive: boolean }>> {
  let names: string[];
  try {
    names = await readdir(runtimeDir());
  } catch {
    return [];
  }
  const out: Array<DaemonRecord & { alive: boolean }> = [];
  for (const name of names) {
    if (!name.endsWith('.json')) continue;
    try {
      const rec = JSON.parse(await readFile(path.join(runtimeDir(), name), 'utf8')) as DaemonRecord;
      out.push({ ...rec, alive: isAlive(rec.pid) });
    } catch { /* a record being written or removed */ }
  }
  return out;
}

/**
 * The daemon record that serves `p`: the one whose mountpoint or protected directory
 * is `p` or contains it, the most specific first.
 */
export async function findRecord(p: string): Promise<(DaemonRecord & { alive: boolean }) | undefined> {
  const matches = (await listRecords()).filter((r) =>
    r.mountpoint === p || r.root === p || isUnder(p, r.mountpoint) || isUnder(p, r.root));
  matches.sort((a, b) => Number(b.alive) - Number(a.alive) || Math.max(b.mountpoint.length, b.root.length) - Math.max(a.mountpoint.length, a.root.length));
  return matches[0];
}
