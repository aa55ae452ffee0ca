// `replfs sync` for real: a mounted source, a local destination served by a child
// `replfs serve --stdio`, and the same through a real sshd on 127.0.0.1. The replica's
// tree must equal the source snapshot it holds, and later syncs move only what changed.
import fs from 'node:fs';
import path from 'node:path';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import { BIN, scratch, replfs, initVolume, mountVolume, describeTree, run, type Scratch, fails } from '../helpers/env.js';
import { startSshd } from '../helpers/sshd.js';
import { ExitCode } from '../../src/errors/index.js';
import type { SyncSummary as Summary } from '../../src/replicate/sender.js';



async function source(t: ExecutionContext, s: Scratch): Promise<string> {
  const dir = path.join(s.dir, 'src');
  fs.mkdirSync(path.join(dir, 'docs/deep'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'docs/a.txt'), 'alpha\n');
  fs.writeFileSync(path.join(dir, 'docs/deep/b.txt'), 'beta\n');
  fs.writeFileSync(path.join(dir, 'big.bin'), Buffer.alloc(2 << 20, 0x5a));
  const fd = fs.openSync(path.join(dir, 'sparse'), 'w');
  fs.writeSync(fd, 'tail', 8 << 20);
  fs.closeSync(fd);
  fs.symlinkSync('docs/a.txt', path.join(dir, 'link'));
  fs.linkSync(path.join(dir, 'docs/a.txt'), path.join(dir, 'hard'));
  fs.chmodSync(path.join(dir, 'docs/deep/b.txt'), 0o640);
  await run('setfattr', ['-n', 'user.tag', '-v', 'kept', path.join(dir, 'docs/a.txt')]);
  await initVolume(t, s, dir);
  await mountVolume(t, s, dir);
  return dir;
}

async function syncJson(t: ExecutionContext, s: Scratch, args: string[], env?: NodeJS.ProcessEnv): Promise<Summary> {
  const r = await replfs(s, ['sync', ...args, '--json'], env ? { env } : {});
  t.is(r.code, 0, `replfs sync ${args.join(' ')}: exit ${r.code}; stderr: ${r.stderr}`);
  return JSON.parse(r.stdout) as Summary;
}

/** The replica's live tree must be the source snapshot's, byte for byte and in metadata. */
async function same(t: ExecutionContext, src: string, snapshot: string, replica: string, what: string): Promise<void> {
  const want = await describeTree(path.join(src, '.snapshots', snapshot), { xattrs: true, inodes: false });
  const got = await describeTree(replica, { xattrs: true, inodes: false });
  t.deepEqual(got, want, what);
}

async function roundTrips(t: ExecutionContext, s: Scratch, src: string, dest: string, replicaDir: string, env?: NodeJS.ProcessEnv): Promise<void> {
  const first = await syncJson(t, s, [src, dest], env);
  t.is(first.base, null);
  t.truthy(first.replicaSnapshot);
  t.true(first.bytesSent < (2 << 20) + 64 * 1024, `the first copy sends the data and no zero block of the 8 MiB hole (${first.bytesSent} bytes)`);
  await same(t, src, first.snapshot, replicaDir, 'after the first sync');

  fs.appendFileSync(path.join(src, 'docs/a.txt'), 'more\n');
  fs.renameSync(path.join(src, 'docs/deep'), path.join(src, 'moved'));
  fs.writeFileSync(path.join(src, 'new.txt'), 'new\n');
  fs.unlinkSync(path.join(src, 'hard'));
  const second = await syncJson(t, s, [src, dest], env);
  t.is(second.base, first.snapshot);
  t.true(second.bytesSent < 64 * 1024, `an incremental sync sends only the changed blocks (${second.bytesSent} bytes)`);
  t.true(second.bytesRead < 128 * 1024, `and reads only them (${second.bytesRead} bytes)`);
  await same(t, src, second.snapshot, replicaDir, 'after the second sync');

  const list = JSON.parse((await replfs(s, ['snapshots', replicaDir, '--json'])).stdout) as { snapshots: Array<{ sourceTime: string }> };
  t.deepEqual(list.snapshots.map((x) => x.sourceTime), [first.sourceTime, second.sourceTime], 'one replica snapshot per sync, dated with the source time');
  const third = await syncJson(t, s, [src, dest, '--snapshot', second.snapshot], env);
  t.is(third.replicaSnapshot, null, 'the destination already has it: nothing sent');
}

test('sync to a local directory: a full copy, then only what changed', async (t) => {
  const s = scratch(t);
  const src = await source(t, s);
  const dst = path.join(s.dir, 'replica');
  await roundTrips(t, s, src, dst, dst);
  const human = await replfs(s, ['sync', src, dst]);
  t.is(human.code, 0);
  t.regex(human.stdout, /^sent \S+ to .* \(since \S+\): \d+ files, .* of blocks sent/);
});

test('sync over ssh to 127.0.0.1: the same, through the system ssh', async (t) => {
  const s = scratch(t);
  const sshd = await startSshd(t);
  const src = await source(t, s);
  const dst = path.join(s.dir, 'over-ssh');
  // The daemon runs the sync, so it sees the environment of the mount command: pass it there.
  const env = { REPLFS_SSH: ['ssh', ...sshd.sshArgs].join(' '), REPLFS_REMOTE_COMMAND: `${process.execPath} ${BIN}` };
  await replfs(s, ['unmount', src]);
  const r = await replfs(s, ['mount', src], { env });
  t.is(r.code, 0, r.stderr);
  await roundTrips(t, s, src, `${sshd.user}@127.0.0.1:${dst}`, dst, env);
});

test('bad destinations are refused with a clear message, and nothing is written', async (t) => {
  const s = scratch(t);
  const src = await source(t, s);
  const notEmpty = path.join(s.dir, 'not-empty');
  fs.mkdirSync(notEmpty);
  fs.writeFileSync(path.join(notEmpty, 'precious'), 'keep me');
  fails(t, await replfs(s, ['sync', src, notEmpty]), 'refused', /neither empty nor a replica/, 'a non-empty directory that is not a replica');
  t.deepEqual(fs.readdirSync(notEmpty), ['precious']);
  fails(t, await replfs(s, ['sync', src, path.join(s.dir, 'missing/parent/x')]), 'notFound', /does not exist/, 'a destination whose parent is missing');
  t.false(fs.existsSync(path.join(s.dir, 'missing')));
  fails(t, await replfs(s, ['sync', src, 'host:']), 'usage', /not a destination: no path after the colon/, 'host without a path');
  fails(t, await replfs(s, ['sync', src, 'ssh://h:99999/x']), 'usage', /port "99999"/, 'a bad port');
  fails(t, await replfs(s, ['sync', src, '--', '-oProxyCommand=sh:/x']), 'usage', /not a host name/, 'an ssh option posing as a host');
  fails(t, await replfs(s, ['sync', src, 'replfs://127.0.0.1:1/x'], { env: { REPLFS_TOKEN_FILE: '' } }), 'usage', /needs the server's token/, 'a replfs:// destination without a token');
  fails(t, await replfs(s, ['sync', src, path.join(s.dir, 'r'), '--snapshot', 'nope']), 'usage', /not a snapshot name/, 'a malformed snapshot name');
  fails(t, await replfs(s, ['sync', src, path.join(s.dir, 'r'), '--snapshot', '2020-01-01T00-00-00Z']), 'notFound', /no snapshot named/, 'a snapshot that does not exist');
  fails(t, await replfs(s, ['sync', src, path.join(s.dir, 'r'), '--snapshot', '2020-01-01T00-00-00Z', '--quiesce']), 'usage', /do not go together/, '--snapshot with --quiesce');
  fails(t, await replfs(s, ['sync', src]), 'usage', /missing argument/, 'no destination');
  fails(t, await replfs(s, ['serve', path.join(s.dir, 'r')]), 'usage', /--stdio/, 'serve without a mode');
  t.false(fs.existsSync(path.join(s.dir, 'r')), 'no replica was made by any of these');

  // A replica of one volume refuses another volume's snapshots.
  const other = path.join(s.dir, 'other');
  fs.mkdirSync(other);
  fs.writeFileSync(path.join(other, 'f'), 'other');
  await initVolume(t, s, other);
  const dst = path.join(s.dir, 'replica');
  await syncJson(t, s, [src, dst]);
  const before = await describeTree(dst, { inodes: false });
  fails(t, await replfs(s, ['sync', other, dst]), 'refused', /replica of another volume/, 'a replica of another volume');
  t.deepEqual(await describeTree(dst, { inodes: false }), before, 'the replica is unchanged');
});

test('a replica changed outside replfs is refused until --force, which repairs it without following a planted symlink', async (t) => {
  const s = scratch(t);
  const src = await source(t, s);
  const dst = path.join(s.dir, 'replica');
  await syncJson(t, s, [src, dst]);
  const outside = path.join(s.dir, 'outside');
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(outside, 'a.txt'), 'not yours');
  fs.renameSync(path.join(dst, 'docs'), path.join(dst, 'docs.moved-away'));
  fs.symlinkSync(outside, path.join(dst, 'docs'));
  fs.appendFileSync(path.join(src, 'docs/a.txt'), 'through the link?\n');
  fs.writeFileSync(path.join(src, 'docs/new.txt'), 'new\n');
  fails(t, await replfs(s, ['sync', src, dst]), 'refused', /changed outside replfs \(.*docs.*\)[\s\S]*--force/, 'a planted symlink');
  fails(t, await replfs(s, ['sync', src, dst, '--dry-run']), 'refused', /changed outside replfs/, 'a dry run over a changed replica');
  const v = await replfs(s, ['verify', src, dst]);
  t.is(v.code, ExitCode.different, `verify tells: ${v.stderr}`);
  t.regex(v.stdout, /changed outside replfs/);
  t.deepEqual(fs.readdirSync(outside), ['a.txt'], 'nothing was created outside');
  const forced = await syncJson(t, s, [src, dst, '--force']);
  t.is(forced.kind, 'complete');
  t.is(fs.readFileSync(path.join(outside, 'a.txt'), 'utf8'), 'not yours', 'nothing was written outside');
  t.deepEqual(fs.readdirSync(outside), ['a.txt']);
  await same(t, src, forced.snapshot, dst, 'after --force');
  const ok = await replfs(s, ['verify', src, dst]);
  t.is(ok.code, 0, `verify after --force: ${ok.stdout}${ok.stderr}`);
  t.regex(ok.stdout, /holds .* exactly/);
});

test('a destination\'s base is kept on the source: prune keeps it, delete refuses it, until the next sync moves it on', async (t) => {
  const s = scratch(t);
  const src = await source(t, s);
  const dst = path.join(s.dir, 'replica');
  const first = await syncJson(t, s, [src, dst]);
  for (let i = 0; i < 3; i++) {
    fs.writeFileSync(path.join(src, `later-${i}`), String(i));
    t.is((await replfs(s, ['snapshot', src])).code, 0);
  }
  const pruned = JSON.parse((await replfs(s, ['prune', src, '--keep-last', '1', '--json'])).stdout) as { kept: Array<{ name: string; reasons: string[] }>; removed: string[] };
  t.deepEqual(pruned.kept.find((k) => k.name === first.snapshot)?.reasons, [`base of ${dst}`], 'the base is kept, and why');
  t.is(pruned.removed.length, 2);
  fails(t, await replfs(s, ['snapshot', 'delete', src, first.snapshot]), 'refused', new RegExp(`base of the sync to ${dst.replaceAll('/', '\\/')}`), 'deleting the base');
  const second = await syncJson(t, s, [src, dst]);
  t.is(second.base, first.snapshot, 'the next sync is incremental from the kept base');
  await same(t, src, second.snapshot, dst, 'after the sync from the kept base');
  const r = await replfs(s, ['snapshot', 'delete', src, first.snapshot]);
  t.is(r.code, 0, `once the base moved on, the old one can go: ${r.stderr}`);
});
