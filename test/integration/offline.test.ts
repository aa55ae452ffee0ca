// Changes made while a volume is not mounted are found at the next mount: the mount-time
// scan compares every file's inode, names, size, mtime and ctime with what the volume
// recorded, and journals the differences (data changes as `unknown: 'offline-change'`,
// new files as created with `unknown: 'created-offline'`, and deletions, renames and new
// hard links as such). Files nobody touched must stay out of the journal, and a mount
// after an unmount with no change in between must leave the journal exactly as it was.
//
// The daemon is a separate process, so this test may use synchronous fs calls on the mount.
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import test from '../helpers/ava.js';
import { scratch, replfs, initVolume, mountVolume, isMounted, sh, type Scratch } from '../helpers/env.js';

// The --json schemas are the engine's own types (docs/cli.md documents them).
import type { ChangeKindName, Extent, JournalFile, JournalReport } from '../../src/core/types.js';

async function journal(t: ExecutionContext, s: Scratch, dir: string): Promise<JournalReport> {
  const r = await replfs(s, ['journal', dir, '--json']);
  t.is(r.code, 0, `journal: ${r.stderr}`);
  return JSON.parse(r.stdout) as JournalReport;
}

async function unmount(t: ExecutionContext, s: Scratch, dir: string): Promise<void> {
  const r = await replfs(s, ['unmount', dir]);
  t.is(r.code, 0, `unmount: ${r.stderr}`);
  t.false(await isMounted(dir));
}

/** Mounts again through mountVolume, so that teardown unmounts whatever happens. */
async function remount(t: ExecutionContext, s: Scratch, dir: string): Promise<void> {
  await mountVolume(t, s, dir);
  t.true(await isMounted(dir));
}

function write(dir: string, rel: string, content: string | Buffer): void {
  fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
  fs.writeFileSync(path.join(dir, rel), content);
}

/** Whether [0, size) is covered by the extents. */
function coversWhole(extents: Extent[], size: number): boolean {
  let at = 0;
  for (const e of [...extents].sort((a, b) => a.offset - b.offset)) {
    if (e.offset > at) return false;
    at = Math.max(at, e.offset + e.length);
  }
  return at >= size;
}

test('unmount and mount with nothing changed in between leaves the journal exactly as it was', async (t) => {
  const s = scratch(t);
  const dir = path.join(s.dir, 'data');
  write(dir, 'a.txt', 'alpha\n');
  write(dir, 'b.txt', 'beta\n');
  write(dir, 'big.bin', Buffer.alloc(3 * 1024 * 1024, 1));
  write(dir, 'sub/c.txt', 'gamma\n');
  write(dir, 'sub/d.txt', 'delta\n');
  write(dir, 'gone.txt', 'bye\n');
  fs.symlinkSync('a.txt', path.join(dir, 'sym'));
  await initVolume(t, s, dir);
  await mountVolume(t, s, dir);

  // A bit of everything through the mount, so the journal and the records have something
  // to agree about: writes to an old file, a new file, rename, hard link, symlink, chmod,
  // utimes, truncate, mkdir, unlink.
  const fd = fs.openSync(path.join(dir, 'big.bin'), 'r+');
  fs.writeSync(fd, Buffer.alloc(100, 2), 0, 100, 1_000_000);
  fs.writeSync(fd, Buffer.alloc(10, 3), 0, 10, 2_500_000);
  fs.closeSync(fd);
  fs.appendFileSync(path.join(dir, 'a.txt'), 'more\n');
  write(dir, 'new.txt', 'new\n');
  fs.mkdirSync(path.join(dir, 'newdir'));
  write(dir, 'newdir/inner.txt', 'inner\n');
  fs.renameSync(path.join(dir, 'b.txt'), path.join(dir, 'sub/b-moved.txt'));
  fs.linkSync(path.join(dir, 'sub/c.txt'), path.join(dir, 'c-link.txt'));
  fs.symlinkSync('sub/d.txt', path.join(dir, 'sym2'));
  fs.chmodSync(path.join(dir, 'sub/d.txt'), 0o600);
  fs.utimesSync(path.join(dir, 'a.txt'), new Date('2020-01-01T00:00:00Z'), new Date('2020-01-02T00:00:00Z'));
  fs.truncateSync(path.join(dir, 'new.txt'), 2);
  fs.unlinkSync(path.join(dir, 'gone.txt'));

  const mounted = await journal(t, s, dir);
  t.true(mounted.files.length > 0);
  await unmount(t, s, dir);
  const offline = await journal(t, s, dir);
  t.deepEqual(offline, mounted, 'the journal read while unmounted is the one the daemon reported');
  await remount(t, s, dir);
  const again = await journal(t, s, dir);
  t.deepEqual(again, mounted, 'mounting again with nothing changed leaves the journal as it was');

  // And once more, now from a volume whose last session was this quiet one.
  await unmount(t, s, dir);
  await remount(t, s, dir);
  t.deepEqual(await journal(t, s, dir), mounted);
  await unmount(t, s, dir);
});

test('changes made while unmounted are journaled at the next mount; untouched files are not', async (t) => {
  const s = scratch(t);
  const dir = path.join(s.dir, 'data');
  const text = (c: string, n: number) => c.repeat(n);
  // Untouched: files, a symlink, a pre-existing hard link pair, a quiet directory tree.
  write(dir, 'keep.txt', 'keep\n');
  write(dir, 'sub/keep2.txt', 'keep2\n');
  write(dir, 'quiet/file.txt', 'quiet\n');
  write(dir, 'quiet/deeper/x.txt', 'x\n');
  fs.symlinkSync('keep.txt', path.join(dir, 'link'));
  write(dir, 'hl-a.txt', 'hard\n');
  fs.linkSync(path.join(dir, 'hl-a.txt'), path.join(dir, 'quiet/hl-b.txt'));
  // To be changed.
  write(dir, 'samesize.txt', text('a', 5000));
  write(dir, 'sneaky.txt', text('s', 7000));
  write(dir, 'append.txt', text('p', 3000));
  write(dir, 'rename-me.txt', 'rename\n');
  write(dir, 'move-me.txt', 'move\n');
  write(dir, 'delete-me.txt', 'delete\n');
  write(dir, 'tree/a.txt', 'a\n');
  write(dir, 'tree/b/c.txt', 'c\n');
  write(dir, 'olddir/inner.txt', 'inner\n');
  write(dir, 'linked.txt', 'linked\n');
  write(dir, 'mode.txt', 'mode\n');
  fs.chmodSync(path.join(dir, 'mode.txt'), 0o644);

  await initVolume(t, s, dir);
  await mountVolume(t, s, dir);
  await unmount(t, s, dir);
  const quiet = await journal(t, s, dir);
  t.deepEqual(quiet.files, [], 'a mount and unmount with no change journal nothing');

  // ---- changes straight on the backing directory, replfs not watching
  const ref = path.join(s.dir, 'sneaky.ref');
  await sh(t, `cp -p '${path.join(dir, 'sneaky.txt')}' '${ref}'`);
  const sneakyBefore = fs.statSync(path.join(dir, 'sneaky.txt'), { bigint: true });
  fs.writeFileSync(path.join(dir, 'samesize.txt'), text('b', 5000));
  fs.writeFileSync(path.join(dir, 'sneaky.txt'), text('S', 7000));
  await sh(t, `touch -r '${ref}' '${path.join(dir, 'sneaky.txt')}'`);
  const sneakyAfter = fs.statSync(path.join(dir, 'sneaky.txt'), { bigint: true });
  t.is(sneakyAfter.size, sneakyBefore.size);
  t.is(sneakyAfter.mtimeNs, sneakyBefore.mtimeNs, 'touch -r restored the mtime: only ctime shows the change');
  t.not(sneakyAfter.ctimeNs, sneakyBefore.ctimeNs);
  fs.appendFileSync(path.join(dir, 'append.txt'), 'more');
  fs.renameSync(path.join(dir, 'rename-me.txt'), path.join(dir, 'renamed.txt'));
  fs.renameSync(path.join(dir, 'move-me.txt'), path.join(dir, 'sub/move-me.txt'));
  fs.renameSync(path.join(dir, 'olddir'), path.join(dir, 'newname-dir'));
  // New files before deletions: ext4 hands a freed inode number to the next new file, and
  // that case (a deleted file's number reused) has a test of its own below.
  write(dir, 'new1.txt', 'new one\n');
  write(dir, 'sub/new2.txt', 'new two\n');
  fs.mkdirSync(path.join(dir, 'newdir'));
  write(dir, 'newdir/inner-new.txt', 'inner new\n');
  fs.unlinkSync(path.join(dir, 'delete-me.txt'));
  fs.rmSync(path.join(dir, 'tree'), { recursive: true });
  fs.linkSync(path.join(dir, 'linked.txt'), path.join(dir, 'sub/linked-too.txt'));
  fs.chmodSync(path.join(dir, 'mode.txt'), 0o600);

  await remount(t, s, dir);
  const report = await journal(t, s, dir);
  const byPath = new Map<string, JournalFile>();
  for (const f of report.files) byPath.set(f.path, f);
  const get = (p: string): JournalFile => {
    const f = byPath.get(p);
    if (!f) throw new Error(`${p} is not in the journal; it has: ${[...byPath.keys()].map((k) => JSON.stringify(k)).join(', ')}`);
    return f;
  };
  const hasKinds = (p: string, ...kinds: ChangeKindName[]) => {
    const f = get(p);
    for (const k of kinds) t.true(f.kinds.includes(k), `${p}: kinds ${f.kinds.join(',')} should include ${k}`);
    return f;
  };

  for (const p of ['samesize.txt', 'sneaky.txt', 'append.txt']) {
    const f = hasKinds(p, 'data');
    t.is(f.unknown, 'offline-change', `${p}: unknown`);
    t.is(f.size, fs.statSync(path.join(dir, p)).size, `${p}: size`);
    // The journal cannot say which bytes changed: a reader compares the whole file.
    t.is(f.dirtyBytes, f.size, `${p}: dirtyBytes is the whole file`);
  }

  for (const p of ['new1.txt', 'sub/new2.txt', 'newdir', 'newdir/inner-new.txt']) {
    const f = hasKinds(p, 'created');
    t.is(f.unknown, 'created-offline', `${p}: unknown`);
  }
  t.is(get('newdir').type, 'dir');
  t.is(get('new1.txt').type, 'file');
  t.true(coversWhole(get('new1.txt').extents, 'new one\n'.length), 'a file created offline is covered whole');

  for (const p of ['delete-me.txt', 'tree', 'tree/a.txt', 'tree/b', 'tree/b/c.txt']) {
    const f = hasKinds(p, 'deleted');
    t.deepEqual(f.paths, [], `${p}: a deleted file has no current names`);
    t.deepEqual(f.extents, [], `${p}: a deleted file has no extents`);
  }

  hasKinds('renamed.txt', 'renamed');
  t.false(byPath.has('rename-me.txt'), 'the old name is not reported as a file of its own');
  hasKinds('sub/move-me.txt', 'renamed');
  t.false(byPath.has('move-me.txt'));
  hasKinds('newname-dir', 'renamed');
  t.is(get('newname-dir').type, 'dir');
  t.false(byPath.has('olddir'));
  t.false(byPath.has('newname-dir/inner.txt'), 'a file inside a renamed directory did not change');

  const linked = hasKinds('linked.txt', 'linked');
  t.deepEqual([...linked.paths].sort(), ['linked.txt', 'sub/linked-too.txt']);
  t.false(byPath.has('sub/linked-too.txt'), 'one file with two names is one journal entry');

  hasKinds('mode.txt', 'attributes');

  // Directories whose entries changed.
  hasKinds('', 'entries');
  hasKinds('sub', 'entries');

  for (const p of ['keep.txt', 'sub/keep2.txt', 'quiet', 'quiet/file.txt', 'quiet/deeper', 'quiet/deeper/x.txt', 'link', 'hl-a.txt', 'quiet/hl-b.txt']) {
    t.false(report.files.some((f) => f.path === p || f.paths.includes(p)), `${p} was not touched and must not be in the journal`);
  }
  const expected = new Set(['', 'sub', 'samesize.txt', 'sneaky.txt', 'append.txt', 'new1.txt', 'sub/new2.txt', 'newdir', 'newdir/inner-new.txt',
    'delete-me.txt', 'tree', 'tree/a.txt', 'tree/b', 'tree/b/c.txt', 'renamed.txt', 'sub/move-me.txt', 'newname-dir', 'linked.txt', 'mode.txt']);
  t.deepEqual(report.files.map((f) => f.path).filter((p) => !expected.has(p)), [], 'nothing else is in the journal');

  // Found once: another unmount and mount with nothing changed leaves the journal alone.
  await unmount(t, s, dir);
  await remount(t, s, dir);
  t.deepEqual(await journal(t, s, dir), report);
  await unmount(t, s, dir);
});

test('a file deleted while unmounted whose inode number a new file reuses: deleted and created, not renamed', async (t) => {
  const s = scratch(t);
  const dir = path.join(s.dir, 'data');
  write(dir, 'keep.txt', 'keep\n');
  write(dir, 'victim.txt', 'old content\n');
  await initVolume(t, s, dir);
  await mountVolume(t, s, dir);
  await unmount(t, s, dir);
  const victimIno = fs.statSync(path.join(dir, 'victim.txt')).ino;
  fs.unlinkSync(path.join(dir, 'victim.txt'));
  // ext4 gives the freed number to the next file created nearby; try a few in case not.
  const fresh: string[] = [];
  let reused: string | undefined;
  for (let i = 0; i < 200 && !reused; i++) {
    const name = `fresh-${i}.txt`;
    write(dir, name, `fresh ${i}\n`);
    fresh.push(name);
    if (fs.statSync(path.join(dir, name)).ino === victimIno) reused = name;
  }
  t.log(reused ? `${reused} reuses the inode number ${victimIno} of victim.txt` : `no new file got inode ${victimIno}; the reuse case was not exercised`);

  await remount(t, s, dir);
  const report = await journal(t, s, dir);
  const summary = report.files.map((f) => `${f.path || '/'} [${f.kinds.join(',')}]${f.unknown ? ` unknown=${f.unknown}` : ''}`);
  const victim = report.files.find((f) => f.path === 'victim.txt');
  t.truthy(victim, `victim.txt is reported; journal: ${summary.join('; ')}`);
  t.true(victim?.kinds.includes('deleted'), `victim.txt is deleted; journal: ${summary.join('; ')}`);
  t.deepEqual(victim?.paths, [], 'the deleted file has no current name');
  for (const name of fresh) {
    const f = report.files.find((x) => x.path === name);
    t.true(f?.kinds.includes('created'), `${name} is created; journal: ${summary.join('; ')}`);
    t.false(f?.kinds.includes('renamed') ?? false, `${name} is not a rename of victim.txt`);
    t.is(f?.unknown, 'created-offline');
  }
  t.false(report.files.some((f) => f.path === 'keep.txt'));
  await unmount(t, s, dir);
});
