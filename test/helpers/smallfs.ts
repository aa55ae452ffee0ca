// A small, size-limited filesystem for one test, so that a test can make something (a
// replication destination, say) run out of space for real and see ENOSPC from the kernel.
//
// The real thing comes first: a sparse image file of exactly sizeMiB, formatted ext4 with no
// reserved blocks (`-m 0`, so that root hits ENOSPC as well) and loop-mounted. Usable space is
// therefore somewhat below sizeMiB (ext4's journal, inode tables and bitmaps take 10-25% at
// these sizes; e.g. 16 MiB leaves ~13.4 MiB free, 32 MiB ~24.6 MiB) but never above it.
// Where loop devices cannot be used (a container without /dev/loop*, no mkfs.ext4), the
// fallback is a tmpfs with `size=<N>m`, whose free space is exactly sizeMiB; it also gives
// ENOSPC to root, but is not a block filesystem (no journal, no delayed allocation).
// REPLFS_SMALLFS=tmpfs forces the fallback, to try it on a machine where loop devices work.
//
// Everything lives in a mkdtemp directory under TEST_TMP (which is under os.tmpdir()), so
// test/run.mjs reports a mount left behind, and t.teardown unmounts and removes it whatever
// the test's outcome.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { TEST_TMP, run, isMounted } from './env.js';

export type SmallFsKind = 'ext4-loop' | 'tmpfs';

export interface SmallFsInfo {
  kind: SmallFsKind;
  /** The mounted directory that smallFilesystem returned. */
  mountpoint: string;
  /** The mkdtemp directory holding the mountpoint (and the image); removed at teardown. */
  tempDir: string;
  /** The sparse image file (ext4-loop only). */
  image?: string;
  /** The loop device it is attached to (ext4-loop only), e.g. /dev/loop3. */
  device?: string;
  sizeMiB: number;
}

/** Every directory this module creates starts with this, for leftover checks. */
export const SMALLFS_PREFIX = path.join(TEST_TMP, 'smallfs-');

const live = new Map<string, SmallFsInfo>();
/**
 * Why loop-mounted ext4 failed, once it has in this process (worker): later calls then go
 * straight to tmpfs, and only the first test to fall back logs why.
 */
let loopUnavailable: string | undefined;

/**
 * A fresh, empty, mounted directory with a capacity of about `sizeMiB` (at most that much is
 * usable), unmounted and removed by t.teardown. See the top of this file for what backs it.
 */
export async function smallFilesystem(t: ExecutionContext, sizeMiB: number): Promise<string> {
  if (!Number.isInteger(sizeMiB) || sizeMiB < 4) throw new Error(`smallFilesystem: sizeMiB must be an integer >= 4, got ${sizeMiB}`);
  fs.mkdirSync(TEST_TMP, { recursive: true });
  const tempDir = fs.realpathSync(await fsp.mkdtemp(SMALLFS_PREFIX));
  const mountpoint = path.join(tempDir, 'mnt');
  fs.mkdirSync(mountpoint);
  const info: SmallFsInfo = { kind: 'ext4-loop', mountpoint, tempDir, sizeMiB };
  live.set(mountpoint, info);
  // Registered before anything is mounted, so a failure half-way is cleaned up too.
  t.teardown(() => unmountSmallFilesystem(mountpoint));

  const forced = process.env.REPLFS_SMALLFS === 'tmpfs';
  if (!forced && loopUnavailable === undefined) {
    const err = await mountExt4Loop(info);
    if (err === undefined) {
      await prepareRoot(mountpoint);
      return mountpoint;
    }
    loopUnavailable = err;
    t.log(`smallFilesystem: loop-mounted ext4 not available here, falling back to tmpfs: ${err}`);
  }
  info.kind = 'tmpfs';
  delete info.image;
  delete info.device;
  await fsp.rm(path.join(tempDir, 'fs.img'), { force: true });
  const r = await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0755`, 'replfs-smallfs', mountpoint]);
  if (r.code !== 0) throw new Error(`smallFilesystem: mounting a tmpfs failed too (${r.code}): ${r.stderr}${r.stdout}` +
    (loopUnavailable && !forced ? `; loop: ${loopUnavailable}` : ''));
  await prepareRoot(mountpoint);
  return mountpoint;
}

/** Returns undefined when mounted, or why it could not be. */
async function mountExt4Loop(info: SmallFsInfo): Promise<string | undefined> {
  const image = path.join(info.tempDir, 'fs.img');
  info.image = image;
  // Sparse: takes no space on the host until written.
  const fd = fs.openSync(image, 'wx', 0o600);
  try {
    fs.ftruncateSync(fd, info.sizeMiB * 1024 * 1024);
  } finally {
    fs.closeSync(fd);
  }
  // Initialise inode tables and journal now rather than from a kernel thread after mounting,
  // so nothing writes to the device behind the test's back.
  const mk = await run('mkfs.ext4', ['-q', '-F', '-m', '0', '-E', 'lazy_itable_init=0,lazy_journal_init=0', image]);
  if (mk.code !== 0) return `mkfs.ext4 failed (${mk.code}): ${(mk.stderr + mk.stdout).trim() || 'no output; is it installed and on PATH?'}`;
  let last = '';
  // mount finds a free loop device itself; retry in case parallel tests race for one.
  for (let attempt = 0; attempt < 3; attempt++) {
    const m = await run('mount', ['-t', 'ext4', '-o', 'loop', image, info.mountpoint]);
    if (m.code === 0 && (await isMounted(info.mountpoint))) {
      info.device = await sourceOf(info.mountpoint);
      return undefined;
    }
    last = `mount -o loop failed (${m.code}): ${(m.stderr + m.stdout).trim()}`;
    await detachLoopsFor(image);
    await sleep(100 * (attempt + 1));
  }
  return last;
}

/** The fresh filesystem's root, made empty (no lost+found) and like any new directory. */
async function prepareRoot(mountpoint: string): Promise<void> {
  // e2fsck recreates lost+found if it ever needs it; tests want an empty directory.
  await fsp.rm(path.join(mountpoint, 'lost+found'), { recursive: true, force: true });
  await fsp.chmod(mountpoint, 0o755);
}

/**
 * Unmounts a filesystem made by smallFilesystem and removes its directory and image. Safe to
 * call more than once (teardown calls it again). `umount` is retried while the mount is busy,
 * then detached lazily (`umount -l`) as a last resort; a loop device still attached after
 * that is detached (or, while still in use, set to detach once released).
 */
export async function unmountSmallFilesystem(mountpoint: string): Promise<void> {
  const info = live.get(mountpoint);
  if (!info) return;
  let detail = '';
  for (let attempt = 0; attempt < 5 && (await isMounted(mountpoint)); attempt++) {
    const r = await run('umount', [mountpoint], { timeoutMs: 30_000 });
    if (r.code === 0) continue;
    detail = (r.stderr + r.stdout).trim();
    await sleep(100 * (attempt + 1));
  }
  if (await isMounted(mountpoint)) await run('umount', ['-l', mountpoint], { timeoutMs: 30_000 });
  if (await isMounted(mountpoint)) {
    // Leave the directory alone: removing it now would empty the small filesystem instead.
    throw new Error(`smallFilesystem: could not unmount ${mountpoint}: ${detail}`);
  }
  if (info.image) await detachLoopsFor(info.image);
  await fsp.rm(info.tempDir, { recursive: true, force: true });
  live.delete(mountpoint);
}

/** What backs a directory returned by smallFilesystem (while it is mounted). */
export function smallFilesystemInfo(mountpoint: string): SmallFsInfo | undefined {
  const info = live.get(mountpoint);
  return info ? { ...info } : undefined;
}

export interface SmallFsLeftovers {
  /** Mount points under the prefix. */
  mounts: string[];
  /** Loop devices whose backing file is under the prefix, as "/dev/loopN: <file>". */
  loops: string[];
}

/**
 * What is still mounted, or attached to a loop device, under `prefix` (by default, anything
 * this module made in this run). Both lists are empty when everything was cleaned up.
 */
export async function smallFilesystemLeftovers(prefix: string = SMALLFS_PREFIX): Promise<SmallFsLeftovers> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  const mounts = text.split('\n').map((l) => unescapeMountPath(l.split(' ')[4] ?? '')).filter((p) => p !== '' && p.startsWith(prefix));
  const loops = (await loopBackingFiles())
    .filter(({ file }) => file.startsWith(prefix))
    .map(({ dev, file }) => `${dev}: ${file}`);
  return { mounts, loops };
}

/** The source device of a mount point, from /proc/self/mountinfo. */
async function sourceOf(mountpoint: string): Promise<string | undefined> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    if (unescapeMountPath(fields[4] ?? '') !== mountpoint) continue;
    const sep = fields.indexOf('-');
    return sep >= 0 ? fields[sep + 2] : undefined;
  }
  return undefined;
}

/** Attached loop devices and their backing files, from sysfs (no `losetup` needed). */
async function loopBackingFiles(): Promise<Array<{ dev: string; file: string }>> {
  const out: Array<{ dev: string; file: string }> = [];
  const names = await fsp.readdir('/sys/block').catch(() => [] as string[]);
  for (const name of names.filter((n) => /^loop\d+$/.test(n))) {
    const file = await fsp.readFile(`/sys/block/${name}/loop/backing_file`, 'utf8').catch(() => undefined);
    // The kernel appends " (deleted)" once the image file has been removed.
    if (file !== undefined) out.push({ dev: `/dev/${name}`, file: file.trim().replace(/ \(deleted\)$/, '') });
  }
  return out;
}

async function detachLoopsFor(image: string): Promise<void> {
  for (const { dev, file } of await loopBackingFiles()) {
    if (file === image) await run('losetup', ['-d', dev]);
  }
}

function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
