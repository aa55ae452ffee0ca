// Mount-point housekeeping: stale mounts left by a killed daemon, unmounting, and
// whether the FUSE runtime is usable at all.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { readMounts, REPLFS_FSTYPE } from '../volume/mounts.js';

export type MountState = 'none' | 'live' | 'stale';

/** Whether a replfs FUSE mount sits exactly at `p`, and whether its daemon still answers. */
export async function mountState(p: string): Promise<MountState> {
  const mounted = (await readMounts()).some((m) => m.mountpoint === p && m.fstype === REPLFS_FSTYPE);
  if (!mounted) return 'none';
  try {
    // statfs always reaches the daemon; stat may be answered from the kernel's cache.
    await statfs(p);
    return 'live';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOTCONN' ? 'stale' : 'live';
  }
}

/** True when any FUSE filesystem (ours or another) is mounted exactly at `p`. */
export async function isMountPoint(p: string): Promise<boolean> {
  return (await readMounts()).some((m) => m.mountpoint === p);
}

function run(cmd: string, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, (err, _stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stderr: String(stderr) });
    });
  });
}

/**
 * Unmounts `p`. Without `lazy` this fails while files are open ('busy'); with it the
 * mount is detached at once and goes away when the last user lets go.
 */
export async function unmountPath(p: string, lazy: boolean): Promise<'ok' | 'busy' | 'notMounted'> {
  // A process passing through (a stat, a directory walk) makes the kernel say busy for an
  // instant: only a mount that stays busy for about a second counts as in use.
  for (const pause of lazy ? [] : BUSY_RETRIES_MS) {
    const result = await unmountOnce(p, false);
    if (result !== 'busy') return result;
    await new Promise((r) => setTimeout(r, pause));
  }
  return unmountOnce(p, lazy);
}

const BUSY_RETRIES_MS = [50, 100, 200, 300, 400];

async function unmountOnce(p: string, lazy: boolean): Promise<'ok' | 'busy' | 'notMounted'> {
  const { code, stderr } = await run('fusermount', [lazy ? '-uz' : '-u', p]);
  if (code === 0) return 'ok';
  if (/busy/i.test(stderr)) return 'busy';
  if (/not found|not mounted|entry for .* not found/i.test(stderr)) return 'notMounted';
  // fusermount is missing or refused; root can use umount(8) directly.
  const fallback = await run('umount', lazy ? ['-l', p] : [p]);
  if (fallback.code === 0) return 'ok';
  if (/busy/i.test(fallback.stderr)) return 'busy';
  if (/not mounted/i.test(fallback.stderr)) return 'notMounted';
  throw new Error(`cannot unmount ${p}: ${stderr.trim() || fallback.stderr.trim()}`);
}

export const STALE_HINT = (p: string) => `clear it with: fusermount -uz ${p}`;

/** Why FUSE cannot be used here, or null when it can. */
export function fuseProblem(): string | null {
  if (!existsSync('/dev/fuse')) return '/dev/fuse does not exist (load the fuse kernel module: modprobe fuse)';
  try {
    createRequire(import.meta.url)('fuse-native');
  } catch (err) {
    return `the FUSE 2 runtime is missing (${(err as Error).message.split('\n')[0]}); install it with: sudo apt-get install -y fuse libfuse2`;
  }
  return null;
}
