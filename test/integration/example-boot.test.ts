// examples/systemd and examples/invalid, for real: the mount helper mount.replfs run with
// mount(8)'s arguments (and through mount(8) itself, as root), the Exec lines of the
// systemd units run against scratch volumes the way systemd would run them, the units
// through `systemd-analyze verify`, the fstab lines through systemd's fstab generator,
// and every policy file shipped through `replfs config --check`.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import {
  ROOT, scratch, replfs, run, initVolume, forceUnmount, isMounted, waitFor, alive, stateOf,
  type Scratch, type RunResult,
} from '../helpers/env.js';
import { freePort, replfsOnPath, withPath } from '../helpers/examples.js';
import { background, startServer, tokenFile } from '../helpers/server.js';
import {
  parseUnit, value, values, escapePath, specifiers, splitExec, expandEnvironment, parseEnvironmentFile, type UnitEntry,
} from '../helpers/unitfile.js';
import { ExitCode } from '../../src/errors/index.js';
import type { VolumeStatus } from '../../src/core/types.js';

const EXAMPLES = path.join(ROOT, 'examples');
const SYSTEMD = path.join(EXAMPLES, 'systemd');
const INVALID = path.join(EXAMPLES, 'invalid');
const HELPER = path.join(ROOT, 'src/cli/mount.replfs.mjs');
/** Where the units expect replfs (npm install -g on Debian). */
const INSTALLED_REPLFS = '/usr/local/bin/replfs';
const FSTAB_GENERATOR = '/lib/systemd/system-generators/systemd-fstab-generator';

type Status = VolumeStatus & { operations?: { policy: string } };

async function status(t: ExecutionContext, s: Scratch, p: string): Promise<Status> {
  const r = await replfs(s, ['status', p, '--json']);
  t.is(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Status;
}

/** A protected directory with a file, not mounted. */
async function volume(t: ExecutionContext, s: Scratch, name = 'data'): Promise<string> {
  const dir = path.join(s.dir, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'hello.txt'), `hello from ${name}\n`);
  await initVolume(t, s, dir);
  return dir;
}

function mkdir(...parts: string[]): string {
  const p = path.join(...parts);
  fs.mkdirSync(p, { recursive: true });
  return p;
}

/** A policy file of the scratch: a snapshot schedule far enough not to fire, a retention. */
function policyFile(s: Scratch, name = 'policy.json'): string {
  const file = path.join(s.dir, name);
  fs.writeFileSync(file, JSON.stringify({ snapshots: { schedule: { every: '6h' }, label: 'from-fstab' }, retention: { 'keep-last': 5 } }, null, 2));
  return file;
}

/** Runs the helper as mount(8) would: the executable itself, with the scratch's environment. */
function helper(s: Scratch, args: string[]): Promise<RunResult> {
  return run(HELPER, args, { env: s.env, cwd: s.dir });
}

/** Unmounts `mnt` in teardown if a test left it mounted. */
function unmountLater(t: ExecutionContext, s: Scratch, mnt: string): void {
  t.teardown(() => forceUnmount(s, mnt));
}

async function which(cmd: string): Promise<string | null> {
  const r = await run('/bin/sh', ['-c', `command -v ${cmd}`]);
  return r.code === 0 ? r.stdout.trim() : null;
}

// ---------------------------------------------------------------- policy files

function jsonFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return p === INVALID ? [] : jsonFiles(p);
    return e.name.endsWith('.json') ? [p] : [];
  });
}

test('every policy file under examples/ passes replfs config --check', async (t) => {
  const s = scratch(t);
  const files = jsonFiles(EXAMPLES);
  t.true(files.length >= 2, `policy files found: ${files.join(', ')}`);
  for (const file of files) {
    const r = await replfs(s, ['config', file, '--check']);
    t.is(r.code, 0, `${file}: ${r.stderr}`);
    t.is(r.stdout, `${file}: valid\n`);
  }
});

test('every config under examples/invalid/ fails replfs config --check with exit 2 and the message it expects', async (t) => {
  const s = scratch(t);
  const names = fs.readdirSync(INVALID);
  const configs = names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -'.json'.length)).sort();
  const expected = names.filter((n) => n.endsWith('.expected')).map((n) => n.slice(0, -'.expected'.length)).sort();
  t.deepEqual(configs, expected, 'each <name>.json has a <name>.expected, and the reverse');
  t.true(configs.length >= 6);
  for (const name of configs) {
    const file = path.join(INVALID, `${name}.json`);
    const message = fs.readFileSync(path.join(INVALID, `${name}.expected`), 'utf8').replace(/\n$/, '');
    t.false(message.includes('\n'), `${name}.expected is one line`);
    const r = await replfs(s, ['config', file, '--check']);
    t.is(r.code, ExitCode.usage, `${name}: exit 2; stderr: ${r.stderr}`);
    t.is(r.stdout, '', `${name}: nothing on stdout`);
    t.true(r.stderr.startsWith(`replfs config: ${file}: ${message}`), `${name}: stderr starts with the expected message\n  expected: replfs config: ${file}: ${message}\n  got:      ${r.stderr}`);
  }
  // replfs mount --config refuses each the same way, and mounts nothing.
  const dir = await volume(t, s);
  unmountLater(t, s, dir);
  for (const name of configs) {
    const file = path.join(INVALID, `${name}.json`);
    const message = fs.readFileSync(path.join(INVALID, `${name}.expected`), 'utf8').replace(/\n$/, '');
    const r = await replfs(s, ['mount', dir, '--config', file]);
    t.is(r.code, ExitCode.usage, `mount --config ${name}: ${r.stderr}`);
    t.true(r.stderr.startsWith(`replfs mount: ${file}: ${message}`), `mount --config ${name}: ${r.stderr}`);
    t.false(await isMounted(dir));
  }
});

// ---------------------------------------------------------------- mount.replfs

test('mount.replfs mounts in place with config= as the policy, ignoring what mount(8) and systemd use', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const policy = policyFile(s);
  unmountLater(t, s, dir);
  const r = await helper(s, [dir, dir, '-o', `rw,config=${policy},nofail,_netdev,x-systemd.requires=network-online.target,x-systemd.after=network-online.target,comment=boot,exec,nosuid,nodev,users,user=root,defaults,auto`]);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, '', 'quiet without -v, as mount(8) is');
  t.is(r.stderr, '');
  t.true(await isMounted(dir));
  const st = await status(t, s, dir);
  t.true(st.mounted);
  t.is(st.mountpoint, dir, 'mounted in place');
  t.is(st.operations?.policy, policy, 'the daemon takes its policy from the config= file');
  const shown = JSON.parse((await replfs(s, ['config', dir, '--json'])).stdout) as { snapshots: { schedule: unknown; label: string } };
  t.deepEqual(shown.snapshots.schedule, { every: '6h' });
  t.is(shown.snapshots.label, 'from-fstab');
  t.is(fs.readFileSync(path.join(dir, 'hello.txt'), 'utf8'), 'hello from data\n');

  const again = await helper(s, [dir, dir]);
  t.is(again.code, 32, 'already mounted is a mount failure');
  t.regex(again.stderr, /^replfs mount: .* is already mounted/);
  t.is((await status(t, s, dir)).pid, st.pid, 'the mount is undisturbed');

  const u = await replfs(s, ['unmount', dir]);
  t.is(u.code, 0, u.stderr);
  t.false(await isMounted(dir));
});

test('mount.replfs mounts at another mountpoint, passes -o options on, and -v says what it runs', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const mnt = mkdir(s.dir, 'mnt');
  unmountLater(t, s, mnt);
  const r = await helper(s, [dir, mnt, '-v', '-o', 'ro,snapdir=visible,attr_timeout=2']);
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.startsWith(`mount.replfs: running: replfs mount ${dir} ${mnt} -o ro,snapdir=visible,attr_timeout=2\n`), r.stdout);
  t.regex(r.stdout, /^mounted .* at .*mnt \(daemon pid \d+/m, 'the output of replfs mount follows with -v');
  t.true((await fsp.readdir(mnt)).includes('.snapshots'), 'snapdir=visible reached the mount');
  const err = await fsp.writeFile(path.join(mnt, 'new.txt'), 'x').then(() => null, (e: NodeJS.ErrnoException) => e.code);
  t.is(err, 'EROFS', 'ro reached the mount');
  t.is((await status(t, s, mnt)).mountpoint, mnt);
  t.is((await replfs(s, ['unmount', mnt])).code, 0);
  t.false(await isMounted(mnt));
});

test('mount.replfs: replica mounts a replica read-only; without it the replica is refused (32)', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const replica = path.join(s.dir, 'replica');
  const sync = await replfs(s, ['sync', dir, replica]);
  t.is(sync.code, 0, sync.stderr);
  const mnt = mkdir(s.dir, 'mnt');
  unmountLater(t, s, mnt);
  unmountLater(t, s, replica);

  const refused = await helper(s, [replica, replica]);
  t.is(refused.code, 32, refused.stderr);
  t.regex(refused.stderr, /^replfs mount: .*is a replica/);
  t.false(await isMounted(replica));

  const withConfig = await helper(s, [replica, replica, '-o', `replica,config=${policyFile(s)}`]);
  t.is(withConfig.code, 1, 'replfs mount says usage (2): incorrect invocation');
  t.regex(withConfig.stderr, /^replfs mount: --config does not go with --read-only/);
  t.false(await isMounted(replica));

  const r = await helper(s, [replica, mnt, '-o', 'replica,rw']);
  t.is(r.code, 0, r.stderr);
  t.is(fs.readFileSync(path.join(mnt, 'hello.txt'), 'utf8'), 'hello from data\n', 'the root shows the newest snapshot');
  const err = await fsp.writeFile(path.join(mnt, 'hello.txt'), 'x').then(() => null, (e: NodeJS.ErrnoException) => e.code);
  t.is(err, 'EROFS');
  t.is((await replfs(s, ['unmount', mnt])).code, 0);
});

test('mount.replfs refuses bad invocations with mount(8)\'s exit codes, and mounts nothing', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  const mnt = mkdir(s.dir, 'mnt');
  const plain = mkdir(s.dir, 'plain');
  unmountLater(t, s, dir);
  unmountLater(t, s, mnt);
  const policy = policyFile(s);
  const cases: Array<[string[], number, RegExp]> = [
    [[dir, dir, '-o', 'frobnicate'], 1, /^mount\.replfs: unknown option "frobnicate"\n {2}hint: replfs takes: config=FILE, replica, ro, /],
    [[dir, dir, '-o', 'rw,frob=1,nofail'], 1, /^mount\.replfs: unknown option "frob"/],
    [[dir, dir, '-o', 'noexec'], 1, /^mount\.replfs: option noexec is not supported: .*add exec after user or users/],
    [[dir, dir, '-o', 'user,noexec,nosuid,nodev'], 1, /option noexec is not supported/],
    [[dir, dir, '-o', 'suid'], 1, /^mount\.replfs: option suid is not supported: a replfs mount is always nosuid/],
    [[dir, dir, '-o', 'dev'], 1, /option dev is not supported/],
    [[dir, dir, '-o', 'attr_timeout=x'], 1, /^mount\.replfs: mount option attr_timeout needs a number/],
    [[dir, dir, '-o', 'snapdir=visible=x'], 1, /^mount\.replfs: mount option snapdir is hidden or visible, got "visible=x"/],
    [[dir, dir, '-o', 'ro=1'], 1, /^mount\.replfs: mount option ro takes no value/],
    [[dir, dir, '-o', 'config=policy.json'], 1, /^mount\.replfs: option config= needs an absolute path, got "policy\.json"/],
    [[dir, dir, '-o', 'config='], 1, /option config= needs an absolute path, got ""/],
    [[dir, dir, '-o', `config=${policy},config=${policy}`], 1, /option config= is given twice/],
    [[dir, dir, '-o', 'replica=yes'], 1, /option replica takes no value/],
    [[dir, dir, '-o', 'replica,kernel_cache'], 1, /kernel_cache cannot be used with --read-only/],
    [[dir, dir, '-t', 'nfs'], 1, /^mount\.replfs: mount\.replfs mounts file systems of type replfs, not "nfs"/],
    [[dir, dir, '-N', '/proc/1/ns/mnt'], 1, /^mount\.replfs: -N \(mount in another namespace\) is not supported/],
    [[dir, dir, '-x'], 1, /^mount\.replfs: unknown option -x/],
    [[dir, dir, '-o'], 1, /^mount\.replfs: -o needs a value/],
    [[dir], 1, /^mount\.replfs: missing argument/],
    [[dir, dir, mnt], 1, /^mount\.replfs: unexpected argument/],
    // replfs mount's own refusals, mapped: usage (2) and permission (8) to 1, the rest to 32.
    [[dir, dir, '-o', `config=${path.join(s.dir, 'missing.json')}`], 32, /^replfs mount: the policy file .*missing\.json does not exist/],
    [[plain, plain], 32, /^replfs mount: .*plain is not a protected directory/],
    [[path.join(s.dir, 'nowhere'), path.join(s.dir, 'nowhere')], 32, /^replfs mount: .*nowhere does not exist/],
    [[dir, path.join(dir, 'inside')], 32, /^replfs mount: mountpoint .*inside does not exist/],
  ];
  fs.writeFileSync(path.join(mnt, 'occupied'), '');
  cases.push([[dir, mnt], 32, /^replfs mount: mountpoint .*mnt is not empty/]);
  const before = stateOf(dir);
  for (const [args, code, message] of cases) {
    const r = await helper(s, args);
    const what = `mount.replfs ${args.map((a) => path.relative(s.dir, a) || a).join(' ')}`;
    t.is(r.code, code, `${what}: exit ${code}; stderr: ${r.stderr}`);
    t.is(r.stdout, '', `${what}: nothing on stdout`);
    t.regex(r.stderr, message, what);
    t.false(await isMounted(dir), `${what}: nothing mounted`);
    t.false(await isMounted(mnt), `${what}: nothing mounted`);
  }
  t.deepEqual(stateOf(dir), before, 'the volume\'s state is untouched');

  // An invalid policy file: replfs mount says usage (2), the helper 1. (replfs checks the
  // policy in the daemon, once it has opened the volume, so its state is not compared here.)
  const r = await helper(s, [dir, dir, '-o', `config=${path.join(INVALID, 'wrong-type.json')}`]);
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, /^replfs mount: .*wrong-type\.json: snapshots\.quiesce: must be true or false/);
  t.false(await isMounted(dir));
});

test('mount.replfs -f checks and mounts nothing; -s drops refused options with a warning; --help', async (t) => {
  const s = scratch(t);
  const dir = await volume(t, s);
  unmountLater(t, s, dir);
  const policy = policyFile(s);
  const fake = await helper(s, [dir, dir, '-fnv', '-o', `rw,config=${policy},snapdir=visible,nofail`]);
  t.is(fake.code, 0, fake.stderr);
  t.is(fake.stdout, `mount.replfs: would run: replfs mount ${dir} --config ${policy} -o snapdir=visible\nmount.replfs: ignored: rw,nofail\n`);
  t.false(await isMounted(dir));
  const fakeBad = await helper(s, [dir, dir, '-f', '-o', 'frobnicate']);
  t.is(fakeBad.code, 1, '-f still checks the options');

  const sloppy = await helper(s, [dir, dir, '-s', '-o', 'frobnicate,noexec,snapdir=visible']);
  t.is(sloppy.code, 0, sloppy.stderr);
  t.regex(sloppy.stderr, /^mount\.replfs: warning: ignoring "frobnicate" \(-s\): unknown option "frobnicate"$/m);
  t.regex(sloppy.stderr, /^mount\.replfs: warning: ignoring "noexec" \(-s\): option noexec is not supported/m);
  t.true(await isMounted(dir));
  t.true((await fsp.readdir(dir)).includes('.snapshots'), 'the options it knows still apply');
  t.is((await replfs(s, ['unmount', dir])).code, 0);

  const help = await helper(s, ['--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /^Usage: mount\.replfs <dir> <mountpoint> \[-sfnv\] \[-o options\]/);
});

// ---------------------------------------------------------------- mount(8) itself

test('mount(8): mount -t replfs, -o config=, an fstab line, and umount, through /sbin/mount.replfs', async (t) => {
  const link = '/sbin/mount.replfs';
  if (process.getuid?.() !== 0) {
    t.log('not root: mount(8) is not run (the helper itself is tested above)');
    t.pass();
    return;
  }
  if (fs.existsSync(link) || fs.lstatSync(link, { throwIfNoEntry: false })) {
    t.log(`${link} exists already: left alone, mount(8) is not run`);
    t.pass();
    return;
  }
  // Removed whatever happens, and only if it is still the link made here.
  t.teardown(() => {
    const st = fs.lstatSync(link, { throwIfNoEntry: false });
    if (st?.isSymbolicLink() && fs.readlinkSync(link) === HELPER) fs.unlinkSync(link);
  });
  try {
    fs.symlinkSync(HELPER, link);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    t.log(`${link} appeared meanwhile (another test run?): left alone, mount(8) is not run`);
    t.pass();
    return;
  }

  const s = scratch(t);
  const dir = await volume(t, s);
  const mnt = mkdir(s.dir, 'mnt');
  const policy = policyFile(s);
  unmountLater(t, s, dir);
  unmountLater(t, s, mnt);
  const mount = (args: string[]) => run('mount', args, { env: s.env, cwd: s.dir });

  // In place, with the volume's own policy; then umount, and the daemon ends cleanly.
  let r = await mount(['-t', 'replfs', dir, dir]);
  t.is(r.code, 0, r.stderr);
  let st = await status(t, s, dir);
  t.true(st.mounted);
  t.is(st.mountpoint, dir);
  t.is(st.operations?.policy, path.join(dir, '.replfs', 'config.json'));
  const pid = st.pid!;
  r = await run('umount', [dir]);
  t.is(r.code, 0, r.stderr);
  await waitFor(() => !alive(pid), 20_000, 'the daemon to exit after umount');
  st = await status(t, s, dir);
  t.false(st.mounted);
  t.true(st.lastCleanShutdown, 'umount ends the daemon cleanly (journal flushed)');

  // At another mountpoint, with config= and the options fstab and systemd use.
  r = await mount(['-t', 'replfs', '-o', `config=${policy},nofail,_netdev,x-systemd.requires=network-online.target`, dir, mnt]);
  t.is(r.code, 0, r.stderr);
  st = await status(t, s, mnt);
  t.is(st.mountpoint, mnt);
  t.is(st.operations?.policy, policy);
  r = await run('umount', [mnt]);
  t.is(r.code, 0, r.stderr);
  await waitFor(async () => !(await status(t, s, dir)).mounted, 20_000, 'the daemon to exit');

  // The first line of examples/systemd/fstab, pointed at the scratch volume, by mountpoint alone.
  const line = fs.readFileSync(path.join(SYSTEMD, 'fstab'), 'utf8').split('\n').find((l) => l.startsWith('/'))!;
  const fstab = path.join(s.dir, 'fstab');
  fs.writeFileSync(fstab, line.replaceAll('/srv/data', dir).replaceAll('/etc/replfs/data.json', policy) + '\n');
  r = await mount(['--fstab', fstab, dir]);
  t.is(r.code, 0, r.stderr);
  st = await status(t, s, dir);
  t.is(st.mountpoint, dir);
  t.is(st.operations?.policy, policy);
  r = await run('umount', [dir]);
  t.is(r.code, 0, r.stderr);
  await waitFor(async () => !(await status(t, s, dir)).mounted, 20_000, 'the daemon to exit');

  // Refusals come back through mount(8) with the helper's exit code; -f mounts nothing.
  r = await mount(['-t', 'replfs', '-o', 'frobnicate', dir, dir]);
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, /mount\.replfs: unknown option "frobnicate"/);
  r = await mount(['-t', 'replfs', path.join(s.dir, 'runtime-not-a-volume'), mnt]);
  t.is(r.code, 32, r.stderr);
  r = await mount(['-f', '-t', 'replfs', dir, dir]);
  t.is(r.code, 0, r.stderr);
  t.false(await isMounted(dir));
  t.false(await isMounted(mnt));
});

// ---------------------------------------------------------------- systemd units

interface UnitCopy {
  dir: string;
  /** The instance: the scratch volume's path, escaped. */
  instance: string;
}

/**
 * The units of examples/systemd in a directory of the scratch, with replfs where this test
 * has it and /etc/replfs/ under the scratch; nothing else is changed.
 */
function installUnits(s: Scratch, bin: string, volumeDir: string): UnitCopy {
  const dir = mkdir(s.dir, 'units');
  for (const name of fs.readdirSync(SYSTEMD).filter((n) => /\.(service|timer)$/.test(n))) {
    fs.writeFileSync(path.join(dir, name), localize(fs.readFileSync(path.join(SYSTEMD, name), 'utf8'), s, bin));
  }
  return { dir, instance: escapePath(volumeDir) };
}

function localize(text: string, s: Scratch, bin: string): string {
  return text.replaceAll(INSTALLED_REPLFS, path.join(bin, 'replfs')).replaceAll('/etc/replfs/', `${s.dir}/etc/replfs/`);
}

function unitOf(copy: UnitCopy, template: string): { unit: UnitEntry[]; spec: Record<string, string> } {
  return { unit: parseUnit(fs.readFileSync(path.join(copy.dir, template), 'utf8')), spec: specifiers(template.replace('@.', `@${copy.instance}.`)) };
}

/** The variables of the unit's EnvironmentFile= (a leading "-": it may be missing). */
function unitEnvironment(unit: UnitEntry[], spec: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values(unit, 'Service', 'EnvironmentFile')) {
    const optional = v.startsWith('-');
    const file = splitExec(optional ? v.slice(1) : v, spec).words[0]!;
    if (!fs.existsSync(file) && optional) continue;
    Object.assign(out, parseEnvironmentFile(fs.readFileSync(file, 'utf8')));
  }
  return out;
}

/** One Exec line as systemd would exec it: the words, with specifiers and variables expanded. */
function execWords(line: string, spec: Record<string, string>, env: Record<string, string | undefined>): { ignoreFailure: boolean; argv: string[] } {
  const { prefixes, words } = splitExec(line, spec);
  return { ignoreFailure: prefixes.includes('-'), argv: expandEnvironment(words, env) };
}

test('systemd-analyze verify accepts the units with an instance filled in, and the instance escaping is systemd\'s', async (t) => {
  const s = scratch(t);
  const bin = replfsOnPath(s);
  const dir = path.join(s.dir, 'my-data.d', 'sub dir');
  fs.mkdirSync(dir, { recursive: true });
  const copy = installUnits(s, bin, dir);
  const names = fs.readdirSync(copy.dir).sort();
  t.deepEqual(names, ['replfs-sync@.service', 'replfs-sync@.timer', 'replfs@.service']);
  for (const name of names) parseUnit(fs.readFileSync(path.join(copy.dir, name), 'utf8'));
  if (await which('systemd-escape')) {
    const r = await run('systemd-escape', ['--path', dir]);
    t.is(escapePath(dir), r.stdout.trim(), 'the test escapes as systemd-escape does');
  }
  t.is(specifiers(`replfs@${copy.instance}.service`).f, dir, '%f is the directory again');
  if (!(await which('systemd-analyze'))) {
    t.log('systemd-analyze is not installed: the units were parsed, not verified');
    return;
  }
  const instances = names.map((n) => n.replace('@.', `@${copy.instance}.`));
  const r = await run('systemd-analyze', ['verify', ...instances], { cwd: copy.dir });
  t.is(r.code, 0, `systemd-analyze verify ${instances.join(' ')}:\n${r.stderr}${r.stdout}`);
  t.is(r.stderr, '', 'no warnings');
  // And it does catch mistakes: a unit with an unknown key and a missing program.
  fs.writeFileSync(path.join(copy.dir, 'broken@.service'), '[Service]\nExecStart=/nonexistent/replfs mount %f\nTypo=1\n');
  const bad = await run('systemd-analyze', ['verify', 'broken@x.service'], { cwd: copy.dir });
  t.not(bad.code, 0);
  t.regex(bad.stderr, /Unknown key 'Typo'/);
});

test('replfs@.service: its command lines mount, become ready only once served, reload, and unmount cleanly', async (t) => {
  const s = scratch(t);
  const bin = replfsOnPath(s);
  const dir = await volume(t, s, 'srv-data');
  fs.writeFileSync(path.join(dir, 'app.db'), 'rows\n');
  const copy = installUnits(s, bin, dir);
  const { unit, spec } = unitOf(copy, 'replfs@.service');
  t.is(value(unit, 'Service', 'Type'), 'exec');
  t.is(value(unit, 'Service', 'KillMode'), 'mixed');
  t.deepEqual(values(unit, 'Unit', 'RequiresMountsFor'), ['%f /usr/local']);
  // The example's environment file, and a policy file where it says (under the scratch).
  const etc = mkdir(s.dir, 'etc', 'replfs', 'mount');
  fs.writeFileSync(path.join(etc, `${copy.instance}.env`), localize(fs.readFileSync(path.join(SYSTEMD, 'srv-data.env'), 'utf8'), s, bin));
  const policy = path.join(s.dir, 'etc', 'replfs', 'data.json');
  fs.writeFileSync(policy, JSON.stringify({ snapshots: { schedule: { every: '6h' } } }));
  const env = unitEnvironment(unit, spec);
  t.is(env.REPLFS_MOUNT_OPTIONS, `--config ${policy}`);
  unmountLater(t, s, dir);

  const start = async (): Promise<{ pid: number; main: ReturnType<typeof background> }> => {
    const exec = execWords(value(unit, 'Service', 'ExecStart'), spec, env);
    t.deepEqual(exec.argv.slice(1), ['mount', '--foreground', dir, '--config', policy]);
    const main = background(t, exec.argv[0]!, exec.argv.slice(1), { env: withPath(s, bin, env) });
    const pid = main.child.pid!;
    // ExecStartPost: what keeps the unit "activating" until the mount is served.
    const post = execWords(value(unit, 'Service', 'ExecStartPost'), spec, { ...env, MAINPID: String(pid) });
    const began = Date.now();
    const ready = await run(post.argv[0]!, post.argv.slice(1), { env: withPath(s, bin, { ...env, MAINPID: String(pid) }), timeoutMs: 90_000 });
    t.is(ready.code, 0, `ExecStartPost (${Date.now() - began} ms): ${ready.stderr}\nthe daemon: ${main.stdout()}${main.stderr()}`);
    t.true(await isMounted(dir), 'ready means mounted');
    const st = await status(t, s, dir);
    t.is(st.pid, pid, 'served by the main process');
    t.is(st.operations?.policy, policy, 'with the options of the environment file');
    return { pid, main };
  };
  const stop = (timeoutSeconds?: number) => {
    let line = value(unit, 'Service', 'ExecStop');
    if (timeoutSeconds !== undefined) {
      // Only the wait is shortened, so that the test does not sit through the minute.
      t.true(line.includes('--timeout 60'));
      line = line.replace('--timeout 60', `--timeout ${timeoutSeconds}`);
    }
    const exec = execWords(line, spec, env);
    return run(exec.argv[0]!, exec.argv.slice(1), { env: withPath(s, bin, env), timeoutMs: 120_000 });
  };

  // The readiness wait leaves the volume alone while no daemon holds it: a `replfs status`
  // of an unmounted volume opens it, which could keep the daemon from opening it.
  const idle = background(t, '/bin/sleep', ['60']);
  const before = stateOf(dir);
  const waitLine = execWords(value(unit, 'Service', 'ExecStartPost'), spec, { ...env, MAINPID: String(idle.child.pid) });
  const waited = await run(waitLine.argv[0]!, waitLine.argv.slice(1), { env: withPath(s, bin, { ...env, MAINPID: String(idle.child.pid) }), timeoutMs: 3000 });
  t.not(waited.code, 0, 'still waiting after 3 s');
  t.deepEqual(stateOf(dir), before, 'the volume was not opened meanwhile');
  idle.child.kill();

  // A start, a reload, a stop with nothing open.
  let { pid, main } = await start();
  const reload = execWords(value(unit, 'Service', 'ExecReload'), spec, { ...env, MAINPID: String(pid) });
  t.deepEqual(reload.argv, ['/bin/kill', '-HUP', String(pid)]);
  t.is((await run(reload.argv[0]!, reload.argv.slice(1))).code, 0);
  await waitFor(() => main.stdout().includes(`SIGHUP: policy reloaded from ${policy}`), 10_000, 'the reload to be logged');
  let r = await stop();
  t.is(r.code, 0, r.stderr);
  t.is(await main.exit, 0, 'a stop is a clean exit: no restart');
  t.false(await isMounted(dir));
  t.true((await status(t, s, dir)).lastCleanShutdown);
  t.regex(main.stdout(), /replfs\[\d+\]: mounted .* in place/, 'the daemon logs to stdout: the journal');

  // A stop while an application keeps a file open: ExecStop detaches and waits, gives up
  // (exit 9), and systemd's SIGTERM (KillMode=mixed: to the main process) ends it cleanly.
  ({ pid, main } = await start());
  const fh = await fsp.open(path.join(dir, 'app.db'), 'r');
  t.teardown(() => fh.close().catch(() => undefined));
  r = await stop(2);
  t.is(r.code, ExitCode.timeout, `ExecStop gives up waiting for the open file: ${r.stderr}`);
  t.false(await isMounted(dir), 'detached at once');
  t.true(alive(pid), 'still serving the open file');
  process.kill(pid, 'SIGTERM');
  t.is(await main.exit, 0);
  t.regex(main.stdout(), /SIGTERM again: closing the volume with files still open/);
  // The application's file is cut off: closing it fails (ENOTCONN), as every use of it would.
  await fh.close().catch(() => undefined);
  t.true((await status(t, s, dir)).lastCleanShutdown);

  // `replfs unmount` by hand ends the service cleanly too.
  ({ pid, main } = await start());
  r = await replfs(s, ['unmount', dir]);
  t.is(r.code, 0, r.stderr);
  t.is(await main.exit, 0);
  t.false(alive(pid));
});

test('replfs-sync@.service: its command line syncs through the example environment file; it retries only the transient exit codes', async (t) => {
  const s = scratch(t);
  const bin = replfsOnPath(s);
  const dir = await volume(t, s, 'srv-data');
  const copy = installUnits(s, bin, dir);
  const { unit, spec } = unitOf(copy, 'replfs-sync@.service');
  t.is(value(unit, 'Service', 'Type'), 'oneshot');
  t.true(values(unit, 'Unit', 'After').includes(`replfs@%i.service`), 'after the mount of the same directory');
  // RestartPreventExitStatus= is every exit code but the transient ones (and success).
  const prevented = value(unit, 'Service', 'RestartPreventExitStatus').split(/\s+/).map(Number).sort((a, b) => a - b);
  const transient: number[] = [ExitCode.busy, ExitCode.timeout, ExitCode.unavailable];
  const permanent = Object.values(ExitCode).filter((c) => c !== ExitCode.ok && c !== ExitCode.different && !transient.includes(c)).sort((a, b) => a - b);
  t.deepEqual(prevented, permanent);

  // A server where the example's destination says, on a free port, with the token file where the example has it.
  const port = await freePort();
  const token = tokenFile(s, 'etc/replfs/token');
  const root = mkdir(s.dir, 'replicas');
  await startServer(t, root, ['--token-file', token], `127.0.0.1:${port}`, s.env);
  const etc = mkdir(s.dir, 'etc', 'replfs', 'sync');
  const example = fs.readFileSync(path.join(SYSTEMD, 'srv-data.sync.env'), 'utf8');
  t.true(example.includes('backup.example:7007'));
  fs.writeFileSync(path.join(etc, `${copy.instance}.env`), localize(example, s, bin).replaceAll('backup.example:7007', `127.0.0.1:${port}`));
  const env = unitEnvironment(unit, spec);
  const exec = execWords(value(unit, 'Service', 'ExecStart'), spec, env);
  t.deepEqual(exec.argv.slice(1), ['sync', dir, `replfs://127.0.0.1:${port}/data`, '--token-file', token, '--compress']);
  const r = await run(exec.argv[0]!, exec.argv.slice(1), { env: withPath(s, bin, env) });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^sent \S+ to replfs:\/\/127\.0\.0\.1:\d+\/data \(full copy\)/);
  const listed = JSON.parse((await replfs(s, ['snapshots', path.join(root, 'data'), '--json'])).stdout) as { snapshots: unknown[] };
  t.is(listed.snapshots.length, 1, 'the replica holds the snapshot');
  const timer = parseUnit(fs.readFileSync(path.join(copy.dir, 'replfs-sync@.timer'), 'utf8'));
  t.is(value(timer, 'Timer', 'Persistent'), 'true');
  t.is(value(timer, 'Install', 'WantedBy'), 'timers.target');
});

test('the fstab lines of examples/systemd/fstab: systemd\'s generator makes mount units of them that verify, without an ordering cycle, and the helper takes their options', async (t) => {
  const s = scratch(t);
  const text = fs.readFileSync(path.join(SYSTEMD, 'fstab'), 'utf8');
  const lines = text.split('\n').map((l) => l.replace(/^#(?=\/)/, '')).filter((l) => l.startsWith('/'));
  t.true(lines.length >= 3, 'the example lines, commented or not');
  t.is(text.split('\n').filter((l) => l.startsWith('/')).length, 1, 'one line is in effect, the others are alternatives');
  const dir = await volume(t, s);
  const policy = policyFile(s);
  const haveGenerator = fs.existsSync(FSTAB_GENERATOR);
  if (!haveGenerator) t.log(`${FSTAB_GENERATOR} is not installed: the lines go through the helper only`);
  for (const line of lines) {
    const [what, where, type, options, dump, pass] = line.trim().split(/\s+/) as [string, string, string, string, string, string];
    t.is(type, 'replfs', line);
    t.is(`${dump} ${pass}`, '0 0', `${line}: no dump, no fsck`);
    // The helper takes the options (-f: checked, nothing mounted).
    const src = what === '/srv/data' ? dir : path.join(s.dir, 'somewhere');
    const h = await helper(s, [src, where === what ? src : path.join(s.dir, 'mnt'), '-f', '-o', options.replaceAll('/etc/replfs/data.json', policy)]);
    t.is(h.code, 0, `${line}: ${h.stderr}`);
    if (!haveGenerator) continue;
    const out = mkdir(s.dir, 'gen', String(lines.indexOf(line)));
    const fstab = path.join(out, 'fstab');
    fs.writeFileSync(fstab, line + '\n');
    for (const d of ['normal', 'early', 'late']) mkdir(out, d);
    const g = await run(FSTAB_GENERATOR, [path.join(out, 'normal'), path.join(out, 'early'), path.join(out, 'late')], { env: { ...process.env, SYSTEMD_FSTAB: fstab } });
    t.is(g.code, 0, `${line}: ${g.stderr}`);
    const unitName = `${escapePath(where)}.mount`;
    const unitFile = path.join(out, 'normal', unitName);
    t.true(fs.existsSync(unitFile), `${line}: ${unitName} is made`);
    const unit = parseUnit(fs.readFileSync(unitFile, 'utf8'));
    t.is(value(unit, 'Mount', 'Type'), 'replfs');
    t.is(value(unit, 'Mount', 'What'), what);
    t.is(value(unit, 'Mount', 'Where'), where);
    t.is(value(unit, 'Mount', 'Options'), options);
    const before = values(unit, 'Unit', 'Before').join(' ').split(/\s+/);
    const after = values(unit, 'Unit', 'After').join(' ').split(/\s+/);
    t.false(before.includes('local-fs.target') && after.includes('network-online.target'), `${line}: before local-fs.target and after the network is a cycle`);
    if (await which('systemd-analyze')) {
      const v = await run('systemd-analyze', ['verify', unitName], { cwd: path.join(out, 'normal') });
      t.is(v.code, 0, `${line}: ${v.stderr}`);
    }
  }
});

test('examples/systemd/README.md: each file it lists exists, and its instance name is systemd-escape\'s', (t) => {
  const readme = fs.readFileSync(path.join(SYSTEMD, 'README.md'), 'utf8');
  const start = readme.indexOf('| file | install as |');
  t.true(start > 0, 'the README has the table of files');
  const table = readme.slice(start, readme.indexOf('\n\n', start));
  const listed = [...table.matchAll(/^\| `([^`]+)`(?:, `([^`]+)`)? \|/gm)].flatMap((m) => [m[1]!, m[2]].filter((x): x is string => x !== undefined));
  t.true(listed.length >= 8, listed.join(' '));
  for (const f of listed) t.true(fs.existsSync(path.join(SYSTEMD, f)), `${f} is in examples/systemd`);
  t.is(escapePath('/srv/data'), 'srv-data');
  t.is(escapePath('/srv/my-data'), 'srv-my\\x2ddata');
  t.true(readme.includes('srv-my\\x2ddata'));
});
