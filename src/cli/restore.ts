// `replfs restore`: copy a file or a tree out of a snapshot.
import path from 'node:path';
import { ReplfsError } from '../errors/index.js';
import { formatBytes } from '../policy/size.js';
import { act } from './locate.js';
import { checkSnapshotName, printJson, type Command } from './command.js';
import type { RestoreReport } from '../volume/restore.js';

export const restore: Command = {
  name: 'restore',
  summary: 'Copy a file or a tree from a snapshot back into the volume, or elsewhere with --to.',
  args: '<path> <snapshot> [<subpath>]',
  description: [
    '<subpath> is relative to the volume root (default: the whole snapshot). In place, the',
    'restore is an ordinary change to the volume (journaled; later snapshots stay exact):',
    'files are rewritten, missing ones made again; files the snapshot does not have are left',
    'alone. With --to DIR the item is written as DIR/<its name> (the whole snapshot: into DIR).',
    'Mode, owner, times, xattrs, symlinks, holes and hard links inside the tree are restored.',
  ].join('\n'),
  options: {
    to: { type: 'string', value: 'DIR', description: 'restore into DIR instead of in place' },
    json: { type: 'boolean', description: 'print counts as JSON' },
  },
  positionals: { min: 2, max: 3 },
  async run({ values, positionals }) {
    const [p, name, sub = ''] = positionals as [string, string, string?];
    checkSnapshotName(name);
    if (path.isAbsolute(sub)) throw new ReplfsError('usage', `<subpath> is relative to the volume root, got ${JSON.stringify(sub)}`);
    const clean = path.posix.normalize(sub === '' ? '.' : sub);
    if (clean === '..' || clean.startsWith('../')) throw new ReplfsError('usage', `<subpath> must stay inside the snapshot, got ${JSON.stringify(sub)}`);
    const to = typeof values.to === 'string' ? path.resolve(values.to) : undefined;
    const res = await act<RestoreReport>(p, 'restore', { name, from: clean === '.' ? '' : clean, ...(to ? { to } : {}) });
    if (values.json) printJson(res);
    else console.log(`restored ${res.files} files (${formatBytes(res.bytes)}), ${res.dirs} directories, ${res.symlinks} symlinks, ${res.links} hard links${res.other ? `, ${res.other} other` : ''}`);
    return 0;
  },
};
