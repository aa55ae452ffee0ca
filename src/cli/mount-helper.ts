// mount.replfs: the helper mount(8) runs for `mount -t replfs` and for fstab lines of type
// replfs, as `mount.replfs <source> <dir> [-sfnv] [-N ns] [-o options]`. It turns that into
// `replfs mount`: <source> is the protected directory, <dir> the mountpoint (the same path
// for a mount in place). The option mapping and the exit codes are documented in
// examples/systemd/README.md ("fstab").
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ExitCode, ReplfsError } from '../errors/index.js';
import { USER_OPTIONS, parseMountOptions } from './mount-options.js';

/** The exit codes of a mount helper, as mount(8) defines them ("EXIT STATUS"). */
export const HelperExit = { ok: 0, usage: 1, failed: 32 } as const;

/**
 * Options that mount(8), fstab or systemd act on, or that say what every replfs mount is
 * anyway (exec, nosuid, nodev): accepted and ignored. mount(8) adds `rw` (or `ro`) itself.
 */
const IGNORED = new Set(['defaults', 'rw', 'auto', 'noauto', 'nofail', '_netdev', 'user', 'users', 'nouser', 'owner', 'group', 'exec', 'nosuid', 'nodev']);
const IGNORED_PREFIXES = ['x-', 'comment=', 'user='];

/** Options replfs cannot honour: refused (dropped only with -s), never silently ignored. */
const UNSUPPORTED: Record<string, string> = {
  noexec: 'a replfs mount always allows executing files (add exec after user or users, which imply noexec)',
  suid: 'a replfs mount is always nosuid',
  dev: 'a replfs mount is always nodev',
};

export class HelperUsageError extends Error {
  readonly hint: string | undefined;
  constructor(message: string, hint?: string) {
    super(message);
    this.name = 'HelperUsageError';
    this.hint = hint;
  }
}

export interface HelperPlan {
  /** The arguments of `replfs`, starting with `mount`. */
  args: string[];
  /** -f: check everything, mount nothing. */
  fake: boolean;
  /** -v: say what is run. */
  verbose: boolean;
  /** Options accepted and ignored. */
  ignored: string[];
  /** Options refused but dropped because of -s. */
  dropped: string[];
}

export const USAGE = [
  'Usage: mount.replfs <dir> <mountpoint> [-sfnv] [-o options]',
  '',
  'The mount(8) helper for file systems of type replfs: runs replfs mount <dir> [<mountpoint>].',
  '<mountpoint> equal to <dir> mounts it in place.',
  '',
  'Options (-o, comma separated):',
  '  config=FILE    take the policy from FILE (replfs mount --config FILE; an absolute path)',
  '  replica        mount a replica, read-only (replfs mount --read-only)',
  '  ro, kernel_cache, attr_timeout=S, entry_timeout=S, max_readahead=N, allow_root, snapdir=hidden|visible,',
  '  debug, allow_other, default_permissions: passed to replfs mount -o (see replfs mount --help)',
  '  defaults, rw, auto, noauto, nofail, _netdev, user, users, nouser, owner, group,',
  '  user=NAME, exec, nosuid, nodev, x-*, comment=*: ignored (mount(8), fstab and systemd use them)',
  '',
  '-f checks the options and mounts nothing; -v says what it runs; -n is accepted; -s drops',
  'unknown options with a warning instead of refusing them.',
  'Exit codes: 0 mounted, 1 incorrect invocation (or replfs exit 2 or 8), 32 mount failure.',
].join('\n') + '\n';

/** Turns mount(8)'s arguments into those of `replfs mount`; throws HelperUsageError. */
export function planMount(argv: string[], warn: (line: string) => void = () => undefined): HelperPlan {
  const positionals: string[] = [];
  const optionLists: string[] = [];
  let fake = false;
  let verbose = false;
  let sloppy = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-o' || a === '-t' || a === '-N') {
      const value = argv[++i];
      if (value === undefined) throw new HelperUsageError(`${a} needs a value`);
      if (a === '-o') optionLists.push(value);
      else if (a === '-t') checkType(value);
      else throw new HelperUsageError('-N (mount in another namespace) is not supported', 'run mount in that namespace instead: nsenter --mount=NS mount ...');
    } else if (/^-o./.test(a)) {
      optionLists.push(a.slice(2));
    } else if (/^-t./.test(a)) {
      checkType(a.slice(2));
    } else if (/^-[sfnv]+$/.test(a)) {
      for (const flag of a.slice(1)) {
        if (flag === 'f') fake = true;
        else if (flag === 'v') verbose = true;
        else if (flag === 's') sloppy = true;
        // -n: do not write /etc/mtab. replfs writes none; nothing to do.
      }
    } else if (a.startsWith('-') && a !== '-') {
      throw new HelperUsageError(`unknown option ${a}`, 'mount.replfs takes <dir> <mountpoint> [-sfnv] [-o options]');
    } else {
      positionals.push(a);
    }
  }
  if (positionals.length !== 2) {
    throw new HelperUsageError(positionals.length < 2 ? 'missing argument: mount.replfs needs <dir> and <mountpoint>' : `unexpected argument ${JSON.stringify(positionals[2])}`,
      'mount.replfs <dir> <mountpoint> [-sfnv] [-o options]; <mountpoint> equal to <dir> mounts in place');
  }
  const [source, target] = positionals as [string, string];

  let config: string | null = null;
  let replica = false;
  const passed: string[] = [];
  const ignored: string[] = [];
  const dropped: string[] = [];
  const refuse = (item: string, message: string, hint?: string) => {
    if (!sloppy) throw new HelperUsageError(message, hint);
    warn(`mount.replfs: warning: ignoring ${JSON.stringify(item)} (-s): ${message}`);
    dropped.push(item);
  };
  for (const item of optionLists.flatMap((l) => l.split(',')).filter(Boolean)) {
    const eq = item.indexOf('=');
    const name = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? undefined : item.slice(eq + 1);
    if (IGNORED.has(item) || IGNORED_PREFIXES.some((p) => item.startsWith(p))) {
      ignored.push(item);
    } else if (name === 'config') {
      if (config !== null) throw new HelperUsageError('option config= is given twice');
      if (!value || !path.isAbsolute(value)) throw new HelperUsageError(`option config= needs an absolute path, got ${JSON.stringify(value ?? '')}`, 'as in config=/etc/replfs/data.json');
      config = value;
    } else if (name === 'replica') {
      if (value !== undefined) throw new HelperUsageError('option replica takes no value');
      replica = true;
    } else if (UNSUPPORTED[item] !== undefined) {
      refuse(item, `option ${item} is not supported: ${UNSUPPORTED[item]}`);
    } else if (USER_OPTIONS[name] !== undefined) {
      passed.push(item);
    } else {
      refuse(item, `unknown option ${JSON.stringify(name)}`, `replfs takes: config=FILE, replica, ${Object.keys(USER_OPTIONS).join(', ')}; see mount.replfs --help`);
    }
  }
  // The options replfs mount takes are checked as it checks them (values, replica rules).
  try {
    parseMountOptions(passed, replica);
  } catch (err) {
    if (err instanceof ReplfsError) throw new HelperUsageError(err.message, err.hint);
    throw err;
  }

  const dir = path.resolve(source);
  const mountpoint = path.resolve(target);
  const inPlace = dir === mountpoint || realpath(dir) === realpath(mountpoint);
  const args = [
    'mount', dir, ...(inPlace ? [] : [mountpoint]),
    ...(replica ? ['--read-only'] : []),
    ...(config !== null ? ['--config', config] : []),
    ...(passed.length > 0 ? ['-o', passed.join(',')] : []),
  ];
  return { args, fake, verbose, ignored, dropped };
}

function checkType(type: string): void {
  if (type !== 'replfs') throw new HelperUsageError(`mount.replfs mounts file systems of type replfs, not ${JSON.stringify(type)}`);
}

function realpath(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return p;
  }
}

/** The exit code of the helper for an exit code of `replfs mount`. */
export function helperExit(replfsExit: number | null): number {
  if (replfsExit === ExitCode.ok) return HelperExit.ok;
  if (replfsExit === ExitCode.usage || replfsExit === ExitCode.permission) return HelperExit.usage;
  return HelperExit.failed;
}

const REPLFS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../src/cli/replfs.mjs');

/** The helper itself: plans, then runs `replfs mount` with the same node. */
export function helperMain(argv: string[]): number {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(USAGE);
    return HelperExit.ok;
  }
  let plan: HelperPlan;
  try {
    plan = planMount(argv, (line) => process.stderr.write(line + '\n'));
  } catch (err) {
    if (!(err instanceof HelperUsageError)) throw err;
    process.stderr.write(`mount.replfs: ${err.message}\n${err.hint ? `  hint: ${err.hint}\n` : ''}`);
    return HelperExit.usage;
  }
  if (plan.verbose) {
    process.stdout.write(`mount.replfs: ${plan.fake ? 'would run' : 'running'}: replfs ${plan.args.map(quote).join(' ')}\n`);
    if (plan.ignored.length > 0) process.stdout.write(`mount.replfs: ignored: ${plan.ignored.join(',')}\n`);
  }
  if (plan.fake) return HelperExit.ok;
  const r = spawnSync(process.execPath, [REPLFS, ...plan.args], { stdio: ['ignore', plan.verbose ? 'inherit' : 'pipe', 'inherit'] });
  if (r.error) {
    process.stderr.write(`mount.replfs: could not run replfs: ${r.error.message}\n`);
    return HelperExit.failed;
  }
  return helperExit(r.status);
}

function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}
