import test from '../helpers/ava.js';
import { blockSpan, regionPieces, bitRuns, coalesce, clip, extentsFromRegions, newBitmap, setBits, countBits, orInto } from '../../src/volume/extents.js';

const K = 1024;

test('blockSpan: blocks touched by a byte range', (t) => {
  const cases: Array<[number, number, number, [number, number]]> = [
    [0, 1, 64 * K, [0, 1]],
    [0, 64 * K, 64 * K, [0, 1]],
    [0, 64 * K + 1, 64 * K, [0, 2]],
    [64 * K - 1, 2, 64 * K, [0, 2]],
    [128 * K, 4 * K, 4 * K, [32, 33]],
    [5 * 2 ** 30, 1, 64 * K, [81920, 81921]],
    [100, 0, 64 * K, [0, 0]],
  ];
  for (const [off, len, bs, want] of cases) t.deepEqual(blockSpan(off, len, bs), want, `${off}+${len}@${bs}`);
});

test('regionPieces: splits block spans at region borders', (t) => {
  t.deepEqual(regionPieces(0, 10, 256), [[0, 0, 10]]);
  t.deepEqual(regionPieces(250, 260, 256), [[0, 250, 256], [1, 0, 4]]);
  t.deepEqual(regionPieces(256, 768, 256), [[1, 0, 256], [2, 0, 256]]);
  t.deepEqual(regionPieces(5, 5, 256), []);
});

test('bitmaps: set, count, runs, or', (t) => {
  const b = newBitmap(256);
  t.is(b.length, 32);
  setBits(b, 3, 6);
  setBits(b, 10, 11);
  setBits(b, 250, 256);
  t.is(countBits(b), 3 + 1 + 6);
  t.deepEqual(bitRuns(b, 256), [[3, 6], [10, 11], [250, 256]]);
  const c = newBitmap(256);
  setBits(c, 0, 1);
  orInto(c, b);
  t.deepEqual(bitRuns(c, 256), [[0, 1], [3, 6], [10, 11], [250, 256]]);
});

test('coalesce merges overlapping and touching extents, drops empty ones', (t) => {
  t.deepEqual(coalesce([]), []);
  t.deepEqual(coalesce([{ offset: 10, length: 5 }, { offset: 0, length: 10 }]), [{ offset: 0, length: 15 }]);
  t.deepEqual(coalesce([{ offset: 0, length: 4 }, { offset: 8, length: 4 }, { offset: 2, length: 3 }]), [{ offset: 0, length: 5 }, { offset: 8, length: 4 }]);
  t.deepEqual(coalesce([{ offset: 0, length: 0 }, { offset: 3, length: 1 }]), [{ offset: 3, length: 1 }]);
  t.deepEqual(coalesce([{ offset: 0, length: 100 }, { offset: 10, length: 5 }]), [{ offset: 0, length: 100 }]);
});

test('clip cuts extents at the file size', (t) => {
  t.deepEqual(clip([{ offset: 0, length: 65536 }, { offset: 131072, length: 65536 }], 70000), [{ offset: 0, length: 65536 }]);
  t.deepEqual(clip([{ offset: 0, length: 65536 }], 100), [{ offset: 0, length: 100 }]);
  t.deepEqual(clip([{ offset: 0, length: 65536 }], 0), []);
});

test('extentsFromRegions: bitmaps of several regions to byte extents', (t) => {
  const bs = 64 * K;
  const r0 = newBitmap(256);
  setBits(r0, 254, 256);
  const r1 = newBitmap(256);
  setBits(r1, 0, 2);
  setBits(r1, 100, 101);
  const ext = extentsFromRegions([[1, r1], [0, r0]], 256, bs, 10 * 2 ** 30);
  t.deepEqual(ext, [{ offset: 254 * bs, length: 4 * bs }, { offset: 356 * bs, length: bs }]);
  t.deepEqual(extentsFromRegions([[0, r0]], 256, bs, 255 * bs - 10), [{ offset: 254 * bs, length: bs - 10 }]);
});
