// The hashing threads: same hashes as hashing in place, many requests at once, buffers
// handed back, and clean failures.
import { randomBytes } from 'node:crypto';
import { blake3 } from '@napi-rs/blake-hash';
import test from '../helpers/ava.js';
import { HashPool } from '../../src/replicate/hasher.js';

test('hashes match BLAKE3 computed in place, block by block, with a short last block', async (t) => {
  const pool = new HashPool(2);
  t.teardown(() => pool.close());
  const data = randomBytes(5 * 65536 + 123);
  const copy = Buffer.from(data);
  const { hashes, data: back } = await pool.hash(data, 65536);
  t.is(hashes.length, 6);
  for (let i = 0; i < 6; i++) t.true(hashes[i]!.equals(blake3(copy.subarray(i * 65536, Math.min(copy.length, (i + 1) * 65536)))), `block ${i}`);
  t.true(back.equals(copy), 'the buffer comes back unchanged');
  // The BLAKE3 test vector for empty input.
  const empty = await pool.hash(Buffer.alloc(0), 65536);
  t.is(empty.hashes.length, 0);
  t.is(blake3(Buffer.alloc(0)).toString('hex'), 'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262');
});

test('many requests at once across threads each get their own answer', async (t) => {
  const pool = new HashPool(3);
  t.teardown(() => pool.close());
  const inputs = Array.from({ length: 200 }, (_, i) => randomBytes(1 + ((i * 7919) % 300_000)));
  const expected = inputs.map((b) => blake3(b.subarray(0, Math.min(b.length, 4096))).toString('hex'));
  const results = await Promise.all(inputs.map((b) => pool.hash(Buffer.from(b), 4096)));
  t.deepEqual(results.map((r) => r.hashes[0]!.toString('hex')), expected);
  t.deepEqual(results.map((r) => r.hashes.length), inputs.map((b) => Math.ceil(b.length / 4096)));
});

test('a slice of a larger buffer is hashed from a copy, and the original is left alone', async (t) => {
  const pool = new HashPool(1);
  t.teardown(() => pool.close());
  const big = randomBytes(100_000);
  const slice = big.subarray(1000, 9192);
  const { hashes } = await pool.hash(slice, 4096);
  t.true(hashes[0]!.equals(blake3(big.subarray(1000, 5096))));
  t.is(big.length, 100_000, 'the parent buffer is still usable');
});

test('a closed pool refuses work, and pending requests are rejected', async (t) => {
  const pool = new HashPool(1);
  const pending = pool.hash(Buffer.allocUnsafeSlow(64 << 20).fill(1), 65536);
  await pool.close();
  await t.throwsAsync(pending, { message: /closed/ });
  await t.throwsAsync(pool.hash(Buffer.alloc(10), 4096), { message: /closed/ });
});

test('a digest stream hashes a whole file in one thread, in order: the same as BLAKE3 of all of it', async (t) => {
  const pool = new HashPool(3);
  t.teardown(() => pool.close());
  const sizes = [0, 1, 65536, 3 * 1024 * 1024 + 17];
  const results = await Promise.all(sizes.map(async (size) => {
    const data = randomBytes(size);
    const s = pool.stream();
    const sent: Array<Promise<Buffer>> = [];
    for (let pos = 0; pos < size; pos += 100_000) {
      const piece = Buffer.allocUnsafeSlow(Math.min(100_000, size - pos));
      data.copy(piece, 0, pos, pos + piece.length);
      sent.push(s.update(piece));
    }
    const digest = await s.digest();
    const back = await Promise.all(sent);
    return { data, digest, back };
  }));
  for (const [i, r] of results.entries()) {
    t.true(r.digest.equals(blake3(r.data)), `${sizes[i]} bytes`);
    t.is(r.back.reduce((n, b) => n + b.length, 0), sizes[i], 'every piece handed back');
  }
  const s = pool.stream();
  await s.digest();
  await t.throwsAsync(s.update(Buffer.alloc(1)), { message: /over/ }, 'nothing after the digest');
});
