// The block store: contents of preserved blocks, addressed by their BLAKE3 hash, so a
// block preserved twice (two files, two epochs) is stored once. Blocks are appended to
// pack files in .replfs/blocks/; LevelDB maps hash -> (pack, offset, length). A block of
// zeros is never stored: its hash is recorded as empty.
//
// Ordering: a block's bytes are written to its pack before its index entry is queued, and
// the index entry is queued before the caller's own entries that refer to the hash, so
// the index on disk never points at a block that was not written (for process crashes;
// power loss is covered by `sync` and, in strict mode, by syncing each pack write).
//
// Garbage collection never moves a block: space no index entry needs is freed by punching
// holes in the pack files (fallocate), and a pack with nothing left is deleted.
import fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import { blake3 } from '@napi-rs/blake-hash';
import { FsError, hasCode } from '../errors/index.js';
import { BLOCKS_DIR, Sublevel, type BlockLocation } from './format.js';
import { io, readFull } from './io.js';
import { punchHole } from './sys.js';
import type { Op, Store } from './store.js';

/** A new pack is started once the current one reaches this size. */
const PACK_LIMIT = 256 * 1024 * 1024;
/** Blocks start on filesystem-block boundaries, so that a dead block can be punched out whole. */
const ALIGN = 4096;
const KNOWN_LIMIT = 65536;
const ZEROS = Buffer.alloc(1024 * 1024);

export const ZERO_HASH = Buffer.alloc(0);

export function isZero(data: Buffer): boolean {
  for (let at = 0; at < data.length; at += ZEROS.length) {
    const piece = data.subarray(at, Math.min(data.length, at + ZEROS.length));
    if (!piece.equals(ZEROS.subarray(0, piece.length))) return false;
  }
  return true;
}

export function hashBlock(data: Buffer): Buffer {
  return blake3(data);
}

/**
 * The blocks as one buffer without copying, when they lie back to back in one piece of
 * memory and all but the last fill whole alignment units (so the pack layout has no gaps).
 */
function contiguous(blocks: Buffer[]): Buffer | null {
  const first = blocks[0]!;
  let length = first.length;
  for (let k = 1; k < blocks.length; k++) {
    const prev = blocks[k - 1]!;
    const b = blocks[k]!;
    if (prev.length % ALIGN !== 0 || b.buffer !== first.buffer || b.byteOffset !== prev.byteOffset + prev.length) return null;
    length += b.length;
  }
  return blocks.length === 1 ? first : Buffer.from(first.buffer, first.byteOffset, length);
}

const packName = (n: number) => `pack-${n.toString(16).padStart(8, '0')}.dat`;
const alignUp = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

export interface GcResult {
  blocksRemoved: number;
  packsRemoved: number;
  /** Disk space given back (st_blocks before and after). */
  bytesFreed: number;
}

export class BlockStore {
  private readonly fds = new Map<number, number>();
  private current = -1;
  private currentFd = -1;
  private offset = 0;
  private nextPack = 0;
  private readonly dirty = new Set<number>();
  /** Hashes known to be in the index (queued or written), most recent last. */
  private readonly known = new Map<string, true>();
  /** Index entries queued by a caller but not yet written: later references wait for them. */
  private readonly queued = new Map<string, Promise<void>>();
  /** Locations of recently stored or read blocks. */
  private readonly locs = new Map<string, BlockLocation>();
  /** Writes under way; garbage collection waits for them after sealing the pack. */
  private active = 0;
  private idle: Array<() => void> = [];

  private constructor(private readonly dir: string, private readonly store: Store, private readonly strict: boolean) {}

  static async open(stateDir: string, store: Store, strict: boolean): Promise<BlockStore> {
    const dir = `${stateDir}/${BLOCKS_DIR}`;
    const bs = new BlockStore(dir, store, strict);
    let names: string[] = [];
    try { names = await fsp.readdir(dir); } catch (err) { if (!hasCode(err, 'ENOENT')) throw err; }
    for (const n of names) {
      const m = /^pack-([0-9a-f]{8})\.dat$/.exec(n);
      if (m) bs.nextPack = Math.max(bs.nextPack, parseInt(m[1]!, 16) + 1);
    }
    return bs;
  }

  /**
   * Stores blocks (each at most 1 MiB). Returns their hashes (empty for zeros) and the
   * index operations for blocks not stored before, which the caller must write in the same
   * batch as its own references to them: one lookup, one pack write and no write of its
   * own per call, however many blocks. A block whose index entry another caller has queued
   * but not yet written is waited for, so no reference lands before its block.
   */
  async putMany(blocks: Buffer[]): Promise<{ hashes: Buffer[]; ops: Op[]; written: (done: Promise<void>) => void }> {
    const hashes = blocks.map((b) => (isZero(b) ? ZERO_HASH : hashBlock(b)));
    const hexes = hashes.map((h) => h.toString('hex'));
    const fresh = new Map<string, number>();
    const waits: Promise<void>[] = [];
    for (let i = 0; i < hashes.length; i++) {
      const hex = hexes[i]!;
      if (hashes[i]!.length === 0 || this.known.has(hex) || fresh.has(hex)) continue;
      const queued = this.queued.get(hex);
      if (queued) waits.push(queued);
      else fresh.set(hex, i);
    }
    const ops: Op[] = [];
    const mine: string[] = [];
    this.active++;
    try {
      const candidates = [...fresh.keys()];
      const found = await this.store.getMany(Sublevel.hashes, candidates);
      const toWrite: Array<[string, Buffer]> = [];
      for (let k = 0; k < candidates.length; k++) {
        const hex = candidates[k]!;
        if (found[k] !== undefined) { this.remember(hex); continue; }
        // Raced with another caller while looking: wait for its batch instead.
        const queued = this.queued.get(hex);
        if (queued) { waits.push(queued); continue; }
        toWrite.push([hex, blocks[fresh.get(hex)!]!]);
      }
      if (toWrite.length) {
        const locs = await this.appendAll(toWrite.map(([, b]) => b));
        let release!: () => void;
        const landed = new Promise<void>((r) => { release = r; });
        for (let k = 0; k < toWrite.length; k++) {
          const [hex] = toWrite[k]!;
          ops.push({ type: 'put', sub: Sublevel.hashes, key: hex, value: Buffer.from(JSON.stringify(locs[k])) });
          this.queued.set(hex, landed);
          this.locs.set(hex, locs[k]!);
          mine.push(hex);
        }
        if (waits.length) await Promise.all(waits);
        return {
          hashes, ops,
          written: (done) => {
            const settle = (ok: boolean) => {
              for (const hex of mine) { if (this.queued.get(hex) === landed) this.queued.delete(hex); if (ok) this.remember(hex); else this.locs.delete(hex); }
              release();
            };
            done.then(() => settle(true), () => settle(false));
          },
        };
      }
      if (waits.length) await Promise.all(waits);
      return { hashes, ops, written: () => undefined };
    } finally {
      if (--this.active === 0) for (const w of this.idle.splice(0)) w();
    }
  }

  /** Appends blocks contiguously to the current pack with one write. */
  private async appendAll(blocks: Buffer[]): Promise<BlockLocation[]> {
    if (this.current < 0 || this.offset >= PACK_LIMIT) await this.startPack();
    const pack = this.current;
    const fd = this.currentFd;
    const start = this.offset;
    const locs: BlockLocation[] = [];
    let at = start;
    for (const b of blocks) {
      locs.push([pack, at, b.length]);
      at = alignUp(at + b.length);
    }
    this.offset = at;
    const joined = contiguous(blocks);
    const whole = joined ?? Buffer.alloc(at - start);
    if (!joined) for (let k = 0; k < blocks.length; k++) blocks[k]!.copy(whole, locs[k]![1] - start);
    let written = 0;
    while (written < whole.length) written += await io.write(fd, whole.subarray(written), whole.length - written, start + written);
    if (this.strict) await io.fsync(fd, true);
    else this.dirty.add(pack);
    return locs;
  }

  private async startPack(): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const n = this.nextPack++;
    const fd = await io.open(`${this.dir}/${packName(n)}`, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    this.fds.set(n, fd);
    this.current = n;
    this.currentFd = fd;
    this.offset = 0;
  }

  private remember(hex: string): void {
    this.known.delete(hex);
    this.known.set(hex, true);
    if (this.known.size > KNOWN_LIMIT) this.known.delete(this.known.keys().next().value!);
    if (this.locs.size > KNOWN_LIMIT) this.locs.delete(this.locs.keys().next().value!);
  }

  /** Whether blocks with these hashes are stored (zero blocks never are). */
  async has(hashes: Buffer[]): Promise<boolean[]> {
    // No pack was ever made: nothing to look up.
    if (this.nextPack === 0 && this.current < 0) return hashes.map(() => false);
    const hexes = hashes.map((h) => h.toString('hex'));
    const ask = [...new Set(hexes.filter((hex) => !this.locs.has(hex) && !this.known.has(hex)))];
    const raw = ask.length > 0 ? await this.store.getMany(Sublevel.hashes, ask) : [];
    const found = new Set(ask.filter((_, i) => raw[i] !== undefined));
    return hexes.map((hex) => this.locs.has(hex) || this.known.has(hex) || found.has(hex));
  }

  /** Reads a block by hash and checks it against the hash. */
  async get(hash: Buffer): Promise<Buffer> {
    return (await this.getMany([hash]))[0]!;
  }

  /**
   * Reads blocks by hash, checking each against its hash. Blocks stored back to back in
   * one pack are read with one call. `prefetch` names blocks likely to be read next: their
   * locations are looked up in the same index query, so a sequential reader queries the
   * index once per many blocks. `dest[k]`, when given, is memory that block k exactly
   * fills: where a run of blocks has such memory back to back, it is read there directly
   * (and returned as is), which spares a copy for a reader whose buffer covers whole blocks.
   */
  async getMany(hashes: Buffer[], prefetch: Buffer[] = [], dest: Array<Buffer | null> = []): Promise<Buffer[]> {
    const hexes = hashes.map((h) => h.toString('hex'));
    const missing = new Set<string>();
    for (const hex of hexes) if (!this.locs.has(hex)) missing.add(hex);
    if (missing.size > 0) {
      for (const h of prefetch) { const hex = h.toString('hex'); if (!this.locs.has(hex)) missing.add(hex); }
      const keys = [...missing];
      const raw = await this.store.getMany(Sublevel.hashes, keys);
      for (let k = 0; k < keys.length; k++) {
        const r = raw[k];
        if (r !== undefined) this.cacheLocation(keys[k]!, JSON.parse(r.toString('utf8')) as BlockLocation);
      }
    }
    const locs = hexes.map((hex) => {
      const loc = this.locs.get(hex);
      if (!loc) throw new FsError('EIO', `preserved block ${hex} is missing from the block store`);
      return loc;
    });
    const out = new Array<Buffer>(hashes.length);
    const reads: Promise<void>[] = [];
    for (let i = 0; i < locs.length;) {
      let j = i + 1;
      while (j < locs.length && locs[j]![0] === locs[i]![0] && locs[j]![1] === locs[j - 1]![1] + locs[j - 1]![2]) j++;
      reads.push(this.readRun(locs, hashes, hexes, out, i, j, dest));
      i = j;
    }
    await Promise.all(reads);
    return out;
  }

  /** Reads blocks [i, j), stored back to back in one pack, into out[i..j). */
  private async readRun(locs: BlockLocation[], hashes: Buffer[], hexes: string[], out: Buffer[], i: number, j: number, dest: Array<Buffer | null>): Promise<void> {
    const [pack, start] = locs[i]!;
    const length = locs[j - 1]![1] + locs[j - 1]![2] - start;
    const fd = this.fds.get(pack) ?? await this.packFd(pack);
    let direct = true;
    for (let k = i; k < j && direct; k++) {
      const d = dest[k];
      const prev = dest[k - 1];
      direct = !!d && d.length === locs[k]![2] &&
        (k === i || (!!prev && prev.buffer === d.buffer && prev.byteOffset + prev.length === d.byteOffset));
    }
    const buf = direct ? Buffer.from(dest[i]!.buffer, dest[i]!.byteOffset, length) : Buffer.allocUnsafe(length);
    const got = await readFull((b, n, p) => io.read(fd, b, n, p), buf, length, start);
    for (let k = i; k < j; k++) {
      const [, offset, len] = locs[k]!;
      const part = buf.subarray(offset - start, offset - start + len);
      if (offset - start + len > got || !hashBlock(part).equals(hashes[k]!)) {
        throw new FsError('EIO', `preserved block ${hexes[k]} is damaged (pack ${packName(pack)}, offset ${offset})`);
      }
      out[k] = direct ? dest[k]! : part;
    }
  }

  private cacheLocation(hex: string, loc: BlockLocation): void {
    this.locs.set(hex, loc);
    if (this.locs.size > KNOWN_LIMIT) this.locs.delete(this.locs.keys().next().value!);
  }

  private async packFd(pack: number): Promise<number> {
    let fd = this.fds.get(pack);
    if (fd === undefined) {
      fd = await io.open(`${this.dir}/${packName(pack)}`, fs.constants.O_RDONLY);
      const raced = this.fds.get(pack);
      if (raced !== undefined) { fs.close(fd, () => undefined); return raced; }
      this.fds.set(pack, fd);
    }
    return fd;
  }

  /** Makes every block written so far durable. */
  async sync(): Promise<void> {
    const packs = [...this.dirty];
    this.dirty.clear();
    await Promise.all(packs.map(async (p) => { const fd = this.fds.get(p); if (fd !== undefined) await io.fsync(fd, true); }));
  }

  /**
   * Removes every block whose hash `isLive` rejects and frees its space. The caller holds
   * the volume's write barrier, so no preservation can take a new reference meanwhile.
   * The current pack is sealed first; packs started later are left alone.
   */
  async collect(isLive: (hex: string) => boolean): Promise<GcResult> {
    this.current = -1;
    this.currentFd = -1;
    const sealedBelow = this.nextPack;
    if (this.active > 0) await new Promise<void>((res) => this.idle.push(res));
    const ops: Op[] = [];
    const live = new Map<number, Array<[number, number]>>();
    let blocksRemoved = 0;
    for await (const [hex, value] of this.store.entries(Sublevel.hashes)) {
      if (isLive(hex)) {
        const [pack, offset, length] = JSON.parse(value.toString('utf8')) as BlockLocation;
        let ranges = live.get(pack);
        if (!ranges) live.set(pack, ranges = []);
        ranges.push([offset, alignUp(offset + length)]);
      } else {
        ops.push({ type: 'del', sub: Sublevel.hashes, key: hex });
        this.known.delete(hex);
        this.locs.delete(hex);
        blocksRemoved++;
      }
    }
    await this.store.write(ops, true);
    let packsRemoved = 0;
    let bytesFreed = 0;
    let names: string[] = [];
    try { names = await fsp.readdir(this.dir); } catch (err) { if (!hasCode(err, 'ENOENT')) throw err; }
    for (const name of names) {
      const m = /^pack-([0-9a-f]{8})\.dat$/.exec(name);
      if (!m) continue;
      const pack = parseInt(m[1]!, 16);
      if (pack >= sealedBelow) continue;
      const file = `${this.dir}/${name}`;
      const before = await fsp.stat(file);
      const ranges = (live.get(pack) ?? []).sort((a, b) => a[0] - b[0]);
      if (ranges.length === 0) {
        const fd = this.fds.get(pack);
        if (fd !== undefined) { this.fds.delete(pack); await io.close(fd); }
        await fsp.unlink(file);
        bytesFreed += before.blocks * 512;
        packsRemoved++;
        continue;
      }
      const fd = await io.open(file, fs.constants.O_RDWR);
      try {
        let at = 0;
        for (const [start, end] of [...ranges, [alignUp(before.size), alignUp(before.size)] as [number, number]]) {
          if (start > at) await punchHole(fd, at, start - at).catch((err) => { if (!hasCode(err, 'EOPNOTSUPP')) throw err; });
          at = Math.max(at, end);
        }
      } finally {
        await io.close(fd);
      }
      const after = await fsp.stat(file);
      bytesFreed += Math.max(0, (before.blocks - after.blocks) * 512);
    }
    return { blocksRemoved, packsRemoved, bytesFreed };
  }

  /** Bytes the pack files take on disk. */
  async diskUsage(): Promise<number> {
    let total = 0;
    let names: string[] = [];
    try { names = await fsp.readdir(this.dir); } catch { return 0; }
    for (const n of names) total += (await fsp.stat(`${this.dir}/${n}`)).blocks * 512;
    return total;
  }

  async close(): Promise<void> {
    await this.sync();
    for (const fd of this.fds.values()) fs.close(fd, () => undefined);
    this.fds.clear();
    this.current = -1;
  }
}
