// A real `replfs serve --stdio` child against a hostile sender speaking the protocol by
// hand: every malformed or escaping change is refused with a protocol error, nothing is
// written outside the replica or inside it, and the replica still takes a good sync after.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Duplex } from 'node:stream';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import { BIN, scratch, replfs, initVolume, describeTree, type Scratch } from '../helpers/env.js';
import { Connection, greet } from '../../src/replicate/connection.js';
import { decodeJson, encodeFrame, type Frame } from '../../src/replicate/frames.js';

interface Served {
  conn: Connection;
  exit: Promise<number | null>;
  stderr: () => string;
}

async function serve(t: ExecutionContext, dir: string): Promise<Served> {
  const child = spawn(process.execPath, [BIN, 'serve', '--stdio', dir], { stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => { child.kill('SIGKILL'); });
  let err = '';
  child.stderr.on('data', (c: Buffer) => { err += c.toString(); });
  const exit = new Promise<number | null>((resolve) => child.on('close', resolve));
  const conn = new Connection(Duplex.from({ readable: child.stdout, writable: child.stdin }));
  await greet(conn, 'hostile');
  return { conn, exit, stderr: () => err };
}

const SNAP = { name: '2026-11-25T10-00-00Z', sourceTime: '2026-11-25T10:00:00.000Z', label: null, consistency: 'crash' };
const ATTR = { mode: 0o100644, uid: 0, gid: 0, size: 4, rdev: 0, atime: '0', mtime: '0' };
const file = (fid: number, names: unknown, extra: Record<string, unknown> = {}) => ({ fid, node: { type: 'file', names }, attr: ATTR, extents: [], ...extra });

/** Begins a sync as a fresh source, sends `changes`, and returns the receiver's answer. */
async function offer(s: Served, changes: unknown[], after?: (conn: Connection) => Promise<void>): Promise<Frame> {
  await s.conn.sendJson('begin', { sourceVolumeId: 'hostile-volume', snapshot: SNAP, blockSize: 4096, mode: 'sync', force: false });
  const state = await s.conn.next(5000);
  if (state.type !== 'state') return state;
  for (const c of changes) await s.conn.sendJson('file', c);
  await s.conn.sendJson('filesEnd', { count: changes.length });
  const applied = await s.conn.next(5000).catch((e: Error) => ({ type: 'closed', body: Buffer.from(e.message) }) as unknown as Frame);
  if (applied.type !== 'applied' || !after) return applied;
  await after(s.conn);
  return s.conn.next(5000);
}

function untouched(t: ExecutionContext, s: Scratch, replica: string): void {
  t.deepEqual(fs.readdirSync(replica).filter((n) => n !== '.replfs'), [], 'nothing was made in the replica');
  t.deepEqual(fs.readdirSync(s.dir).sort(), ['.run', 'replica', 'src'].sort(), 'nothing was made next to it');
}

const hostile: Array<[string, unknown[]]> = [
  ['a name of ..', [file(2, [[1, '..']])]],
  ['a name with a slash', [file(2, [[1, '../escape']])]],
  ['an absolute path as a name', [file(2, [[1, '/etc/replfs-test-escape']])]],
  ['a name with NUL', [file(2, [[1, 'a\u0000b']])]],
  ['an empty name', [file(2, [[1, '']])]],
  ['file id 0', [file(0, [[1, 'x']])]],
  ['a fractional file id', [file(2.5, [[1, 'x']])]],
  ['a name in a directory the replica does not have', [file(2, [[99, 'x']])]],
  ['the root renamed', [{ fid: 1, node: { type: 'dir', names: [[1, 'r']] }, attr: ATTR, extents: [] }]],
  ['a file named twice in one change set', [file(2, [[1, 'x']]), file(2, [[1, 'y']])]],
  ['a directory with two names', [{ fid: 2, node: { type: 'dir', names: [[1, 'a'], [1, 'b']] }, attr: ATTR, extents: [] }]],
  ['attributes that are not numbers', [file(2, [[1, 'x']], { attr: { ...ATTR, mode: 'rwx' } })]],
  ['an unknown type', [{ fid: 2, node: { type: 'socket-ish', names: [[1, 'x']] }, attr: ATTR, extents: [] }]],
  ['extents that are not numbers', [file(2, [[1, 'x']], { extents: [{ offset: -1, length: 5 }] })]],
];

for (const [title, changes] of hostile) {
  test(`a hostile change set is refused: ${title}`, async (t) => {
    const s = scratch(t);
    const replica = path.join(s.dir, 'replica');
    fs.mkdirSync(path.join(s.dir, 'src'));
    const served = await serve(t, replica);
    const answer = await offer(served, changes);
    t.is(answer.type, 'error', `answered ${answer.type}`);
    if (answer.type === 'error') t.false((decodeJson(answer) as { transient: boolean }).transient);
    t.not(await served.exit, 0, 'serve exits non-zero');
    untouched(t, s, replica);
    t.false(fs.existsSync('/etc/replfs-test-escape'));

    // Not left half way: a real sync into the same replica works afterwards.
    const src = path.join(s.dir, 'src');
    fs.writeFileSync(path.join(src, 'f'), 'good');
    await initVolume(t, s, src);
    const r = await replfs(s, ['sync', src, replica]);
    t.is(r.code, 0, r.stderr);
    t.is(fs.readFileSync(path.join(replica, 'f'), 'utf8'), 'good');
  });
}

test('a block written past the file\'s new size is refused', async (t) => {
  const s = scratch(t);
  const replica = path.join(s.dir, 'replica');
  fs.mkdirSync(path.join(s.dir, 'src'));
  const served = await serve(t, replica);
  const answer = await offer(served, [file(2, [[1, 'x']], { extents: [{ offset: 0, length: 4 }] })], async (conn) => {
    const head = Buffer.alloc(16);
    head.writeBigUInt64BE(2n, 0);
    head.writeBigUInt64BE(BigInt(1 << 30), 8);
    await conn.send(encodeFrame('block', Buffer.concat([head, Buffer.from('evil')])));
    await conn.sendJson('end', {});
  });
  t.is(answer.type, 'error');
  t.regex((decodeJson(answer) as { message: string }).message, /outside file 2/);
  await served.exit;
  t.regex(served.stderr(), /outside file 2/);
  t.true(!fs.existsSync(path.join(replica, 'x')) || fs.statSync(path.join(replica, 'x')).size === 0, 'no 1 GiB sparse file was made');
  t.deepEqual(await describeTree(replica).then((d) => Object.values(d).filter((e) => e.size > 4)), []);
});
