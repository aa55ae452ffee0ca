// `replfs snapshot`, `replfs snapshot delete`, `replfs snapshots` and the `.snapshots` tree
// as a user meets them when something is wrong: every bad input gets the documented exit
// code and a message naming the problem, and changes nothing; every modifying operation in
// the snapshot tree is EROFS; paths and symlinks that lead out of a snapshot behave as in
// any tree; names collide into -1, -2; mounted and unmounted listings agree; and a snapshot
// deleted under an open file.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import test from '../helpers/ava.js';
import {
  scratch, replfs, initVolume, mountVolume, describeTree, run, waitFor, isMounted,
  type Scratch, type RunResult, type TreeEntry,
  concurrencyGate, stateOf
} from '../helpers/env.js';
import { ExitCode, type ExitCodeName } from '../../src/errors/index.js';

// ---------------------------------------------------------------- helpers

/** Each case starts many short-lived `replfs` processes and daemons; at most this many cases run together. */
const PARALLEL = 3;
const gated = concurrencyGate(PARALLEL);
type Body = (t: ExecutionContext) => Promise<void>;
const cli = (title: string, body: Body) => test(title, (t) => gated(() => body(t)));



/** A failed command: the exit code, nothing on stdout, and a message naming the problem. */
function fails(t: ExecutionContext, r: RunResult, exit: ExitCodeName, command: string, message: string, what = ''): void {
  const label = what ? `${what}: ` : '';
  t.is(r.code, ExitCode[exit], `${label}expected exit ${ExitCode[exit]} (${exit}); stderr: ${r.stderr}`);
  t.is(r.stdout, '', `${label}stdout must stay empty on errors`);
  t.true(r.stderr.startsWith(`${command}: `), `${label}stderr should start with "${command}: ", got: ${r.stderr}`);
  t.true(r.stderr.includes(message), `${label}stderr should mention ${JSON.stringify(message)}, got: ${r.stderr}`);
}

async function ok(t: ExecutionContext, s: Scratch, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  const r = await replfs(s, args, opts);
  t.is(r.code, 0, `replfs ${args.join(' ')}: exit ${r.code}; stderr: ${r.stderr}`);
  return r.stdout;
}

async function snap(t: ExecutionContext, s: Scratch, dir: string, extra: string[] = []): Promise<string> {
  const name = (await ok(t, s, ['snapshot', dir, ...extra])).trim();
  t.regex(name, NAME, `snapshot printed its name, got ${JSON.stringify(name)}`);
  return name;
}

const NAME = /^(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z)(?:-([1-9]\d*))?$/;

interface SnapshotJson {
  name: string;
  epoch: number;
  sourceTime: string;
  label: string | null;
  consistency: string;
  nextFid: number;
  uniqueBytes: number;
}
interface Listing {
  snapshots: SnapshotJson[];
  latest: string | null;
}

const LISTING_FIELDS = ['latest', 'snapshots'];
const SNAPSHOT_FIELDS: Record<string, string> = {
  name: 'string', epoch: 'number', sourceTime: 'string', label: 'string|null', consistency: 'string', nextFid: 'number', uniqueBytes: 'number',
};

function typeOf(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

/** `snapshots --json`, checked against the documented schema. */
async function listing(t: ExecutionContext, s: Scratch, p: string): Promise<Listing> {
  const r = await replfs(s, ['snapshots', p, '--json']);
  t.is(r.code, 0, `snapshots --json: ${r.stderr}`);
  t.is(r.stderr, '');
  const l = JSON.parse(r.stdout) as Listing;
  t.deepEqual(Object.keys(l).sort(), LISTING_FIELDS, 'snapshots --json: top-level fields');
  for (const e of l.snapshots) {
    t.deepEqual(Object.keys(e).sort(), Object.keys(SNAPSHOT_FIELDS).sort(), `fields of ${e.name}`);
    for (const [k, type] of Object.entries(SNAPSHOT_FIELDS)) {
      t.true(type.split('|').includes(typeOf((e as unknown as Record<string, unknown>)[k])), `${e.name}.${k} is ${type}`);
    }
    t.regex(e.name, NAME);
    t.false(Number.isNaN(Date.parse(e.sourceTime)), `${e.name}.sourceTime is a time`);
    t.true(['app', 'crash'].includes(e.consistency), `${e.name}.consistency`);
    t.true(Number.isInteger(e.uniqueBytes) && e.uniqueBytes >= 0);
  }
  const epochs = l.snapshots.map((e) => e.epoch);
  t.deepEqual(epochs, [...epochs].sort((a, b) => a - b), 'oldest first');
  t.is(l.latest, l.snapshots.at(-1)?.name ?? null, 'latest is the newest');
  return l;
}

const names = (l: Listing) => l.snapshots.map((e) => e.name);


interface Picture {
  tree: Record<string, TreeEntry>;
  state: Record<string, string> | null;
}

/** The user's files, and the state directory byte for byte (for a volume that is not mounted). */
async function picture(dir: string): Promise<Picture> {
  return { tree: await describeTree(dir), state: stateOf(dir) };
}

/**
 * What a refused command must leave as it was, however the volume is reached: the files
 * (through the mount when mounted), the snapshots, and the epoch. (Opening LevelDB rewrites
 * its own files, so a command that got as far as opening the volume is judged by this.)
 */
async function logical(t: ExecutionContext, s: Scratch, dir: string): Promise<unknown> {
  const st = await replfs(s, ['status', dir, '--json']);
  t.is(st.code, 0, st.stderr);
  return { tree: await describeTree(dir), snapshots: await listing(t, s, dir), epoch: (JSON.parse(st.stdout) as { epoch: number }).epoch };
}

function mkdir(...parts: string[]): string {
  const p = path.join(...parts);
  fs.mkdirSync(p, { recursive: true });
  return p;
}

/** A directory with a few files of each kind. */
function populate(dir: string): string {
  fs.mkdirSync(path.join(dir, 'sub', 'deeper'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'empty'));
  fs.writeFileSync(path.join(dir, 'a.txt'), 'alpha\n');
  fs.writeFileSync(path.join(dir, 'sub', 'b.bin'), Buffer.alloc(200_000, 7));
  fs.writeFileSync(path.join(dir, 'sub', 'deeper', 'c.txt'), 'gamma\n');
  fs.symlinkSync('a.txt', path.join(dir, 'link'));
  return dir;
}

/** A protected directory with files, not mounted. */
async function volume(t: ExecutionContext, s: Scratch, name = 'data'): Promise<string> {
  const dir = populate(mkdir(s.dir, name));
  await initVolume(t, s, dir);
  return dir;
}

/** Runs fn and returns the errno name it failed with, or 'no error'. */
function errnoOf(fn: () => unknown): string {
  try {
    fn();
    return 'no error';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- bad names

const MALFORMED = [
  'nope', '../x', '', 'latest', '.', '..', '.snapshots', '2026-11-25T11:05:18Z', '2026-11-25T11-05-18Z-0',
  '2026-11-25T11-05-18Z-01', '2026-11-25T11-05-18Z/../x', ' 2026-11-25T11-05-18Z', '2026-11-25T11-05-18', '2026-11-25 11-05-18Z',
];

cli('snapshot delete with a malformed name: exit 2 before anything on disk is looked at', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const kept = await snap(t, s, dir);
  const before = await picture(dir);
  for (const name of MALFORMED) {
    const r = await replfs(s, ['snapshot', 'delete', dir, name]);
    fails(t, r, 'usage', 'replfs snapshot', `${JSON.stringify(name)} is not a snapshot name`, JSON.stringify(name));
    t.true(r.stderr.includes('hint: names look like'), r.stderr);
    // A bad name is a bad command line, whatever the path.
    const missing = await replfs(s, ['snapshot', 'delete', path.join(s.dir, 'nope'), name]);
    fails(t, missing, 'usage', 'replfs snapshot', 'is not a snapshot name', `${JSON.stringify(name)} on a missing path`);
  }
  t.deepEqual(await picture(dir), before, 'neither the files nor .replfs/ were touched');
  // Mounted, through the daemon: the same answers, and the snapshot is still there.
  await mountVolume(t, s, dir);
  const mounted = await logical(t, s, dir);
  for (const name of MALFORMED) {
    fails(t, await replfs(s, ['snapshot', 'delete', dir, name]), 'usage', 'replfs snapshot', `${JSON.stringify(name)} is not a snapshot name`, `mounted ${JSON.stringify(name)}`);
  }
  t.deepEqual(await logical(t, s, dir), mounted);
  t.true(fs.statSync(path.join(dir, '.snapshots', kept)).isDirectory());
  await ok(t, s, ['unmount', dir]);
});

cli('snapshot delete of a well-formed name that does not exist: exit 3, nothing deleted', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const a = await snap(t, s, dir);
  const absent = ['2000-01-01T00-00-00Z', `${a}-1`, `${a}-999999`];
  const before = await logical(t, s, dir);
  for (const name of absent) {
    const r = await replfs(s, ['snapshot', 'delete', dir, name]);
    fails(t, r, 'notFound', 'replfs snapshot', `no snapshot named ${JSON.stringify(name)}`, name);
    t.true(r.stderr.includes('replfs snapshots'), 'the hint says how to list them');
  }
  t.deepEqual(await logical(t, s, dir), before);
  await mountVolume(t, s, dir);
  const mounted = await logical(t, s, dir);
  for (const name of absent) {
    fails(t, await replfs(s, ['snapshot', 'delete', dir, name]), 'notFound', 'replfs snapshot', `no snapshot named ${JSON.stringify(name)}`, `mounted ${name}`);
  }
  t.deepEqual(await logical(t, s, dir), mounted);
  // Deleting twice: the second time it is gone.
  const deleted = await ok(t, s, ['snapshot', 'delete', dir, a]);
  t.regex(deleted, new RegExp(`^deleted ${a}; freed .+\\n$`));
  fails(t, await replfs(s, ['snapshot', 'delete', dir, a]), 'notFound', 'replfs snapshot', `no snapshot named ${JSON.stringify(a)}`, 'second delete');
  t.deepEqual((await listing(t, s, dir)).snapshots, []);
  t.is(errnoOf(() => fs.statSync(path.join(dir, '.snapshots', a))), 'ENOENT');
  // --json of a delete.
  const b = await snap(t, s, dir);
  const res = JSON.parse(await ok(t, s, ['snapshot', 'delete', dir, b, '--json'])) as { deleted: string; gc: Record<string, number> };
  t.is(res.deleted, b);
  t.is(typeof res.gc.bytesFreed, 'number');
  await ok(t, s, ['unmount', dir]);
});

// ---------------------------------------------------------------- not a volume

cli('snapshot, snapshot delete and snapshots outside any volume or on a missing path: exit 3, nothing created', async (t) => {
  const s = scratch(t);
  const plain = populate(mkdir(s.dir, 'plain'));
  const dir = await volume(t, s);
  const missing = path.join(s.dir, 'nope');
  const missingInside = path.join(dir, 'nope');
  const before = await picture(plain);
  const NAME_OK = '2026-11-25T11-05-18Z';
  for (const [target, message] of [
    [plain, `${plain} is not inside a protected directory`],
    [path.join(plain, 'sub'), `${path.join(plain, 'sub')} is not inside a protected directory`],
    [missing, `${missing} does not exist`],
    [missingInside, `${missingInside} does not exist`],
  ] as const) {
    for (const args of [['snapshot', target], ['snapshot', target, '--quiesce', '--label', 'x'], ['snapshot', 'delete', target, NAME_OK], ['snapshots', target], ['snapshots', target, '--json']]) {
      const r = await replfs(s, args);
      fails(t, r, 'notFound', `replfs ${args[0]}`, message, args.join(' '));
    }
  }
  // The default path of `snapshots` is the current directory.
  fails(t, await replfs(s, ['snapshots'], { cwd: plain }), 'notFound', 'replfs snapshots', `${plain} is not inside a protected directory`);
  const plainHint = await replfs(s, ['snapshot', plain]);
  t.true(plainHint.stderr.includes('replfs init'), 'the hint says how to make one');
  t.deepEqual(await picture(plain), before);
  t.is(stateOf(plain), null, 'no .replfs/ was made');
  t.false(fs.existsSync(missing));
  t.false(fs.existsSync(missingInside));
  t.deepEqual((await listing(t, s, dir)).snapshots, [], 'no snapshot was taken of the volume next door');
});

// ---------------------------------------------------------------- arguments

cli('extra or missing arguments are usage errors and take no snapshot', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const a = await snap(t, s, dir);
  const cases: Array<[string[], string, string]> = [
    [['snapshot', dir, 'extra'], 'replfs snapshot', 'unexpected argument "extra"'],
    [['snapshot', dir, 'one', 'two'], 'replfs snapshot', 'unexpected argument "one"'],
    [['snapshot', dir, '--json', 'extra'], 'replfs snapshot', 'unexpected argument "extra"'],
    [['snapshot', 'delete', dir], 'replfs snapshot', 'usage: replfs snapshot delete <path> <name>'],
    [['snapshot', 'delete'], 'replfs snapshot', 'usage: replfs snapshot delete <path> <name>'],
    [['snapshot', 'delete', dir, a, 'extra'], 'replfs snapshot', 'unexpected argument "extra"'],
    [['snapshot'], 'replfs snapshot', 'missing argument'],
    [['snapshot', dir, '--label'], 'replfs snapshot', 'argument missing'],
    [['snapshots', dir, 'extra'], 'replfs snapshots', 'unexpected argument "extra"'],
    [['snapshots', dir, '--label', 'x'], 'replfs snapshots', "Unknown option '--label'"],
    [['snapshots', dir, '--quiesce'], 'replfs snapshots', "Unknown option '--quiesce'"],
  ];
  const before = await picture(dir);
  for (const [args, command, message] of cases) {
    const r = await replfs(s, args);
    fails(t, r, 'usage', command, message, args.join(' '));
  }
  t.deepEqual(await picture(dir), before, 'unmounted: files and .replfs/ untouched');
  await mountVolume(t, s, dir);
  const mounted = await logical(t, s, dir);
  for (const [args, command, message] of cases) fails(t, await replfs(s, args), 'usage', command, message, `mounted: ${args.join(' ')}`);
  t.deepEqual(await logical(t, s, dir), mounted, 'mounted: nothing taken, nothing deleted');
  t.deepEqual(names(await listing(t, s, dir)), [a]);
  await ok(t, s, ['unmount', dir]);
});

cli('--label is at most 1024 characters; a label is kept exactly', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const long = 'x'.repeat(1025);
  const before = await picture(dir);
  for (const target of [dir, path.join(s.dir, 'nope')]) {
    fails(t, await replfs(s, ['snapshot', target, '--label', long]), 'usage', 'replfs snapshot', 'a label is at most 1024 characters', target);
    fails(t, await replfs(s, ['snapshot', target, `--label=${long}`, '--quiesce']), 'usage', 'replfs snapshot', 'a label is at most 1024 characters', target);
  }
  t.deepEqual(await picture(dir), before, 'nothing opened, nothing taken');
  const exact = 'y'.repeat(1024);
  const odd = 'nightly "before upgrade" – café ☕ $HOME `x`';
  const a = await snap(t, s, dir, ['--label', exact]);
  await mountVolume(t, s, dir);
  fails(t, await replfs(s, ['snapshot', dir, '--label', long]), 'usage', 'replfs snapshot', 'a label is at most 1024 characters', 'mounted');
  const b = await snap(t, s, dir, ['--label', odd]);
  const c = await snap(t, s, dir);
  const l = await listing(t, s, dir);
  t.deepEqual(l.snapshots.map((e) => [e.name, e.label]), [[a, exact], [b, odd], [c, null]]);
  const human = await ok(t, s, ['snapshots', dir]);
  t.true(human.includes(odd), 'the human listing shows the label');
  await ok(t, s, ['unmount', dir]);
});

// ---------------------------------------------------------------- snapdir

for (const [option, message] of [
  ['snapdir=maybe', 'mount option snapdir is hidden or visible, got "maybe"'],
  ['snapdir=', 'mount option snapdir is hidden or visible, got ""'],
  ['snapdir', 'mount option snapdir is hidden or visible'],
  ['ro,snapdir=VISIBLE', 'mount option snapdir is hidden or visible, got "VISIBLE"'],
] as const) {
  cli(`mount -o ${option}: exit 2, nothing mounted or changed`, async (t) => {
    const s = scratch(t);
    const dir = await volume(t, s);
    const mnt = mkdir(s.dir, 'mnt');
    t.teardown(async () => {
      for (const m of [dir, mnt]) if (await isMounted(m)) await run('fusermount', ['-uz', m]);
    });
    const before = await picture(dir);
    for (const args of [[dir], [dir, mnt], [path.join(s.dir, 'nope')]]) {
      fails(t, await replfs(s, ['mount', ...args, '-o', option]), 'usage', 'replfs mount', message, args.join(' '));
      t.false(await isMounted(dir));
      t.false(await isMounted(mnt));
    }
    t.deepEqual(await picture(dir), before);
    t.deepEqual(fs.readdirSync(mnt), []);
  });
}

cli('.snapshots is left out of the root listing unless mounted with -o snapdir=visible, and reachable by name', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const snapdir = path.join(dir, '.snapshots');
  await mountVolume(t, s, dir);
  const live = fs.readdirSync(dir).sort();
  t.false(live.includes('.snapshots'), 'hidden by default');
  t.true(fs.statSync(snapdir).isDirectory(), 'reachable by name');
  t.deepEqual(fs.readdirSync(snapdir), [], 'empty before the first snapshot, no latest');
  t.is(errnoOf(() => fs.lstatSync(path.join(snapdir, 'latest'))), 'ENOENT', 'no latest before the first snapshot');
  const a = await snap(t, s, dir);
  t.deepEqual(fs.readdirSync(snapdir).sort(), [a, 'latest'].sort());
  t.is(fs.readlinkSync(path.join(snapdir, 'latest')), a);
  t.true(fs.lstatSync(path.join(snapdir, 'latest')).isSymbolicLink());
  t.deepEqual(fs.readdirSync(dir).sort(), live, 'still hidden after a snapshot');
  t.false(Object.keys(await describeTree(dir)).some((p) => p.includes('.snapshots')), 'a tree walk does not enter it');
  const found = await run('find', [dir, '-name', 'c.txt']);
  t.deepEqual(found.stdout.trim().split('\n'), [path.join(dir, 'sub/deeper/c.txt')], 'find sees the live copy only');
  await ok(t, s, ['unmount', dir]);

  await mountVolume(t, s, dir, undefined, ['-o', 'snapdir=hidden']);
  t.false(fs.readdirSync(dir).includes('.snapshots'), 'snapdir=hidden: hidden');
  t.true(fs.statSync(path.join(snapdir, a)).isDirectory());
  await ok(t, s, ['unmount', dir]);

  await mountVolume(t, s, dir, undefined, ['-o', 'snapdir=visible']);
  t.deepEqual(fs.readdirSync(dir).sort(), [...live, '.snapshots'].sort(), 'snapdir=visible: listed');
  const ls = await run('ls', ['-a', dir]);
  t.true(ls.stdout.split('\n').includes('.snapshots'));
  const b = await snap(t, s, dir);
  t.is(fs.readlinkSync(path.join(snapdir, 'latest')), b, 'latest follows the newest');
  const visibleFind = await run('find', [dir, '-name', 'c.txt']);
  t.deepEqual(visibleFind.stdout.trim().split('\n').sort(), [
    path.join(dir, 'sub/deeper/c.txt'), path.join(snapdir, a, 'sub/deeper/c.txt'), path.join(snapdir, b, 'sub/deeper/c.txt'),
  ].sort(), 'visible: find walks every snapshot (latest is a symlink, not followed)');
  await ok(t, s, ['unmount', dir]);
  t.false(fs.existsSync(snapdir), 'nothing named .snapshots in the directory itself');
});

// The kernel caches names (and missing names) for entry_timeout; snapshots change
// `.snapshots` without an operation the kernel sees, so the daemon must make it forget.
cli('.snapshots follows snapshots taken and deleted at once, even with -o entry_timeout=30,attr_timeout=30', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  await mountVolume(t, s, dir, undefined, ['-o', 'entry_timeout=30,attr_timeout=30']);
  const snapdir = path.join(dir, '.snapshots');
  const latest = path.join(snapdir, 'latest');
  t.is(errnoOf(() => fs.lstatSync(latest)), 'ENOENT', 'no latest without snapshots');
  const before = fs.statSync(snapdir).mtimeMs;
  const a = await snap(t, s, dir);
  t.true(fs.statSync(snapdir).mtimeMs > before, '.snapshots mtime follows the newest snapshot at once');
  t.deepEqual(fs.readdirSync(snapdir).sort(), [a, 'latest'].sort(), 'listed');
  t.is(errnoOf(() => fs.readlinkSync(latest)), 'no error', 'latest found by name right after the first snapshot');
  t.true(fs.existsSync(path.join(latest, 'a.txt')));
  // Names of the next few seconds, looked up while missing; the next snapshot takes one.
  const second = (ahead: number) => new Date(Math.floor(Date.now() / 1000) * 1000 + ahead * 1000).toISOString().replace('.000Z', 'Z').replaceAll(':', '-');
  const ahead = [1, 2, 3, 4, 5, 6, 7, 8].map(second);
  for (const n of ahead) t.is(errnoOf(() => fs.statSync(path.join(snapdir, n))), 'ENOENT', `${n} before it exists`);
  const taken = [a];
  let b = a;
  while (b < ahead[0]!) taken.push(b = await snap(t, s, dir));
  t.true(ahead.includes(b), `the snapshot ${b} took one of the names looked up`);
  t.true(fs.statSync(path.join(snapdir, b)).isDirectory(), `${b}, looked up while missing, is found at once`);
  t.is(fs.readlinkSync(latest), b, 'latest moved to the newest at once');
  t.is(fs.lstatSync(latest).size, b.length, 'and its size with it');
  // Cached entries go as soon as a snapshot is deleted, with everything below them.
  t.true(fs.existsSync(path.join(snapdir, a, 'sub', 'deeper', 'c.txt')));
  await ok(t, s, ['snapshot', 'delete', dir, b]);
  t.is(errnoOf(() => fs.statSync(path.join(snapdir, b))), 'ENOENT', 'a deleted snapshot is gone by name at once');
  taken.pop();
  t.is(fs.readlinkSync(latest), taken.at(-1)!, 'latest falls back to the remaining newest');
  for (const name of taken) await ok(t, s, ['snapshot', 'delete', dir, name]);
  t.is(errnoOf(() => fs.statSync(path.join(snapdir, a, 'sub', 'deeper', 'c.txt'))), 'ENOENT', 'paths inside it too');
  t.is(errnoOf(() => fs.lstatSync(latest)), 'ENOENT', 'no latest once the last snapshot is gone');
  t.deepEqual(fs.readdirSync(snapdir), []);
  await ok(t, s, ['unmount', dir]);
});

// ---------------------------------------------------------------- EROFS

/** A mounted volume with one snapshot of a few kinds of files; returns the snapshot's path. */
async function snapshotted(t: ExecutionContext): Promise<{ s: Scratch; dir: string; name: string; root: string }> {
  const s = scratch(t);
  const dir = populate(mkdir(s.dir, 'data'));
  await run('setfattr', ['-n', 'user.keep', '-v', 'kept', path.join(dir, 'a.txt')]);
  await initVolume(t, s, dir);
  await mountVolume(t, s, dir);
  const name = await snap(t, s, dir);
  return { s, dir, name, root: path.join(dir, '.snapshots', name) };
}

cli('every modifying operation inside .snapshots/<name> is EROFS and changes nothing', async (t) => {
  const { s, dir, name, root } = await snapshotted(t);
  const q = (rel: string) => path.join(root, rel);
  const liveBefore = await describeTree(dir, { xattrs: true });
  const snapBefore = await describeTree(root, { xattrs: true });
  const ops: Array<[string, () => unknown]> = [
    ['write an existing file (O_TRUNC)', () => fs.writeFileSync(q('a.txt'), 'x')],
    ['append to a file', () => fs.appendFileSync(q('a.txt'), 'x')],
    ['open read-write', () => fs.closeSync(fs.openSync(q('a.txt'), 'r+'))],
    ['open write-only without truncating', () => fs.closeSync(fs.openSync(q('sub/b.bin'), fs.constants.O_WRONLY))],
    ['create a file', () => fs.writeFileSync(q('new.txt'), 'x')],
    ['create a file exclusively', () => fs.closeSync(fs.openSync(q('sub/new.txt'), 'wx'))],
    ['copy a file in', () => fs.copyFileSync(path.join(dir, 'a.txt'), q('copy.txt'))],
    ['mkdir', () => fs.mkdirSync(q('newdir'))],
    ['mkdir deeper', () => fs.mkdirSync(q('sub/deeper/newdir'))],
    ['unlink a file', () => fs.unlinkSync(q('a.txt'))],
    ['unlink a symlink', () => fs.unlinkSync(q('link'))],
    ['rmdir an empty directory', () => fs.rmdirSync(q('empty'))],
    ['rm -r a directory', () => fs.rmSync(q('sub'), { recursive: true })],
    ['rename within', () => fs.renameSync(q('a.txt'), q('b.txt'))],
    ['rename a directory within', () => fs.renameSync(q('sub'), q('sub2'))],
    ['rename out of the snapshot', () => fs.renameSync(q('a.txt'), path.join(dir, 'moved.txt'))],
    ['rename into the snapshot', () => fs.renameSync(path.join(dir, 'a.txt'), q('in.txt'))],
    ['rename over a file of the snapshot', () => fs.renameSync(path.join(dir, 'a.txt'), q('a.txt'))],
    ['chmod a file', () => fs.chmodSync(q('a.txt'), 0o600)],
    ['chmod a directory', () => fs.chmodSync(q('sub'), 0o700)],
    ['chmod the snapshot root', () => fs.chmodSync(root, 0o700)],
    ['chown a file', () => fs.chownSync(q('a.txt'), 65534, 65534)],
    ['lchown a symlink', () => fs.lchownSync(q('link'), 65534, 65534)],
    ['utimes a file', () => fs.utimesSync(q('a.txt'), 1, 1)],
    ['utimes the snapshot root', () => fs.utimesSync(root, 1, 1)],
    ['lutimes a symlink', () => fs.lutimesSync(q('link'), 1, 1)],
    ['truncate', () => fs.truncateSync(q('sub/b.bin'), 10)],
    ['truncate to 0', () => fs.truncateSync(q('a.txt'), 0)],
    ['symlink', () => fs.symlinkSync('a.txt', q('sym2'))],
    ['hard link within', () => fs.linkSync(q('a.txt'), q('hard'))],
    ['hard link out of the snapshot', () => fs.linkSync(q('a.txt'), path.join(dir, 'hard'))],
    ['hard link into the snapshot', () => fs.linkSync(path.join(dir, 'a.txt'), q('hard'))],
    ['rmdir the snapshot root', () => fs.rmdirSync(root)],
  ];
  for (const [what, fn] of ops) t.is(errnoOf(fn), 'EROFS', what);
  // The same through the tools people use, for the calls Node has no API for.
  const shell: Array<[string, string[]]> = [
    ['setfattr (set)', ['setfattr', '-n', 'user.x', '-v', '1', q('a.txt')]],
    ['setfattr (replace)', ['setfattr', '-n', 'user.keep', '-v', 'other', q('a.txt')]],
    ['setfattr (remove)', ['setfattr', '-x', 'user.keep', q('a.txt')]],
    ['setfattr on the snapshot root', ['setfattr', '-n', 'user.x', '-v', '1', root]],
    ['mkfifo', ['mkfifo', q('fifo')]],
    ['touch an existing file', ['touch', q('a.txt')]],
    ['touch a new file', ['touch', q('touched')]],
    ['touch -h a symlink', ['touch', '-h', q('link')]],
    ['ln -s', ['ln', '-s', 'a.txt', q('sym3')]],
    ['ln', ['ln', q('a.txt'), q('hard2')]],
    ['mv', ['mv', q('a.txt'), q('mv.txt')]],
    ['rm -rf', ['rm', '-rf', root]],
    ['chmod -R', ['chmod', '-R', 'go-rwx', root]],
  ];
  for (const [what, argv] of shell) {
    const r = await run(argv[0]!, argv.slice(1));
    t.not(r.code, 0, `${what} must fail`);
    t.true(r.stderr.includes('Read-only file system'), `${what}: ${r.stderr}`);
  }
  t.deepEqual(await describeTree(root, { xattrs: true }), snapBefore, 'the snapshot is as it was');
  t.deepEqual(await describeTree(dir, { xattrs: true }), liveBefore, 'the live files are as they were');
  t.deepEqual(names(await listing(t, s, dir)), [name]);
  t.is(fs.readFileSync(q('a.txt'), 'utf8'), 'alpha\n', 'and still readable');
  await ok(t, s, ['unmount', dir]);
});

cli('every modifying operation on .snapshots itself, its entries and latest is refused, and changes nothing', async (t) => {
  const { s, dir, name } = await snapshotted(t);
  const sd = path.join(dir, '.snapshots');
  const liveBefore = await describeTree(dir);
  const sdBefore = { entries: fs.readdirSync(sd).sort(), st: fs.statSync(sd), latest: fs.readlinkSync(path.join(sd, 'latest')) };
  const absentName = '2000-01-01T00-00-00Z';
  const ops: Array<[string, () => unknown, string[]]> = [
    ['create a file in .snapshots', () => fs.writeFileSync(path.join(sd, 'new'), 'x'), ['EROFS']],
    ['mkdir in .snapshots', () => fs.mkdirSync(path.join(sd, 'x')), ['EROFS']],
    ['mkdir a snapshot-like name', () => fs.mkdirSync(path.join(sd, absentName)), ['EROFS']],
    ['symlink in .snapshots', () => fs.symlinkSync(name, path.join(sd, 'l2')), ['EROFS']],
    ['rmdir a snapshot', () => fs.rmdirSync(path.join(sd, name)), ['EROFS']],
    ['rename a snapshot', () => fs.renameSync(path.join(sd, name), path.join(sd, absentName)), ['EROFS']],
    ['rename a snapshot out', () => fs.renameSync(path.join(sd, name), path.join(dir, 'out')), ['EROFS']],
    ['unlink latest', () => fs.unlinkSync(path.join(sd, 'latest')), ['EROFS']],
    ['rename latest', () => fs.renameSync(path.join(sd, 'latest'), path.join(sd, 'newest')), ['EROFS']],
    ['lchown latest', () => fs.lchownSync(path.join(sd, 'latest'), 65534, 65534), ['EROFS']],
    ['lutimes latest', () => fs.lutimesSync(path.join(sd, 'latest'), 1, 1), ['EROFS']],
    ['chmod through latest', () => fs.chmodSync(path.join(sd, 'latest'), 0o700), ['EROFS']],
    ['hard link into .snapshots', () => fs.linkSync(path.join(dir, 'a.txt'), path.join(sd, 'hard')), ['EROFS']],
    ['chmod .snapshots', () => fs.chmodSync(sd, 0o777), ['EROFS']],
    ['chown .snapshots', () => fs.chownSync(sd, 65534, 65534), ['EROFS']],
    ['utimes .snapshots', () => fs.utimesSync(sd, 1, 1), ['EROFS']],
    ['rmdir .snapshots', () => fs.rmdirSync(sd), ['EROFS']],
    ['rename .snapshots', () => fs.renameSync(sd, path.join(dir, 'snaps')), ['EROFS']],
    ['rename a live file over .snapshots', () => fs.renameSync(path.join(dir, 'a.txt'), sd), ['EROFS', 'EISDIR']],
    ['rename a live directory over .snapshots', () => fs.renameSync(path.join(dir, 'empty'), sd), ['EROFS']],
    ['hard link a live file as .snapshots', () => fs.linkSync(path.join(dir, 'a.txt'), sd), ['EROFS', 'EEXIST']],
    ['mkdir .snapshots', () => fs.mkdirSync(sd), ['EROFS', 'EEXIST']],
    ['symlink as .snapshots', () => fs.symlinkSync('a.txt', sd), ['EROFS', 'EEXIST']],
    ['open .snapshots for writing', () => fs.openSync(sd, 'r+'), ['EROFS', 'EISDIR']],
  ];
  for (const [what, fn, allowed] of ops) {
    const code = errnoOf(fn);
    t.true(allowed.includes(code), `${what}: expected ${allowed.join(' or ')}, got ${code}`);
  }
  for (const argv of [['setfattr', '-n', 'user.x', '-v', '1', sd], ['touch', sd], ['rm', '-rf', sd], ['mv', sd, path.join(dir, 'moved')]]) {
    const r = await run(argv[0]!, argv.slice(1));
    t.not(r.code, 0, argv.join(' '));
    t.true(r.stderr.includes('Read-only file system'), `${argv.join(' ')}: ${r.stderr}`);
  }
  t.deepEqual(fs.readdirSync(sd).sort(), sdBefore.entries);
  t.is(fs.readlinkSync(path.join(sd, 'latest')), sdBefore.latest);
  const st = fs.statSync(sd);
  t.is(st.mode, sdBefore.st.mode);
  t.is(st.uid, sdBefore.st.uid);
  t.is(st.mtimeMs, sdBefore.st.mtimeMs);
  t.deepEqual(await describeTree(dir), liveBefore, 'the live files are as they were');
  t.deepEqual(names(await listing(t, s, dir)), [name], 'the snapshot is still listed');
  await ok(t, s, ['unmount', dir]);
  t.false(fs.existsSync(path.join(dir, 'snaps')));
  t.false(fs.existsSync(sd), 'no real .snapshots was made in the directory');
});

// ---------------------------------------------------------------- paths that lead out

cli('.. and symlinks that lead out of a snapshot go where they say, as in any tree, and write nothing', async (t) => {
  const s = scratch(t);
  const outside = mkdir(s.dir, 'outside');
  fs.writeFileSync(path.join(outside, 'o.txt'), 'outside v1\n');
  const dir = populate(mkdir(s.dir, 'data'));
  fs.symlinkSync(outside, path.join(dir, 'ext'));
  fs.symlinkSync('/etc', path.join(dir, 'etc'));
  fs.symlinkSync('../a.txt', path.join(dir, 'sub', 'up'));
  fs.symlinkSync('../..', path.join(dir, 'sub', 'top'));
  await initVolume(t, s, dir);
  await mountVolume(t, s, dir);
  const name = await snap(t, s, dir);
  const root = path.join(dir, '.snapshots', name);
  fs.writeFileSync(path.join(dir, 'a.txt'), 'alpha v2, live\n');
  const snapBefore = await describeTree(root);
  const liveBefore = await describeTree(dir);

  // `..` is resolved by the kernel: it climbs the snapshot tree, then .snapshots, then the mount.
  t.deepEqual(fs.readdirSync(path.join(root, 'sub', '..')).sort(), fs.readdirSync(root).sort());
  t.deepEqual((await run('ls', [path.join(root, 'sub', '..')])).stdout, (await run('ls', [root])).stdout);
  t.is(fs.readFileSync(path.join(root, 'sub', '..', 'a.txt'), 'utf8'), 'alpha\n', 'sub/../a.txt is the snapshot\'s a.txt');
  t.is(fs.realpathSync(path.join(root, 'sub', 'deeper', '..', '..')), root);
  t.deepEqual(fs.readdirSync(path.join(root, '..')).sort(), [name, 'latest'].sort());
  t.deepEqual(fs.readdirSync(path.join(root, '..', '..')).sort(), fs.readdirSync(dir).sort());
  t.is(fs.readFileSync(path.join(root, '..', '..', 'a.txt'), 'utf8'), 'alpha v2, live\n');

  // Symlinks are symlinks: their targets are kept as written and resolved where they sit.
  t.is(fs.readlinkSync(path.join(root, 'ext')), outside);
  t.is(fs.readFileSync(path.join(root, 'ext', 'o.txt'), 'utf8'), 'outside v1\n');
  fs.writeFileSync(path.join(outside, 'o.txt'), 'outside v2\n');
  t.is(fs.readFileSync(path.join(root, 'ext', 'o.txt'), 'utf8'), 'outside v2\n', 'what is outside is not snapshotted: the link leads to the file as it is now');
  t.is(fs.readlinkSync(path.join(root, 'etc')), '/etc');
  t.deepEqual(fs.readdirSync(path.join(root, 'etc')).sort(), fs.readdirSync('/etc').sort());
  t.is(fs.realpathSync(path.join(root, 'etc')), fs.realpathSync('/etc'));
  t.is(fs.readlinkSync(path.join(root, 'sub', 'up')), '../a.txt');
  t.is(fs.readFileSync(path.join(root, 'sub', 'up'), 'utf8'), 'alpha\n', 'a relative link resolves inside the snapshot');
  t.is(fs.readlinkSync(path.join(root, 'sub', 'top')), '../..');
  t.is(fs.realpathSync(path.join(root, 'sub', 'top')), path.join(dir, '.snapshots'), '../.. from sub/ of a snapshot is .snapshots');
  t.is(fs.readFileSync(path.join(dir, 'sub', 'up'), 'utf8'), 'alpha v2, live\n', 'the same link in the live tree reads the live file');

  // Writing through a link that leaves the snapshot writes where the link points, not in the snapshot.
  fs.writeFileSync(path.join(root, 'ext', 'through.txt'), 'written through the link\n');
  t.is(fs.readFileSync(path.join(outside, 'through.txt'), 'utf8'), 'written through the link\n');
  t.is(errnoOf(() => fs.writeFileSync(path.join(root, 'sub', 'up'), 'x')), 'EROFS', 'a link that stays in the snapshot leads to read-only files');
  t.is(errnoOf(() => fs.writeFileSync(path.join(root, 'sub', 'top', name, 'x.txt'), 'x')), 'EROFS');

  t.deepEqual(await describeTree(root), snapBefore, 'nothing was written in the snapshot');
  t.deepEqual(await describeTree(dir), liveBefore, 'nothing was written in the live tree');
  await ok(t, s, ['unmount', dir]);
});

// ---------------------------------------------------------------- names

cli('snapshot names are the UTC second without colons; snapshots in the same second get -1, -2', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  await mountVolume(t, s, dir);
  const printed: string[] = [];
  let biggest: SnapshotJson[] = [];
  for (let attempt = 1; attempt <= 6 && biggest.length < 3; attempt++) {
    // Start just after a second begins, so that snapshots asked for at once land in it.
    await sleep(1000 - (Date.now() % 1000) + 20);
    const started = Date.now();
    const outs = await Promise.all([0, 1, 2, 3].map(() => replfs(s, ['snapshot', dir])));
    for (const r of outs) t.is(r.code, 0, r.stderr);
    const burst = outs.map((r) => r.stdout.trim());
    printed.push(...burst);
    t.log(`attempt ${attempt}: ${burst.join(' ')} (${Date.now() - started} ms)`);
    const groups = new Map<string, SnapshotJson[]>();
    for (const e of (await listing(t, s, dir)).snapshots) {
      const base = NAME.exec(e.name)![1]!;
      groups.set(base, [...(groups.get(base) ?? []), e]);
    }
    for (const [base, group] of groups) {
      // In the order they were taken: the second, then -1, -2, ...
      t.deepEqual(group.map((e) => e.name), group.map((_, i) => (i === 0 ? base : `${base}-${i}`)), `names of second ${base}`);
      if (group.length > biggest.length) biggest = group;
    }
  }
  t.true(biggest.length >= 3, 'three snapshots within one second (the machine may be too slow)');
  const all = (await listing(t, s, dir)).snapshots;
  t.deepEqual([...printed].sort(), all.map((e) => e.name).sort(), 'each command printed its own name, none twice');
  // The name is the UTC time the snapshot was asked for, to the second; the cut follows.
  for (const e of all) {
    const base = NAME.exec(e.name)![1]!;
    const named = Date.parse(base.replace(/T(\d{2})-(\d{2})-(\d{2})Z$/, 'T$1:$2:$3Z'));
    const cut = Date.parse(e.sourceTime);
    t.true(cut >= named && cut - named < 10_000, `${e.name} taken at ${e.sourceTime}`);
  }
  // Unmounted, directly: a fresh name too.
  await ok(t, s, ['unmount', dir]);
  const next = await snap(t, s, dir);
  t.false(all.some((e) => e.name === next));
  t.deepEqual(names(await listing(t, s, dir)), [...all.map((e) => e.name), next]);
});

// ---------------------------------------------------------------- mounted and unmounted

cli('mounted and unmounted, snapshots lists the same snapshots, and the views show them', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const a = await snap(t, s, dir, ['--label', 'taken unmounted']);
  await mountVolume(t, s, dir);
  fs.writeFileSync(path.join(dir, 'sub', 'b.bin'), Buffer.alloc(200_000, 9));
  const b = await snap(t, s, dir);
  fs.appendFileSync(path.join(dir, 'a.txt'), 'more\n');
  fs.unlinkSync(path.join(dir, 'sub', 'deeper', 'c.txt'));
  const c = await snap(t, s, dir, ['--label', 'mounted']);
  const mounted = await listing(t, s, dir);
  t.deepEqual(names(mounted), [a, b, c]);
  t.deepEqual(mounted.snapshots.map((e) => e.label), ['taken unmounted', null, 'mounted']);
  t.deepEqual(mounted.snapshots.map((e) => e.consistency), ['crash', 'crash', 'crash']);
  t.true(mounted.snapshots[0]!.uniqueBytes > 0, 'the first snapshot alone holds the old b.bin');
  t.is(fs.readlinkSync(path.join(dir, '.snapshots', 'latest')), mounted.latest!);
  t.is(fs.readFileSync(path.join(dir, '.snapshots', a, 'sub', 'b.bin'))[0], 7);
  t.is(fs.readFileSync(path.join(dir, '.snapshots', b, 'sub', 'b.bin'))[0], 9);
  t.true(fs.existsSync(path.join(dir, '.snapshots', b, 'sub', 'deeper', 'c.txt')));
  t.false(fs.existsSync(path.join(dir, '.snapshots', c, 'sub', 'deeper', 'c.txt')));
  const humanMounted = await ok(t, s, ['snapshots', dir]);
  const fromInside = await listing(t, s, path.join(dir, 'sub'));
  t.deepEqual(fromInside, mounted, 'any path inside the volume names it');
  await ok(t, s, ['unmount', dir]);
  const unmounted = await listing(t, s, dir);
  t.deepEqual(unmounted, mounted, 'the same JSON, field for field');
  t.is(await ok(t, s, ['snapshots', dir]), humanMounted, 'the same table');
  t.deepEqual(await listing(t, s, path.join(dir, 'sub')), mounted);
  t.deepEqual(JSON.parse(await ok(t, s, ['snapshots', '--json'], { cwd: path.join(dir, 'sub', 'deeper') })), mounted, 'the default path is the current directory');
  const lines = humanMounted.trimEnd().split('\n');
  t.regex(lines[0]!, /^NAME +SOURCE TIME +CONSISTENCY +HOLDS +LABEL$/);
  t.is(lines.length, 4);
  // An empty volume, both ways.
  const empty = await volume(t, s, 'empty');
  t.is(await ok(t, s, ['snapshots', empty]), 'no snapshots\n');
  t.deepEqual(await listing(t, s, empty), { snapshots: [], latest: null });
  await mountVolume(t, s, empty);
  t.is(await ok(t, s, ['snapshots', empty]), 'no snapshots\n');
  t.deepEqual(await listing(t, s, empty), { snapshots: [], latest: null });
  await ok(t, s, ['unmount', empty]);
});

// ---------------------------------------------------------------- deleted under an open file

interface Held {
  /** Tells the reader to read now; resolves with its exit code. */
  read(): Promise<number>;
  out: string;
  stderr: () => string;
}

/**
 * A child process that opens `file` as fd 3, says so, waits to be told, then runs
 * `reader` (a shell command that reads fd 3 and writes to stdout) into `out`.
 */
async function holdOpen(t: ExecutionContext, s: Scratch, file: string, reader: string): Promise<Held> {
  const tag = path.join(s.dir, `reader-${Math.random().toString(36).slice(2)}`);
  const script = `exec 3< "$1" || exit 90
: > "$2.ready"
while [ ! -e "$2.go" ]; do sleep 0.05; done
${reader} > "$2.out"`;
  const child = spawn('/bin/sh', ['-c', script, 'reader', file, tag], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
  t.teardown(() => { child.kill('SIGKILL'); });
  await Promise.race([
    waitFor(() => fs.existsSync(`${tag}.ready`), 20_000, 'the reader to open the file'),
    exited.then((code) => { throw new Error(`the reader exited (${code}) before opening: ${stderr}`); }),
  ]);
  return {
    read: () => { fs.writeFileSync(`${tag}.go`, ''); return exited; },
    out: `${tag}.out`,
    stderr: () => stderr,
  };
}

/**
 * Reads exactly `size` bytes of fd 3, never asking past the end of the file (a read past
 * the end makes the kernel ask for the file's size) and never calling fstat() on it.
 */
const READ_EXACT = (size: number) => `${JSON.stringify(process.execPath)} -e 'const fs=require("fs");const b=Buffer.alloc(${size});let n=0;while(n<${size}){const r=fs.readSync(3,b,n,${size}-n,n);if(r===0)break;n+=r}process.stdout.write(b.subarray(0,n))'`;

async function deletedUnderReader(t: ExecutionContext, reader: (size: number) => string, afterDelete?: (dir: string) => void): Promise<void> {
  const s = scratch(t);
  const dir = populate(mkdir(s.dir, 'data'));
  const content = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7 + 3) & 0xff));
  fs.writeFileSync(path.join(dir, 'big.bin'), content);
  await initVolume(t, s, dir);
  await mountVolume(t, s, dir);
  const older = await snap(t, s, dir);
  fs.writeFileSync(path.join(dir, 'a.txt'), 'alpha v2\n');
  const doomed = await snap(t, s, dir);
  // Only the newest snapshot goes: after it, no snapshot needs the live blocks preserved.
  await ok(t, s, ['snapshot', 'delete', dir, older]);
  const held = await holdOpen(t, s, path.join(dir, '.snapshots', doomed, 'big.bin'), reader(content.length));
  await ok(t, s, ['snapshot', 'delete', dir, doomed]);
  // The name is gone at once, while the file is still open.
  t.deepEqual((await listing(t, s, dir)).snapshots, [], 'gone from the listing');
  t.is(errnoOf(() => fs.statSync(path.join(dir, '.snapshots', doomed))), 'ENOENT');
  t.deepEqual(fs.readdirSync(path.join(dir, '.snapshots')), [], 'gone from .snapshots, latest too');
  fails(t, await replfs(s, ['snapshot', 'delete', dir, doomed]), 'notFound', 'replfs snapshot', `no snapshot named ${JSON.stringify(doomed)}`);
  afterDelete?.(dir);
  const code = await held.read();
  t.is(code, 0, `the reader failed: ${held.stderr()}`);
  const got = fs.readFileSync(held.out);
  t.is(got.length, content.length, 'read the whole file');
  t.true(got.equals(content), 'read the content the snapshot had');
  // Closed: the volume unmounts normally (nothing left open).
  await ok(t, s, ['unmount', dir]);
}

cli('a snapshot deleted under an open file: the name goes at once, reads within the file go on', async (t) => {
  await deletedUnderReader(t, READ_EXACT);
});

cli('a snapshot deleted under an open file: `cat <&3` (fstat, read to the end) reads it all', async (t) => {
  await deletedUnderReader(t, () => 'cat <&3');
});

cli('a snapshot deleted under an open file: the file keeps its content while the live file is rewritten', async (t) => {
  await deletedUnderReader(t, READ_EXACT, (dir) => {
    const fd = fs.openSync(path.join(dir, 'big.bin'), 'r+');
    fs.writeSync(fd, Buffer.alloc(300_000, 0xee), 0, 300_000, 0);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  });
});
