// Worker thread of HashPool (hasher.ts): BLAKE3 of consecutive blocks of a buffer, or of a
// whole stream of buffers. Hashing runs synchronously in native code, so it is kept off the
// thread that serves FUSE and the protocol.
import { parentPort } from 'node:worker_threads';
import { blake3, Blake3Hasher } from '@napi-rs/blake-hash';

export interface HashRequest {
  id: number;
  data: ArrayBuffer;
  length: number;
  blockSize: number;
  /**
   * Set for a piece of a stream (HashPool.stream): the data goes into that stream's hasher
   * instead of being hashed by blocks; with `final`, the reply's hashes are the stream's
   * digest and the stream is over. A stream's pieces all go to one thread, in order.
   */
  stream?: number;
  final?: boolean;
}

export interface HashReply {
  id: number;
  /** 32 bytes per block, in order. */
  hashes: ArrayBuffer;
  /** The request's buffer, handed back for reuse, and how much of it was hashed. */
  data: ArrayBuffer;
  length: number;
}

const streams = new Map<number, Blake3Hasher>();

function streamPiece(req: HashRequest): Buffer {
  const sid = req.stream!;
  let hasher = streams.get(sid);
  if (!hasher) {
    hasher = new Blake3Hasher();
    streams.set(sid, hasher);
  }
  if (req.length > 0) hasher.update(Buffer.from(req.data, 0, req.length));
  if (!req.final) return Buffer.alloc(0);
  streams.delete(sid);
  return hasher.digestBuffer();
}

parentPort!.on('message', (req: HashRequest) => {
  if (req.stream !== undefined) {
    const digest = streamPiece(req);
    const hashes = Buffer.allocUnsafeSlow(digest.length);
    digest.copy(hashes);
    const reply: HashReply = { id: req.id, hashes: hashes.buffer as ArrayBuffer, data: req.data, length: req.length };
    parentPort!.postMessage(reply, [reply.hashes, reply.data]);
    return;
  }
  const data = Buffer.from(req.data, 0, req.length);
  const count = Math.ceil(req.length / req.blockSize);
  const hashes = Buffer.allocUnsafeSlow(32 * count);
  for (let i = 0; i < count; i++) {
    blake3(data.subarray(i * req.blockSize, Math.min(req.length, (i + 1) * req.blockSize))).copy(hashes, 32 * i);
  }
  const reply: HashReply = { id: req.id, hashes: hashes.buffer as ArrayBuffer, data: req.data, length: req.length };
  parentPort!.postMessage(reply, [reply.hashes, reply.data]);
});
