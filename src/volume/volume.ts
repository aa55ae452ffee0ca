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
  type DiffEntry, type DiffReport, type DiffStatus, type Extent, type UnknownReason,
} from '../core/types.js';
import { FsError, ReplfsError, hasCode, messageOf } from '../errors/index.js';
import {
  CONFIG_FILE, DB_DIR, DEFAULT_JOURNAL_MAX_BYTES, FORMAT_VERSION, UPGRADABLE_FORMATS, MetaKey, STATE_DIR, Sublevel, blocksPerRegion, fileKey,
  DEFAULT_BLOCK_SIZE, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE, FARM_DIR, SNAPSHOT_DIR, TypeTag, hex, unhex, snapshotKey,
  type DestinationRecord, type JournalHealthRecord, type PromotedRecord, type FileRecord, type HeaderValue, type NameRef, type OriginNode, type ReplicaMeta, type Divergence, type SessionValue, type VolumeConfig, type PreservedAttr, type PreservedEntry, type SnapshotRecord,
} from './format.js';
import { Backing, baseName, parentOf, relPath } from './backing.js';
import { FileTable } from './files.js';
import { Journal } from './journal.js';
import { Store, putJson, type Op } from './store.js';
import { baseline, fileTypeOf, reconcile, recordFromStat, type ReconcileResult } from './scan.js';
import { clip, coalesce, totalLength } from './extents.js';
import { readMounts, isUnder, REPLFS_FSTYPE } from './mounts.js';
import * as sys from './sys.js';
import { io } from './io.js';
import { BlockStore } from './blocks.js';
import { Cow } from './cow.js';
import { Catalog } from './snapshots.js';
import { Barrier } from './barrier.js';
import { SnapshotView, captureAttr, specOf, type ViewHandle } from './view.js';
import { DirSink, restoreTree, type RestoreReport, type Sink } from './restore.js';
import { mapLimit } from './limit.js';

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
  /** Opened write-only: copy-on-write reads old contents through a second descriptor. */
  writeOnly: boolean;
  readFd?: Promise<number>;
  /** Bytes written back to back ending at `streakEnd` (copy-on-write looks ahead of them). */
  streak?: number;
  streakEnd?: number;
  /** The block up to which copy-on-write has been asked to preserve ahead of this handle. */
  keptTo?: number;
}

interface OpenView {
  view: SnapshotView;
  handle: ViewHandle;
}

export interface SnapshotOptions {
  /** A name reserved with `reserveSnapshotName` (quiesce tells hooks the name first). */
  name?: string;
  label?: string | null;
  consistency?: 'app' | 'crash';
  /** How long to wait for in-flight changes to finish once the barrier is up. */
  barrierTimeoutMs?: number;
  /** A replica's snapshot: the source's time, recorded instead of the time of the cut. */
  sourceTime?: string;
  /** Replica bookkeeping written atomically with the snapshot record. */
  extraOps?: Op[];
}

/** The most a sequential writer preserves ahead of itself, in stretches preserved concurrently. */
const LOOKAHEAD_MAX = 4 * 1024 * 1024;
const LOOKAHEAD_STRETCH = 1024 * 1024;

/** Records a periodic flush refreshes at most, and how many at a time. */
const REFRESH_PER_FLUSH = 2048;
const REFRESH_CONCURRENCY = 8;

/** First handle number of snapshot files: far above any descriptor the daemon can hold. */
const VIEW_HANDLE_BASE = 0x40000000;

/** What a sync wants a file to be (Volume.setAttributes). */
export interface WantedAttributes {
  /** Regular files only. */
  size?: number;
  uid: number;
  gid: number;
  mode: number;
  atime: TimeSpec;
  mtime: TimeSpec;
  xattrs: Array<[string, Buffer]>;
  expectLinks?: number;
  /** What the file must be; anything else is refused (EEXIST) before a change is made. */
  type?: 'file' | 'dir' | 'symlink' | 'other';
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

export interface GcReport {
  /** Preserved versions removed. */
  attrs: number;
  entries: number;
  blocks: number;
  /** Farm links of deleted files removed. */
  farm: number;
  journalEpochs: number;
  /** Blocks removed from the block store, packs deleted, and disk space given back. */
  storeBlocks: number;
  packs: number;
  bytesFreed: number;
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
const NOTHING: Promise<null> = Promise.resolve(null);
const ABSENT: PreservedEntry = { f: 0 };

function entryOf(fid: FileId, st: BigIntStats): PreservedEntry {
  return { f: fid, t: TypeTag[fileTypeOf(Number(st.mode))] };
}

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
  private readonly barrier = new Barrier();
  private readonly views = new Map<number, SnapshotView>();
  private readonly viewHandles = new Map<number, OpenView>();
  private readonly snapshotListeners = new Set<(names: string[]) => Promise<void>>();
  private nextViewHandle = VIEW_HANDLE_BASE;
  private farmReady: Promise<void> | null = null;
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
    private currentJournal: Journal,
    readonly blocks: BlockStore,
    readonly cow: Cow,
    readonly catalog: Catalog,
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
      if (format !== FORMAT_VERSION && !UPGRADABLE_FORMATS.includes(format)) throw new ReplfsError('damaged', `${root}: on-disk format ${format} is not supported by this replfs (format ${FORMAT_VERSION})`);
      if (format !== FORMAT_VERSION && opts.writable) await upgradeFormat(store, backing);
      const epoch = (await store.getJson<number>(Sublevel.meta, MetaKey.epoch)) ?? 1;
      const session = await store.getJson<SessionValue>(Sublevel.meta, MetaKey.session);
      const lastClean = session?.state !== 'open';
      const recorded = opts.writable ? new Map<FileId, FileRecord>() : undefined;
      const files = await FileTable.load(store, recorded && ((fid, rec) => recorded.set(fid, rec)));
      if ((await files.get(ROOT_FID)) === undefined) {
        throw new ReplfsError('damaged', `${root}: the volume database has no root record`, 'see docs/operations.md');
      }
      const journal = await Journal.load(store, epoch, config.blockSize, blocksPerRegion(config.blockSize));
      const health = (await store.getJson<JournalHealthRecord>(Sublevel.meta, MetaKey.journalHealth)) ?? { overflowed: [], inconsistent: [] };
      const records: SnapshotRecord[] = [];
      for await (const [, value] of store.entries(Sublevel.snapshots)) records.push(JSON.parse(value.toString('utf8')) as SnapshotRecord);
      const catalog = new Catalog(records);
      const blocks = await BlockStore.open(backing.stateDir(), store, config.journal.durability === 'strict');
      const cow = new Cow(store, blocks, config.blockSize);
      cow.setEpoch(epoch, catalog.newest()?.nextFid ?? 0);
      const volume = new Volume(root, config, backing, store, files, journal, blocks, cow, catalog, opts.writable, ownsRootFd, lastClean);
      volume.health = health;
      volume.watchBudget(journal, health.overflowed.some((o) => o.epoch === epoch));
      const report: OpenReport = { recoveredRegions: 0, lastCleanShutdown: lastClean, offline: { created: 0, changed: 0, moved: 0, deleted: 0, examples: [] } };
      if (!opts.writable) {
        // Read-only view: a pending region counts as wholly dirty, without writing that down.
        journal.recoverPending();
        return { volume, report };
      }
      const recovered = journal.recoverPending();
      report.recoveredRegions = recovered.regions;
      await volume.tidyFarm();
      // A file unlinked while open and left behind by a killed daemon: snapshots may still show it.
      const offline = await reconcile(backing, files, journal, recorded!, async (rel, fid) => {
        if (cow.needs(fid)) await volume.farm(fid, rel);
      });
      const { ops: offlineOps, ...counts } = offline;
      report.offline = counts;
      const divergence = await noteDivergence(store, counts);
      const problems = journal.problems.length ? [volume.noteInconsistent(epoch, journal.problems)] : [];
      await writeChunked(store, [...recovered.ops, ...offlineOps, ...journal.flushOps(), ...divergence, ...problems,
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
    await this.blocks.close();
    await this.store.close();
    for (const h of this.handles.values()) this.closeHandle(h);
    this.handles.clear();
    for (const v of this.viewHandles.values()) v.view.release(v.handle);
    this.viewHandles.clear();
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
      const refresh = await this.refreshRecords(all, sync ? Infinity : REFRESH_PER_FLUSH);
      await journalWrite;
      const written = this.store.write(refresh.ops, sync);
      this.files.track(refresh.fids, written);
      await written;
    };
    this.flushing = run();
    try { await this.flushing; } finally { this.flushing = null; }
  }

  /**
   * Refreshes the records of touched files (up to `limit` of them; the rest wait for the
   * next flush). A few at a time: after a snapshot of a big import every file is due at
   * once, and a burst of lstats and reads would queue the applications' requests behind it.
   */
  private async refreshRecords(all: boolean, limit: number): Promise<{ ops: Op[]; fids: FileId[] }> {
    const touched: Array<[FileId, string]> = [];
    for (const entry of this.touched) {
      if (touched.length >= limit) break;
      if (all || !(this.journal.kindsOf(entry[0]) & ChangeKind.created)) touched.push(entry);
    }
    for (const [fid] of touched) this.touched.delete(fid);
    const ops: Op[] = [];
    const fids: FileId[] = [];
    await mapLimit(touched, REFRESH_CONCURRENCY, async ([fid, rel]) => {
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
    });
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
   * Snapshots are safe too: a new id is above every snapshot's `nextFid`, so no snapshot
   * shows the new name whether or not its entry was preserved.
   */
  private async recordCreated(st: BigIntStats, parent: Promise<{ fid: FileId }>, rel: string): Promise<FileId | null> {
    if (!this.journaling) return null;
    const parentFid = (await parent).fid;
    const fid = this.files.allocate();
    this.commit([
      this.files.put(fid, recordFromStat(st, [[parentFid, baseName(rel)]])),
      this.files.nextFidOp(),
      ...this.journal.mark(fid, ChangeKind.created),
      ...this.entryChange(parentFid, baseName(rel), ChangeKind.created, ABSENT),
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

  /** Runs a mutating operation inside the write barrier. */
  private async guarded<T>(op: () => Promise<T>): Promise<T> {
    const wait = this.barrier.enter();
    if (wait) await wait;
    try {
      return await op();
    } finally {
      this.barrier.exit();
    }
  }

  // ---------------------------------------------------------------- copy-on-write

  /** Preserves a file's attributes before its first change in this epoch (if a snapshot sees it). */
  private keepAttrs(fid: FileId, where: string | number): Promise<PreservedAttr | null> {
    if (!this.cow.needs(fid)) return NOTHING;
    return this.cow.keepAttrs(fid, async () => {
      const abs = typeof where === 'number' ? `/proc/self/fd/${where}` : this.abs(where);
      const [value, rec] = await Promise.all([
        captureAttr(await (typeof where === 'number' ? io.fstat(where) : io.lstat(abs)), abs, typeof where === 'number'),
        this.files.get(fid),
      ]);
      if (rec && !rec.gone) value.n = rec.names;
      return value;
    });
  }

  /** The journal operations for a change of directory entry (dir, name), preserving it first. */
  private entryChange(dir: FileId, name: string, kinds: number, current: PreservedEntry): Op[] {
    const first = !this.journal.entryChanged(dir, name);
    return [...(first ? this.cow.entryOps(dir, name, current) : []), ...this.journal.markEntry(dir, name, kinds)];
  }

  /** A descriptor to read a handle's file through, for preserving what a write replaces. */
  private readFdOf(h: Handle): Promise<number> {
    if (!h.writeOnly) return Promise.resolve(h.fd);
    h.readFd ??= io.open(`/proc/self/fd/${h.fd}`, fsc.O_RDONLY);
    return h.readFd;
  }

  private closeHandle(h: Handle): void {
    fs.close(h.fd, () => undefined);
    h.readFd?.then((fd) => fs.close(fd, () => undefined), () => undefined);
  }

  /**
   * Preserves what a write of [pos, pos+len) is about to replace. A handle writing
   * sequentially also preserves ahead of itself, a twentieth of what it has written in a
   * row (at most 4 MiB), in 1 MiB stretches that run in the background and side by side:
   * reading old blocks and storing them overlaps writing new ones, and a short change
   * holds at most about 5% extra.
   */
  private async keepWritten(h: Handle, fid: FileId, pos: number, len: number): Promise<void> {
    const a = await this.keepAttrs(fid, h.fd);
    if (!a || a.t !== TypeTag.file) return;
    const bs = this.config.blockSize;
    const first = Math.floor(pos / bs);
    const end = Math.ceil((pos + len) / bs);
    const sequential = pos === h.streakEnd;
    h.streak = sequential ? (h.streak ?? 0) + len : len;
    h.streakEnd = pos + len;
    if (!sequential || h.keptTo === undefined || h.keptTo < end) h.keptTo = end;
    const aheadBlocks = Math.floor(Math.min(LOOKAHEAD_MAX, h.streak / 20) / bs);
    const stretch = Math.min(aheadBlocks, Math.max(1, Math.floor(LOOKAHEAD_STRETCH / bs)));
    const limit = Math.ceil(a.size / bs);
    if (!this.cow.covered(fid, first, end, a.size)) {
      h.keptTo = Math.min(Math.max(h.keptTo, end + stretch), Math.max(limit, end));
      await this.cow.keepBlocks(fid, () => this.readFdOf(h), first, h.keptTo, a.size);
    }
    // The stretches ahead, in the background. Each holds the barrier like any change: a
    // snapshot waits for them. If one fails, a write reaching its blocks preserves them.
    while (aheadBlocks > 0 && h.keptTo - end < aheadBlocks && h.keptTo < limit && !this.barrier.raised) {
      const from = h.keptTo;
      h.keptTo = Math.min(from + stretch, limit);
      this.barrier.enter();
      this.cow.keepBlocks(fid, () => this.readFdOf(h), from, h.keptTo, a.size)
        .catch(() => undefined)
        .finally(() => this.barrier.exit());
    }
  }

  /** Preserves what a truncation to `size` cuts off. */
  private async keepTruncated(fid: FileId, where: string | Handle, size: number): Promise<void> {
    const a = await this.keepAttrs(fid, typeof where === 'string' ? where : where.fd);
    if (!a || a.t !== TypeTag.file || size >= a.size) return;
    const bs = this.config.blockSize;
    let opened: number | null = null;
    const readFd = async () => {
      if (typeof where !== 'string') return this.readFdOf(where);
      opened = await io.open(this.abs(where), fsc.O_RDONLY | fsc.O_NOFOLLOW);
      return opened;
    };
    try {
      await this.cow.keepBlocks(fid, readFd, Math.floor(size / bs), Math.ceil(a.size / bs), a.size);
    } finally {
      if (opened !== null) await io.close(opened);
    }
  }

  private farmAbs(fid: FileId): string {
    return `${this.backing.stateDir()}/${FARM_DIR}/${hex(fid)}`;
  }

  /**
   * Keeps a file's inode for the snapshots that show it, before its last name goes: a
   * hard link in .replfs/farm. Its blocks are then read from there until they change.
   */
  private async farm(fid: FileId, rel: string): Promise<void> {
    this.farmReady ??= fsp.mkdir(`${this.backing.stateDir()}/${FARM_DIR}`, { recursive: true, mode: 0o700 }).then(() => undefined);
    await this.farmReady;
    try {
      await fsp.link(this.abs(rel), this.farmAbs(fid));
    } catch (err) {
      if (!hasCode(err, 'EEXIST')) throw err;
      // Left by a crash: replace it unless it already is this inode.
      const [there, here] = await Promise.all([io.lstat(this.farmAbs(fid)), io.lstat(this.abs(rel))]);
      if (there.ino === here.ino) return;
      await fsp.unlink(this.farmAbs(fid));
      await fsp.link(this.abs(rel), this.farmAbs(fid));
    }
  }

  /** At mount: farm links of files that still have a name were left by a crash. */
  private async tidyFarm(): Promise<void> {
    let names: string[];
    try { names = await fsp.readdir(`${this.backing.stateDir()}/${FARM_DIR}`); } catch { return; }
    for (const name of names) {
      const rec = /^[0-9a-f]{16}$/.test(name) ? await this.files.get(parseInt(name, 16)) : undefined;
      if (!rec?.gone) await fsp.unlink(`${this.backing.stateDir()}/${FARM_DIR}/${name}`);
    }
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
      // A real .snapshots at the root is shadowed by the snapshot directory.
      if (rel === '' && (name === STATE_DIR || name === SNAPSHOT_DIR)) continue;
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
    return this.guarded(async () => {
      const { fid } = await this.fileAt(rel);
      await this.keepAttrs(fid, rel);
      await this.commit(this.journal.mark(fid, kind), [], true);
      await apply(this.abs(rel));
      this.touch(fid, rel);
    });
  }

  /**
   * Gives a file the size, owner, mode, xattrs and times it should have (what a sync
   * applies), as one change: one preservation, one journal write, and only the calls that
   * change something. `expectLinks`, if given, is how many names the file may have: a file
   * with more was linked to from somewhere replfs does not know, and is refused (EMLINK).
   */
  async setAttributes(p: string, want: WantedAttributes): Promise<void> {
    const rel = relPath(p);
    return this.guarded(async () => {
      const { fid, st } = await this.fileAt(rel);
      const kind = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
      if (want.type !== undefined && kind !== want.type) throw new FsError('EEXIST', `${rel} is a ${kind}, not a ${want.type}`);
      if (want.expectLinks !== undefined && !st.isDirectory() && Number(st.nlink) > want.expectLinks) {
        throw new FsError('EMLINK', `${rel} has ${st.nlink} links, more than the ${want.expectLinks} replfs made`);
      }
      const isLink = st.isSymbolicLink();
      const abs = this.abs(rel);
      const current = await sys.llistxattr(abs).catch((err) => {
        if (hasCode(err, 'ENOTSUP', 'EOPNOTSUPP')) return [] as string[];
        throw err;
      });
      const wanted = new Map(want.xattrs);
      const resize = want.size !== undefined && st.isFile() && want.size !== Number(st.size);
      const xattrsChange = want.xattrs.length > 0 || current.some((n) => !wanted.has(n));
      if (this.journaling) {
        await this.keepAttrs(fid, rel);
        if (resize && this.cow.needs(fid)) await this.keepTruncated(fid, rel, want.size!);
        const ops = this.journal.mark(fid, ChangeKind.attributes | (xattrsChange ? ChangeKind.xattrs : 0));
        if (resize) ops.push(...this.journal.mark(fid, ChangeKind.truncated, want.size! < Number(st.size) ? { minSize: want.size! } : {}));
        // A file made in this epoch is journaled as created, which covers any change: no wait.
        await this.commit(ops, [], !(this.journal.kindsOf(fid) & ChangeKind.created));
      }
      if (resize) await fsp.truncate(abs, want.size!);
      if (Number(st.uid) !== want.uid || Number(st.gid) !== want.gid) await fsp.lchown(abs, want.uid, want.gid);
      // chown clears set-id bits, so the mode goes after it.
      if (!isLink && (Number(st.mode) & 0o7777) !== (want.mode & 0o7777)) await fsp.chmod(abs, want.mode & 0o7777);
      for (const name of current) if (!wanted.has(name)) await sys.lremovexattr(abs, name);
      for (const [name, value] of wanted) await sys.lsetxattr(abs, name, value, 0);
      await sys.utimensat(abs, want.atime.sec, want.atime.nsec, want.mtime.sec, want.mtime.nsec, true);
      this.touch(fid, rel);
    });
  }

  /** Makes everything written to the volume so far durable: data, names and the database. */
  async syncData(): Promise<void> {
    await sys.syncfs(this.backing.rootFd);
    await this.store.write([], true);
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
    const writing = (flags & O_ACCMODE) !== fsc.O_RDONLY;
    if (flags & fsc.O_TRUNC && writing) return this.guarded(() => this.openFile(p, flags));
    return this.openFile(p, flags);
  }

  private async openFile(p: string, flags: number): Promise<number> {
    const rel = relPath(p);
    const writing = (flags & O_ACCMODE) !== fsc.O_RDONLY;
    if (flags & fsc.O_TRUNC && writing) await this.truncateAt(rel, 0);
    const fd = await io.open(this.abs(rel), (flags & ~STRIP_OPEN_FLAGS) | fsc.O_NOFOLLOW);
    const h: Handle = { fd, fid: null, rel, sync: (flags & SYNC_FLAGS) !== 0, writeOnly: (flags & O_ACCMODE) === fsc.O_WRONLY };
    this.handles.set(fd, h);
    if (writing && this.journaling) {
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
    return this.guarded(async () => {
      const rel = relPath(p);
      const { parent } = await this.parentBeforeChange(rel);
      let fd: number;
      try {
        fd = await io.open(this.abs(rel), (flags & ~STRIP_OPEN_FLAGS) | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, mode);
      } catch (err) {
        // Someone created it first: behave like open(2) without O_EXCL, as the caller asked.
        if (hasCode(err, 'EEXIST') && !(flags & fsc.O_EXCL)) return this.openFile(p, flags & ~fsc.O_CREAT);
        throw err;
      }
      try {
        await this.ownNew(fd, caller, parent, mode, false);
        const st = await io.fstat(fd);
        const fid = await this.recordCreated(st, parent, rel);
        this.handles.set(fd, { fd, fid, rel, sync: (flags & SYNC_FLAGS) !== 0, writeOnly: (flags & O_ACCMODE) === fsc.O_WRONLY });
        return fd;
      } catch (err) {
        fs.close(fd, () => undefined);
        throw err;
      }
    });
  }

  read(fd: number, buf: Buffer, len: number, pos: number): Promise<number> {
    return io.read(fd, buf, len, pos);
  }

  async write(fd: number, buf: Buffer, len: number, pos: number): Promise<number> {
    const h = this.handle(fd);
    if (!this.journaling) return io.write(fd, buf, len, pos);
    const wait = this.barrier.enter();
    try {
      if (wait) await wait;
      if (h.fid === null) h.fid = await this.fidForStat(await io.fstat(fd), h.rel);
      if (this.cow.needs(h.fid)) await this.keepWritten(h, h.fid, pos, len);
      const intent = this.journal.noteWrite(h.fid, pos, len);
      if (intent) await intent;
      this.touched.set(h.fid, h.rel);
      if (h.sync) {
        await this.blocks.sync();
        await this.store.write(this.journal.flushOps(h.fid), true);
      }
      return await io.write(fd, buf, len, pos);
    } finally {
      this.barrier.exit();
    }
  }

  async release(fd: number): Promise<void> {
    const h = this.handles.get(fd);
    this.handles.delete(fd);
    if (h?.readFd) await h.readFd.then((r) => io.close(r), () => undefined);
    await io.close(fd);
  }

  /** Makes the file's data, the blocks it preserved and its journal entries durable together. */
  async fsync(fd: number, datasync: boolean): Promise<void> {
    const h = this.handle(fd);
    if (this.journaling) {
      await this.blocks.sync();
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

  truncate(p: string, size: number): Promise<void> {
    return this.guarded(() => this.truncateAt(relPath(p), size));
  }

  private async truncateAt(rel: string, size: number): Promise<void> {
    if (this.journaling) {
      const { fid, st } = await this.fileAt(rel);
      if (this.cow.needs(fid)) await this.keepTruncated(fid, rel, size);
      await this.journalTruncate(fid, Number(st.size), size);
      this.touch(fid, rel);
    }
    await fsp.truncate(this.abs(rel), size);
  }

  async ftruncate(p: string, fd: number, size: number): Promise<void> {
    const h = this.handles.get(fd);
    if (!h) return this.truncate(p, size);
    return this.guarded(async () => {
      if (this.journaling) {
        const st = await io.fstat(fd);
        if (h.fid === null) h.fid = await this.fidForStat(st, h.rel);
        if (this.cow.needs(h.fid)) await this.keepTruncated(h.fid, h, size);
        await this.journalTruncate(h.fid, Number(st.size), size);
        this.touch(h.fid, h.rel);
      }
      await new Promise<void>((resolve, reject) => fs.ftruncate(fd, size, (err) => (err ? reject(err) : resolve())));
    });
  }

  // ---------------------------------------------------------------- namespace

  /** Looks up the parent of a name about to be made, preserving its attributes first. */
  private async parentBeforeChange(rel: string): Promise<{ parent: Promise<{ fid: FileId; st: BigIntStats }> }> {
    const parent = this.parentOf(rel);
    if (this.journaling && this.cow.active) {
      const { fid } = await parent;
      await this.keepAttrs(fid, parentOf(rel));
    }
    // Wrapped: without snapshots the lookup runs on while the change is made.
    return { parent };
  }

  async mkdir(p: string, mode: number, caller: Caller): Promise<void> {
    return this.guarded(async () => {
      const rel = relPath(p);
      const { parent } = await this.parentBeforeChange(rel);
      await fsp.mkdir(this.abs(rel), mode);
      await this.ownNew(this.abs(rel), caller, parent, mode, true);
      await this.recordCreated(await this.statRel(rel), parent, rel);
    });
  }

  async symlink(target: string, p: string, caller: Caller): Promise<void> {
    return this.guarded(async () => {
      const rel = relPath(p);
      const { parent } = await this.parentBeforeChange(rel);
      await fsp.symlink(target, this.abs(rel));
      await this.ownNew(this.abs(rel), caller, parent, 0o777, false);
      await this.recordCreated(await this.statRel(rel), parent, rel);
    });
  }

  async mknod(p: string, mode: number, dev: number, caller: Caller): Promise<void> {
    return this.guarded(async () => {
      const rel = relPath(p);
      const { parent } = await this.parentBeforeChange(rel);
      await sys.mknod(this.abs(rel), mode, dev);
      await this.ownNew(this.abs(rel), caller, parent, mode, false);
      await this.recordCreated(await this.statRel(rel), parent, rel);
    });
  }

  async link(srcPath: string, dstPath: string): Promise<void> {
    const src = relPath(srcPath);
    const dst = relPath(dstPath);
    if (!this.journaling) return fsp.link(this.abs(src), this.abs(dst));
    return this.guarded(async () => {
      const [{ fid }, { fid: parent }] = await Promise.all([this.fileAt(src), this.fileAt(parentOf(dst))]);
      await Promise.all([this.keepAttrs(fid, src), this.keepAttrs(parent, parentOf(dst))]);
      await this.commit([
        ...this.journal.mark(fid, ChangeKind.linked),
        ...this.entryChange(parent, baseName(dst), ChangeKind.created, ABSENT),
        ...this.journal.mark(parent, ChangeKind.entries),
      ], [], true);
      await fsp.link(this.abs(src), this.abs(dst));
      await this.renameRecord(fid, null, [parent, baseName(dst)]);
      this.touch(fid, dst);
      this.touch(parent, parentOf(dst));
    });
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
    return this.guarded(async () => {
      const [{ fid, st }, { fid: parent }] = await Promise.all([this.fileAt(rel), this.fileAt(parentOf(rel))]);
      const last = isDir || Number(st.nlink) <= 1;
      await Promise.all([this.keepAttrs(fid, rel), this.keepAttrs(parent, parentOf(rel))]);
      if (last && st.isFile() && this.cow.needs(fid)) await this.farm(fid, rel);
      await this.commit([
        ...this.journal.mark(fid, ChangeKind.unlinked | (last ? ChangeKind.deleted : 0)),
        ...this.entryChange(parent, baseName(rel), ChangeKind.deleted, entryOf(fid, st)),
        ...this.journal.mark(parent, ChangeKind.entries),
      ], [], true);
      await remove();
      await this.renameRecord(fid, [parent, baseName(rel)], null);
      this.touch(parent, parentOf(rel));
      if (!last) this.touch(fid, rel);
    });
  }

  async rename(srcPath: string, dstPath: string): Promise<void> {
    const src = relPath(srcPath);
    const dst = relPath(dstPath);
    if (!this.journaling) return fsp.rename(this.abs(src), this.abs(dst));
    return this.guarded(async () => {
      const [{ fid, st }, { fid: srcParent }, { fid: dstParent }, target] = await Promise.all([
        this.fileAt(src), this.fileAt(parentOf(src)), this.fileAt(parentOf(dst)),
        this.fileAt(dst).catch((err) => { if (hasCode(err, 'ENOENT')) return null; throw err; }),
      ]);
      // rename(2) between two names of one file does nothing.
      if (target && target.fid === fid) return fsp.rename(this.abs(src), this.abs(dst));
      const targetGone = target !== null && (target.st.isDirectory() || Number(target.st.nlink) <= 1);
      await Promise.all([
        this.keepAttrs(fid, src), this.keepAttrs(srcParent, parentOf(src)), this.keepAttrs(dstParent, parentOf(dst)),
        target ? this.keepAttrs(target.fid, dst) : null,
      ]);
      if (target && targetGone && target.st.isFile() && this.cow.needs(target.fid)) await this.farm(target.fid, dst);
      const ops = [
        ...this.journal.mark(fid, ChangeKind.renamed),
        ...this.entryChange(srcParent, baseName(src), ChangeKind.deleted, entryOf(fid, st)),
        ...this.entryChange(dstParent, baseName(dst), ChangeKind.created, target ? entryOf(target.fid, target.st) : ABSENT),
        ...this.journal.mark(srcParent, ChangeKind.entries),
        ...this.journal.mark(dstParent, ChangeKind.entries),
      ];
      if (target) ops.push(...this.journal.mark(target.fid, ChangeKind.unlinked | (targetGone ? ChangeKind.deleted : 0)));
      await this.commit(ops, [], true);
      await fsp.rename(this.abs(src), this.abs(dst));
      if (target) await this.renameRecord(target.fid, [dstParent, baseName(dst)], null);
      await this.renameRecord(fid, [srcParent, baseName(src)], [dstParent, baseName(dst)]);
      this.touch(fid, dst);
      this.touch(srcParent, parentOf(src));
      this.touch(dstParent, parentOf(dst));
    });
  }

  /** Replaces, adds or removes one name of a file's record after the change was made. */
  private async renameRecord(fid: FileId, from: NameRef | null, to: NameRef | null): Promise<void> {
    const ops = await this.files.update(fid, (rec) => {
      if (!rec) return [];
      let names = rec.names.filter((n) => !(from && n[0] === from[0] && n[1] === from[1]));
      if (to) names = [...names.filter((n) => !(n[0] === to[0] && n[1] === to[1])), to];
      const gone = names.length === 0;
      // The last name of a deleted file is kept so the journal can still say where it was.
      const next: FileRecord = gone
        ? { ...rec, names: rec.names.length ? [rec.names[0]!] : [], gone: true, died: rec.gone ? rec.died ?? this.journal.epoch : this.journal.epoch }
        : { ...rec, names };
      if (!gone) { delete next.gone; delete next.died; }
      return [this.files.put(fid, next)];
    });
    this.commit(ops, [fid], false);
  }

  // ---------------------------------------------------------------- snapshots

  get journal(): Journal {
    return this.currentJournal;
  }

  // ---------------------------------------------------------------- journal health

  /** Epochs whose journal lost its block detail or was found damaged (meta journalHealth). */
  health: JournalHealthRecord = { overflowed: [], inconsistent: [] };
  private journalBudget = DEFAULT_JOURNAL_MAX_BYTES;

  /**
   * How much block detail one epoch's journal may keep (journal.maxBytes); past it, the
   * changed files are compared whole by the next sync. Applies at once.
   */
  setJournalBudget(maxBytes: number): void {
    this.journalBudget = maxBytes;
    this.journal.setBudget(maxBytes, this.journal.overflowed);
  }

  private watchBudget(journal: Journal, overflowed: boolean): void {
    journal.setBudget(this.journalBudget, overflowed);
    journal.onOverflow = () => {
      this.health = { ...this.health, overflowed: [...this.health.overflowed.filter((o) => o.epoch !== journal.epoch), { epoch: journal.epoch, at: new Date().toISOString() }] };
      return [putJson(Sublevel.meta, MetaKey.journalHealth, this.health)];
    };
  }

  /** Records that epoch `epoch`'s journal holds damaged records; returns the write. */
  private noteInconsistent(epoch: number, problems: string[]): Op {
    const detail = problems.length === 1 ? problems[0]! : `${problems[0]} (and ${problems.length - 1} more)`;
    this.health = { ...this.health, inconsistent: [...this.health.inconsistent.filter((o) => o.epoch !== epoch), { epoch, at: new Date().toISOString(), detail }] };
    return putJson(Sublevel.meta, MetaKey.journalHealth, this.health);
  }

  /**
   * Why the change set from snapshot `base` to `target` (a name, or the live volume) cannot
   * be trusted block by block, or null: an epoch in between overflowed or was damaged.
   */
  fullCompareReason(base: string, target: string | null): { kind: 'overflow' | 'inconsistent'; reason: string } | null {
    const from = this.snapshotNamed(base).epoch;
    const to = target === null ? this.journal.epoch : this.snapshotNamed(target).epoch;
    const bad = this.health.inconsistent.find((o) => o.epoch > from && o.epoch <= to);
    if (bad) return { kind: 'inconsistent', reason: `the journal was found inconsistent on ${bad.at}: ${bad.detail}` };
    const over = this.health.overflowed.find((o) => o.epoch > from && o.epoch <= to);
    if (over) return { kind: 'overflow', reason: `the journal overflowed (journal.maxBytes) on ${over.at}` };
    return null;
  }

  // ---------------------------------------------------------------- operations record

  /** The policy layer's record (schedules, sync outcomes, alerts); opaque here. */
  async operations<T>(): Promise<T | undefined> {
    return this.store.getJson<T>(Sublevel.meta, MetaKey.operations);
  }

  async setOperations(value: unknown): Promise<void> {
    await this.store.write([putJson(Sublevel.meta, MetaKey.operations, value)], true);
  }

  /**
   * The volume's config.json as it is now on disk (read afresh, so that an edit, such as
   * new quiesce hooks, applies to the next snapshot without a remount).
   */
  async currentConfig(): Promise<VolumeConfig> {
    return readConfig(this.backing, this.root);
  }

  /** Reserves the name a snapshot taken now will get (quiesce hooks are told it first). */
  reserveSnapshotName(at = new Date(), preferred?: string): string {
    return this.catalog.reserve(at, preferred);
  }

  releaseSnapshotName(name: string): void {
    this.catalog.release(name);
  }

  /**
   * Takes a snapshot: raises the write barrier, waits for changes in flight, makes the
   * journal, file records and preserved blocks durable, records the snapshot and moves
   * to the next epoch. Costs the same whatever the size of the volume.
   */
  async snapshot(opts: SnapshotOptions = {}): Promise<SnapshotRecord> {
    if (!this.writable) throw new ReplfsError('refused', 'the volume is open read-only');
    const name = opts.name ?? this.catalog.reserve(new Date());
    try {
      await this.barrier.raise(opts.barrierTimeoutMs ?? 10_000);
    } catch (err) {
      this.catalog.release(name);
      throw err;
    }
    let rec: SnapshotRecord;
    try {
      const cut = new Date();
      // The journal of the closing epoch must be complete on disk; records of new files are
      // already queued ahead of this write. Refreshing recorded sizes and times is not needed
      // for the cut and can take long after a big import, so it is left to the usual flushes.
      await this.store.write(this.journal.flushOps(), true);
      await this.blocks.sync();
      const epoch = this.journal.epoch;
      rec = {
        name, epoch, sourceTime: opts.sourceTime ?? cut.toISOString(), label: opts.label ?? null,
        consistency: opts.consistency ?? 'crash', nextFid: this.files.next,
      };
      await this.store.write([
        putJson(Sublevel.snapshots, snapshotKey(epoch), rec),
        putJson(Sublevel.meta, MetaKey.epoch, epoch + 1),
        this.files.nextFidOp(),
        ...(opts.extraOps ?? []),
      ], true);
      this.catalog.add(rec);
      this.currentJournal = Journal.fresh(this.store, epoch + 1, this.config.blockSize, blocksPerRegion(this.config.blockSize));
      this.watchBudget(this.currentJournal, false);
      this.cow.setEpoch(epoch + 1, rec.nextFid);
    } catch (err) {
      this.catalog.release(name);
      throw err;
    } finally {
      this.barrier.lower();
    }
    await this.announceSnapshots([name]);
    return rec;
  }

  /**
   * Calls `listener` with the names of snapshots taken or deleted, each time that happens;
   * snapshot() and deleteSnapshots() wait for it before they return. Returns the unsubscriber.
   */
  onSnapshotsChanged(listener: (names: string[]) => Promise<void>): () => void {
    this.snapshotListeners.add(listener);
    return () => this.snapshotListeners.delete(listener);
  }

  private async announceSnapshots(names: string[]): Promise<void> {
    await Promise.all([...this.snapshotListeners].map((l) => l(names).catch(() => undefined)));
  }

  // ---------------------------------------------------------------- destinations (sources)

  /** Records that the replica `replicaId` now holds snapshot `base`, pinning it. */
  async recordDestination(replicaId: string, rec: DestinationRecord): Promise<void> {
    await this.store.write([putJson(Sublevel.meta, `dest!${replicaId}`, rec)], true);
  }

  /** Forgets the record of the replica `replicaId`: its base is no longer kept for it. */
  async forgetDestination(replicaId: string): Promise<void> {
    await this.store.write([{ type: 'del', sub: Sublevel.meta, key: `dest!${replicaId}` }], true);
  }

  async destinations(): Promise<Array<DestinationRecord & { replicaId: string }>> {
    const out: Array<DestinationRecord & { replicaId: string }> = [];
    for await (const [key, value] of this.store.entries(Sublevel.meta, { gte: 'dest!', lt: 'dest"' })) {
      out.push({ replicaId: key.slice('dest!'.length), ...(JSON.parse(value.toString('utf8')) as DestinationRecord) });
    }
    return out;
  }

  // ---------------------------------------------------------------- replica bookkeeping

  async replicaMeta(): Promise<ReplicaMeta | undefined> {
    return this.store.getJson<ReplicaMeta>(Sublevel.meta, MetaKey.replica);
  }

  replicaMetaOp(meta: ReplicaMeta): Op {
    return putJson(Sublevel.meta, MetaKey.replica, meta);
  }

  async setReplicaMeta(meta: ReplicaMeta): Promise<void> {
    await this.store.write([this.replicaMetaOp(meta)], true);
  }

  /** The record of a volume promoted from a replica, if this is one. */
  async promoted(): Promise<PromotedRecord | undefined> {
    return this.store.getJson<PromotedRecord>(Sublevel.meta, MetaKey.promoted);
  }

  /**
   * A replica becomes an ordinary volume (replfs promote): its replica record, the source's
   * names and any plan log go, and `promoted` says where it came from. One batch at the end,
   * so that a stop half way leaves a replica.
   */
  async becomeVolume(promoted: PromotedRecord): Promise<void> {
    const ops: Op[] = [];
    for await (const [key] of this.store.entries(Sublevel.origin)) ops.push({ type: 'del', sub: Sublevel.origin, key });
    ops.push(...(await this.planLogDeletes()));
    ops.push({ type: 'del', sub: Sublevel.meta, key: MetaKey.replica }, putJson(Sublevel.meta, MetaKey.promoted, promoted));
    // The deletions first (a replica keeps working without them), the record last.
    await writeChunked(this.store, ops.slice(0, -2), false);
    await this.store.write(ops.slice(-2), true);
  }

  /**
   * An ordinary volume becomes a replica of another, whose names for its files are
   * `origin` (a failback: the volume that replaced this one syncs back to it). The names
   * are written first; the replica record, which makes it a replica, last, with the
   * destinations this volume synced to (a replica sends nothing) and any promoted record.
   */
  async becomeReplica(meta: ReplicaMeta, origin: Array<[FileId, OriginNode]>): Promise<void> {
    const old: Op[] = [];
    for await (const [key] of this.store.entries(Sublevel.origin)) old.push({ type: 'del', sub: Sublevel.origin, key });
    await writeChunked(this.store, [...old, ...origin.map(([fid, node]) => putJson(Sublevel.origin, hex(fid), node))], false);
    const last: Op[] = [{ type: 'del', sub: Sublevel.meta, key: MetaKey.promoted }, this.replicaMetaOp(meta)];
    for await (const [key] of this.store.entries(Sublevel.meta, { gte: 'dest!', lt: 'dest"' })) last.push({ type: 'del', sub: Sublevel.meta, key });
    await this.store.write(last, true);
  }

  /** The source's nodes as last applied, for the given source file ids. */
  async originNodes(fids: FileId[]): Promise<Map<FileId, OriginNode>> {
    const raw = await this.store.getMany(Sublevel.origin, fids.map(hex));
    const out = new Map<FileId, OriginNode>();
    raw.forEach((r, i) => { if (r !== undefined) out.set(fids[i]!, JSON.parse(r.toString('utf8')) as OriginNode); });
    return out;
  }

  originOps(entries: Array<[FileId, OriginNode | null]>): Op[] {
    return entries.map(([fid, node]) => (node ? putJson(Sublevel.origin, hex(fid), node) : { type: 'del' as const, sub: Sublevel.origin, key: hex(fid) }));
  }

  /** Every source file a replica knows, with its names as last applied. */
  async allOrigins(): Promise<Map<FileId, OriginNode>> {
    const out = new Map<FileId, OriginNode>();
    for await (const [key, value] of this.store.entries(Sublevel.origin)) out.set(unhex(key), JSON.parse(value.toString('utf8')) as OriginNode);
    return out;
  }

  /**
   * Logs the name changes a sync is about to make (steps in order, and every changed file's
   * node as they leave it), with `meta` saying so, durably: if the sync stops half way, the
   * next one finishes them first (`loggedPlan`, `commitPlan`). Kept in chunks of
   * PLAN_CHUNK entries: a first copy of many files logs as many steps.
   */
  async logPlan(meta: ReplicaMeta, steps: unknown[], nodes: Array<[FileId, OriginNode | null]>): Promise<void> {
    // Leftovers of a log whose meta never landed would be taken for part of this one.
    const ops = await this.planLogDeletes();
    ops.push(...chunkOps(Sublevel.planSteps, steps), ...chunkOps(Sublevel.pendingOrigin, nodes), this.replicaMetaOp(meta));
    await writeChunked(this.store, ops, true);
  }

  /** The steps of a logged plan, in order. */
  async loggedPlan<T>(): Promise<T[]> {
    const steps: T[] = [];
    for await (const [, value] of this.store.entries(Sublevel.planSteps)) steps.push(...(JSON.parse(value.toString('utf8')) as T[]));
    return steps;
  }

  /**
   * The logged plan is done: its nodes become the origin records, and the log goes, with
   * `meta`; except `keep`, steps left for later (logged again in their place).
   */
  async commitPlan(meta: ReplicaMeta, keep: unknown[] = []): Promise<void> {
    const ops: Op[] = [];
    for await (const [, value] of this.store.entries(Sublevel.pendingOrigin)) {
      for (const [fid, node] of JSON.parse(value.toString('utf8')) as Array<[FileId, OriginNode | null]>) {
        ops.push(node ? putJson(Sublevel.origin, hex(fid), node) : { type: 'del', sub: Sublevel.origin, key: hex(fid) });
      }
    }
    ops.push(...(await this.planLogDeletes()), ...chunkOps(Sublevel.planSteps, keep), this.replicaMetaOp(meta));
    await writeChunked(this.store, ops, false);
  }

  /** Operations that remove a plan log, for a batch of the caller's. */
  async planLogDeletes(): Promise<Op[]> {
    const ops: Op[] = [];
    for (const sub of [Sublevel.planSteps, Sublevel.pendingOrigin]) {
      for await (const [key] of this.store.entries(sub)) ops.push({ type: 'del', sub, key });
    }
    return ops;
  }

  snapshots(): SnapshotRecord[] {
    return this.catalog.list();
  }

  snapshotNamed(name: string): SnapshotRecord {
    const rec = this.catalog.get(name);
    if (!rec) throw new ReplfsError('notFound', `no snapshot named ${JSON.stringify(name)}`, 'list them with `replfs snapshots`');
    return rec;
  }

  /** A read-only view of the volume as of snapshot `name` (ENOENT if there is none). */
  view(name: string, orOpenDeleted = false): SnapshotView {
    const rec = this.catalog.get(name);
    if (!rec) {
      // Deleted, but a file is still open in it: its readers keep their view until they close
      // (the kernel asks for that file's attributes by path).
      if (orOpenDeleted) for (const v of this.viewHandles.values()) if (v.view.snap.name === name) return v.view;
      throw new FsError('ENOENT');
    }
    let v = this.views.get(rec.epoch);
    if (!v || v.snap !== rec) {
      v = new SnapshotView({
        store: this.store, files: this.files, blocks: this.blocks, cow: this.cow, backing: this.backing,
        blockSize: this.config.blockSize, farmPath: (fid) => this.farmAbs(fid),
        // The newest snapshot sees a file as it is live until the file's first change since,
        // which the journal records (in memory) before the change is made.
        quiet: (epoch, fid) => this.journaling && epoch === this.journal.epoch - 1 && this.journal.kindsOf(fid) === 0,
      }, rec);
      this.views.set(rec.epoch, v);
    }
    return v;
  }

  async openInView(name: string, rel: string): Promise<number> {
    const view = this.view(name);
    const handle = await view.open(rel);
    const n = this.nextViewHandle++;
    if (this.nextViewHandle >= 0xffffffff) this.nextViewHandle = VIEW_HANDLE_BASE;
    this.viewHandles.set(n, { view, handle });
    return n;
  }

  readInView(n: number, buf: Buffer, len: number, pos: number): Promise<number> {
    const v = this.viewHandles.get(n);
    if (!v) throw new FsError('EBADF');
    return v.view.read(v.handle, buf, len, pos);
  }

  releaseInView(n: number): void {
    const v = this.viewHandles.get(n);
    if (!v) return;
    this.viewHandles.delete(n);
    v.view.release(v.handle);
  }

  isViewHandle(n: number): boolean {
    return n >= VIEW_HANDLE_BASE;
  }

  /** Deletes snapshots and frees what only they needed. */
  async deleteSnapshots(names: string[]): Promise<GcReport> {
    if (!this.writable) throw new ReplfsError('refused', 'the volume is open read-only');
    const recs = names.map((n) => this.snapshotNamed(n));
    for (const d of await this.destinations()) {
      if (names.includes(d.base)) {
        throw new ReplfsError('refused', `${d.base} is the base of the sync to ${d.destination}: the next sync there starts from it`,
          'sync that destination again first, and its base moves on');
      }
      if (d.pending !== undefined && names.includes(d.pending)) {
        throw new ReplfsError('refused', `${d.pending} is being sent to ${d.destination}, or was when that sync stopped: the next sync there resumes it`,
          'sync that destination again first');
      }
    }
    await this.store.write(recs.map((rec) => ({ type: 'del' as const, sub: Sublevel.snapshots, key: snapshotKey(rec.epoch) })), true);
    for (const rec of recs) {
      this.catalog.remove(rec);
      this.views.delete(rec.epoch);
    }
    await this.announceSnapshots(recs.map((r) => r.name));
    // Snapshots deleted with files still open in them keep being preserved for until closed.
    const open = [...this.viewHandles.values()].map((v) => v.view.snap.nextFid);
    this.cow.setEpoch(this.journal.epoch, Math.max(this.catalog.newest()?.nextFid ?? 0, ...open));
    return this.collectGarbage();
  }

  /**
   * Removes preserved attributes, entries and blocks, farm links and journal epochs that
   * no snapshot needs any more. A preserved version v whose next older version is u serves
   * exactly the snapshots with epochs in (u, v]; with none there, it goes. Snapshots with
   * files open in a view count as kept until those files are closed.
   */
  async collectGarbage(): Promise<GcReport> {
    const kept = new Set(this.catalog.list().map((r) => r.epoch));
    for (const v of this.viewHandles.values()) kept.add(v.view.snap.epoch);
    const epochs = [...kept].sort((a, b) => a - b);
    const anyIn = (after: number, upTo: number) => epochs.some((e) => e > after && e <= upTo);
    const report: GcReport = { attrs: 0, entries: 0, blocks: 0, farm: 0, journalEpochs: 0, storeBlocks: 0, packs: 0, bytesFreed: 0 };
    await this.barrier.raise(60_000);
    try {
      const ops: Op[] = [];
      // Attributes: attrs/<fid>!<v>, versions ascending per file.
      let lastFid = '';
      let prev = 0;
      for await (const [key] of this.store.entries(Sublevel.attrs)) {
        const [fidHex, vHex] = key.split('!') as [string, string];
        if (fidHex !== lastFid) { lastFid = fidHex; prev = 0; }
        const v = parseInt(vHex, 16);
        if (!anyIn(prev, v)) { ops.push({ type: 'del', sub: Sublevel.attrs, key }); report.attrs++; }
        prev = v;
      }
      // Entries: dentries/<dir>!<name>\0<v>.
      let lastEntry = '';
      for await (const [key] of this.store.entries(Sublevel.dentries)) {
        const sep = key.lastIndexOf('\0');
        const which = key.slice(0, sep);
        if (which !== lastEntry) { lastEntry = which; prev = 0; }
        const v = parseInt(key.slice(sep + 1), 16);
        if (!anyIn(prev, v)) { ops.push({ type: 'del', sub: Sublevel.dentries, key }); report.entries++; }
        prev = v;
      }
      // Blocks: blocks/<fid>!<v>!<block>, versions ascending per file, blocks within.
      const liveHashes = new Set<string>();
      let blockFid = '';
      let lastV = new Map<string, number>();
      for await (const [key, value] of this.store.entries(Sublevel.blocks)) {
        const [fidHex, vHex, blockHex] = key.split('!') as [string, string, string];
        if (fidHex !== blockFid) { blockFid = fidHex; lastV = new Map(); }
        const v = parseInt(vHex, 16);
        if (anyIn(lastV.get(blockHex) ?? 0, v)) {
          if (value.length) liveHashes.add(value.toString('hex'));
        } else {
          ops.push({ type: 'del', sub: Sublevel.blocks, key });
          report.blocks++;
        }
        lastV.set(blockHex, v);
      }
      // Journal epochs no diff between kept snapshots (or from one to now) can ask for.
      const keepAfter = epochs.length ? epochs[0]! : this.journal.epoch - 1;
      for (const sub of [Sublevel.headers, Sublevel.regions, Sublevel.entries]) {
        const dropped = new Set<string>();
        for await (const [key] of this.store.entries(sub, { lt: `${hex(keepAfter + 1)}` })) {
          const e = key.slice(0, 16);
          if (parseInt(e, 16) <= keepAfter) { ops.push({ type: 'del', sub, key }); dropped.add(e); }
        }
        report.journalEpochs = Math.max(report.journalEpochs, dropped.size);
      }
      // No change set can start before the oldest snapshot kept: older health notes are moot.
      const moot = (o: { epoch: number }) => o.epoch > keepAfter;
      if (!this.health.overflowed.every(moot) || !this.health.inconsistent.every(moot)) {
        this.health = { overflowed: this.health.overflowed.filter(moot), inconsistent: this.health.inconsistent.filter(moot) };
        ops.push(putJson(Sublevel.meta, MetaKey.journalHealth, this.health));
      }
      await writeChunked(this.store, ops, true);
      const blocks = await this.blocks.collect((h) => liveHashes.has(h));
      report.storeBlocks = blocks.blocksRemoved;
      report.packs = blocks.packsRemoved;
      report.bytesFreed = blocks.bytesFreed;
      report.farm = await this.collectFarm(epochs);
    } finally {
      this.barrier.lower();
    }
    return report;
  }

  /** A deleted file's farm link is needed while a kept snapshot is older than its deletion and saw it. */
  private async collectFarm(epochs: number[]): Promise<number> {
    // Snapshots with open view files are kept too; their records are in the views.
    const byEpoch = new Map<number, SnapshotRecord>(this.catalog.list().map((r) => [r.epoch, r]));
    for (const v of this.viewHandles.values()) byEpoch.set(v.view.snap.epoch, v.view.snap);
    const kept = epochs.map((e) => byEpoch.get(e)!).filter(Boolean);
    const dir = `${this.backing.stateDir()}/${FARM_DIR}`;
    let names: string[];
    try { names = await fsp.readdir(dir); } catch { return 0; }
    let removed = 0;
    for (const name of names) {
      const fid = parseInt(name, 16);
      const rec = await this.files.get(fid);
      if (rec?.gone && kept.some((r) => seesDeleted(r, fid, rec))) continue;
      await fsp.unlink(`${dir}/${name}`);
      removed++;
    }
    return removed;
  }

  /**
   * Bytes each snapshot alone holds: preserved blocks no other snapshot reads, and
   * deleted files only it still shows. Deleting that snapshot frees about this much.
   */
  async snapshotUsage(): Promise<Map<number, number>> {
    const snaps = this.catalog.list();
    const epochs = snaps.map((r) => r.epoch);
    const users = new Map<string, Set<number>>();
    let fidHex = '';
    let lastV = new Map<string, number>();
    for await (const [key, value] of this.store.entries(Sublevel.blocks)) {
      const [f, vHex, blockHex] = key.split('!') as [string, string, string];
      if (f !== fidHex) { fidHex = f; lastV = new Map(); }
      const v = parseInt(vHex, 16);
      const prev = lastV.get(blockHex) ?? 0;
      lastV.set(blockHex, v);
      if (value.length === 0) continue;
      const h = value.toString('hex');
      let set = users.get(h);
      for (const e of epochs) {
        if (e > prev && e <= v) {
          if (!set) users.set(h, set = new Set());
          set.add(e);
        }
      }
    }
    const out = new Map<number, number>(epochs.map((e) => [e, 0]));
    for (const [h, set] of users) {
      if (set.size !== 1) continue;
      const raw = await this.store.get(Sublevel.hashes, h);
      if (!raw) continue;
      const e = [...set][0]!;
      out.set(e, out.get(e)! + (JSON.parse(raw.toString('utf8')) as [number, number, number])[2]);
    }
    const dir = `${this.backing.stateDir()}/${FARM_DIR}`;
    let names: string[] = [];
    try { names = await fsp.readdir(dir); } catch { /* no farm yet */ }
    for (const name of names) {
      const fid = parseInt(name, 16);
      const rec = await this.files.get(fid);
      if (!rec?.gone) continue;
      const seen = snaps.filter((r) => seesDeleted(r, fid, rec));
      if (seen.length !== 1) continue;
      const st = await io.lstat(`${dir}/${name}`).catch(() => null);
      if (st) out.set(seen[0]!.epoch, out.get(seen[0]!.epoch)! + Number(st.blocks) * 512);
    }
    return out;
  }

  /**
   * What changed between snapshot `fromName` and snapshot `toName` (or the live volume),
   * from the journal epochs in between: no tree walk.
   */
  async diff(fromName: string, toName: string): Promise<DiffReport> {
    const from = this.snapshotNamed(fromName);
    const to = toName === 'live' ? null : this.snapshotNamed(toName);
    if (to && to.epoch <= from.epoch) {
      throw new ReplfsError('usage', `${toName} is not newer than ${fromName}`, `swap them: replfs diff <path> ${toName} ${fromName}`);
    }
    const last = to ? to.epoch : this.journal.epoch;
    const bpr = blocksPerRegion(this.config.blockSize);
    const merged = new Map<FileId, { kinds: number; unknown: UnknownReason | null; extents: Extent[] }>();
    for (let e = from.epoch + 1; e <= last; e++) {
      const journal = e === this.journal.epoch ? this.journal : await Journal.load(this.store, e, this.config.blockSize, bpr);
      if (journal.problems.length && !this.health.inconsistent.some((o) => o.epoch === e)) {
        // Found now, in an epoch closed long ago: the files involved are already unknown in
        // this report; noted so that syncs through this epoch compare everything.
        const op = this.noteInconsistent(e, journal.problems);
        if (this.writable) await this.store.write([op], true);
      }
      for (const js of journal.fileStates()) {
        const m = merged.get(js.fid) ?? { kinds: 0, unknown: null, extents: [] };
        m.kinds |= js.kinds;
        m.unknown ??= js.unknown;
        if (js.kinds & (ChangeKind.data | ChangeKind.truncated | ChangeKind.created)) m.extents.push(...js.extents(Number.MAX_SAFE_INTEGER));
        merged.set(js.fid, m);
      }
    }
    const before = this.view(fromName);
    const after = to ? this.view(toName) : null;
    const files: DiffEntry[] = [];
    for (const [fid, m] of merged) {
      const rec = await this.files.get(fid);
      if (!rec) continue;
      const type = this.files.typeOf(rec);
      const inBefore = await before.has(fid);
      const inAfter = after ? await after.has(fid) : !rec.gone;
      if (!inBefore && !inAfter) continue;
      const pathsBefore = inBefore ? await before.pathsOf(fid) : [];
      const pathsAfter = !inAfter ? [] : after ? await after.pathsOf(fid) : rec.names.map((n) => this.files.pathOfName(n)).filter((x): x is string => x !== undefined).sort();
      let size = 0;
      if (inAfter) {
        if (after) size = (await after.attrOf(fid)).size;
        else { const st = pathsAfter[0] !== undefined ? await this.lstatOrNull(pathsAfter[0]) : null; size = st ? Number(st.size) : rec.size; }
      }
      // Moved by its own rename or link change; a file whose directory moved only has new paths.
      const renamed = inBefore && inAfter && (m.kinds & (ChangeKind.renamed | ChangeKind.linked | ChangeKind.unlinked)) !== 0
        && pathsBefore.join('\0') !== pathsAfter.join('\0');
      const data = (m.kinds & (ChangeKind.data | ChangeKind.truncated)) !== 0 || m.unknown !== null;
      const attrs = (m.kinds & (ChangeKind.attributes | ChangeKind.xattrs)) !== 0;
      let status: DiffStatus;
      if (!inBefore) status = 'added';
      else if (!inAfter) status = 'removed';
      else if (data && type === 'file') status = 'modified';
      else if (renamed) status = 'renamed';
      else if (attrs || data) status = 'attributes';
      else continue;
      const extents = type === 'file' && inAfter ? (status === 'added' ? (size > 0 ? [{ offset: 0, length: size }] : []) : clip(coalesce(m.extents), size)) : [];
      files.push({
        id: fid, type, status, before: pathsBefore, after: pathsAfter, renamed,
        kinds: changeKindNames(m.kinds & ~ChangeKind.entries), extents, size, unknown: m.unknown,
      });
    }
    files.sort((x, y) => {
      const a = x.after[0] ?? x.before[0] ?? '';
      const b = y.after[0] ?? y.before[0] ?? '';
      return a < b ? -1 : a > b ? 1 : x.id - y.id;
    });
    const totals = { added: 0, removed: 0, modified: 0, renamed: 0, attributes: 0, changedBytes: 0 };
    for (const f of files) { totals[f.status]++; totals.changedBytes += totalLength(f.extents); }
    return { from: fromName, to: to ? toName : 'live', blockSize: this.config.blockSize, files, totals };
  }

  /**
   * Which files' data may have changed in the epochs (after, upTo], from the journal alone
   * (no file and no block index is read). `files`: per file, the epochs, ascending, whose
   * journal marks it written, truncated or created, or to be compared whole (`unknown`,
   * overflow included), holds block detail for it, or has an unreadable record of it.
   * `untrusted`: the epochs whose journal was found damaged (journal health, or a record
   * unreadable now), in which any file may have changed. Two snapshots r < s read the same
   * bytes of a file when none of its epochs and no untrusted epoch lies in (r.epoch, s.epoch].
   */
  async dataEpochs(after: number, upTo: number): Promise<{ files: Map<FileId, number[]>; untrusted: number[] }> {
    const found = new Map<FileId, Set<number>>();
    const untrusted = new Set<number>(this.health.inconsistent.map((o) => o.epoch).filter((e) => e > after && e <= upTo));
    const mask = ChangeKind.data | ChangeKind.truncated | ChangeKind.created;
    const add = (fid: FileId, epoch: number) => {
      const set = found.get(fid);
      if (set) set.add(epoch);
      else found.set(fid, new Set([epoch]));
    };
    // Epochs before the current one are on disk, complete since the snapshot that closed them.
    const last = Math.min(upTo, this.journal.epoch - 1);
    if (last > after) {
      const range = { gte: `${hex(after + 1)}!`, lt: `${hex(last)}"` };
      for await (const [key, value] of this.store.entries(Sublevel.headers, range)) {
        const [epochHex, fidHex] = key.split('!') as [string, string];
        let h: HeaderValue | null = null;
        try { h = JSON.parse(value.toString('utf8')) as HeaderValue; } catch { h = null; }
        if (!h || typeof h !== 'object' || !Number.isInteger(h.k)) {
          // Damaged: this file may have changed, and so may others whose records are lost.
          add(unhex(fidHex), unhex(epochHex));
          untrusted.add(unhex(epochHex));
        } else if ((h.k & mask) !== 0 || h.u) {
          add(unhex(fidHex), unhex(epochHex));
        }
      }
      // Block detail is data written, whatever the header says (one without a header is damage, and Journal.load distrusts it too).
      for await (const [key] of this.store.entries(Sublevel.regions, range)) {
        const [epochHex, fidHex] = key.split('!') as [string, string];
        add(unhex(fidHex), unhex(epochHex));
      }
    }
    if (upTo >= this.journal.epoch && after < this.journal.epoch) {
      for (const js of this.journal.fileStates()) if ((js.kinds & mask) !== 0 || js.unknown) add(js.fid, this.journal.epoch);
    }
    const files = new Map<FileId, number[]>();
    for (const [fid, set] of found) files.set(fid, [...set].sort((x, y) => x - y));
    return { files, untrusted: [...untrusted].sort((x, y) => x - y) };
  }

  /**
   * Copies `from` (a path inside snapshot `name`) back into the volume at `intoRel`, or
   * into the directory `intoDir` elsewhere (as `<intoDir>/<last component of from>`, or
   * its contents when `from` is the snapshot's root).
   */
  async restore(name: string, from: string, dest: { intoRel: string } | { intoDir: string }): Promise<RestoreReport> {
    this.snapshotNamed(name);
    const view = this.view(name);
    for (const part of from === '' ? [] : from.split('/')) {
      if (part === '' || part === '.' || part === '..') throw new ReplfsError('usage', `${JSON.stringify(from)} is not a plain path inside the snapshot`);
    }
    try {
      await view.resolve(from);
    } catch (err) {
      if (hasCode(err, 'ENOENT', 'ENOTDIR')) throw new ReplfsError('notFound', `${from || '/'} is not in snapshot ${name}`);
      throw err;
    }
    if ('intoDir' in dest) {
      await fsp.mkdir(dest.intoDir, { recursive: true });
      return restoreTree(view, from, new DirSink(dest.intoDir), from === '' ? '' : baseName(from));
    }
    const top = dest.intoRel.split('/')[0];
    if (top === STATE_DIR || top === SNAPSHOT_DIR) throw new ReplfsError('refused', `cannot restore into ${dest.intoRel}: it is reserved`);
    if (!this.writable) throw new ReplfsError('refused', 'the volume is open read-only');
    return restoreTree(view, from, new VolumeSink(this, dest.intoRel), '');
  }

  /** lstat of a path in the volume, or null if there is nothing there. */
  async lstatRel(rel: string): Promise<BigIntStats | null> {
    try { return await io.lstat(this.abs(rel)); } catch (err) { if (hasCode(err, 'ENOENT')) return null; throw err; }
  }

  /** Space held by preserved data: the block store's pack files. */
  async preservedBytes(): Promise<number> {
    return this.blocks.diskUsage();
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

/** Whether snapshot `snap` shows the deleted file `fid`: made before it, and older than its deletion. */
function seesDeleted(snap: SnapshotRecord, fid: FileId, rec: FileRecord): boolean {
  return fid < snap.nextFid && snap.epoch < (rec.died ?? Infinity);
}

/** Restores into the volume through its own operations: journaled and copy-on-write like any change. */
class VolumeSink implements Sink {
  private readonly caller: Caller;

  constructor(private readonly v: Volume, private readonly base: string) {
    this.caller = { uid: v.myUid, gid: v.myGid, pid: process.pid };
  }

  private rel(rel: string): string {
    return rel === '' ? this.base : this.base === '' ? rel : `${this.base}/${rel}`;
  }

  private p(rel: string): string {
    return '/' + this.rel(rel);
  }

  lstat(rel: string) { return this.v.lstatRel(this.rel(rel)); }
  async mkdir(rel: string, mode: number) { await this.v.mkdir(this.p(rel), mode, this.caller); }
  async remove(rel: string, isDir: boolean) { await (isDir ? this.v.rmdir(this.p(rel)) : this.v.unlink(this.p(rel))); }
  create(rel: string, mode: number) { return this.v.create(this.p(rel), mode, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC, this.caller); }
  async write(fd: number, buf: Buffer, len: number, pos: number) {
    for (let done = 0; done < len;) done += await this.v.write(fd, buf.subarray(done), len - done, pos + done);
  }
  async finish(fd: number, rel: string, size: number) {
    try { await this.v.ftruncate(this.p(rel), fd, size); } finally { await this.v.release(fd); }
  }
  async symlink(target: string, rel: string) { await this.v.symlink(target, this.p(rel), this.caller); }
  async link(existing: string, rel: string) { await this.v.link(this.p(existing), this.p(rel)); }
  async mknod(rel: string, mode: number, rdev: number) { await this.v.mknod(this.p(rel), mode, rdev, this.caller); }
  async setAttrs(rel: string, a: PreservedAttr, isLink: boolean) {
    const p = this.p(rel);
    await this.v.chown(p, a.uid, a.gid);
    if (!isLink) await this.v.chmod(p, a.mode & 0o7777);
    for (const [name, value] of a.x ?? []) await this.v.setxattr(p, name, Buffer.from(value, 'base64'), 0);
    await this.v.utimens(p, specOf(a.atime), specOf(a.mtime));
  }
}

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
  if (config.formatVersion !== FORMAT_VERSION && !UPGRADABLE_FORMATS.includes(config.formatVersion)) {
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

/** Format 1 (no snapshots) becomes format 2 by stating it: nothing else differs. */
async function upgradeFormat(store: Store, backing: Backing): Promise<void> {
  const file = `${backing.stateDir()}/${CONFIG_FILE}`;
  const config = JSON.parse(await fsp.readFile(file, 'utf8')) as VolumeConfig;
  config.formatVersion = FORMAT_VERSION;
  await fsp.writeFile(`${file}.tmp`, JSON.stringify(config, null, 2) + '\n');
  await fsp.rename(`${file}.tmp`, file);
  await store.write([putJson(Sublevel.meta, MetaKey.format, FORMAT_VERSION)], true);
}

/**
 * A replica is changed only by syncs: changes found at open, unless a sync was left half way
 * (its own changes look the same), mean it diverged. That is remembered until a sync with
 * --force makes it equal to its source again, since the scan will not find them twice.
 */
async function noteDivergence(store: Store, found: Omit<ReconcileResult, 'ops'>): Promise<Op[]> {
  const meta = await store.getJson<ReplicaMeta>(Sublevel.meta, MetaKey.replica);
  if (!meta || meta.pending || found.created + found.changed + found.moved + found.deleted === 0) return [];
  const was = meta.divergent;
  const divergent: Divergence = {
    at: was?.at ?? new Date().toISOString(),
    created: (was?.created ?? 0) + found.created,
    changed: (was?.changed ?? 0) + found.changed,
    moved: (was?.moved ?? 0) + found.moved,
    deleted: (was?.deleted ?? 0) + found.deleted,
    examples: [...new Set([...(was?.examples ?? []), ...found.examples])].slice(0, 10),
  };
  return [putJson(Sublevel.meta, MetaKey.replica, { ...meta, divergent } satisfies ReplicaMeta)];
}

/** Entries of a plan log per LevelDB value. */
const PLAN_CHUNK = 512;

function chunkOps(sub: string, items: unknown[]): Op[] {
  const ops: Op[] = [];
  for (let i = 0; i < items.length; i += PLAN_CHUNK) ops.push(putJson(sub, hex(i / PLAN_CHUNK), items.slice(i, i + PLAN_CHUNK)));
  return ops;
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
