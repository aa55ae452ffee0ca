// Worker thread of HashPool (hasher.ts): BLAKE3 of consecutive blocks of a buffer. Hashing
// runs synchronously in native code, so it is kept off the thread that serves FUSE and the
// protocol.
import { parentPort } from 'node:worker_threads';
import { blake3 } from '@napi-rs/blake-hash';

export interface HashRequest {
  id: number;
  data: ArrayBuffer;
  length: number;
  blockSize: number;
}

export interface HashReply {
  id: number;
  /** 32 bytes per block, in order. */
  hashes: ArrayBuffer;
  /** The request's buffer, handed back for reuse, and how much of it was hashed. */
  data: ArrayBuffer;
  length: number;
}

parentPort!.on('message', (req: HashRequest) => {
  const data = Buffer.from(req.data, 0, req.length);
  const count = Math.ceil(req.length / req.blockSize);
  const hashes = Buffer.allocUnsafeSlow(32 * count);
  for (let i = 0; i < count; i++) {
    blake3(data.subarray(i * req.blockSize, Math.min(req.length, (i + 1) * req.blockSize))).copy(hashes, 32 * i);
  }
  const reply: HashReply = { id: req.id, hashes: hashes.buffer as ArrayBuffer, data: req.data, length: req.length };
  parentPort!.postMessage(reply, [reply.hashes, reply.data]);
});
