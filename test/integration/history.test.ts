// diff, restore and prune through the CLI, mounted and unmounted: what they report, what
// they change, and how they refuse bad input (exit code, message, nothing changed).
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { ExecutionContext } from 'ava';
import test from '../helpers/ava.js';
import { scratch, replfs, initVolume, mountVolume, isMounted, describeTree, type Scratch } from '../helpers/env.js';
import type { DiffReport } from '../../src/core/types.js';

async function ok(t: ExecutionContext, s: Scratch, args: string[]): Promise<string> {
  const r = await replfs(s, args);
  t.is(r.code, 0, `replfs ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function snap(t: ExecutionContext, s: Scratch, dir: string): Promise<string> {
  return (await ok(t, s, ['snapshot', dir])).trim();
}

function write(dir: string, rel: string, content: string | Buffer): void {
  fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
  fs.writeFileSync(path.join(dir, rel), content);
}

async function setup(t: ExecutionContext): Promise<{ s: Scratch; dir: string }> {
  const s = scratch(t);
  const dir = path.join(s.dir, 'data');
  write(dir, 'doc.txt', 'version one\n');
  write(dir, 'big.bin', Buffer.alloc(1 << 20, 1));
  write(dir, 'sub/a.txt', 'a\n');
  write(dir, 'sub/deep/b.txt', 'b\n');
  fs.linkSync(path.join(dir, 'sub/a.txt'), path.join(dir, 'sub/a-link'));
  fs.symlinkSync('a.txt', path.join(dir, 'sub/sym'));
  fs.chmodSync(path.join(dir, 'doc.txt'), 0o640);
  await initVolume(t, s, dir);
  await mountVolume(t, s, dir);
  return { s, dir };
}

test('diff names what was added, removed, modified (with extents), renamed and changed in attributes', async (t) => {
  const { s, dir } = await setup(t);
  const a = await snap(t, s, dir);
  write(dir, 'new.txt', 'new\n');
  fs.unlinkSync(path.join(dir, 'doc.txt'));
  const fd = fs.openSync(path.join(dir, 'big.bin'), 'r+');
  fs.writeSync(fd, Buffer.alloc(10, 2), 0, 10, 300_000);
  fs.closeSync(fd);
  fs.renameSync(path.join(dir, 'sub/deep'), path.join(dir, 'sub/moved'));
  fs.chmodSync(path.join(dir, 'sub/a.txt'), 0o600);
  const b = await snap(t, s, dir);
  write(dir, 'later.txt', 'after b\n');
  const d = JSON.parse(await ok(t, s, ['diff', dir, a, b, '--json'])) as DiffReport;
  const by = Object.fromEntries(d.files.flatMap((f) => (f.after.length ? f.after : f.before).map((p) => [p, f])));
  t.is(by['new.txt']?.status, 'added');
  t.is(by['doc.txt']?.status, 'removed');
  t.is(by['big.bin']?.status, 'modified');
  t.deepEqual(by['big.bin']?.extents, [{ offset: 262144, length: 65536 }], 'only the block written');
  t.is(by['sub/moved']?.status, 'renamed');
  t.deepEqual(by['sub/moved']?.before, ['sub/deep']);
  t.is(by['sub/a.txt']?.status, 'attributes');
  t.deepEqual(by['sub/a.txt']?.after, ['sub/a-link', 'sub/a.txt'], 'every name of a hard-linked file');
  t.false('later.txt' in by, 'a change after <to> is not in the diff');
  const live = JSON.parse(await ok(t, s, ['diff', dir, a, '--json'])) as DiffReport;
  t.is(live.to, 'live');
  t.true(live.files.some((f) => f.after[0] === 'later.txt' && f.status === 'added'));
  // The same answer while unmounted, read directly.
  await ok(t, s, ['unmount', dir]);
  const direct = JSON.parse(await ok(t, s, ['diff', dir, a, b, '--json'])) as DiffReport;
  t.deepEqual(direct, d);
  const human = await ok(t, s, ['diff', dir, a, b]);
  t.regex(human, /^M file +big\.bin +262144\+65536$/m);
  t.regex(human, /1 added, 1 removed, 1 modified/);
});

test('diff refuses names that are not snapshots, and a <to> older than <from>', async (t) => {
  const { s, dir } = await setup(t);
  const a = await snap(t, s, dir);
  const b = await snap(t, s, dir);
  const cases: Array<[string[], number, RegExp]> = [
    [['diff', dir, 'nope'], 2, /"nope" is not a snapshot name/],
    [['diff', dir, '../x'], 2, /is not a snapshot name/],
    [['diff', dir, '2020-01-01T00-00-00Z'], 3, /no snapshot named "2020-01-01T00-00-00Z"/],
    [['diff', dir, a, 'latest'], 2, /"latest" is not a snapshot name/],
    [['diff', dir, b, a], 2, /is not newer than/],
    [['diff', dir, a, a], 2, /is not newer than/],
    [['diff', dir], 2, /missing argument/],
    [['diff', path.join(s.dir, 'nowhere'), a], 3, /does not exist/],
  ];
  for (const [args, code, message] of cases) {
    const r = await replfs(s, args);
    t.is(r.code, code, `${args.slice(2).join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, message);
    t.is(r.stdout, '');
  }
});

test('restore in place brings back a file and a tree, and is itself a journaled change', async (t) => {
  const { s, dir } = await setup(t);
  const before = await describeTree(dir);
  const a = await snap(t, s, dir);
  fs.rmSync(path.join(dir, 'sub'), { recursive: true });
  write(dir, 'doc.txt', 'edited by mistake\n');
  await ok(t, s, ['restore', dir, a, 'sub']);
  await ok(t, s, ['restore', dir, a, 'doc.txt']);
  const after = await describeTree(dir);
  for (const rel of ['sub', 'sub/a.txt', 'sub/a-link', 'sub/sym', 'sub/deep/b.txt', 'doc.txt']) {
    t.deepEqual(strip(after[rel]), strip(before[rel]), rel);
  }
  t.is(fs.statSync(path.join(dir, 'sub/a.txt')).ino, fs.statSync(path.join(dir, 'sub/a-link')).ino, 'hard links stay links');
  // The restore went through the journal: a snapshot taken now holds the restored files,
  // and the diff since `a` shows them as new files.
  const b = await snap(t, s, dir);
  t.is(fs.readFileSync(path.join(dir, '.snapshots', b, 'sub/deep/b.txt'), 'utf8'), 'b\n');
  const d = JSON.parse(await ok(t, s, ['diff', dir, a, b, '--json'])) as DiffReport;
  t.true(d.files.some((f) => f.after.includes('sub/deep/b.txt') && f.status === 'added'));
  t.true(d.files.some((f) => f.after.includes('doc.txt') && f.status === 'modified'));
});

test('restore --to copies out of the volume, mounted or not, and refuses escapes', async (t) => {
  const { s, dir } = await setup(t);
  const a = await snap(t, s, dir);
  const out = path.join(s.dir, 'out');
  await ok(t, s, ['restore', dir, a, 'sub', '--to', out]);
  t.is(fs.readFileSync(path.join(out, 'sub/deep/b.txt'), 'utf8'), 'b\n');
  t.is(fs.readlinkSync(path.join(out, 'sub/sym')), 'a.txt');
  await ok(t, s, ['unmount', dir]);
  const whole = path.join(s.dir, 'whole');
  await ok(t, s, ['restore', dir, a, '--to', whole]);
  t.is(fs.readFileSync(path.join(whole, 'doc.txt'), 'utf8'), 'version one\n');
  t.is(fs.statSync(path.join(whole, 'doc.txt')).mode & 0o777, 0o640);
  t.false(fs.existsSync(path.join(whole, '.replfs')));
  const tree = await describeTree(dir);
  const cases: Array<[string[], number, RegExp]> = [
    [['restore', dir, a, '../etc'], 2, /must stay inside the snapshot/],
    [['restore', dir, a, '/etc/passwd'], 2, /relative to the volume root/],
    [['restore', dir, a, 'missing.txt'], 3, /missing\.txt is not in snapshot/],
    [['restore', dir, 'nope'], 2, /not a snapshot name/],
    [['restore', dir, '2020-01-01T00-00-00Z'], 3, /no snapshot named/],
    [['restore', dir, a, '.snapshots/x'], 3, /is not in snapshot/],
    [['restore', dir, a, '.replfs/config.json'], 3, /is not in snapshot/],
  ];
  for (const [args, code, message] of cases) {
    const r = await replfs(s, args);
    t.is(r.code, code, `${args.slice(2).join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, message);
  }
  t.deepEqual(await describeTree(dir), tree, 'refused restores changed nothing');
  t.false(await isMounted(dir));
});

test('prune keeps what the rules say, frees the rest, and refuses options that make no sense', async (t) => {
  const { s, dir } = await setup(t);
  const names: string[] = [];
  const contents: Buffer[] = [];
  for (let i = 0; i < 4; i++) {
    // Random, so that no two blocks are alike and nothing is shared between versions.
    const data = randomBytes(1 << 20);
    const fd = fs.openSync(path.join(dir, 'big.bin'), 'r+');
    fs.writeSync(fd, data, 0, data.length, 0);
    fs.closeSync(fd);
    contents.push(data);
    names.push(await snap(t, s, dir));
  }
  const bad: Array<[string[], RegExp]> = [
    [[], /at least one --keep-\* option/],
    [['--keep-last', '0'], /--keep-last needs a whole number of at least 1, got "0"/],
    [['--keep-last', '-1'], /keep-last/],
    [['--keep-daily', 'abc'], /--keep-daily needs a whole number/],
    [['--keep-weekly', '2.5'], /--keep-weekly needs a whole number/],
    [['--keep-within', '5x'], /"5x" is not a duration/],
    [['--keep-within', '0d'], /empty duration/],
    [['--keep-forever'], /Unknown option '--keep-forever'/],
  ];
  for (const [opts, message] of bad) {
    const r = await replfs(s, ['prune', dir, ...opts]);
    t.is(r.code, 2, `${opts.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, message);
  }
  const dry = JSON.parse(await ok(t, s, ['prune', dir, '--keep-last', '2', '--dry-run', '--json'])) as { removed: string[]; gc: null };
  t.deepEqual(dry.removed.sort(), names.slice(0, 2).sort());
  t.is(dry.gc, null);
  t.is(fs.readdirSync(path.join(dir, '.snapshots')).length, 5, 'a dry run deletes nothing (4 + latest)');
  const held = JSON.parse(await ok(t, s, ['snapshots', dir, '--json'])) as { snapshots: Array<{ name: string; uniqueBytes: number }> };
  t.true(held.snapshots[0]!.uniqueBytes >= 1 << 20, 'the oldest alone holds its 1 MiB');
  const real = JSON.parse(await ok(t, s, ['prune', dir, '--keep-last', '2', '--json'])) as { removed: string[]; gc: { bytesFreed: number } };
  t.deepEqual(real.removed.sort(), names.slice(0, 2).sort());
  t.true(real.gc.bytesFreed >= 2 << 20, `freed ${real.gc.bytesFreed} bytes`);
  t.deepEqual(fs.readdirSync(path.join(dir, '.snapshots')).sort(), [...names.slice(2), 'latest'].sort());
  t.true(fs.readFileSync(path.join(dir, '.snapshots', names[2]!, 'big.bin')).equals(contents[2]!), 'kept snapshots read as before');
  t.true(fs.readFileSync(path.join(dir, '.snapshots', names[3]!, 'big.bin')).equals(contents[3]!));
});

function strip(e: unknown): unknown {
  if (!e || typeof e !== 'object') return e;
  const { ino, ctime, atime, nlink, ...rest } = e as Record<string, unknown>;
  void ino; void ctime; void atime; void nlink;
  return rest;
}
