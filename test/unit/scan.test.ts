// The tree walk behind `init` and the mount-time scan: one readdirStat per directory, times
// compared as numbers. What it finds must be exactly what an lstat of each entry gives,
// in both syscall modes.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from '../helpers/ava.js';
import { Backing, joinRel } from '../../src/volume/backing.js';
import { FileTable } from '../../src/volume/files.js';
import { Journal } from '../../src/volume/journal.js';
import { inlineSyscalls } from '../../src/volume/io.js';
import { Store } from '../../src/volume/store.js';
import { Volume } from '../../src/volume/volume.js';
import { DB_DIR, STATE_DIR, blocksPerRegion, type FileRecord } from '../../src/volume/format.js';
import { nsEquals, nsString, reconcile, recordFromRow, recordFromStat, relOf, walk, type ReconcileResult } from '../../src/volume/scan.js';
import { mknod, readdirIno, utimensat } from '../../src/volume/sys.js';
import type { FileId } from '../../src/core/types.js';

function tmp(t: { teardown(fn: () => unknown): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replfs-scan-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs `fn` with syscalls inline (as in processes that serve no mount) or on the thread pool. */
async function inMode<T>(inline: boolean, fn: () => Promise<T>): Promise<T> {
  inlineSyscalls(inline);
  try { return await fn(); } finally { inlineSyscalls(false); }
}

const ns = (sec: number, nsec: number) => (BigInt(sec) * 1_000_000_000n + BigInt(nsec)).toString();

test('nsString and nsEquals agree with BigInt arithmetic', (t) => {
  const cases: Array<[number, number]> = [
    [1796192898, 806867320], [1, 0], [1, 1], [123, 999_999_999], [0, 0], [0, 5], [0, 999_999_999],
    [-1, 0], [-1, 500_000_000], [-5, 250_000_000], [2 ** 40, 7], [1e15 - 1, 3], [1e15, 3], [2 ** 52, 1],
  ];
  for (const [sec, nsec] of cases) {
    const s = ns(sec, nsec);
    t.is(nsString(sec, nsec), s, `${sec}.${nsec}`);
    t.true(nsEquals(s, sec, nsec), `${s} equals ${sec}.${nsec}`);
    t.false(nsEquals(ns(sec, nsec + 1), sec, nsec));
    t.false(nsEquals(ns(sec + 1, nsec), sec, nsec));
    t.false(nsEquals(`0${s}`, sec, nsec), 'a leading zero is not the same string');
    t.false(nsEquals(`${s}0`, sec, nsec));
    t.false(nsEquals(s.slice(1), sec, nsec));
    t.false(nsEquals('', sec, nsec));
  }
  t.false(nsEquals('1x00000000', 1, 0));
  t.false(nsEquals('1000000000 ', 1, 0));
  t.true(nsEquals('1000000000', 1, 0));
  t.false(nsEquals(undefined as unknown as string, 1, 0), 'a damaged record never matches');
  t.false(nsEquals(1000000000 as unknown as string, 1, 0));
});

/** What the walk found, entry by entry: path, parent's path and the record a scan would make. */
type Visited = Array<[rel: string, parent: string, rec: FileRecord]>;

async function walked(root: string): Promise<Visited> {
  const fd = fs.openSync(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    const backing = new Backing(fd, root);
    const out: Visited = [];
    const pathOf = new Map<FileId, string>([[1, '']]);
    let next = 2;
    await walk(backing, new Set([STATE_DIR]), (e) => {
      const fid = next++;
      pathOf.set(fid, relOf(e));
      out.push([relOf(e), pathOf.get(e.parent)!, recordFromRow(e.stats, e.at, [])]);
      return fid;
    });
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/** The same through readdir and one lstat per entry, breadth first in directory order. */
async function expected(root: string): Promise<Visited> {
  const out: Visited = [];
  const queue = [''];
  while (queue.length > 0) {
    const dir = queue.shift()!;
    for (const name of (await readdirIno(path.join(root, dir))).names) {
      if (dir === '' && name === STATE_DIR) continue;
      const rel = joinRel(dir, name);
      const st = fs.lstatSync(path.join(root, rel), { bigint: true });
      out.push([rel, dir, recordFromStat(st, [])]);
      if (st.isDirectory()) queue.push(rel);
    }
  }
  return out;
}

test.serial('walk: every entry, breadth first in directory order, with what an lstat of it gives, in both syscall modes', async (t) => {
  const root = tmp(t);
  fs.mkdirSync(path.join(root, STATE_DIR));
  fs.writeFileSync(path.join(root, STATE_DIR, 'skipped'), '');
  fs.writeFileSync(path.join(root, 'file'), 'data');
  fs.linkSync(path.join(root, 'file'), path.join(root, 'hardlink'));
  fs.symlinkSync('file', path.join(root, 'symlink'));
  await mknod(path.join(root, 'fifo'), fs.constants.S_IFIFO | 0o644, 0);
  fs.mkdirSync(path.join(root, 'a/b/c'), { recursive: true });
  fs.mkdirSync(path.join(root, 'empty'));
  for (let i = 0; i < 50; i++) fs.writeFileSync(path.join(root, 'a', `f${i}`), 'x'.repeat(i));
  fs.writeFileSync(path.join(root, 'a/b/c/ünïcödé'), '');
  fs.writeFileSync(path.join(root, 'a/b/old'), '');
  await utimensat(path.join(root, 'a/b/old'), 0, 0, -3, 999_999_999, false);
  fs.writeFileSync(path.join(root, 'a/b/epoch'), '');
  await utimensat(path.join(root, 'a/b/epoch'), 0, 0, 0, 1, false);

  const want = await expected(root);
  t.is(want.length, 61);
  t.deepEqual(await inMode(false, () => walked(root)), want, 'on the thread pool');
  t.deepEqual(await inMode(true, () => walked(root)), want, 'inline');
});

test.serial('walk: a name that is not UTF-8 fails as an lstat of its converted name does, in both syscall modes', async (t) => {
  const root = tmp(t);
  fs.mkdirSync(path.join(root, 'sub'));
  fs.writeFileSync(Buffer.concat([Buffer.from(`${root}/sub/bad`), Buffer.from([0xfe])]), '');
  const fd = fs.openSync(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  t.teardown(() => fs.closeSync(fd));
  const backing = new Backing(fd, root);
  const lossy = backing.abs('sub/bad\ufffd');
  const lstatError = t.throws(() => fs.lstatSync(lossy)) as NodeJS.ErrnoException;
  for (const inline of [false, true]) {
    const err = await inMode(inline, () => t.throwsAsync(walk(backing, new Set(), () => 2)));
    t.is(err?.message, lstatError.message, inline ? 'inline' : 'on the thread pool');
    t.is((err as NodeJS.ErrnoException).code, 'ENOENT');
  }
});

test.serial('walk: refuses a nested protected directory', async (t) => {
  const root = tmp(t);
  fs.mkdirSync(path.join(root, 'inner', STATE_DIR), { recursive: true });
  const fd = fs.openSync(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  t.teardown(() => fs.closeSync(fd));
  for (const inline of [false, true]) {
    const err = await inMode(inline, () => t.throwsAsync(walk(new Backing(fd, root), new Set([STATE_DIR]), () => 2)));
    t.regex(err?.message ?? '', /inner\/\.replfs exists: protected directories cannot be nested/);
  }
});

/** What a writable open's scan would journal and write, computed without writing anything. */
async function scanOnce(root: string, beforeRemove?: (rel: string, fid: FileId) => Promise<void>): Promise<{ result: ReconcileResult; ops: unknown[]; recorded: Array<[FileId, FileRecord]> }> {
  const fd = fs.openSync(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  const backing = new Backing(fd, root);
  const store = await Store.open(`${backing.stateDir()}/${DB_DIR}`, { create: false });
  try {
    const recorded = new Map<FileId, FileRecord>();
    const files = await FileTable.load(store, (fid, rec) => recorded.set(fid, rec));
    const config = JSON.parse(fs.readFileSync(path.join(root, STATE_DIR, 'config.json'), 'utf8')) as { blockSize: number };
    const journal = await Journal.load(store, 1, config.blockSize, blocksPerRegion(config.blockSize));
    const result = await reconcile(backing, files, journal, recorded, beforeRemove);
    const ops = result.ops.map((op) => (op.type === 'put' ? [op.sub, op.key, Buffer.from(op.value).toString('utf8')] : [op.sub, op.key]));
    return { result, ops, recorded: [...recorded] };
  } finally {
    await store.close();
    fs.closeSync(fd);
  }
}

test.serial('reconcile: both syscall modes find the same changes and write the same', async (t) => {
  const root = tmp(t);
  const w = (rel: string, content: string) => {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), content);
  };
  for (const rel of ['same', 'edit', 'touch', 'rename', 'move', 'delete', 'sub/x', 'gone/y', 'link1', 'pair1']) w(rel, rel);
  fs.linkSync(path.join(root, 'pair1'), path.join(root, 'sub/pair2'));
  for (let i = 0; i < 20; i++) w(`victims/v${i}`, `victim ${i}`);
  await Volume.init(root);
  await (await Volume.open(root, { writable: true })).volume.close();

  w('edit', 'edited');
  await utimensat(path.join(root, 'touch'), 0, 0, 1_000_000_000, 5, false);
  fs.renameSync(path.join(root, 'rename'), path.join(root, 'renamed'));
  fs.renameSync(path.join(root, 'move'), path.join(root, 'sub/moved'));
  fs.unlinkSync(path.join(root, 'delete'));
  fs.rmSync(path.join(root, 'gone'), { recursive: true });
  fs.linkSync(path.join(root, 'link1'), path.join(root, 'sub/link2'));
  fs.unlinkSync(path.join(root, 'sub/pair2'));
  w('new/born', 'born');
  // Freed inode numbers are handed out again: the birth time tells the new files apart.
  for (let i = 0; i < 20; i++) fs.unlinkSync(path.join(root, `victims/v${i}`));
  for (let i = 0; i < 20; i++) w(`victims/n${i}`, `new ${i}`);

  const pool = await inMode(false, () => scanOnce(root));
  const inline = await inMode(true, () => scanOnce(root));
  t.deepEqual(inline, pool);
  const { ops, examples, ...counts } = pool.result;
  t.true(ops.length > 0);
  t.is(examples.length, 10);
  // Without birth times, a reused inode number passes for the file that had it.
  if (fs.lstatSync(root, { bigint: true }).birthtimeNs > 0n) {
    // Changed: edit, touch, and the ctime of rename, move, link1 (a new link) and pair1 (one less).
    t.deepEqual(counts, { created: 22, changed: 6, moved: 4, deleted: 23 });
  }
});

test.serial('reconcile: a .fuse_hidden leftover is removed, after the caller hears of it with its id', async (t) => {
  const root = tmp(t);
  fs.writeFileSync(path.join(root, 'open-then-unlinked'), 'x');
  fs.mkdirSync(path.join(root, '.fuse_hidden00000000000000aa'));
  await Volume.init(root);
  const { volume } = await Volume.open(root, { writable: true });
  const fid = volume.files.fidOfIno(fs.lstatSync(path.join(root, 'open-then-unlinked')).ino)!;
  await volume.close();
  fs.renameSync(path.join(root, 'open-then-unlinked'), path.join(root, '.fuse_hidden0123456789abcdef'));
  fs.writeFileSync(path.join(root, '.fuse_hidden00000000000000bb'), 'unknown');
  const heard: Array<[string, FileId]> = [];
  const { result } = await scanOnce(root, async (rel, id) => { heard.push([rel, id]); });
  t.deepEqual(heard, [['.fuse_hidden0123456789abcdef', fid]]);
  t.false(fs.existsSync(path.join(root, '.fuse_hidden0123456789abcdef')));
  t.false(fs.existsSync(path.join(root, '.fuse_hidden00000000000000bb')));
  t.true(fs.existsSync(path.join(root, '.fuse_hidden00000000000000aa')), 'a directory of that name is left alone');
  t.is(result.deleted, 1, 'the leftover\'s file is gone');
  t.is(result.created, 0, 'neither leftover counts as a new file');
});
