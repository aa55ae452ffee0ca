// Every operation through a real mount, compared with the backing directory right after.
// The volume is mounted at a separate mountpoint so both sides can be read at once; the
// mount must show exactly what the backing directory holds: types, modes, owners, sizes,
// link counts, inode numbers, nanosecond mtimes, contents, symlink targets and xattrs.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { createHash } from 'node:crypto';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import { scratch, replfs, initVolume, mountVolume, describeTree, run, sh, rng, seedFromEnv, type Scratch } from '../helpers/env.js';

interface Fixture {
  s: Scratch;
  back: string;
  mnt: string;
}

async function fixture(t: ExecutionContext, seed?: (back: string) => void): Promise<Fixture> {
  const s = scratch(t);
  const back = path.join(s.dir, 'back');
  const mnt = path.join(s.dir, 'mnt');
  fs.mkdirSync(back);
  fs.mkdirSync(mnt);
  fs.mkdirSync(path.join(back, 'dir'));
  fs.writeFileSync(path.join(back, 'dir', 'file.txt'), 'existing\n');
  fs.writeFileSync(path.join(back, 'blob'), Buffer.alloc(256 * 1024, 3));
  seed?.(back);
  await initVolume(t, s, back);
  await mountVolume(t, s, back, mnt);
  return { s, back, mnt };
}

/** The mount and the backing directory must look identical. */
async function same(t: ExecutionContext, f: Fixture, what: string): Promise<void> {
  const [viaMount, backing] = await Promise.all([describeTree(f.mnt, { xattrs: true }), describeTree(f.back, { xattrs: true })]);
  t.deepEqual(viaMount, backing, `mount differs from backing directory after: ${what}`);
}

async function journal(f: Fixture): Promise<Record<string, { kinds: string[]; extents: Array<{ offset: number; length: number }>; paths: string[]; unknown: string | null }>> {
  const r = await replfs(f.s, ['journal', f.mnt, '--json']);
  if (r.code !== 0) throw new Error(r.stderr);
  const report = JSON.parse(r.stdout) as { files: Array<{ path: string; kinds: string[]; extents: Array<{ offset: number; length: number }>; paths: string[]; unknown: string | null }> };
  return Object.fromEntries(report.files.map((x) => [x.path, x]));
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

test('create, write, append, overwrite, read back', async (t) => {
  const f = await fixture(t);
  const p = path.join(f.mnt, 'new.txt');
  await fsp.writeFile(p, 'hello');
  await same(t, f, 'create');
  await fsp.appendFile(p, ' world');
  const fh = await fsp.open(p, 'r+');
  await fh.write('J', 6);
  await fh.close();
  t.is(await fsp.readFile(p, 'utf8'), 'hello Jorld');
  t.is(fs.readFileSync(path.join(f.back, 'new.txt'), 'utf8'), 'hello Jorld');
  await same(t, f, 'append and overwrite');
  const blob = path.join(f.mnt, 'blob');
  const fb = await fsp.open(blob, 'r+');
  await fb.write(Buffer.alloc(10, 9), 0, 10, 100_000);
  await fb.close();
  await same(t, f, 'overwrite inside an existing file');
  const j = await journal(f);
  t.deepEqual(j['new.txt']!.kinds, ['created', 'data']);
  t.deepEqual(j.blob!.kinds, ['data']);
  t.deepEqual(j.blob!.extents, [{ offset: 65536, length: 65536 }]);
});

test('truncate shrinks and grows, through a path and through an open file', async (t) => {
  const f = await fixture(t);
  const p = path.join(f.mnt, 'blob');
  await fsp.truncate(p, 1000);
  await same(t, f, 'truncate to 1000');
  await fsp.truncate(p, 300_000);
  const data = await fsp.readFile(p);
  t.is(data.length, 300_000);
  t.true(data.subarray(0, 1000).every((b) => b === 3));
  t.true(data.subarray(1000).every((b) => b === 0), 'growth reads as zeros');
  const fh = await fsp.open(p, 'r+');
  await fh.truncate(10);
  await fh.close();
  await same(t, f, 'ftruncate to 10');
  await sh(t, `echo replaced > ${path.join(f.mnt, 'dir', 'file.txt')}`);
  await same(t, f, 'open with O_TRUNC');
  const j = await journal(f);
  t.true(j.blob!.kinds.includes('truncated'));
  t.true(j['dir/file.txt']!.kinds.includes('truncated'), 'O_TRUNC is journaled as a truncate');
});

test('unlink, rename, rename over a file and over an empty directory, rename a directory', async (t) => {
  const f = await fixture(t);
  const m = f.mnt;
  await fsp.writeFile(path.join(m, 'a'), 'A');
  await fsp.writeFile(path.join(m, 'b'), 'B');
  await fsp.rename(path.join(m, 'a'), path.join(m, 'b'));
  t.is(await fsp.readFile(path.join(m, 'b'), 'utf8'), 'A');
  await same(t, f, 'rename over a file');
  await fsp.mkdir(path.join(m, 'empty'));
  await fsp.mkdir(path.join(m, 'full'));
  await fsp.writeFile(path.join(m, 'full', 'x'), 'x');
  await fsp.rename(path.join(m, 'full'), path.join(m, 'empty'));
  await same(t, f, 'rename a directory over an empty one');
  await fsp.rename(path.join(m, 'dir'), path.join(m, 'empty', 'moved'));
  t.is(await fsp.readFile(path.join(m, 'empty', 'moved', 'file.txt'), 'utf8'), 'existing\n');
  await same(t, f, 'move a directory into another');
  await fsp.unlink(path.join(m, 'b'));
  await same(t, f, 'unlink');
  const err = await t.throwsAsync(fsp.rename(path.join(m, 'blob'), path.join(m, 'empty')));
  t.is((err as NodeJS.ErrnoException).code, 'EISDIR');
  const j = await journal(f);
  t.deepEqual(j['empty/moved']!.kinds, ['renamed']);
  t.deepEqual(j['empty/moved/file.txt'], undefined, 'files inside a renamed directory did not change');
});

test('mkdir, rmdir, and rmdir of a non-empty directory', async (t) => {
  const f = await fixture(t);
  await fsp.mkdir(path.join(f.mnt, 'a', 'b', 'c'), { recursive: true });
  await same(t, f, 'mkdir -p');
  const err = await t.throwsAsync(fsp.rmdir(path.join(f.mnt, 'a')));
  t.is((err as NodeJS.ErrnoException).code, 'ENOTEMPTY');
  await fsp.rmdir(path.join(f.mnt, 'a', 'b', 'c'));
  await same(t, f, 'rmdir');
  await fsp.rm(path.join(f.mnt, 'a'), { recursive: true });
  await same(t, f, 'rm -r');
});

test('symlinks: create, read, dangling, and lstat versus stat', async (t) => {
  const f = await fixture(t);
  await fsp.symlink('dir/file.txt', path.join(f.mnt, 'ln'));
  await fsp.symlink('/nowhere/at/all', path.join(f.mnt, 'dangling'));
  t.is(await fsp.readlink(path.join(f.mnt, 'ln')), 'dir/file.txt');
  t.is(await fsp.readFile(path.join(f.mnt, 'ln'), 'utf8'), 'existing\n');
  t.true((await fsp.lstat(path.join(f.mnt, 'ln'))).isSymbolicLink());
  t.true((await fsp.stat(path.join(f.mnt, 'ln'))).isFile());
  t.is((await t.throwsAsync(fsp.stat(path.join(f.mnt, 'dangling'))) as NodeJS.ErrnoException).code, 'ENOENT');
  await same(t, f, 'symlinks');
});

test('hard links: link counts and attributes are fresh on every name at once', async (t) => {
  const f = await fixture(t);
  const a = path.join(f.mnt, 'dir', 'file.txt');
  const b = path.join(f.mnt, 'alias');
  await fsp.stat(a);
  await fsp.link(a, b);
  t.is((await fsp.stat(a)).nlink, 2, 'the original name sees the new link at once');
  t.is((await fsp.stat(b)).ino, (await fsp.stat(a)).ino, 'both names show one inode');
  await fsp.chmod(b, 0o600);
  t.is((await fsp.stat(a)).mode & 0o777, 0o600, 'a chmod through one name shows through the other');
  await fsp.appendFile(b, 'more');
  t.is((await fsp.stat(a)).size, 'existing\nmore'.length);
  await fsp.unlink(b);
  t.is((await fsp.stat(a)).nlink, 1, 'an unlink of the alias shows on the original');
  await same(t, f, 'hard links');
  const j = await journal(f);
  t.deepEqual(j['dir/file.txt']!.kinds, ['data', 'attributes', 'linked', 'unlinked']);
});

test('hard links: a file that loses its second name and gains another shows fresh attributes through the first', async (t) => {
  const f = await fixture(t);
  const a = path.join(f.mnt, 'dir', 'file.txt');
  // One shell so that every step lands within the attribute cache time.
  const out = await sh(t, `cd ${f.mnt} && echo two > dir/file.txt && ln dir/file.txt y && rm y && stat -c %s dir/file.txt && ln dir/file.txt z && echo more >> z && stat -c %s,%h dir/file.txt && cat dir/file.txt`);
  t.is(out, '4\n9,2\ntwo\nmore\n', 'size and link count through the first name follow the change made through the new one');
  t.is((await fsp.stat(a)).size, 9);
  await same(t, f, 'relink');
});

test('chmod, chown, and exact nanosecond times with touch -a and touch -m', async (t) => {
  const f = await fixture(t);
  const p = path.join(f.mnt, 'dir', 'file.txt');
  // chown clears the set-id bits, as it does everywhere on Linux: chmod afterwards.
  await sh(t, `chown 1234:5678 ${p} && chmod 4751 ${p}`);
  await sh(t, `touch -m -d '2021-03-04 05:06:07.123456789' ${p}`);
  await sh(t, `touch -a -d '2001-02-03 04:05:06.987654321' ${p}`);
  const st = await fsp.stat(p, { bigint: true });
  t.is(st.mtimeNs, BigInt(Date.UTC(2021, 2, 4, 5, 6, 7)) * 1_000_000n + 123_456_789n);
  t.is(st.atimeNs, BigInt(Date.UTC(2001, 1, 3, 4, 5, 6)) * 1_000_000n + 987_654_321n, 'touch -a left mtime alone and set atime exactly');
  t.is(Number(st.uid), 1234);
  t.is(Number(st.gid), 5678);
  t.is(Number(st.mode) & 0o7777, 0o4751);
  await same(t, f, 'chmod, chown, utimens');
  // Bounded by the clock before and after, not by a tolerance: a loaded machine can take
  // seconds between the two.
  const before = Date.now();
  await sh(t, `touch ${p}`);
  const now = await fsp.stat(p);
  const after = Date.now();
  t.true(now.mtimeMs >= before - 1000 && now.mtimeMs <= after + 1000, `touch without a date sets now: mtime ${now.mtimeMs}, between ${before} and ${after}`);
  await same(t, f, 'touch now');
});

test('extended attributes: set, get, list, remove', async (t) => {
  const f = await fixture(t);
  const p = path.join(f.mnt, 'dir', 'file.txt');
  await sh(t, `setfattr -n user.color -v blue ${p} && setfattr -n user.empty ${p} && setfattr -n user.big -v 0x${'ab'.repeat(2000)} ${p}`);
  const got = await sh(t, `getfattr --only-values -n user.color ${p}`);
  t.is(got, 'blue');
  const list = await sh(t, `getfattr -d -m '^user\\.' --absolute-names ${p}`);
  t.regex(list, /user\.color="blue"/);
  t.regex(list, /user\.big=/);
  await same(t, f, 'setfattr');
  await sh(t, `setfattr -x user.color ${p}`);
  const missing = await run('getfattr', ['-n', 'user.color', p]);
  t.regex(missing.stderr, /No such attribute/);
  await same(t, f, 'setfattr -x');
  const j = await journal(f);
  t.deepEqual(j['dir/file.txt']!.kinds, ['xattrs']);
});

test('mknod makes FIFOs; statfs and access answer', async (t) => {
  const f = await fixture(t);
  await sh(t, `mkfifo -m 640 ${path.join(f.mnt, 'pipe')} && test -p ${path.join(f.mnt, 'pipe')}`);
  await same(t, f, 'mkfifo');
  const df = (p: string) => sh(t, `stat -f -c '%S %b %f %c' ${p}`);
  const [viaMount, direct] = await Promise.all([df(f.mnt), df(f.back)]);
  const [mbs, mblocks] = viaMount.split(' ').map(Number);
  const [bbs, bblocks] = direct.split(' ').map(Number);
  t.is(mbs! * mblocks!, bbs! * bblocks!, 'statfs reports the backing filesystem size');
  await sh(t, `test -r ${path.join(f.mnt, 'blob')} && test -w ${path.join(f.mnt, 'blob')} && ! test -e ${path.join(f.mnt, 'nope')}`);
});

test('files over 4 GiB and sparse files keep their holes', async (t) => {
  const f = await fixture(t);
  const big = path.join(f.mnt, 'huge');
  const fh = await fsp.open(big, 'w');
  await fh.write(Buffer.from('at five GiB'), 0, 11, 5 * 2 ** 30);
  await fh.close();
  const st = await fsp.stat(big);
  t.is(st.size, 5 * 2 ** 30 + 11);
  const rd = await fsp.open(big, 'r');
  const buf = Buffer.alloc(11);
  await rd.read(buf, 0, 11, 5 * 2 ** 30);
  await rd.close();
  t.is(buf.toString(), 'at five GiB');
  const backing = fs.statSync(path.join(f.back, 'huge'));
  t.true(backing.blocks * 512 < 1024 * 1024, `the hole stays a hole (${backing.blocks} blocks allocated)`);
  await sh(t, `truncate -s 1G ${path.join(f.mnt, 'sparse')} && printf x | dd of=${path.join(f.mnt, 'sparse')} bs=1 seek=536870912 conv=notrunc status=none`);
  const sp = fs.statSync(path.join(f.back, 'sparse'));
  t.is(sp.size, 2 ** 30);
  t.true(sp.blocks * 512 <= 64 * 1024, `sparse file allocated ${sp.blocks} blocks`);
  await same(t, f, 'big and sparse files');
});

test('eight writer processes at once, and a reader in another process', async (t) => {
  const f = await fixture(t);
  const seed = seedFromEnv('REPLFS_TEST_SEED');
  t.log('seed', seed);
  const writer = `
    const fs = require('fs');
    const [dir, id, seed] = process.argv.slice(1);
    let a = Number(seed) + Number(id) * 7919;
    const rnd = () => { a = (a * 1103515245 + 12345) % 2147483648; return a / 2147483648; };
    const mine = fs.openSync(dir + '/w' + id, 'w');
    for (let i = 0; i < 200; i++) fs.writeSync(mine, Buffer.alloc(1 + Math.floor(rnd() * 20000), 65 + Number(id)), null);
    fs.closeSync(mine);
    const shared = fs.openSync(dir + '/shared', 'r+');
    for (let i = 0; i < 50; i++) fs.writeSync(shared, Buffer.alloc(1000, 65 + Number(id)), 0, 1000, (Number(id) * 50 + i) * 1000);
    fs.fsyncSync(shared);
    fs.closeSync(shared);
  `;
  await fsp.writeFile(path.join(f.mnt, 'shared'), Buffer.alloc(400_000));
  const results = await Promise.all(Array.from({ length: 8 }, (_, id) => run(process.execPath, ['-e', writer, f.mnt, String(id), String(seed)])));
  for (const r of results) t.is(r.code, 0, r.stderr);
  const shared = fs.readFileSync(path.join(f.back, 'shared'));
  for (let id = 0; id < 8; id++) {
    t.true(shared.subarray(id * 50_000, (id + 1) * 50_000).every((b) => b === 65 + id), `writer ${id}'s range of the shared file`);
    const own = fs.readFileSync(path.join(f.back, `w${id}`));
    t.true(own.length > 0 && own.every((b) => b === 65 + id), `writer ${id}'s own file`);
  }
  const reader = await run(process.execPath, ['-e', `const c=require('crypto');process.stdout.write(c.createHash('sha256').update(require('fs').readFileSync(process.argv[1])).digest('hex'))`, path.join(f.mnt, 'shared')]);
  t.is(reader.stdout, sha(shared), 'another process reads what the writers wrote');
  await same(t, f, 'concurrent writers');
  const j = await journal(f);
  t.deepEqual(j.shared!.kinds, ['created', 'data']);
});

test('shared mmap writes and fsync reach the backing file', async (t) => {
  const f = await fixture(t);
  const p = path.join(f.mnt, 'blob');
  await sh(t, `python3 - <<'EOF'
import mmap, os
fd = os.open(${JSON.stringify(p)}, os.O_RDWR)
m = mmap.mmap(fd, 0)
m[70000:70005] = b'MMAPD'
m.flush()
m.close()
os.fsync(fd)
os.close(fd)
EOF`);
  const data = fs.readFileSync(path.join(f.back, 'blob'));
  t.is(data.subarray(70000, 70005).toString(), 'MMAPD');
  await same(t, f, 'mmap write');
  const j = await journal(f);
  t.deepEqual(j.blob!.extents, [{ offset: 65536, length: 65536 }]);
});

test('a file unlinked while open stays usable through its descriptor', async (t) => {
  const f = await fixture(t);
  const p = path.join(f.mnt, 'tmpfile');
  const out = await sh(t, `python3 - <<'EOF'
import os
fd = os.open(${JSON.stringify(p)}, os.O_RDWR | os.O_CREAT, 0o600)
os.write(fd, b'before')
os.unlink(${JSON.stringify(p)})
os.write(fd, b'-after')
os.lseek(fd, 0, 0)
print(os.read(fd, 100).decode(), os.fstat(fd).st_size, os.path.exists(${JSON.stringify(p)}))
os.close(fd)
EOF`);
  t.is(out.trim(), 'before-after 12 False');
  t.false(fs.readdirSync(f.back).some((n) => n.startsWith('.fuse_hidden')), 'no .fuse_hidden files are left');
  await same(t, f, 'unlink while open');
});

test('other users get ordinary permission checks and own what they create', async (t) => {
  const f = await fixture(t);
  await sh(t, `chmod 600 ${path.join(f.mnt, 'blob')} && mkdir -m 1777 ${path.join(f.mnt, 'pub')}`);
  const as = (cmd: string) => run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '/bin/sh', '-c', cmd]);
  const denied = await as(`cat ${path.join(f.mnt, 'blob')}`);
  t.not(denied.code, 0);
  t.regex(denied.stderr, /Permission denied/);
  const made = await as(`echo mine > ${path.join(f.mnt, 'pub', 'n')} && mkdir ${path.join(f.mnt, 'pub', 'd')} && ln -s n ${path.join(f.mnt, 'pub', 'l')}`);
  t.is(made.code, 0, made.stderr);
  for (const name of ['n', 'd', 'l']) {
    const st = fs.lstatSync(path.join(f.back, 'pub', name));
    t.is(st.uid, 65534, `${name} belongs to its creator`);
    t.is(st.gid, 65534);
  }
  await same(t, f, 'files made by another user');
});

test('.replfs is invisible and unreachable through the mount', async (t) => {
  const f = await fixture(t);
  t.false((await fsp.readdir(f.mnt)).includes('.replfs'));
  t.is((await t.throwsAsync(fsp.stat(path.join(f.mnt, '.replfs'))) as NodeJS.ErrnoException).code, 'ENOENT');
  t.is((await t.throwsAsync(fsp.readFile(path.join(f.mnt, '.replfs', 'config.json'))) as NodeJS.ErrnoException).code, 'ENOENT');
  t.truthy(await t.throwsAsync(fsp.mkdir(path.join(f.mnt, '.replfs'))));
  t.truthy(await t.throwsAsync(fsp.rename(path.join(f.mnt, 'blob'), path.join(f.mnt, '.replfs'))));
  t.true(fs.existsSync(path.join(f.back, '.replfs', 'config.json')), 'the state directory is untouched');
  t.true(fs.existsSync(path.join(f.back, 'blob')));
});

test('mounted in place: the same path keeps working, state stays hidden, files remain after unmount', async (t) => {
  const s = scratch(t);
  const dir = path.join(s.dir, 'inplace');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'f'), 'one');
  await initVolume(t, s, dir);
  await mountVolume(t, s, dir);
  t.is(await fsp.readFile(path.join(dir, 'f'), 'utf8'), 'one');
  await fsp.writeFile(path.join(dir, 'g'), 'two');
  t.deepEqual((await fsp.readdir(dir)).sort(), ['f', 'g']);
  const status = JSON.parse((await replfs(s, ['status', dir, '--json'])).stdout) as { mounted: boolean; mountpoint: string };
  t.true(status.mounted);
  t.is(status.mountpoint, dir);
  const r = await replfs(s, ['unmount', dir]);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(fs.readdirSync(dir).sort(), ['.replfs', 'f', 'g']);
  t.is(fs.readFileSync(path.join(dir, 'g'), 'utf8'), 'two');
});

test('random operations keep the mount and the backing directory identical', async (t) => {
  const f = await fixture(t);
  const seed = seedFromEnv('REPLFS_TEST_SEED');
  t.log('seed', seed);
  const rand = rng(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const steps = Number(process.env.REPLFS_TEST_STEPS ?? 150);
  const names = ['a', 'b', 'c', 'dir/d', 'dir/e', 'sub/f', 'sub/g'];
  await fsp.mkdir(path.join(f.mnt, 'sub'));
  for (let i = 0; i < steps; i++) {
    const p = path.join(f.mnt, pick(names));
    const q = path.join(f.mnt, pick(names));
    const op = pick(['write', 'write', 'append', 'truncate', 'rename', 'unlink', 'link', 'symlink', 'chmod']);
    try {
      switch (op) {
        case 'write': { const fh = await fsp.open(p, fs.existsSync(p) ? 'r+' : 'w'); const b = Buffer.alloc(1 + Math.floor(rand() * 100_000), i & 255); await fh.write(b, 0, b.length, Math.floor(rand() * 300_000)); await fh.close(); break; }
        case 'append': await fsp.appendFile(p, `step ${i}\n`); break;
        case 'truncate': await fsp.truncate(p, Math.floor(rand() * 200_000)); break;
        case 'rename': await fsp.rename(p, q); break;
        case 'unlink': await fsp.unlink(p); break;
        case 'link': await fsp.link(p, q); break;
        case 'symlink': await fsp.symlink(path.basename(q), p); break;
        case 'chmod': await fsp.chmod(p, 0o600 + Math.floor(rand() * 0o177)); break;
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (!['ENOENT', 'EEXIST', 'EISDIR', 'ENOTDIR', 'EPERM', 'ELOOP'].includes(code ?? '')) throw err;
    }
    if (i % 25 === 0) await same(t, f, `step ${i} (${op})`);
  }
  await same(t, f, 'the whole run');
});
