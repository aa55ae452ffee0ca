// A pool of worker threads that hash blocks with BLAKE3 (DESIGN.md: hashing is the
// replicator's hot loop, and the native hash runs synchronously, so never on the thread
// that serves FUSE requests or the protocol).
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { HashReply, HashRequest } from './hash-worker.js';

interface Pending {
  resolve: (r: { hashes: Buffer[]; data: Buffer }) => void;
  reject: (e: Error) => void;
  worker: Worker;
}

/**
 * A BLAKE3 hash of a whole stream of bytes (a file), computed in one hashing thread: the
 * pieces given to update() are hashed there in the order given.
 */
export interface DigestStream {
  /**
   * Adds the bytes of `data` (moved to the thread, as with HashPool.hash) and resolves with
   * the buffer handed back once they are hashed. Several updates may be in flight.
   */
  update(data: Buffer): Promise<Buffer>;
  /** The 32-byte digest of everything given to update(), once all of it is hashed. */
  digest(): Promise<Buffer>;
}

export class HashPool {
  private readonly workers: Worker[] = [];
  private readonly load = new Map<Worker, number>();
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private nextStream = 1;
  private closed = false;

  constructor(size = Math.max(1, Math.min(4, os.availableParallelism() - 1))) {
    for (let i = 0; i < size; i++) {
      const w = new Worker(new URL('./hash-worker.js', import.meta.url));
      w.unref();
      w.on('message', (reply: HashReply) => this.settle(w, reply));
      w.on('error', (err) => this.failWorker(w, err));
      w.on('exit', (code) => { if (!this.closed) this.failWorker(w, new Error(`a hashing thread exited (code ${code})`)); });
      this.workers.push(w);
      this.load.set(w, 0);
    }
  }

  /**
   * BLAKE3 hashes of the consecutive `blockSize` blocks of `data` (the last may be short).
   * `data`'s memory is moved to the worker and comes back as the result's `data`: do not
   * use the original after the call. It must start its ArrayBuffer (Buffer.allocUnsafeSlow,
   * or a prefix of such a buffer: the whole ArrayBuffer moves, and comes back whole in
   * `data.buffer`, for reuse).
   */
  hash(data: Buffer, blockSize: number): Promise<{ hashes: Buffer[]; data: Buffer }> {
    const worker = this.pick();
    if (worker instanceof Error) return Promise.reject(worker);
    return this.send(worker, data, { blockSize });
  }

  /** A digest of a whole stream of bytes, hashed in one of the threads (the least busy now). */
  stream(): DigestStream {
    const picked = this.pick();
    const stream = this.nextStream++;
    let ended = false;
    const run = (data: Buffer, final: boolean) => {
      if (picked instanceof Error) return Promise.reject(picked);
      if (ended) return Promise.reject(new Error('the digest stream is over'));
      ended = final;
      return this.send(picked, data, { blockSize: 0, stream, final });
    };
    return {
      update: async (data) => (await run(data, false)).data,
      digest: async () => Buffer.from((await run(Buffer.allocUnsafeSlow(0), true)).hashes[0]!),
    };
  }

  private pick(): Worker | Error {
    if (this.closed) return new Error('the hash pool is closed');
    if (this.workers.length === 0) return new Error('every hashing thread has failed');
    let worker = this.workers[0]!;
    for (const w of this.workers) if (this.load.get(w)! < this.load.get(worker)!) worker = w;
    return worker;
  }

  private send(worker: Worker, data: Buffer, how: { blockSize: number; stream?: number; final?: boolean }): Promise<{ hashes: Buffer[]; data: Buffer }> {
    if (this.closed) return Promise.reject(new Error('the hash pool is closed'));
    if (!this.workers.includes(worker)) return Promise.reject(new Error('the hashing thread of this stream has failed'));
    if (data.byteOffset !== 0 || data.buffer.byteLength < data.length || data.buffer instanceof SharedArrayBuffer) {
      // Not transferable as is (a slice of a pooled buffer): send a copy.
      const own = Buffer.allocUnsafeSlow(data.length);
      data.copy(own);
      data = own;
    }
    this.load.set(worker, this.load.get(worker)! + 1);
    const id = this.nextId++;
    const req: HashRequest = { id, data: data.buffer as ArrayBuffer, length: data.length, ...how };
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, worker });
      worker.postMessage(req, [req.data]);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.values()) p.reject(new Error('the hash pool was closed'));
    this.pending.clear();
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  private settle(w: Worker, reply: HashReply): void {
    const p = this.pending.get(reply.id);
    if (!p) return;
    this.pending.delete(reply.id);
    this.load.set(w, Math.max(0, this.load.get(w)! - 1));
    const all = Buffer.from(reply.hashes);
    const hashes: Buffer[] = [];
    for (let i = 0; i < all.length; i += 32) hashes.push(all.subarray(i, i + 32));
    p.resolve({ hashes, data: Buffer.from(reply.data, 0, reply.length) });
  }

  /** A thread that failed takes its requests with it and leaves the pool. */
  private failWorker(w: Worker, err: Error): void {
    const at = this.workers.indexOf(w);
    if (at >= 0) this.workers.splice(at, 1);
    for (const [id, p] of this.pending) {
      if (p.worker !== w) continue;
      this.pending.delete(id);
      p.reject(err);
    }
  }
}
