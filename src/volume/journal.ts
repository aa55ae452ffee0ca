// The change journal of the current epoch, held in memory and mirrored in LevelDB.
//
// Per file: a header (kinds of change, unknown marker, lowest size) and, for data
// writes to files that existed before the epoch, one dirty-block bitmap per region.
// Crash safety for data without a LevelDB write per FUSE write: before the first write
// into a region since the last flush, the region is persisted with the `pending` flag
// (a write intent). Later writes into that region only touch memory. A flush persists
// the exact bitmaps and clears the flags. After a crash, a pending region counts as
// wholly dirty, so the journal on disk is always a superset of what reached the files.
// Writes to a file created in this epoch need no intents: the whole file is new.
import { ChangeKind, type Epoch, type Extent, type FileId, type UnknownReason } from '../core/types.js';
import {
  Sublevel, RegionFlag, headerKey, regionKey, entryKey, epochRange, unhex,
  type HeaderValue, type EntryValue,
} from './format.js';
import { blockSpan, regionPieces, newBitmap, setBits, orInto, extentsFromRegions, coalesce } from './extents.js';
import { putJson, type Op, type Store } from './store.js';

interface RegionState {
  bits: Uint8Array;
  /** A pending-flagged copy of this region is queued or on disk since the last flush. */
  covered: boolean;
  /** The queued intent write, until it has landed. */
  cover: Promise<void> | null;
  /** Bits changed since the last flush. */
  dirty: boolean;
}

interface FileState {
  header: HeaderValue;
  persisted: string;
  regions: Map<number, RegionState>;
}

export interface JournalFileState {
  fid: FileId;
  kinds: number;
  unknown: UnknownReason | null;
  minSize: number | null;
  extents(size: number): Extent[];
}

/** What one region of block detail costs, in memory and on disk, roughly: its bitmap and bookkeeping. */
const REGION_OVERHEAD = 128;

export class Journal {
  private readonly files = new Map<FileId, FileState>();
  /** Regions held, across files. */
  private regionCount = 0;
  /** Regions allowed before the block detail is dropped (journal.maxBytes). */
  private regionBudget = Infinity;
  /** The block detail of this epoch was dropped: changed files are known, their blocks are not. */
  private overflowedState = false;
  /** Called when the detail is dropped: operations to write with it (the volume's health record). */
  onOverflow: (() => Op[]) | null = null;
  /** Records found damaged or contradictory when loaded; the files involved are taken as unknown. */
  readonly problems: string[] = [];
  /** `${dir}\0${name}` -> kinds of change to that directory entry. */
  private readonly entries = new Map<string, number>();
  private dirtyRegions = 0;
  /** Files whose header or regions changed in memory since the last flush. */
  private readonly unflushed = new Set<FileId>();

  private constructor(
    private readonly store: Store,
    readonly epoch: Epoch,
    readonly blockSize: number,
    readonly blocksPerRegion: number,
  ) {}

  static async load(store: Store, epoch: Epoch, blockSize: number, blocksPerRegion: number): Promise<Journal> {
    const j = new Journal(store, epoch, blockSize, blocksPerRegion);
    const range = epochRange(epoch);
    // Whatever cannot be read as written makes its file unknown (compared whole) and is
    // counted as a problem: the volume then asks for a full compare (docs/format.md).
    const distrust = (fid: FileId, what: string) => {
      j.problems.push(what);
      const st = j.state(fid);
      st.header.k |= ChangeKind.data | ChangeKind.attributes;
      st.header.u = 'inconsistent';
      st.persisted = '';
      j.unflushed.add(fid);
    };
    for await (const [key, value] of store.entries(Sublevel.headers, range)) {
      const fid = unhex(key.split('!')[1]!);
      const text = value.toString('utf8');
      const header = parseHeader(text);
      if (header) j.files.set(fid, { header, persisted: text, regions: new Map() });
      else distrust(fid, `the journal header of file ${fid} in epoch ${epoch} is unreadable`);
    }
    const bitmapBytes = newBitmap(blocksPerRegion).length;
    for await (const [key, value] of store.entries(Sublevel.regions, range)) {
      const [, fidHex, regionHex] = key.split('!');
      const fid = unhex(fidHex!);
      if (!j.files.has(fid)) { distrust(fid, `epoch ${epoch} holds blocks of file ${fid} without saying it changed`); continue; }
      if (value.length !== 1 + bitmapBytes) { distrust(fid, `a region of file ${fid} in epoch ${epoch} has the wrong size`); continue; }
      const st = j.state(fid);
      const bits = newBitmap(blocksPerRegion);
      orInto(bits, value.subarray(1));
      // A pending flag left on disk means the previous process died before flushing.
      st.regions.set(unhex(regionHex!), { bits, covered: (value[0]! & RegionFlag.pending) !== 0, cover: null, dirty: false });
      j.regionCount++;
    }
    for await (const [key, value] of store.entries(Sublevel.entries, range)) {
      const rest = key.slice(range.gte.length);
      const sep = rest.indexOf('!');
      const dir = unhex(rest.slice(0, sep));
      let kinds: number;
      try {
        kinds = (JSON.parse(value.toString('utf8')) as EntryValue).k;
        if (!Number.isInteger(kinds)) throw new Error('no kinds');
      } catch {
        j.problems.push(`a directory entry change of directory ${dir} in epoch ${epoch} is unreadable`);
        kinds = ChangeKind.created | ChangeKind.deleted;
        const st = j.state(dir);
        st.header.k |= ChangeKind.entries;
        st.header.u = 'inconsistent';
        st.persisted = '';
        j.unflushed.add(dir);
      }
      j.entries.set(`${dir}\0${rest.slice(sep + 1)}`, kinds);
    }
    // Unknown files need no block detail: what contradicts the rest is dropped with it.
    for (const st of j.files.values()) {
      if (st.header.u !== 'inconsistent' || st.regions.size === 0) continue;
      j.regionCount -= st.regions.size;
      st.regions.clear();
    }
    return j;
  }

  /** An empty journal for a new epoch. */
  static fresh(store: Store, epoch: Epoch, blockSize: number, blocksPerRegion: number): Journal {
    return new Journal(store, epoch, blockSize, blocksPerRegion);
  }

  /** Whether directory entry (dir, name) already changed in this epoch. */
  entryChanged(dir: FileId, name: string): boolean {
    return this.entries.has(`${dir}\0${name}`);
  }

  /**
   * Crash recovery: every region still flagged pending is taken as wholly dirty.
   * Returns the operations that make this permanent, and how many regions it touched.
   */
  recoverPending(): { ops: Op[]; regions: number } {
    let regions = 0;
    for (const [fid, st] of this.files) {
      for (const rs of st.regions.values()) {
        if (!rs.covered) continue;
        rs.bits.fill(0xff);
        rs.covered = false;
        rs.dirty = true;
        this.dirtyRegions++;
        this.unflushed.add(fid);
        regions++;
      }
    }
    return { ops: this.flushOps(), regions };
  }

  /**
   * Bounds the block detail this epoch keeps (journal.maxBytes): past it, every changed
   * file is taken as changed throughout (unknown, reason `overflow`) and no more detail is
   * kept. `overflowed` says the epoch was already over it (a daemon restarted in it).
   */
  setBudget(maxBytes: number, overflowed: boolean): void {
    this.regionBudget = Math.max(1, Math.floor(maxBytes / (REGION_OVERHEAD + newBitmap(this.blocksPerRegion).length)));
    this.overflowedState = overflowed;
  }

  get overflowed(): boolean {
    return this.overflowedState;
  }

  /** Regions of block detail held. */
  get regions(): number {
    return this.regionCount;
  }

  /**
   * Drops the block detail of every file: each becomes unknown, compared whole by the next
   * sync. The region records go in the same batch as the headers that say so.
   */
  private overflow(): Op[] {
    this.overflowedState = true;
    const ops: Op[] = [...(this.onOverflow?.() ?? [])];
    for (const [fid, st] of this.files) {
      if (st.regions.size === 0) continue;
      for (const [region, rs] of st.regions) {
        if (rs.dirty) this.dirtyRegions--;
        ops.push({ type: 'del', sub: Sublevel.regions, key: regionKey(this.epoch, fid, region) });
      }
      st.regions.clear();
      st.header.u ??= 'overflow';
      ops.push(...this.headerOp(fid, st));
    }
    this.regionCount = 0;
    return ops;
  }

  get fileCount(): number {
    return this.files.size;
  }

  get entryCount(): number {
    return this.entries.size;
  }

  /** Regions whose exact bitmap is only in memory. */
  get pendingFlush(): number {
    return this.dirtyRegions;
  }

  has(fid: FileId): boolean {
    return this.files.has(fid);
  }

  kindsOf(fid: FileId): number {
    return this.files.get(fid)?.header.k ?? 0;
  }

  /**
   * Adds kinds (and optionally an unknown marker or a new low size) to a file's header.
   * Returns the put to include in the caller's batch, or nothing if already recorded.
   */
  mark(fid: FileId, kinds: number, extra: { unknown?: UnknownReason; minSize?: number } = {}): Op[] {
    const st = this.state(fid);
    const h = st.header;
    h.k |= kinds;
    if (extra.unknown && !h.u) h.u = extra.unknown;
    if (extra.minSize !== undefined && (h.min === undefined || extra.minSize < h.min)) h.min = extra.minSize;
    return this.headerOp(fid, st);
  }

  /** Records that the directory entry (dir, name) changed. */
  markEntry(dir: FileId, name: string, kinds: number): Op[] {
    const key = `${dir}\0${name}`;
    const old = this.entries.get(key) ?? 0;
    if ((old | kinds) === old) return [];
    this.entries.set(key, old | kinds);
    return [putJson(Sublevel.entries, entryKey(this.epoch, dir, name), { k: old | kinds } satisfies EntryValue)];
  }

  /**
   * Notes a data write before it is applied. Returns null when memory suffices (fast
   * path), or a promise that resolves once the write intent is in LevelDB.
   */
  noteWrite(fid: FileId, offset: number, length: number): Promise<unknown> | null {
    const st = this.state(fid);
    const h = st.header;
    if (h.k & ChangeKind.created || h.u) {
      // Covered whole already; the data bit is only informative and waits for a flush.
      if (!(h.k & ChangeKind.data)) { h.k |= ChangeKind.data; this.unflushed.add(fid); }
      return null;
    }
    const ops: Op[] = [];
    const [first, end] = blockSpan(offset, length, this.blockSize);
    if (!this.overflowedState) {
      let fresh = 0;
      for (const [region] of regionPieces(first, end, this.blocksPerRegion)) if (!st.regions.has(region)) fresh++;
      if (fresh > 0 && this.regionCount + fresh > this.regionBudget) ops.push(...this.overflow());
    }
    if (this.overflowedState) {
      // No detail any more: the file is unknown, which must be on disk before the write.
      h.k |= ChangeKind.data;
      h.u ??= 'overflow';
      ops.push(...this.headerOp(fid, st));
      if (ops.length === 0) return null;
      return this.store.write(ops);
    }
    if (!(h.k & ChangeKind.data)) {
      h.k |= ChangeKind.data;
      ops.push(...this.headerOp(fid, st));
    }
    const newlyCovered: RegionState[] = [];
    const waits: Promise<void>[] = [];
    for (const [region, from, to] of regionPieces(first, end, this.blocksPerRegion)) {
      const rs = this.region(st, region);
      setBits(rs.bits, from, to);
      if (!rs.dirty) { rs.dirty = true; this.dirtyRegions++; this.unflushed.add(fid); }
      if (!rs.covered) {
        rs.covered = true;
        newlyCovered.push(rs);
        ops.push(this.regionOp(fid, region, rs, true));
      } else if (rs.cover) {
        waits.push(rs.cover);
      }
    }
    if (ops.length > 0) {
      const written = this.store.write(ops);
      for (const rs of newlyCovered) rs.cover = written;
      written.then(
        () => { for (const rs of newlyCovered) if (rs.cover === written) rs.cover = null; },
        () => { for (const rs of newlyCovered) if (rs.cover === written) { rs.cover = null; rs.covered = false; } },
      );
      waits.push(written);
    }
    if (waits.length === 0) return null;
    return waits.length === 1 ? waits[0]! : Promise.all(waits);
  }

  /** Operations that persist every header and exact bitmap changed since the last flush. */
  flushOps(onlyFid?: FileId): Op[] {
    const ops: Op[] = [];
    const fids = onlyFid === undefined ? [...this.unflushed] : this.unflushed.has(onlyFid) ? [onlyFid] : [];
    for (const fid of fids) {
      this.unflushed.delete(fid);
      const st = this.files.get(fid);
      if (!st) continue;
      ops.push(...this.headerOp(fid, st));
      for (const [region, rs] of st.regions) {
        if (!rs.dirty) continue;
        ops.push(this.regionOp(fid, region, rs, false));
        rs.dirty = false;
        rs.covered = false;
        rs.cover = null;
        this.dirtyRegions--;
      }
    }
    return ops;
  }

  fileStates(): JournalFileState[] {
    const out: JournalFileState[] = [];
    for (const [fid, st] of this.files) out.push(this.view(fid, st));
    return out;
  }

  fileState(fid: FileId): JournalFileState | undefined {
    const st = this.files.get(fid);
    return st && this.view(fid, st);
  }

  entryChanges(): Array<{ dir: FileId; name: string; kinds: number }> {
    return [...this.entries].map(([key, kinds]) => {
      const sep = key.indexOf('\0');
      return { dir: Number(key.slice(0, sep)), name: key.slice(sep + 1), kinds };
    });
  }

  private view(fid: FileId, st: FileState): JournalFileState {
    const { blocksPerRegion, blockSize } = this;
    return {
      fid,
      kinds: st.header.k,
      unknown: st.header.u ?? null,
      minSize: st.header.min ?? null,
      extents: (size: number) => {
        // A file born in this epoch is new throughout. An unknown file keeps the extents the
        // journal knows; `unknown` tells readers to compare the rest too.
        if (st.header.k & ChangeKind.created) return size > 0 ? [{ offset: 0, length: size }] : [];
        const written = extentsFromRegions([...st.regions].map(([r, rs]) => [r, rs.bits]), blocksPerRegion, blockSize, size);
        // Everything past the lowest size the file had is new: a truncation cut it off, and
        // what is there now (zeros of a regrown file, or new data) differs from before.
        const min = st.header.min;
        if (min === undefined || min >= size) return written;
        const from = Math.floor(min / blockSize) * blockSize;
        return coalesce([...written, { offset: from, length: size - from }]);
      },
    };
  }

  private state(fid: FileId): FileState {
    let st = this.files.get(fid);
    if (!st) {
      st = { header: { k: 0 }, persisted: '', regions: new Map() };
      this.files.set(fid, st);
    }
    return st;
  }

  private region(st: FileState, region: number): RegionState {
    let rs = st.regions.get(region);
    if (!rs) {
      rs = { bits: newBitmap(this.blocksPerRegion), covered: false, cover: null, dirty: false };
      st.regions.set(region, rs);
      this.regionCount++;
    }
    return rs;
  }

  private headerOp(fid: FileId, st: FileState): Op[] {
    const text = JSON.stringify(st.header);
    if (text === st.persisted) return [];
    st.persisted = text;
    return [{ type: 'put', sub: Sublevel.headers, key: headerKey(this.epoch, fid), value: Buffer.from(text) }];
  }

  private regionOp(fid: FileId, region: number, rs: RegionState, pending: boolean): Op {
    const value = new Uint8Array(1 + rs.bits.length);
    value[0] = pending ? RegionFlag.pending : 0;
    value.set(rs.bits, 1);
    return { type: 'put', sub: Sublevel.regions, key: regionKey(this.epoch, fid, region), value };
  }
}

function parseHeader(text: string): HeaderValue | null {
  try {
    const h = JSON.parse(text) as HeaderValue;
    return h && typeof h === 'object' && Number.isInteger(h.k) ? h : null;
  } catch {
    return null;
  }
}
