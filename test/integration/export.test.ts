// `replfs export` for real: volumes with one of everything, exported mounted (read through
// the mount's .snapshots) and unmounted (read through the engine), and replicas; every
// archive extracted with GNU tar (`tar --xattrs -xpf`, as the reference says) and compared
// with the tree as it was when the snapshot was taken: content, mode, owner, mtime to the
// nanosecond, symlink targets, hard links sharing an inode, devices, user xattrs. A file
// over 8 GiB streams through a reader that holds back, with the exporter's memory watched.
// Every refusal has its exit code and message and writes nothing; a failure half way, an
// interrupt or a reader that goes away leave nothing at FILE.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import test from '../helpers/ava.js';
import {
  BIN, scratch, replfs, run, sh, initVolume, mountVolume, describeTree, concurrencyGate, fails, waitFor, exited,
  type Scratch, type TreeEntry,
} from '../helpers/env.js';
import { deviceNumbers } from '../../src/archive/writer.js';

// Each case starts daemons and moves archives around; the machine is shared.
const gate = concurrencyGate(2);
type Body = (t: ExecutionContext) => Promise<void>;
const cli = (title: string, body: Body) => test(title, (t) => gate(() => body(t)));

interface Exported {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

/** `replfs <args>` with its stdout kept as bytes (an archive). */
function runBinary(s: Scratch, args: string[]): Promise<Exported> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: s.dir, env: s.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => { err += c.toString(); });
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr: err }));
  });
}

async function ok(t: ExecutionContext, s: Scratch, args: string[]): Promise<string> {
  const r = await replfs(s, args);
  t.is(r.code, 0, `replfs ${args.join(' ')}: exit ${r.code}; stderr: ${r.stderr}`);
  return r.stdout;
}

const snap = async (t: ExecutionContext, s: Scratch, dir: string) => (await ok(t, s, ['snapshot', dir])).trim();

const LONG_DIR = 'd'.repeat(120);
const LONG_FILE = 'f'.repeat(200);
const LONG_TARGET = `${'../'.repeat(30)}${'t'.repeat(80)}`;

/** One of everything, made before init (so times, owners and devices are set as wanted). */
async function populate(t: ExecutionContext, dir: string): Promise<void> {
  fs.mkdirSync(path.join(dir, 'sub/deep'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'empty-dir'));
  fs.mkdirSync(path.join(dir, 'sticky'), { mode: 0o1777 });
  fs.chmodSync(path.join(dir, 'sticky'), 0o1777);
  fs.mkdirSync(path.join(dir, LONG_DIR));
  fs.writeFileSync(path.join(dir, 'a.txt'), 'alpha\n');
  fs.chownSync(path.join(dir, 'a.txt'), 1234, 2345);
  fs.chmodSync(path.join(dir, 'a.txt'), 0o640);
  fs.linkSync(path.join(dir, 'a.txt'), path.join(dir, 'sub/hard'));
  fs.linkSync(path.join(dir, 'a.txt'), path.join(dir, 'third'));
  fs.symlinkSync('a.txt', path.join(dir, 'link'));
  fs.symlinkSync(LONG_TARGET, path.join(dir, 'long-link'));
  fs.writeFileSync(path.join(dir, 'sub/deep/b.bin'), Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) & 0xff)));
  fs.writeFileSync(path.join(dir, 'empty'), '');
  fs.writeFileSync(path.join(dir, 'setuid'), '#!/bin/sh\n');
  fs.chmodSync(path.join(dir, 'setuid'), 0o4755);
  fs.writeFileSync(path.join(dir, LONG_DIR, LONG_FILE), 'at the end of a long path\n');
  const fd = fs.openSync(path.join(dir, 'sparse'), 'w');
  fs.writeSync(fd, 'tail', 5 << 20);
  fs.closeSync(fd);
  await sh(t, [
    `cd '${dir}'`,
    'mkfifo fifo', 'mknod cdev c 1 3', 'mknod bdev b 7 200',
    "setfattr -n user.k -v kept a.txt", 'setfattr -n user.bin -v 0x00ff0a3d25 sub/deep/b.bin', "setfattr -n user.dir -v 'on a directory' sub",
    "touch -d '2021-02-03 04:05:06.123456789' a.txt", "touch -h -d '2019-05-06 07:08:09.987654321' link",
    "touch -d '2001-01-01 00:00:00.000000001' sub/deep/b.bin",
  ].join(' && '));
}

const tree = (dir: string) => describeTree(dir, { xattrs: true, inodes: false });

/** The snapshot's tree as it was: what `describeTree` saw then, plus the top's mode and the devices. */
interface Expected {
  tree: Record<string, TreeEntry>;
  topMode: number;
}

async function picture(dir: string): Promise<Expected> {
  return { tree: await tree(dir), topMode: fs.statSync(dir).mode };
}

/** Extracts an archive as the reference says (`tar --xattrs -xpf`) and compares it with what was expected. */
async function extractsTo(t: ExecutionContext, archive: string, expected: Expected, into: string): Promise<void> {
  fs.mkdirSync(into, { recursive: true });
  const r = await run('tar', ['--xattrs', '-xpf', archive, '-C', into]);
  t.is(r.code, 0, `tar -x: ${r.stderr}`);
  t.is(r.stderr, '', 'tar had nothing to say');
  t.deepEqual(await tree(into), expected.tree, 'the extracted tree is the snapshot');
  t.is(fs.statSync(into).mode, expected.topMode, 'the top directory has the snapshot root\'s mode');
  const ino = (p: string) => fs.lstatSync(path.join(into, p)).ino;
  if (expected.tree['a.txt']?.nlink === 3) {
    t.is(ino('sub/hard'), ino('a.txt'), 'hard links share an inode');
    t.is(ino('third'), ino('a.txt'), 'hard links share an inode');
  }
  if (expected.tree.cdev) t.deepEqual(deviceNumbers(fs.lstatSync(path.join(into, 'cdev')).rdev), { devmajor: 1, devminor: 3 });
  if (expected.tree.bdev) t.deepEqual(deviceNumbers(fs.lstatSync(path.join(into, 'bdev')).rdev), { devmajor: 7, devminor: 200 });
}

/** Changes through the mount after the snapshot: none of them may show in its archive. */
function changeThrough(mnt: string): void {
  fs.appendFileSync(path.join(mnt, 'a.txt'), 'changed after the snapshot\n');
  fs.writeFileSync(path.join(mnt, 'sub/deep/b.bin'), 'rewritten');
  fs.rmSync(path.join(mnt, LONG_DIR), { recursive: true });
  fs.renameSync(path.join(mnt, 'setuid'), path.join(mnt, 'renamed'));
  fs.chmodSync(path.join(mnt, 'empty'), 0o600);
  fs.unlinkSync(path.join(mnt, 'third'));
  fs.writeFileSync(path.join(mnt, 'new.txt'), 'new\n');
}

/** A protected directory with one of everything. */
async function volume(t: ExecutionContext, s: Scratch, name = 'data'): Promise<string> {
  const dir = path.join(s.dir, name);
  fs.mkdirSync(dir);
  await populate(t, dir);
  await initVolume(t, s, dir);
  return dir;
}

cli('a mounted volume exports through its mount; unmounted, the same snapshot exports to the same bytes; changes made after the snapshot are not in it', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  await mountVolume(t, s, dir);
  const first = await snap(t, s, dir);
  const atFirst = await picture(dir);
  changeThrough(dir);
  const second = await snap(t, s, dir);
  const atSecond = await picture(dir);
  t.notDeepEqual(atSecond.tree, atFirst.tree);

  const mountedA = path.join(s.dir, 'mounted-first.tar');
  const r = await replfs(s, ['export', dir, first, '-o', mountedA]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, new RegExp(`^${first}: \\d+ entries \\(\\d+ files, [\\d.]+ \\w+\\) written to ${mountedA.replace(/[.]/g, '\\.')}\\n$`));
  t.is(r.stderr, '');
  await extractsTo(t, mountedA, atFirst, path.join(s.dir, 'x-mounted-first'));
  const mountedB = await runBinary(s, ['export', dir, 'latest']);
  t.is(mountedB.code, 0, mountedB.stderr);
  fs.writeFileSync(path.join(s.dir, 'mounted-latest.tar'), mountedB.stdout);
  await extractsTo(t, path.join(s.dir, 'mounted-latest.tar'), atSecond, path.join(s.dir, 'x-mounted-latest'));

  await ok(t, s, ['unmount', dir]);
  const unmountedA = await runBinary(s, ['export', dir, first, '--format', 'tar']);
  t.is(unmountedA.code, 0, unmountedA.stderr);
  t.true(unmountedA.stdout.equals(fs.readFileSync(mountedA)), 'the unmounted export of the first snapshot is the mounted one, byte for byte');
  const unmountedB = await runBinary(s, ['export', dir, second, '-o', '-']);
  t.is(unmountedB.code, 0, unmountedB.stderr);
  t.true(unmountedB.stdout.equals(mountedB.stdout), 'and of the second');
  t.is(unmountedB.stdout.length % 10240, 0, 'whole tar records');
});

cli('an unmounted volume exports each snapshot as it was, sockets left out with a warning', async (t) => {
  const s = scratch(t);
  const dir = path.join(s.dir, 'data');
  fs.mkdirSync(dir);
  await populate(t, dir);
  // A socket: a tar archive cannot hold one.
  await sh(t, `python3 -c "import socket; socket.socket(socket.AF_UNIX).bind('${dir}/sock')"`);
  await initVolume(t, s, dir);
  const first = await snap(t, s, dir);
  const atFirst = await picture(dir);
  delete atFirst.tree.sock;
  await mountVolume(t, s, dir);
  changeThrough(dir);
  await ok(t, s, ['unmount', dir]);
  const out = path.join(s.dir, 'first.tar');
  const r = await replfs(s, ['export', dir, first, '-o', out]);
  t.is(r.code, 0, r.stderr);
  t.is(r.stderr, 'replfs export: warning: sock is a socket; a tar archive cannot hold it, left out\n');
  await extractsTo(t, out, atFirst, path.join(s.dir, 'x'));
  // The volume itself is as the changes left it: exporting changed nothing.
  t.true(fs.existsSync(path.join(dir, 'new.txt')));
  t.false(fs.existsSync(path.join(dir, 'setuid')));
});

cli('a replica exports its snapshots, unmounted and mounted read-only, as the source had them', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  await mountVolume(t, s, dir);
  const replica = path.join(s.dir, 'replica');
  await ok(t, s, ['sync', dir, replica]);
  const first = (JSON.parse(await ok(t, s, ['snapshots', dir, '--json'])) as { latest: string }).latest;
  const atFirst = await picture(dir);
  changeThrough(dir);
  await ok(t, s, ['sync', dir, replica]);
  const atSecond = await picture(dir);
  const second = (JSON.parse(await ok(t, s, ['snapshots', dir, '--json'])) as { latest: string }).latest;
  t.not(first, second);

  const a = path.join(s.dir, 'replica-first.tar');
  t.is((await replfs(s, ['export', replica, first, '-o', a])).code, 0);
  await extractsTo(t, a, atFirst, path.join(s.dir, 'xa'));
  // Mounted read-only: read through its mount.
  const mnt = path.join(s.dir, 'rmnt');
  fs.mkdirSync(mnt);
  await mountVolume(t, s, replica, mnt, ['--read-only']);
  const b = path.join(s.dir, 'replica-latest.tar');
  const r = await replfs(s, ['export', replica, 'latest', '-o', b]);
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.startsWith(`${second}: `), r.stdout);
  await extractsTo(t, b, atSecond, path.join(s.dir, 'xb'));
  // The source's own archive of that snapshot is the same.
  const c = await runBinary(s, ['export', dir, second]);
  t.true(c.stdout.equals(fs.readFileSync(b)), 'the replica exports the same bytes as its source');
});

/** /proc/<pid>/status VmRSS, in bytes. */
function rss(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

const MiB = 1024 * 1024;

/**
 * Exports `dir`'s `latest` to stdout, lets nobody read it for a while, then pipes it into
 * `tar -xOf - ./<member>` and checks the bytes that come out at the given offsets.
 */
async function streamThrough(t: ExecutionContext, s: Scratch, dir: string, member: string, size: number, marks: Map<number, string>): Promise<{ peak: number; held: number }> {
  const child = spawn(process.execPath, [BIN, 'export', dir, 'latest'], { env: s.env, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { child.kill('SIGKILL'); });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
  let peak = 0;
  const sampler = setInterval(() => { peak = Math.max(peak, rss(child.pid!)); }, 50);
  try {
    child.stdout.pause();
    // Nobody reads: the export must wait instead of piling the archive up in memory.
    await new Promise((r) => setTimeout(r, 3000));
    const held = rss(child.pid!);
    const tar = spawn('tar', ['-xOf', '-', `./${member}`], { stdio: ['pipe', 'pipe', 'pipe'] });
    t.teardown(() => { tar.kill('SIGKILL'); });
    let tarErr = '';
    tar.stderr.on('data', (c: Buffer) => { tarErr += c.toString(); });
    child.stdout.pipe(tar.stdin);
    let pos = 0;
    const seen = new Map<number, string>();
    tar.stdout.on('data', (c: Buffer) => {
      for (const [at, text] of marks) {
        if (at + text.length > pos && at < pos + c.length) {
          const from = Math.max(at, pos);
          const to = Math.min(at + text.length, pos + c.length);
          const got = (seen.get(at) ?? ' '.repeat(text.length)).split('');
          for (let i = from; i < to; i++) got[i - at] = String.fromCharCode(c[i - pos]!);
          seen.set(at, got.join(''));
        }
      }
      pos += c.length;
    });
    await Promise.all([exited(child), exited(tar)]);
    t.is(child.exitCode, 0, `export: ${stderr}`);
    t.is(tar.exitCode, 0, `tar: ${tarErr}`);
    t.is(pos, size, `${member} comes out of the archive with its ${size} bytes`);
    for (const [at, text] of marks) t.is(seen.get(at), text, `the bytes at ${at}`);
    return { peak, held };
  } finally {
    clearInterval(sampler);
  }
}

cli('a file over 8 GiB exports unmounted through a reader that holds back: it arrives whole, and the exporter\'s memory stays flat', async (t) => {
  const s = scratch(t);
  const dir = path.join(s.dir, 'big');
  fs.mkdirSync(dir);
  const size = 8 * 1024 * MiB + 4096 + 3;
  const marks = new Map([[0, 'HEAD'], [4 * 1024 * MiB + 11, 'MIDDLE'], [size - 4, 'TAIL']]);
  const fd = fs.openSync(path.join(dir, 'huge'), 'w');
  for (const [at, text] of marks) fs.writeSync(fd, text, at);
  fs.closeSync(fd);
  await initVolume(t, s, dir);
  await snap(t, s, dir);
  const { peak, held } = await streamThrough(t, s, dir, 'huge', size, marks);
  t.true(held < 200 * MiB, `while nobody read, the exporter held ${Math.round(held / MiB)} MiB`);
  t.true(peak < 250 * MiB, `the exporter peaked at ${Math.round(peak / MiB)} MiB for an archive of ${Math.round(size / MiB)} MiB`);
});

cli('a file of 1.5 GiB exports through a mount with the same flat memory', async (t) => {
  const s = scratch(t);
  const dir = path.join(s.dir, 'big');
  fs.mkdirSync(dir);
  const size = 1536 * MiB + 1;
  const marks = new Map([[0, 'HEAD'], [777 * MiB + 5, 'MIDDLE'], [size - 4, 'TAIL']]);
  const fd = fs.openSync(path.join(dir, 'large'), 'w');
  for (const [at, text] of marks) fs.writeSync(fd, text, at);
  fs.closeSync(fd);
  await initVolume(t, s, dir);
  await mountVolume(t, s, dir);
  await snap(t, s, dir);
  const { peak, held } = await streamThrough(t, s, dir, 'large', size, marks);
  t.true(held < 150 * MiB, `while nobody read, the exporter held ${Math.round(held / MiB)} MiB`);
  t.true(peak < 200 * MiB, `peak ${Math.round(peak / MiB)} MiB`);
});

/** What a refused export must leave as it was: the files, the snapshots, the epoch. */
async function logical(t: ExecutionContext, s: Scratch, dir: string): Promise<unknown> {
  const st = JSON.parse(await ok(t, s, ['status', dir, '--json'])) as { epoch: number };
  return { tree: await describeTree(dir), snapshots: JSON.parse(await ok(t, s, ['snapshots', dir, '--json'])) as unknown, epoch: st.epoch };
}

/** The files of a directory (none may appear: no archive, no temporary file). */
const listing = (dir: string) => fs.readdirSync(dir).sort();

cli('bad input: each refusal has its exit code and message, and writes nothing, mounted or not', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const fresh = path.join(s.dir, 'fresh');
  fs.mkdirSync(fresh);
  fs.writeFileSync(path.join(fresh, 'f'), 'x');
  await initVolume(t, s, fresh);
  const outDir = path.join(s.dir, 'out');
  fs.mkdirSync(outDir);
  const file = path.join(outDir, 'a.tar');
  const plain = path.join(s.dir, 'plain');
  fs.mkdirSync(plain);

  for (const mounted of [false, true]) {
    const mode = mounted ? 'mounted' : 'unmounted';
    if (mounted) await mountVolume(t, s, dir);
    const name = await snap(t, s, dir);
    const before = await logical(t, s, dir);
    const outBefore = listing(outDir);
    const cases: Array<[string[], Parameters<typeof fails>[2], RegExp]> = [
      [['export', dir, name, '--format', 'zip', '-o', file], 'usage', /^replfs export: unknown archive format "zip"\n {2}hint: the only format is tar/],
      [['export', dir, 'yesterday', '-o', file], 'usage', /^replfs export: "yesterday" is not a snapshot name/],
      [['export', dir, '2001-01-01T00-00-00Z', '-o', file], 'notFound', /^replfs export: no snapshot named "2001-01-01T00-00-00Z"\n {2}hint: list them with/],
      [['export', fresh, 'latest', '-o', file], 'notFound', /^replfs export: .*fresh has no snapshot yet, so no latest/],
      [['export', plain, 'latest', '-o', file], 'notFound', /is not inside a protected directory/],
      [['export', path.join(s.dir, 'missing'), 'latest', '-o', file], 'notFound', /missing does not exist/],
      [['export', dir, name, '-o', path.join(dir, 'inside.tar')], 'refused', /inside\.tar is inside the volume being exported \(.*\/data\): the archive would be written into what it archives/],
      [['export', dir, name, '-o', path.join(dir, 'sub', 'deeper.tar')], 'refused', /is inside the volume being exported/],
      [['export', dir, name, '-o', path.join(outDir, 'no', 'such', 'dir.tar')], 'notFound', /the directory of .*dir\.tar does not exist/],
      [['export', dir, name, '-o', outDir], 'refused', /out is a directory/],
      [['export', dir, name, '-o', ''], 'usage', /-o needs a file name/],
      [['export', dir], 'usage', /missing argument/],
    ];
    if (mounted) cases.push([['export', dir, name, '-o', path.join(dir, '.snapshots', 'x.tar')], 'refused', /is inside the volume being exported/]);
    // A symlink leading into the volume is followed, and refused.
    const sneaky = path.join(outDir, 'sneaky.tar');
    fs.symlinkSync(path.join(dir, 'sneaky-target.tar'), sneaky);
    cases.push([['export', dir, name, '-o', sneaky], 'refused', /sneaky\.tar is inside the volume being exported/]);
    for (const [args, exit, message] of cases) {
      const r = await replfs(s, args);
      fails(t, r, exit, message, `${mode}: replfs ${args.slice(0, 3).join(' ')} ...${args.slice(3).join(' ')}`);
    }
    fs.unlinkSync(sneaky);
    t.deepEqual(listing(outDir), outBefore, `${mode}: no archive and no temporary file were left`);
    t.false(fs.existsSync(path.join(dir, 'inside.tar')) || fs.existsSync(path.join(dir, 'sub', 'deeper.tar')) || fs.existsSync(path.join(dir, 'sneaky-target.tar')));
    // Stdout redirected into the volume: refused before a byte is written.
    const redirected = await run('/bin/sh', ['-c', `'${process.execPath}' '${BIN}' export '${dir}' latest > '${dir}/redirected.tar'`], { env: s.env });
    t.is(redirected.code, 4, `${mode}: stdout into the volume: ${redirected.stderr}`);
    t.regex(redirected.stderr, /^replfs export: stdout is .*redirected\.tar, inside the volume being exported/);
    t.is(fs.statSync(path.join(dir, 'redirected.tar')).size, 0, 'nothing was written into what the shell made');
    fs.unlinkSync(path.join(dir, 'redirected.tar'));
    t.deepEqual(await logical(t, s, dir), before, `${mode}: the volume is as it was`);
    // A symlink to a file not there yet, outside the volume, is written through.
    const alias = path.join(outDir, 'alias.tar');
    fs.symlinkSync('real.tar', alias);
    const through = await replfs(s, ['export', dir, name, '-o', alias]);
    t.is(through.code, 0, through.stderr);
    t.true(fs.lstatSync(alias).isSymbolicLink() && fs.statSync(path.join(outDir, 'real.tar')).size > 0, `${mode}: written where the symlink leads`);
    fs.unlinkSync(alias);
    fs.unlinkSync(path.join(outDir, 'real.tar'));
    if (mounted) await ok(t, s, ['unmount', dir]);
  }
});

cli('an export that fails half way (no space left) leaves nothing at FILE, and an existing FILE as it was', async (t) => {
  const s = scratch(t);
  const dir = path.join(s.dir, 'data');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'big'), Buffer.alloc(4 * MiB, 0x61));
  await initVolume(t, s, dir);
  await snap(t, s, dir);
  // A small file system to fill: 2 MiB.
  const small = path.join(s.dir, 'small');
  fs.mkdirSync(small);
  t.teardown(async () => { await run('umount', ['-l', small]); });
  await sh(t, `mount -t tmpfs -o size=2m replfs-test-small '${small}'`);
  fs.writeFileSync(path.join(small, 'a.tar'), 'the old archive\n');
  for (const target of ['a.tar', 'new.tar']) {
    const r = await replfs(s, ['export', dir, 'latest', '-o', path.join(small, target)]);
    fails(t, r, 'unavailable', /^replfs export: writing the archive to .*small\/(a|new)\.tar failed: no space left; the archive is incomplete and was removed\n$/, target);
  }
  t.deepEqual(listing(small), ['a.tar'], 'no new archive and no temporary file');
  t.is(fs.readFileSync(path.join(small, 'a.tar'), 'utf8'), 'the old archive\n', 'the existing FILE is untouched');
  // A device is written to as it is.
  const r = await replfs(s, ['export', dir, 'latest', '-o', '/dev/null']);
  t.is(r.code, 0, r.stderr);
});

cli('an interrupted export leaves nothing at FILE; a reader that goes away is exit 10', async (t) => {
  const s = scratch(t);
  const dir = path.join(s.dir, 'data');
  fs.mkdirSync(dir);
  const fd = fs.openSync(path.join(dir, 'sparse'), 'w');
  fs.writeSync(fd, 'end', 3 * 1024 * MiB);
  fs.closeSync(fd);
  await initVolume(t, s, dir);
  await snap(t, s, dir);
  const outDir = path.join(s.dir, 'out');
  fs.mkdirSync(outDir);

  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    const child = spawn(process.execPath, [BIN, 'export', dir, 'latest', '-o', path.join(outDir, 'a.tar')], { env: s.env, stdio: 'ignore' });
    t.teardown(() => { child.kill('SIGKILL'); });
    // Under way: its temporary file is growing.
    await waitFor(() => fs.readdirSync(outDir).some((n) => n.includes('replfs-export') && fs.statSync(path.join(outDir, n)).size > 4 * MiB), 30_000, 'the export to start writing');
    child.kill(sig);
    await exited(child);
    t.is(child.signalCode, sig, `it ends by ${sig}, as without a handler`);
    t.deepEqual(listing(outDir), [], `${sig}: nothing at FILE, no temporary file`);
  }

  const reader = spawn(process.execPath, [BIN, 'export', dir, 'latest'], { env: s.env, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { reader.kill('SIGKILL'); });
  let stderr = '';
  reader.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
  await new Promise<void>((resolve) => reader.stdout.once('data', () => resolve()));
  reader.stdout.destroy();
  await exited(reader);
  t.is(reader.exitCode, 10, stderr);
  t.regex(stderr, /^replfs export: writing the archive to stdout failed: the reader of the archive went away; the archive is incomplete\n$/);
});

cli('export never changes the volume: the same files, snapshots, journal and epoch after it', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  await mountVolume(t, s, dir);
  const name = await snap(t, s, dir);
  const journal = async () => (await ok(t, s, ['journal', dir, '--json']));
  const before = { state: await logical(t, s, dir), journal: await journal() };
  t.is((await runBinary(s, ['export', dir, name])).code, 0);
  t.is((await runBinary(s, ['export', dir, 'latest'])).code, 0);
  t.deepEqual({ state: await logical(t, s, dir), journal: await journal() }, before, 'mounted');
  await ok(t, s, ['unmount', dir]);
  const unmounted = { state: await logical(t, s, dir), journal: await journal() };
  t.is((await runBinary(s, ['export', dir, name])).code, 0);
  t.deepEqual({ state: await logical(t, s, dir), journal: await journal() }, unmounted, 'unmounted');
});

test('export writes no archive to a terminal', async (t) => {
  // `script` gives the command a terminal for stdout.
  const s = scratch(t);
  const r = await run('script', ['-qec', `'${process.execPath}' '${BIN}' export /nonexistent latest; echo "exit=$?"`, '/dev/null'], { env: s.env });
  t.regex(r.stdout, /replfs export: refusing to write an archive to a terminal/);
  t.regex(r.stdout, /exit=2/);
});
