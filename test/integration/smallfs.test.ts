// The small-filesystem helper itself: it really runs out of space, keeps what was written
// before that, is about the size asked for, goes away at teardown and does not collide
// with itself in parallel tests.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import test from '../helpers/ava.js';
import { run, waitFor } from '../helpers/env.js';
import { smallFilesystem, unmountSmallFilesystem, smallFilesystemInfo, smallFilesystemLeftovers } from '../helpers/smallfs.js';

const MiB = 1024 * 1024;

function inProcMounts(dir: string): boolean {
  // /proc/mounts escapes spaces and the like as \ooo; our paths have none.
  return fs.readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === dir);
}

function errnoCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string' ? (e as { code: string }).code : undefined;
}

function freeBytes(dir: string): number {
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}

test('writeSync past the size fails with ENOSPC, and what was written before is intact', async (t) => {
  const dir = await smallFilesystem(t, 16);
  t.log(`backed by ${smallFilesystemInfo(dir)?.kind ?? '?'}`);
  t.deepEqual(fs.readdirSync(dir), [], 'a fresh filesystem is empty');
  const before = randomBytes(64 * 1024);
  fs.writeFileSync(path.join(dir, 'before.bin'), before);

  const data = randomBytes(32 * MiB);
  const file = path.join(dir, 'fill.bin');
  const fd = fs.openSync(file, 'w');
  let written = 0;
  let error: unknown;
  try {
    while (written < data.length) {
      // Short writes happen just before the end; the next call then fails.
      written += fs.writeSync(fd, data, written, Math.min(MiB, data.length - written));
    }
  } catch (e) {
    error = e;
  }
  t.is(errnoCode(error), 'ENOSPC', `expected ENOSPC, got ${String(error)} after ${written} bytes`);
  t.true(written > 8 * MiB, `only ${written} bytes fit in 16 MiB`);
  t.true(written <= 16 * MiB, `${written} bytes fit in 16 MiB`);
  // Space for what write() accepted was allocated or reserved then, so this must not fail.
  fs.fsyncSync(fd);
  fs.closeSync(fd);

  t.is(fs.statSync(file).size, written);
  t.true(fs.readFileSync(file).equals(data.subarray(0, written)), 'the bytes written before ENOSPC read back unchanged');
  t.true(fs.readFileSync(path.join(dir, 'before.bin')).equals(before), 'a file written earlier is unchanged');

  // Still usable: freeing space lets writes succeed again.
  fs.unlinkSync(file);
  await waitFor(() => freeBytes(dir) > 8 * MiB, 10_000, 'space to be freed');
  fs.writeFileSync(path.join(dir, 'after.bin'), data.subarray(0, MiB));
  t.true(fs.readFileSync(path.join(dir, 'after.bin')).equals(data.subarray(0, MiB)));
});

test('fs.writeFile of more than the size rejects with ENOSPC and leaves a prefix', async (t) => {
  const dir = await smallFilesystem(t, 16);
  const data = randomBytes(24 * MiB);
  const file = path.join(dir, 'big.bin');
  const err = await t.throwsAsync(fsp.writeFile(file, data));
  t.is(errnoCode(err), 'ENOSPC', String(err));
  const got = fs.readFileSync(file);
  t.true(got.length > 0 && got.length <= 16 * MiB, `${got.length} bytes on disk`);
  t.true(got.equals(data.subarray(0, got.length)), 'what reached the file is a prefix of what was written');
  // Nor does a synchronous one on the now full filesystem get anywhere.
  t.is(errnoCode(t.throws(() => fs.writeFileSync(path.join(dir, 'more.bin'), data.subarray(0, 2 * MiB)))), 'ENOSPC');
});

for (const size of [16, 32]) {
  test(`statfs reports about ${size} MiB, and never more`, async (t) => {
    const dir = await smallFilesystem(t, size);
    const s = fs.statfsSync(dir);
    const total = s.blocks * s.bsize;
    const free = s.bavail * s.bsize;
    t.log(`${smallFilesystemInfo(dir)?.kind ?? '?'}: total ${(total / MiB).toFixed(2)} MiB, free ${(free / MiB).toFixed(2)} MiB (${(100 * free / (size * MiB)).toFixed(1)}%)`);
    t.true(total <= size * MiB, `total ${total}`);
    t.true(free <= total, `free ${free}`);
    // ext4's journal and inode tables take 10-25% at these sizes; tmpfs nothing.
    t.true(free >= 0.7 * size * MiB, `free ${free} is far below ${size} MiB`);
    // statfs cannot show root's reserve: ext4 also withholds ~2% from bavail (for delayed
    // allocation's metadata) from everyone, root included. The superblock says it plainly.
    const info = smallFilesystemInfo(dir);
    if (info?.kind === 'ext4-loop' && info.image) {
      const r = await run('dumpe2fs', ['-h', info.image]);
      t.regex(r.stdout, /^Reserved block count:\s+0$/m, 'no blocks reserved for root (mkfs -m 0)');
    }
  });
}

test('unmountSmallFilesystem takes the mount, the directory and the loop device away', async (t) => {
  const dir = await smallFilesystem(t, 16);
  const info = smallFilesystemInfo(dir);
  if (!info) return t.fail('no info for a live small filesystem');
  fs.writeFileSync(path.join(dir, 'x'), 'x');
  t.true(inProcMounts(dir));
  if (info.kind === 'ext4-loop') t.regex(info.device ?? '', /^\/dev\/loop\d+$/);
  await unmountSmallFilesystem(dir);
  t.false(inProcMounts(dir), 'still in /proc/mounts');
  t.false(fs.existsSync(info.tempDir), 'temp directory (and image) removed');
  t.deepEqual(await smallFilesystemLeftovers(info.tempDir), { mounts: [], loops: [] });
  t.is(smallFilesystemInfo(dir), undefined);
  // Teardown calls it again: that must be harmless.
  await unmountSmallFilesystem(dir);
});

/** A stand-in for the test's context whose teardowns the test runs itself, when it likes. */
function capturingContext(t: ExecutionContext): { ctx: ExecutionContext; runTeardowns: () => Promise<void> } {
  const fns: Array<() => unknown> = [];
  const runTeardowns = async (): Promise<void> => {
    while (fns.length > 0) await fns.pop()?.();
  };
  // If the test fails before running them, they still run with the real teardown.
  t.teardown(runTeardowns);
  const ctx = { teardown: (fn: () => unknown) => { fns.push(fn); }, log: t.log.bind(t) } as unknown as ExecutionContext;
  return { ctx, runTeardowns };
}

test('the teardown registered by smallFilesystem unmounts it, even after a failure', async (t) => {
  const { ctx, runTeardowns } = capturingContext(t);
  let dir = '';
  let tempDir = '';
  // As in a test body that throws half-way: ava runs the teardowns all the same.
  const err = await t.throwsAsync(async () => {
    try {
      dir = await smallFilesystem(ctx, 16);
      tempDir = smallFilesystemInfo(dir)?.tempDir ?? '';
      fs.writeFileSync(path.join(dir, 'x'), 'x');
      t.true(inProcMounts(dir));
      throw new Error('the test failed');
    } finally {
      await runTeardowns();
    }
  });
  t.is(err?.message, 'the test failed');
  t.not(dir, '');
  t.false(inProcMounts(dir), 'still in /proc/mounts after teardown');
  t.false(fs.existsSync(tempDir), 'temp directory left behind');
  t.deepEqual(await smallFilesystemLeftovers(tempDir), { mounts: [], loops: [] });
});

test('a busy mount is still taken away at teardown (lazily), and its loop device once released', async (t) => {
  const { ctx, runTeardowns } = capturingContext(t);
  const dir = await smallFilesystem(ctx, 16);
  const info = smallFilesystemInfo(dir);
  if (!info) return t.fail('no info for a live small filesystem');
  const fd = fs.openSync(path.join(dir, 'held-open'), 'w');
  try {
    fs.writeSync(fd, 'keeps the filesystem busy');
    await runTeardowns();
    t.false(inProcMounts(dir), 'still in /proc/mounts after teardown');
    t.false(fs.existsSync(info.tempDir), 'temp directory left behind');
    // The detached filesystem is still usable through the open descriptor.
    fs.writeSync(fd, ' and still writable');
  } finally {
    fs.closeSync(fd);
  }
  await waitFor(async () => (await smallFilesystemLeftovers(info.tempDir)).loops.length === 0, 20_000, 'the loop device to be detached');
  t.pass();
});

test('several at once in one test get separate filesystems', async (t) => {
  const dirs = await Promise.all([8, 8, 12, 16].map((n) => smallFilesystem(t, n)));
  t.is(new Set(dirs).size, dirs.length);
  t.is(new Set(dirs.map((d) => fs.statSync(d).dev)).size, dirs.length, 'each is its own filesystem');
  const devices = dirs.map((d) => smallFilesystemInfo(d)?.device).filter((d): d is string => d !== undefined);
  t.is(new Set(devices).size, devices.length, 'each has its own loop device');
  dirs.forEach((d, i) => fs.writeFileSync(path.join(d, `f${i}`), String(i)));
  dirs.forEach((d, i) => t.deepEqual(fs.readdirSync(d), [`f${i}`]));
});

/** Lets two concurrently running tests wait for each other. */
class Rendezvous {
  private arrived = 0;
  private release!: () => void;
  private readonly done = new Promise<void>((r) => { this.release = r; });
  constructor(private readonly parties: number) {}
  async arrive(what: string, timeoutMs = 60_000): Promise<void> {
    if (++this.arrived === this.parties) this.release();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the other parallel test never got to "${what}" (tests run serially?)`)), timeoutMs);
    });
    try {
      await Promise.race([this.done, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

const parallel = { mounted: new Rendezvous(2), checked: new Rendezvous(2), dirs: new Map<string, string>() };

for (const name of ['A', 'B']) {
  test(`parallel tests do not collide (${name})`, async (t) => {
    const other = name === 'A' ? 'B' : 'A';
    const dir = await smallFilesystem(t, 16);
    fs.writeFileSync(path.join(dir, `from-${name}`), name);
    parallel.dirs.set(name, dir);
    await parallel.mounted.arrive('mounted');
    // Both are mounted now.
    const theirs = parallel.dirs.get(other) ?? '';
    t.not(theirs, dir);
    t.true(inProcMounts(dir) && inProcMounts(theirs));
    t.not(fs.statSync(dir).dev, fs.statSync(theirs).dev);
    t.deepEqual(fs.readdirSync(dir), [`from-${name}`]);
    t.deepEqual(fs.readdirSync(theirs), [`from-${other}`]);
    await parallel.checked.arrive('checked');
  });
}

test.after.always('nothing this file mounted is left mounted or attached', async (t) => {
  t.deepEqual(await smallFilesystemLeftovers(), { mounts: [], loops: [] });
});
