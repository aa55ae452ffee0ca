// A Connection's writes: once sendParts({flushed}) resolves, the bytes have left, so the
// sender may reuse (or hand to a hashing thread) the memory they were in. Checked through a
// real pipe to a child (cat) and back, with each buffer detached and overwritten as soon as
// its send resolves: every frame must come back as it was sent.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { Duplex } from 'node:stream';
import test from '../helpers/ava.js';
import { Connection } from '../../src/replicate/connection.js';
import { frameHead } from '../../src/replicate/frames.js';

test('memory sent with flushed: true may be reused as soon as the send resolves', async (t) => {
  // A reader that starts late: the pipe fills, and writes wait in the stream's queue.
  const child = spawn('/bin/sh', ['-c', 'sleep 0.5; exec cat'], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => { child.kill('SIGKILL'); });
  const conn = new Connection(Duplex.from({ readable: child.stdout, writable: child.stdin }), { output: child.stdin });
  const N = 200;
  const sums: string[] = [];
  const received = (async () => {
    const got: string[] = [];
    for (let i = 0; i < N; i++) got.push(createHash('sha256').update((await conn.next(20_000)).body.subarray(16)).digest('hex'));
    return got;
  })();
  // Many at once, as the sender's workers do.
  await Promise.all(Array.from({ length: 16 }, async (_, w) => {
    for (let i = w; i < N; i += 16) {
      // Small ones too: a stream takes those into its queue without making the writer wait.
      const mem = Buffer.allocUnsafeSlow(i % 2 ? 64 * 1024 : 1024 + (i * 97) % 8192);
      randomBytes(mem.length).copy(mem);
      sums[i] = createHash('sha256').update(mem).digest('hex');
      await conn.sendParts([frameHead('block', Buffer.alloc(16), 16 + mem.length), mem], { flushed: true });
      // What the sender does next with the memory: hands it to a thread (detaching it) and fills it again.
      const moved = new Uint8Array(structuredClone(mem.buffer, { transfer: [mem.buffer] }));
      moved.fill(0xee);
    }
  }));
  const got = await received;
  t.deepEqual([...got].sort(), [...sums].sort(), 'every frame arrived as it was sent');
  conn.close();
});
