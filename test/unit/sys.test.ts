import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from '../helpers/ava.js';
import {
  DT_DIR,
  DT_FIFO,
  DT_LNK,
  DT_REG,
  UTIME_NOW,
  UTIME_OMIT,
  XATTR_CREATE,
  XATTR_REPLACE,
  futimens,
  isSysError,
  lgetxattr,
  llistxattr,
  lremovexattr,
  lsetxattr,
  mknod,
  readdirIno,
  readdirStat,
  readdirStatMany,
  readdirStatSync,
  STAT_FIELDS,
  StatField,
  utimensat,
} from '../../src/volume/sys.js';
import type { DirStats, SysError } from '../../src/volume/sys.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'replfs-sys-'));
let counter = 0;

/** A fresh, empty directory for one test. */
function freshDir(): string {
  const dir = path.join(root, `t${counter++}`);
  fs.mkdirSync(dir);
  return dir;
}

function freshFile(content = 'data'): string {
  const file = path.join(freshDir(), 'f');
  fs.writeFileSync(file, content);
  return file;
}

test.after.always(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

async function rejectsWith(p: Promise<unknown>, code: string, syscall: string, file?: string): Promise<SysError> {
  try {
    await p;
  } catch (err) {
    if (!isSysError(err)) throw new Error(`expected a SysError, got ${String(err)}`);
    if (err.code !== code) throw new Error(`expected ${code}, got ${err.code}: ${err.message}`);
    const expectedErrno = (os.constants.errno as Record<string, number>)[code];
    if (err.errno !== -(expectedErrno ?? NaN)) throw new Error(`errno ${err.errno} is not -${String(expectedErrno)}`);
    if (err.syscall !== syscall) throw new Error(`syscall ${err.syscall} is not ${syscall}`);
    if (file !== undefined && err.path !== file) throw new Error(`path ${String(err.path)} is not ${file}`);
    return err;
  }
  throw new Error(`expected rejection with ${code}`);
}

test('constants', (t) => {
  t.is(UTIME_NOW, (1 << 30) - 1);
  t.is(UTIME_OMIT, (1 << 30) - 2);
});

test('xattr: set, get, list, remove', async (t) => {
  const f = freshFile();
  t.deepEqual(await llistxattr(f), []);
  await lsetxattr(f, 'user.replfs.a', Buffer.from('hello'), 0);
  await lsetxattr(f, 'user.replfs.empty', Buffer.alloc(0), 0);
  const big = Buffer.alloc(3000, 0xab);
  await lsetxattr(f, 'user.replfs.big', big, 0);

  t.deepEqual(await lgetxattr(f, 'user.replfs.a'), Buffer.from('hello'));
  const empty = await lgetxattr(f, 'user.replfs.empty');
  t.true(Buffer.isBuffer(empty));
  t.is(empty.length, 0);
  t.deepEqual(await lgetxattr(f, 'user.replfs.big'), big);
  t.deepEqual((await llistxattr(f)).sort(), ['user.replfs.a', 'user.replfs.big', 'user.replfs.empty']);

  await lsetxattr(f, 'user.replfs.a', Buffer.from('replaced'), XATTR_REPLACE);
  t.deepEqual(await lgetxattr(f, 'user.replfs.a'), Buffer.from('replaced'));

  await lremovexattr(f, 'user.replfs.a');
  await rejectsWith(lgetxattr(f, 'user.replfs.a'), 'ENODATA', 'lgetxattr', f);
  t.deepEqual((await llistxattr(f)).sort(), ['user.replfs.big', 'user.replfs.empty']);
});

test('xattr: error paths', async (t) => {
  const f = freshFile();
  const missing = path.join(path.dirname(f), 'missing');
  await lsetxattr(f, 'user.replfs.x', Buffer.from('1'), 0);

  const err = await rejectsWith(lgetxattr(f, 'user.replfs.nope'), 'ENODATA', 'lgetxattr', f);
  t.true(err instanceof Error);
  t.regex(err.message, /^ENODATA: /);
  await rejectsWith(lsetxattr(f, 'user.replfs.x', Buffer.from('2'), XATTR_CREATE), 'EEXIST', 'lsetxattr', f);
  await rejectsWith(lsetxattr(f, 'user.replfs.y', Buffer.from('2'), XATTR_REPLACE), 'ENODATA', 'lsetxattr', f);
  await rejectsWith(lremovexattr(f, 'user.replfs.nope'), 'ENODATA', 'lremovexattr', f);
  await rejectsWith(lgetxattr(missing, 'user.replfs.x'), 'ENOENT', 'lgetxattr', missing);
  await rejectsWith(lsetxattr(missing, 'user.replfs.x', Buffer.from('1'), 0), 'ENOENT', 'lsetxattr', missing);
  await rejectsWith(llistxattr(missing), 'ENOENT', 'llistxattr', missing);
  await rejectsWith(lremovexattr(missing, 'user.replfs.x'), 'ENOENT', 'lremovexattr', missing);
  // Unknown namespace.
  await rejectsWith(lsetxattr(f, 'bogus.x', Buffer.from('1'), 0), 'ENOTSUP', 'lsetxattr', f);
  // The value is unchanged by the failed calls.
  t.deepEqual(await lgetxattr(f, 'user.replfs.x'), Buffer.from('1'));
});

test('xattr: does not follow a final symlink', async (t) => {
  const f = freshFile();
  const link = path.join(path.dirname(f), 'link');
  fs.symlinkSync(f, link);
  await lsetxattr(f, 'user.replfs.target', Buffer.from('t'), 0);
  await rejectsWith(lgetxattr(link, 'user.replfs.target'), 'ENODATA', 'lgetxattr', link);
  t.false((await llistxattr(link)).includes('user.replfs.target'));
  // user.* attributes are not permitted on symlinks themselves.
  await rejectsWith(lsetxattr(link, 'user.replfs.x', Buffer.from('1'), 0), 'EPERM', 'lsetxattr', link);
});

test('invalid arguments reject with a TypeError', async (t) => {
  const bad = 42 as unknown as string;
  const err = await t.throwsAsync(lgetxattr(bad, 'user.x'), { instanceOf: TypeError });
  t.is((err as Error & { code?: string }).code, 'ERR_INVALID_ARG_TYPE');
  const nul = await t.throwsAsync(llistxattr('/tmp/a\0b'), { instanceOf: TypeError });
  t.is((nul as Error & { code?: string }).code, 'ERR_INVALID_ARG_VALUE');
  await t.throwsAsync(lsetxattr('/tmp', 'user.x', 'str' as unknown as Buffer, 0), { instanceOf: TypeError });
});

test('utimensat: exact nanoseconds, separate atime and mtime', async (t) => {
  const f = freshFile();
  await utimensat(f, 1_000_000_000, 111_111_111, 1_577_934_245, 123_456_789, false);
  let st = fs.lstatSync(f, { bigint: true });
  t.is(st.atimeNs, 1_000_000_000_111_111_111n);
  t.is(st.mtimeNs, 1_577_934_245_123_456_789n);

  // Beyond 32 bits and before the epoch.
  await utimensat(f, 5_000_000_000, 1, -1_000_000, 999_999_999, false);
  st = fs.lstatSync(f, { bigint: true });
  t.is(st.atimeNs, 5_000_000_000_000_000_001n);
  t.is(st.mtimeNs, -1_000_000n * 1_000_000_000n + 999_999_999n);
});

test('utimensat: UTIME_OMIT leaves a time unchanged, UTIME_NOW sets now', async (t) => {
  const f = freshFile();
  await utimensat(f, 1_000_000_000, 5, 1_100_000_000, 7, false);

  await utimensat(f, 0, UTIME_OMIT, 1_200_000_000, 9, false);
  let st = fs.lstatSync(f, { bigint: true });
  t.is(st.atimeNs, 1_000_000_000_000_000_005n);
  t.is(st.mtimeNs, 1_200_000_000_000_000_009n);

  const before = BigInt(Date.now() - 2000) * 1_000_000n;
  await utimensat(f, 0, UTIME_NOW, 0, UTIME_OMIT, false);
  const after = BigInt(Date.now() + 2000) * 1_000_000n;
  st = fs.lstatSync(f, { bigint: true });
  t.true(st.atimeNs >= before && st.atimeNs <= after, `atime ${st.atimeNs} is not now`);
  t.is(st.mtimeNs, 1_200_000_000_000_000_009n);
});

test('utimensat: nofollow changes the symlink itself', async (t) => {
  const f = freshFile();
  const link = path.join(path.dirname(f), 'link');
  fs.symlinkSync('f', link);
  await utimensat(f, 1_000_000_000, 0, 1_000_000_000, 0, false);

  await utimensat(link, 1_300_000_000, 1, 1_300_000_000, 2, true);
  t.is(fs.lstatSync(link, { bigint: true }).mtimeNs, 1_300_000_000_000_000_002n);
  t.is(fs.lstatSync(f, { bigint: true }).mtimeNs, 1_000_000_000_000_000_000n);

  // Without nofollow, the target changes.
  await utimensat(link, 1_400_000_000, 3, 1_400_000_000, 4, false);
  t.is(fs.lstatSync(f, { bigint: true }).mtimeNs, 1_400_000_000_000_000_004n);
  t.is(fs.lstatSync(link, { bigint: true }).mtimeNs, 1_300_000_000_000_000_002n);
});

test('utimensat: errors', async (t) => {
  const dir = freshDir();
  const missing = path.join(dir, 'missing');
  await rejectsWith(utimensat(missing, 0, 0, 0, 0, false), 'ENOENT', 'utimensat', missing);
  await rejectsWith(utimensat(dir, 0, 2_000_000_000, 0, 0, false), 'EINVAL', 'utimensat', dir);
  t.pass();
});

test('futimens: exact nanoseconds and UTIME_OMIT', async (t) => {
  const f = freshFile();
  const fd = fs.openSync(f, 'r+');
  try {
    await futimens(fd, 1_500_000_000, 42, 1_600_000_000, 999_999_999);
    let st = fs.lstatSync(f, { bigint: true });
    t.is(st.atimeNs, 1_500_000_000_000_000_042n);
    t.is(st.mtimeNs, 1_600_000_000_999_999_999n);
    await futimens(fd, 1_700_000_000, 1, 0, UTIME_OMIT);
    st = fs.lstatSync(f, { bigint: true });
    t.is(st.atimeNs, 1_700_000_000_000_000_001n);
    t.is(st.mtimeNs, 1_600_000_000_999_999_999n);
  } finally {
    fs.closeSync(fd);
  }
  const err = await rejectsWith(futimens(fd, 0, 0, 0, 0), 'EBADF', 'futimens');
  t.is(err.path, undefined);
});

test('mknod: creates a FIFO', async (t) => {
  const dir = freshDir();
  const fifo = path.join(dir, 'fifo');
  await mknod(fifo, fs.constants.S_IFIFO | 0o644, 0);
  const st = fs.lstatSync(fifo);
  t.true(st.isFIFO());
  t.is(st.mode & 0o7777 & ~0o644, 0);
  t.is(st.mode & 0o600, 0o600);
  await rejectsWith(mknod(fifo, fs.constants.S_IFIFO | 0o644, 0), 'EEXIST', 'mknod', fifo);
  const deep = path.join(dir, 'no', 'fifo');
  await rejectsWith(mknod(deep, fs.constants.S_IFIFO | 0o644, 0), 'ENOENT', 'mknod', deep);
});

test('readdirIno: names, inode numbers and types match lstat', async (t) => {
  const dir = freshDir();
  fs.writeFileSync(path.join(dir, 'file'), 'x');
  fs.mkdirSync(path.join(dir, 'sub'));
  fs.symlinkSync('file', path.join(dir, 'link'));
  await mknod(path.join(dir, 'fifo'), fs.constants.S_IFIFO | 0o644, 0);
  fs.writeFileSync(path.join(dir, 'ünïcödé name'), '');

  const res = await readdirIno(dir);
  t.is(res.names.length, res.inos.length);
  t.is(res.names.length, res.types.length);
  t.deepEqual([...res.names].sort(), ['fifo', 'file', 'link', 'sub', 'ünïcödé name']);

  const expectedType = (st: fs.Stats): number =>
    st.isDirectory() ? DT_DIR : st.isSymbolicLink() ? DT_LNK : st.isFIFO() ? DT_FIFO : DT_REG;
  res.names.forEach((name, i) => {
    const st = fs.lstatSync(path.join(dir, name));
    t.is(res.inos[i], st.ino, `ino of ${name}`);
    t.is(res.types[i], expectedType(st), `type of ${name}`);
  });

  t.deepEqual(await readdirIno(freshDir()), { names: [], inos: [], types: [] });
});

test('readdirIno: errors', async (t) => {
  const f = freshFile();
  const missing = path.join(path.dirname(f), 'missing');
  await rejectsWith(readdirIno(missing), 'ENOENT', 'readdir', missing);
  await rejectsWith(readdirIno(f), 'ENOTDIR', 'readdir', f);
  t.pass();
});

/** The numbers lstat gives, in a readdirStat row's terms (see StatField). */
function rowOfLstat(file: string): number[] {
  const st = fs.lstatSync(file, { bigint: true });
  const time = (ns: bigint): [number, number] => {
    let nsec = ns % 1_000_000_000n;
    if (nsec < 0n) nsec += 1_000_000_000n;
    return [Number((ns - nsec) / 1_000_000_000n), Number(nsec)];
  };
  const dev = BigInt.asUintN(64, st.dev);
  return [
    Number(st.ino), Number(st.mode), Number(st.nlink), Number(st.size),
    ...time(st.mtimeNs), ...time(st.ctimeNs), ...time(st.birthtimeNs),
    Number(dev >> 32n), Number(dev & 0xffffffffn), Number(st.rdev), 0,
  ];
}

function rowOf(res: DirStats, name: string): number[] {
  const i = res.names.indexOf(name);
  return [...res.stats.subarray(i * STAT_FIELDS, (i + 1) * STAT_FIELDS)];
}

test('readdirStat: every entry with the numbers lstat gives', async (t) => {
  const dir = freshDir();
  fs.writeFileSync(path.join(dir, 'file'), 'some bytes');
  fs.linkSync(path.join(dir, 'file'), path.join(dir, 'hardlink'));
  fs.mkdirSync(path.join(dir, 'sub'));
  fs.symlinkSync('file', path.join(dir, 'link'));
  await mknod(path.join(dir, 'fifo'), fs.constants.S_IFIFO | 0o644, 0);
  fs.writeFileSync(path.join(dir, 'ünïcödé name'), '');
  fs.writeFileSync(path.join(dir, 'old'), '');
  await utimensat(path.join(dir, 'old'), 0, 0, -5, 250_000_000, false);
  fs.writeFileSync(path.join(dir, 'exact'), '');
  await utimensat(path.join(dir, 'exact'), 0, 0, 1_000_000_000, 123_456_789, false);

  const res = await readdirStat(dir);
  t.true(res.stats instanceof Float64Array);
  t.is(res.stats.length, res.names.length * STAT_FIELDS);
  t.deepEqual(res.names, (await readdirIno(dir)).names, 'the names and the order of readdirIno');
  t.deepEqual([...res.names].sort(), ['exact', 'fifo', 'file', 'hardlink', 'link', 'old', 'sub', 'ünïcödé name']);
  for (const name of res.names) t.deepEqual(rowOf(res, name), rowOfLstat(path.join(dir, name)), name);
  t.is(rowOf(res, 'file')[StatField.nlink], 2);
  t.is(rowOf(res, 'file')[StatField.size], 10);
  t.deepEqual(rowOf(res, 'old').slice(StatField.mtimeSec, StatField.mtimeNsec + 1), [-5, 250_000_000]);
  t.deepEqual(rowOf(res, 'exact').slice(StatField.mtimeSec, StatField.mtimeNsec + 1), [1_000_000_000, 123_456_789]);

  t.deepEqual(readdirStatSync(dir), res, 'the synchronous variant gives the same');
  const empty = freshDir();
  t.deepEqual(await readdirStat(empty), { names: [], stats: new Float64Array(0) });
  t.deepEqual(readdirStatSync(empty), { names: [], stats: new Float64Array(0) });
});

test('readdirStat: a name that is not UTF-8 keeps its place, converted as readdirIno does, with EILSEQ', async (t) => {
  const dir = freshDir();
  fs.writeFileSync(path.join(dir, 'fine'), 'x');
  fs.writeFileSync(Buffer.concat([Buffer.from(`${dir}/bad`), Buffer.from([0xff, 0x41])]), 'y');
  const res = await readdirStat(dir);
  t.deepEqual(res.names, (await readdirIno(dir)).names);
  t.true(res.names.includes('bad\ufffdA'));
  const bad = rowOf(res, 'bad\ufffdA');
  t.is(bad[StatField.errno], os.constants.errno.EILSEQ);
  t.deepEqual(bad.slice(0, StatField.errno), new Array<number>(StatField.errno).fill(0));
  t.deepEqual(rowOf(res, 'fine'), rowOfLstat(path.join(dir, 'fine')));
  t.deepEqual(readdirStatSync(dir), res);
});

test('readdirStat: errors', async (t) => {
  const f = freshFile();
  const missing = path.join(path.dirname(f), 'missing');
  await rejectsWith(readdirStat(missing), 'ENOENT', 'readdir', missing);
  await rejectsWith(readdirStat(f), 'ENOTDIR', 'readdir', f);
  await rejectsWith((async () => readdirStatSync(missing))(), 'ENOENT', 'readdir', missing);
  await rejectsWith((async () => readdirStatSync(f))(), 'ENOTDIR', 'readdir', f);
  const err = t.throws(() => readdirStatSync(42 as unknown as string));
  t.is((err as NodeJS.ErrnoException).code, 'ERR_INVALID_ARG_TYPE');
  await t.throwsAsync(readdirStat('a\0b'), { code: 'ERR_INVALID_ARG_VALUE' });
});

test('readdirStatMany: for each path what readdirStat gives, or the error it rejects with', async (t) => {
  const full = freshDir();
  for (let i = 0; i < 300; i++) fs.writeFileSync(path.join(full, `f${i}`), 'x'.repeat(i));
  fs.mkdirSync(path.join(full, 'sub'));
  fs.writeFileSync(Buffer.concat([Buffer.from(`${full}/bad`), Buffer.from([0xc0, 0x80])]), '');
  const empty = freshDir();
  const file = freshFile();
  const missing = path.join(empty, 'missing');
  const paths = [full, missing, empty, file, path.join(full, 'sub'), full];
  const many = await readdirStatMany(paths);
  t.is(many.length, paths.length);
  for (const [i, p] of paths.entries()) {
    const one = await readdirStat(p).catch((err: unknown) => err);
    const got = many[i]!;
    if (one instanceof Error) {
      t.true(got instanceof Error, p);
      t.deepEqual({ ...(got as SysError), message: (got as SysError).message }, { ...(one as SysError), message: one.message }, p);
    } else {
      t.deepEqual(got, one, p);
    }
  }
  t.is((many[0] as DirStats).names.length, 302);
  t.deepEqual(await readdirStatMany([]), []);
  await t.throwsAsync(readdirStatMany('nope' as unknown as string[]), { code: 'ERR_INVALID_ARG_TYPE' });
  await t.throwsAsync(readdirStatMany([full, 7 as unknown as string]), { code: 'ERR_INVALID_ARG_TYPE' });
  await t.throwsAsync(readdirStatMany(['a\0b']), { code: 'ERR_INVALID_ARG_VALUE' });
});

test('readdirStat: entries removed while it runs are left out, never an error', async (t) => {
  // The call runs on the thread pool while this thread unlinks, from the end of the
  // directory's order, the entries it has yet to reach: those it read but finds gone
  // when it looks at them are left out.
  const dir = freshDir();
  const count = 4000;
  for (let i = 0; i < count; i++) fs.writeFileSync(path.join(dir, `f${i}`), '');
  const inos = new Map(fs.readdirSync(dir).map((n) => [n, fs.lstatSync(path.join(dir, n)).ino]));
  let partial = 0;
  for (let attempt = 0; attempt < 20 && partial === 0; attempt++) {
    const order = (await readdirIno(dir)).names;
    const running = readdirStat(dir);
    for (let i = order.length - 1; i >= 0; i--) fs.unlinkSync(path.join(dir, order[i]!));
    const res = await running;
    const wrong = res.names.filter((name, i) =>
      res.stats[i * STAT_FIELDS + StatField.errno] !== 0 || res.stats[i * STAT_FIELDS + StatField.ino] !== inos.get(name));
    t.deepEqual(wrong, [], 'every entry listed has the numbers of the file it named');
    if (res.names.length > 0 && res.names.length < order.length) partial++;
    for (const name of inos.keys()) {
      fs.writeFileSync(path.join(dir, name), '');
      inos.set(name, fs.lstatSync(path.join(dir, name)).ino);
    }
  }
  t.log(partial > 0 ? 'caught a listing that lost entries while it ran' : 'the race did not happen this time');
  t.pass();
});

test('calls run concurrently off the main thread', async (t) => {
  const dir = freshDir();
  const files = Array.from({ length: 50 }, (_, i) => path.join(dir, `f${i}`));
  for (const f of files) fs.writeFileSync(f, '');
  await Promise.all(files.map((f, i) => lsetxattr(f, 'user.replfs.i', Buffer.from(String(i)), 0)));
  const values = await Promise.all(files.map((f) => lgetxattr(f, 'user.replfs.i')));
  t.deepEqual(
    values.map((v) => v.toString()),
    files.map((_, i) => String(i)),
  );
});
