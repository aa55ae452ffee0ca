// The opening of a replication connection over a real TCP socket on 127.0.0.1: the
// receiver's checks against good and hostile senders. Each case gets its own server.
import net from 'node:net';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import { Connection, ConnectionError, accept, greet } from '../../src/replicate/connection.js';
import { FrameType, MAX_FRAME, ProtocolError, encodeJson } from '../../src/replicate/frames.js';
import { PROTOCOL_VERSIONS } from '../../src/replicate/handshake.js';

const TOKEN = 'a-long-random-token-for-tests';

interface Served {
  port: number;
  /** What the receiver's accept() ended with, per connection. */
  outcomes: Promise<string>[];
}

/** A receiver on an ephemeral port of 127.0.0.1 that only does the handshake. */
async function receiver(t: ExecutionContext, token?: string, timeoutMs = 2000): Promise<Served> {
  const outcomes: Promise<string>[] = [];
  const server = net.createServer((socket) => {
    const conn = new Connection(socket);
    outcomes.push(accept(conn, { software: 'test', timeoutMs, ...(token === undefined ? {} : { token }) }).then(
      (w) => { conn.close(); return `welcome ${w.version}`; },
      (err: Error) => (err instanceof ConnectionError || err instanceof ProtocolError ? `refused ${'code' in err ? err.code : err.reason}` : `crashed ${err.message}`),
    ));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.address() as net.AddressInfo).port, outcomes };
}

function dial(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

/** Sends raw bytes, then returns everything the receiver answers until it hangs up. */
async function raw(port: number, bytes: Buffer, endAfter = true): Promise<Buffer> {
  const s = await dial(port);
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  s.write(bytes);
  if (endAfter) s.end();
  await new Promise<void>((resolve) => s.on('close', () => resolve()));
  return Buffer.concat(chunks);
}

/** The code of an `error` frame, or what else the bytes were. */
function errorCode(answer: Buffer): string {
  if (answer.length < 5) return answer.length === 0 ? 'nothing' : 'a partial frame';
  if (answer[4] !== FrameType.error) return `frame type ${answer[4]}`;
  return (JSON.parse(answer.subarray(5, 4 + answer.readUInt32BE(0)).toString('utf8')) as { code: string }).code;
}

const NEWEST = PROTOCOL_VERSIONS[PROTOCOL_VERSIONS.length - 1]!;

test('a sender with the token is welcomed with the newest version both speak', async (t) => {
  t.is(NEWEST, 2);
  const r = await receiver(t, TOKEN);
  const conn = new Connection(await dial(r.port));
  t.deepEqual(await greet(conn, 'test', TOKEN), { version: NEWEST, software: 'test' });
  conn.close();
  t.is(await r.outcomes[0], `welcome ${NEWEST}`);
});

test('a sender that speaks only version 1 is welcomed with version 1', async (t) => {
  const r = await receiver(t);
  const answer = await raw(r.port, encodeJson('hello', { protocol: 'replfs', versions: [1], software: 'old' }), false);
  t.is(answer[4], FrameType.welcome);
  t.is((JSON.parse(answer.subarray(5, 4 + answer.readUInt32BE(0)).toString('utf8')) as { version: number }).version, 1);
  t.is(await r.outcomes[0], 'welcome 1');
});

test('without a token required, no token is needed', async (t) => {
  const r = await receiver(t);
  const conn = new Connection(await dial(r.port));
  t.is((await greet(conn, 'test')).version, NEWEST);
  conn.close();
});

test('a wrong token and a missing token get the same answer, and nothing else', async (t) => {
  const r = await receiver(t, TOKEN);
  const answers: Buffer[] = [];
  for (const token of ['wrong', undefined, TOKEN.slice(0, -1)]) {
    const body = { protocol: 'replfs', versions: [1], software: 'x', ...(token === undefined ? {} : { token }) };
    answers.push(await raw(r.port, encodeJson('hello', body), false));
  }
  t.is(errorCode(answers[0]!), 'auth');
  t.true(answers.every((a) => a.equals(answers[0]!)), 'byte for byte the same refusal');
  t.regex(answers[0]!.toString('utf8'), /authentication failed/);
  t.deepEqual(await Promise.all(r.outcomes), ['refused auth', 'refused auth', 'refused auth']);
  const conn = new Connection(await dial(r.port));
  const err = await t.throwsAsync(greet(conn, 'test', 'wrong'), { instanceOf: ConnectionError });
  t.is(err?.code, 'auth');
  t.false(err?.transient);
});

test('a sender that speaks only a future version is refused with the versions named', async (t) => {
  const r = await receiver(t);
  const answer = await raw(r.port, encodeJson('hello', { protocol: 'replfs', versions: [NEWEST + 1, NEWEST + 2], software: 'future' }), false);
  t.is(errorCode(answer), 'version');
  t.true(answer.toString('utf8').includes(`this side speaks ${PROTOCOL_VERSIONS.join(', ')}, the peer ${NEWEST + 1}, ${NEWEST + 2}`));
  t.is(await r.outcomes[0], 'refused version');
});

const hostile: Array<[string, Buffer, string, string]> = [
  ['an HTTP request (its first bytes read as a 1.2 GB length)', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), 'protocol', 'refused oversized'],
  ['a frame one byte over the limit, announced in its header', (() => { const b = Buffer.alloc(5); b.writeUInt32BE(MAX_FRAME + 1, 0); b[4] = FrameType.block; return b; })(), 'protocol', 'refused oversized'],
  ['an unknown frame type', Buffer.from([0, 0, 0, 1, 0x42]), 'protocol', 'refused unknown-type'],
  ['a frame of length 0', Buffer.from([0, 0, 0, 0]), 'protocol', 'refused empty'],
  ['a hello cut short, then the end of the stream', encodeJson('hello', { protocol: 'replfs', versions: [1] }).subarray(0, 12), 'nothing', 'refused truncated'],
  ['a hello that is not JSON', Buffer.concat([Buffer.from([0, 0, 0, 6, FrameType.hello]), Buffer.from('{nope')]), 'protocol', 'refused protocol'],
  ['a welcome sent by the wrong side', encodeJson('welcome', { version: 1 }), 'protocol', 'refused protocol'],
];

for (const [title, bytes, answerCode, outcome] of hostile) {
  test(`refused cleanly: ${title}`, async (t) => {
    const r = await receiver(t);
    const answer = await raw(r.port, bytes);
    t.is(errorCode(answer), answerCode);
    t.is(await r.outcomes[0], outcome);
  });
}

test('a sender that connects and says nothing is dropped after the handshake timeout', async (t) => {
  const r = await receiver(t, TOKEN, 300);
  const began = Date.now();
  const answer = await raw(r.port, Buffer.alloc(0), false);
  t.is(errorCode(answer), 'timeout');
  t.true(Date.now() - began < 5000);
  t.is(await r.outcomes[0], 'refused timeout');
});
