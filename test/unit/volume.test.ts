// The engine without FUSE: each operation called directly, the journal checked after.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import test from '../helpers/ava.js';
import { Volume } from '../../src/volume/volume.js';
import type { JournalFile } from '../../src/core/types.js';
import { ReplfsError } from '../../src/errors/index.js';
import { Store } from '../../src/volume/store.js';
import { Sublevel } from '../../src/volume/format.js';

const me = { uid: process.getuid!(), gid: process.getgid!(), pid: process.pid };
const { O_RDWR, O_WRONLY, O_CREAT } = fs.constants;

function tmp(t: { teardown(fn: () => unknown): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replfs-volume-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function openVolume(dir: string): Promise<Volume> {
  return (await Volume.open(dir, { writable: true })).volume;
}

async function files(v: Volume): Promise<Record<string, JournalFile>> {
  const r = await v.journalReport();
  return Object.fromEntries(r.files.map((f) => [f.path, f]));
}

async function writeAt(v: Volume, p: string, data: string | Buffer, pos: number): Promise<void> {
  const fd = await v.open(p, O_RDWR);
  const buf = Buffer.from(data);
  await v.write(fd, buf, buf.length, pos);
  await v.release(fd);
}

test('init records the tree and refuses a second init', async (t) => {
  const dir = tmp(t);
  fs.mkdirSync(path.join(dir, 'sub'));
  fs.writeFileSync(path.join(dir, 'sub', 'f'), 'abc');
  fs.linkSync(path.join(dir, 'sub', 'f'), path.join(dir, 'g'));
  const r = await Volume.init(dir, { blockSize: 4096 });
  t.is(r.files, 1, 'a hard-linked file counts once');
  t.is(r.dirs, 1);
  t.is(r.blockSize, 4096);
  const err = await t.throwsAsync(Volume.init(dir));
  t.true(err instanceof ReplfsError && err.exit === 'refused');
  const v = await openVolume(dir);
  t.deepEqual((await v.journalReport()).files, [], 'a fresh volume has an empty journal');
  await v.close();
});

test('init refuses bad block sizes and leaves no state behind', async (t) => {
  const dir = tmp(t);
  for (const bs of [1000, 2048, 2 * 1024 * 1024, 3 * 4096]) {
    const err = await t.throwsAsync(Volume.init(dir, { blockSize: bs }));
    t.true(err instanceof ReplfsError && err.exit === 'usage', String(bs));
  }
  t.deepEqual(fs.readdirSync(dir), []);
});

test('writes to an existing file are journaled as block extents', async (t) => {
  const dir = tmp(t);
  fs.writeFileSync(path.join(dir, 'db'), Buffer.alloc(1024 * 1024));
  await Volume.init(dir, { blockSize: 4096 });
  const v = await openVolume(dir);
  await writeAt(v, '/db', 'x', 5000);
  await writeAt(v, '/db', Buffer.alloc(8192, 1), 100 * 4096 + 10);
  const f = (await files(v)).db!;
  t.deepEqual(f.kinds, ['data']);
  t.deepEqual(f.extents, [{ offset: 4096, length: 4096 }, { offset: 409600, length: 12288 }]);
  t.is(f.dirtyBytes, 16384);
  t.is(f.unknown, null);
  await v.close();
  const again = await openVolume(dir);
  t.deepEqual((await files(again)).db!.extents, f.extents, 'the journal survives a clean close');
  await again.close();
});

test('create, rename, link, unlink, mkdir, rmdir, symlink, mknod are journaled with current paths', async (t) => {
  const dir = tmp(t);
  fs.mkdirSync(path.join(dir, 'old'));
  fs.writeFileSync(path.join(dir, 'old', 'keep'), 'k');
  fs.writeFileSync(path.join(dir, 'victim'), 'v');
  await Volume.init(dir);
  const v = await openVolume(dir);
  const fd = await v.create('/new', 0o644, O_WRONLY | O_CREAT, me);
  await v.write(fd, Buffer.from('hello'), 5, 0);
  await v.release(fd);
  await v.rename('/old', '/renamed');
  await v.link('/renamed/keep', '/keep2');
  await v.unlink('/victim');
  await v.mkdir('/d', 0o755, me);
  await v.symlink('new', '/ln', me);
  await v.mknod('/fifo', 0o010644, 0, me);
  await v.mkdir('/gone', 0o755, me);
  await v.rmdir('/gone');
  const f = await files(v);
  t.deepEqual(f.new!.kinds, ['created', 'data']);
  t.deepEqual(f.new!.extents, [{ offset: 0, length: 5 }]);
  t.deepEqual(f.renamed!.kinds, ['renamed']);
  t.is(f.renamed!.type, 'dir');
  t.deepEqual(f['renamed/keep']!.kinds, ['linked']);
  t.deepEqual(f['renamed/keep']!.paths.sort(), ['keep2', 'renamed/keep']);
  t.deepEqual(f.victim!.kinds, ['unlinked', 'deleted']);
  t.deepEqual(f.victim!.paths, []);
  t.is(f.d!.type, 'dir');
  t.is(f.ln!.type, 'symlink');
  t.is(f.fifo!.type, 'fifo');
  t.deepEqual(f.gone!.kinds, ['created', 'unlinked', 'deleted']);
  t.true(f['']!.kinds.includes('entries'), 'the root directory records that its entries changed');
  t.is(await v.readlink('/ln'), 'new');
  t.true((await v.getattr('/fifo')).mode === 0o010644);
  await v.close();
});

test('rename over an existing file records the replaced file as deleted', async (t) => {
  const dir = tmp(t);
  fs.writeFileSync(path.join(dir, 'a'), 'A');
  fs.writeFileSync(path.join(dir, 'b'), 'B');
  await Volume.init(dir);
  const v = await openVolume(dir);
  const before = await v.getattr('/b');
  await v.rename('/a', '/b');
  const report = await v.journalReport();
  const byKinds = report.files.map((f) => [f.path, f.kinds.join(',')]).sort();
  t.deepEqual(byKinds, [['', 'entries'], ['b', 'renamed'], ['b', 'unlinked,deleted']]);
  t.is(fs.readFileSync(path.join(dir, 'b'), 'utf8'), 'A');
  t.not((await v.getattr('/b')).ino, before.ino);
  await v.close();
});

test('truncate records the change and the lowest size; attributes and xattrs are journaled', async (t) => {
  const dir = tmp(t);
  fs.writeFileSync(path.join(dir, 'f'), Buffer.alloc(300_000, 7));
  await Volume.init(dir);
  const v = await openVolume(dir);
  await v.truncate('/f', 1000);
  await v.truncate('/f', 200_000);
  await v.chmod('/f', 0o600);
  await v.utimens('/f', { sec: 1_000_000_000, nsec: 123_456_789 }, { sec: 2_000_000_000, nsec: 987_654_321 });
  await v.setxattr('/f', 'user.k', Buffer.from('v'), 0);
  const f = (await files(v)).f!;
  t.deepEqual(f.kinds, ['truncated', 'attributes', 'xattrs']);
  t.is(f.size, 200_000);
  const st = await fsp.stat(path.join(dir, 'f'), { bigint: true });
  t.is(st.mtimeNs, 2_000_000_000_987_654_321n);
  t.is(st.atimeNs, 1_000_000_000_123_456_789n);
  t.is(Number(st.mode) & 0o7777, 0o600);
  t.is((await v.getxattr('/f', 'user.k')).toString(), 'v');
  t.deepEqual(await v.listxattr('/f'), ['user.k']);
  const journalState = v.journal.fileState(f.id)!;
  t.is(journalState.minSize, 1000);
  await v.close();
});

test('.replfs is not reachable through the engine', async (t) => {
  const dir = tmp(t);
  await Volume.init(dir);
  const v = await openVolume(dir);
  t.is((await t.throwsAsync(v.getattr('/.replfs')) as NodeJS.ErrnoException).code, 'ENOENT');
  t.is((await t.throwsAsync(v.getattr('/.replfs/config.json')) as NodeJS.ErrnoException).code, 'ENOENT');
  t.is((await t.throwsAsync(v.mkdir('/.replfs', 0o755, me)) as NodeJS.ErrnoException).code, 'ENOENT');
  t.false((await v.readdir('/')).some((e) => e.name === '.replfs'));
  t.is((await t.throwsAsync(v.getattr('/a/../.replfs')) as NodeJS.ErrnoException).code, 'EINVAL');
  await v.close();
});

test('changes made while closed are found at the next writable open', async (t) => {
  const dir = tmp(t);
  fs.writeFileSync(path.join(dir, 'same'), 'same');
  fs.writeFileSync(path.join(dir, 'edit'), 'aaaa');
  fs.writeFileSync(path.join(dir, 'move'), 'm');
  fs.writeFileSync(path.join(dir, 'del'), 'd');
  await Volume.init(dir);
  const v = await openVolume(dir);
  await v.close();
  fs.writeFileSync(path.join(dir, 'edit'), 'bbbb');
  fs.renameSync(path.join(dir, 'move'), path.join(dir, 'moved'));
  fs.unlinkSync(path.join(dir, 'del'));
  fs.writeFileSync(path.join(dir, 'born'), 'new');
  const { volume, report } = await Volume.open(dir, { writable: true });
  // rename(2) changes the file's ctime too, so the moved file must be compared as well.
  const { examples, ...counts } = report.offline;
  t.deepEqual(counts, { created: 1, changed: 2, moved: 1, deleted: 1 });
  t.deepEqual([...examples].sort(), ['born', 'del', 'edit', 'moved'], 'each changed path named once');
  const f = await files(volume);
  t.is(f.edit!.unknown, 'offline-change');
  t.deepEqual(f.edit!.extents, [], 'the journal itself knows no extents of an offline edit');
  t.is(f.edit!.dirtyBytes, 4, 'the whole file has to be looked at');
  t.deepEqual(f.moved!.kinds, ['data', 'attributes', 'renamed', 'unknown']);
  t.is(f.moved!.unknown, 'offline-change');
  t.deepEqual(f.del!.kinds, ['unlinked', 'deleted']);
  t.is(f.born!.unknown, 'created-offline');
  t.false('same' in f, 'an untouched file is not in the journal');
  await volume.close();
  const again = await Volume.open(dir, { writable: true });
  t.deepEqual(again.report.offline, { created: 0, changed: 0, moved: 0, deleted: 0, examples: [] }, 'nothing new the second time');
  await again.volume.close();
});

test('a writable open of an unchanged tree journals nothing and rewrites no file record', async (t) => {
  const dir = tmp(t);
  fs.mkdirSync(path.join(dir, 'sub/deeper'), { recursive: true });
  for (let i = 0; i < 30; i++) fs.writeFileSync(path.join(dir, i % 2 ? 'sub' : 'sub/deeper', `f${i}`), String(i));
  fs.writeFileSync(path.join(dir, 'pair'), 'p');
  fs.linkSync(path.join(dir, 'pair'), path.join(dir, 'sub/pair'));
  fs.symlinkSync('pair', path.join(dir, 'link'));
  await Volume.init(dir);
  await (await openVolume(dir)).close();
  const records = async (): Promise<string[]> => {
    const store = await Store.open(path.join(dir, '.replfs', 'db'), { create: false });
    try {
      const out: string[] = [];
      for await (const [key, value] of store.entries(Sublevel.files)) out.push(`${key} ${value.toString('utf8')}`);
      return out;
    } finally {
      await store.close();
    }
  };
  const before = await records();
  t.is(before.length, 35, "the root, two directories, 30 files, the pair (one file) and the symlink");
  const { volume, report } = await Volume.open(dir, { writable: true });
  t.deepEqual(report.offline, { created: 0, changed: 0, moved: 0, deleted: 0, examples: [] });
  t.deepEqual((await volume.journalReport()).files, []);
  await volume.close();
  t.deepEqual(await records(), before);
});

test('a process that dies before flushing leaves its intents, recovered at the next open', async (t) => {
  const dir = tmp(t);
  fs.writeFileSync(path.join(dir, 'big'), Buffer.alloc(64 * 1024 * 1024));
  await Volume.init(dir);
  const v = await openVolume(dir);
  await writeAt(v, '/big', 'x', 20 * 1024 * 1024 + 3);
  // Simulate a crash: the database closes without the journal flush or the clean marker.
  await v.store.close();
  const { volume, report } = await Volume.open(dir, { writable: true });
  t.false(report.lastCleanShutdown);
  t.is(report.recoveredRegions, 1);
  const f = (await files(volume)).big!;
  t.deepEqual(f.extents, [{ offset: 16 * 1024 * 1024, length: 16 * 1024 * 1024 }], 'the whole 16 MiB intent region');
  // The file's times moved after its record was last refreshed, so the scan also asks for a
  // whole-file compare: after a crash both safety nets apply.
  t.is(f.unknown, 'offline-change');
  await volume.close();
});

test('opening a directory that is not protected, or whose state is damaged, fails clearly', async (t) => {
  const dir = tmp(t);
  let err = await t.throwsAsync(Volume.open(dir, { writable: false }));
  t.true(err instanceof ReplfsError && err.exit === 'notFound');
  await Volume.init(dir);
  fs.writeFileSync(path.join(dir, '.replfs', 'config.json'), '{not json');
  err = await t.throwsAsync(Volume.open(dir, { writable: false }));
  t.true(err instanceof ReplfsError && err.exit === 'damaged');
  t.regex(err!.message, /config\.json is not valid JSON/);
});
