// Typed access to the replfs_sys native addon (src/native/replfs_sys.c): extended
// attributes, mknod, nanosecond utimensat/futimens, readdir with inode numbers and
// readdir with an lstat of every entry. Every call runs its syscall on the libuv thread
// pool and returns a Promise (readdirStatSync excepted). A failed syscall rejects with a
// SysError shaped like Node's fs errors (code 'ENOENT', errno -2, syscall, path).
import { constants as osConstants } from 'node:os';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface SysError extends Error {
  code: string;
  /** Negative errno, as in Node's own fs errors. */
  errno: number;
  syscall: string;
  path?: string;
}

export interface DirEntries {
  names: string[];
  /** d_ino of each entry, as a JS number. */
  inos: number[];
  /** d_type of each entry (one of the DT_* constants). */
  types: number[];
}

/**
 * A directory's entries with the numbers of an lstat of each: row i of `stats` (STAT_FIELDS
 * numbers from i * STAT_FIELDS, indexed by StatField) describes `names[i]`.
 */
export interface DirStats {
  names: string[];
  stats: Float64Array;
}

/**
 * The numbers of a readdirStat row. They are the values of fs.lstat(path, { bigint: true })
 * as Number(value) gives them: ino, mode, nlink, size and rdev as Number(st.ino) and so
 * on; each time as whole seconds and nanoseconds (st.mtimeNs is mtimeSec * 1e9 +
 * mtimeNsec); dev in two 32-bit halves of its 64 bits, so that it compares exactly.
 * `errno` is 0 when the row holds numbers; otherwise the entry could not be looked at
 * (EILSEQ: its name is not valid UTF-8, see readdirStat) and the other fields are 0.
 */
export const StatField = {
  ino: 0, mode: 1, nlink: 2, size: 3,
  mtimeSec: 4, mtimeNsec: 5, ctimeSec: 6, ctimeNsec: 7, birthtimeSec: 8, birthtimeNsec: 9,
  devHi: 10, devLo: 11, rdev: 12, errno: 13,
} as const;
/** Numbers per readdirStat row. */
export const STAT_FIELDS = 14;

interface NativeBinding {
  lgetxattr(path: string, name: string): Promise<Buffer>;
  lsetxattr(path: string, name: string, value: Buffer, flags: number): Promise<void>;
  llistxattr(path: string): Promise<string[]>;
  lremovexattr(path: string, name: string): Promise<void>;
  getxattr(path: string, name: string): Promise<Buffer>;
  listxattr(path: string): Promise<string[]>;
  punchHole(fd: number, offset: number, length: number): Promise<void>;
  syncfs(fd: number): Promise<void>;
  cloexecAll(): number;
  mknod(path: string, mode: number, dev: number): Promise<void>;
  utimensat(
    path: string,
    atimeSec: number,
    atimeNsec: number,
    mtimeSec: number,
    mtimeNsec: number,
    nofollow: boolean,
  ): Promise<void>;
  futimens(fd: number, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): Promise<void>;
  replyShimStats(): ReplyShimStats;
  configureReplyShim(attrTimeoutSeconds: number): void;
  watchDirectory(ino: number, on: boolean): void;
  invalidateEntry(ino: number, name: string | null): Promise<boolean>;
  readdirIno(path: string): Promise<DirEntries>;
  readdirStat(path: string): Promise<DirStats>;
  readdirStatSync(path: string): DirStats;
  readdirStatMany(paths: readonly string[]): Promise<Array<DirStats | SysError>>;
  READDIR_STAT_FIELDS: number;
  UTIME_NOW: number;
  UTIME_OMIT: number;
}

const ADDON_RELATIVE = path.join('src', 'native', 'build', 'Release', 'replfs_sys.node');

/** The replfs package root: the nearest ancestor holding a package.json named "replfs". */
function findProjectRoot(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  let dir = here;
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        const parsed: unknown = JSON.parse(readFileSync(pkg, 'utf8'));
        if (typeof parsed === 'object' && parsed !== null && (parsed as { name?: unknown }).name === 'replfs') {
          return dir;
        }
      } catch {
        // Not a readable package.json: keep walking up.
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  // Compiled layout fallback: dist/src/volume/sys.js sits three levels below the root.
  return path.resolve(here, '..', '..', '..');
}

function loadBinding(): NativeBinding {
  const addonPath = path.join(findProjectRoot(), ADDON_RELATIVE);
  if (!existsSync(addonPath)) {
    throw new Error(
      `replfs native addon not found at ${addonPath}. ` +
        'Build it with `npm run postinstall` (or `node src/native/setup.mjs`).',
    );
  }
  // RTLD_GLOBAL: the addon also carries fuse_reply_shim.c, whose definitions must come
  // first in the global symbol scope, before fuse-native loads libfuse.
  const holder = { exports: {} as unknown };
  process.dlopen(holder, addonPath, osConstants.dlopen.RTLD_NOW! | osConstants.dlopen.RTLD_GLOBAL!);
  const loaded: unknown = holder.exports;
  if (typeof loaded !== 'object' || loaded === null || typeof (loaded as { readdirIno?: unknown }).readdirIno !== 'function' ||
    (loaded as { READDIR_STAT_FIELDS?: unknown }).READDIR_STAT_FIELDS !== STAT_FIELDS) {
    throw new Error(
      `replfs native addon at ${addonPath} is incomplete or stale. ` +
        'Rebuild it with `npm run postinstall` (or `node src/native/setup.mjs`).',
    );
  }
  return loaded as NativeBinding;
}

const native = loadBinding();

/** tv_nsec value meaning "set this time to now". */
export const UTIME_NOW: number = native.UTIME_NOW;
/** tv_nsec value meaning "leave this time unchanged". */
export const UTIME_OMIT: number = native.UTIME_OMIT;

/** lsetxattr flags. */
export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

/** d_type values returned by readdirIno. */
export const DT_UNKNOWN = 0;
export const DT_FIFO = 1;
export const DT_CHR = 2;
export const DT_DIR = 4;
export const DT_BLK = 6;
export const DT_REG = 8;
export const DT_LNK = 10;
export const DT_SOCK = 12;

/** Reads an extended attribute without following a final symlink. */
export function lgetxattr(path: string, name: string): Promise<Buffer> {
  return native.lgetxattr(path, name);
}

/** Sets an extended attribute without following a final symlink. flags: 0, XATTR_CREATE or XATTR_REPLACE. */
export function lsetxattr(path: string, name: string, value: Buffer, flags: number): Promise<void> {
  return native.lsetxattr(path, name, value, flags);
}

/** Lists extended attribute names without following a final symlink. */
export function llistxattr(path: string): Promise<string[]> {
  return native.llistxattr(path);
}

/** Removes an extended attribute without following a final symlink. */
export function lremovexattr(path: string, name: string): Promise<void> {
  return native.lremovexattr(path, name);
}

/** Reads an extended attribute, following a final symlink (for /proc/self/fd/N paths). */
export function getxattr(path: string, name: string): Promise<Buffer> {
  return native.getxattr(path, name);
}

/** Lists extended attribute names, following a final symlink (for /proc/self/fd/N paths). */
export function listxattr(path: string): Promise<string[]> {
  return native.listxattr(path);
}

/** Frees the disk space of a byte range, keeping the size (fallocate FALLOC_FL_PUNCH_HOLE). */
export function punchHole(fd: number, offset: number, length: number): Promise<void> {
  return native.punchHole(fd, offset, length);
}

/** Writes out everything the kernel holds for the filesystem of `fd` (syncfs(2)). */
export function syncfs(fd: number): Promise<void> {
  return native.syncfs(fd);
}

/**
 * Marks every descriptor above 2 close-on-exec (libfuse's /dev/fuse among them), so child
 * processes inherit none of them. Returns how many it changed.
 */
export function cloexecAll(): number {
  return native.cloexecAll();
}

/** mknod(2): mode includes the file type bits (S_IFIFO, S_IFCHR, ...). */
export function mknod(path: string, mode: number, dev: number): Promise<void> {
  return native.mknod(path, mode, dev);
}

/**
 * utimensat(AT_FDCWD, path, ...). Seconds are signed; a nanosecond value of UTIME_NOW
 * or UTIME_OMIT is passed through unchanged. With nofollow, a final symlink's own
 * times change (AT_SYMLINK_NOFOLLOW).
 */
export function utimensat(
  path: string,
  atimeSec: number,
  atimeNsec: number,
  mtimeSec: number,
  mtimeNsec: number,
  nofollow: boolean,
): Promise<void> {
  return native.utimensat(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec, nofollow);
}

/** futimens(2) with the same time conventions as utimensat. */
export function futimens(
  fd: number,
  atimeSec: number,
  atimeNsec: number,
  mtimeSec: number,
  mtimeNsec: number,
): Promise<void> {
  return native.futimens(fd, atimeSec, atimeNsec, mtimeSec, mtimeNsec);
}

/** Lists a directory with d_ino and d_type, skipping "." and "..". Follows a final symlink, like opendir(3). */
export function readdirIno(path: string): Promise<DirEntries> {
  return native.readdirIno(path);
}

/**
 * Lists a directory (skipping "." and "..", following a final symlink like opendir(3))
 * and lstats every entry relative to the open directory, in one call on the thread pool.
 * An entry gone by the time it is looked at is left out, as it would be had the
 * directory been read a moment later. Names are converted like readdirIno's: bytes that
 * are not valid UTF-8 become U+FFFD, and such an entry keeps its place with errno EILSEQ
 * and no numbers (its name does not reach it). Any other failure to look at an entry
 * also stays in its row's errno; failures of the directory itself reject (syscall
 * 'readdir').
 */
export function readdirStat(path: string): Promise<DirStats> {
  return native.readdirStat(path);
}

/**
 * readdirStat of several directories in one call on the thread pool (one hand-off for
 * all, where small directories cost little more than the hand-off): for each path, in
 * order, its DirStats or the SysError readdirStat would have rejected with.
 */
export function readdirStatMany(paths: readonly string[]): Promise<Array<DirStats | SysError>> {
  return native.readdirStatMany(paths);
}

/** readdirStat on the calling thread, throwing its errors: for processes that serve no mount. */
export function readdirStatSync(path: string): DirStats {
  return native.readdirStatSync(path);
}

/** True when err is an error raised by this module (or by Node's fs, which has the same shape). */
export function isSysError(err: unknown): err is SysError {
  return (
    err instanceof Error &&
    typeof (err as Partial<SysError>).code === 'string' &&
    typeof (err as Partial<SysError>).errno === 'number' &&
    typeof (err as Partial<SysError>).syscall === 'string'
  );
}

export interface ReplyShimStats {
  /** LOOKUP/GETATTR/CREATE replies seen; stays 0 if libfuse does not route them here. */
  calls: number;
  /** Replies sent with no attribute caching (files with several hard links). */
  uncached: number;
  /** Cached nodes the kernel was told to drop (a file gained a second link). */
  invalidated: number;
}

/** Counters of the attribute-cache shim (src/native/fuse_reply_shim.c). */
export function replyShimStats(): ReplyShimStats {
  return native.replyShimStats();
}

/** Tells the shim how long the kernel may cache attributes (the mount's attr_timeout). */
export function configureReplyShim(attrTimeoutSeconds: number): void {
  native.configureReplyShim(attrTimeoutSeconds);
}

/**
 * Lets invalidateEntry() reach the mount's directory with inode number `ino` (for
 * `.snapshots`, whose names change without the kernel seeing an operation). The shim
 * learns the directory's node from the replies that look it up.
 */
export function watchDirectory(ino: number, on: boolean): void {
  native.watchDirectory(ino, on);
}

/**
 * Makes the kernel forget the entry `name` of a watched directory (or, for null, the
 * directory's attributes), cached or cached as missing. Resolves false when it had nothing
 * cached. Runs on the thread pool because the kernel waits for lookups in the directory
 * to be answered; keep at most one in flight so that those lookups still find a thread.
 */
export function invalidateEntry(ino: number, name: string | null): Promise<boolean> {
  return native.invalidateEntry(ino, name);
}
