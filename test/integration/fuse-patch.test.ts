// Checks the replfs patch of fuse-native's C layer (src/native/setup.mjs) through a real
// mount: nanosecond getattr times, separate utimens atime/mtime with UTIME_NOW and
// UTIME_OMIT, open flags for create, and the caller's uid/gid/pid on every operation.
//
// The FUSE handlers run on this process's main thread, so every filesystem call the
// test makes on the mount is asynchronous (fs.promises or a child process): a
// synchronous call would block the handler that has to answer it.
import { execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import test from '../helpers/ava.js';

const require = createRequire(import.meta.url);

// The part of fuse-native's API this test uses. The patched JS handler signature is
// _op_<name>(signal, ...args, uid, gid, pid).
type Signal = (code: number, ...values: unknown[]) => void;
type Callback = (err: Error | null) => void;
interface FuseInstance {
  mount(cb: Callback): void;
  unmount(cb: Callback): void;
}
interface FuseOptions {
  force?: boolean;
  mkdir?: boolean;
  timeout?: number | false;
  autoUnmount?: boolean;
}
type FuseConstructor = new (mnt: string, ops: Record<string, unknown>, opts?: FuseOptions) => FuseInstance;

const fuseNativeDir = path.dirname(require.resolve('fuse-native/package.json'));
const Fuse = require('fuse-native') as FuseConstructor;

const UTIME_NOW = (1 << 30) - 1;
const UTIME_OMIT = (1 << 30) - 2;
const { O_EXCL, O_WRONLY } = fs.constants;
const O_ACCMODE = 3;

interface Time {
  sec: number;
  nsec: number;
}
interface Entry {
  ino: number;
  mode: number;
  size: number;
  atime: Time;
  mtime: Time;
  ctime: Time;
}
interface Call {
  op: string;
  path: string;
  args: number[];
  uid: number;
  gid: number;
  pid: number;
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

function nowTime(): Time {
  const ms = Date.now();
  return { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1_000_000 };
}

function timeNs(t: Time): bigint {
  return BigInt(t.sec) * 1_000_000_000n + BigInt(t.nsec);
}

/** The patched stat encoding: seconds then nanoseconds for each timestamp. */
function statArray(e: Entry): Uint32Array {
  const a = new Uint32Array(18);
  a[0] = e.mode;
  a[1] = process.getuid?.() ?? 0;
  a[2] = process.getgid?.() ?? 0;
  a[3] = e.size % 2 ** 32;
  a[4] = Math.floor(e.size / 2 ** 32);
  a[5] = 0;
  a[6] = (e.mode & S_IFDIR) !== 0 ? 2 : 1;
  a[7] = e.ino;
  a[8] = 0;
  a[9] = 4096;
  a[10] = Math.ceil(e.size / 512);
  a[11] = 0;
  a[12] = e.atime.sec;
  a[13] = e.atime.nsec;
  a[14] = e.mtime.sec;
  a[15] = e.mtime.nsec;
  a[16] = e.ctime.sec;
  a[17] = e.ctime.nsec;
  return a;
}

const entries = new Map<string, Entry>();
let nextIno = 2;
function addEntry(p: string, mode: number, time: Time): Entry {
  const e: Entry = { ino: nextIno++, mode, size: 0, atime: { ...time }, mtime: { ...time }, ctime: { ...time } };
  entries.set(p, e);
  return e;
}
addEntry('/', S_IFDIR | 0o755, { sec: 1_000_000_000, nsec: 0 });
addEntry('/f', S_IFREG | 0o644, { sec: 1_000_000_000, nsec: 0 });

const calls: Call[] = [];

class TestFs extends Fuse {
  private run(signal: Signal, op: string, p: string, args: number[], ctx: number[], body: () => void): void {
    const [uid = -1, gid = -1, pid = -1] = ctx;
    calls.push({ op, path: p, args, uid, gid, pid });
    try {
      body();
    } catch {
      signal(-5);
    }
  }

  _op_getattr(signal: Signal, p: string, ...ctx: number[]): void {
    this.run(signal, 'getattr', p, [], ctx, () => {
      const e = entries.get(p);
      if (e) signal(0, statArray(e));
      else signal(-2);
    });
  }

  _op_readdir(signal: Signal, p: string, ...ctx: number[]): void {
    this.run(signal, 'readdir', p, [], ctx, () => {
      if (p !== '/') return signal(-20);
      const names: string[] = [];
      const stats: Uint32Array[] = [];
      for (const [name, e] of entries) {
        if (name === '/') continue;
        names.push(name.slice(1));
        stats.push(statArray(e));
      }
      signal(0, names, stats);
    });
  }

  _op_open(signal: Signal, p: string, flags: number, ...ctx: number[]): void {
    this.run(signal, 'open', p, [flags], ctx, () => {
      if (entries.has(p)) signal(0, 10);
      else signal(-2);
    });
  }

  _op_create(signal: Signal, p: string, mode: number, flags: number, ...ctx: number[]): void {
    this.run(signal, 'create', p, [mode, flags], ctx, () => {
      if (entries.has(p)) {
        if ((flags & O_EXCL) !== 0) return signal(-17);
      } else {
        addEntry(p, mode, nowTime());
      }
      signal(0, 11);
    });
  }

  _op_release(signal: Signal, p: string, fd: number, ...ctx: number[]): void {
    this.run(signal, 'release', p, [fd], ctx, () => signal(0));
  }

  _op_utimens(signal: Signal, p: string, aSec: number, aNsec: number, mSec: number, mNsec: number, ...ctx: number[]): void {
    this.run(signal, 'utimens', p, [aSec, aNsec, mSec, mNsec], ctx, () => {
      const e = entries.get(p);
      if (!e) return signal(-2);
      const apply = (sec: number, nsec: number): Time | null =>
        nsec === UTIME_OMIT ? null : nsec === UTIME_NOW ? nowTime() : { sec, nsec };
      e.atime = apply(aSec, aNsec) ?? e.atime;
      e.mtime = apply(mSec, mNsec) ?? e.mtime;
      e.ctime = nowTime();
      signal(0);
    });
  }
}

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'replfs-fuse-patch-'));
const mnt = path.join(tmpRoot, 'mnt');
const fileF = path.join(mnt, 'f');
let fuse: TestFs | null = null;
let mounted = false;

function isMounted(dir: string): boolean {
  // /proc/mounts is not on the FUSE mount, so reading it synchronously is safe.
  return fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[1] === dir);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

interface ChildResult {
  pid: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[]): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = execFile(cmd, args, { env: { ...process.env, TZ: 'UTC' } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message} ${stderr}`));
      else resolve({ pid: child.pid ?? -1, stdout, stderr });
    });
  });
}

/** Calls of op since `start`, for path p. */
function callsOf(start: number, op: string, p: string): Call[] {
  return calls.slice(start).filter((c) => c.op === op && c.path === p);
}

const TOUCH_DATE = '2020-01-02 03:04:05.123456789';
const TOUCH_SEC = Date.UTC(2020, 0, 2, 3, 4, 5) / 1000;
const TOUCH_NSEC = 123_456_789;

test.before(async () => {
  const built = path.join(fuseNativeDir, 'build', 'Release', 'fuse.node');
  const source = fs.readFileSync(path.join(fuseNativeDir, 'fuse-native.c'), 'utf8');
  if (!fs.existsSync(built) || !source.includes('/* replfs-patch v')) {
    throw new Error('fuse-native is not patched and rebuilt: run node src/native/setup.mjs');
  }
  fuse = new TestFs(
    mnt,
    { getattr: true, readdir: true, open: true, create: true, release: true, utimens: true },
    // auto_unmount: the mount goes away even if this worker is killed (e.g. by a timeout).
    { force: true, mkdir: true, autoUnmount: true },
  );
  const instance = fuse;
  await withTimeout(
    new Promise<void>((resolve, reject) => instance.mount((err) => (err ? reject(err) : resolve()))),
    15_000,
    'mount',
  );
  mounted = true;
});

test.after.always(async () => {
  try {
    if (fuse && mounted) {
      const instance = fuse;
      await withTimeout(
        new Promise<void>((resolve) => instance.unmount(() => resolve())),
        10_000,
        'unmount',
      ).catch(() => undefined);
    }
  } finally {
    if (isMounted(mnt)) {
      await run('fusermount', ['-uz', mnt]).catch(() => undefined);
    }
    if (!isMounted(mnt)) {
      await fs.promises.rm(tmpRoot, { recursive: true, force: true });
    }
  }
});

test.serial('the mount serves / and /f', async (t) => {
  t.true(isMounted(mnt));
  t.deepEqual(await fs.promises.readdir(mnt), ['f']);
  const st = await fs.promises.stat(fileF);
  t.true(st.isFile());
});

test.serial('getattr returns exact nanoseconds for atime, mtime and ctime', async (t) => {
  // A name never looked up before, so the kernel has no cached attributes for it.
  const e = addEntry('/g', S_IFREG | 0o600, { sec: 0, nsec: 0 });
  e.atime = { sec: 1_111_111_111, nsec: 1 };
  e.mtime = { sec: 1_577_934_245, nsec: 123_456_789 };
  e.ctime = { sec: 4_000_000_000, nsec: 999_999_999 };
  const st = await fs.promises.stat(path.join(mnt, 'g'), { bigint: true });
  t.is(st.atimeNs, 1_111_111_111_000_000_001n);
  t.is(st.mtimeNs, 1_577_934_245_123_456_789n);
  t.is(st.ctimeNs, 4_000_000_000_999_999_999n);
  t.is(Number(st.mode), S_IFREG | 0o600);
  entries.delete('/g');
});

test.serial('utimes delivers separate atime and mtime with nanoseconds', async (t) => {
  const start = calls.length;
  await fs.promises.utimes(fileF, 1_000_000_000.5, 2_000_000_000.25);
  const u = callsOf(start, 'utimens', '/f');
  t.is(u.length, 1);
  t.deepEqual(u[0]?.args, [1_000_000_000, 500_000_000, 2_000_000_000, 250_000_000]);
  const st = await fs.promises.stat(fileF, { bigint: true });
  t.is(st.atimeNs, 1_000_000_000_500_000_000n);
  t.is(st.mtimeNs, 2_000_000_000_250_000_000n);
});

test.serial('touch -m -d: mtime with nanoseconds, atime UTIME_OMIT', async (t) => {
  const before = entries.get('/f')?.atime;
  const start = calls.length;
  await run('touch', ['-m', '-d', TOUCH_DATE, fileF]);
  const u = callsOf(start, 'utimens', '/f');
  t.is(u.length, 1);
  t.is(u[0]?.args[1], UTIME_OMIT);
  t.deepEqual(u[0]?.args.slice(2), [TOUCH_SEC, TOUCH_NSEC]);
  const st = await fs.promises.stat(fileF, { bigint: true });
  t.is(st.mtimeNs, BigInt(TOUCH_SEC) * 1_000_000_000n + BigInt(TOUCH_NSEC));
  t.is(st.atimeNs, before ? timeNs(before) : -1n);
});

test.serial('touch -a -d: atime with nanoseconds, mtime UTIME_OMIT', async (t) => {
  await fs.promises.utimes(fileF, 1_000_000_000, 1_300_000_000);
  const start = calls.length;
  await run('touch', ['-a', '-d', TOUCH_DATE, fileF]);
  const u = callsOf(start, 'utimens', '/f');
  t.is(u.length, 1);
  t.deepEqual(u[0]?.args.slice(0, 2), [TOUCH_SEC, TOUCH_NSEC]);
  t.is(u[0]?.args[3], UTIME_OMIT);
  const st = await fs.promises.stat(fileF, { bigint: true });
  t.is(st.atimeNs, BigInt(TOUCH_SEC) * 1_000_000_000n + BigInt(TOUCH_NSEC));
  t.is(st.mtimeNs, 1_300_000_000_000_000_000n);
});

test.serial('touch -m: atime UTIME_OMIT, mtime UTIME_NOW; plain touch: both UTIME_NOW', async (t) => {
  await fs.promises.utimes(fileF, 1_000_000_000, 1_000_000_000);
  let start = calls.length;
  const t0 = Date.now();
  await run('touch', ['-m', fileF]);
  let u = callsOf(start, 'utimens', '/f');
  t.is(u.length, 1);
  t.is(u[0]?.args[1], UTIME_OMIT);
  t.is(u[0]?.args[3], UTIME_NOW);
  let st = await fs.promises.stat(fileF, { bigint: true });
  t.is(st.atimeNs, 1_000_000_000_000_000_000n);
  t.true(st.mtimeMs >= BigInt(t0 - 2000) && st.mtimeMs <= BigInt(Date.now() + 2000));

  start = calls.length;
  await fs.promises.utimes(fileF, 1_000_000_000, 1_000_000_000);
  await run('touch', [fileF]);
  u = callsOf(start, 'utimens', '/f');
  t.is(u.length, 2);
  t.is(u[1]?.args[1], UTIME_NOW);
  t.is(u[1]?.args[3], UTIME_NOW);
  st = await fs.promises.stat(fileF, { bigint: true });
  t.true(st.atimeMs >= BigInt(t0 - 2000));
  t.true(st.mtimeMs >= BigInt(t0 - 2000));
});

test.serial('create receives the open flags, including O_EXCL', async (t) => {
  const start = calls.length;
  const handle = await fs.promises.open(path.join(mnt, 'new'), 'wx', 0o640);
  await handle.close();
  const c = callsOf(start, 'create', '/new');
  t.is(c.length, 1);
  const [mode = 0, flags = 0] = c[0]?.args ?? [];
  t.is(mode & 0o170000, S_IFREG);
  t.is(mode & 0o777, 0o640 & ~process.umask());
  t.not(flags & O_EXCL, 0, `flags 0o${flags.toString(8)} lack O_EXCL`);
  t.is(flags & O_ACCMODE, O_WRONLY);
  t.log(`create flags: 0o${flags.toString(8)}`);

  await t.throwsAsync(fs.promises.open(path.join(mnt, 'new'), 'wx'), { code: 'EEXIST' });
  entries.delete('/new');
});

test.serial('uid, gid and pid of the caller arrive with every operation', async (t) => {
  const uid = process.getuid?.() ?? -1;
  const gid = process.getgid?.() ?? -1;

  const start = calls.length;
  const child = await run('touch', ['-m', '-d', TOUCH_DATE, fileF]);
  const mine = calls.slice(start).filter((c) => c.path === '/f');
  t.true(mine.length > 0);
  const u = callsOf(start, 'utimens', '/f');
  t.is(u.length, 1);
  t.is(u[0]?.pid, child.pid, 'utimens pid is the touch process');
  t.is(u[0]?.uid, uid);
  t.is(u[0]?.gid, gid);
  const open = callsOf(start, 'open', '/f');
  t.is(open[0]?.pid, child.pid, 'open pid is the touch process');
  for (const c of calls) {
    t.true(Number.isInteger(c.uid) && c.uid >= 0, `${c.op} uid`);
    t.true(Number.isInteger(c.gid) && c.gid >= 0, `${c.op} gid`);
    t.true(Number.isInteger(c.pid) && c.pid >= 0, `${c.op} pid`);
    // The kernel sends release without caller credentials (pid 0).
    if (c.op !== 'release') t.true(c.pid > 0, `${c.op} pid`);
  }

  // From this process the pid is the thread (a libuv pool thread) that made the call.
  const start2 = calls.length;
  await fs.promises.utimes(fileF, 1_000_000_000, 1_000_000_000);
  const own = callsOf(start2, 'utimens', '/f');
  t.is(own.length, 1);
  const tid = own[0]?.pid ?? -1;
  t.true(fs.existsSync(`/proc/${process.pid}/task/${tid}`), `pid ${tid} is a thread of this process`);
});
