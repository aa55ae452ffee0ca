// Pure block and extent arithmetic for the journal. No I/O; table-tested.
import type { Extent } from '../core/types.js';

/** Blocks [first, end) touched by the byte range [offset, offset + length). */
export function blockSpan(offset: number, length: number, blockSize: number): [number, number] {
  if (length <= 0) return [0, 0];
  return [Math.floor(offset / blockSize), Math.ceil((offset + length) / blockSize)];
}

/** Splits a block span into per-region pieces: [region, firstBitInRegion, endBitInRegion). */
export function regionPieces(first: number, end: number, blocksPerRegion: number): Array<[number, number, number]> {
  const pieces: Array<[number, number, number]> = [];
  let b = first;
  while (b < end) {
    const region = Math.floor(b / blocksPerRegion);
    const regionStart = region * blocksPerRegion;
    const stop = Math.min(end, regionStart + blocksPerRegion);
    pieces.push([region, b - regionStart, stop - regionStart]);
    b = stop;
  }
  return pieces;
}

export function newBitmap(blocksPerRegion: number): Uint8Array {
  return new Uint8Array(Math.ceil(blocksPerRegion / 8));
}

export function setBits(bits: Uint8Array, from: number, to: number): void {
  for (let i = from; i < to; i++) bits[i >> 3]! |= 1 << (i & 7);
}

export function orInto(target: Uint8Array, source: Uint8Array): void {
  for (let i = 0; i < target.length && i < source.length; i++) target[i]! |= source[i]!;
}

export function countBits(bits: Uint8Array): number {
  let n = 0;
  for (let v of bits) {
    while (v) { n += v & 1; v >>= 1; }
  }
  return n;
}

/** Runs of set bits as [start, end) pairs. */
export function bitRuns(bits: Uint8Array, nbits: number): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  let start = -1;
  for (let i = 0; i < nbits; i++) {
    const set = (bits[i >> 3]! >> (i & 7)) & 1;
    if (set && start < 0) start = i;
    if (!set && start >= 0) { runs.push([start, i]); start = -1; }
  }
  if (start >= 0) runs.push([start, nbits]);
  return runs;
}

/** Sorts and merges overlapping or touching extents. */
export function coalesce(extents: readonly Extent[]): Extent[] {
  const sorted = extents.filter((e) => e.length > 0).sort((a, b) => a.offset - b.offset);
  const out: Extent[] = [];
  for (const e of sorted) {
    const last = out[out.length - 1];
    if (last && e.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, e.offset + e.length - last.offset);
    } else {
      out.push({ offset: e.offset, length: e.length });
    }
  }
  return out;
}

/** Clips extents to [0, size). */
export function clip(extents: readonly Extent[], size: number): Extent[] {
  const out: Extent[] = [];
  for (const e of extents) {
    if (e.offset >= size) continue;
    out.push({ offset: e.offset, length: Math.min(e.length, size - e.offset) });
  }
  return out;
}

/** Dirty byte extents of a file from its region bitmaps, coalesced and clipped to `size`. */
export function extentsFromRegions(
  regions: Iterable<[number, Uint8Array]>,
  blocksPerRegion: number,
  blockSize: number,
  size: number,
): Extent[] {
  const raw: Extent[] = [];
  for (const [region, bits] of regions) {
    const base = region * blocksPerRegion;
    for (const [s, e] of bitRuns(bits, blocksPerRegion)) {
      raw.push({ offset: (base + s) * blockSize, length: (e - s) * blockSize });
    }
  }
  return clip(coalesce(raw), size);
}

export function totalLength(extents: readonly Extent[]): number {
  return extents.reduce((n, e) => n + e.length, 0);
}
