// The command line as a user meets it when something is wrong: bad arguments, help, and
// every refusal. Each case runs the real `replfs` and checks the documented exit code, a
// message on stderr that names the problem, nothing on stdout, and that the directory
// involved is exactly as it was.
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import test from '../helpers/ava.js';
import {
  ROOT, scratch, replfs, initVolume, mountVolume, forceUnmount, describeTree, run, sh, isMounted,
  type Scratch, type RunResult, type TreeEntry,
  concurrencyGate, stateOf
} from '../helpers/env.js';
import { ExitCode, type ExitCodeName } from '../../src/errors/index.js';
import { mainHelp as usage } from '../../src/cli/main.js';
import { COMMANDS } from '../../src/cli/commands.js';
import { helpText } from '../../src/cli/command.js';
import { ChangeKind } from '../../src/core/types.js';

const mainHelp = () => usage(COMMANDS);

const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const NAMES = COMMANDS.map((c) => c.name);

// ---------------------------------------------------------------- helpers

/**
 * Each case starts several short-lived `replfs` processes; letting every case of this
 * file run at once only makes them all slow. At most this many run together.
 */
const PARALLEL = 4;
const gated = concurrencyGate(PARALLEL);

type Body = (t: ExecutionContext) => Promise<void>;
/** Declares a test whose body waits for a free slot. */
const cli = (title: string, body: Body) => test(title, (t) => gated(() => body(t)));

/** A failed command: the exit code, nothing on stdout, and a message naming the problem. */
function fails(t: ExecutionContext, r: RunResult, exit: ExitCodeName, command: string, message: string): void {
  t.is(r.code, ExitCode[exit], `expected exit ${ExitCode[exit]} (${exit}); stderr: ${r.stderr}`);
  t.is(r.stdout, '', 'stdout must stay empty on errors');
  t.true(r.stderr.startsWith(`${command}: `), `stderr should start with "${command}: ", got: ${r.stderr}`);
  t.true(r.stderr.includes(message), `stderr should mention ${JSON.stringify(message)}, got: ${r.stderr}`);
}

function ok(t: ExecutionContext, r: RunResult): void {
  t.is(r.code, 0, `exit ${r.code}; stderr: ${r.stderr}`);
}


interface Picture {
  root: { mode: number; uid: number; gid: number };
  tree: Record<string, TreeEntry>;
  state: Record<string, string> | null;
}

/** What must not change when a command is refused: the user's files and the state directory. */
async function picture(dir: string): Promise<Picture> {
  const st = fs.statSync(dir);
  return { root: { mode: st.mode, uid: st.uid, gid: st.gid }, tree: await describeTree(dir), state: stateOf(dir) };
}

/** A directory with a few files of each kind, so that a change would show. */
function populate(dir: string): string {
  fs.mkdirSync(path.join(dir, 'sub', 'deeper'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'a.txt'), 'alpha\n');
  fs.writeFileSync(path.join(dir, 'sub', 'b.bin'), Buffer.alloc(200_000, 7));
  fs.writeFileSync(path.join(dir, 'sub', 'deeper', 'c.txt'), 'gamma\n');
  fs.symlinkSync('a.txt', path.join(dir, 'link'));
  return dir;
}

function mkdir(...parts: string[]): string {
  const p = path.join(...parts);
  fs.mkdirSync(p, { recursive: true });
  return p;
}

/** A protected directory with files, not mounted. */
async function volume(t: ExecutionContext, s: Scratch, name = 'data', extra: string[] = []): Promise<string> {
  const dir = populate(mkdir(s.dir, name));
  await initVolume(t, s, dir, extra);
  t.truthy(stateOf(dir), 'init made .replfs');
  return dir;
}

/** Mounts a tmpfs at `p`; it is unmounted when the test ends, whatever happens. */
async function tmpfs(t: ExecutionContext, p: string): Promise<void> {
  t.teardown(async () => {
    if (await isMounted(p)) await run('umount', [p]);
    if (await isMounted(p)) await run('umount', ['-l', p]);
  });
  await sh(t, `mount -t tmpfs none '${p}'`);
  t.true(await isMounted(p), `tmpfs mounted at ${p}`);
}

// ---------------------------------------------------------------- usage and help

cli('replfs with no arguments prints the usage on stderr and exits 2', async (t) => {
  const s = scratch(t);
  const r = await replfs(s, []);
  t.is(r.code, ExitCode.usage);
  t.is(r.stdout, '');
  t.true(r.stderr.startsWith('replfs: missing command\n'), r.stderr);
  t.true(r.stderr.includes(mainHelp()), 'the usage follows the message');
});

cli('replfs --help and -h print the usage on stdout and exit 0', async (t) => {
  const s = scratch(t);
  for (const flag of ['--help', '-h', 'help']) {
    const r = await replfs(s, [flag]);
    ok(t, r);
    t.is(r.stderr, '');
    t.is(r.stdout, mainHelp(), flag);
    t.true(r.stdout.startsWith('Usage: replfs <command>'));
    for (const name of NAMES) t.true(r.stdout.includes(`\n  ${name} `), `${flag} lists ${name}`);
  }
});

cli('replfs --version and -V print the package.json version', async (t) => {
  const s = scratch(t);
  for (const flag of ['--version', '-V']) {
    const r = await replfs(s, [flag]);
    ok(t, r);
    t.is(r.stdout, `${VERSION}\n`);
    t.is(r.stderr, '');
  }
});

cli('an unknown command or global option is a usage error', async (t) => {
  const s = scratch(t);
  const cmd = await replfs(s, ['frobnicate', 'x']);
  fails(t, cmd, 'usage', 'replfs', 'unknown command "frobnicate"');
  t.true(cmd.stderr.includes(mainHelp()), 'the usage follows the message');
  const opt = await replfs(s, ['--frobnicate']);
  fails(t, opt, 'usage', 'replfs', 'unknown option "--frobnicate"');
  const help = await replfs(s, ['help', 'frobnicate']);
  fails(t, help, 'usage', 'replfs help', 'unknown command "frobnicate"');
});

for (const name of NAMES) {
  cli(`${name} --help and -h print its help on stdout and exit 0`, async (t) => {
    const s = scratch(t);
    const cmd = COMMANDS.find((c) => c.name === name)!;
    for (const args of [[name, '--help'], [name, '-h'], ['help', name], [name, '--bogus', '--help']]) {
      const r = await replfs(s, args);
      ok(t, r);
      t.is(r.stderr, '', args.join(' '));
      t.true(r.stdout.startsWith(`Usage: replfs ${name}`), args.join(' '));
      t.is(r.stdout, helpText(cmd), args.join(' '));
    }
  });

  cli(`${name} with an unknown option is a usage error`, async (t) => {
    const s = scratch(t);
    const r = await replfs(s, [name, '--frobnicate', ...(name === 'demo' ? [] : ['x'])]);
    fails(t, r, 'usage', `replfs ${name}`, "Unknown option '--frobnicate'");
    t.true(r.stderr.includes(`see: replfs ${name} --help`), r.stderr);
    t.false(r.stderr.includes(`${name}: ${name}:`), 'the command is named once');
    const short = await replfs(s, [name, '-Z']);
    fails(t, short, 'usage', `replfs ${name}`, "Unknown option '-Z'");
  });

  cli(`${name} with too many arguments is a usage error`, async (t) => {
    const s = scratch(t);
    const cmd = COMMANDS.find((c) => c.name === name)!;
    const args = Array.from({ length: cmd.positionals.max + 1 }, (_, i) => path.join(s.dir, `arg${i}`));
    const before = fs.readdirSync(s.dir).sort();
    const r = await replfs(s, [name, ...args]);
    fails(t, r, 'usage', `replfs ${name}`, `unexpected argument ${JSON.stringify(args[cmd.positionals.max])}`);
    t.deepEqual(fs.readdirSync(s.dir).sort(), before, 'nothing created');
  });
}

for (const name of NAMES.filter((n) => COMMANDS.find((c) => c.name === n)!.positionals.min > 0)) {
  cli(`${name} without its argument is a usage error`, async (t) => {
    const s = scratch(t);
    const r = await replfs(s, [name]);
    fails(t, r, 'usage', `replfs ${name}`, `missing argument (usage: replfs ${name} `);
  });
}

cli('an option missing its value is a usage error', async (t) => {
  const s = scratch(t);
  const dir = populate(mkdir(s.dir, 'data'));
  const before = await picture(dir);
  fails(t, await replfs(s, ['init', dir, '--block-size']), 'usage', 'replfs init', "Option '--block-size <value>' argument missing");
  fails(t, await replfs(s, ['mount', dir, '-o']), 'usage', 'replfs mount', "Option '-o, --option <value>' argument missing");
  fails(t, await replfs(s, ['unmount', dir, '--timeout']), 'usage', 'replfs unmount', "Option '--timeout <value>' argument missing");
  t.deepEqual(await picture(dir), before);
});

cli('unmount --timeout must be a positive number', async (t) => {
  const s = scratch(t);
  for (const v of ['abc', '0', '-1']) {
    const r = await replfs(s, ['unmount', s.dir, `--timeout=${v}`]);
    fails(t, r, 'usage', 'replfs unmount', `--timeout ${JSON.stringify(v)} is not a positive number of seconds`);
  }
});

// ---------------------------------------------------------------- init

cli('init of a path that does not exist: exit 3, nothing created', async (t) => {
  const s = scratch(t);
  const missing = path.join(s.dir, 'nope');
  const r = await replfs(s, ['init', missing]);
  fails(t, r, 'notFound', 'replfs init', `${missing} does not exist`);
  t.false(fs.existsSync(missing));
});

cli('init of a regular file: exit 4, the file untouched', async (t) => {
  const s = scratch(t);
  const file = path.join(s.dir, 'plain.txt');
  fs.writeFileSync(file, 'not a directory\n');
  const before = fs.statSync(file, { bigint: true });
  const r = await replfs(s, ['init', file]);
  fails(t, r, 'refused', 'replfs init', 'is not a directory');
  const after = fs.statSync(file, { bigint: true });
  t.is(after.mtimeNs, before.mtimeNs);
  t.is(fs.readFileSync(file, 'utf8'), 'not a directory\n');
  t.false(fs.existsSync(path.join(s.dir, '.replfs')));
});

cli('init of an already protected directory: exit 4, nothing changed', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const before = await picture(dir);
  const r = await replfs(s, ['init', dir]);
  fails(t, r, 'refused', 'replfs init', `${dir} is already protected`);
  t.deepEqual(await picture(dir), before);
});

cli('init of a directory inside a protected directory: exit 4, nothing changed', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const inner = path.join(dir, 'sub', 'deeper');
  const before = await picture(dir);
  const r = await replfs(s, ['init', inner]);
  fails(t, r, 'refused', 'replfs init', `${inner} is inside the protected directory ${dir}`);
  t.deepEqual(await picture(dir), before);
  t.false(fs.existsSync(path.join(inner, '.replfs')));
});

cli('init of a directory that contains a mount point: exit 4, nothing changed', async (t) => {
  const s = scratch(t);
  const dir = populate(mkdir(s.dir, 'data'));
  const sub = mkdir(dir, 'sub', 'mnt');
  await tmpfs(t, sub);
  fs.writeFileSync(path.join(sub, 'on-tmpfs.txt'), 'tmpfs\n');
  const before = await picture(dir);
  const r = await replfs(s, ['init', dir]);
  fails(t, r, 'refused', 'replfs init', `contains mount points: ${sub}`);
  t.deepEqual(await picture(dir), before);
  t.is(before.state, null);
  t.false(fs.existsSync(path.join(dir, '.replfs')));
});

cli('init of a directory with a protected directory below it: exit 4, nothing changed', async (t) => {
  const s = scratch(t);
  const outer = populate(mkdir(s.dir, 'outer'));
  const inner = path.join(outer, 'sub', 'deeper');
  await initVolume(t, s, inner);
  const innerState = stateOf(inner);
  t.truthy(innerState);
  const before = await picture(outer);
  const r = await replfs(s, ['init', outer]);
  fails(t, r, 'refused', 'replfs init', 'protected directories cannot be nested');
  t.true(r.stderr.includes('sub/deeper/.replfs'), `names the nested volume: ${r.stderr}`);
  t.deepEqual(await picture(outer), before, 'no .replfs, no leftover temporary state');
  t.is(stateOf(outer), null);
  t.deepEqual(stateOf(inner), innerState, 'the nested volume is untouched');
});

cli('init of a directory inside a replfs volume mounted elsewhere: exit 4, nothing changed', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const mnt = mkdir(s.dir, 'mnt');
  await mountVolume(t, s, dir, mnt);
  const target = path.join(mnt, 'sub');
  const before = await describeTree(mnt);
  const r = await replfs(s, ['init', target]);
  fails(t, r, 'refused', 'replfs init', `${target} is inside the mounted replfs volume ${mnt}`);
  t.deepEqual(await describeTree(mnt), before);
  t.false(fs.existsSync(path.join(target, '.replfs')));
  t.false(fs.existsSync(path.join(dir, 'sub', '.replfs')));
  ok(t, await replfs(s, ['unmount', mnt]));
});

cli('init of a volume mounted in place, or of a directory in it: exit 4, nothing changed', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  await mountVolume(t, s, dir);
  const before = await describeTree(dir);
  for (const target of [dir, path.join(dir, 'sub')]) {
    const r = await replfs(s, ['init', target]);
    fails(t, r, 'refused', 'replfs init', `${target} is inside the mounted replfs volume ${dir}`);
    t.deepEqual(await describeTree(dir), before);
  }
  ok(t, await replfs(s, ['unmount', dir]));
  t.false(fs.existsSync(path.join(dir, 'sub', '.replfs')));
});

for (const [value, message] of [
  ['abc', '--block-size "abc" is not a size'],
  ['3K', '--block-size "3K" is not a power of two from 4K to 1M'],
  ['2M', '--block-size "2M" is not a power of two from 4K to 1M'],
  ['1K', '--block-size "1K" is not a power of two from 4K to 1M'],
  ['', '--block-size "" is not a size'],
] as const) {
  cli(`init --block-size ${JSON.stringify(value)}: exit 2, nothing created`, async (t) => {
    const s = scratch(t);
    const dir = populate(mkdir(s.dir, 'data'));
    const before = await picture(dir);
    const r = await replfs(s, ['init', dir, `--block-size=${value}`]);
    fails(t, r, 'usage', 'replfs init', message);
    t.deepEqual(await picture(dir), before);
    t.is(stateOf(dir), null);
    // A bad command line is reported as such whatever the directory.
    const missing = await replfs(s, ['init', path.join(s.dir, 'nope'), '--block-size', value]);
    fails(t, missing, 'usage', 'replfs init', message);
  });
}

cli('init --block-size 4K works and status --json reports it', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s, 'data', ['--block-size', '4K']);
  const r = await replfs(s, ['status', dir, '--json']);
  ok(t, r);
  const status = JSON.parse(r.stdout) as { blockSize: number; root: string };
  t.is(status.blockSize, 4096);
  t.is(status.root, dir);
});

// ---------------------------------------------------------------- mount

cli('mount of a directory that is not protected: exit 3, nothing changed', async (t) => {
  const s = scratch(t);
  const dir = populate(mkdir(s.dir, 'data'));
  const mnt = mkdir(s.dir, 'mnt');
  const before = await picture(dir);
  for (const args of [[dir], [dir, mnt]]) {
    const r = await replfs(s, ['mount', ...args]);
    fails(t, r, 'notFound', 'replfs mount', `${dir} is not a protected directory`);
    t.true(r.stderr.includes(`replfs init ${dir}`), 'the hint says how to protect it');
    t.deepEqual(await picture(dir), before);
    t.false(await isMounted(dir));
    t.false(await isMounted(mnt));
  }
});

cli('mount of a directory that does not exist: exit 3', async (t) => {
  const s = scratch(t);
  const missing = path.join(s.dir, 'nope');
  const r = await replfs(s, ['mount', missing]);
  fails(t, r, 'notFound', 'replfs mount', `${missing} does not exist`);
  t.false(fs.existsSync(missing));
});

cli('mount on a mountpoint that does not exist: exit 3, nothing changed', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const missing = path.join(s.dir, 'nope');
  const before = await picture(dir);
  const r = await replfs(s, ['mount', dir, missing]);
  fails(t, r, 'notFound', 'replfs mount', `mountpoint ${missing} does not exist`);
  t.deepEqual(await picture(dir), before);
  t.false(fs.existsSync(missing));
});

cli('mount on a mountpoint that is not empty: exit 4, nothing changed', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const mnt = populate(mkdir(s.dir, 'mnt'));
  const before = await picture(dir);
  const mntBefore = await picture(mnt);
  const r = await replfs(s, ['mount', dir, mnt]);
  fails(t, r, 'refused', 'replfs mount', `mountpoint ${mnt} is not empty`);
  t.deepEqual(await picture(dir), before);
  t.deepEqual(await picture(mnt), mntBefore);
  t.false(await isMounted(mnt));
});

cli('mount on a mountpoint that is a file: exit 4, nothing changed', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const file = path.join(s.dir, 'plain.txt');
  fs.writeFileSync(file, 'file\n');
  const before = await picture(dir);
  const r = await replfs(s, ['mount', dir, file]);
  fails(t, r, 'refused', 'replfs mount', `mountpoint ${file} is not a directory`);
  t.deepEqual(await picture(dir), before);
  t.is(fs.readFileSync(file, 'utf8'), 'file\n');
});

cli('mount on a mountpoint inside the protected directory: exit 4, nothing changed', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const inner = mkdir(dir, 'empty');
  const before = await picture(dir);
  const r = await replfs(s, ['mount', dir, inner]);
  fails(t, r, 'refused', 'replfs mount', `mountpoint ${inner} is inside the protected directory ${dir}`);
  t.deepEqual(await picture(dir), before);
  t.false(await isMounted(inner));
});

for (const [option, message] of [
  ['frobnicate', 'unknown mount option "frobnicate"'],
  ['ro,frobnicate=1', 'unknown mount option "frobnicate"'],
  ['attr_timeout=x', 'mount option attr_timeout needs a number'],
  ['attr_timeout', 'mount option attr_timeout needs a number'],
  ['ro=1', 'mount option ro takes no value'],
  ['attr_timeout=1=2', 'mount option attr_timeout needs a number, as in attr_timeout=1, got "1=2"'],
  ['snapdir=visible=x', 'mount option snapdir is hidden or visible, got "visible=x"'],
] as const) {
  cli(`mount -o ${option}: exit 2, nothing changed`, async (t) => {
    const s = scratch(t);
    const dir = await volume(t, s);
    const mnt = mkdir(s.dir, 'mnt');
    const before = await picture(dir);
    for (const args of [[dir], [dir, mnt]]) {
      const r = await replfs(s, ['mount', ...args, '-o', option]);
      fails(t, r, 'usage', 'replfs mount', message);
      t.false(r.stderr.includes('mount: mount:'), 'the command is named once');
      t.deepEqual(await picture(dir), before);
      t.false(await isMounted(dir));
      t.false(await isMounted(mnt));
    }
  });
}

cli('mount of a volume that is already mounted: exit 5, the mount undisturbed', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const other = mkdir(s.dir, 'other');
  await mountVolume(t, s, dir);
  const before = await describeTree(dir);
  const again = await replfs(s, ['mount', dir]);
  fails(t, again, 'busy', 'replfs mount', `${dir} is already mounted`);
  const elsewhere = await replfs(s, ['mount', dir, other]);
  fails(t, elsewhere, 'busy', 'replfs mount', `${dir} is already mounted`);
  t.false(await isMounted(other));
  t.deepEqual(await describeTree(dir), before);
  const st = await replfs(s, ['status', dir, '--json']);
  ok(t, st);
  t.true((JSON.parse(st.stdout) as { mounted: boolean }).mounted, 'still served');
  ok(t, await replfs(s, ['unmount', dir]));
});

cli('mount on a mountpoint already in use by another volume: exit 5', async (t) => {
  const s = scratch(t);
  const a = await volume(t, s, 'a');
  const b = await volume(t, s, 'b');
  const mnt = mkdir(s.dir, 'mnt');
  await mountVolume(t, s, a, mnt);
  const before = await picture(b);
  const r = await replfs(s, ['mount', b, mnt]);
  fails(t, r, 'busy', 'replfs mount', `${mnt} is already mounted`);
  t.deepEqual(await picture(b), before);
  ok(t, await replfs(s, ['unmount', mnt]));
});

// ---------------------------------------------------------------- damaged state

const DAMAGE: Array<{ what: string; message: string; damage: (dir: string) => void }> = [
  {
    what: 'the .replfs/db directory is missing',
    message: 'the volume database is missing',
    damage: (dir) => fs.rmSync(path.join(dir, '.replfs', 'db'), { recursive: true }),
  },
  {
    what: 'the LevelDB manifest is garbage',
    message: 'the volume database is damaged',
    damage: (dir) => {
      const db = path.join(dir, '.replfs', 'db');
      const manifests = fs.readdirSync(db).filter((n) => n.startsWith('MANIFEST-'));
      if (manifests.length === 0) throw new Error('no MANIFEST file to damage');
      for (const m of manifests) fs.writeFileSync(path.join(db, m), Buffer.from('this is not a LevelDB manifest\n'.repeat(8)));
    },
  },
  {
    what: 'config.json is not JSON',
    message: '.replfs/config.json is not valid JSON',
    damage: (dir) => fs.writeFileSync(path.join(dir, '.replfs', 'config.json'), '{ "formatVersion": 1, \n'),
  },
  {
    what: 'config.json has formatVersion 99',
    message: 'on-disk format 99 is not supported',
    damage: (dir) => {
      const file = path.join(dir, '.replfs', 'config.json');
      fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), formatVersion: 99 }, null, 2) + '\n');
    },
  },
  {
    what: 'config.json is missing',
    message: 'cannot read .replfs/config.json',
    damage: (dir) => fs.rmSync(path.join(dir, '.replfs', 'config.json')),
  },
];

for (const { what, message, damage } of DAMAGE) {
  cli(`damaged volume (${what}): status, journal and mount exit 6, the files untouched`, async (t) => {
    const s = scratch(t);
    const dir = await volume(t, s);
    damage(dir);
    const before = await describeTree(dir);
    t.teardown(() => forceUnmount(s, dir));
    for (const args of [['status', dir], ['status', path.join(dir, 'sub', 'deeper')], ['status', dir, '--json'],
      ['journal', dir], ['journal', dir, '--json'], ['mount', dir]]) {
      const r = await replfs(s, args);
      fails(t, r, 'damaged', `replfs ${args[0]}`, message);
      t.deepEqual(await describeTree(dir), before, `${args.join(' ')} left the files as they were`);
      t.false(await isMounted(dir), `${args.join(' ')} left no mount`);
    }
    // Mounting elsewhere is refused the same way, and leaves the mountpoint empty.
    const mnt = mkdir(s.dir, 'mnt');
    t.teardown(() => forceUnmount(s, mnt));
    fails(t, await replfs(s, ['mount', dir, mnt]), 'damaged', 'replfs mount', message);
    t.false(await isMounted(mnt));
    t.deepEqual(fs.readdirSync(mnt), []);
    t.deepEqual(await describeTree(dir), before);
    t.true(fs.existsSync(path.join(dir, '.replfs')), 'the damaged state is left for repair, not removed');
  });
}

cli('status and journal of a volume without .replfs/db do not create one', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  fs.rmSync(path.join(dir, '.replfs', 'db'), { recursive: true });
  const before = stateOf(dir);
  for (const cmd of ['status', 'journal']) {
    fails(t, await replfs(s, [cmd, dir]), 'damaged', `replfs ${cmd}`, 'the volume database is missing');
    t.deepEqual(stateOf(dir), before, `${cmd} is read-only: it must not create .replfs/db`);
  }
});

cli('messages about a damaged volume name its real path, not /proc/self/fd', async (t) => {
  const s = scratch(t);
  const noDb = await volume(t, s, 'nodb');
  fs.rmSync(path.join(noDb, '.replfs', 'db'), { recursive: true });
  const noConfig = await volume(t, s, 'noconfig');
  fs.rmSync(path.join(noConfig, '.replfs', 'config.json'));
  for (const dir of [noDb, noConfig]) {
    const r = await replfs(s, ['status', dir]);
    t.is(r.code, ExitCode.damaged);
    t.true(r.stderr.includes(dir), r.stderr);
    t.false(r.stderr.includes('/proc/self/fd'), r.stderr);
  }
});

// ---------------------------------------------------------------- not mounted, not protected

cli('unmount of something that is not mounted: exit 3', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const plain = mkdir(s.dir, 'plain');
  const missing = path.join(s.dir, 'nope');
  const before = await picture(dir);
  for (const target of [dir, plain, missing]) {
    fails(t, await replfs(s, ['unmount', target]), 'notFound', 'replfs unmount', `${target} is not a mounted replfs volume`);
  }
  t.deepEqual(await picture(dir), before);
});

cli('status and journal outside any volume: exit 3', async (t) => {
  const s = scratch(t);
  const plain = populate(mkdir(s.dir, 'plain'));
  const before = await picture(plain);
  for (const cmd of ['status', 'journal']) {
    for (const target of [plain, path.join(plain, 'sub')]) {
      const r = await replfs(s, [cmd, target]);
      fails(t, r, 'notFound', `replfs ${cmd}`, `${target} is not inside a protected directory`);
      t.true(r.stderr.includes('replfs init'), 'the hint says how to make one');
    }
    // The default path is the current directory.
    fails(t, await replfs(s, [cmd], { cwd: plain }), 'notFound', `replfs ${cmd}`, `${plain} is not inside a protected directory`);
    fails(t, await replfs(s, [cmd, '--json'], { cwd: plain }), 'notFound', `replfs ${cmd}`, 'is not inside a protected directory');
  }
  t.deepEqual(await picture(plain), before);
});

cli('status and journal of a path that does not exist: exit 3', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const before = await picture(dir);
  for (const cmd of ['status', 'journal']) {
    for (const target of [path.join(s.dir, 'nope'), path.join(dir, 'nope')]) {
      fails(t, await replfs(s, [cmd, target]), 'notFound', `replfs ${cmd}`, `${target} does not exist`);
    }
  }
  t.deepEqual(await picture(dir), before);
});

// ---------------------------------------------------------------- --json

const STATUS_FIELDS: Record<string, string> = {
  root: 'string', volumeId: 'string', formatVersion: 'number', blockSize: 'number', epoch: 'number',
  mounted: 'boolean', mountpoint: 'string|null', pid: 'number|null', journal: 'object', files: 'number',
  lastCleanShutdown: 'boolean', durability: 'string', operations: 'object',
};
const STATUS_JOURNAL_FIELDS = ['bytes', 'dirtyBytes', 'dirtyFiles', 'entries'];
const JOURNAL_FIELDS: Record<string, string> = {
  formatVersion: 'number', epoch: 'number', blockSize: 'number', since: 'string', files: 'array', totals: 'object',
};
const FILE_FIELDS: Record<string, string> = {
  id: 'number', type: 'string', path: 'string', paths: 'array', kinds: 'array', extents: 'array',
  dirtyBytes: 'number', size: 'number', unknown: 'string|null',
};
const FILE_TYPES = ['file', 'dir', 'symlink', 'fifo', 'socket', 'chardev', 'blockdev'];
const UNKNOWN_REASONS = ['offline-change', 'created-offline', 'overflow', 'inconsistent'];

function typeOf(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

/** The object has exactly the documented fields, each of the documented type. */
function hasFields(t: ExecutionContext, obj: Record<string, unknown>, fields: Record<string, string>, what: string): void {
  t.deepEqual(Object.keys(obj).sort(), Object.keys(fields).sort(), `${what}: fields (a new one must be documented in docs/cli.md)`);
  for (const [k, type] of Object.entries(fields)) t.true(type.split('|').includes(typeOf(obj[k])), `${what}.${k} is ${type}, got ${typeOf(obj[k])}`);
}

function checkStatus(t: ExecutionContext, out: string, dir: string, mounted: boolean): Record<string, unknown> {
  const s = JSON.parse(out) as Record<string, unknown>;
  hasFields(t, s, STATUS_FIELDS, 'status');
  const j = s.journal as Record<string, unknown>;
  t.deepEqual(Object.keys(j).sort(), STATUS_JOURNAL_FIELDS);
  for (const k of STATUS_JOURNAL_FIELDS) t.true(Number.isInteger(j[k]) && (j[k] as number) >= 0, `journal.${k}`);
  t.is(s.root, dir);
  t.regex(s.volumeId as string, /^[0-9a-f-]{36}$/);
  t.is(s.formatVersion, 2);
  t.is(s.blockSize, 65536);
  t.true(Number.isInteger(s.epoch) && (s.epoch as number) >= 1);
  t.is(s.mounted, mounted);
  t.is(s.mountpoint, mounted ? dir : null);
  t.is(typeOf(s.pid), mounted ? 'number' : 'null');
  t.true(['default', 'strict'].includes(s.durability as string));
  return s;
}

function checkJournal(t: ExecutionContext, out: string): { files: Array<Record<string, unknown>>; totals: Record<string, number> } {
  const r = JSON.parse(out) as Record<string, unknown>;
  hasFields(t, r, JOURNAL_FIELDS, 'journal');
  t.is(r.formatVersion, 2);
  t.false(Number.isNaN(Date.parse(r.since as string)), 'since is a timestamp');
  const totals = r.totals as Record<string, number>;
  t.deepEqual(Object.keys(totals).sort(), ['dirtyBytes', 'files']);
  const files = r.files as Array<Record<string, unknown>>;
  t.is(totals.files, files.length);
  t.is(totals.dirtyBytes, files.reduce((n, f) => n + (f.dirtyBytes as number), 0));
  for (const f of files) {
    hasFields(t, f, FILE_FIELDS, `journal file ${String(f.path)}`);
    t.true(FILE_TYPES.includes(f.type as string), `type ${String(f.type)}`);
    for (const k of f.kinds as string[]) t.true(k in ChangeKind, `kind ${k}`);
    t.true(f.unknown === null || UNKNOWN_REASONS.includes(f.unknown as string), `unknown ${String(f.unknown)}`);
    for (const e of f.extents as Array<Record<string, unknown>>) t.deepEqual(Object.keys(e).sort(), ['length', 'offset']);
  }
  return { files, totals };
}

cli('status --json and journal --json of a volume that is not mounted', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const st = await replfs(s, ['status', dir, '--json']);
  ok(t, st);
  t.is(st.stderr, '');
  const status = checkStatus(t, st.stdout, dir, false);
  t.is(status.lastCleanShutdown, true);
  t.is(status.files, 7, 'every object: the root, two directories, three files and a symlink');
  const j = await replfs(s, ['journal', dir, '--json']);
  ok(t, j);
  t.is(j.stderr, '');
  const report = checkJournal(t, j.stdout);
  t.deepEqual(report.files, [], 'nothing changed yet');
  // From inside the volume, and as the default path, the answer is the same.
  const inner = await replfs(s, ['status', '--json'], { cwd: path.join(dir, 'sub') });
  ok(t, inner);
  const sameButSize = (text: string) => {
    const v = JSON.parse(text) as { journal: { bytes?: number }; operations: { now?: number } };
    delete v.journal.bytes;
    delete v.operations.now;
    return v;
  };
  t.deepEqual(sameButSize(inner.stdout), sameButSize(st.stdout));
});

cli('status --json and journal --json of a mounted volume with changes', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  fs.appendFileSync(path.join(dir, 'a.txt'), 'changed while unmounted\n');
  await mountVolume(t, s, dir);
  fs.writeFileSync(path.join(dir, 'new.txt'), 'new\n');
  fs.renameSync(path.join(dir, 'sub', 'deeper', 'c.txt'), path.join(dir, 'sub', 'c-moved.txt'));
  fs.unlinkSync(path.join(dir, 'link'));
  const st = await replfs(s, ['status', dir, '--json']);
  ok(t, st);
  const status = checkStatus(t, st.stdout, dir, true);
  t.true((status.pid as number) > 0);
  const j = await replfs(s, ['journal', dir, '--json']);
  ok(t, j);
  const report = checkJournal(t, j.stdout);
  const byPath = new Map(report.files.map((f) => [f.path as string, f]));
  t.is(byPath.get('a.txt')?.unknown, 'offline-change');
  t.true((byPath.get('new.txt')?.kinds as string[]).includes('created'));
  t.deepEqual(byPath.get('new.txt')?.extents, [{ offset: 0, length: 4 }]);
  t.true((byPath.get('sub/c-moved.txt')?.kinds as string[]).includes('renamed'));
  t.true(report.files.some((f) => (f.kinds as string[]).includes('unlinked') || (f.kinds as string[]).includes('deleted')), 'the symlink removal is journaled');
  const sj = status.journal as Record<string, number>;
  t.is(sj.dirtyFiles, report.totals.files);
  t.is(sj.dirtyBytes, report.totals.dirtyBytes);
  ok(t, await replfs(s, ['unmount', dir]));
});
