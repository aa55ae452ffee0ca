// The tar encoder and writer (src/archive/), checked by the system's GNU tar: each table
// case becomes an archive that `tar --xattrs -xpf` extracts for real (as root, owners
// kept), and the extracted tree is compared entry by entry with what the case asked for:
// type, mode, owner, mtime to the nanosecond, content, link targets, hard links sharing an
// inode, device numbers and extended attributes. Long names, large owner ids, times before
// 1970 and a member larger than 8 GiB (in a sparse archive file) go through pax records.
// The writer is checked for hard links, sockets, backpressure and failures on either side.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { ExecutionContext } from 'ava';
import test from '../helpers/ava.js';
import { run } from '../helpers/env.js';
import { BLOCK, RECORD, encodeHeader, endOfArchive, padding, paxRecords, paxTime, type TarEntry } from '../../src/archive/tar.js';
import { OutputError, ShortFileError, deviceNumbers, writeTar, type FileReader, type TreeNode, type TreeSource } from '../../src/archive/writer.js';
import * as sys from '../../src/volume/sys.js';

function tmp(t: ExecutionContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replfs-tar-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** An archive made by the encoder alone: each header, the data, its padding, the end. */
function archive(entries: Array<TarEntry & { data?: Buffer }>): Buffer {
  const parts: Buffer[] = [];
  let n = 0;
  for (const e of entries) {
    const { data, ...entry } = e;
    const h = encodeHeader(entry);
    parts.push(h);
    n += h.length;
    if (data) {
      parts.push(data, Buffer.alloc(padding(data.length)));
      n += data.length + padding(data.length);
    }
  }
  parts.push(endOfArchive(n));
  return Buffer.concat(parts);
}

/** GNU tar, extracting as root: owners, modes, times and every xattr kept. */
async function extract(t: ExecutionContext, file: string, into: string, members: string[] = [], warnings: RegExp[] = []): Promise<void> {
  fs.mkdirSync(into, { recursive: true });
  const r = await run('tar', ['--xattrs', "--xattrs-include=*", '--numeric-owner', '-xpf', file, '-C', into, ...members]);
  t.is(r.code, 0, `tar -x failed: ${r.stderr}`);
  const said = r.stderr.split('\n').filter((l) => l !== '' && !warnings.some((w) => w.test(l)));
  t.deepEqual(said, [], 'tar said nothing else');
}

const NS = 1_000_000_000n;
const mtimeNsOf = (e: TarEntry) => BigInt(e.mtime.sec) * NS + BigInt(e.mtime.nsec);

/** The extracted tree matches the entries: every field tar keeps. */
async function matches(t: ExecutionContext, root: string, entries: Array<TarEntry & { data?: Buffer }>): Promise<void> {
  const inodes = new Map<string, bigint>();
  for (const e of entries) {
    const p = e.path === '' ? root : path.join(root, e.path);
    const what = e.path || '(top)';
    const st = await fsp.lstat(p, { bigint: true });
    inodes.set(e.path, st.ino);
    if (e.type === 'hardlink') {
      t.is(st.ino, inodes.get(e.link!) ?? -1n, `${what} is a hard link of ${e.link}`);
      continue;
    }
    const kind = { file: st.isFile(), dir: st.isDirectory(), symlink: st.isSymbolicLink(), fifo: st.isFIFO(), chardev: st.isCharacterDevice(), blockdev: st.isBlockDevice() }[e.type];
    t.true(kind, `${what} is a ${e.type}`);
    if (e.type !== 'symlink') t.is(Number(st.mode) & 0o7777, e.mode, `${what} mode`);
    t.is(Number(st.uid), e.uid, `${what} uid`);
    t.is(Number(st.gid), e.gid, `${what} gid`);
    // GNU tar sets a symlink's own times too (lutimes).
    t.is(st.mtimeNs, mtimeNsOf(e), `${what} mtime`);
    if (e.type === 'file') t.true((await fsp.readFile(p)).equals(e.data ?? Buffer.alloc(0)), `${what} content`);
    if (e.type === 'symlink') t.is(await fsp.readlink(p), e.link ?? '', `${what} target`);
    if (e.type === 'chardev' || e.type === 'blockdev') t.deepEqual(deviceNumbers(Number(st.rdev)), { devmajor: e.devmajor, devminor: e.devminor }, `${what} device`);
    if (e.type !== 'symlink') {
      const names = (await sys.llistxattr(p)).filter((n) => n.startsWith('user.')).sort();
      t.deepEqual(names, (e.xattrs ?? []).map(([n]) => n).sort(), `${what} xattr names`);
      for (const [n, v] of e.xattrs ?? []) t.true((await sys.lgetxattr(p, n)).equals(v), `${what} xattr ${n}`);
    }
  }
}

const T = (sec: number, nsec = 0) => ({ sec, nsec });
const base = { mode: 0o644, uid: 0, gid: 0, size: 0, mtime: T(1_600_000_000) };
const file = (p: string, data: string | Buffer, more: Partial<TarEntry> = {}): TarEntry & { data: Buffer } => {
  const b = Buffer.from(data);
  return { ...base, path: p, type: 'file', size: b.length, data: b, ...more };
};
const dir = (p: string, more: Partial<TarEntry> = {}): TarEntry => ({ ...base, mode: 0o755, path: p, type: 'dir', ...more });

const long = (c: string, n: number) => c.repeat(n);

const CASES: Array<{ title: string; entries: Array<TarEntry & { data?: Buffer }>; warnings?: RegExp[] }> = [
  {
    title: 'every type, with modes, owners and times',
    entries: [
      dir('', { mode: 0o750, mtime: T(1_500_000_000, 5) }),
      file('plain.txt', 'hello\n', { uid: 1234, gid: 5678, mtime: T(1_234_567_890, 123_456_789) }),
      file('empty', '', { mode: 0o600 }),
      file('setuid', '#!/bin/sh\n', { mode: 0o4755 }),
      file('block-multiple', Buffer.alloc(3 * BLOCK, 0xab)),
      file('binary', Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 31) & 0xff))),
      dir('sticky', { mode: 0o1777, uid: 42, gid: 43, mtime: T(1_000_000_000, 999_999_999) }),
      dir('sticky/sub', { mode: 0o2750 }),
      file('sticky/sub/deep.txt', 'deep\n'),
      { ...base, path: 'link', type: 'symlink', mode: 0o777, link: 'plain.txt', mtime: T(1_400_000_000, 1) },
      { ...base, path: 'dangling', type: 'symlink', mode: 0o777, link: '../nowhere/at all' },
      { ...base, path: 'fifo', type: 'fifo', mode: 0o640 },
      { ...base, path: 'null', type: 'chardev', mode: 0o666, devmajor: 1, devminor: 3 },
      { ...base, path: 'loop', type: 'blockdev', mode: 0o660, devmajor: 7, devminor: 200 },
      { ...base, path: 'bigminor', type: 'chardev', mode: 0o600, devmajor: 4000, devminor: 1_000_000 },
    ],
  },
  {
    title: 'long and unusual names: ustar split, pax paths, UTF-8, spaces and newlines',
    entries: [
      dir(''),
      // "./" + 98 = exactly 100 bytes: the name field alone.
      file(long('a', 98), 'a'),
      // Over 100 bytes with a slash to split at: prefix and name.
      dir(long('p', 80)),
      file(`${long('p', 80)}/${long('n', 60)}`, 'split'),
      // A component over 100 bytes: only a pax path can hold it.
      dir(long('d', 120)),
      dir(`${long('d', 120)}/${long('e', 200)}`),
      file(`${long('d', 120)}/${long('e', 200)}/${long('f', 250)}`, 'very deep'),
      // 187 bytes of UTF-8 in one name (a name may have 255).
      file(`${'日本語'.repeat(20)}-é.txt`, 'utf8'),
      file('with space and\nnewline', 'odd'),
      file('100-percent%=equal', 'pct'),
    ],
  },
  {
    title: 'links: hard links by path, long link targets, UTF-8 targets',
    entries: [
      dir(''),
      dir(long('x', 150)),
      file(`${long('x', 150)}/first`, 'shared\n', { mode: 0o640, uid: 7, gid: 8, mtime: T(1_700_000_000, 42) }),
      { ...base, path: 'second', type: 'hardlink', link: `${long('x', 150)}/first` },
      { ...base, path: `${long('y', 120)}`, type: 'hardlink', link: `${long('x', 150)}/first` },
      { ...base, path: 'far', type: 'symlink', mode: 0o777, link: `${long('../', 40)}target-${long('t', 100)}` },
      { ...base, path: 'utf8-link', type: 'symlink', mode: 0o777, link: 'ünïcödé/目標' },
    ],
  },
  {
    title: 'numbers past ustar: owner ids over 2097151, times before 1970 and after 2242',
    entries: [
      dir(''),
      file('big-ids', 'ids', { uid: 3_000_000, gid: 4_000_000_000 }),
      file('before-1970', 'old', { mtime: T(-2, 500_000_000) }),
      file('epoch', 'zero', { mtime: T(0, 0) }),
      file('year-2300', 'future', { mtime: T(10_413_792_000, 7) }),
    ],
    // GNU tar extracts such times, and says so.
    warnings: [/^tar: \.\/before-1970: implausibly old time stamp 1969-12-31 23:59:59\.5$/, /^tar: \.\/year-2300: time stamp 2300-01-01 00:00:00\.000000007 is [\d.]+ s in the future$/],
  },
  {
    title: 'extended attributes: binary values, empty values, odd names, on files and directories',
    entries: [
      dir('', { xattrs: [['user.top', Buffer.from('of the tree')]] }),
      file('tagged', 'x', { xattrs: [['user.a', Buffer.from('plain')], ['user.bin', Buffer.from([0, 10, 255, 61, 37, 0])], ['user.empty', Buffer.alloc(0)]] }),
      file('odd-names', 'y', { xattrs: [['user.with=equals', Buffer.from('1')], ['user.100%', Buffer.from('2')], ['user.long', Buffer.alloc(3000, 0x61)]] }),
      dir('d', { mode: 0o700, xattrs: [['user.dir', Buffer.from('on a directory')]] }),
    ],
  },
];

for (const c of CASES) {
  test(`GNU tar extracts what the encoder wrote: ${c.title}`, async (t) => {
    const d = tmp(t);
    const file = path.join(d, 'a.tar');
    const bytes = archive(c.entries);
    t.is(bytes.length % RECORD, 0, 'whole records');
    fs.writeFileSync(file, bytes);
    await extract(t, file, path.join(d, 'out'), [], c.warnings);
    await matches(t, path.join(d, 'out'), c.entries);
    // And the listing has a line per member (tar quotes a newline in a name as \n).
    const list = await run('tar', ['-tf', file]);
    t.is(list.code, 0, list.stderr);
    t.is(list.stdout.trimEnd().split('\n').length, c.entries.length);
  });
}

test('a member of more than 8 GiB: its size goes in a pax record (and base-256), and the next member is found after it', async (t) => {
  const d = tmp(t);
  const file = path.join(d, 'big.tar');
  const size = 8 * 1024 ** 3 + 1234;
  const bigHeader = encodeHeader({ ...base, path: 'huge', type: 'file', size, mtime: T(1_650_000_000, 1) });
  t.true(bigHeader.includes(Buffer.from(` size=${size}\n`)), 'a pax size record');
  const ustar = bigHeader.subarray(bigHeader.length - BLOCK);
  t.is(ustar[124], 0x80, 'the ustar size field in base-256');
  t.is(ustar.readUIntBE(130, 6), size, 'holding the size');
  // The data is a hole in a sparse archive file; then another member, which tar seeks to.
  const fd = fs.openSync(file, 'w');
  fs.writeSync(fd, encodeHeader({ ...base, path: '', type: 'dir', mode: 0o755 }), 0, BLOCK, 0);
  let at = BLOCK;
  fs.writeSync(fd, bigHeader, 0, bigHeader.length, at);
  at += bigHeader.length;
  at += size + padding(size);
  const after = 'after the big one\n';
  const next = encodeHeader({ ...base, path: 'next.txt', type: 'file', size: after.length });
  fs.writeSync(fd, next, 0, next.length, at);
  at += next.length;
  fs.writeSync(fd, Buffer.from(after), 0, after.length, at);
  at += after.length + padding(after.length);
  const end = endOfArchive(at);
  fs.writeSync(fd, end, 0, end.length, at);
  fs.closeSync(fd);
  const list = await run('tar', ['-tvf', file]);
  t.is(list.code, 0, list.stderr);
  t.regex(list.stdout, new RegExp(` ${size} \\S+ \\S+ \\./huge\\n`), 'tar -tv lists the exact size');
  await extract(t, file, path.join(d, 'out'), ['./next.txt']);
  t.is(fs.readFileSync(path.join(d, 'out', 'next.txt'), 'utf8'), after, 'the member after it is where the size says');
});

test('pax records count their own length, across a change in the number of digits', (t) => {
  for (let n = 0; n < 1100; n += 7) {
    const rec = paxRecords([['k', 'v'.repeat(n)]]);
    t.is(Number(rec.toString('latin1').split(' ')[0]), rec.length, `value of ${n} bytes`);
  }
  t.is(paxTime(T(5, 0)), '5');
  t.is(paxTime(T(5, 120_000_000)), '5.12');
  t.is(paxTime(T(-2, 500_000_000)), '-1.5');
  t.is(paxTime(T(0, 1)), '0.000000001');
});

test('the encoder refuses entries it cannot write truthfully', (t) => {
  const bad: Array<Partial<TarEntry>> = [
    { path: '/abs' }, { path: 'a/../b' }, { path: 'a//b' }, { path: 'dir/' }, { path: 'nul\0' },
    { uid: -1 }, { size: 1.5 }, { type: 'dir', size: 10 }, { type: 'symlink' }, { link: 'x' },
    { mtime: T(1, 1e9) }, { type: 'chardev', devmajor: 2 ** 22 }, { xattrs: [['', Buffer.alloc(0)]] },
  ];
  for (const b of bad) t.throws(() => encodeHeader({ ...base, path: 'x', type: 'file', ...b } as TarEntry), { instanceOf: RangeError }, JSON.stringify(b));
});

// ---------------------------------------------------------------- the writer

interface FakeFile extends Omit<TreeNode, 'xattrs' | 'nlink' | 'rdev' | 'uid' | 'gid' | 'identity' | 'size'> {
  data?: Buffer | ((pos: number, len: number) => Buffer);
  size?: number;
  identity?: number;
  nlink?: number;
  rdev?: number;
  xattrs?: Array<[string, Buffer]>;
  /** The reader fails with this once it gets past this many bytes. */
  failAt?: number;
  /** The reader ends early, after this many bytes. */
  shortAt?: number;
}

/** A tree in memory, counting how many files are open. */
class FakeTree implements TreeSource {
  open_ = 0;
  opened = 0;
  constructor(private readonly nodes: FakeFile[]) {}

  async *walk(): AsyncGenerator<TreeNode> {
    let id = 1;
    for (const n of this.nodes) {
      const size = n.size ?? (Buffer.isBuffer(n.data) ? n.data.length : 0);
      yield { uid: 0, gid: 0, nlink: 1, rdev: 0, xattrs: [], ...n, size, identity: n.identity ?? id++ } as TreeNode;
    }
  }

  async open(node: TreeNode): Promise<FileReader> {
    const n = this.nodes.find((x) => x.path === node.path)!;
    this.open_++;
    this.opened++;
    return {
      read: async (buf, len, pos) => {
        if (n.failAt !== undefined && pos + len > n.failAt) throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
        const end = Math.min(node.size, n.shortAt ?? Infinity, pos + len);
        if (end <= pos) return 0;
        const src = typeof n.data === 'function' ? n.data(pos, end - pos) : n.data!.subarray(pos, end);
        src.copy(buf, 0, 0, end - pos);
        return end - pos;
      },
      close: async () => { this.open_--; },
    };
  }
}

/** A writable that collects what it is given, slowly, tracking how much was ever waiting in it. */
class Collector extends Writable {
  readonly chunks: Buffer[] = [];
  maxWaiting = 0;
  total = 0;
  constructor(private readonly opts: { delayMs?: number; failAfter?: number; hwm?: number } = {}) {
    super({ highWaterMark: opts.hwm ?? 16 * 1024 });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.maxWaiting = Math.max(this.maxWaiting, this.writableLength);
    this.total += chunk.length;
    if (this.opts.failAfter !== undefined && this.total > this.opts.failAfter) {
      cb(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));
      return;
    }
    this.chunks.push(chunk);
    setTimeout(() => cb(), this.opts.delayMs ?? 0);
  }
}

const node = (p: string, type: TreeNode['type'], more: Partial<FakeFile> = {}): FakeFile =>
  ({ path: p, type, mode: type === 'dir' ? 0o40755 : 0o100644, mtime: T(1_600_000_000, 250), ...more });

test('the writer: hard links become link members naming the first path, sockets are left out, GNU tar extracts the tree', async (t) => {
  const d = tmp(t);
  const tree = new FakeTree([
    node('', 'dir'),
    node('a', 'file', { data: Buffer.from('linked\n'), identity: 99, nlink: 3, xattrs: [['user.k', Buffer.from('v')]] }),
    node('b', 'dir'),
    node('b/again', 'file', { data: Buffer.from('linked\n'), identity: 99, nlink: 3 }),
    node('b/sock', 'socket', { mode: 0o140755 }),
    node('b/third', 'file', { data: Buffer.from('linked\n'), identity: 99, nlink: 3 }),
    node('single', 'file', { data: Buffer.from('one name\n'), nlink: 1 }),
    node('dev', 'chardev', { mode: 0o20644, rdev: 0x0103 }),
  ]);
  const out = new Collector();
  const skipped: string[] = [];
  const report = await writeTar(tree, out, { onSkip: (n) => skipped.push(n.path) });
  t.deepEqual(skipped, ['b/sock']);
  t.deepEqual(report.skipped, [{ path: 'b/sock', type: 'socket' }]);
  t.like(report, { entries: 7, files: 2, dirs: 2, links: 2, dataBytes: 16 });
  t.is(tree.opened, 2, 'a hard link is not read again');
  t.is(tree.open_, 0, 'every file closed');
  const bytes = Buffer.concat(out.chunks);
  t.is(bytes.length, report.archiveBytes);
  fs.writeFileSync(path.join(d, 'w.tar'), bytes);
  const root = path.join(d, 'out');
  await extract(t, path.join(d, 'w.tar'), root);
  const ino = (p: string) => fs.lstatSync(path.join(root, p)).ino;
  t.is(ino('b/again'), ino('a'));
  t.is(ino('b/third'), ino('a'));
  t.not(ino('single'), ino('a'));
  t.is(fs.lstatSync(path.join(root, 'a')).nlink, 3);
  t.is(fs.readFileSync(path.join(root, 'b/third'), 'utf8'), 'linked\n');
  t.false(fs.existsSync(path.join(root, 'b/sock')));
  t.deepEqual(deviceNumbers(Number(fs.lstatSync(path.join(root, 'dev')).rdev)), { devmajor: 1, devminor: 3 });
  t.is((await sys.lgetxattr(path.join(root, 'a'), 'user.k')).toString(), 'v');
  t.is(fs.lstatSync(path.join(root, 'a'), { bigint: true }).mtimeNs, 1_600_000_000_000_000_250n);
});

test('the writer waits for a slow output: what waits in it stays under a chunk plus its buffer, whatever the file size', async (t) => {
  const chunk = 64 * 1024;
  const size = 64 * 1024 * 1024 + 77;
  const pattern = (pos: number, len: number) => {
    const b = Buffer.allocUnsafe(len);
    for (let i = 0; i < len; i++) b[i] = ((pos + i) * 7) & 0xff;
    return b;
  };
  const tree = new FakeTree([node('', 'dir'), node('big', 'file', { size, data: pattern })]);
  const out = new Collector({ hwm: 16 * 1024 });
  let peak = 0;
  const sampler = setInterval(() => { peak = Math.max(peak, out.writableLength); }, 1);
  try {
    const report = await writeTar(tree, out, { chunkSize: chunk });
    t.is(report.dataBytes, size);
  } finally {
    clearInterval(sampler);
  }
  // A chunk, on top of what the stream buffers before it says "wait" and at most a record of headers or end.
  const bound = chunk + 16 * 1024 + RECORD;
  t.true(out.maxWaiting <= bound, `at most ${bound} bytes ever waited in the output, saw ${out.maxWaiting}`);
  t.true(peak <= bound, `sampled: ${peak}`);
  // The data arrived whole and in order.
  const all = Buffer.concat(out.chunks);
  const headerOf = (p: string, type: 'dir' | 'file', size: number) => encodeHeader({ ...base, path: p, type, size, mtime: T(1_600_000_000, 250) }).length;
  const dataAt = headerOf('', 'dir', 0) + headerOf('big', 'file', size);
  t.true(all.subarray(dataAt, dataAt + 1000).equals(pattern(0, 1000)));
  t.true(all.subarray(dataAt + size - 1000, dataAt + size).equals(pattern(size - 1000, 1000)));
});

test('the writer: an output that fails is an OutputError, and no file is left open', async (t) => {
  const tree = new FakeTree([node('', 'dir'), node('f', 'file', { size: 8 * 1024 * 1024, data: (_p, len) => Buffer.alloc(len, 1) }), node('g', 'file', { data: Buffer.from('x') })]);
  const out = new Collector({ failAfter: 3 * 1024 * 1024 });
  out.on('error', () => undefined);
  const err = await t.throwsAsync(writeTar(tree, out, { chunkSize: 1024 * 1024 }), { instanceOf: OutputError });
  t.is(err?.code, 'ENOSPC');
  t.is(tree.open_, 0, 'the reader was closed');
  t.is(tree.opened, 1, 'nothing more was read');
});

test('the writer: a source that fails half way fails the archive with its own error; a file shorter than it said is a ShortFileError', async (t) => {
  const failing = new FakeTree([node('', 'dir'), node('f', 'file', { size: 5 * 1024 * 1024, data: (_p, len) => Buffer.alloc(len, 2), failAt: 3 * 1024 * 1024 })]);
  const e1 = await t.throwsAsync(writeTar(failing, new Collector(), { chunkSize: 1024 * 1024 }));
  t.is((e1 as NodeJS.ErrnoException).code, 'EIO');
  t.false(e1 instanceof OutputError);
  t.is(failing.open_, 0);
  const short = new FakeTree([node('', 'dir'), node('s', 'file', { size: 1000, data: Buffer.alloc(1000, 3), shortAt: 600 })]);
  const e2 = await t.throwsAsync(writeTar(short, new Collector()), { instanceOf: ShortFileError });
  t.regex(e2!.message, /^s: the file ended after 600 of 1000 bytes/);
  t.is(short.open_, 0);
});

test('device numbers split as glibc does', (t) => {
  t.deepEqual(deviceNumbers(0x0103), { devmajor: 1, devminor: 3 });
  t.deepEqual(deviceNumbers(0x0700 | 200), { devmajor: 7, devminor: 200 });
  // makedev(4000, 1000000) = (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12) | ((major & ~0xfff) << 32)
  const rdev = Number((1_000_000n & 0xffn) | ((4000n & 0xfffn) << 8n) | ((1_000_000n & ~0xffn) << 12n));
  t.deepEqual(deviceNumbers(rdev), { devmajor: 4000, devminor: 1_000_000 });
});
