// Reading a volume as of a snapshot. Each object is read by the copy-on-write rule: the
// preserved version with the smallest v >= s, or else the live value.
//
// Every read looks at the live value first and only then for a preserved version. A
// change is applied only after its preservation is written, so if the live value read
// was already changed, the preserved version is found; if not, the live value is right.
// A view's answers therefore never change, and are cached.
import fs, { constants as fsc } from 'node:fs';
import { promises as fsp } from 'node:fs';
import type { BigIntStats } from 'node:fs';
import { ROOT_FID, type Attr, type DirEntry, type FileId, type TimeSpec } from '../core/types.js';
import { FsError, hasCode } from '../errors/index.js';
import type { Backing } from './backing.js';
import type { BlockStore } from './blocks.js';
import type { Cow } from './cow.js';
import type { FileTable } from './files.js';
import {
  STATE_DIR, Sublevel, TypeTag, attrKey, hex, unhex,
  type NameRef, type PreservedAttr, type PreservedEntry, type SnapshotRecord,
} from './format.js';
import { io, readFull } from './io.js';
import { fileTypeOf } from './scan.js';
import type { Store } from './store.js';
import * as sys from './sys.js';

export interface ViewContext {
  store: Store;
  files: FileTable;
  blocks: BlockStore;
  cow: Cow;
  backing: Backing;
  blockSize: number;
  farmPath(fid: FileId): string;
  /**
   * True when nothing of `fid` (attributes, names, blocks, entries of a directory) has
   * changed since the snapshot with `epoch`: then nothing of it is preserved for that
   * snapshot and its live value is the snapshot's. Asked after reading the live value, so
   * a change made meanwhile is seen (a change is journaled before it is made).
   */
  quiet(epoch: number, fid: FileId): boolean;
}

const NS = 1_000_000_000n;
const DT_OF_TAG: Record<string, number> = { f: 8, d: 4, l: 10, p: 1, s: 12, c: 2, b: 6 };
const CACHE_LIMIT = 20000;
/** Blocks past a read whose places in the block store are looked up with it. */
const PREFETCH_BLOCKS = 64;

/** A time in nanoseconds (decimal string, as stored) as seconds and nanoseconds. */
export function specOf(ns: string): TimeSpec {
  const n = BigInt(ns);
  let sec = n / NS;
  let nsec = n % NS;
  if (nsec < 0n) { nsec += NS; sec -= 1n; }
  return { sec: Number(sec), nsec: Number(nsec) };
}

/** Inode numbers in a view: unique per file within one snapshot, distinct across snapshots. */
export function viewIno(fid: FileId, epoch: number): number {
  return (Math.imul(fid, 0x9e3779b1) + Math.imul(epoch, 0x85ebca6b)) >>> 0;
}

/**
 * The attributes to preserve for a file: stat fields, xattrs and a symlink's target.
 * `xattrPath` names the file for the xattr calls; `follow` when it is /proc/self/fd/N.
 */
export async function captureAttr(st: BigIntStats, xattrPath: string, follow: boolean): Promise<PreservedAttr> {
  const t = TypeTag[fileTypeOf(Number(st.mode))];
  const value: PreservedAttr = {
    t, mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), size: Number(st.size),
    blocks: Number(st.blocks), nlink: Number(st.nlink), rdev: Number(st.rdev),
    atime: st.atimeNs.toString(), mtime: st.mtimeNs.toString(), ctime: st.ctimeNs.toString(),
  };
  if (t === TypeTag.symlink) value.l = await fsp.readlink(xattrPath);
  const names = await (follow ? sys.listxattr(xattrPath) : sys.llistxattr(xattrPath)).catch((err) => {
    if (hasCode(err, 'ENOTSUP') || hasCode(err, 'EOPNOTSUPP')) return [] as string[];
    throw err;
  });
  if (names.length > 0) {
    const x: Array<[string, string]> = [];
    for (const name of names.sort()) {
      try {
        const v = await (follow ? sys.getxattr(xattrPath, name) : sys.lgetxattr(xattrPath, name));
        x.push([name, v.toString('base64')]);
      } catch (err) {
        if (!hasCode(err, 'ENODATA')) throw err;
      }
    }
    if (x.length) value.x = x;
  }
  return value;
}

interface Found {
  fid: FileId;
  /** Type tag. */
  t: string;
}

interface Live {
  abs: string;
  st: BigIntStats;
}

export interface ViewHandle {
  fid: FileId;
  size: number;
  liveFd: number | null;
  gen: number;
  /** Preserved blocks of the file for this snapshot; null until a read needs them. */
  map: Map<number, Buffer> | null;
}

export class SnapshotView {
  private readonly paths = new Map<string, Found | null>();
  private readonly attrs = new Map<FileId, PreservedAttr>();

  constructor(private readonly ctx: ViewContext, readonly snap: SnapshotRecord) {}

  private quiet(fid: FileId): boolean {
    return this.ctx.quiet(this.snap.epoch, fid);
  }

  private visible(fid: FileId): boolean {
    return fid !== 0 && fid < this.snap.nextFid;
  }

  /** Where the file's inode is reachable now: a live name, or its farm link once deleted. */
  private async live(fid: FileId): Promise<Live | null> {
    const { files, backing } = this.ctx;
    if (fid === ROOT_FID) return { abs: backing.abs(''), st: await io.lstat(backing.abs('')) };
    const rec = await files.get(fid);
    if (!rec) return null;
    const candidates: string[] = [];
    if (!rec.gone) {
      for (const name of rec.names) {
        const rel = files.pathOfName(name);
        if (rel !== undefined) candidates.push(backing.abs(rel));
      }
    }
    candidates.push(this.ctx.farmPath(fid));
    for (const abs of candidates) {
      try {
        const st = await io.lstat(abs);
        if (Number(st.ino) === rec.ino) return { abs, st };
      } catch (err) {
        if (!hasCode(err, 'ENOENT') && !hasCode(err, 'ENOTDIR')) throw err;
      }
    }
    return null;
  }

  /** The entry `name` of directory `dir` as of the snapshot. */
  private async entry(dir: FileId, name: string): Promise<Found | null> {
    const { files, store, backing } = this.ctx;
    let live: Found | null = null;
    const dirRel = files.liveDirPath(dir);
    if (dirRel !== undefined && !(dir === ROOT_FID && name === STATE_DIR)) {
      try {
        const st = await io.lstat(backing.abs(dirRel === '' ? name : `${dirRel}/${name}`));
        const fid = files.fidOfIno(Number(st.ino));
        if (fid !== undefined) live = { fid, t: TypeTag[fileTypeOf(Number(st.mode))] };
      } catch (err) {
        if (!hasCode(err, 'ENOENT') && !hasCode(err, 'ENOTDIR')) throw err;
      }
    }
    if (this.quiet(dir) && dirRel !== undefined) return live && this.visible(live.fid) ? live : null;
    const prefix = `${hex(dir)}!${name}\0`;
    let found: Found | null = live;
    for await (const [, value] of store.entries(Sublevel.dentries, { gte: prefix + hex(this.snap.epoch), lt: `${hex(dir)}!${name}\x01` })) {
      const pe = JSON.parse(value.toString('utf8')) as PreservedEntry;
      found = pe.f === 0 ? null : { fid: pe.f, t: pe.t ?? TypeTag.file };
      break;
    }
    return found && this.visible(found.fid) ? found : null;
  }

  /** Resolves a path inside the snapshot ('' is its root). */
  async resolve(rel: string): Promise<Found> {
    if (rel === '') return { fid: ROOT_FID, t: TypeTag.dir };
    const cached = this.paths.get(rel);
    if (cached !== undefined) {
      if (cached === null) throw new FsError('ENOENT');
      return cached;
    }
    const cut = rel.lastIndexOf('/');
    const parent = await this.resolve(cut < 0 ? '' : rel.slice(0, cut));
    if (parent.t !== TypeTag.dir) throw new FsError('ENOTDIR');
    const found = await this.entry(parent.fid, rel.slice(cut + 1));
    this.remember(this.paths, rel, found);
    if (!found) throw new FsError('ENOENT');
    return found;
  }

  /** Attributes as preserved (smallest v >= s) or live. */
  async attrOf(fid: FileId): Promise<PreservedAttr> {
    const cached = this.attrs.get(fid);
    if (cached) return cached;
    const live = await this.live(fid);
    const liveAttr = live ? await captureAttr(live.st, live.abs, false) : null;
    const value = liveAttr && this.quiet(fid) ? liveAttr : (await this.preservedAttr(fid)) ?? liveAttr;
    if (!value) throw new FsError('EIO', `file ${fid} of snapshot ${this.snap.name} has neither a preserved nor a live version`);
    this.remember(this.attrs, fid, value);
    return value;
  }

  /** The preserved attributes with the smallest version >= s, if any. */
  private async preservedAttr(fid: FileId): Promise<PreservedAttr | null> {
    for await (const [, raw] of this.ctx.store.entries(Sublevel.attrs, { gte: attrKey(fid, this.snap.epoch), lt: `${hex(fid)}"` })) {
      return JSON.parse(raw.toString('utf8')) as PreservedAttr;
    }
    return null;
  }

  /** Whether the file is in the snapshot: made before it, and not yet deleted then. */
  async has(fid: FileId): Promise<boolean> {
    if (!this.visible(fid)) return false;
    if (fid === ROOT_FID) return true;
    const rec = await this.ctx.files.get(fid);
    if (!rec) return false;
    return !rec.gone || (rec.died ?? 0) > this.snap.epoch;
  }

  /** The file's names as of the snapshot ([parent id, name] pairs). */
  async namesOf(fid: FileId): Promise<NameRef[]> {
    if (fid === ROOT_FID) return [];
    const live = (await this.ctx.files.get(fid))?.names;
    if (live && this.quiet(fid)) return live;
    const pres = await this.preservedAttr(fid);
    return pres?.n ?? live ?? [];
  }

  /** The file's paths as of the snapshot, from preserved names, without walking the tree. */
  async pathsOf(fid: FileId, depth = 0): Promise<string[]> {
    if (fid === ROOT_FID) return [''];
    if (depth > 4096) return [];
    const names = await this.namesOf(fid);
    const out: string[] = [];
    for (const [parent, name] of names) {
      const up = await this.pathsOf(parent, depth + 1);
      if (up.length) out.push(up[0] === '' ? name : `${up[0]}/${name}`);
    }
    return out.sort();
  }

  async getattr(rel: string): Promise<Attr> {
    const { fid } = await this.resolve(rel);
    const a = await this.attrOf(fid);
    return {
      mode: a.mode, uid: a.uid, gid: a.gid, size: a.size, nlink: a.nlink,
      ino: viewIno(fid, this.snap.epoch), dev: 0, rdev: a.rdev, blksize: 4096, blocks: a.blocks,
      atime: specOf(a.atime), mtime: specOf(a.mtime), ctime: specOf(a.ctime),
    };
  }

  async readdir(rel: string): Promise<DirEntry[]> {
    const dir = await this.resolve(rel);
    if (dir.t !== TypeTag.dir) throw new FsError('ENOTDIR');
    return (await this.childrenOf(dir.fid)).map((c) => ({ name: c.name, ino: viewIno(c.fid, this.snap.epoch), type: DT_OF_TAG[c.t] ?? 0 }));
  }

  /** The entries of directory `dirFid` as of the snapshot, with their file ids and type tags. */
  async childrenOf(dirFid: FileId): Promise<Array<{ name: string; fid: FileId; t: string }>> {
    const dir = { fid: dirFid };
    const { files, store, backing } = this.ctx;
    const merged = new Map<string, Found | null>();
    const dirRel = files.liveDirPath(dir.fid);
    if (dirRel !== undefined) {
      try {
        const listing = await sys.readdirIno(backing.abs(dirRel));
        for (let i = 0; i < listing.names.length; i++) {
          const name = listing.names[i]!;
          if (dir.fid === ROOT_FID && name === STATE_DIR) continue;
          const fid = files.fidOfIno(listing.inos[i]!);
          if (fid !== undefined) merged.set(name, { fid, t: tagOfDt(listing.types[i]!) });
        }
      } catch (err) {
        if (!hasCode(err, 'ENOENT') && !hasCode(err, 'ENOTDIR')) throw err;
      }
    }
    if (dirRel !== undefined && this.quiet(dir.fid)) {
      return [...merged].filter(([, f]) => f && this.visible(f.fid)).map(([name, f]) => ({ name, fid: f!.fid, t: f!.t }));
    }
    const prefix = `${hex(dir.fid)}!`;
    const decided = new Set<string>();
    const epochHex = hex(this.snap.epoch);
    for await (const [key, value] of store.entries(Sublevel.dentries, { gte: prefix, lt: `${hex(dir.fid)}"` })) {
      const rest = key.slice(prefix.length);
      const sep = rest.lastIndexOf('\0');
      const name = rest.slice(0, sep);
      if (decided.has(name) || rest.slice(sep + 1) < epochHex) continue;
      decided.add(name);
      const pe = JSON.parse(value.toString('utf8')) as PreservedEntry;
      merged.set(name, pe.f === 0 ? null : { fid: pe.f, t: pe.t ?? TypeTag.file });
    }
    const out: Array<{ name: string; fid: FileId; t: string }> = [];
    for (const [name, f] of merged) {
      if (!f || !this.visible(f.fid)) continue;
      out.push({ name, fid: f.fid, t: f.t });
    }
    return out;
  }

  async readlink(rel: string): Promise<string> {
    const { fid, t } = await this.resolve(rel);
    if (t !== TypeTag.symlink) throw new FsError('EINVAL');
    const a = await this.attrOf(fid);
    if (a.l === undefined) throw new FsError('EIO', `symlink ${fid} has no preserved target`);
    return a.l;
  }

  async listxattr(rel: string): Promise<string[]> {
    const { fid } = await this.resolve(rel);
    return ((await this.attrOf(fid)).x ?? []).map(([n]) => n);
  }

  async getxattr(rel: string, name: string): Promise<Buffer> {
    const { fid } = await this.resolve(rel);
    const hit = ((await this.attrOf(fid)).x ?? []).find(([n]) => n === name);
    if (!hit) throw new FsError('ENODATA');
    return Buffer.from(hit[1], 'base64');
  }

  async open(rel: string): Promise<ViewHandle> {
    const { fid, t } = await this.resolve(rel);
    if (t === TypeTag.dir) throw new FsError('EISDIR');
    return this.openFid(fid, t);
  }

  /** Opens a file of the snapshot by id (one the snapshot has: see has()). */
  async openFid(fid: FileId, t?: string): Promise<ViewHandle> {
    const a = await this.attrOf(fid);
    t ??= a.t;
    if (t === TypeTag.dir) throw new FsError('EISDIR');
    const live = await this.live(fid);
    let liveFd: number | null = null;
    if (live && t === TypeTag.file) liveFd = await io.open(live.abs, fsc.O_RDONLY | fsc.O_NOFOLLOW);
    // The block map is loaded by the first read that needs it (one that finds the file changed since).
    return { fid, size: a.size, liveFd, gen: this.ctx.cow.gen(fid), map: null };
  }

  /** For each preserved block of the file: the hash of its version with the smallest v >= s. */
  private async blockMap(fid: FileId): Promise<Map<number, Buffer>> {
    const map = new Map<number, Buffer>();
    const prefix = `${hex(fid)}!`;
    for await (const [key, value] of this.ctx.store.entries(Sublevel.blocks, { gte: `${prefix}${hex(this.snap.epoch)}!`, lt: `${hex(fid)}"` })) {
      const block = unhex(key.slice(prefix.length + 17));
      if (!map.has(block)) map.set(block, value);
    }
    return map;
  }

  async read(h: ViewHandle, buf: Buffer, len: number, pos: number): Promise<number> {
    if (pos >= h.size) return 0;
    len = Math.min(len, h.size - pos);
    const bs = this.ctx.blockSize;
    // Preserved blocks never change: when they cover the whole range, the live file is not read.
    let allPreserved = h.map !== null && h.gen === this.ctx.cow.gen(h.fid);
    for (let b = Math.floor(pos / bs); allPreserved && b * bs < pos + len; b++) if (!h.map!.has(b)) allPreserved = false;
    const liveFd = h.liveFd;
    const got = liveFd !== null && !allPreserved ? await readFull((b, n, p) => io.read(liveFd, b, n, p), buf, len, pos) : 0;
    buf.fill(0, got, len);
    // Asked after the live read: if the file is still unchanged since the snapshot, that read was the snapshot's data.
    if (liveFd !== null && !allPreserved && this.quiet(h.fid)) return len;
    const gen = this.ctx.cow.gen(h.fid);
    if (h.map === null || gen !== h.gen) {
      h.map = await this.blockMap(h.fid);
      h.gen = gen;
    }
    if (h.map.size === 0) return len;
    const wanted: Array<{ hash: Buffer; from: number; to: number; base: number }> = [];
    const lastBlock = Math.ceil((pos + len) / bs);
    for (let b = Math.floor(pos / bs); b < lastBlock; b++) {
      const hash = h.map.get(b);
      if (!hash) continue;
      const from = Math.max(pos, b * bs);
      const to = Math.min(pos + len, b * bs + bs);
      if (hash.length === 0) buf.fill(0, from - pos, to - pos);
      else wanted.push({ hash, from, to, base: b * bs });
    }
    if (wanted.length === 0) return len;
    // A reader going on sequentially asks for the next blocks: look their places up now too.
    const prefetch: Buffer[] = [];
    for (let b = lastBlock; b < lastBlock + PREFETCH_BLOCKS; b++) {
      const hash = h.map.get(b);
      if (hash && hash.length > 0) prefetch.push(hash);
    }
    // Blocks the read covers whole are read straight into the caller's buffer.
    const dest = wanted.map((w) => (w.from === w.base && w.to === w.base + bs ? buf.subarray(w.from - pos, w.to - pos) : null));
    const blocks = await this.ctx.blocks.getMany(wanted.map((w) => w.hash), prefetch, dest);
    for (let k = 0; k < wanted.length; k++) {
      const { from, to, base } = wanted[k]!;
      const data = blocks[k]!;
      if (data === dest[k]) continue;
      const start = from - base;
      const stop = to - base;
      const have = Math.min(stop, data.length);
      if (have > start) data.copy(buf, from - pos, start, have);
      if (stop > Math.max(have, start)) buf.fill(0, from - pos + Math.max(0, have - start), to - pos);
    }
    return len;
  }

  release(h: ViewHandle): void {
    if (h.liveFd !== null) fs.close(h.liveFd, () => undefined);
    h.liveFd = null;
  }

  private remember<K, V>(map: Map<K, V>, key: K, value: V): void {
    map.set(key, value);
    if (map.size > CACHE_LIMIT) map.delete(map.keys().next().value!);
  }
}

function tagOfDt(dt: number): string {
  for (const [tag, d] of Object.entries(DT_OF_TAG)) if (d === dt) return tag;
  return TypeTag.file;
}
