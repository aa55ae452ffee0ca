// Copy-on-write snapshots in the engine, without FUSE: each change made through the
// Volume's own operations, each snapshot read through its view and compared with what the
// tree held when it was taken.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import test from '../helpers/ava.js';
import { me, put, tmpDir, writeAt } from '../helpers/engine.js';
import { Volume } from '../../src/volume/volume.js';
import { snapshotName, isSnapshotName, Catalog } from '../../src/volume/snapshots.js';
import type { SnapshotView } from '../../src/volume/view.js';





async function readAll(view: SnapshotView, rel: string): Promise<Buffer> {
  const h = await view.open(rel);
  try {
    const out = Buffer.alloc(h.size);
    for (let pos = 0; pos < h.size;) {
      const n = await view.read(h, out.subarray(pos), Math.min(1 << 20, h.size - pos), pos);
      if (n === 0) break;
      pos += n;
    }
    return out;
  } finally {
    view.release(h);
  }
}

/** Every path of a view with its type, size, mode and content hash, for comparing trees. */
async function describe(view: SnapshotView, rel = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await view.readdir(rel)) {
    const p = rel === '' ? e.name : `${rel}/${e.name}`;
    const a = await view.getattr(p);
    const kind = a.mode & 0o170000;
    if (kind === 0o040000) {
      out[p] = `dir ${(a.mode & 0o7777).toString(8)}`;
      Object.assign(out, await describe(view, p));
    } else if (kind === 0o120000) {
      out[p] = `link ${await view.readlink(p)}`;
    } else {
      out[p] = `file ${(a.mode & 0o7777).toString(8)} ${a.size} ${(await readAll(view, p)).toString('base64')}`;
    }
  }
  return out;
}

/** The same description of the live backing directory. */
function describeDir(root: string, rel = ''): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of fs.readdirSync(path.join(root, rel)).sort()) {
    if (rel === '' && name === '.replfs') continue;
    const p = rel === '' ? name : `${rel}/${name}`;
    const st = fs.lstatSync(path.join(root, p));
    if (st.isDirectory()) {
      out[p] = `dir ${(st.mode & 0o7777).toString(8)}`;
      Object.assign(out, describeDir(root, p));
    } else if (st.isSymbolicLink()) {
      out[p] = `link ${fs.readlinkSync(path.join(root, p))}`;
    } else {
      out[p] = `file ${(st.mode & 0o7777).toString(8)} ${st.size} ${fs.readFileSync(path.join(root, p)).toString('base64')}`;
    }
  }
  return out;
}

const sorted = (r: Record<string, string>) => Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : 1)));

test('snapshot names: UTC seconds without colons, -1 and -2 on collision', (t) => {
  const at = new Date('2026-11-25T11:05:18.734Z');
  t.is(snapshotName(at, () => false), '2026-11-25T11-05-18Z');
  const taken = new Set(['2026-11-25T11-05-18Z', '2026-11-25T11-05-18Z-1']);
  t.is(snapshotName(at, (n) => taken.has(n)), '2026-11-25T11-05-18Z-2');
  for (const ok of ['2026-11-25T11-05-18Z', '2026-11-25T11-05-18Z-12']) t.true(isSnapshotName(ok), ok);
  for (const bad of ['', 'latest', '../x', '2026-11-25T11:05:18Z', '2026-11-25T11-05-18Z-0', '2026-11-25T11-05-18Z/', 'x2026-11-25T11-05-18Z']) t.false(isSnapshotName(bad), bad);
  const c = new Catalog();
  t.is(c.reserve(at), '2026-11-25T11-05-18Z');
  t.is(c.reserve(at), '2026-11-25T11-05-18Z-1', 'a reserved name is not handed out twice');
  t.is(c.reserve(at, '2026-11-25T11-05-18Z-7'), '2026-11-25T11-05-18Z-7', 'a free name of that second can be asked for');
  t.is(c.reserve(at, '2026-11-25T11-05-18Z-7'), '2026-11-25T11-05-18Z-2', 'but not twice');
  t.is(c.reserve(at, '2026-11-25T11-05-19Z'), '2026-11-25T11-05-18Z-3', 'nor a name of a later second');
  t.is(c.reserve(at, 'latest'), '2026-11-25T11-05-18Z-4', 'nor something that is not a snapshot name');
  // A quiesced snapshot is named when asked for, and cut once its pre-hook is done: its
  // replica, dated with the cut, still takes its name.
  t.is(c.reserve(at, '2026-11-25T11-05-16Z'), '2026-11-25T11-05-16Z', 'a free name of an earlier second can be asked for');
  t.is(c.reserve(at, '2026-11-25T11-05-16Z'), '2026-11-25T11-05-18Z-5', 'but not twice');
});

test('every kind of change leaves earlier snapshots exactly as they were', async (t) => {
  const dir = tmpDir(t, 'replfs-snap-');
  fs.mkdirSync(path.join(dir, 'a/b'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'a/b/f'), Buffer.alloc(200_000, 7));
  fs.writeFileSync(path.join(dir, 'keep'), 'keep');
  fs.writeFileSync(path.join(dir, 'db'), 'old database');
  await Volume.init(dir, { blockSize: 4096 });
  const v = (await Volume.open(dir, { writable: true })).volume;
  try {
    const expected: Array<[string, Record<string, string>]> = [];
    const snap = async () => {
      const rec = await v.snapshot();
      expected.push([rec.name, describeDir(dir)]);
    };
    await snap();
    // Overwrite across a block boundary, append, shrink, grow.
    await writeAt(v, '/a/b/f', Buffer.alloc(10_000, 1), 4000);
    await writeAt(v, '/keep', '+more', 4);
    await snap();
    await v.truncate('/a/b/f', 5000);
    await v.truncate('/keep', 100_000);
    await v.chmod('/keep', 0o600);
    await snap();
    // Replace by rename (atomic save), hard links, rename of a whole directory, unlink, reuse of a name.
    await put(v, '/db.tmp', 'new database');
    await v.rename('/db.tmp', '/db');
    await v.link('/keep', '/a/keep-link');
    await v.rename('/a', '/z');
    await v.unlink('/keep');
    await put(v, '/keep', 'a new file under the old name');
    await v.symlink('z/b/f', '/sym', me);
    await v.mkdir('/empty', 0o755, me);
    await snap();
    await v.rmdir('/empty');
    await v.unlink('/sym');
    await v.unlink('/z/keep-link');
    await writeAt(v, '/z/b/f', Buffer.alloc(3000, 9), 0);
    for (const [name, want] of expected) {
      t.deepEqual(sorted(await describe(v.view(name))), sorted(want), `snapshot ${name}`);
    }
    // The diff between the first and the last snapshot names what changed.
    const d = await v.diff(expected[0]![0], expected.at(-1)![0]);
    const byPath = Object.fromEntries(d.files.map((f) => [f.after[0] ?? f.before[0], f.status]));
    t.is(byPath['db'], 'added', 'the saved-over file is a new file');
    t.is(byPath['z'], 'renamed');
    t.is(byPath['z/b/f'], 'modified');
  } finally {
    await v.close();
  }
});

test('identical blocks are stored once', async (t) => {
  const dir = tmpDir(t, 'replfs-snap-');
  fs.writeFileSync(path.join(dir, 'same'), Buffer.alloc(1 << 20, 3));
  await Volume.init(dir, { blockSize: 65536 });
  const v = (await Volume.open(dir, { writable: true })).volume;
  try {
    await v.snapshot();
    await writeAt(v, '/same', Buffer.alloc(1 << 20, 4), 0);
    const held = await v.preservedBytes();
    t.true(held >= 65536 && held < 2 * 65536, `16 identical blocks take one block (${held})`);
  } finally {
    await v.close();
  }
});

test('a damaged preserved block reads as EIO, whole or in part, and the blocks around it still read', async (t) => {
  const dir = tmpDir(t, 'replfs-snap-');
  const old = randomBytes(1 << 20);
  fs.writeFileSync(path.join(dir, 'big'), old);
  await Volume.init(dir, { blockSize: 65536 });
  const v = (await Volume.open(dir, { writable: true })).volume;
  try {
    const snap = await v.snapshot();
    await writeAt(v, '/big', randomBytes(1 << 20), 0);
    const view = v.view(snap.name);
    t.true(old.equals(await readAll(view, 'big')), 'intact before the damage');
    // Flip one byte of the block holding offset 5 * 64 KiB of the old contents.
    const packs = fs.readdirSync(path.join(dir, '.replfs', 'blocks'));
    t.is(packs.length, 1);
    const pack = path.join(dir, '.replfs', 'blocks', packs[0]!);
    const bytes = fs.readFileSync(pack);
    const at = bytes.indexOf(old.subarray(5 * 65536, 5 * 65536 + 64));
    t.true(at >= 0, 'the old block is in the pack');
    const fd = fs.openSync(pack, 'r+');
    fs.writeSync(fd, Buffer.from([bytes[at + 100]! ^ 0xff]), 0, 1, at + 100);
    fs.closeSync(fd);
    const h = await view.open('big');
    try {
      const whole = Buffer.alloc(2 * 65536);
      await t.throwsAsync(view.read(h, whole, whole.length, 4 * 65536), { code: 'EIO' }, 'whole blocks, read in place');
      const part = Buffer.alloc(1000);
      await t.throwsAsync(view.read(h, part, part.length, 5 * 65536 + 50), { code: 'EIO' }, 'part of the block');
      t.is(await view.read(h, whole, whole.length, 6 * 65536), whole.length);
      t.true(whole.equals(old.subarray(6 * 65536, 8 * 65536)), 'the blocks after it');
      t.is(await view.read(h, part, part.length, 4 * 65536 + 10), part.length);
      t.true(part.equals(old.subarray(4 * 65536 + 10, 4 * 65536 + 1010)), 'the block before it');
    } finally {
      view.release(h);
    }
  } finally {
    await v.close();
  }
});

test('deleting snapshots frees the blocks only they held and keeps the others exact', async (t) => {
  const dir = tmpDir(t, 'replfs-snap-');
  fs.writeFileSync(path.join(dir, 'big'), randomBytes(1 << 20));
  await Volume.init(dir, { blockSize: 65536 });
  const v = (await Volume.open(dir, { writable: true })).volume;
  try {
    const first = await v.snapshot();
    const firstTree = describeDir(dir);
    await writeAt(v, '/big', randomBytes(1 << 20), 0);
    const second = await v.snapshot();
    const secondTree = describeDir(dir);
    await writeAt(v, '/big', randomBytes(1 << 20), 0);
    const held = await v.preservedBytes();
    t.true(held >= 2 << 20, `two versions of 1 MiB are held (${held})`);
    const gc = await v.deleteSnapshots([first.name]);
    t.is(gc.storeBlocks, 16, 'the first version (16 blocks of 64 KiB) is gone from the store');
    t.deepEqual(sorted(await describe(v.view(second.name))), sorted(secondTree));
    t.true((await v.preservedBytes()) < held, 'space was given back');
    t.throws(() => v.view(first.name), { code: 'ENOENT' });
    t.truthy(firstTree);
    await v.deleteSnapshots([second.name]);
    t.is(await v.preservedBytes(), 0, 'nothing is preserved once no snapshot is left');
  } finally {
    await v.close();
  }
});

test('snapshots survive closing and reopening the volume', async (t) => {
  const dir = tmpDir(t, 'replfs-snap-');
  fs.writeFileSync(path.join(dir, 'f'), 'one');
  await Volume.init(dir);
  let v = (await Volume.open(dir, { writable: true })).volume;
  const rec = await v.snapshot({ label: 'before' });
  await writeAt(v, '/f', 'two', 0);
  await v.close();
  v = (await Volume.open(dir, { writable: false })).volume;
  try {
    t.is(v.snapshots()[0]!.label, 'before');
    t.is((await readAll(v.view(rec.name), 'f')).toString(), 'one');
  } finally {
    await v.close();
  }
});

test('a format 1 volume is read as it is and upgraded to format 2 when opened for writing', async (t) => {
  const { Store, putJson } = await import('../../src/volume/store.js');
  const dir = tmpDir(t, 'replfs-snap-');
  fs.writeFileSync(path.join(dir, 'f'), 'data');
  await Volume.init(dir);
  // Make it what an issue-3 build wrote: format 1 in the database and in config.json.
  const configFile = path.join(dir, '.replfs', 'config.json');
  fs.writeFileSync(configFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(configFile, 'utf8')), formatVersion: 1 }));
  const store = await Store.open(path.join(dir, '.replfs', 'db'), { create: false });
  await store.write([putJson('m', 'format', 1)], true);
  await store.close();
  const formatInDb = async () => {
    const s = await Store.open(path.join(dir, '.replfs', 'db'), { create: false });
    try { return await s.getJson<number>('m', 'format'); } finally { await s.close(); }
  };
  const ro = (await Volume.open(dir, { writable: false })).volume;
  t.deepEqual(ro.snapshots(), []);
  await ro.close();
  t.is(await formatInDb(), 1, 'reading does not upgrade');
  const rw = (await Volume.open(dir, { writable: true })).volume;
  const rec = await rw.snapshot();
  await rw.close();
  t.is(await formatInDb(), 2);
  t.is(JSON.parse(fs.readFileSync(configFile, 'utf8')).formatVersion, 2);
  t.truthy(rec.name);
});

test('a directory removed and made again under the same name does not leak into older snapshots', async (t) => {
  const dir = tmpDir(t, 'replfs-snap-');
  fs.mkdirSync(path.join(dir, 'a'));
  fs.writeFileSync(path.join(dir, 'b'), 'old file');
  await Volume.init(dir);
  const v = (await Volume.open(dir, { writable: true })).volume;
  try {
    const rec = await v.snapshot();
    const want = describeDir(dir);
    await v.rmdir('/a');
    await v.mkdir('/a', 0o755, me);
    await v.rename('/b', '/a/b');
    t.deepEqual(sorted(await describe(v.view(rec.name))), sorted(want));
    t.deepEqual(await v.view(rec.name).readdir('a'), []);
  } finally {
    await v.close();
  }
});

test('a zero block cut off by a truncation stays zero in the snapshot after the file grows again in a later epoch', async (t) => {
  const dir = tmpDir(t, 'replfs-snap-');
  const fd = fs.openSync(path.join(dir, 'f'), 'w');
  fs.writeSync(fd, Buffer.alloc(4096, 1), 0, 4096, 0);
  fs.writeSync(fd, Buffer.alloc(4096, 2), 0, 4096, 5 * 65536);
  fs.closeSync(fd);
  await Volume.init(dir, { blockSize: 65536 });
  const v = (await Volume.open(dir, { writable: true })).volume;
  try {
    const first = await v.snapshot();
    const want = fs.readFileSync(path.join(dir, 'f'));
    await v.truncate('/f', 4096);
    await v.snapshot();
    await writeAt(v, '/f', Buffer.alloc(200_000, 7), 65536);
    t.true((await readAll(v.view(first.name), 'f')).equals(want));
  } finally {
    await v.close();
  }
});
