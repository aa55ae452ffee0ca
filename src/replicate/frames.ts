// Framing of the replication protocol (docs/protocol.md): every message is one frame,
//
//   +----------------+--------+---------------------+
//   | length: u32 BE | type:u8| body: length-1 bytes|
//   +----------------+--------+---------------------+
//
// `length` counts the type byte and the body. Control messages carry UTF-8 JSON bodies;
// block data is carried raw. Pure code: no I/O, so that the transports (a pipe, ssh, TCP)
// and the fault tests share one decoder.

/** Message types. Values are part of the wire format: never renumber. */
export const FrameType = {
  hello: 0x01,
  welcome: 0x02,
  auth: 0x03,
  begin: 0x10,
  file: 0x11,
  hashes: 0x12,
  need: 0x13,
  block: 0x14,
  end: 0x15,
  confirmed: 0x16,
  state: 0x17,
  filesEnd: 0x18,
  applied: 0x19,
  zblock: 0x1a,
  origin: 0x1b,
  originEnd: 0x1c,
  rebased: 0x1d,
  error: 0x7f,
} as const;

export type FrameTypeName = keyof typeof FrameType;

const NAME_OF_TYPE = new Map<number, FrameTypeName>(
  (Object.entries(FrameType) as Array<[FrameTypeName, number]>).map(([name, code]) => [code, name]),
);

/** Types whose body is JSON. The others carry binary bodies. */
const JSON_TYPES: ReadonlySet<FrameTypeName> = new Set(['hello', 'welcome', 'auth', 'begin', 'file', 'end', 'confirmed', 'state', 'filesEnd', 'applied', 'origin', 'originEnd', 'rebased', 'error']);

/** The largest frame either side accepts: a 1 MiB block with its header, with room to spare. */
export const MAX_FRAME = 2 * 1024 * 1024;
/** The largest JSON body: file metadata (names, xattrs) stays well below. */
export const MAX_JSON = 1024 * 1024;

export interface Frame {
  type: FrameTypeName;
  body: Buffer;
}

/** Why a peer's bytes were refused. Always permanent: retrying sends the same bytes. */
export type ProtocolErrorReason = 'oversized' | 'empty' | 'unknown-type' | 'truncated' | 'bad-json';

export class ProtocolError extends Error {
  constructor(readonly reason: ProtocolErrorReason, message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export function encodeFrame(type: FrameTypeName, body: Buffer): Buffer {
  if (body.length + 1 > MAX_FRAME) throw new ProtocolError('oversized', `a ${type} frame of ${body.length + 1} bytes is over the limit of ${MAX_FRAME}`);
  const head = Buffer.allocUnsafe(5);
  head.writeUInt32BE(body.length + 1, 0);
  head[4] = FrameType[type];
  return Buffer.concat([head, body]);
}

/** The header of a frame whose body is `head` followed by `bodyLength - head.length` more bytes. */
export function frameHead(type: FrameTypeName, head: Buffer, bodyLength: number): Buffer {
  if (bodyLength + 1 > MAX_FRAME) throw new ProtocolError('oversized', `a ${type} frame of ${bodyLength + 1} bytes is over the limit of ${MAX_FRAME}`);
  const out = Buffer.allocUnsafe(5 + head.length);
  out.writeUInt32BE(bodyLength + 1, 0);
  out[4] = FrameType[type];
  head.copy(out, 5);
  return out;
}

export function encodeJson(type: FrameTypeName, value: unknown): Buffer {
  if (!JSON_TYPES.has(type)) throw new TypeError(`${type} frames do not carry JSON`);
  const body = Buffer.from(JSON.stringify(value), 'utf8');
  if (body.length > MAX_JSON) throw new ProtocolError('oversized', `a ${type} message of ${body.length} bytes is over the JSON limit of ${MAX_JSON}`);
  return encodeFrame(type, body);
}

/** The JSON body of a frame, checked for size and syntax (not for shape: callers do that). */
export function decodeJson(frame: Frame): unknown {
  if (!JSON_TYPES.has(frame.type)) throw new ProtocolError('bad-json', `${frame.type} frames do not carry JSON`);
  if (frame.body.length > MAX_JSON) throw new ProtocolError('oversized', `a ${frame.type} message of ${frame.body.length} bytes is over the JSON limit of ${MAX_JSON}`);
  try {
    return JSON.parse(frame.body.toString('utf8')) as unknown;
  } catch {
    throw new ProtocolError('bad-json', `a ${frame.type} message is not valid JSON`);
  }
}

/**
 * Cuts a byte stream into frames. Feed it chunks as they arrive; it returns the frames
 * completed so far and keeps the rest. It refuses a frame as soon as its header is wrong,
 * before its body arrives, so an oversized length never makes it buffer.
 */
export class FrameDecoder {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private failed: ProtocolError | null = null;

  push(chunk: Buffer): Frame[] {
    if (this.failed) throw this.failed;
    if (chunk.length > 0) {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      if (this.pendingBytes < 5) {
        if (this.pendingBytes >= 4) this.checkLength(this.peek(4).readUInt32BE(0));
        return frames;
      }
      const head = this.peek(5);
      const length = head.readUInt32BE(0);
      this.checkLength(length);
      const name = NAME_OF_TYPE.get(head[4]!);
      if (!name) return this.fail('unknown-type', `unknown frame type 0x${head[4]!.toString(16).padStart(2, '0')}`);
      if (this.pendingBytes < 4 + length) return frames;
      const whole = this.take(4 + length);
      frames.push({ type: name, body: whole.subarray(5) });
    }
  }

  /** The stream ended: anything left over is a truncated frame. */
  end(): void {
    if (this.failed) throw this.failed;
    if (this.pendingBytes > 0) this.fail('truncated', `the stream ended inside a frame (${this.pendingBytes} bytes of it arrived)`);
  }

  private checkLength(length: number): void {
    if (length === 0) this.fail('empty', 'a frame has length 0 (it must hold at least its type)');
    if (length > MAX_FRAME) this.fail('oversized', `a frame of ${length} bytes is over the limit of ${MAX_FRAME}`);
  }

  private fail(reason: ProtocolErrorReason, message: string): never {
    this.failed = new ProtocolError(reason, message);
    this.pending = [];
    this.pendingBytes = 0;
    throw this.failed;
  }

  private peek(n: number): Buffer {
    if (this.pending[0]!.length < n) this.pending = [Buffer.concat(this.pending)];
    return this.pending[0]!.subarray(0, n);
  }

  private take(n: number): Buffer {
    if (this.pending[0]!.length < n) this.pending = [Buffer.concat(this.pending)];
    const first = this.pending[0]!;
    const out = first.subarray(0, n);
    if (first.length === n) this.pending.shift();
    else this.pending[0] = first.subarray(n);
    this.pendingBytes -= n;
    return out;
  }
}
