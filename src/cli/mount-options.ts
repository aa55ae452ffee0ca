// The options of `replfs mount -o`, apart from the mount itself, so that a program that
// only checks them (the mount(8) helper, mount-helper.ts) does not load FUSE.
import { ReplfsError } from '../errors/index.js';

/** Mount options a user may add with -o, and which take a value. */
export const USER_OPTIONS: Record<string, 'flag' | 'number' | 'snapdir'> = {
  ro: 'flag', debug: 'flag', kernel_cache: 'flag', allow_root: 'flag', allow_other: 'flag', default_permissions: 'flag',
  attr_timeout: 'number', entry_timeout: 'number', max_readahead: 'number', snapdir: 'snapdir',
};

/**
 * Seconds the kernel may cache names and attributes. Safe because every change goes
 * through the mount; files with several hard links are never cached (fuse_reply_shim.c).
 */
export const DEFAULT_ATTR_TIMEOUT = 1;
export const DEFAULT_ENTRY_TIMEOUT = 1;

/**
 * A replica mount's root moves to a newer snapshot when a sync ends, without an operation
 * the kernel sees: by default it caches no names and no attributes (docs/architecture.md,
 * "Replica mounts").
 */
export const REPLICA_ATTR_TIMEOUT = 0;
export const REPLICA_ENTRY_TIMEOUT = 0;

/** What `-o` sets: the options passed on to libfuse, the kernel cache timeouts, debug and snapdir. */
export interface MountOptions {
  extra: string[];
  attrTimeout: number;
  entryTimeout: number;
  debug: boolean;
  /** List .snapshots in the root directory (`-o snapdir=visible`); it is always reachable by name. */
  snapdirVisible: boolean;
}

export function parseMountOptions(list: string[], replica = false): MountOptions {
  const out = {
    extra: [] as string[], debug: false, snapdirVisible: false,
    attrTimeout: replica ? REPLICA_ATTR_TIMEOUT : DEFAULT_ATTR_TIMEOUT,
    entryTimeout: replica ? REPLICA_ENTRY_TIMEOUT : DEFAULT_ENTRY_TIMEOUT,
  };
  for (const item of list.flatMap((s) => s.split(',')).filter(Boolean)) {
    // Split at the first '=' only: `snapdir=visible=x` is a bad value, not `visible`.
    const eq = item.indexOf('=');
    const name = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? undefined : item.slice(eq + 1);
    const kind = USER_OPTIONS[name];
    if (!kind) throw new ReplfsError('usage', `unknown mount option ${JSON.stringify(name)}`, `known options: ${Object.keys(USER_OPTIONS).join(', ')}`);
    if (kind === 'flag' && value !== undefined) throw new ReplfsError('usage', `mount option ${name} takes no value`);
    if (kind === 'number' && (value === undefined || !/^\d+(\.\d+)?$/.test(value))) throw new ReplfsError('usage', `mount option ${name} needs a number, as in ${name}=1, got ${JSON.stringify(value ?? '')}`);
    if (kind === 'snapdir' && value !== 'hidden' && value !== 'visible') throw new ReplfsError('usage', `mount option snapdir is hidden or visible, got ${JSON.stringify(value ?? '')}`);
    if (replica && name === 'kernel_cache') {
      throw new ReplfsError('usage', 'mount option kernel_cache cannot be used with --read-only',
        'the kernel would keep showing a file\'s old contents after the root moves to a newer snapshot');
    }
    if (name === 'snapdir') out.snapdirVisible = value === 'visible';
    else if (name === 'attr_timeout') out.attrTimeout = Number(value);
    else if (name === 'entry_timeout') out.entryTimeout = Number(value);
    else if (name === 'debug') out.debug = true;
    else if (name !== 'allow_other' && name !== 'default_permissions') out.extra.push(item);
  }
  return out;
}
