// The Volume: a protected directory plus its state in .replfs/. It owns the LevelDB
// store, the file table and the journal, and implements every filesystem operation as
// a plain async method. The FUSE adapter is a thin layer over these methods.
import { constants as fsc, promises as fsp } from 'node:fs';
import type { BigIntStats } from 'node:fs';
import fs from 'node:fs';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import {
  ChangeKind, ROOT_FID, changeKindNames,
  type Attr, type DirEntry, type FileId, type JournalFile, type JournalReport, type StatFs, type TimeSpec, type VolumeStatus,
} from '../core/types.js';
import { FsError, ReplfsError, hasCode, messageOf } from '../errors/index.js';
import {
  CONFIG_FILE, DB_DIR, FORMAT_VERSION, MetaKey, STATE_DIR, Sublevel, blocksPerRegion, fileKey,
  DEFAULT_BLOCK_SIZE, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE,
  type FileRecord, type NameRef, type SessionValue, type VolumeConfig,
} from './format.js';
import { Backing, baseName, parentOf, relPath } from './backing.js';
import { FileTable } from './files.js';
import { Journal } from './journal.js';
import { Store, putJson, type Op } from './store.js';
import { baseline, reconcile, recordFromStat, type ReconcileResult } from './scan.js';
import { totalLength } from './extents.js';
import { readMounts, isUnder, REPLFS_FSTYPE } from './mounts.js';
import * as sys from './sys.js';
import { io } from './io.js';

/** Who is asking, as the kernel reports it. */
export interface Caller {
  uid: number;
  gid: number;
  pid: number;
}

interface Handle {
  fd: number;
  fid: FileId | null;
  rel: string;
  /** O_SYNC / O_DSYNC: each write is durable, journal included, before it returns. */
  sync: boolean;
}

export interface OpenOptions {
  /** A descriptor of the protected directory opened before mounting over it. */
  rootFd?: number;
  /** Open for serving writes: runs crash recovery and the offline-change scan. */
  writable: boolean;
}

export interface InitOptions {
  blockSize?: number;
  durability?: 'default' | 'strict';
}

export interface InitResult {
  root: string;
  volumeId: string;
  blockSize: number;
  files: number;
  dirs: number;
  bytes: number;
}

export interface OpenReport {
  recoveredRegions: number;
  lastCleanShutdown: boolean;
  offline: Omit<ReconcileResult, 'ops'>;
}

// Flags the backing open must not see: creation is handled by create(), truncation is
// journaled separately, O_APPEND would move writes away from the offset the kernel
// chose (and the journal recorded), O_DIRECT fails with FUSE's unaligned buffers.
const STRIP_OPEN_FLAGS = fsc.O_CREAT | fsc.O_EXCL | fsc.O_TRUNC | fsc.O_APPEND | fsc.O_DIRECT | fsc.O_NOCTTY;
const SYNC_FLAGS = fsc.O_SYNC | fsc.O_DSYNC;
// Not in Node's typings of fs.constants.
const O_ACCMODE = 0o3;
const S_ISUID = 0o4000;
const S_ISGID = 0o2000;
const NS = 1_000_000_000n;

function spec(ns: bigint): TimeSpec {
  let sec = ns / NS;
  let nsec = ns % NS;
  if (nsec < 0n) { nsec += NS; sec -= 1n; }
  return { sec: Number(sec), nsec: Number(nsec) };
}

export function toAttr(st: BigIntStats): Attr {
  return {
    mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), size: Number(st.size),
    nlink: Number(st.nlink), ino: Number(st.ino), dev: Number(st.dev), rdev: Number(st.rdev),
    blksize: Number(st.blksize), blocks: Number(st.blocks),
    atime: spec(st.atimeNs), mtime: spec(st.mtimeNs), ctime: spec(st.ctimeNs),
  };
}

export class Volume {
  private readonly handles = new Map<number, Handle>();
  /** Files whose recorded size and times must be refreshed at the next flush. */
  private readonly touched = new Map<FileId, string>();
  private flushTimer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> | null = null;
  private closed = false;
  readonly myUid = process.getuid?.() ?? 0;
  readonly myGid = process.getgid?.() ?? 0;
  /** Journaling can be switched off for benchmarks only (`REPLFS_BENCH_NO_JOURNAL=1`). */
  private readonly journaling = process.env.REPLFS_BENCH_NO_JOURNAL !== '1';

  private constructor(
    readonly root: string,
    readonly config: VolumeConfig,
    readonly backing: Backing,
    readonly store: Store,
    readonly files: FileTable,
    readonly journal: Journal,
    readonly writable: boolean,
    private readonly ownsRootFd: boolean,
    readonly lastCleanShutdown: boolean,
  ) {}

  // ---------------------------------------------------------------- lifecycle

  /** Makes `dir` a protected directory. */
  static async init(dir: string, opts: InitOptions = {}): Promise<InitResult> {
    const root = await checkInitTarget(dir);
    const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
    if (!Number.isInteger(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
      throw new ReplfsError('usage', `block size must be a power of two between 4K and 1M, got ${blockSize}`);
    }
    const config: VolumeConfig = {
      formatVersion: FORMAT_VERSION,
      volumeId: randomUUID(),
      blockSize,
      createdAt: new Date().toISOString(),
      journal: { durability: opts.durability ?? 'default', flushIntervalMs: 1000 },
    };
    // Built under a temporary name and renamed into place, so a failed init leaves nothing.
    const rootFd = fs.openSync(root, fsc.O_RDONLY | fsc.O_DIRECTORY);
    const backing = new Backing(rootFd, root);
    // The walk comes first: it refuses nested volumes and mount points before anything is made.
    let base: Awaited<ReturnType<typeof baseline>>;
    try {
      base = await baseline(backing, FileTable.detached(), new Set([STATE_DIR]));
    } catch (err) {
      fs.closeSync(rootFd);
      throw err;
    }
    const tmpName = `${STATE_DIR}.init-${process.pid}`;
    const tmp = path.join(root, tmpName);
    let store: Store | undefined;
    try {
      await fsp.mkdir(tmp, { mode: 0o700 });
      await fsp.writeFile(path.join(tmp, CONFIG_FILE), JSON.stringify(config, null, 2) + '\n');
      store = await Store.open(path.join(tmp, DB_DIR), { create: true });
      const now = new Date().toISOString();
      await writeChunked(store, [
        ...base.ops,
        putJson(Sublevel.meta, MetaKey.format, FORMAT_VERSION),
        putJson(Sublevel.meta, MetaKey.epoch, 1),
        putJson(Sublevel.meta, MetaKey.journalSince, now),
        putJson(Sublevel.meta, MetaKey.session, { state: 'clean', pid: process.pid, at: now } satisfies SessionValue),
      ], true);
      await store.close();
      store = undefined;
      await fsp.rename(tmp, path.join(root, STATE_DIR));
      // Making .replfs changed the root's times; record them as they are now.
      store = await Store.open(`${backing.stateDir()}/${DB_DIR}`, { create: false });
      await store.write([putJson(Sublevel.files, fileKey(ROOT_FID), recordFromStat(await fsp.lstat(root, { bigint: true }), []))], true);
      await store.close();
      store = undefined;
      await outlastTimestampTick();
      return { root, volumeId: config.volumeId, blockSize, files: base.files, dirs: base.dirs, bytes: base.bytes };
    } catch (err) {
      if (store) await store.close().catch(() => undefined);
      await fsp.rm(tmp, { recursive: true, force: true });
      throw err;
    } finally {
      fs.closeSync(rootFd);
    }
  }

  /** Opens a protected directory. With `writable`, the caller serves filesystem operations. */
  static async open(dir: string, opts: OpenOptions): Promise<{ volume: Volume; report: OpenReport }> {
    const root = path.resolve(dir);
    const ownsRootFd = opts.rootFd === undefined;
    let rootFd: number;
    try {
      rootFd = opts.rootFd ?? fs.openSync(root, fsc.O_RDONLY | fsc.O_DIRECTORY);
    } catch (err) {
      if (hasCode(err, 'ENOENT')) throw new ReplfsError('notFound', `${root} does not exist`);
      if (hasCode(err, 'ENOTDIR')) throw new ReplfsError('notFound', `${root} is not a directory`);
      throw err;
    }
    const backing = new Backing(rootFd, root);
    let store: Store | undefined;
    try {
      const config = await readConfig(backing, root);
      store = await Store.open(`${backing.stateDir()}/${DB_DIR}`, {
        create: false, strict: config.journal.durability === 'strict', displayPath: path.join(root, STATE_DIR, DB_DIR),
      });
      const format = await store.getJson<number>(Sublevel.meta, MetaKey.format);
      if (format === undefined) throw new ReplfsError('damaged', `${root}: the volume database has no format version`, 'the state directory .replfs is incomplete; see docs/operations.md');
      if (format !== FORMAT_VERSION) throw new ReplfsError('damaged', `${root}: on-disk format ${format} is not supported by this replfs (format ${FORMAT_VERSION})`);
      const epoch = (await store.getJson<number>(Sublevel.meta, MetaKey.epoch)) ?? 1;
      const session = await store.getJson<SessionValue>(Sublevel.meta, MetaKey.session);
      const lastClean = session?.state !== 'open';
      const recorded = opts.writable ? new Map<FileId, FileRecord>() : undefined;
      const files = await FileTable.load(store, recorded && ((fid, rec) => recorded.set(fid, rec)));
      if ((await files.get(ROOT_FID)) === undefined) {
        throw new ReplfsError('damaged', `${root}: the volume database has no root record`, 'see docs/operations.md');
      }
      const journal = await Journal.load(store, epoch, config.blockSize, blocksPerRegion(config.blockSize));
      const volume = new Volume(root, config, backing, store, files, journal, opts.writable, ownsRootFd, lastClean);
      const report: OpenReport = { recoveredRegions: 0, lastCleanShutdown: lastClean, offline: { created: 0, changed: 0, moved: 0, deleted: 0 } };
      if (!opts.writable) {
        // Read-only view: a pending region counts as wholly dirty, without writing that down.
        journal.recoverPending();
        return { volume, report };
      }
      const recovered = journal.recoverPending();
      report.recoveredRegions = recovered.regions;
      const offline = await reconcile(backing, files, journal, recorded!);
      const { ops: offlineOps, ...counts } = offline;
      report.offline = counts;
      await writeChunked(store, [...recovered.ops, ...offlineOps, ...journal.flushOps(),
        putJson(Sublevel.meta, MetaKey.session, { state: 'open', pid: process.pid, at: new Date().toISOString() } satisfies SessionValue)], true);
      volume.startFlusher();
      return { volume, report };
    } catch (err) {
      if (store) await store.close().catch(() => undefined);
      if (ownsRootFd) fs.closeSync(rootFd);
      throw err;
    }
  }

  /** Flushes the journal, marks a clean shutdown and closes the database. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    if (this.writable) {
      await this.flush(true);
      await this.store.write([putJson(Sublevel.meta, MetaKey.session, { state: 'clean', pid: process.pid, at: new Date().toISOString() } satisfies SessionValue)], true);
    }
    await this.store.close();
    for (const h of this.handles.values()) fs.close(h.fd, () => undefined);
    this.handles.clear();
    if (this.ownsRootFd) fs.closeSync(this.backing.rootFd);
    if (this.writable) await outlastTimestampTick();
  }

  get openHandles(): number {
    return this.handles.size;
  }

  private startFlusher(): void {
    const tick = () => {
      this.flush().catch((err) => console.error(`replfs: journal flush failed: ${messageOf(err)}`))
        .finally(() => { if (!this.closed) { this.flushTimer = setTimeout(tick, this.config.journal.flushIntervalMs); this.flushTimer.unref(); } });
    };
    this.flushTimer = setTimeout(tick, this.config.journal.flushIntervalMs);
    this.flushTimer.unref();
  }

  /**
   * Writes exact bitmaps for everything written since the last flush and refreshes the
   * recorded size and times of touched files. With `sync`, waits until it is on disk.
   * `all` also refreshes files created in this epoch, which the periodic flush leaves for
   * the end: a stale record of a new file only makes the next scan call it changed, and a
   * new file is compared whole anyway.
   */
  async flush(sync = false, all = sync): Promise<void> {
    while (this.flushing) await this.flushing;
    const run = async () => {
      // Queued at once: a write arriving later must find its region uncovered and queue
      // a new intent behind these exact bitmaps, never ahead of them.
      const journalWrite = this.store.write(this.journal.flushOps(), sync);
      const refresh = await this.refreshRecords(all);
      await journalWrite;
      const written = this.store.write(refresh.ops, sync);
      this.files.track(refresh.fids, written);
      await written;
    };
    this.flushing = run();
    try { await this.flushing; } finally { this.flushing = null; }
  }

  private async refreshRecords(all: boolean): Promise<{ ops: Op[]; fids: FileId[] }> {
    const touched = [...this.touched].filter(([fid]) => all || !(this.journal.kindsOf(fid) & ChangeKind.created));
    for (const [fid] of touched) this.touched.delete(fid);
    const ops: Op[] = [];
    const fids: FileId[] = [];
    await Promise.all(touched.map(async ([fid, rel]) => {
      const seen = await this.files.get(fid);
      if (!seen || seen.gone) return;
      let st = await this.lstatOrNull(rel);
      if (!st || Number(st.ino) !== seen.ino) {
        const current = seen.names[0] && this.files.pathOfName(seen.names[0]);
        st = current !== undefined && current !== rel ? await this.lstatOrNull(current) : null;
        if (!st || Number(st.ino) !== seen.ino) return;
      }
      const stat = recordFromStat(st, []);
      // Merged under the record's lock: a rename may have changed its names meanwhile.
      const op = await this.files.update(fid, (rec) => {
        if (!rec || rec.gone || rec.ino !== stat.ino) return null;
        if (stat.size === rec.size && stat.mtime === rec.mtime && stat.ctime === rec.ctime) return null;
        return this.files.put(fid, { ...stat, names: rec.names });
      });
      if (op) {
        ops.push(op);
        fids.push(fid);
      }
    }));
    return { ops, fids };
  }

  private async lstatOrNull(rel: string): Promise<BigIntStats | null> {
    try { return await io.lstat(this.abs(rel)); } catch { return null; }
  }

  // ---------------------------------------------------------------- helpers

  private abs(rel: string): string {
    return this.backing.abs(rel);
  }

  private async statRel(rel: string): Promise<BigIntStats> {
    return io.lstat(this.abs(rel));
  }

  /** The id of the file at `rel`, adopting it if replfs has never seen it. */
  private async fileAt(rel: string): Promise<{ fid: FileId; st: BigIntStats }> {
    const st = await this.statRel(rel);
    return { fid: rel === '' ? ROOT_FID : await this.fidForStat(st, rel), st };
  }

  private async fidForStat(st: BigIntStats, rel: string): Promise<FileId> {
    const known = this.files.fidOfIno(Number(st.ino));
    if (known !== undefined) return known;
    // A file that appeared behind the mount's back: give it an id and compare it whole.
    const parentRel = parentOf(rel);
    const parentFid = parentRel === '' ? ROOT_FID : this.files.fidOfIno(Number((await this.statRel(parentRel)).ino)) ?? ROOT_FID;
    const again = this.files.fidOfIno(Number(st.ino));
    if (again !== undefined) return again;
    const fid = this.files.allocate();
    await this.commit([
      this.files.put(fid, recordFromStat(st, [[parentFid, baseName(rel)]])),
      this.files.nextFidOp(),
      ...this.journal.mark(fid, ChangeKind.created | ChangeKind.data, { unknown: 'created-offline' }),
    ], [fid], true);
    return fid;
  }

  /**
   * Queues journal and record operations. Returns a promise for the write; callers await
   * it before acknowledging the operation they journal.
   */
  private commit(ops: Op[], fids: FileId[], wait: boolean): Promise<void> | null {
    if (ops.length === 0) return null;
    const written = this.store.write(ops);
    if (fids.length) this.files.track(fids, written);
    if (!wait) {
      written.catch((err) => console.error(`replfs: journal write failed: ${messageOf(err)}`));
      return null;
    }
    return written;
  }

  private touch(fid: FileId, rel: string): void {
    if (this.journaling) this.touched.set(fid, rel);
  }

  /** Gives a new file the caller's ownership (the daemon creates it as itself). */
  private async ownNew(target: string | number, caller: Caller, parent: Promise<{ st: BigIntStats }>, mode: number, isDir: boolean): Promise<void> {
    // Made by the daemon's own user: the backing filesystem already did what the kernel would.
    if (caller.uid === this.myUid && caller.gid === this.myGid) return;
    const { st } = await parent;
    const gid = Number(st.mode) & S_ISGID ? Number(st.gid) : caller.gid;
    if (typeof target === 'number') await io.fchown(target, caller.uid, gid);
    else await fsp.lchown(target, caller.uid, gid);
    // chown clears set-id bits on regular files; put back what the caller asked for.
    if (!isDir && (mode & (S_ISUID | S_ISGID)) && typeof target === 'number') await io.fchmod(target, mode & 0o7777);
  }

  /** The parent directory of `rel`, looked up while the caller gets on with its own work. */
  private parentOf(rel: string): Promise<{ fid: FileId; st: BigIntStats }> {
    const p = this.journaling ? this.fileAt(parentOf(rel)) : this.statRel(parentOf(rel)).then((st) => ({ fid: ROOT_FID, st }));
    p.catch(() => undefined);
    return p;
  }

  /**
   * Records and journals a file just created at `rel`. Unlike other changes, creation is
   * journaled after the fact and not waited for: the id comes from the new inode, and if
   * the daemon dies before this write lands, the inode has no record, which the next
   * mount's scan journals as created. Nothing is lost; the create costs no LevelDB wait.
   */
  private async recordCreated(st: BigIntStats, parent: Promise<{ fid: FileId }>, rel: string): Promise<FileId | null> {
    if (!this.journaling) return null;
    const parentFid = (await parent).fid;
    const fid = this.files.allocate();
    this.commit([
      this.files.put(fid, recordFromStat(st, [[parentFid, baseName(rel)]])),
      this.files.nextFidOp(),
      ...this.journal.mark(fid, ChangeKind.created),
      ...this.journal.markEntry(parentFid, baseName(rel), ChangeKind.created),
      ...this.journal.mark(parentFid, ChangeKind.entries),
    ], [fid], false);
    this.touch(parentFid, parentOf(rel));
    return fid;
  }

  private handle(fd: number): Handle {
    const h = this.handles.get(fd);
    if (!h) throw new FsError('EBADF', `unknown file handle ${fd}`);
    return h;
  }

  // ---------------------------------------------------------------- attributes

  async getattr(p: string): Promise<Attr> {
    return toAttr(await this.statRel(relPath(p)));
  }

  async fgetattr(p: string, fd: number): Promise<Attr> {
    if (!this.handles.has(fd)) return this.getattr(p);
    return toAttr(await io.fstat(fd));
  }

  async access(p: string): Promise<void> {
    // Permission checks are the kernel's (default_permissions); this only answers existence.
    await this.statRel(relPath(p));
  }

  async readdir(p: string): Promise<DirEntry[]> {
    const rel = relPath(p);
    const listing = await sys.readdirIno(this.abs(rel));
    const out: DirEntry[] = [];
    for (let i = 0; i < listing.names.length; i++) {
      const name = listing.names[i]!;
      if (rel === '' && name === STATE_DIR) continue;
      out.push({ name, ino: listing.inos[i]!, type: listing.types[i]! });
    }
    return out;
  }

  async readlink(p: string): Promise<string> {
    return fsp.readlink(this.abs(relPath(p)));
  }

  async statfs(p: string): Promise<StatFs> {
    const s = await fsp.statfs(this.abs(relPath(p)));
    return { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, namemax: 255 };
  }

  private async changeAttr(p: string, kind: number, apply: (abs: string) => Promise<void>): Promise<void> {
    const rel = relPath(p);
    if (!this.journaling) return apply(this.abs(rel));
    const { fid } = await this.fileAt(rel);
    await this.commit(this.journal.mark(fid, kind), [], true);
    await apply(this.abs(rel));
    this.touch(fid, rel);
  }

  chmod(p: string, mode: number): Promise<void> {
    return this.changeAttr(p, ChangeKind.attributes, (abs) => fsp.chmod(abs, mode));
  }

  chown(p: string, uid: number, gid: number): Promise<void> {
    return this.changeAttr(p, ChangeKind.attributes, (abs) => fsp.lchown(abs, uid, gid));
  }

  utimens(p: string, atime: TimeSpec, mtime: TimeSpec): Promise<void> {
    return this.changeAttr(p, ChangeKind.attributes,
      (abs) => sys.utimensat(abs, atime.sec, atime.nsec, mtime.sec, mtime.nsec, true));
  }

  setxattr(p: string, name: string, value: Buffer, flags: number): Promise<void> {
    return this.changeAttr(p, ChangeKind.xattrs, (abs) => sys.lsetxattr(abs, name, value, flags));
  }

  removexattr(p: string, name: string): Promise<void> {
    return this.changeAttr(p, ChangeKind.xattrs, (abs) => sys.lremovexattr(abs, name));
  }

  async getxattr(p: string, name: string): Promise<Buffer> {
    return sys.lgetxattr(this.abs(relPath(p)), name);
  }

  async listxattr(p: string): Promise<string[]> {
    return sys.llistxattr(this.abs(relPath(p)));
  }

  // ---------------------------------------------------------------- data

  async open(p: string, flags: number): Promise<number> {
    const rel = relPath(p);
    if (flags & fsc.O_TRUNC && (flags & O_ACCMODE) !== fsc.O_RDONLY) await this.truncate(p, 0);
    const fd = await io.open(this.abs(rel), (flags & ~STRIP_OPEN_FLAGS) | fsc.O_NOFOLLOW);
    const h: Handle = { fd, fid: null, rel, sync: (flags & SYNC_FLAGS) !== 0 };
    this.handles.set(fd, h);
    if ((flags & O_ACCMODE) !== fsc.O_RDONLY && this.journaling) {
      try {
        h.fid = await this.fidForStat(await io.fstat(fd), rel);
      } catch (err) {
        this.handles.delete(fd);
        fs.close(fd, () => undefined);
        throw err;
      }
    }
    return fd;
  }

  async create(p: string, mode: number, flags: number, caller: Caller): Promise<number> {
    const rel = relPath(p);
    const parent = this.parentOf(rel);
    let fd: number;
    try {
      fd = await io.open(this.abs(rel), (flags & ~STRIP_OPEN_FLAGS) | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, mode);
    } catch (err) {
      // Someone created it first: behave like open(2) without O_EXCL, as the caller asked.
      if (hasCode(err, 'EEXIST') && !(flags & fsc.O_EXCL)) return this.open(p, flags & ~fsc.O_CREAT);
      throw err;
    }
    try {
      await this.ownNew(fd, caller, parent, mode, false);
      const st = await io.fstat(fd);
      const fid = await this.recordCreated(st, parent, rel);
      this.handles.set(fd, { fd, fid, rel, sync: (flags & SYNC_FLAGS) !== 0 });
      return fd;
    } catch (err) {
      fs.close(fd, () => undefined);
      throw err;
    }
  }

  read(fd: number, buf: Buffer, len: number, pos: number): Promise<number> {
    return io.read(fd, buf, len, pos);
  }

  async write(fd: number, buf: Buffer, len: number, pos: number): Promise<number> {
    const h = this.handle(fd);
    if (this.journaling) {
      if (h.fid === null) h.fid = await this.fidForStat(await io.fstat(fd), h.rel);
      const intent = this.journal.noteWrite(h.fid, pos, len);
      if (intent) await intent;
      this.touched.set(h.fid, h.rel);
      if (h.sync) await this.store.write(this.journal.flushOps(h.fid), true);
    }
    return io.write(fd, buf, len, pos);
  }

  async release(fd: number): Promise<void> {
    this.handles.delete(fd);
    await io.close(fd);
  }

  /** Makes the file's data and its journal entries durable together (journal first). */
  async fsync(fd: number, datasync: boolean): Promise<void> {
    const h = this.handle(fd);
    if (this.journaling) {
      await this.store.write(h.fid === null ? [] : this.journal.flushOps(h.fid), true);
    }
    await io.fsync(fd, datasync);
  }

  async fsyncdir(p: string): Promise<void> {
    const fd = await io.open(this.abs(relPath(p)), fsc.O_RDONLY | fsc.O_DIRECTORY);
    try {
      if (this.journaling) await this.store.write([], true);
      await io.fsync(fd);
    } finally {
      fs.close(fd, () => undefined);
    }
  }

  private async journalTruncate(fid: FileId, oldSize: number, size: number): Promise<void> {
    if (size === oldSize) return;
    const extra = size < oldSize ? { minSize: size } : {};
    await this.commit(this.journal.mark(fid, ChangeKind.truncated, extra), [], true);
  }

  async truncate(p: string, size: number): Promise<void> {
    const rel = relPath(p);
    if (this.journaling) {
      const { fid, st } = await this.fileAt(rel);
      await this.journalTruncate(fid, Number(st.size), size);
      this.touch(fid, rel);
    }
    await fsp.truncate(this.abs(rel), size);
  }

  async ftruncate(p: string, fd: number, size: number): Promise<void> {
    const h = this.handles.get(fd);
    if (!h) return this.truncate(p, size);
    if (this.journaling) {
      const st = await io.fstat(fd);
      if (h.fid === null) h.fid = await this.fidForStat(st, h.rel);
      await this.journalTruncate(h.fid, Number(st.size), size);
      this.touch(h.fid, h.rel);
    }
    await new Promise<void>((resolve, reject) => fs.ftruncate(fd, size, (err) => (err ? reject(err) : resolve())));
  }

  // ---------------------------------------------------------------- namespace

  async mkdir(p: string, mode: number, caller: Caller): Promise<void> {
    const rel = relPath(p);
    const parent = this.parentOf(rel);
    await fsp.mkdir(this.abs(rel), mode);
    await this.ownNew(this.abs(rel), caller, parent, mode, true);
    await this.recordCreated(await this.statRel(rel), parent, rel);
  }

  async symlink(target: string, p: string, caller: Caller): Promise<void> {
    const rel = relPath(p);
    const parent = this.parentOf(rel);
    await fsp.symlink(target, this.abs(rel));
    await this.ownNew(this.abs(rel), caller, parent, 0o777, false);
    await this.recordCreated(await this.statRel(rel), parent, rel);
  }

  async mknod(p: string, mode: number, dev: number, caller: Caller): Promise<void> {
    const rel = relPath(p);
    const parent = this.parentOf(rel);
    await sys.mknod(this.abs(rel), mode, dev);
    await this.ownNew(this.abs(rel), caller, parent, mode, false);
    await this.recordCreated(await this.statRel(rel), parent, rel);
  }

  async link(srcPath: string, dstPath: string): Promise<void> {
    const src = relPath(srcPath);
    const dst = relPath(dstPath);
    if (!this.journaling) return fsp.link(this.abs(src), this.abs(dst));
    const [{ fid }, { fid: parent }] = await Promise.all([this.fileAt(src), this.fileAt(parentOf(dst))]);
    await this.commit([
      ...this.journal.mark(fid, ChangeKind.linked),
      ...this.journal.markEntry(parent, baseName(dst), ChangeKind.created),
      ...this.journal.mark(parent, ChangeKind.entries),
    ], [], true);
    await fsp.link(this.abs(src), this.abs(dst));
    await this.renameRecord(fid, null, [parent, baseName(dst)]);
    this.touch(fid, dst);
    this.touch(parent, parentOf(dst));
  }

  async unlink(p: string): Promise<void> {
    return this.removeEntry(relPath(p), false);
  }

  async rmdir(p: string): Promise<void> {
    return this.removeEntry(relPath(p), true);
  }

  private async removeEntry(rel: string, isDir: boolean): Promise<void> {
    const remove = () => (isDir ? fsp.rmdir(this.abs(rel)) : fsp.unlink(this.abs(rel)));
    if (!this.journaling) return remove();
    const [{ fid, st }, { fid: parent }] = await Promise.all([this.fileAt(rel), this.fileAt(parentOf(rel))]);
    const last = isDir || Number(st.nlink) <= 1;
    await this.commit([
      ...this.journal.mark(fid, ChangeKind.unlinked | (last ? ChangeKind.deleted : 0)),
      ...this.journal.markEntry(parent, baseName(rel), ChangeKind.deleted),
      ...this.journal.mark(parent, ChangeKind.entries),
    ], [], true);
    await remove();
    await this.renameRecord(fid, [parent, baseName(rel)], null);
    this.touch(parent, parentOf(rel));
    if (!last) this.touch(fid, rel);
  }

  async rename(srcPath: string, dstPath: string): Promise<void> {
    const src = relPath(srcPath);
    const dst = relPath(dstPath);
    if (!this.journaling) return fsp.rename(this.abs(src), this.abs(dst));
    const [{ fid }, { fid: srcParent }, { fid: dstParent }, target] = await Promise.all([
      this.fileAt(src), this.fileAt(parentOf(src)), this.fileAt(parentOf(dst)),
      this.fileAt(dst).catch((err) => { if (hasCode(err, 'ENOENT')) return null; throw err; }),
    ]);
    // rename(2) between two names of one file does nothing.
    if (target && target.fid === fid) return fsp.rename(this.abs(src), this.abs(dst));
    const ops = [
      ...this.journal.mark(fid, ChangeKind.renamed),
      ...this.journal.markEntry(srcParent, baseName(src), ChangeKind.deleted),
      ...this.journal.markEntry(dstParent, baseName(dst), ChangeKind.created),
      ...this.journal.mark(srcParent, ChangeKind.entries),
      ...this.journal.mark(dstParent, ChangeKind.entries),
    ];
    const targetGone = target !== null && (target.st.isDirectory() || Number(target.st.nlink) <= 1);
    if (target) ops.push(...this.journal.mark(target.fid, ChangeKind.unlinked | (targetGone ? ChangeKind.deleted : 0)));
    await this.commit(ops, [], true);
    await fsp.rename(this.abs(src), this.abs(dst));
    if (target) await this.renameRecord(target.fid, [dstParent, baseName(dst)], null);
    await this.renameRecord(fid, [srcParent, baseName(src)], [dstParent, baseName(dst)]);
    this.touch(fid, dst);
    this.touch(srcParent, parentOf(src));
    this.touch(dstParent, parentOf(dst));
  }

  /** Replaces, adds or removes one name of a file's record after the change was made. */
  private async renameRecord(fid: FileId, from: NameRef | null, to: NameRef | null): Promise<void> {
    const ops = await this.files.update(fid, (rec) => {
      if (!rec) return [];
      let names = rec.names.filter((n) => !(from && n[0] === from[0] && n[1] === from[1]));
      if (to) names = [...names.filter((n) => !(n[0] === to[0] && n[1] === to[1])), to];
      const gone = names.length === 0;
      // The last name of a deleted file is kept so the journal can still say where it was.
      const next: FileRecord = gone ? { ...rec, names: rec.names.length ? [rec.names[0]!] : [], gone: true } : { ...rec, names };
      if (!gone) delete next.gone;
      return [this.files.put(fid, next)];
    });
    this.commit(ops, [fid], false);
  }

  // ---------------------------------------------------------------- reporting

  async journalReport(): Promise<JournalReport> {
    const since = (await this.store.getJson<string>(Sublevel.meta, MetaKey.journalSince)) ?? this.config.createdAt;
    const out: JournalFile[] = [];
    for (const js of this.journal.fileStates()) {
      const rec = await this.files.get(js.fid);
      const type = rec ? this.files.typeOf(rec) : 'file';
      const paths = (rec?.names ?? []).map((n) => this.files.pathOfName(n)).filter((x): x is string => x !== undefined);
      let size = rec?.size ?? 0;
      if (rec && !rec.gone && type === 'file') {
        const current = paths[0] !== undefined ? await this.lstatOrNull(paths[0]) : null;
        if (current && Number(current.ino) === rec.ino) size = Number(current.size);
      }
      const gone = !!rec?.gone || (js.kinds & ChangeKind.deleted && !rec) ? true : false;
      const extents = type === 'file' && !gone && (js.kinds & (ChangeKind.data | ChangeKind.created | ChangeKind.truncated) || js.unknown)
        ? js.extents(size) : [];
      const kinds = changeKindNames(js.kinds | (js.unknown ? ChangeKind.unknown : 0));
      out.push({
        id: js.fid,
        type,
        path: js.fid === ROOT_FID ? '' : paths[0] ?? '',
        paths: gone ? [] : paths,
        kinds,
        extents,
        dirtyBytes: js.unknown && !gone ? size : totalLength(extents),
        size: gone ? 0 : size,
        unknown: js.unknown,
      });
    }
    out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : a.id - b.id));
    return {
      formatVersion: FORMAT_VERSION,
      epoch: this.journal.epoch,
      blockSize: this.config.blockSize,
      since,
      files: out,
      totals: { files: out.length, dirtyBytes: out.reduce((n, f) => n + f.dirtyBytes, 0) },
    };
  }

  /** Status as `replfs status` reports it; the caller says whether and where it is mounted. */
  async status(mount: { mountpoint: string | null; pid: number | null }): Promise<VolumeStatus> {
    const report = await this.journalReport();
    return {
      root: this.root,
      volumeId: this.config.volumeId,
      formatVersion: FORMAT_VERSION,
      blockSize: this.config.blockSize,
      epoch: this.journal.epoch,
      mounted: mount.mountpoint !== null,
      mountpoint: mount.mountpoint,
      pid: mount.pid,
      journal: { ...(await this.journalSize()), dirtyFiles: report.totals.files, dirtyBytes: report.totals.dirtyBytes },
      files: this.files.count,
      lastCleanShutdown: this.lastCleanShutdown,
      durability: this.config.journal.durability,
    };
  }

  async journalSize(): Promise<{ entries: number; bytes: number }> {
    let bytes = 0;
    for (const sub of [Sublevel.headers, Sublevel.regions, Sublevel.entries]) bytes += await this.store.approximateSize(sub);
    return { entries: this.journal.fileCount + this.journal.entryCount, bytes };
  }
}

// ---------------------------------------------------------------- module helpers

async function readConfig(backing: Backing, root: string): Promise<VolumeConfig> {
  let text: string;
  try {
    await fsp.access(backing.stateDir());
  } catch {
    throw new ReplfsError('notFound', `${root} is not a protected directory (no ${STATE_DIR}/)`, `run: replfs init ${root}`);
  }
  try {
    text = await fsp.readFile(`${backing.stateDir()}/${CONFIG_FILE}`, 'utf8');
  } catch (err) {
    const why = hasCode(err, 'ENOENT') ? 'it is missing' : messageOf(err).split(backing.prefix).join(root);
    throw new ReplfsError('damaged', `${root}: cannot read ${STATE_DIR}/${CONFIG_FILE}: ${why}`,
      'see docs/operations.md, "Repairing a damaged journal"');
  }
  let config: VolumeConfig;
  try {
    config = JSON.parse(text) as VolumeConfig;
  } catch (err) {
    throw new ReplfsError('damaged', `${root}: ${STATE_DIR}/${CONFIG_FILE} is not valid JSON: ${messageOf(err)}`);
  }
  if (typeof config !== 'object' || config === null || typeof config.formatVersion !== 'number' || typeof config.blockSize !== 'number' || typeof config.volumeId !== 'string') {
    throw new ReplfsError('damaged', `${root}: ${STATE_DIR}/${CONFIG_FILE} lacks formatVersion, volumeId or blockSize`);
  }
  if (config.formatVersion !== FORMAT_VERSION) {
    throw new ReplfsError('damaged', `${root}: on-disk format ${config.formatVersion} is not supported by this replfs (format ${FORMAT_VERSION})`);
  }
  config.journal = { ...{ durability: 'default' as const, flushIntervalMs: 1000 }, ...(config.journal ?? {}) };
  return config;
}

/** Validates a directory for `init` and returns its real path. */
async function checkInitTarget(dir: string): Promise<string> {
  let root: string;
  try {
    root = await fsp.realpath(dir);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) throw new ReplfsError('notFound', `${dir} does not exist`);
    throw err;
  }
  const st = await fsp.stat(root);
  if (!st.isDirectory()) throw new ReplfsError('refused', `${dir} is not a directory`);
  if (fs.existsSync(path.join(root, STATE_DIR))) {
    throw new ReplfsError('refused', `${root} is already protected (${STATE_DIR}/ exists)`);
  }
  for (let up = path.dirname(root); ; up = path.dirname(up)) {
    if (fs.existsSync(path.join(up, STATE_DIR, CONFIG_FILE))) {
      throw new ReplfsError('refused', `${root} is inside the protected directory ${up}`, 'protected directories cannot be nested');
    }
    if (up === '/') break;
  }
  const mounts = await readMounts();
  for (const m of mounts) {
    if (m.fstype === REPLFS_FSTYPE && (m.mountpoint === root || isUnder(root, m.mountpoint))) {
      throw new ReplfsError('refused', `${root} is inside the mounted replfs volume ${m.mountpoint}`, 'protected directories cannot be nested');
    }
  }
  const nested = mounts.filter((m) => isUnder(m.mountpoint, root)).map((m) => m.mountpoint);
  if (nested.length > 0) {
    throw new ReplfsError('refused', `${root} contains mount points: ${nested.join(', ')}`, 'unmount them or protect a directory without nested mounts');
  }
  return root;
}

async function writeChunked(store: Store, ops: Op[], sync: boolean): Promise<void> {
  const CHUNK = 10_000;
  for (let i = 0; i < ops.length; i += CHUNK) await store.write(ops.slice(i, i + CHUNK), sync && i + CHUNK >= ops.length);
  if (ops.length === 0 && sync) await store.write([], true);
}

/**
 * File times come from the kernel's coarse clock (a few ms per tick). A change made in the
 * same tick as the stat we recorded would keep the recorded ctime and go unnoticed by the
 * next mount's scan, so we return only once that tick is over (the "racy timestamp" guard).
 */
function outlastTimestampTick(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 20));
}
