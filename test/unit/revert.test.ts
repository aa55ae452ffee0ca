// Reverting a volume's live files to one of its snapshots: every kind of change undone,
// only what changed touched, a snapshot taken before keeping what was undone.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import test from '../helpers/ava.js';
import { describeSnapshot as describe, me, put, tmpDir, writeAt } from '../helpers/engine.js';
import { Volume } from '../../src/volume/volume.js';
import { revertTo } from '../../src/replicate/revert.js';

async function volumeAt(t: { teardown(fn: () => unknown): void }): Promise<{ dir: string; v: Volume }> {
  const dir = path.join(tmpDir(t, 'replfs-revert-'), 'vol');
  fs.mkdirSync(path.join(dir, 'docs/deep'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'gone-dir/inner'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'big.bin'), randomBytes(2 << 20));
  fs.writeFileSync(path.join(dir, 'docs/a.txt'), 'alpha\n');
  fs.writeFileSync(path.join(dir, 'docs/deep/b.txt'), 'beta\n');
  fs.writeFileSync(path.join(dir, 'gone-dir/inner/c.txt'), 'gamma\n');
  fs.writeFileSync(path.join(dir, 'x'), 'x');
  fs.writeFileSync(path.join(dir, 'y'), 'y');
  fs.writeFileSync(path.join(dir, 'cut'), Buffer.alloc(300 * 1024, 7));
  fs.symlinkSync('docs/a.txt', path.join(dir, 'link'));
  fs.linkSync(path.join(dir, 'docs/a.txt'), path.join(dir, 'a-again'));
  await Volume.init(dir, { blockSize: 65536 });
  const v = (await Volume.open(dir, { writable: true })).volume;
  t.teardown(() => v.close());
  return { dir, v };
}

test('every kind of change is undone: renames (a swap, a directory move), writes, truncations, deletions, creations, links, attributes', async (t) => {
  const { v } = await volumeAt(t);
  await v.setxattr('/docs/a.txt', 'user.color', Buffer.from('blue'), 0);
  const c = await v.snapshot({ label: 'known good' });
  const wanted = await describe(v.view(c.name));

  await v.rename('/x', '/x.tmp');
  await v.rename('/y', '/x');
  await v.rename('/x.tmp', '/y');
  await v.rename('/docs/deep', '/deep-moved');
  await writeAt(v, '/big.bin', randomBytes(1000), 1 << 20);
  await writeAt(v, '/big.bin', 'tail', (2 << 20) + 100);
  await v.truncate('/cut', 10);
  await v.truncate('/cut', 200 * 1024);
  await v.unlink('/gone-dir/inner/c.txt');
  await v.rmdir('/gone-dir/inner');
  await v.rmdir('/gone-dir');
  await v.unlink('/a-again');
  await v.link('/y', '/y-linked');
  await put(v, '/new.txt', 'new file');
  await v.mkdir('/newdir', 0o755, me);
  await put(v, '/newdir/inside', 'inside');
  await v.unlink('/link');
  await v.symlink('elsewhere', '/link', me);
  await v.chmod('/docs/a.txt', 0o600);
  await v.setxattr('/docs/a.txt', 'user.color', Buffer.from('red'), 0);
  await v.setxattr('/docs/a.txt', 'user.extra', Buffer.from('1'), 0);
  await v.utimens('/docs', { sec: 1, nsec: 0 }, { sec: 2, nsec: 0 });
  const x = await v.snapshot({ label: 'before revert' });
  const undone = await describe(v.view(x.name));
  t.notDeepEqual(undone, wanted);

  const report = await revertTo(v, c.name);
  t.true(report.steps > 0);
  t.true(report.bytesCopied < 1 << 20, `only the changed ranges are copied back, not the 2 MiB file: ${report.bytesCopied}`);
  const after = await v.snapshot();
  t.deepEqual(await describe(v.view(after.name)), wanted, 'the live files are the snapshot again');
  t.deepEqual(await describe(v.view(x.name)), undone, 'the snapshot taken before still holds what was undone');
  t.deepEqual(await describe(v.view(c.name)), wanted, 'and the reverted-to snapshot is intact');
  t.false(fs.readdirSync(v.root).some((n) => n.startsWith('.replfs-revert-')), 'no staging directory left');
  // Again: nothing to do but nothing breaks.
  await revertTo(v, c.name);
  const again = await v.snapshot();
  t.deepEqual(await describe(v.view(again.name)), wanted);
});

test('nothing changed since: nothing to do', async (t) => {
  const { v } = await volumeAt(t);
  const c = await v.snapshot();
  const report = await revertTo(v, c.name);
  t.deepEqual(report, { snapshot: c.name, files: 0, steps: 0, bytesCopied: 0 });
});

test('a revert stopped half way is finished by running it again', async (t) => {
  const { v } = await volumeAt(t);
  const c = await v.snapshot();
  const wanted = await describe(v.view(c.name));
  await v.rename('/docs', '/documents');
  await put(v, '/documents/extra', 'x');
  await writeAt(v, '/x', 'changed', 0);
  // Half of a revert, by hand: the directory is back, the rest is not.
  await v.rename('/documents', '/docs');
  await revertTo(v, c.name);
  const after = await v.snapshot();
  t.deepEqual(await describe(v.view(after.name)), wanted);
});

test('an unknown snapshot, a read-only volume: refused', async (t) => {
  const { dir, v } = await volumeAt(t);
  await v.snapshot();
  await t.throwsAsync(revertTo(v, '2001-01-01T00-00-00Z'), { message: /no snapshot/i });
  await v.close();
  const ro = (await Volume.open(dir, { writable: false })).volume;
  t.teardown(() => ro.close());
  await t.throwsAsync(revertTo(ro, ro.snapshots()[0]!.name), { message: /read-only/ });
});
