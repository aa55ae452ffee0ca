// The replication protocol's framing: a table of byte streams, each fed to the decoder
// whole and also one byte at a time, with the frames or the error each must give.
import test from '../helpers/ava.js';
import {
  FrameDecoder, FrameType, MAX_FRAME, MAX_JSON, ProtocolError, decodeJson, encodeFrame, encodeJson,
  type Frame, type ProtocolErrorReason,
} from '../../src/replicate/frames.js';

const header = (length: number, type: number) => {
  const b = Buffer.alloc(5);
  b.writeUInt32BE(length, 0);
  b[4] = type;
  return b;
};

/** Decodes `stream`, in one push or split into `chunk`-byte pushes, then ends it. */
function decodeAll(stream: Buffer, chunk = stream.length): Frame[] {
  const d = new FrameDecoder();
  const out: Frame[] = [];
  for (let at = 0; at < stream.length; at += Math.max(1, chunk)) out.push(...d.push(stream.subarray(at, at + Math.max(1, chunk))));
  d.end();
  return out;
}

const hello = encodeJson('hello', { protocol: 'replfs', version: 1 });
const block = encodeFrame('block', Buffer.alloc(65536 + 16, 7));

const good: Array<[string, Buffer, Array<[string, number]>]> = [
  ['nothing', Buffer.alloc(0), []],
  ['one JSON frame', hello, [['hello', hello.length - 5]]],
  ['a frame with an empty body', encodeFrame('need', Buffer.alloc(0)), [['need', 0]]],
  ['a block frame', block, [['block', 65536 + 16]]],
  ['three frames back to back', Buffer.concat([hello, block, hello]), [['hello', hello.length - 5], ['block', 65536 + 16], ['hello', hello.length - 5]]],
  ['a frame of exactly the limit', encodeFrame('block', Buffer.alloc(MAX_FRAME - 1)), [['block', MAX_FRAME - 1]]],
];

for (const [title, stream, expected] of good) {
  for (const chunk of [stream.length, 1, 7, 4096]) {
    test(`frames: ${title} (pushed ${chunk === stream.length ? 'whole' : `${chunk} bytes at a time`})`, (t) => {
      t.deepEqual(decodeAll(stream, chunk).map((f) => [f.type, f.body.length]), expected);
    });
  }
}

test('frames: bodies arrive intact', (t) => {
  const body = Buffer.from(Array.from({ length: 1000 }, (_, i) => i & 0xff));
  const [f] = decodeAll(Buffer.concat([encodeFrame('hashes', body)]), 3);
  t.true(f!.body.equals(body));
  t.deepEqual(decodeJson(decodeAll(hello)[0]!), { protocol: 'replfs', version: 1 });
});

const bad: Array<[string, Buffer, ProtocolErrorReason, RegExp]> = [
  ['a length over the limit, refused from its header alone', header(MAX_FRAME + 1, FrameType.block), 'oversized', /over the limit/],
  ['a length of 4 GiB - 1', header(0xffffffff, FrameType.block), 'oversized', /over the limit/],
  ['a length of 0', header(0, FrameType.hello), 'empty', /length 0/],
  ['an unknown type', Buffer.concat([header(2, 0x55), Buffer.from([1])]), 'unknown-type', /unknown frame type 0x55/],
  ['type 0', Buffer.concat([header(1, 0)]), 'unknown-type', /0x00/],
  ['a stream cut inside the length', hello.subarray(0, 3), 'truncated', /ended inside a frame/],
  ['a stream cut inside the body', hello.subarray(0, hello.length - 1), 'truncated', /ended inside a frame/],
  ['a good frame, then a cut one', Buffer.concat([hello, block.subarray(0, 100)]), 'truncated', /100 bytes/],
];

for (const [title, stream, reason, message] of bad) {
  for (const chunk of [stream.length, 1]) {
    test(`frames refused: ${title} (pushed ${chunk === stream.length ? 'whole' : 'byte by byte'})`, (t) => {
      const err = t.throws(() => decodeAll(stream, chunk), { instanceOf: ProtocolError });
      t.is(err?.reason, reason);
      t.regex(err?.message ?? '', message);
    });
  }
}

test('frames: a decoder that refused a stream refuses everything after', (t) => {
  const d = new FrameDecoder();
  t.throws(() => d.push(header(0, 1)), { instanceOf: ProtocolError });
  t.throws(() => d.push(hello), { instanceOf: ProtocolError });
  t.throws(() => d.end(), { instanceOf: ProtocolError });
});

test('frames: JSON bodies are checked', (t) => {
  t.is(t.throws(() => decodeJson({ type: 'hello', body: Buffer.from('{nope') }), { instanceOf: ProtocolError })?.reason, 'bad-json');
  t.is(t.throws(() => decodeJson({ type: 'block', body: Buffer.from('{}') }), { instanceOf: ProtocolError })?.reason, 'bad-json');
  t.is(t.throws(() => decodeJson({ type: 'file', body: Buffer.alloc(MAX_JSON + 1, 0x20) }), { instanceOf: ProtocolError })?.reason, 'oversized');
  t.throws(() => encodeJson('file', { pad: 'x'.repeat(MAX_JSON) }), { instanceOf: ProtocolError });
  t.throws(() => encodeJson('block', {}), { instanceOf: TypeError });
  t.throws(() => encodeFrame('block', Buffer.alloc(MAX_FRAME)), { instanceOf: ProtocolError });
});
