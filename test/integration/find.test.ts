// `replfs find` for real, through a mount daemon and on the volume directly: files changed
// in some snapshots and not in others, touched, deleted and made again, renamed, linked;
// every version's BLAKE3 checked against the content, its mtime against the file's, its
// snapshots against what each held; the journal spares reading contents that did not change
// (totals.hashed counts what was read); the newest snapshot alone by default; a replica;
// nothing matching, bad globs, paths that are no volume, a volume without snapshots.
import fs from 'node:fs';
import path from 'node:path';
import { blake3 } from '@napi-rs/blake-hash';
import type { ExecutionContext } from 'ava';
import test from '../helpers/ava.js';
import { scratch, replfs, initVolume, mountVolume, describeTree, concurrencyGate, fails, type Scratch } from '../helpers/env.js';
import type { FindReport } from '../../src/cli/versions.js';

const gate = concurrencyGate(2);
const cli = (title: string, body: (t: ExecutionContext) => Promise<void>) => test(title, (t) => gate(() => body(t)));

async function ok(t: ExecutionContext, s: Scratch, args: string[]): Promise<string> {
  const r = await replfs(s, args);
  t.is(r.code, 0, `replfs ${args.join(' ')}: exit ${r.code}; stderr: ${r.stderr}`);
  return r.stdout;
}

async function find(t: ExecutionContext, s: Scratch, args: string[]): Promise<FindReport> {
  const r = await replfs(s, ['find', ...args, '--json']);
  t.is(r.code, 0, `find ${args.join(' ')}: ${r.stderr}`);
  t.is(r.stderr, '');
  return JSON.parse(r.stdout) as FindReport;
}

/** What a version must be: the file's content and mtime as they were in the snapshots listed. */
interface Want {
  content: Buffer;
  mtimeNs: string;
  snapshots: string[];
}

/** The state of a file now (read through the mount), as a version in the given snapshots. */
function now(file: string, snapshots: string[] = []): Want {
  return { content: fs.readFileSync(file), mtimeNs: fs.statSync(file, { bigint: true }).mtimeNs.toString(), snapshots };
}

function expectVersions(t: ExecutionContext, report: FindReport, p: string, want: Want[]): void {
  const f = report.files.find((x) => x.path === p);
  t.truthy(f, `${p} is listed`);
  if (!f) return;
  t.deepEqual(f.versions.map((v) => ({ blake3: v.blake3, size: v.size, mtimeNs: v.mtimeNs, snapshots: v.snapshots })),
    want.map((w) => ({ blake3: blake3(w.content).toString('hex'), size: w.content.length, mtimeNs: w.mtimeNs, snapshots: w.snapshots })),
    `the versions of ${p}, newest first`);
  for (const v of f.versions) {
    const ns = BigInt(v.mtimeNs);
    t.is(v.mtime, `${new Date(Number(ns / 1_000_000n)).toISOString().slice(0, 19)}.${(ns % 1_000_000_000n).toString().padStart(9, '0')}Z`, `${p}: mtime as ISO 8601`);
  }
}

const snap = async (t: ExecutionContext, s: Scratch, dir: string) => (await ok(t, s, ['snapshot', dir])).trim();

/**
 * Four snapshots of a mounted volume with files that change in some and not others. Returns
 * the names and, per path, the versions expected (newest first) with --all-snapshots.
 */
async function history(t: ExecutionContext, s: Scratch, dir: string): Promise<{ names: string[]; want: Record<string, Want[]>; hashed: number; hashedBytes: number }> {
  const at = (p: string) => path.join(dir, p);
  fs.mkdirSync(at('docs/deep'), { recursive: true });
  fs.writeFileSync(at('keep.txt'), 'never changes\n');
  fs.writeFileSync(at('docs/edit.txt'), 'first draft\n');
  fs.writeFileSync(at('docs/gone.txt'), 'will be deleted\n');
  fs.writeFileSync(at('docs/old-name.txt'), 'renamed later\n');
  fs.writeFileSync(at('docs/touched.txt'), 'only its time changes\n');
  fs.writeFileSync(at('docs/deep/big.bin'), Buffer.from(Array.from({ length: 3 << 20 }, (_, i) => (i * 131) & 0xff)));
  fs.linkSync(at('keep.txt'), at('docs/keep-link.txt'));
  fs.symlinkSync('keep.txt', at('symlink'));
  const s1 = await snap(t, s, dir);
  const keep = now(at('keep.txt'));
  const edit1 = now(at('docs/edit.txt'));
  const gone1 = now(at('docs/gone.txt'));
  const renamed = now(at('docs/old-name.txt'));
  const touched1 = now(at('docs/touched.txt'));
  const big = now(at('docs/deep/big.bin'));

  fs.writeFileSync(at('docs/edit.txt'), 'second draft, longer\n');
  fs.unlinkSync(at('docs/gone.txt'));
  fs.utimesSync(at('docs/touched.txt'), new Date('2022-03-04T05:06:07Z'), new Date('2022-03-04T05:06:07Z'));
  const s2 = await snap(t, s, dir);
  const edit2 = now(at('docs/edit.txt'));
  const touched2 = now(at('docs/touched.txt'));

  fs.renameSync(at('docs/old-name.txt'), at('docs/new-name.txt'));
  fs.writeFileSync(at('docs/gone.txt'), 'made again, different\n');
  const s3 = await snap(t, s, dir);
  const gone2 = now(at('docs/gone.txt'));

  fs.appendFileSync(at('docs/edit.txt'), 'third\n');
  const s4 = await snap(t, s, dir);
  const edit3 = now(at('docs/edit.txt'));
  // Changed after the last snapshot: in no snapshot.
  fs.writeFileSync(at('keep.txt'), 'changed after every snapshot\n');

  const want: Record<string, Want[]> = {
    'keep.txt': [{ ...keep, snapshots: [s1, s2, s3, s4] }],
    'docs/keep-link.txt': [{ ...keep, snapshots: [s1, s2, s3, s4] }],
    'docs/edit.txt': [{ ...edit3, snapshots: [s4] }, { ...edit2, snapshots: [s2, s3] }, { ...edit1, snapshots: [s1] }],
    'docs/gone.txt': [{ ...gone2, snapshots: [s3, s4] }, { ...gone1, snapshots: [s1] }],
    'docs/old-name.txt': [{ ...renamed, snapshots: [s1, s2] }],
    'docs/new-name.txt': [{ ...renamed, snapshots: [s3, s4] }],
    'docs/touched.txt': [{ ...touched2, snapshots: [s2, s3, s4] }, { ...touched1, snapshots: [s1] }],
    'docs/deep/big.bin': [{ ...big, snapshots: [s1, s2, s3, s4] }],
  };
  // Read once per content the journal cannot vouch for: keep (and its link) once, edit 3,
  // gone 2 (two files), the renamed file once, touched once (its data never changed), big once.
  const reads = [keep, edit1, edit2, edit3, gone1, gone2, renamed, touched1, big];
  return { names: [s1, s2, s3, s4], want, hashed: reads.length, hashedBytes: reads.reduce((n, w) => n + w.content.length, 0) };
}

cli('find across snapshots, mounted and unmounted: versions grouped by content and mtime, BLAKE3 of the content, unchanged files read once', async (t) => {
  const s = scratch(t);
  const dir = path.join(s.dir, 'data');
  fs.mkdirSync(dir);
  await initVolume(t, s, dir);
  await mountVolume(t, s, dir);
  const { names, want, hashed, hashedBytes } = await history(t, s, dir);

  const all = await find(t, s, [dir, '**', '--all-snapshots']);
  t.is(all.glob, '**');
  t.true(all.allSnapshots);
  t.deepEqual(all.searched, names);
  t.deepEqual(all.files.map((f) => f.path), Object.keys(want).sort(), 'every regular file, by path (no directory, no symlink)');
  for (const [p, versions] of Object.entries(want)) expectVersions(t, all, p, versions);
  t.deepEqual(all.totals, {
    files: Object.keys(want).length,
    versions: Object.values(want).reduce((n, v) => n + v.length, 0),
    hashed,
    hashedBytes,
  }, 'contents the journal vouches for were not read again (renames, links, touches, unchanged files)');

  // The newest snapshot alone, by default.
  const newest = await find(t, s, [dir, 'docs/*.txt']);
  t.deepEqual(newest.searched, [names[3]]);
  t.false(newest.allSnapshots);
  t.deepEqual(newest.files.map((f) => f.path), ['docs/edit.txt', 'docs/gone.txt', 'docs/keep-link.txt', 'docs/new-name.txt', 'docs/touched.txt']);
  for (const f of newest.files) t.deepEqual(f.versions.map((v) => v.snapshots), [[names[3]]], f.path);
  expectVersions(t, newest, 'docs/edit.txt', [{ ...want['docs/edit.txt']![0]!, snapshots: [names[3]!] }]);

  // A glob on the new name of a renamed file finds it where it had that name.
  const renamed = await find(t, s, [dir, 'docs/new-*', '--all-snapshots']);
  t.deepEqual(renamed.files.map((f) => f.path), ['docs/new-name.txt']);
  expectVersions(t, renamed, 'docs/new-name.txt', want['docs/new-name.txt']!);
  t.is(renamed.totals.hashed, 1);

  // `*` stays in its directory, `**` goes down, classes and ? work on names.
  t.deepEqual((await find(t, s, [dir, '*', '--all-snapshots'])).files.map((f) => f.path), ['keep.txt']);
  t.deepEqual((await find(t, s, [dir, '**/*.bin', '--all-snapshots'])).files.map((f) => f.path), ['docs/deep/big.bin']);
  t.deepEqual((await find(t, s, [dir, 'docs/[eg]?[!x]*', '--all-snapshots'])).files.map((f) => f.path), ['docs/edit.txt', 'docs/gone.txt']);

  // The human form: a block per path, versions newest first, their snapshots.
  const human = await ok(t, s, ['find', dir, 'docs/edit.txt', '--all-snapshots']);
  const e = want['docs/edit.txt']!;
  const hex = (w: Want) => blake3(w.content).toString('hex');
  t.regex(human, new RegExp(`^docs/edit\\.txt: 3 versions\\n {2}.*  \\S+Z  ${hex(e[0]!)}\\n {6}in ${names[3]}\\n {2}.*${hex(e[1]!)}\\n {6}in ${names[1]}, ${names[2]}\\n {2}.*${hex(e[2]!)}\\n {6}in ${names[0]}\\n$`));
  const keepHuman = await ok(t, s, ['find', dir, 'keep.txt', '--all-snapshots']);
  t.regex(keepHuman, new RegExp(`\\n {6}in ${names[0]} \\.\\. ${names[3]} \\(4 snapshots\\)\\n$`));

  // Unmounted, the same answers.
  await ok(t, s, ['unmount', dir]);
  t.deepEqual(await find(t, s, [dir, '**', '--all-snapshots']), all, 'unmounted: the same report');
  t.deepEqual(await find(t, s, [dir, 'docs/*.txt']), newest);
});

cli('find on a replica: the source\'s versions under the source\'s snapshot names', async (t) => {
  const s = scratch(t);
  const dir = path.join(s.dir, 'data');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'f.txt'), 'one\n');
  await initVolume(t, s, dir);
  await mountVolume(t, s, dir);
  const replica = path.join(s.dir, 'replica');
  await ok(t, s, ['sync', dir, replica]);
  const v1 = now(path.join(dir, 'f.txt'));
  fs.writeFileSync(path.join(dir, 'f.txt'), 'two, longer\n');
  await ok(t, s, ['sync', dir, replica]);
  const v2 = now(path.join(dir, 'f.txt'));
  const names = (JSON.parse(await ok(t, s, ['snapshots', dir, '--json'])) as { snapshots: Array<{ name: string }> }).snapshots.map((x) => x.name);
  const report = await find(t, s, [replica, 'f.txt', '--all-snapshots']);
  t.deepEqual(report.searched, names, 'the replica\'s snapshots carry the source\'s names');
  expectVersions(t, report, 'f.txt', [{ ...v2, snapshots: [names[1]!] }, { ...v1, snapshots: [names[0]!] }]);
  // Mounted read-only, through its daemon.
  const mnt = path.join(s.dir, 'rmnt');
  fs.mkdirSync(mnt);
  await mountVolume(t, s, replica, mnt, ['--read-only']);
  t.deepEqual(await find(t, s, [replica, 'f.txt', '--all-snapshots']), report);
});

cli('nothing matching is exit 0 with a note on stderr; bad globs, no volume, no snapshot each have their exit code and change nothing', async (t) => {
  const s = scratch(t);
  const dir = path.join(s.dir, 'data');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'a.txt'), 'a\n');
  fs.mkdirSync(path.join(dir, 'adir'));
  fs.writeFileSync(path.join(dir, 'adir', 'inner'), 'i\n');
  await initVolume(t, s, dir);
  const plain = path.join(s.dir, 'plain');
  fs.mkdirSync(plain);
  // What a command that changes nothing must leave as it was: files, epoch, journal, snapshots.
  const state = async () => {
    const st = JSON.parse(await ok(t, s, ['status', dir, '--json'])) as { epoch: number; journal: { entries: number; dirtyFiles: number; dirtyBytes: number }; files: number };
    const { entries, dirtyFiles, dirtyBytes } = st.journal;
    return { tree: await describeTree(dir), epoch: st.epoch, journal: { entries, dirtyFiles, dirtyBytes }, files: st.files, snaps: await ok(t, s, ['snapshots', dir, '--json']) };
  };

  // No snapshot yet: nothing to search, refused, mounted or not.
  for (const mounted of [false, true]) {
    if (mounted) await mountVolume(t, s, dir);
    const before = await state();
    fails(t, await replfs(s, ['find', dir, '*']), 'refused', /^replfs find: .*data has no snapshot to search\n {2}hint: take one with: replfs snapshot <path>\n$/, `no snapshot, ${mounted ? 'mounted' : 'unmounted'}`);
    t.deepEqual(await state(), before, 'nothing changed');
    if (mounted) await ok(t, s, ['unmount', dir]);
  }
  const name = await snap(t, s, dir);

  for (const mounted of [false, true]) {
    const mode = mounted ? 'mounted' : 'unmounted';
    if (mounted) await mountVolume(t, s, dir);
    const before = await state();
    const none = await replfs(s, ['find', dir, 'nothing/*.here']);
    t.is(none.code, 0, none.stderr);
    t.is(none.stdout, '', `${mode}: nothing on stdout`);
    t.is(none.stderr, `replfs find: no file matches "nothing/*.here" in snapshot ${name} (the newest; --all-snapshots searches every one)\n`);
    const noneAll = await replfs(s, ['find', dir, 'zz*', '--all-snapshots']);
    t.is(noneAll.code, 0);
    t.is(noneAll.stderr, 'replfs find: no file matches "zz*" in snapshot ' + name + '\n');
    const noneJson = await find(t, s, [dir, 'zz*']);
    t.deepEqual(noneJson.files, []);
    t.deepEqual(noneJson.totals, { files: 0, versions: 0, hashed: 0, hashedBytes: 0 });
    // A directory matching is not a file.
    t.deepEqual((await find(t, s, [dir, '*'])).files.map((f) => f.path), ['a.txt']);

    const cases: Array<[string[], Parameters<typeof fails>[2], RegExp]> = [
      [['find', dir, '[abc'], 'usage', /^replfs find: bad glob "\[abc": the \[ at character 1 is not closed\n {2}hint: see: replfs find --help\n$/],
      [['find', dir, '/etc/*'], 'usage', /bad glob "\/etc\/\*": it must be relative to the top of the volume/],
      [['find', dir, 'a//b'], 'usage', /empty component/],
      [['find', dir, '../x'], 'usage', /"\.\." is not a name/],
      [['find', dir, '[z-a]'], 'usage', /the range z-a is backwards/],
      [['find', dir, ''], 'usage', /it is empty/],
      [['find', dir], 'usage', /missing argument/],
      [['find', dir, '*', '--all'], 'usage', /Unknown option '--all'/],
      [['find', plain, '*'], 'notFound', /is not inside a protected directory\n {2}hint: make one with: replfs init <dir>/],
      [['find', path.join(s.dir, 'nowhere'), '*'], 'notFound', /nowhere does not exist/],
    ];
    for (const [args, exit, message] of cases) fails(t, await replfs(s, args), exit, message, `${mode}: ${args.slice(2).join(' ')}`);
    t.deepEqual(await state(), before, `${mode}: nothing changed`);
    if (mounted) await ok(t, s, ['unmount', dir]);
  }
});
