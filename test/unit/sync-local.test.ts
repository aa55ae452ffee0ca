// A sync between two real volumes in one process (engine, LevelDB, copy-on-write; no FUSE,
// no wire): the replica's snapshots must equal the source's, in content, sizes, holes,
// modes, owners, mtimes, xattrs, symlinks and hard links; a second sync must move only what
// changed; and the replica's earlier snapshot must survive it.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import test from '../helpers/ava.js';
import { describeSnapshot as describe, me, put, tmpDir, writeAt } from '../helpers/engine.js';
import { Volume } from '../../src/volume/volume.js';
import { HashPool } from '../../src/replicate/hasher.js';
import { syncLocal } from '../../src/replicate/local.js';





test('a first sync copies a snapshot exactly; the next moves only what changed; older replica snapshots stay', async (t) => {
  const src = path.join(tmpDir(t, 'replfs-sync-'), 'src');
  const dst = path.join(tmpDir(t, 'replfs-sync-'), 'dst');
  fs.mkdirSync(path.join(src, 'docs/deep'), { recursive: true });
  fs.mkdirSync(dst);
  const big = randomBytes(3 << 20);
  fs.writeFileSync(path.join(src, 'big.bin'), big);
  fs.writeFileSync(path.join(src, 'docs/a.txt'), 'alpha\n');
  fs.writeFileSync(path.join(src, 'docs/deep/b.txt'), 'beta\n');
  fs.writeFileSync(path.join(src, 'x'), 'x');
  fs.writeFileSync(path.join(src, 'y'), 'y');
  const sparse = fs.openSync(path.join(src, 'sparse'), 'w');
  fs.writeSync(sparse, Buffer.from('end'), 0, 3, 5 << 20);
  fs.closeSync(sparse);
  fs.symlinkSync('docs/a.txt', path.join(src, 'link'));
  fs.linkSync(path.join(src, 'docs/a.txt'), path.join(src, 'a-again'));
  fs.chmodSync(path.join(src, 'docs/deep'), 0o750);
  await Volume.init(src, { blockSize: 65536 });
  await Volume.init(dst, { blockSize: 65536 });
  const source = (await Volume.open(src, { writable: true })).volume;
  const replica = (await Volume.open(dst, { writable: true })).volume;
  const pool = new HashPool(2);
  try {
    await source.setxattr('/docs/a.txt', 'user.color', Buffer.from('blue'), 0);
    await source.utimens('/x', { sec: 1_000_000_000, nsec: 123_456_789 }, { sec: 1_000_000_000, nsec: 987_654_321 });
    const s1 = await source.snapshot({ label: 'first' });

    const first = await syncLocal(source, replica, { hashPool: pool });
    t.is(first.snapshot, s1.name);
    t.is(first.base, null);
    const r1 = replica.snapshots().at(-1)!;
    t.is(first.replicaSnapshot, r1.name);
    t.is(r1.sourceTime, s1.sourceTime, 'the replica snapshot carries the source time');
    t.is(r1.label, 'first');
    t.deepEqual(await describe(replica.view(r1.name)), await describe(source.view(s1.name)), 'the first copy is exact');
    t.false(fs.existsSync(path.join(dst, '.replfs-incoming')), 'no staging directory left behind');

    // Renames (a swap), a directory move, a small overwrite, an append, a replace-by-rename,
    // a new hard link, a delete, attribute and xattr changes, a new tree.
    await source.rename('/x', '/x.tmp');
    await source.rename('/y', '/x');
    await source.rename('/x.tmp', '/y');
    await source.rename('/docs/deep', '/deep-moved');
    await writeAt(source, '/big.bin', randomBytes(1000), (1 << 20) + 10);
    await writeAt(source, '/docs/a.txt', 'more\n', 6);
    await put(source, '/y.new', 'replaced');
    await source.rename('/y.new', '/y');
    await source.link('/big.bin', '/deep-moved/big-link');
    await source.unlink('/a-again');
    await source.chmod('/docs/a.txt', 0o600);
    await source.removexattr('/docs/a.txt', 'user.color');
    await source.setxattr('/docs/a.txt', 'user.shape', Buffer.from('round'), 0);
    await source.mkdir('/new', 0o755, me);
    await put(source, '/new/n.txt', 'new file');
    await writeAt(source, '/sparse', 'end', 5 << 20);                    // the same bytes again
    const s2 = await source.snapshot();

    const second = await syncLocal(source, replica, { hashPool: pool });
    t.is(second.base, s1.name);
    const r2 = replica.snapshots().at(-1)!;
    t.deepEqual(await describe(replica.view(r2.name)), await describe(source.view(s2.name)), 'the incremental sync is exact');
    t.deepEqual(await describe(replica.view(r1.name)), await describe(source.view(s1.name)), 'the older replica snapshot is untouched');
    t.true(second.bytesRead <= 3 * 65536 + 3, `only the changed blocks are read (${second.bytesRead} bytes)`);
    t.is(second.blocksSent, 4, 'one block each: big.bin, a.txt, the new y and new/n.txt');
    t.is(second.blocksSkipped, 1, 'the block of sparse rewritten with the same bytes is compared and not sent');
    t.log(JSON.stringify(second));

    const third = await syncLocal(source, replica, { hashPool: pool });
    t.is(third.replicaSnapshot, null, 'nothing new: nothing done');
    t.is(replica.snapshots().length, 2);
  } finally {
    await pool.close();
    await source.close();
    await replica.close();
  }
});

test('a destination that replicates another volume is refused, and left as it was', async (t) => {
  const a = path.join(tmpDir(t, 'replfs-sync-'), 'a');
  const b = path.join(tmpDir(t, 'replfs-sync-'), 'b');
  const dst = path.join(tmpDir(t, 'replfs-sync-'), 'dst');
  for (const d of [a, b, dst]) fs.mkdirSync(d);
  fs.writeFileSync(path.join(a, 'f'), 'a');
  fs.writeFileSync(path.join(b, 'f'), 'b');
  for (const d of [a, b, dst]) await Volume.init(d, {});
  const va = (await Volume.open(a, { writable: true })).volume;
  const vb = (await Volume.open(b, { writable: true })).volume;
  const vd = (await Volume.open(dst, { writable: true })).volume;
  const pool = new HashPool(1);
  try {
    await va.snapshot();
    await vb.snapshot();
    await syncLocal(va, vd, { hashPool: pool });
    const before = replicaFiles(dst);
    await t.throwsAsync(syncLocal(vb, vd, { hashPool: pool }), { message: /replica of another volume/ });
    t.deepEqual(replicaFiles(dst), before);
    t.is(fs.readFileSync(path.join(dst, 'f'), 'utf8'), 'a');
  } finally {
    await pool.close();
    for (const v of [va, vb, vd]) await v.close();
  }
});

function replicaFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => n !== '.replfs').sort();
}

test('a file cut short and grown again is sent whole past its shortest size: zeros where old data was, new data written after', async (t) => {
  const src = path.join(tmpDir(t, 'replfs-sync-'), 'src');
  const dst = path.join(tmpDir(t, 'replfs-sync-'), 'dst');
  fs.mkdirSync(src);
  fs.mkdirSync(dst);
  fs.writeFileSync(path.join(src, 'regrown'), Buffer.alloc(256 * 1024, 0x41));
  fs.writeFileSync(path.join(src, 'rewritten'), Buffer.alloc(256 * 1024, 0x42));
  fs.writeFileSync(path.join(src, 'shrunk'), Buffer.alloc(256 * 1024, 0x43));
  await Volume.init(src, { blockSize: 65536 });
  await Volume.init(dst, { blockSize: 65536 });
  const source = (await Volume.open(src, { writable: true })).volume;
  const replica = (await Volume.open(dst, { writable: true })).volume;
  const pool = new HashPool(2);
  try {
    await source.snapshot();
    await syncLocal(source, replica, { hashPool: pool });
    // Cut to nothing and grown back to the same size: all zeros now, and no write at all.
    await source.truncate('/regrown', 0);
    await source.truncate('/regrown', 256 * 1024);
    // Cut to 10 KiB, then new data written only at the end: a hole in between.
    await source.truncate('/rewritten', 10 * 1024);
    await writeAt(source, '/rewritten', Buffer.alloc(64 * 1024, 0x5a), 192 * 1024);
    await source.truncate('/shrunk', 100);
    const s2 = await source.snapshot();
    const second = await syncLocal(source, replica, { hashPool: pool });
    t.is(second.kind, 'incremental');
    const r2 = replica.snapshots().at(-1)!;
    t.deepEqual(await describe(replica.view(r2.name)), await describe(source.view(s2.name)), 'the replica equals the source');
    t.true(fs.readFileSync(path.join(dst, 'regrown')).equals(Buffer.alloc(256 * 1024)), 'zeros, not the old data');
    const rewritten = fs.readFileSync(path.join(dst, 'rewritten'));
    t.true(rewritten.subarray(10 * 1024, 192 * 1024).equals(Buffer.alloc(182 * 1024)));
    t.true(rewritten.subarray(0, 10 * 1024).equals(Buffer.alloc(10 * 1024, 0x42)));
    t.is(fs.statSync(path.join(dst, 'shrunk')).size, 100);
  } finally {
    await pool.close();
    await source.close();
    await replica.close();
  }
});
