// File identities. Every file, directory and symlink gets a volume-assigned id that
// never changes and is never reused; LevelDB keeps a record per id (type, inode, names,
// and the size and times last seen, for detecting changes made behind replfs' back).
// In memory: inode -> id for every live file, and a record per directory so paths can
// be resolved. Other records are read on demand through a small write-through cache.
import { ROOT_FID, type FileId, type FileType } from '../core/types.js';
import { Sublevel, MetaKey, fileKey, unhex, typeOfTag, TypeTag, type FileRecord, type NameRef } from './format.js';
import { putJson, type Op, type Store } from './store.js';

const CACHE_LIMIT = 4096;

export class FileTable {
  private readonly inoToFid = new Map<number, FileId>();
  private readonly dirs = new Map<FileId, FileRecord>();
  private readonly cache = new Map<FileId, FileRecord>();
  /** Records put but not yet written: kept out of the LRU until their batch lands. */
  private readonly pinned = new Map<FileId, FileRecord>();
  private readonly unwritten = new Map<FileId, number>();
  private readonly locks = new Map<FileId, Promise<void>>();

  private constructor(private readonly store: Store | null, private nextFid: number) {}

  /**
   * Loads the table. With `visit`, every record is also handed to the caller once (the
   * mount-time scan needs them all and should not keep them afterwards).
   */
  static async load(store: Store, visit?: (fid: FileId, rec: FileRecord) => void): Promise<FileTable> {
    const next = await store.getJson<number>(Sublevel.meta, MetaKey.nextFid);
    const table = new FileTable(store, next ?? ROOT_FID + 1);
    for await (const batch of store.textBatches(Sublevel.files)) {
      for (const [key, value] of batch) {
        const fid = unhex(key);
        const rec = JSON.parse(value) as FileRecord;
        if (!rec.gone) table.inoToFid.set(rec.ino, fid);
        if (rec.t === TypeTag.dir) table.dirs.set(fid, rec);
        if (fid >= table.nextFid) table.nextFid = fid + 1;
        visit?.(fid, rec);
      }
    }
    return table;
  }

  /** A table with no database behind it, for building a baseline before one exists. */
  static detached(): FileTable {
    return new FileTable(null, ROOT_FID + 1);
  }

  /** Live files, directories and symlinks (hard links count once). */
  get count(): number {
    return this.inoToFid.size;
  }

  fidOfIno(ino: number): FileId | undefined {
    return this.inoToFid.get(ino);
  }

  /** A fresh id; its record must be written with `put` in the same batch as `nextFidOp`. */
  allocate(): FileId {
    return this.nextFid++;
  }

  /** The id the next new file will get; every id below it has been handed out. */
  get next(): FileId {
    return this.nextFid;
  }

  nextFidOp(): Op {
    return putJson(Sublevel.meta, MetaKey.nextFid, this.nextFid);
  }

  async get(fid: FileId): Promise<FileRecord | undefined> {
    const dir = this.dirs.get(fid);
    if (dir) return dir;
    const pinned = this.pinned.get(fid);
    if (pinned) return pinned;
    const cached = this.cache.get(fid);
    if (cached) {
      this.cache.delete(fid);
      this.cache.set(fid, cached);
      return cached;
    }
    if (!this.store) return undefined;
    const rec = await this.store.getJson<FileRecord>(Sublevel.files, fileKey(fid));
    // A concurrent put may have landed while we read.
    const raced = this.pinned.get(fid) ?? this.cache.get(fid);
    if (raced) return raced;
    if (rec) this.remember(fid, rec);
    return rec;
  }

  /**
   * Replaces a record and returns the operation that persists it. Memory is updated at
   * once, so later reads see the new value even before the batch is written; pass the
   * batch's promise to `track` so the cache keeps the value until then.
   */
  put(fid: FileId, rec: FileRecord): Op {
    const old = this.dirs.get(fid) ?? this.pinned.get(fid) ?? this.cache.get(fid);
    if (old && old.ino !== rec.ino && this.inoToFid.get(old.ino) === fid) this.inoToFid.delete(old.ino);
    if (rec.gone) {
      if (this.inoToFid.get(rec.ino) === fid) this.inoToFid.delete(rec.ino);
    } else {
      this.inoToFid.set(rec.ino, fid);
    }
    if (rec.t === TypeTag.dir) this.dirs.set(fid, rec);
    else {
      this.cache.delete(fid);
      this.pinned.set(fid, rec);
    }
    this.unwritten.set(fid, (this.unwritten.get(fid) ?? 0) + 1);
    return putJson(Sublevel.files, fileKey(fid), rec);
  }

  /** Releases the cache pin taken by `put` once the write has settled. */
  track(fids: Iterable<FileId>, written: Promise<unknown>): void {
    const list = [...fids];
    const done = () => {
      for (const fid of list) {
        const n = (this.unwritten.get(fid) ?? 1) - 1;
        if (n > 0) { this.unwritten.set(fid, n); continue; }
        this.unwritten.delete(fid);
        const rec = this.pinned.get(fid);
        if (rec) {
          this.pinned.delete(fid);
          this.remember(fid, rec);
        }
      }
    };
    written.then(done, done);
  }

  /** Serialises read-modify-write of one record. */
  async update<T>(fid: FileId, fn: (rec: FileRecord | undefined) => T): Promise<T> {
    const prev = this.locks.get(fid) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => { release = r; });
    const chained = prev.then(() => mine);
    this.locks.set(fid, chained);
    await prev;
    try {
      return fn(await this.get(fid));
    } finally {
      release();
      if (this.locks.get(fid) === chained) this.locks.delete(fid);
    }
  }

  typeOf(rec: FileRecord): FileType {
    return typeOfTag(rec.t);
  }

  /** Current path of a directory, or undefined if it or an ancestor is unknown. */
  dirPath(fid: FileId): string | undefined {
    const parts: string[] = [];
    let cur = fid;
    for (let depth = 0; cur !== ROOT_FID; depth++) {
      const rec = this.dirs.get(cur);
      const name = rec?.names[0];
      if (!name || depth > 4096) return undefined;
      parts.push(name[1]);
      cur = name[0];
    }
    return parts.reverse().join('/');
  }

  /** Current path of a directory that still exists (undefined once it or an ancestor is removed). */
  liveDirPath(fid: FileId): string | undefined {
    for (let cur = fid, depth = 0; cur !== ROOT_FID; depth++) {
      const rec = this.dirs.get(cur);
      if (!rec || rec.gone || !rec.names[0] || depth > 4096) return undefined;
      cur = rec.names[0][0];
    }
    return this.dirPath(fid);
  }

  pathOfName([parent, name]: NameRef): string | undefined {
    const dir = this.dirPath(parent);
    return dir === undefined ? undefined : dir === '' ? name : `${dir}/${name}`;
  }

  private remember(fid: FileId, rec: FileRecord): void {
    this.cache.delete(fid);
    this.cache.set(fid, rec);
    this.evict();
  }

  private evict(): void {
    while (this.cache.size > CACHE_LIMIT) this.cache.delete(this.cache.keys().next().value!);
  }
}
