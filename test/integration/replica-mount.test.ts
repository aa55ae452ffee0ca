// `replfs mount --read-only` for real: a source volume synced to a replica, the replica
// mounted, and everything checked through the mount with real processes: the root is the
// newest snapshot, `.snapshots` holds every one under the source's times, nothing can be
// changed, syncs while mounted go through the daemon and move the root at once, a sync
// that dies half way leaves the root where it was, and the refusals say why.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Duplex, PassThrough } from 'node:stream';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import {
  BIN, scratch, replfs, run, initVolume, mountVolume, describeTree, isMounted, mountsUnder, waitFor, alive, exited,
  concurrencyGate, type Scratch, fails,
} from '../helpers/env.js';
import type { ExitCodeName } from '../../src/errors/index.js';
import type { SyncSummary } from '../../src/replicate/sender.js';
import type { VolumeStatus } from '../../src/core/types.js';
import { Connection, greet } from '../../src/replicate/connection.js';
import { encodeFrame, type Frame } from '../../src/replicate/frames.js';
import { HashPool } from '../../src/replicate/hasher.js';
import { send } from '../../src/replicate/sender.js';
import { RemoteReceiver } from '../../src/replicate/wire.js';
import { Volume } from '../../src/volume/index.js';
import { receiveOn } from '../../src/cli/receive.js';

// Each case runs two daemons and a dozen commands: a few at a time is faster than all.
const gate = concurrencyGate(3);


/** A source volume with one of everything, mounted in place so that its snapshots can be browsed. */
async function source(t: ExecutionContext, s: Scratch, opts: { mount?: boolean } = {}): Promise<string> {
  const dir = path.join(s.dir, 'src');
  fs.mkdirSync(path.join(dir, 'docs/deep'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'docs/a.txt'), 'alpha\n');
  fs.writeFileSync(path.join(dir, 'docs/deep/b.txt'), 'beta\n');
  fs.writeFileSync(path.join(dir, 'big.bin'), Buffer.alloc(1 << 20, 0x5a));
  const fd = fs.openSync(path.join(dir, 'sparse'), 'w');
  fs.writeSync(fd, 'tail', 4 << 20);
  fs.closeSync(fd);
  fs.symlinkSync('docs/a.txt', path.join(dir, 'link'));
  fs.linkSync(path.join(dir, 'docs/a.txt'), path.join(dir, 'hard'));
  fs.chmodSync(path.join(dir, 'docs/deep/b.txt'), 0o640);
  fs.utimesSync(path.join(dir, 'docs/deep/b.txt'), new Date('2021-02-03T04:05:06.789Z'), new Date('2020-01-02T03:04:05.123Z'));
  await run('setfattr', ['-n', 'user.tag', '-v', 'kept', path.join(dir, 'docs/a.txt')]);
  await initVolume(t, s, dir);
  if (opts.mount !== false) await mountVolume(t, s, dir);
  return dir;
}

async function sync(t: ExecutionContext, s: Scratch, src: string, dst: string): Promise<SyncSummary> {
  const r = await replfs(s, ['sync', src, dst, '--json']);
  t.is(r.code, 0, `replfs sync ${src} ${dst}: exit ${r.code}; stderr: ${r.stderr}`);
  return JSON.parse(r.stdout) as SyncSummary;
}

async function status(t: ExecutionContext, s: Scratch, dir: string): Promise<VolumeStatus> {
  const r = await replfs(s, ['status', dir, '--json']);
  t.is(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as VolumeStatus;
}

const tree = (dir: string) => describeTree(dir, { xattrs: true, inodes: false });

/** The replica mounted read-only at `mnt` (in place without it), unmounted in teardown. */
async function mountReplica(t: ExecutionContext, s: Scratch, replica: string, mnt?: string, extra: string[] = []): Promise<string> {
  if (mnt) fs.mkdirSync(mnt, { recursive: true });
  return mountVolume(t, s, replica, mnt, ['--read-only', ...extra]);
}

async function errorCode(work: Promise<unknown>): Promise<string> {
  try {
    await work;
    return 'no error';
  } catch (err) {
    return String((err as NodeJS.ErrnoException).code);
  }
}

function daemonLog(replica: string): string {
  return fs.readFileSync(path.join(replica, '.replfs', 'daemon.log'), 'utf8');
}

/** A sender speaking the protocol by hand to a real `replfs serve --stdio` (which forwards to the daemon). */
interface HandSender {
  child: ChildProcess;
  conn: Connection;
  exit: Promise<number | null>;
  stderr: () => string;
}

async function handSender(t: ExecutionContext, s: Scratch, replica: string): Promise<HandSender> {
  const child = spawn(process.execPath, [BIN, 'serve', '--stdio', replica], { stdio: ['pipe', 'pipe', 'pipe'], env: s.env });
  t.teardown(() => { child.kill('SIGKILL'); });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => { err += c.toString(); });
  const exit = new Promise<number | null>((resolve) => child.on('close', resolve));
  const conn = new Connection(Duplex.from({ readable: child.stdout!, writable: child.stdin! }));
  await greet(conn, 'test');
  return { child, conn, exit, stderr: () => err };
}

async function begin(h: HandSender, sourceVolumeId: string): Promise<Frame> {
  await h.conn.sendJson('begin', {
    sourceVolumeId, blockSize: 4096, mode: 'sync', force: false,
    snapshot: { name: '2030-01-01T00-00-00Z', sourceTime: '2030-01-01T00:00:00.000Z', label: null, consistency: 'crash' },
  });
  return h.conn.next(10_000);
}

test('a replica mounts read-only: the root is the newest snapshot, .snapshots holds every one under its source time, unmount leaves nothing', (t) => gate(async () => {
  const s = scratch(t);
  const src = await source(t, s);
  const replica = path.join(s.dir, 'replica');
  const first = await sync(t, s, src, replica);
  fs.appendFileSync(path.join(src, 'docs/a.txt'), 'more\n');
  fs.renameSync(path.join(src, 'docs/deep'), path.join(src, 'moved'));
  fs.writeFileSync(path.join(src, 'new.txt'), 'new\n');
  fs.unlinkSync(path.join(src, 'hard'));
  const second = await sync(t, s, src, replica);
  const rawBefore = await tree(replica);

  const mnt = await mountReplica(t, s, replica, path.join(s.dir, 'mnt'));
  t.deepEqual(await tree(mnt), await tree(path.join(src, '.snapshots', second.snapshot)), 'the root is the newest source snapshot: bytes, modes, mtimes, links, xattrs');
  t.is(fs.readlinkSync(path.join(mnt, 'link')), 'docs/a.txt');
  t.false(fs.readdirSync(mnt).includes('.snapshots'), '.snapshots is left out of the root listing');
  const names = [first.replicaSnapshot!, second.replicaSnapshot!];
  t.deepEqual(fs.readdirSync(path.join(mnt, '.snapshots')).sort(), [...names, 'latest'].sort());
  t.is(fs.readlinkSync(path.join(mnt, '.snapshots', 'latest')), second.replicaSnapshot!);
  t.deepEqual(await tree(path.join(mnt, '.snapshots', first.replicaSnapshot!)), await tree(path.join(src, '.snapshots', first.snapshot)), 'the older snapshot is whole');
  t.deepEqual(await tree(path.join(mnt, '.snapshots', second.replicaSnapshot!)), await tree(mnt));

  // Named and dated with the source's time, not the time it arrived.
  const listed = JSON.parse((await replfs(s, ['snapshots', replica, '--json'])).stdout) as { snapshots: Array<{ name: string; sourceTime: string }> };
  t.deepEqual(listed.snapshots.map((x) => x.sourceTime), [first.sourceTime, second.sourceTime]);
  t.deepEqual(listed.snapshots.map((x) => x.name), names);
  for (const [i, sum] of [first, second].entries()) {
    t.is(names[i], sum.snapshot, 'the replica snapshot has the source snapshot\'s name (its source time)');
    const st = fs.statSync(path.join(mnt, '.snapshots'));
    if (i === 1) t.is(st.mtime.toISOString(), second.sourceTime, '.snapshots is dated with the newest source time');
  }

  const info = (await fsp.readFile('/proc/self/mountinfo', 'utf8')).split('\n').find((l) => l.split(' ')[4] === mnt) ?? '';
  t.regex(info, /^\S+ \S+ \S+ \S+ \S+ ro[, ]/, 'the kernel knows the mount is read-only');
  const pid = (await status(t, s, replica)).pid!;
  const r = await replfs(s, ['unmount', mnt]);
  t.is(r.code, 0, r.stderr);
  t.false(await isMounted(mnt));
  t.false(alive(pid), 'the daemon is gone');
  t.deepEqual(fs.readdirSync(s.runtime).filter((n) => n.endsWith('.json')).length, 1, 'only the source\'s daemon record is left');
  t.deepEqual(await mountsUnder(s.dir), [src]);
  t.deepEqual(await tree(replica), rawBefore, 'the replica itself is as the syncs left it');
}));

test('-o snapdir=visible lists .snapshots in the root of a replica mount', (t) => gate(async () => {
  const s = scratch(t);
  const src = await source(t, s, { mount: false });
  const replica = path.join(s.dir, 'replica');
  await sync(t, s, src, replica);
  const mnt = await mountReplica(t, s, replica, path.join(s.dir, 'mnt'), ['-o', 'snapdir=visible']);
  t.deepEqual(fs.readdirSync(mnt).sort(), ['.snapshots', 'big.bin', 'docs', 'hard', 'link', 'sparse']);
}));

/** Every change there is, tried at `dir` (a directory holding docs/a.txt, docs/deep, link). */
async function tryEveryChange(t: ExecutionContext, dir: string, where: string): Promise<void> {
  const a = path.join(dir, 'docs/a.txt');
  const sub = path.join(dir, 'docs/deep');
  const fresh = path.join(dir, 'docs/fresh');
  const calls: Array<[string, () => Promise<unknown>]> = [
    ['create', () => fsp.writeFile(fresh, 'x')],
    ['open for writing', () => fsp.open(a, 'r+').then((h) => h.close())],
    ['open with O_TRUNC', () => fsp.writeFile(a, 'x')],
    ['append', () => fsp.appendFile(a, 'x')],
    ['truncate', () => fsp.truncate(a, 0)],
    ['unlink', () => fsp.unlink(a)],
    ['rmdir', () => fsp.rmdir(sub)],
    ['mkdir', () => fsp.mkdir(fresh)],
    ['rename', () => fsp.rename(a, fresh)],
    ['link', () => fsp.link(a, fresh)],
    ['symlink', () => fsp.symlink('a.txt', fresh)],
    ['chmod', () => fsp.chmod(a, 0o777)],
    ['chown', () => fsp.chown(a, 1, 1)],
    ['utimens', () => fsp.utimes(a, 1, 1)],
    ['utimens of a symlink', () => fsp.lutimes(path.join(dir, 'link'), 1, 1)],
  ];
  for (const [what, call] of calls) t.is(await errorCode(call()), 'EROFS', `${what} in ${where}`);
  const shell: Array<[string, string[]]> = [
    ['setxattr', ['setfattr', '-n', 'user.x', '-v', '1', a]],
    ['removexattr', ['setfattr', '-x', 'user.tag', a]],
    ['mknod', ['mkfifo', path.join(dir, 'docs/fifo')]],
    ['touch', ['touch', a]],
    ['rm -r', ['rm', '-rf', sub]],
    ['cp over a file', ['cp', '/etc/hostname', a]],
  ];
  for (const [what, argv] of shell) {
    const r = await run(argv[0]!, argv.slice(1));
    t.not(r.code, 0, `${what} in ${where} fails`);
    t.regex(r.stderr, /Read-only file system/, `${what} in ${where}: ${r.stderr}`);
  }
}

test('every change in the root and in .snapshots fails with EROFS, and the replica is unchanged', (t) => gate(async () => {
  const s = scratch(t);
  const src = await source(t, s, { mount: false });
  const replica = path.join(s.dir, 'replica');
  const first = await sync(t, s, src, replica);
  const before = await tree(replica);
  // In place: nothing can reach the replica behind replfs either.
  const mnt = await mountReplica(t, s, replica);
  const shown = await tree(mnt);
  await tryEveryChange(t, mnt, 'the root');
  const snap = path.join(mnt, '.snapshots', first.replicaSnapshot!);
  await tryEveryChange(t, snap, '.snapshots/<name>');
  const snapdir = path.join(mnt, '.snapshots');
  t.is(await errorCode(fsp.mkdir(path.join(snapdir, 'new'))), 'EROFS', 'mkdir in .snapshots');
  t.is(await errorCode(fsp.rename(snap, path.join(snapdir, 'renamed'))), 'EROFS', 'renaming a snapshot');
  t.is(await errorCode(fsp.rmdir(snap)), 'EROFS', 'removing a snapshot');
  t.is(await errorCode(fsp.unlink(path.join(snapdir, 'latest'))), 'EROFS', 'removing latest');
  t.is(await errorCode(fsp.symlink('x', path.join(snapdir, 'mine'))), 'EROFS', 'a symlink in .snapshots');
  t.is(await errorCode(fsp.rename(path.join(mnt, 'docs/a.txt'), path.join(snap, 'a.txt'))), 'EROFS', 'a rename into a snapshot');
  t.is(await errorCode(fsp.access(path.join(mnt, 'docs/a.txt'), fs.constants.W_OK)), 'EROFS', 'access(W_OK)');
  t.deepEqual(await tree(mnt), shown, 'the mount shows what it showed');
  t.deepEqual(fs.readdirSync(snapdir).sort(), [first.replicaSnapshot!, 'latest'].sort());

  const r = await replfs(s, ['unmount', mnt]);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(await tree(replica), before, 'the replica directory is unchanged');
  const journal = JSON.parse((await replfs(s, ['journal', replica, '--json'])).stdout) as { files: unknown[] };
  t.deepEqual(journal.files, [], 'and nothing was journaled');
}));

test('a sync while mounted goes through the daemon; the root and latest move to it at once, with nothing stale; older snapshots stay', (t) => gate(async () => {
  const s = scratch(t);
  const src = await source(t, s);
  const replica = path.join(s.dir, 'replica');
  const first = await sync(t, s, src, replica);
  const mnt = await mountReplica(t, s, replica, path.join(s.dir, 'mnt'));
  const firstTree = await tree(path.join(src, '.snapshots', first.snapshot));
  t.deepEqual(await tree(mnt), firstTree);

  // Let the kernel cache what it would: names, missing names, attributes, data.
  const a = path.join(mnt, 'docs/a.txt');
  t.is(fs.readFileSync(a, 'utf8'), 'alpha\n');
  t.is(fs.statSync(a).size, 6);
  t.is(fs.statSync(path.join(mnt, 'docs/deep/b.txt')).mode & 0o777, 0o640);
  t.is(await errorCode(fsp.stat(path.join(mnt, 'new.txt'))), 'ENOENT');
  t.true(fs.existsSync(path.join(mnt, 'hard')));
  t.is(await errorCode(fsp.stat(path.join(mnt, '.snapshots', 'x'))), 'ENOENT');

  fs.appendFileSync(path.join(src, 'docs/a.txt'), 'more\n');
  fs.renameSync(path.join(src, 'docs/deep'), path.join(src, 'moved'));
  fs.chmodSync(path.join(src, 'moved/b.txt'), 0o604);
  fs.writeFileSync(path.join(src, 'new.txt'), 'new\n');
  fs.unlinkSync(path.join(src, 'hard'));
  fs.writeFileSync(path.join(src, 'big.bin'), Buffer.alloc(1 << 20, 0x33));
  // Keep those caches fresh while the sync runs, up to the moment the root moves.
  let syncing = true;
  const warm = (async () => {
    const paths = ['docs/a.txt', 'new.txt', 'hard', 'docs/deep', 'moved/b.txt', 'big.bin'].map((p) => path.join(mnt, p));
    while (syncing) {
      await Promise.all(paths.map((p) => fsp.stat(p).catch(() => undefined)));
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  const second = await sync(t, s, src, replica).finally(() => { syncing = false; });
  await warm;
  t.is(second.base, first.snapshot);

  // No waiting: the sync returns once the replica snapshot is taken, and the root moves then.
  t.is(fs.readFileSync(a, 'utf8'), 'alpha\nmore\n', 'new data, whole');
  t.is(fs.statSync(a).size, 11, 'new size');
  t.is(fs.readFileSync(path.join(mnt, 'new.txt'), 'utf8'), 'new\n', 'a name cached as missing appears');
  t.is(await errorCode(fsp.stat(path.join(mnt, 'hard'))), 'ENOENT', 'a removed name is gone');
  t.is(await errorCode(fsp.stat(path.join(mnt, 'docs/deep'))), 'ENOENT', 'a moved directory is gone from its old place');
  t.is(fs.statSync(path.join(mnt, 'moved/b.txt')).mode & 0o777, 0o604, 'new attributes');
  t.is(fs.readFileSync(path.join(mnt, 'big.bin'))[12345], 0x33, 'same size, new data');
  t.is(fs.readlinkSync(path.join(mnt, '.snapshots', 'latest')), second.replicaSnapshot!);
  t.deepEqual(await tree(mnt), await tree(path.join(src, '.snapshots', second.snapshot)), 'the root is exactly the new snapshot');
  t.deepEqual(await tree(path.join(mnt, '.snapshots', first.replicaSnapshot!)), firstTree, 'the previous snapshot is unchanged');
  t.regex(daemonLog(replica), new RegExp(`received a sync: the root now shows snapshot ${second.replicaSnapshot}`), 'the daemon applied it');
}));

test('a sync that dies half way while mounted leaves the root and latest on the previous snapshot', (t) => gate(async () => {
  const s = scratch(t);
  const src = await source(t, s, { mount: false });
  const replica = path.join(s.dir, 'replica');
  const first = await sync(t, s, src, replica);
  const mnt = await mountReplica(t, s, replica, path.join(s.dir, 'mnt'));
  const shown = await tree(mnt);
  const volumeId = (await status(t, s, src)).volumeId;

  // A sender that gets half way through: the new file is made and written, then the link dies.
  const h = await handSender(t, s, replica);
  t.is((await begin(h, volumeId)).type, 'state');
  const size = 1 << 20;
  await h.conn.sendJson('file', { fid: 1_000_000, node: { type: 'file', names: [[1, 'halfway.bin']] }, attr: { mode: 0o100644, uid: 0, gid: 0, size, rdev: 0, atime: '0', mtime: '0' }, extents: [{ offset: 0, length: size }] });
  await h.conn.sendJson('filesEnd', { count: 1 });
  t.is((await h.conn.next(10_000)).type, 'applied');
  const head = Buffer.alloc(16);
  head.writeBigUInt64BE(1_000_000n, 0);
  await h.conn.send(encodeFrame('block', Buffer.concat([head, Buffer.alloc(65536, 0x77)])));
  await waitFor(() => fs.existsSync(path.join(replica, 'halfway.bin')) && fs.statSync(path.join(replica, 'halfway.bin')).size > 0, 20_000, 'the block to land in the replica');
  t.deepEqual(await tree(mnt), shown, 'while the sync is being applied, the root shows the previous snapshot');
  t.is(await errorCode(fsp.stat(path.join(mnt, 'halfway.bin'))), 'ENOENT');
  h.child.kill('SIGKILL');
  await waitFor(() => /a sync into this replica failed/.test(daemonLog(replica)), 20_000, 'the daemon to see the sync fail');

  t.true(fs.existsSync(path.join(replica, 'halfway.bin')), 'the live tree of the replica holds the half-applied sync');
  t.deepEqual(await tree(mnt), shown, 'the root still shows the previous snapshot');
  t.is(fs.readlinkSync(path.join(mnt, '.snapshots', 'latest')), first.replicaSnapshot!);
  t.deepEqual(fs.readdirSync(path.join(mnt, '.snapshots')).sort(), [first.replicaSnapshot!, 'latest'].sort());
  t.true(await isMounted(mnt), 'the daemon goes on serving');
}));

test('a real replfs sync killed mid-transfer leaves the root and latest on the previous snapshot', (t) => gate(async () => {
  const s = scratch(t);
  const src = await source(t, s, { mount: false });
  const replica = path.join(s.dir, 'replica');
  const first = await sync(t, s, src, replica);
  const mnt = await mountReplica(t, s, replica, path.join(s.dir, 'mnt'));
  const shown = await tree(mnt);
  // 256 MiB that compress to nothing useful: about two seconds on the wire.
  const big = path.join(src, 'huge.bin');
  const fd = fs.openSync(big, 'w');
  const chunk = Buffer.alloc(8 << 20);
  for (let i = 0; i < 32; i++) {
    for (let j = 0; j < chunk.length; j += 4) chunk.writeUInt32LE((Math.imul(i * chunk.length + j, 2654435761) ^ j) >>> 0, j);
    fs.writeSync(fd, chunk);
  }
  fs.closeSync(fd);
  const child = spawn(process.execPath, [BIN, 'sync', src, replica], { stdio: 'ignore', env: s.env });
  t.teardown(() => { child.kill('SIGKILL'); });
  const landed = path.join(replica, 'huge.bin');
  await waitFor(() => fs.existsSync(landed) && fs.statSync(landed).size > 0, 60_000, 'the transfer to start');
  child.kill('SIGKILL');
  await exited(child);
  t.true(fs.statSync(landed).size < 256 << 20, 'killed before the file was whole');
  await waitFor(() => /a sync into this replica failed/.test(daemonLog(replica)), 20_000, 'the daemon to see the sync fail');
  t.deepEqual(await tree(mnt), shown, 'the root still shows the previous snapshot');
  t.is(fs.readlinkSync(path.join(mnt, '.snapshots', 'latest')), first.replicaSnapshot!);
  t.deepEqual(fs.readdirSync(path.join(mnt, '.snapshots')).sort(), [first.replicaSnapshot!, 'latest'].sort());
}));

test('a second sync while one is applied is refused (try again later); so is unmount, and --lazy waits for the sync', (t) => gate(async () => {
  const s = scratch(t);
  const src = await source(t, s, { mount: false });
  const replica = path.join(s.dir, 'replica');
  const first = await sync(t, s, src, replica);
  const mnt = await mountReplica(t, s, replica, path.join(s.dir, 'mnt'));
  const volumeId = (await status(t, s, src)).volumeId;
  const pid = (await status(t, s, replica)).pid!;

  const h = await handSender(t, s, replica);
  t.is((await begin(h, volumeId)).type, 'state', 'the first sync is under way');
  fs.writeFileSync(path.join(src, 'later.txt'), 'later\n');
  fails(t, await replfs(s, ['sync', src, replica]), 'unavailable', /another sync into this replica is being applied/, 'a second sync');
  fails(t, await replfs(s, ['unmount', mnt]), 'busy', /a sync into this replica is being applied/, 'unmount during the sync');
  t.true(await isMounted(mnt), 'still mounted');

  const lazy = replfs(s, ['unmount', '--lazy', mnt]);
  await waitFor(async () => !(await isMounted(mnt)), 20_000, 'the lazy detach');
  await new Promise((r) => setTimeout(r, 300));
  t.true(alive(pid), 'the daemon waits for the sync');
  // A second sync arriving now is refused too: the replica is being unmounted.
  fails(t, await replfs(s, ['sync', src, replica]), 'unavailable', /being unmounted/, 'a sync while detaching');
  h.conn.close(); // the sender hangs up with nothing sent
  t.is(await h.exit, 0, h.stderr());
  const r = await lazy;
  t.is(r.code, 0, r.stderr);
  await waitFor(() => !alive(pid), 20_000, 'the daemon to exit');

  // Nothing was applied: the replica takes the next sync as usual, mounted again.
  await mountReplica(t, s, replica, mnt);
  t.is(fs.readlinkSync(path.join(mnt, '.snapshots', 'latest')), first.replicaSnapshot!);
  const second = await sync(t, s, src, replica);
  t.is(second.base, first.snapshot);
  t.is(fs.readFileSync(path.join(mnt, 'later.txt'), 'utf8'), 'later\n');
}));

test('a replica without snapshots mounts with an empty read-only root, which fills when the next sync arrives', (t) => gate(async () => {
  const s = scratch(t);
  const src = await source(t, s, { mount: false });
  const replica = path.join(s.dir, 'replica');
  const first = await sync(t, s, src, replica);
  const del = await replfs(s, ['snapshot', 'delete', replica, first.replicaSnapshot!]);
  t.is(del.code, 0, del.stderr);
  const mnt = await mountReplica(t, s, replica, path.join(s.dir, 'mnt'));
  t.deepEqual(fs.readdirSync(mnt), [], 'an empty root');
  t.deepEqual(fs.readdirSync(path.join(mnt, '.snapshots')), [], 'no snapshots, no latest');
  t.is(fs.statSync(mnt).mode & 0o7777, 0o555);
  t.is(await errorCode(fsp.stat(path.join(mnt, 'docs'))), 'ENOENT');
  t.is(await errorCode(fsp.mkdir(path.join(mnt, 'x'))), 'EROFS');
  t.is(await errorCode(fsp.writeFile(path.join(mnt, 'x'), 'x')), 'EROFS');

  fs.writeFileSync(path.join(src, 'later.txt'), 'later\n');
  const second = await sync(t, s, src, replica);
  t.is(fs.readFileSync(path.join(mnt, 'later.txt'), 'utf8'), 'later\n');
  t.is(fs.readFileSync(path.join(mnt, 'docs/a.txt'), 'utf8'), 'alpha\n');
  t.deepEqual(fs.readdirSync(path.join(mnt, '.snapshots')).sort(), [second.replicaSnapshot!, 'latest'].sort());
}));

test('refusals: --read-only on an ordinary volume, a replica without it, kernel_cache on a replica; nothing mounted', (t) => gate(async () => {
  const s = scratch(t);
  const src = await source(t, s, { mount: false });
  const replica = path.join(s.dir, 'replica');
  await sync(t, s, src, replica);
  const mnt = path.join(s.dir, 'mnt');
  fs.mkdirSync(mnt);
  const cases: Array<[string, string[], ExitCodeName, RegExp]> = [
    ['--read-only on an ordinary volume', ['mount', '--read-only', src], 'refused', /is not a replica[^]*hint: .*replfs mount .*-o ro/],
    ['--read-only on an ordinary volume, at a mountpoint', ['mount', '--read-only', src, mnt], 'refused', /is not a replica/],
    ['--read-only on an ordinary volume, in the foreground', ['mount', '-f', '--read-only', src], 'refused', /is not a replica/],
    ['a replica without --read-only', ['mount', replica], 'refused', /is a replica: mounting it writable would make it diverge[^]*hint: .*--read-only[^]*promote/],
    ['a replica without --read-only, at a mountpoint', ['mount', replica, mnt], 'refused', /is a replica/],
    ['a replica without --read-only, in the foreground', ['mount', '-f', replica], 'refused', /is a replica/],
    ['kernel_cache on a replica', ['mount', '--read-only', replica, '-o', 'kernel_cache'], 'usage', /kernel_cache cannot be used with --read-only/],
  ];
  for (const [what, args, exit, message] of cases) {
    fails(t, await replfs(s, args), exit, message, what);
    t.deepEqual(await mountsUnder(s.dir), [], `${what}: nothing mounted`);
  }
  t.deepEqual(fs.readdirSync(s.runtime), [], 'no daemon record');
}));

test('a sync into a protected directory that is not a replica is refused, mounted or not, and changes nothing', (t) => gate(async () => {
  const s = scratch(t);
  const src = await source(t, s, { mount: false });
  const other = path.join(s.dir, 'other');
  fs.mkdirSync(other);
  fs.writeFileSync(path.join(other, 'precious'), 'keep me');
  await initVolume(t, s, other);
  const before = await tree(other);
  fails(t, await replfs(s, ['sync', src, other]), 'refused', /is a protected directory, not a replica/, 'unmounted');
  t.deepEqual(await tree(other), before);
  await mountVolume(t, s, other);
  fails(t, await replfs(s, ['sync', src, other]), 'refused', /mounted as a protected directory, not as a replica/, 'mounted');
  t.deepEqual(await tree(other), before);
  t.is(fs.readFileSync(path.join(other, 'precious'), 'utf8'), 'keep me');
}));

test('a forwarded sync is answered by the daemon, which checks the token once', (t) => gate(async () => {
  const s = scratch(t);
  const src = await source(t, s, { mount: false });
  const replica = path.join(s.dir, 'replica');
  await sync(t, s, src, replica);
  const mnt = await mountReplica(t, s, replica, path.join(s.dir, 'mnt'));
  // receiveOn in this process, as `serve --listen` will call it, against the daemon's registry.
  process.env.REPLFS_RUNTIME_DIR = s.runtime;
  const pair = () => {
    const up = new PassThrough();
    const down = new PassThrough();
    return { server: Duplex.from({ readable: up, writable: down }), client: Duplex.from({ readable: down, writable: up }) };
  };

  const wrong = pair();
  const refused = receiveOn(() => replica, wrong.server, { token: 'open sesame' });
  const err = await t.throwsAsync(greet(new Connection(wrong.client), 'test', 'open barley'));
  t.regex(err!.message, /authentication failed/);
  await t.throwsAsync(refused, { message: /authentication failed/ });

  fs.writeFileSync(path.join(src, 'tokened.txt'), 'through the daemon\n');
  const { volume } = await Volume.open(src, { writable: true });
  const pool = new HashPool();
  try {
    const snap = await volume.snapshot();
    const right = pair();
    const served = receiveOn(() => replica, right.server, { token: 'open sesame' });
    const conn = new Connection(right.client);
    await greet(conn, 'test', 'open sesame');
    const summary = await send(volume, new RemoteReceiver(conn), { snapshot: snap.name, hashPool: pool });
    conn.close();
    const got = await served;
    t.is(got.replicaSnapshot, summary.replicaSnapshot);
  } finally {
    await pool.close();
    await volume.close();
  }
  t.is(fs.readFileSync(path.join(mnt, 'tokened.txt'), 'utf8'), 'through the daemon\n');
}));
