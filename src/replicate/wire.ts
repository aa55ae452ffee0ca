// The sync's requests over a connection (docs/protocol.md, section 4): RemoteReceiver is
// the sender's handle on a receiver at the other end; serveReceiver answers those frames
// with a local Receiver. Blocks are streamed without answers; every other request waits
// for its answer, and an `error` frame from either side ends the sync.
import type { FileId } from '../core/types.js';
import { ReplfsError, messageOf } from '../errors/index.js';
import type { FileChange } from './changes.js';
import { Connection, ConnectionError, accept } from './connection.js';
import { ProtocolError, decodeJson, encodeFrame, type Frame, type FrameTypeName } from './frames.js';
import type { Begin, ReceiverApi, ReceiverState } from './receiver.js';

/** Most hashes in one `hashes` frame (a 1 MiB range of 4 KiB blocks). */
const MAX_HASHES = 256;

export class RemoteReceiver implements ReceiverApi {
  constructor(private readonly conn: Connection) {}

  async begin(b: Begin): Promise<ReceiverState> {
    await this.conn.sendJson('begin', b);
    const state = (await this.answer('state')) as Partial<ReceiverState>;
    if (typeof state.replicaId !== 'string' || !/^[A-Za-z0-9-]{1,64}$/.test(state.replicaId)) {
      throw new ProtocolError('bad-json', 'the receiver named no valid replica id');
    }
    return { replicaId: state.replicaId, base: state.base ?? null };
  }

  async files(changes: FileChange[]): Promise<void> {
    for (const c of changes) await this.conn.sendJson('file', c);
    await this.conn.sendJson('filesEnd', { count: changes.length });
    await this.answer('applied');
  }

  async compare(fid: FileId, offset: number, blockSize: number, length: number, hashes: Buffer[]): Promise<number[]> {
    const needed: number[] = [];
    for (let at = 0; at < hashes.length; at += MAX_HASHES) {
      const part = hashes.slice(at, at + MAX_HASHES);
      const head = Buffer.alloc(28);
      head.writeBigUInt64BE(BigInt(fid), 0);
      head.writeBigUInt64BE(BigInt(offset + at * blockSize), 8);
      head.writeUInt32BE(blockSize, 16);
      head.writeUInt32BE(part.length, 20);
      head.writeUInt32BE(Math.min(length - at * blockSize, part.length * blockSize), 24);
      await this.conn.send(encodeFrame('hashes', Buffer.concat([head, ...part])));
      const frame = await this.next('need');
      for (const i of decodeNeed(frame.body, part.length)) needed.push(at + i);
    }
    return needed;
  }

  async write(fid: FileId, offset: number, data: Buffer): Promise<void> {
    const head = Buffer.alloc(16);
    head.writeBigUInt64BE(BigInt(fid), 0);
    head.writeBigUInt64BE(BigInt(offset), 8);
    await this.conn.send(encodeFrame('block', Buffer.concat([head, data])));
  }

  async finish(): Promise<{ replicaSnapshot: string }> {
    await this.conn.sendJson('end', {});
    return (await this.answer('confirmed')) as { replicaSnapshot: string };
  }

  private async next(type: FrameTypeName): Promise<Frame> {
    const frame = await this.conn.next();
    if (frame.type === 'error') throw remoteError(frame);
    if (frame.type !== type) throw new ProtocolError('unknown-type', `expected ${type} from the receiver, got ${frame.type}`);
    return frame;
  }

  private async answer(type: FrameTypeName): Promise<unknown> {
    return decodeJson(await this.next(type));
  }
}

function remoteError(frame: Frame): ReplfsError {
  const body = decodeJson(frame) as { code?: unknown; message?: unknown; transient?: unknown };
  const message = `the destination refused: ${String(body.message ?? 'no reason given')}`;
  return new ReplfsError(body.transient === true ? 'unavailable' : 'refused', message);
}

function decodeNeed(body: Buffer, count: number): number[] {
  if (body.length < 4) throw new ProtocolError('truncated', 'a need frame without its count');
  const n = body.readUInt32BE(0);
  if (body.length !== 4 + 4 * n || n > count) throw new ProtocolError('bad-json', 'a malformed need frame');
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const v = body.readUInt32BE(4 + 4 * i);
    if (v >= count) throw new ProtocolError('bad-json', 'a need frame names a block that was not offered');
    out.push(v);
  }
  return out;
}

/**
 * Answers one sender on `conn` with `receiver` (made once `begin` arrives), from the
 * handshake to the confirmation. Any failure is sent to the sender as an `error` frame and
 * thrown; the replica's snapshots are untouched by a failed sync.
 */
export async function serveReceiver(conn: Connection, makeReceiver: (target: string | null) => Promise<ReceiverApi>, opts: { software: string; token?: string }): Promise<{ replicaSnapshot: string | null }> {
  const { target } = await accept(conn, opts);
  let receiver: ReceiverApi | null = null;
  const files: FileChange[] = [];
  try {
    for (;;) {
      let frame: Frame;
      try {
        frame = await conn.next();
      } catch (err) {
        // The sender hung up after `begin` with nothing to send: the destination was current.
        if (err instanceof ConnectionError && err.code === 'closed' && files.length === 0) return { replicaSnapshot: null };
        throw err;
      }
      switch (frame.type) {
        case 'begin': {
          if (receiver) throw new ProtocolError('unknown-type', 'a second begin');
          receiver = await makeReceiver(target);
          await conn.sendJson('state', await receiver.begin(decodeJson(frame) as Begin));
          break;
        }
        case 'file':
          files.push(decodeJson(frame) as FileChange);
          break;
        case 'filesEnd':
          await need(receiver).files(files);
          await conn.sendJson('applied', {});
          break;
        case 'hashes': {
          const b = frame.body;
          if (b.length < 28) throw new ProtocolError('truncated', 'a short hashes frame');
          const blockSize = b.readUInt32BE(16);
          const count = b.readUInt32BE(20);
          const length = b.readUInt32BE(24);
          if (count > MAX_HASHES || b.length !== 28 + 32 * count || blockSize === 0 || blockSize > 16 << 20 || Math.ceil(length / blockSize) !== count) {
            throw new ProtocolError('bad-json', 'a malformed hashes frame');
          }
          const hashes: Buffer[] = [];
          for (let i = 0; i < count; i++) hashes.push(b.subarray(28 + 32 * i, 60 + 32 * i));
          const needed = await need(receiver).compare(Number(b.readBigUInt64BE(0)), Number(b.readBigUInt64BE(8)), blockSize, length, hashes);
          const out = Buffer.alloc(4 + 4 * needed.length);
          out.writeUInt32BE(needed.length, 0);
          needed.forEach((v, i) => out.writeUInt32BE(v, 4 + 4 * i));
          await conn.send(encodeFrame('need', out));
          break;
        }
        case 'block': {
          const b = frame.body;
          if (b.length < 16) throw new ProtocolError('truncated', 'a short block frame');
          await need(receiver).write(Number(b.readBigUInt64BE(0)), Number(b.readBigUInt64BE(8)), b.subarray(16));
          break;
        }
        case 'end': {
          const done = await need(receiver).finish();
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
    const transient = err instanceof ConnectionError ? err.transient : false;
    conn.sendError({ code: err instanceof ProtocolError ? 'protocol' : 'refused', message: messageOf(err), transient });
    throw err;
  }
}

function need(r: ReceiverApi | null): ReceiverApi {
  if (!r) throw new ProtocolError('unknown-type', 'a request before begin');
  return r;
}
