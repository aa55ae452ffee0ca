// Finding the volume a path belongs to, and whether a daemon is serving it.
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { ReplfsError } from '../errors/index.js';
import type { Volume } from '../volume/index.js';
import { STATE_DIR } from '../volume/format.js';
import { call } from '../control/client.js';
import { findRecord, type DaemonRecord } from '../control/registry.js';
import { mountState, STALE_HINT } from '../fuse/mountpoint.js';
import type { SyncProgress } from '../replicate/sender.js';

/**
 * The engine and the actions, for working on a volume directly: loaded only then, as a
 * command that talks to a mount daemon needs neither (LevelDB alone takes a while to load).
 */
async function direct() {
  const [{ Volume, inlineSyscalls }, { ACTIONS, WRITES }] = await Promise.all([import('../volume/index.js'), import('./actions.js')]);
  // This process serves no mount: its syscalls may run inline (see volume/io.ts).
  inlineSyscalls(true);
  return { Volume, ACTIONS, WRITES };
}

export type Target =
  | { kind: 'daemon'; record: DaemonRecord }
  | { kind: 'direct'; root: string };

/**
 * The nearest directory at or above `p` that holds a .replfs/ state directory. The
 * directory itself is the mark, not its contents: a .replfs/ that lost its config.json
 * is a damaged volume (exit 6 when opened), not "not a protected directory", which is
 * also how `mount` and `init` see it.
 */
export function findVolumeRoot(p: string): string | undefined {
  for (let dir = p; ; dir = path.dirname(dir)) {
    if (isDirectory(path.join(dir, STATE_DIR))) return dir;
    if (dir === '/') return undefined;
  }
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

export async function locate(p: string): Promise<Target> {
  const abs = path.resolve(p);
  const rec = await findRecord(abs);
  if (rec?.alive) return { kind: 'daemon', record: rec };
  if (rec && (await mountState(rec.mountpoint)) === 'stale') {
    throw new ReplfsError('busy', `${rec.mountpoint} is a stale mount: its daemon (pid ${rec.pid}) is gone`,
      `remount with: replfs mount ${rec.root}${rec.inPlace ? '' : ' ' + rec.mountpoint}   or ${STALE_HINT(rec.mountpoint)}`);
  }
  for (let dir = abs; ; dir = path.dirname(dir)) {
    if ((await mountState(dir)) === 'stale') {
      throw new ReplfsError('busy', `${dir} is a stale replfs mount (its daemon was killed)`, STALE_HINT(dir));
    }
    if (dir === '/') break;
  }
  if (!existsSync(abs)) throw new ReplfsError('notFound', `${abs} does not exist`);
  const root = findVolumeRoot(abs);
  if (!root) throw new ReplfsError('notFound', `${abs} is not inside a protected directory`, 'make one with: replfs init <dir>');
  return { kind: 'direct', root };
}

/**
 * Runs a snapshot action on the volume at `p`: through its daemon when mounted, else on
 * the volume opened directly (for writing when the action changes it).
 */
export async function act<T>(p: string, cmd: string, args: Record<string, unknown>, opts: { timeoutMs?: number; progress?: (p: SyncProgress) => void } = {}): Promise<T> {
  const target = await locate(p);
  if (target.kind === 'daemon') {
    // A long sync keeps talking (progress lines), so the wait is for silence, not for the end.
    return call<T>(target.record.socket, cmd, args, opts.timeoutMs ?? 600_000, opts.progress && ((p) => opts.progress!(p as SyncProgress)));
  }
  const { Volume, ACTIONS, WRITES } = await direct();
  const { volume } = await Volume.open(target.root, { writable: WRITES.has(cmd) });
  try {
    return (await ACTIONS[cmd]!(volume, args, { mountpoint: null, progress: opts.progress })) as T;
  } finally {
    await volume.close();
  }
}

/**
 * Answers a read-only question about the volume at `p`: from its daemon over the control
 * socket when it is mounted (LevelDB admits one process), else by opening it directly.
 */
export async function ask<T>(p: string, cmd: string, answer: (volume: Volume) => Promise<T>): Promise<T> {
  const target = await locate(p);
  if (target.kind === 'daemon') return call<T>(target.record.socket, cmd);
  const { Volume } = await direct();
  const { volume } = await Volume.open(target.root, { writable: false });
  try {
    return await answer(volume);
  } finally {
    await volume.close();
  }
}
