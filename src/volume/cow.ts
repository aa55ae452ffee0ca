// Copy-on-write, one rule for every object (DESIGN.md): before the first change of an
// object in the current epoch E, if a snapshot can see it, its current value is preserved
// tagged v = E - 1. A snapshot with epoch s reads the preserved value with the smallest
// v >= s, or the live value if there is none.
//
// Objects: a file's attributes (one record: stat fields, xattrs, symlink target), a data
// block of a file, a directory entry. A snapshot can see a file only if its id is below
// the snapshot's `nextFid` (ids are assigned in order and never reused), so files made
// after the newest snapshot are never preserved.
//
// Ordering: every preservation is queued in the store before the change it protects is
// applied, and the callers wait for it. Concurrent changes of one object share one
// preservation and all wait for it.
import type { Epoch, FileId } from '../core/types.js';
import { ZERO_HASH, type BlockStore } from './blocks.js';
import { Sublevel, attrKey, blockKey, dentryKey, hex, unhex, type PreservedAttr, type PreservedEntry } from './format.js';
import { io, readFull } from './io.js';
import { putJson, type Op, type Store } from './store.js';

interface BlockState {
  loaded: Promise<void> | null;
  /** Blocks preserved in this epoch. */
  done: Set<number>;
  inflight: Map<number, Promise<void>>;
}

/** Largest read used while preserving a run of blocks. */
const RUN_BYTES = 1024 * 1024;
/** Run buffers kept for reuse (enough for the stretches a sequential writer has in flight). */
const SPARE_BUFFERS = 8;

export class Cow {
  private version: Epoch = 0;
  private visibleBelow: FileId = 0;
  private attrsKept = new Map<FileId, Promise<PreservedAttr | null>>();
  private blockStates = new Map<FileId, BlockState>();
  /** Bumped whenever blocks of a file are preserved, so open snapshot readers reload. */
  private readonly gens = new Map<FileId, number>();
  private readonly spareBuffers: Buffer[] = [];

  constructor(private readonly store: Store, private readonly blocks: BlockStore, private readonly blockSize: number) {}

  /**
   * Starts epoch `epoch`. `visibleBelow` is the newest snapshot's nextFid (0 when there is
   * no snapshot): files with smaller ids are seen by some snapshot.
   */
  setEpoch(epoch: Epoch, visibleBelow: FileId): void {
    if (epoch - 1 !== this.version) {
      this.attrsKept = new Map();
      this.blockStates = new Map();
    }
    this.version = epoch - 1;
    this.visibleBelow = visibleBelow;
  }

  /** Whether any snapshot exists (otherwise nothing is ever preserved). */
  get active(): boolean {
    return this.visibleBelow > 0;
  }

  needs(fid: FileId): boolean {
    return fid < this.visibleBelow;
  }

  gen(fid: FileId): number {
    return this.gens.get(fid) ?? 0;
  }

  /**
   * Preserves a file's attributes before their first change in this epoch. Returns them
   * (as of the newest snapshot), or null when no snapshot sees the file.
   */
  keepAttrs(fid: FileId, capture: () => Promise<PreservedAttr>): Promise<PreservedAttr | null> {
    if (!this.needs(fid)) return Promise.resolve(null);
    const kept = this.attrsKept.get(fid);
    if (kept) return kept;
    const version = this.version;
    const p = (async () => {
      // A previous run of the daemon may have preserved it already in this epoch.
      const earlier = await this.store.getJson<PreservedAttr>(Sublevel.attrs, attrKey(fid, version));
      if (earlier) return earlier;
      const value = await capture();
      await this.store.write([putJson(Sublevel.attrs, attrKey(fid, version), value)]);
      return value;
    })();
    this.attrsKept.set(fid, p);
    p.catch(() => { if (this.attrsKept.get(fid) === p) this.attrsKept.delete(fid); });
    return p;
  }

  /**
   * The operation preserving directory entry (dir, name) before its first change in this
   * epoch; the caller knows it is the first (the journal says so) and passes what the
   * entry holds now (fid 0: no entry).
   */
  entryOps(dir: FileId, name: string, current: PreservedEntry): Op[] {
    if (!this.needs(dir)) return [];
    return [putJson(Sublevel.dentries, dentryKey(dir, name, this.version), current)];
  }

  /**
   * Preserves the blocks [first, end) of a file that a snapshot can see, before they
   * change. `snapSize` is the size the newest snapshot sees (blocks past it need
   * nothing); `readFd` gives a descriptor to read the current contents from. Blocks of
   * zeros are recorded too (with an empty hash, nothing stored): a later epoch may see a
   * smaller size and never preserve that block again, so it must be on record now.
   */
  async keepBlocks(fid: FileId, readFd: () => Promise<number>, first: number, end: number, snapSize: number): Promise<void> {
    if (!this.needs(fid)) return;
    end = Math.min(end, Math.ceil(snapSize / this.blockSize));
    if (first >= end) return;
    const st = this.blockState(fid);
    if (st.loaded) await st.loaded;
    const todo: number[] = [];
    const waits: Promise<void>[] = [];
    for (let b = first; b < end; b++) {
      if (st.done.has(b)) continue;
      const p = st.inflight.get(b);
      if (p) waits.push(p); else todo.push(b);
    }
    if (todo.length > 0) {
      const p = this.preserve(fid, readFd, todo, snapSize, st);
      for (const b of todo) st.inflight.set(b, p);
      p.then(() => { for (const b of todo) st.inflight.delete(b); },
        () => { for (const b of todo) st.inflight.delete(b); });
      waits.push(p);
    }
    if (waits.length === 1) await waits[0];
    else if (waits.length > 1) await Promise.all(waits);
  }

  /** Whether blocks [first, end) need nothing more: preserved already, or past what snapshots see. */
  covered(fid: FileId, first: number, end: number, snapSize: number): boolean {
    if (!this.needs(fid)) return true;
    const st = this.blockStates.get(fid);
    end = Math.min(end, Math.ceil(snapSize / this.blockSize));
    if (first >= end) return true;
    if (!st || st.loaded) return false;
    for (let b = first; b < end; b++) if (!st.done.has(b)) return false;
    return true;
  }

  private blockState(fid: FileId): BlockState {
    let st = this.blockStates.get(fid);
    if (st) return st;
    const state: BlockState = { loaded: null, done: new Set(), inflight: new Map() };
    const prefix = `${hex(fid)}!${hex(this.version)}!`;
    state.loaded = (async () => {
      for await (const [key] of this.store.entries(Sublevel.blocks, { gte: prefix, lt: `${hex(fid)}!${hex(this.version)}"` })) {
        state.done.add(unhex(key.slice(prefix.length)));
      }
      state.loaded = null;
    })();
    this.blockStates.set(fid, state);
    return state;
  }

  /** Run buffers for reuse: fresh memory costs a page fault on each first touch. */
  private takeBuffer(length: number): Buffer {
    if (length > RUN_BYTES) return Buffer.allocUnsafeSlow(length);
    return this.spareBuffers.pop() ?? Buffer.allocUnsafeSlow(RUN_BYTES);
  }

  private giveBack(buf: Buffer): void {
    if (buf.length === RUN_BYTES && this.spareBuffers.length < SPARE_BUFFERS) this.spareBuffers.push(buf);
  }

  private async preserve(fid: FileId, readFd: () => Promise<number>, todo: number[], snapSize: number, st: BlockState): Promise<void> {
    const fd = await readFd();
    const bs = this.blockSize;
    const version = this.version;
    const ops: Op[] = [];
    const preserved: number[] = [];
    const written: Array<(done: Promise<void>) => void> = [];
    const maxRun = Math.max(1, RUN_BYTES / bs);
    for (let i = 0; i < todo.length;) {
      let j = i + 1;
      while (j < todo.length && todo[j] === todo[j - 1]! + 1 && j - i < maxRun) j++;
      const start = todo[i]! * bs;
      const length = Math.min(todo[j - 1]! * bs + bs, snapSize) - start;
      const spare = this.takeBuffer(length);
      const buf = spare.subarray(0, length);
      let stored: Awaited<ReturnType<BlockStore['putMany']>>;
      try {
        const got = await readFull((b, n, p) => io.read(fd, b, n, p), buf, length, start);
        buf.fill(0, got);
        stored = await this.blocks.putMany(todo.slice(i, j).map((_, k) => buf.subarray(k * bs, Math.min(length, (k + 1) * bs))));
      } finally {
        // putMany has written or dropped the data once it returns.
        this.giveBack(spare);
      }
      ops.push(...stored.ops);
      written.push(stored.written);
      const hashes = stored.hashes;
      for (let k = 0; k < hashes.length; k++) {
        ops.push({ type: 'put', sub: Sublevel.blocks, key: blockKey(fid, version, todo[i + k]!), value: hashes[k] ?? ZERO_HASH });
        preserved.push(todo[i + k]!);
      }
      i = j;
    }
    const done = this.store.write(ops);
    for (const w of written) w(done);
    await done;
    // Only now: a concurrent write that finds a block done may apply at once.
    for (const b of preserved) st.done.add(b);
    this.gens.set(fid, this.gen(fid) + 1);
  }
}
