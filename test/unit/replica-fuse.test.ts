// The replica mount's FUSE handlers called directly, without a kernel mount (a real mount
// is `ro`, so the kernel refuses writes before they reach the handlers; these tests check
// that the handlers refuse them too): every change is EROFS, in the root, in `.snapshots`
// and through an open file; reads answer from the newest snapshot, and from the next one
// as soon as it is taken; a replica without snapshots has an empty root. Every handler
// answers with a number.
import fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import { put, tmpDir } from '../helpers/engine.js';
import { Volume } from '../../src/volume/volume.js';
import { HashPool } from '../../src/replicate/hasher.js';
import { syncLocal } from '../../src/replicate/local.js';
import { ReplicaFuse } from '../../src/fuse/replica.js';

const errno = osConstants.errno as Record<string, number>;
const E = (name: string) => -errno[name]!;

type Answer = [number, ...unknown[]];

/** Calls a handler and resolves with everything it answered, checking it answered a number. */
function ask(t: ExecutionContext, what: string, call: (signal: (...a: unknown[]) => void) => void): Promise<Answer> {
  return new Promise((resolve) => {
    call((...a: unknown[]) => {
      t.is(typeof a[0], 'number', `${what} answers with a number`);
      resolve(a as Answer);
    });
  });
}

async function replicaOf(t: ExecutionContext): Promise<{ source: Volume; replica: Volume; pool: HashPool; fuse: () => ReplicaFuse }> {
  const base = tmpDir(t, 'replfs-replica-fuse-');
  const src = path.join(base, 'src');
  const dst = path.join(base, 'dst');
  fs.mkdirSync(path.join(src, 'docs'), { recursive: true });
  fs.mkdirSync(dst);
  fs.writeFileSync(path.join(src, 'docs/a.txt'), 'alpha\n');
  fs.symlinkSync('docs/a.txt', path.join(src, 'link'));
  await Volume.init(src, {});
  await Volume.init(dst, {});
  const source = (await Volume.open(src, { writable: true })).volume;
  const replica = (await Volume.open(dst, { writable: true })).volume;
  const pool = new HashPool(1);
  const made: ReplicaFuse[] = [];
  t.teardown(async () => {
    for (const f of made) f.dispose();
    await pool.close();
    await source.close();
    await replica.close();
  });
  await source.setxattr('/docs/a.txt', 'user.tag', Buffer.from('kept'), 0);
  const fuse = () => {
    const f = new ReplicaFuse(path.join(base, 'mnt'), replica, { inPlace: false, extra: [], attrTimeout: 0, entryTimeout: 0 });
    made.push(f);
    return f;
  };
  return { source, replica, pool, fuse };
}

test('every change through the handlers is EROFS: in the root, in .snapshots, and through an open file', async (t) => {
  const { source, replica, pool, fuse: make } = await replicaOf(t);
  await source.snapshot();
  await syncLocal(source, replica, { hashPool: pool });
  const name = replica.snapshots().at(-1)!.name;
  const fuse = make();
  const me = [0, 0, process.pid] as const;
  const paths = ['/', '/docs', '/docs/a.txt', '/link', '/new', '/.snapshots', '/.snapshots/latest', `/.snapshots/${name}`, `/.snapshots/${name}/docs/a.txt`, `/.snapshots/${name}/new`];
  const EROFS = E('EROFS');
  for (const p of paths) {
    const changes: Array<[string, (s: (...a: unknown[]) => void) => void]> = [
      ['create', (s) => fuse._op_create(s, p, 0o100644, fs.constants.O_WRONLY | fs.constants.O_CREAT, ...me)],
      ['truncate', (s) => fuse._op_truncate(s, p, 0, 0)],
      ['utimens', (s) => fuse._op_utimens(s, p, 1, 0, 1, 0)],
      ['chmod', (s) => fuse._op_chmod(s, p, 0o777)],
      ['chown', (s) => fuse._op_chown(s, p, 1, 1)],
      ['mknod', (s) => fuse._op_mknod(s, p, 0o010644, 0, ...me)],
      ['mkdir', (s) => fuse._op_mkdir(s, p, 0o755, ...me)],
      ['symlink', (s) => fuse._op_symlink(s, 'x', p, ...me)],
      ['link', (s) => fuse._op_link(s, '/docs/a.txt', p)],
      ['link from', (s) => fuse._op_link(s, p, '/elsewhere')],
      ['unlink', (s) => fuse._op_unlink(s, p)],
      ['rmdir', (s) => fuse._op_rmdir(s, p)],
      ['rename', (s) => fuse._op_rename(s, p, '/elsewhere')],
      ['rename onto', (s) => fuse._op_rename(s, '/docs/a.txt', p)],
      ['setxattr', (s) => fuse._op_setxattr(s, p, 'user.x', Buffer.from('1'), 0, 0)],
      ['removexattr', (s) => fuse._op_removexattr(s, p, 'user.tag')],
      ['open for writing', (s) => fuse._op_open(s, p, fs.constants.O_WRONLY)],
      ['open for reading and writing', (s) => fuse._op_open(s, p, fs.constants.O_RDWR)],
      ['open with O_TRUNC', (s) => fuse._op_open(s, p, fs.constants.O_RDONLY | fs.constants.O_TRUNC)],
    ];
    for (const [what, call] of changes) t.is((await ask(t, `${what} ${p}`, call))[0], EROFS, `${what} ${p}`);
  }
  // Through a file opened for reading.
  const [rc, fd] = await ask(t, 'open', (s) => fuse._op_open(s, '/docs/a.txt', fs.constants.O_RDONLY));
  t.is(rc, 0);
  const buf = Buffer.from('evil');
  t.is((await ask(t, 'write', (s) => fuse._op_write(s, '/docs/a.txt', fd as number, buf, buf.length, 0, 0)))[0], EROFS);
  t.is((await ask(t, 'ftruncate', (s) => fuse._op_ftruncate(s, '/docs/a.txt', fd as number, 0, 0)))[0], EROFS);
  t.is(fuse.openViewFiles, 1);
  t.is((await ask(t, 'release', (s) => fuse._op_release(s, '/docs/a.txt', fd as number)))[0], 0);
  t.is(fuse.openViewFiles, 0);
  // And nothing changed anywhere.
  t.is(fs.readFileSync(path.join(replica.root, 'docs/a.txt'), 'utf8'), 'alpha\n');
  t.deepEqual(fs.readdirSync(replica.root).sort(), ['.replfs', 'docs', 'link']);
  t.deepEqual((await replica.journalReport()).files, []);
});

test('reads come from the newest snapshot, and from the next as soon as it is taken', async (t) => {
  const { source, replica, pool, fuse: make } = await replicaOf(t);
  await source.snapshot();
  await syncLocal(source, replica, { hashPool: pool });
  const first = replica.snapshots().at(-1)!.name;
  const fuse = make();
  t.is(fuse.rootSnapshot, first);
  const names = async (p: string) => ((await ask(t, `readdir ${p}`, (s) => fuse._op_readdir(s, p)))[1] as string[]).slice(2).sort();
  t.deepEqual(await names('/'), ['docs', 'link'], 'the root: the snapshot, without .snapshots');
  t.deepEqual(await names('/.snapshots'), [first, 'latest']);
  t.deepEqual(await ask(t, 'readlink', (s) => fuse._op_readlink(s, '/link')), [0, 'docs/a.txt']);
  const read = async (p: string) => {
    const [rc, fd] = await ask(t, `open ${p}`, (s) => fuse._op_open(s, p, fs.constants.O_RDONLY));
    t.is(rc, 0, `open ${p}`);
    const buf = Buffer.alloc(64);
    const [n] = await ask(t, `read ${p}`, (s) => fuse._op_read(s, p, fd as number, buf, buf.length, 0, 0));
    await ask(t, `release ${p}`, (s) => fuse._op_release(s, p, fd as number));
    return buf.subarray(0, n).toString('utf8');
  };
  t.is(await read('/docs/a.txt'), 'alpha\n');
  const xattr = Buffer.alloc(16);
  const [len] = await ask(t, 'getxattr', (s) => fuse._op_getxattr(s, '/docs/a.txt', 'user.tag', xattr));
  t.is(xattr.subarray(0, len).toString(), 'kept');
  const [rc, stat] = await ask(t, 'getattr', (s) => fuse._op_getattr(s, '/docs/a.txt'));
  t.is(rc, 0);
  t.is((stat as Uint32Array)[3], 6, 'the size');
  // fgetattr of a directory (opendir answers 0 as its handle) is the snapshot's, not the live tree's.
  const [, dirStat] = await ask(t, 'fgetattr', (s) => fuse._op_fgetattr(s, '/docs', 0));
  t.is((dirStat as Uint32Array)[7], (await replica.view(first).getattr('docs')).ino);
  t.is((await ask(t, 'statfs in a snapshot path', (s) => fuse._op_statfs(s, '/docs/a.txt')))[0], 0);

  // The live tree of a replica is never shown: a change there is not in any snapshot yet.
  await put(replica, '/live-only', 'half a sync');
  t.is((await ask(t, 'getattr', (s) => fuse._op_getattr(s, '/live-only')))[0], E('ENOENT'));

  await put(source, '/docs/a.txt', 'ALPHA, longer\n');
  await put(source, '/new.txt', 'new\n');
  await source.snapshot();
  await syncLocal(source, replica, { hashPool: pool });
  const second = replica.snapshots().at(-1)!.name;
  t.not(second, first);
  t.is(fuse.rootSnapshot, second, 'the root moved with the snapshot');
  t.is(await read('/docs/a.txt'), 'ALPHA, longer\n');
  t.is(await read('/new.txt'), 'new\n');
  t.is(await read(`/.snapshots/${first}/docs/a.txt`), 'alpha\n', 'the older snapshot is as it was');
  t.deepEqual(await ask(t, 'readlink latest', (s) => fuse._op_readlink(s, '/.snapshots/latest')), [0, second]);

  await replica.deleteSnapshots([second]);
  t.is(fuse.rootSnapshot, first, 'deleting the newest moves the root back');
  t.is(await read('/docs/a.txt'), 'alpha\n');
});

test('a replica without snapshots has an empty read-only root', async (t) => {
  const { fuse: make } = await replicaOf(t);
  const fuse = make();
  t.is(fuse.rootSnapshot, null);
  const [rc, stat] = await ask(t, 'getattr /', (s) => fuse._op_getattr(s, '/'));
  t.is(rc, 0);
  t.is((stat as Uint32Array)[0], 0o040555);
  t.deepEqual((await ask(t, 'readdir /', (s) => fuse._op_readdir(s, '/')))[1], ['.', '..']);
  t.deepEqual((await ask(t, 'readdir .snapshots', (s) => fuse._op_readdir(s, '/.snapshots')))[1], ['.', '..']);
  t.is((await ask(t, 'getattr /docs', (s) => fuse._op_getattr(s, '/docs')))[0], E('ENOENT'), 'the live tree is not shown');
  t.is((await ask(t, 'open /', (s) => fuse._op_open(s, '/', fs.constants.O_RDONLY)))[0], E('EISDIR'));
  t.is((await ask(t, 'mkdir', (s) => fuse._op_mkdir(s, '/x', 0o755, 0, 0, 1)))[0], E('EROFS'));
  t.deepEqual((await ask(t, 'listxattr /', (s) => fuse._op_listxattr(s, '/', Buffer.alloc(0))))[0], 0);
});
