// The sync's requests over a connection (docs/protocol.md, section 4): RemoteReceiver is
// the sender's handle on a receiver at the other end; serveReceiver answers those frames
// with a local Receiver. Compare requests carry an id and are answered in any order, so a
// sender keeps many in flight; blocks are streamed without answers; every other request
// waits for its answer, and an `error` frame from either side ends the sync.
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import type { FileId, KeepPolicy } from '../core/types.js';
import { ReplfsError, hasCode, messageOf, type ExitCodeName } from '../errors/index.js';
import type { FileChange } from './changes.js';
import { Connection, ConnectionError, accept } from './connection.js';
import { ProtocolError, decodeJson, encodeFrame, frameHead, type Frame, type FrameTypeName } from './frames.js';
import type { Begin, FilesResult, FinishOptions, FinishResult, ListingNode, RebaseResult, ReceiverApi, ReceiverState, Space } from './receiver.js';

/** Most hashes in one `hashes` frame (a 1 MiB range of 4 KiB blocks). */
export const MAX_HASHES = 256;
/** Requests a receiver works on at once; beyond that it reads no more frames until one is done. */
const RECEIVER_WINDOW = 64;
/** A sender silent this long is gone (a change set of millions of files takes minutes to make). */
export const SENDER_IDLE_MS = 30 * 60_000;
const HASHES_HEAD = 32;
/** Files per origin frame of a failback's base listing. */
const LISTING_CHUNK = 2000;
/** The most files a base listing may hold (memory on the receiver). */
const MAX_LISTING = 50_000_000;

const deflate = promisify(zlib.deflateRaw);
const inflate = promisify(zlib.inflateRaw);

interface Waiter<T> {
  resolve: (v: T) => void;
  reject: (e: Error) => void;
}

export class RemoteReceiver implements ReceiverApi {
  private readonly needs = new Map<number, Waiter<number[]> & { count: number }>();
  private answer: (Waiter<Frame> & { type: FrameTypeName }) | null = null;
  private failure: Error | null = null;
  private nextId = 1;
  /** Settles once the receiver's frames stop (an error frame, or the connection's end). */
  private readonly reading: Promise<void>;

  constructor(private readonly conn: Connection, private readonly opts: { compress?: boolean; version?: number } = {}) {
    this.reading = this.read();
  }

  /**
   * The reason a request failed: a receiver that refuses sends an `error` frame and hangs
   * up, and a request being written then fails with the hang-up; what the receiver said is
   * the reason worth telling (once its frames are read, which takes a moment).
   */
  private async why(err: unknown): Promise<never> {
    if (err instanceof ConnectionError) {
      await Promise.race([this.reading, new Promise((r) => setTimeout(r, 2000))]);
      if (this.failure && !(this.failure instanceof ConnectionError)) throw this.failure;
    }
    throw err;
  }

  /** Bytes this connection carried, both ways. */
  get wireBytes(): number {
    return this.conn.bytesIn + this.conn.bytesOut;
  }

  async begin(b: Begin): Promise<ReceiverState> {
    await this.conn.sendJson('begin', b);
    const state = decodeJson(await this.expect('state')) as Partial<ReceiverState>;
    if (typeof state.replicaId !== 'string' || !/^[A-Za-z0-9-]{1,64}$/.test(state.replicaId)) {
      throw new ProtocolError('bad-json', 'the receiver named no valid replica id');
    }
    return {
      replicaId: state.replicaId, base: state.base ?? null, resume: state.resume ?? null, complete: state.complete === true,
      ...(typeof state.snapshot === 'string' ? { snapshot: state.snapshot } : {}),
      ...(isSpace(state.space) ? { space: state.space } : {}),
      ...(state.rebase === true ? { rebase: true } : {}),
    };
  }

  async rebase(nodes: ListingNode[]): Promise<RebaseResult> {
    try {
      for (let i = 0; i < nodes.length; i += LISTING_CHUNK) await this.conn.sendJson('origin', { nodes: nodes.slice(i, i + LISTING_CHUNK) });
      await this.conn.sendJson('originEnd', { count: nodes.length });
    } catch (err) {
      return this.why(err);
    }
    const r = decodeJson(await this.expect('rebased')) as Partial<RebaseResult>;
    return {
      kept: typeof r.kept === 'string' ? r.kept : null,
      reverted: { files: Number(r.reverted?.files ?? 0), bytesCopied: Number(r.reverted?.bytesCopied ?? 0) },
    };
  }

  async files(changes: FileChange[], complete: boolean): Promise<FilesResult> {
    try {
      for (const c of changes) await this.conn.sendJson('file', c);
      await this.conn.sendJson('filesEnd', { count: changes.length, complete });
    } catch (err) {
      return this.why(err);
    }
    const r = decodeJson(await this.expect('applied')) as Partial<FilesResult>;
    return { steps: Number(r.steps ?? 0), ...(Array.isArray(r.differences) ? { differences: r.differences, total: Number(r.total ?? r.differences.length) } : {}) };
  }

  compare(fid: FileId, offset: number, blockSize: number, length: number, hashes: Buffer[]): Promise<number[]> {
    return this.compareRanges(fid, offset, blockSize, length, hashes).catch((err) => this.why(err));
  }

  private async compareRanges(fid: FileId, offset: number, blockSize: number, length: number, hashes: Buffer[]): Promise<number[]> {
    const parts: Promise<number[]>[] = [];
    for (let at = 0; at < hashes.length; at += MAX_HASHES) {
      const part = hashes.slice(at, at + MAX_HASHES);
      const id = this.nextId++;
      const head = Buffer.alloc(HASHES_HEAD);
      head.writeUInt32BE(id, 0);
      head.writeBigUInt64BE(BigInt(fid), 4);
      head.writeBigUInt64BE(BigInt(offset + at * blockSize), 12);
      head.writeUInt32BE(blockSize, 20);
      head.writeUInt32BE(part.length, 24);
      head.writeUInt32BE(Math.min(length - at * blockSize, part.length * blockSize), 28);
      const answered = new Promise<number[]>((resolve, reject) => {
        if (this.failure) reject(this.failure);
        else this.needs.set(id, { resolve, reject, count: part.length });
      });
      answered.catch(() => undefined);
      await this.conn.send(encodeFrame('hashes', Buffer.concat([head, ...part])));
      parts.push(answered.then((idx) => idx.map((i) => at + i)));
    }
    return (await Promise.all(parts)).flat();
  }

  write(fid: FileId, offset: number, data: Buffer): Promise<void> {
    return this.sendBlock(fid, offset, data).catch((err) => this.why(err));
  }

  private async sendBlock(fid: FileId, offset: number, data: Buffer): Promise<void> {
    if (this.opts.compress) {
      const packed = await deflate(data, { level: 1 });
      if (packed.length < data.length * 0.9) {
        const head = Buffer.alloc(20);
        head.writeBigUInt64BE(BigInt(fid), 0);
        head.writeBigUInt64BE(BigInt(offset), 8);
        head.writeUInt32BE(data.length, 16);
        await this.conn.sendParts([frameHead('zblock', head, head.length + packed.length), packed]);
        return;
      }
    }
    const head = Buffer.alloc(16);
    head.writeBigUInt64BE(BigInt(fid), 0);
    head.writeBigUInt64BE(BigInt(offset), 8);
    // Resolved once the stream has handed `data` on: the sender reuses its memory.
    await this.conn.sendParts([frameHead('block', head, head.length + data.length), data], { flushed: true });
  }

  /** The protocol version agreed in the handshake. */
  get version(): number {
    return this.opts.version ?? 1;
  }

  async finish(opts: FinishOptions = {}): Promise<FinishResult> {
    // A receiver speaking protocol 1 knows nothing of retention: asking would be ignored.
    const body = opts.retention && this.version >= 2 ? { retention: opts.retention } : {};
    await this.conn.sendJson('end', body).catch((err) => this.why(err));
    const done = decodeJson(await this.expect('confirmed')) as { replicaSnapshot?: unknown; space?: unknown; pruned?: unknown };
    const out: FinishResult = { replicaSnapshot: typeof done.replicaSnapshot === 'string' ? done.replicaSnapshot : null };
    if (isSpace(done.space)) out.space = done.space;
    if (opts.retention && this.version < 2) out.pruned = { error: `the destination speaks protocol ${this.version}, which cannot prune` };
    else if (isPruned(done.pruned)) out.pruned = done.pruned;
    return out;
  }

  async abort(): Promise<void> {
    this.conn.destroy();
  }


  private expect(type: FrameTypeName): Promise<Frame> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<Frame>((resolve, reject) => { this.answer = { resolve, reject, type }; });
  }

  /** Reads every frame the receiver sends and hands it to whoever waits for it. */
  private async read(): Promise<void> {
    try {
      for (;;) {
        const frame = await this.conn.next();
        if (frame.type === 'error') throw remoteError(frame);
        if (frame.type === 'need') {
          const b = frame.body;
          if (b.length < 8) throw new ProtocolError('truncated', 'a need frame without its id and count');
          const id = b.readUInt32BE(0);
          const waiter = this.needs.get(id);
          if (!waiter) throw new ProtocolError('bad-json', `a need frame answers request ${id}, which is not open`);
          this.needs.delete(id);
          waiter.resolve(decodeNeed(b, waiter.count));
          continue;
        }
        const answer = this.answer;
        if (!answer || answer.type !== frame.type) throw new ProtocolError('unknown-type', `a ${frame.type} frame from the receiver out of place`);
        this.answer = null;
        answer.resolve(frame);
      }
    } catch (err) {
      this.fail(err as Error);
    }
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.answer?.reject(err);
    this.answer = null;
    for (const w of this.needs.values()) w.reject(err);
    this.needs.clear();
  }
}

function remoteError(frame: Frame): ReplfsError {
  const body = decodeJson(frame) as { code?: unknown; message?: unknown; transient?: unknown; hint?: unknown; exit?: unknown };
  const message = `the destination refused: ${String(body.message ?? 'no reason given')}`;
  const exit = body.transient === true ? 'unavailable'
    : typeof body.exit === 'string' && ['refused', 'notFound', 'busy', 'damaged', 'permission'].includes(body.exit) ? body.exit as ExitCodeName : 'refused';
  return new ReplfsError(exit, message, typeof body.hint === 'string' ? body.hint : undefined);
}

function decodeNeed(body: Buffer, count: number): number[] {
  const n = body.readUInt32BE(4);
  if (body.length !== 8 + 4 * n || n > count) throw new ProtocolError('bad-json', 'a malformed need frame');
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const v = body.readUInt32BE(8 + 4 * i);
    if (v >= count) throw new ProtocolError('bad-json', 'a need frame names a block that was not offered');
    out.push(v);
  }
  return out;
}

/** The fields of a `hashes` frame, checked. */
function decodeHashes(b: Buffer): { id: number; fid: number; offset: number; blockSize: number; length: number; hashes: Buffer[] } {
  if (b.length < HASHES_HEAD) throw new ProtocolError('truncated', 'a short hashes frame');
  const blockSize = b.readUInt32BE(20);
  const count = b.readUInt32BE(24);
  const length = b.readUInt32BE(28);
  if (count === 0 || count > MAX_HASHES || b.length !== HASHES_HEAD + 32 * count || blockSize === 0 || blockSize > 16 << 20 || Math.ceil(length / blockSize) !== count) {
    throw new ProtocolError('bad-json', 'a malformed hashes frame');
  }
  const hashes: Buffer[] = [];
  for (let i = 0; i < count; i++) hashes.push(b.subarray(HASHES_HEAD + 32 * i, HASHES_HEAD + 32 * (i + 1)));
  return { id: b.readUInt32BE(0), fid: safeU64(b, 4), offset: safeU64(b, 12), blockSize, length, hashes };
}

function safeU64(b: Buffer, at: number): number {
  const v = b.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError('bad-json', 'a number beyond 2^53 in a binary frame');
  return Number(v);
}

async function decodeBlock(frame: Frame): Promise<{ fid: number; offset: number; data: Buffer }> {
  const b = frame.body;
  if (frame.type === 'block') {
    if (b.length < 16) throw new ProtocolError('truncated', 'a short block frame');
    return { fid: safeU64(b, 0), offset: safeU64(b, 8), data: b.subarray(16) };
  }
  if (b.length < 20) throw new ProtocolError('truncated', 'a short zblock frame');
  const raw = b.readUInt32BE(16);
  if (raw === 0 || raw > 1 << 20) throw new ProtocolError('bad-json', 'a zblock frame of an impossible size');
  let data: Buffer;
  try {
    data = await inflate(b.subarray(20), { maxOutputLength: raw });
  } catch {
    throw new ProtocolError('bad-json', 'a zblock frame that does not inflate to its size');
  }
  if (data.length !== raw) throw new ProtocolError('bad-json', 'a zblock frame that does not inflate to its size');
  return { fid: safeU64(b, 0), offset: safeU64(b, 8), data };
}

/**
 * Answers one sender on `conn` with `receiver` (made once `begin` arrives), from the
 * handshake to the confirmation. Any failure is sent to the sender as an `error` frame and
 * thrown; the replica's snapshots are untouched by a failed sync.
 */
export async function serveReceiver(
  conn: Connection,
  makeReceiver: (target: string | null, begin: Begin) => Promise<ReceiverApi>,
  opts: { software: string; token?: string },
): Promise<{ replicaSnapshot: string | null }> {
  const { target } = await accept(conn, opts);
  let receiver: ReceiverApi | null = null;
  /** A failback's base listing, while it arrives. */
  let listing: ListingNode[] | null = null;
  const files: FileChange[] = [];
  let filesDone = false;
  // Compare and write requests under way, and the first of them to fail.
  const running = new Set<Promise<void>>();
  let failed: Error | null = null;
  const start = (work: () => Promise<void>) => {
    const p = work().catch((err: Error) => { failed ??= err; }).finally(() => running.delete(p));
    running.add(p);
  };
  const check = () => { if (failed) throw failed; };
  try {
    for (;;) {
      check();
      while (running.size >= RECEIVER_WINDOW) { await Promise.race(running); check(); }
      let frame: Frame;
      try {
        frame = await conn.next(SENDER_IDLE_MS);
      } catch (err) {
        // The sender hung up after `begin` with nothing to send: the destination was current.
        if (err instanceof ConnectionError && err.code === 'closed' && files.length === 0 && !filesDone) {
          await receiver?.abort();
          return { replicaSnapshot: null };
        }
        throw err;
      }
      switch (frame.type) {
        case 'begin': {
          if (receiver) throw new ProtocolError('unknown-type', 'a second begin');
          const begin = decodeJson(frame) as Begin;
          receiver = await makeReceiver(target, begin);
          const state = await receiver.begin(begin);
          if (state.rebase) listing = [];
          await conn.sendJson('state', state);
          break;
        }
        case 'origin': {
          if (!receiver || listing === null) throw new ProtocolError('unknown-type', 'an origin frame without a rebase');
          const body = decodeJson(frame) as { nodes?: unknown };
          if (!Array.isArray(body.nodes)) throw new ProtocolError('bad-json', 'an origin frame without nodes');
          for (const n of body.nodes) listing.push(n as ListingNode);
          if (listing.length > MAX_LISTING) throw new ProtocolError('bad-json', `a base listing of more than ${MAX_LISTING} files`);
          break;
        }
        case 'originEnd': {
          if (!receiver || listing === null) throw new ProtocolError('unknown-type', 'an originEnd frame without a rebase');
          const end = decodeJson(frame) as { count?: unknown };
          if (end.count !== listing.length) throw new ProtocolError('bad-json', `originEnd counts ${String(end.count)} files, ${listing.length} came`);
          await conn.sendJson('rebased', await receiver.rebase(listing));
          listing = null;
          break;
        }
        case 'file':
          if (filesDone) throw new ProtocolError('unknown-type', 'a file after filesEnd');
          need(receiver);
          files.push(decodeJson(frame) as FileChange);
          break;
        case 'filesEnd': {
          if (filesDone) throw new ProtocolError('unknown-type', 'a second filesEnd');
          const end = decodeJson(frame) as { count?: unknown; complete?: unknown };
          if (end.count !== files.length) throw new ProtocolError('bad-json', `filesEnd counts ${String(end.count)} files, ${files.length} came`);
          filesDone = true;
          await conn.sendJson('applied', await need(receiver).files(files, end.complete === true));
          break;
        }
        case 'hashes': {
          if (!filesDone) throw new ProtocolError('unknown-type', 'hashes before filesEnd');
          const h = decodeHashes(frame.body);
          const r = need(receiver);
          start(async () => {
            const needed = await r.compare(h.fid, h.offset, h.blockSize, h.length, h.hashes);
            const out = Buffer.alloc(8 + 4 * needed.length);
            out.writeUInt32BE(h.id, 0);
            out.writeUInt32BE(needed.length, 4);
            needed.forEach((v, i) => out.writeUInt32BE(v, 8 + 4 * i));
            await conn.send(encodeFrame('need', out));
          });
          break;
        }
        case 'block':
        case 'zblock': {
          if (!filesDone) throw new ProtocolError('unknown-type', 'a block before filesEnd');
          const r = need(receiver);
          start(async () => {
            const blk = await decodeBlock(frame);
            await r.write(blk.fid, blk.offset, blk.data);
          });
          break;
        }
        case 'end': {
          if (!filesDone) throw new ProtocolError('unknown-type', 'end before filesEnd');
          const retention = retentionOf(decodeJson(frame));
          while (running.size > 0) await Promise.race(running);
          check();
          const done = await need(receiver).finish(retention ? { retention } : {});
          await conn.sendJson('confirmed', done);
          conn.close();
          return done;
        }
        case 'error':
          throw remoteError(frame);
        default:
          throw new ProtocolError('unknown-type', `a ${frame.type} frame has no place here`);
      }
    }
  } catch (err) {
    await Promise.allSettled(running);
    await receiver?.abort(err).catch(() => undefined);
    // A full disk may clear up: the sender is told it may try again later.
    const full = hasCode(err, 'ENOSPC', 'EDQUOT');
    const transient = full || (err instanceof ConnectionError ? err.transient
      : err instanceof ReplfsError ? err.exit === 'unavailable' || err.exit === 'busy'
        : err instanceof ProtocolError && err.reason === 'truncated');
    const message = full ? `the destination is out of space (${messageOf(err)}); its earlier snapshots are intact` : messageOf(err);
    conn.sendError({
      code: err instanceof ProtocolError ? 'protocol' : full ? 'space' : 'refused', message, transient,
      ...(err instanceof ReplfsError ? { exit: err.exit, ...(err.hint ? { hint: err.hint } : {}) } : {}),
    });
    throw full ? new ReplfsError('unavailable', message) : err;
  }
}

function need(r: ReceiverApi | null): ReceiverApi {
  if (!r) throw new ProtocolError('unknown-type', 'a request before begin');
  return r;
}

function isSpace(v: unknown): v is Space {
  const o = v as Partial<Space> | null;
  return typeof o === 'object' && o !== null && Number.isSafeInteger(o.free) && Number.isSafeInteger(o.total) && o.free! >= 0 && o.total! >= 0;
}

function isPruned(v: unknown): v is FinishResult['pruned'] {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  if (typeof o.error === 'string') return true;
  return Array.isArray(o.removed) && o.removed.every((x) => typeof x === 'string') && Number.isSafeInteger(o.kept) && Number.isSafeInteger(o.bytesFreed);
}

const RETENTION_RULES = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'withinMs'] as const;

/** The retention an `end` frame asks for (protocol 2), checked: whole numbers, at least one rule. */
function retentionOf(body: unknown): KeepPolicy | null {
  if (typeof body !== 'object' || body === null) throw new ProtocolError('bad-json', 'an end frame that is not an object');
  const r = (body as { retention?: unknown }).retention;
  if (r === undefined || r === null) return null;
  if (typeof r !== 'object' || Array.isArray(r)) throw new ProtocolError('bad-json', 'the retention of an end frame is not an object');
  const out: KeepPolicy = {};
  for (const [k, v] of Object.entries(r as Record<string, unknown>)) {
    if (!(RETENTION_RULES as readonly string[]).includes(k)) throw new ProtocolError('bad-json', `unknown retention rule ${JSON.stringify(k)}`);
    if (!Number.isSafeInteger(v) || (v as number) < 1) throw new ProtocolError('bad-json', `retention rule ${k} is not a whole number of at least 1`);
    out[k as keyof KeepPolicy] = v as number;
  }
  if (Object.keys(out).length === 0) throw new ProtocolError('bad-json', 'a retention with no rule would delete every snapshot');
  return out;
}
