// The FUSE adapter: fuse-native callbacks in, Volume calls out. Every handler goes
// through `reply`, which always answers the kernel with a number (anything else hangs the
// caller forever) and is the one place where errors become errnos.
//
// fuse-native is used with a patch (src/native/setup.mjs): exact nanosecond times in
// stat arrays and utimens, UTIME_NOW/UTIME_OMIT passed through, open flags for create,
// and the caller's uid, gid and pid appended to every operation's arguments.
import Fuse from 'fuse-native';
import { constants } from 'node:os';
import type { Attr, Caller, DirEntry, StatFs, TimeSpec, Volume } from '../volume/index.js';
import { FsError, SNAPSHOT_DIR, LATEST, viewIno, watchDirectory, invalidateEntry } from '../volume/index.js';

type Signal = (result: number, ...values: unknown[]) => void;

const errnos = constants.errno as Record<string, number>;
const EIO = -errnos.EIO!;
const O_TRUNC = 0o1000;
const ERANGE = -errnos.ERANGE!;

/** The one errno translation: a known code becomes its errno; anything else is EIO, logged. */
export function toErrno(err: unknown): number {
  const code = err && typeof err === 'object' && 'code' in err ? (err as { code: unknown }).code : undefined;
  if (typeof code === 'string' && code in errnos) return -errnos[code]!;
  console.error(`replfs: internal error answered as EIO: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  return EIO;
}

/** Stat layout shared with the patched C side: 18 uint32, times as (seconds, nanoseconds). */
export function encodeStat(a: Attr): Uint32Array {
  const ints = new Uint32Array(18);
  ints[0] = a.mode;
  ints[1] = a.uid;
  ints[2] = a.gid;
  ints[3] = a.size % 0x100000000;
  ints[4] = Math.floor(a.size / 0x100000000);
  ints[5] = a.dev;
  ints[6] = a.nlink;
  ints[7] = a.ino;
  ints[8] = a.rdev;
  ints[9] = a.blksize;
  ints[10] = a.blocks % 0x100000000;
  ints[11] = Math.floor(a.blocks / 0x100000000);
  putTime(ints, 12, a.atime);
  putTime(ints, 14, a.mtime);
  putTime(ints, 16, a.ctime);
  return ints;
}

function putTime(ints: Uint32Array, at: number, t: TimeSpec): void {
  // Seconds travel as unsigned 32 bits: times before 1970 are shown as 1970.
  ints[at] = Math.max(0, Math.min(t.sec, 0xffffffff));
  ints[at + 1] = t.sec < 0 ? 0 : t.nsec;
}

function encodeDirEntry(e: DirEntry): Uint32Array {
  const ints = new Uint32Array(18);
  ints[0] = e.type << 12;
  ints[6] = 1;
  ints[7] = e.ino;
  return ints;
}

/** statvfs fields are 32-bit on this path: scale block counts through the block size. */
export function encodeStatfs(s: StatFs): Uint32Array {
  let { bsize, frsize, blocks, bfree, bavail } = s;
  while (blocks > 0xffffffff) {
    bsize *= 2; frsize *= 2;
    blocks = Math.floor(blocks / 2); bfree = Math.floor(bfree / 2); bavail = Math.floor(bavail / 2);
  }
  const clamp = (n: number) => Math.min(n, 0xffffffff);
  return Uint32Array.from([bsize, frsize, blocks, bfree, bavail, clamp(s.files), clamp(s.ffree), clamp(s.favail), 0, 0, s.namemax]);
}

const EMPTY_STAT = new Uint32Array(18);
const EMPTY_STATFS = new Uint32Array(11);

const timeOf = (sec: number, nsec: number): TimeSpec => ({ sec, nsec });

export interface MountOptions {
  /** Mounting over the protected directory itself (needs libfuse's `nonempty`). */
  inPlace: boolean;
  /** Extra `-o` options, already validated. */
  extra: string[];
  /** Cache times in seconds. Attribute caching stays off by default: see docs/architecture.md. */
  attrTimeout: number;
  entryTimeout: number;
  debug?: boolean;
  /** List .snapshots in the root directory. */
  snapdirVisible?: boolean;
}

/**
 * Where a path lies: in the live tree, or in the read-only snapshot tree. `empty` is the
 * root of a replica mount that has no snapshot yet: an empty read-only directory.
 */
export type Place =
  | { kind: 'live' }
  | { kind: 'snapdir' }
  | { kind: 'latest' }
  | { kind: 'view'; name: string; rel: string }
  | { kind: 'empty' };

const SNAP_PREFIX = `/${SNAPSHOT_DIR}`;

export function placeOf(path: string): Place {
  if (path !== SNAP_PREFIX && !path.startsWith(SNAP_PREFIX + '/')) return { kind: 'live' };
  if (path === SNAP_PREFIX) return { kind: 'snapdir' };
  const rest = path.slice(SNAP_PREFIX.length + 1);
  const cut = rest.indexOf('/');
  const name = cut < 0 ? rest : rest.slice(0, cut);
  if (name === LATEST && cut < 0) return { kind: 'latest' };
  return viewPlace(name, cut < 0 ? '' : rest.slice(cut + 1));
}

/** `rel` inside snapshot `name`; a path with empty, `.` or `..` parts is in no snapshot. */
export function viewPlace(name: string, rel: string): Place {
  for (const part of rel ? rel.split('/') : []) {
    if (part === '' || part === '.' || part === '..') return NOWHERE;
  }
  return { kind: 'view', name, rel };
}

/** A place that does not exist (no snapshot has an empty name): every answer is ENOENT. */
export const NOWHERE: Place = { kind: 'view', name: '', rel: '' };

// `.snapshots` gets one of these per mount in the process: the shim tells mounts apart by it.
const SNAPDIR_INO_TOP = 0xfffffff0;
const SNAPDIR_INO_COUNT = 64;
let snapdirsMade = 0;
const LATEST_INO = 0xfffffff1;
const EROFS = () => Promise.reject(new FsError('EROFS'));

export class VolumeFuse extends Fuse {
  private readonly snapdirIno = SNAPDIR_INO_TOP - (snapdirsMade++ % SNAPDIR_INO_COUNT);
  private readonly stopWatching: () => void;
  private invalidations: Promise<void> = Promise.resolve();
  private viewFiles = 0;

  constructor(mountpoint: string, protected readonly volume: Volume, protected readonly mountOptions: MountOptions) {
    // Every operation is listed so fuse-native registers it; the _op_ overrides below serve them.
    super(mountpoint, Object.fromEntries(OPERATIONS.map((name) => [name, unused])), { timeout: false });
    let watching = true;
    try {
      watchDirectory(this.snapdirIno, true);
    } catch {
      watching = false; // too many mounts in one process: names then change after entry_timeout
    }
    const unsubscribe = volume.onSnapshotsChanged((names) => this.forgetSnapshotNames(names));
    this.stopWatching = () => {
      unsubscribe();
      if (watching) watchDirectory(this.snapdirIno, false);
    };
  }

  /** Stops telling the kernel about snapshot changes; call once the mount is gone. */
  dispose(): void {
    this.stopWatching();
  }

  /** Files open in snapshot views (the volume counts the live ones: Volume.openHandles). */
  get openViewFiles(): number {
    return this.viewFiles;
  }

  /** Where `path` lies. A replica mount (replica.ts) puts its root in a snapshot. */
  protected place(path: string): Place {
    return placeOf(path);
  }

  /**
   * Snapshots appear and disappear without an operation the kernel sees: make it forget
   * what it cached for their names, for `latest`, and for `.snapshots` itself (its mtime
   * is the newest snapshot's). One at a time: each may hold a thread-pool thread until
   * lookups in `.snapshots` are answered, and those may need the pool too.
   */
  private forgetSnapshotNames(names: string[]): Promise<void> {
    const run = async () => {
      for (const name of [...names, LATEST]) await invalidateEntry(this.snapdirIno, name);
      await invalidateEntry(this.snapdirIno, null);
    };
    const done = this.invalidations.then(run);
    this.invalidations = done.catch(() => undefined);
    return done;
  }

  override _fuseOptions(): string {
    const o = this.mountOptions;
    const opts = [
      // No hard_remove: with it, fstat() of a file unlinked while open fails (the kernel asks
      // by inode, libfuse has no path left), and SQLite among others relies on it. libfuse
      // instead renames such a file to .fuse_hidden* and removes it on the last close.
      'fsname=replfs', 'subtype=replfs', 'use_ino', 'big_writes', 'max_write=131072',
      `entry_timeout=${o.entryTimeout}`, `negative_timeout=${o.entryTimeout}`, `attr_timeout=${o.attrTimeout}`,
      'default_permissions',
    ];
    if (process.getuid?.() === 0) opts.push('allow_other');
    if (o.inPlace) opts.push('nonempty');
    if (o.debug) opts.push('debug');
    opts.push(...o.extra);
    return '-o' + opts.join(',');
  }

  /**
   * Answers with a result number (bytes, a size, or 0) and the values the C side reads
   * whatever the outcome: for read, write and xattrs that includes the buffer it
   * detaches, so those must be passed on failure too.
   */
  private reply(signal: Signal, work: Promise<number>, always: unknown[] = []): void {
    work.then(
      (res) => signal(res, ...always),
      (err) => signal(toErrno(err), ...always),
    );
  }

  /** Answers 0 and encoded values, or an errno and placeholder values of the same shape. */
  private answer<T>(signal: Signal, work: Promise<T>, encode: (v: T) => unknown[], placeholder: unknown[]): void {
    work.then(
      (v) => signal(0, ...encode(v)),
      (err) => signal(toErrno(err), ...placeholder),
    );
  }

  private done(signal: Signal, work: Promise<unknown>): void {
    this.reply(signal, work.then(() => 0));
  }

  /** Attributes of any path, live or in the snapshot tree. */
  private async attrOf(path: string): Promise<Attr> {
    const place = this.place(path);
    switch (place.kind) {
      case 'live': return this.volume.getattr(path);
      case 'snapdir': return this.snapdirAttr();
      case 'latest': {
        const newest = this.volume.snapshots().at(-1);
        if (!newest) throw new FsError('ENOENT');
        const base = await this.snapdirAttr();
        return { ...base, mode: 0o120777, nlink: 1, size: Buffer.byteLength(newest.name), ino: LATEST_INO };
      }
      case 'view': return this.volume.view(place.name, place.rel !== '').getattr(place.rel);
      case 'empty': return { ...(await this.volume.getattr('/')), mode: 0o040555, nlink: 2, size: 0, blocks: 0 };
    }
  }

  private async snapdirAttr(): Promise<Attr> {
    const root = await this.volume.getattr('/');
    const newest = this.volume.snapshots().at(-1);
    const ms = newest ? Date.parse(newest.sourceTime) : root.mtime.sec * 1000;
    const t = { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1_000_000 };
    return { ...root, mode: 0o040555, nlink: 2, size: 0, blocks: 0, ino: this.snapdirIno, atime: t, mtime: t, ctime: t };
  }

  /** Refuses any change inside the snapshot tree; otherwise runs it on the live volume. */
  private mutate(paths: string[], work: () => Promise<unknown>): Promise<unknown> {
    if (paths.some((p) => this.place(p).kind !== 'live')) return EROFS();
    return work();
  }

  _op_getattr(signal: Signal, path: string): void {
    this.answer(signal, this.attrOf(path), (a) => [encodeStat(a)], [EMPTY_STAT]);
  }

  _op_fgetattr(signal: Signal, path: string, fd: number): void {
    const work = this.volume.isViewHandle(fd) || this.place(path).kind !== 'live' ? this.attrOf(path) : this.volume.fgetattr(path, fd);
    this.answer(signal, work, (a) => [encodeStat(a)], [EMPTY_STAT]);
  }

  _op_access(signal: Signal, path: string): void {
    this.done(signal, this.place(path).kind === 'live' ? this.volume.access(path) : this.attrOf(path));
  }

  _op_statfs(signal: Signal, path: string): void {
    // Paths in the snapshot tree need not exist in the live one: they are all on its disk.
    const at = this.place(path).kind === 'live' ? path : '/';
    this.answer(signal, this.volume.statfs(at), (s) => [encodeStatfs(s)], [EMPTY_STATFS]);
  }

  private async listing(path: string): Promise<DirEntry[]> {
    const entries = await this.entriesAt(path);
    if (path !== '/') return entries;
    // A real .snapshots at the root is shadowed by the snapshot directory.
    const out = entries.filter((e) => e.name !== SNAPSHOT_DIR);
    if (this.mountOptions.snapdirVisible) out.push({ name: SNAPSHOT_DIR, ino: this.snapdirIno, type: 4 });
    return out;
  }

  private async entriesAt(path: string): Promise<DirEntry[]> {
    const place = this.place(path);
    switch (place.kind) {
      case 'live': return this.volume.readdir(path);
      case 'snapdir': {
        const snaps = this.volume.snapshots();
        const out: DirEntry[] = snaps.map((s) => ({ name: s.name, ino: viewIno(1, s.epoch), type: 4 }));
        if (snaps.length) out.push({ name: LATEST, ino: LATEST_INO, type: 10 });
        return out;
      }
      case 'latest': throw new FsError('ENOTDIR');
      case 'view': return this.volume.view(place.name).readdir(place.rel);
      case 'empty': return [];
    }
  }

  _op_readdir(signal: Signal, path: string): void {
    this.answer(signal, Promise.all([this.listing(path), this.attrOf(path)]), ([entries, self]) => {
      const dot = encodeStat(self);
      const names = ['.', '..'];
      const stats = [dot, dot];
      for (const e of entries) { names.push(e.name); stats.push(encodeDirEntry(e)); }
      return [names, stats];
    }, [[], []]);
  }

  _op_opendir(signal: Signal): void {
    signal(0, 0);
  }

  _op_releasedir(signal: Signal): void {
    signal(0);
  }

  _op_fsyncdir(signal: Signal, path: string): void {
    this.done(signal, this.place(path).kind === 'live' ? this.volume.fsyncdir(path) : Promise.resolve());
  }

  private readlinkAt(path: string): Promise<string> {
    const place = this.place(path);
    switch (place.kind) {
      case 'live': return this.volume.readlink(path);
      case 'latest': {
        const newest = this.volume.snapshots().at(-1);
        return newest ? Promise.resolve(newest.name) : Promise.reject(new FsError('ENOENT'));
      }
      case 'snapdir':
      case 'empty': return Promise.reject(new FsError('EINVAL'));
      case 'view': return this.volume.view(place.name).readlink(place.rel);
    }
  }

  _op_readlink(signal: Signal, path: string): void {
    this.answer(signal, this.readlinkAt(path), (target) => [target], ['']);
  }

  private async openAt(path: string, flags: number): Promise<number> {
    const place = this.place(path);
    if (place.kind === 'live') return this.volume.open(path, flags);
    if ((flags & 3) !== 0 || flags & O_TRUNC) throw new FsError('EROFS');
    if (place.kind !== 'view') throw new FsError(place.kind === 'latest' ? 'ELOOP' : 'EISDIR');
    const fd = await this.volume.openInView(place.name, place.rel);
    this.viewFiles++;
    return fd;
  }

  _op_open(signal: Signal, path: string, flags: number): void {
    this.answer(signal, this.openAt(path, flags), (fd) => [fd], [0]);
  }

  _op_create(signal: Signal, path: string, mode: number, flags: number, uid: number, gid: number, pid: number): void {
    this.answer(signal, this.mutate([path], () => this.volume.create(path, mode, flags, caller(uid, gid, pid))) as Promise<number>, (fd) => [fd], [0]);
  }

  _op_read(signal: Signal, _path: string, fd: number, buf: Buffer, len: number, offLow: number, offHigh: number): void {
    const pos = offLow + offHigh * 0x100000000;
    const work = this.volume.isViewHandle(fd) ? this.volume.readInView(fd, buf, len, pos) : this.volume.read(fd, buf, len, pos);
    this.reply(signal, work, [0, buf.buffer]);
  }

  _op_write(signal: Signal, _path: string, fd: number, buf: Buffer, len: number, offLow: number, offHigh: number): void {
    const work = this.volume.isViewHandle(fd) ? EROFS() as Promise<number> : this.volume.write(fd, buf, len, offLow + offHigh * 0x100000000);
    this.reply(signal, work, [0, buf.buffer]);
  }

  _op_flush(signal: Signal): void {
    signal(0);
  }

  _op_release(signal: Signal, _path: string, fd: number): void {
    if (this.volume.isViewHandle(fd)) {
      this.volume.releaseInView(fd);
      this.viewFiles = Math.max(0, this.viewFiles - 1);
      signal(0);
      return;
    }
    this.done(signal, this.volume.release(fd));
  }

  _op_fsync(signal: Signal, _path: string, datasync: number, fd: number): void {
    this.done(signal, this.volume.isViewHandle(fd) ? Promise.resolve() : this.volume.fsync(fd, datasync !== 0));
  }

  _op_truncate(signal: Signal, path: string, sizeLow: number, sizeHigh: number): void {
    this.done(signal, this.mutate([path], () => this.volume.truncate(path, sizeLow + sizeHigh * 0x100000000)));
  }

  _op_ftruncate(signal: Signal, path: string, fd: number, sizeLow: number, sizeHigh: number): void {
    this.done(signal, this.volume.isViewHandle(fd) ? EROFS() : this.mutate([path], () => this.volume.ftruncate(path, fd, sizeLow + sizeHigh * 0x100000000)));
  }

  _op_utimens(signal: Signal, path: string, aSec: number, aNsec: number, mSec: number, mNsec: number): void {
    this.done(signal, this.mutate([path], () => this.volume.utimens(path, timeOf(aSec, aNsec), timeOf(mSec, mNsec))));
  }

  _op_chmod(signal: Signal, path: string, mode: number): void {
    this.done(signal, this.mutate([path], () => this.volume.chmod(path, mode)));
  }

  _op_chown(signal: Signal, path: string, uid: number, gid: number): void {
    this.done(signal, this.mutate([path], () => this.volume.chown(path, uid, gid)));
  }

  _op_mknod(signal: Signal, path: string, mode: number, dev: number, uid: number, gid: number, pid: number): void {
    this.done(signal, this.mutate([path], () => this.volume.mknod(path, mode, dev, caller(uid, gid, pid))));
  }

  _op_mkdir(signal: Signal, path: string, mode: number, uid: number, gid: number, pid: number): void {
    this.done(signal, this.mutate([path], () => this.volume.mkdir(path, mode, caller(uid, gid, pid))));
  }

  _op_symlink(signal: Signal, target: string, path: string, uid: number, gid: number, pid: number): void {
    this.done(signal, this.mutate([path], () => this.volume.symlink(target, path, caller(uid, gid, pid))));
  }

  _op_link(signal: Signal, src: string, dst: string): void {
    this.done(signal, this.mutate([src, dst], () => this.volume.link(src, dst)));
  }

  _op_unlink(signal: Signal, path: string): void {
    this.done(signal, this.mutate([path], () => this.volume.unlink(path)));
  }

  _op_rmdir(signal: Signal, path: string): void {
    this.done(signal, this.mutate([path], () => this.volume.rmdir(path)));
  }

  _op_rename(signal: Signal, src: string, dst: string): void {
    this.done(signal, this.mutate([src, dst], () => this.volume.rename(src, dst)));
  }

  _op_setxattr(signal: Signal, path: string, name: string, value: Buffer, _position: number, flags: number): void {
    // Copied: the buffer is libfuse's and is detached when we answer.
    this.reply(signal, this.mutate([path], () => this.volume.setxattr(path, name, Buffer.from(value), flags)).then(() => 0), [value.buffer]);
  }

  private getxattrAt(path: string, name: string): Promise<Buffer> {
    const place = this.place(path);
    if (place.kind === 'live') return this.volume.getxattr(path, name);
    if (place.kind === 'view') return this.volume.view(place.name).getxattr(place.rel, name);
    return this.attrOf(path).then(() => { throw new FsError('ENODATA'); });
  }

  private listxattrAt(path: string): Promise<string[]> {
    const place = this.place(path);
    if (place.kind === 'live') return this.volume.listxattr(path);
    if (place.kind === 'view') return this.volume.view(place.name).listxattr(place.rel);
    return this.attrOf(path).then(() => []);
  }

  _op_getxattr(signal: Signal, path: string, name: string, valueBuf: Buffer): void {
    this.reply(signal, this.getxattrAt(path, name).then((value) => copyOut(value, valueBuf)), [valueBuf.buffer]);
  }

  _op_listxattr(signal: Signal, path: string, listBuf: Buffer): void {
    this.reply(signal, this.listxattrAt(path).then((names) =>
      copyOut(Buffer.concat(names.map((n) => Buffer.from(n + '\0'))), listBuf)), [listBuf.buffer]);
  }

  _op_removexattr(signal: Signal, path: string, name: string): void {
    this.done(signal, this.mutate([path], () => this.volume.removexattr(path, name)));
  }
}

/** The xattr reply convention: an empty buffer asks for the size; a short one is ERANGE. */
function copyOut(data: Buffer, into: Buffer): number {
  if (into.length === 0) return data.length;
  if (data.length > into.length) return ERANGE;
  data.copy(into);
  return data.length;
}

function caller(uid: number, gid: number, pid: number): Caller {
  return { uid, gid, pid };
}

function unused(): void {
  throw new Error('fuse-native called a default handler; VolumeFuse overrides all of them');
}

const OPERATIONS = [
  'getattr', 'fgetattr', 'access', 'statfs', 'readdir', 'opendir', 'releasedir', 'fsyncdir', 'readlink',
  'open', 'create', 'read', 'write', 'flush', 'release', 'fsync', 'truncate', 'ftruncate', 'utimens',
  'chmod', 'chown', 'mknod', 'mkdir', 'symlink', 'link', 'unlink', 'rmdir', 'rename',
  'setxattr', 'getxattr', 'listxattr', 'removexattr',
];
