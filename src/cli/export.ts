// `replfs export`: one snapshot of a volume or replica as a tar archive, on stdout or into a
// file. Read-only: it never changes the volume. Mounted, the snapshot is read through the
// mount's `.snapshots/<name>/` (the daemon holds the volume's LevelDB, and a control socket
// carrying JSON lines is no way to move gigabytes); not mounted, through the engine, on the
// volume opened read-only here. Either way one TreeSource feeds one tar writer.
import fs, { constants as fsc, promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { ReplfsError, hasCode, messageOf } from '../errors/index.js';
import { OutputError, ShortFileError, writeTar, type ArchiveReport, type TreeSource } from '../archive/writer.js';
import { formatBytes } from '../policy/size.js';
import { LATEST } from '../volume/snapshots.js';
import { SNAPSHOT_DIR } from '../volume/format.js';
import { checkSnapshotName, type Command } from './command.js';
import { locate, type Target } from './locate.js';
import { MountTree, ViewTree } from './tree-sources.js';

const FORMATS = ['tar'];

export const exportCommand: Command = {
  name: 'export',
  summary: 'Write one snapshot of a volume or replica as a tar archive, to stdout or a file.',
  args: '<path> <snapshot>|latest',
  description: [
    '<snapshot> is a name as `replfs snapshots` lists it, or latest for the newest.',
    'The archive (POSIX pax) holds files, directories, symlinks, hard links, fifos and',
    'devices with their mode, numeric owner, mtime to the nanosecond and extended',
    'attributes; extract it with `tar --xattrs -xpf FILE`. Sockets are left out.',
    'Works mounted (read through <mount>/.snapshots/<name>/) and unmounted (read directly);',
    'the volume is never changed. With -o, a failed export leaves nothing at FILE.',
  ].join('\n'),
  options: {
    format: { type: 'string', value: 'FORMAT', description: 'archive format: tar (the default, and the only one)' },
    output: { type: 'string', short: 'o', value: 'FILE', description: 'write the archive to FILE (- or none: stdout), not inside the volume' },
  },
  positionals: { min: 2, max: 2 },
  async run({ values, positionals }) {
    const [p, wanted] = positionals as [string, string];
    const format = (values.format as string | undefined) ?? 'tar';
    if (!FORMATS.includes(format)) {
      throw new ReplfsError('usage', `unknown archive format ${JSON.stringify(format)}`, 'the only format is tar: --format tar');
    }
    if (wanted !== LATEST) checkSnapshotName(wanted);
    const o = values.output as string | undefined;
    const toFile = o !== undefined && o !== '-';
    if (o === '') throw new ReplfsError('usage', '-o needs a file name (or - for stdout)');
    if (!toFile && process.stdout.isTTY) {
      throw new ReplfsError('usage', 'refusing to write an archive to a terminal', 'use -o FILE, or redirect stdout: replfs export <path> <snapshot> > FILE');
    }

    const target = await locate(p);
    const roots = await volumeRoots(target);
    const dest = toFile ? await fileDestination(o, roots) : stdoutDestination(roots);
    const source = await openSource(target, wanted);
    let out: Output | null = null;
    const onSignal = (sig: NodeJS.Signals) => {
      // Interrupted: nothing may be left at FILE. Then die of the signal, as without this handler.
      out?.discardSync();
      removeHandlers();
      process.kill(process.pid, sig);
    };
    const removeHandlers = () => { for (const s of SIGNALS) process.off(s, onSignal); };
    for (const s of SIGNALS) process.on(s, onSignal);
    let report: ArchiveReport;
    try {
      out = await dest.open();
      report = await writeTar(source.tree, out.stream, {
        onSkip: (node) => process.stderr.write(`replfs export: warning: ${node.path || '.'} is a socket; a tar archive cannot hold it, left out\n`),
      });
      await out.commit();
    } catch (err) {
      await out?.discard();
      throw await exportError(err, source, dest.name);
    } finally {
      removeHandlers();
      await source.close();
    }
    if (toFile) {
      console.log(`${source.name}: ${report.entries} entries (${report.files} files, ${formatBytes(report.dataBytes)}) written to ${dest.name}`);
    }
    return 0;
  },
};

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/** The directories the archive must not be written into: the protected directory and where it is mounted. */
async function volumeRoots(target: Target): Promise<string[]> {
  const dirs = target.kind === 'daemon' ? [target.record.root, target.record.mountpoint] : [target.root];
  const out = new Set<string>();
  for (const d of dirs) {
    out.add(d);
    out.add(await fsp.realpath(d).catch(() => d));
  }
  return [...out];
}

function inside(p: string, roots: string[]): string | undefined {
  return roots.find((r) => p === r || p.startsWith(r === '/' ? r : r + '/'));
}

// ---------------------------------------------------------------- where the archive goes

interface Output {
  stream: Writable;
  /** Once the whole archive is written: makes it FILE. */
  commit(): Promise<void>;
  /** After a failure: leaves nothing behind. */
  discard(): Promise<void>;
  discardSync(): void;
}

interface Destination {
  /** As the user named it, for messages. */
  name: string;
  open(): Promise<Output>;
}

function stdoutDestination(roots: string[]): Destination {
  // Redirected into a file of the volume being exported (`> /srv/data/x.tar`): refused.
  let st: fs.Stats | null = null;
  try { st = fs.fstatSync(1); } catch { st = null; }
  if (st?.isFile()) {
    let where: string | null = null;
    try { where = fs.readlinkSync('/proc/self/fd/1'); } catch { where = null; }
    const root = where && inside(where, roots);
    if (root) {
      throw new ReplfsError('refused', `stdout is ${where}, inside the volume being exported (${root})`,
        'write the archive outside the protected directory and its mount');
    }
  }
  const stream = process.stdout;
  return {
    name: 'stdout',
    open: async () => ({ stream, commit: async () => undefined, discard: async () => undefined, discardSync: () => undefined }),
  };
}

/**
 * Where writing to `o` would land: its directory and every symlink on the way resolved, as
 * open(2) would follow them, also when the last one leads to a file that does not exist yet.
 */
async function resolveOutput(o: string): Promise<string> {
  let p = path.resolve(o);
  for (let hops = 0; hops < 40; hops++) {
    let dir: string;
    try {
      dir = await fsp.realpath(path.dirname(p));
    } catch (err) {
      if (hasCode(err, 'ENOENT', 'ENOTDIR')) throw new ReplfsError('notFound', `the directory of ${o} does not exist${hops ? ` (it is a symlink to ${p})` : ''}`);
      if (hasCode(err, 'EACCES')) throw new ReplfsError('permission', `cannot reach the directory of ${o}: permission denied`);
      throw err;
    }
    const full = path.join(dir, path.basename(p));
    const st = await fsp.lstat(full).catch(() => null);
    if (!st?.isSymbolicLink()) return full;
    p = path.resolve(dir, await fsp.readlink(full));
  }
  throw new ReplfsError('refused', `${o}: too many levels of symlinks`);
}

/**
 * FILE, resolved through symlinks and refused inside the volume. A regular file is written
 * under a temporary name beside it and renamed into place once complete (so a failed export
 * leaves nothing at FILE, and an existing FILE untouched); a device or fifo is written to.
 */
async function fileDestination(o: string, roots: string[]): Promise<Destination> {
  const final = await resolveOutput(o);
  const existing = await fsp.lstat(final).catch(() => null);
  const root = inside(final, roots);
  if (root) {
    throw new ReplfsError('refused', `${o} is inside the volume being exported (${root}): the archive would be written into what it archives`,
      'write the archive outside the protected directory and its mount');
  }
  if (existing?.isDirectory()) throw new ReplfsError('refused', `${o} is a directory`, 'name a file: -o DIR/archive.tar');
  if (existing && !existing.isFile()) {
    // A device or a fifo (/dev/null, a pipe to a compressor): written to as it is.
    return {
      name: o,
      open: async () => {
        const fd = await openOutput(o, final, fsc.O_WRONLY);
        const stream = fs.createWriteStream('', { fd, autoClose: false });
        const close = once(() => closeFd(fd));
        return {
          stream,
          commit: async () => { await ended(stream); await close(); },
          discard: async () => { await destroyed(stream); await close().catch(() => undefined); },
          discardSync: () => undefined,
        };
      },
    };
  }
  const tmp = path.join(path.dirname(final), `.${path.basename(final)}.replfs-export-${process.pid}`);
  return {
    name: o,
    open: async () => {
      const fd = await openOutput(o, tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o666);
      const stream = fs.createWriteStream('', { fd, autoClose: false });
      const close = once(() => closeFd(fd));
      let gone = false;
      const discardSync = () => {
        if (gone) return;
        gone = true;
        try { fs.unlinkSync(tmp); } catch { /* already gone */ }
      };
      return {
        stream,
        commit: async () => {
          await ended(stream);
          // Durable before it takes FILE's name: FILE is the whole archive or what it was before.
          await new Promise<void>((resolve, reject) => fs.fsync(fd, (err) => (err ? reject(err) : resolve())));
          await close();
          await fsp.rename(tmp, final);
          gone = true;
        },
        discard: async () => {
          await destroyed(stream);
          await close().catch(() => undefined);
          discardSync();
        },
        discardSync,
      };
    },
  };
}

/** Ends a stream and resolves once everything written to it is written. */
function ended(stream: Writable): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    stream.once('error', reject);
    stream.end(() => resolve());
  });
}

/** Destroys a stream and resolves once no write of it is still running. */
function destroyed(stream: Writable): Promise<void> {
  if (stream.closed) return Promise.resolve();
  return new Promise<void>((resolve) => {
    stream.once('close', () => resolve());
    stream.destroy();
  });
}

/** `fn` run at most once: later calls get the first call's promise. */
function once(fn: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | null = null;
  return () => (p ??= fn());
}

function closeFd(fd: number): Promise<void> {
  return new Promise<void>((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
}

async function openOutput(name: string, file: string, flags: number, mode?: number): Promise<number> {
  try {
    return await new Promise<number>((resolve, reject) => fs.open(file, flags, mode, (err, fd) => (err ? reject(err) : resolve(fd))));
  } catch (err) {
    if (hasCode(err, 'EACCES', 'EPERM')) throw new ReplfsError('permission', `cannot write ${name}: permission denied`);
    if (hasCode(err, 'EROFS')) throw new ReplfsError('refused', `cannot write ${name}: read-only file system`);
    if (hasCode(err, 'ENOSPC', 'EDQUOT')) throw new ReplfsError('unavailable', `cannot write ${name}: no space left`);
    throw err;
  }
}

// ---------------------------------------------------------------- where the snapshot comes from

interface Source {
  /** The snapshot's name (`latest` resolved). */
  name: string;
  tree: TreeSource;
  mounted: string | null;
  close(): Promise<void>;
}

async function openSource(target: Target, wanted: string): Promise<Source> {
  if (target.kind === 'daemon') {
    const snapdir = path.join(target.record.mountpoint, SNAPSHOT_DIR);
    let name = wanted;
    if (wanted === LATEST) {
      try {
        name = await fsp.readlink(path.join(snapdir, LATEST));
      } catch (err) {
        if (hasCode(err, 'ENOENT')) throw noSnapshot(target.record.root);
        throw err;
      }
    }
    const base = path.join(snapdir, name);
    const st = await fsp.lstat(base).catch((err: unknown) => {
      if (hasCode(err, 'ENOENT')) return null;
      throw err;
    });
    if (!st?.isDirectory()) throw unknownSnapshot(name);
    return { name, tree: new MountTree(base), mounted: base, close: async () => undefined };
  }
  const { Volume, inlineSyscalls } = await import('../volume/index.js');
  // This process serves no mount: its syscalls may run inline (see volume/io.ts).
  inlineSyscalls(true);
  const { volume } = await Volume.open(target.root, { writable: false });
  try {
    const rec = wanted === LATEST ? volume.snapshots().at(-1) : volume.snapshots().find((s) => s.name === wanted);
    if (!rec) throw wanted === LATEST ? noSnapshot(target.root) : unknownSnapshot(wanted);
    return { name: rec.name, tree: new ViewTree(volume.view(rec.name)), mounted: null, close: () => volume.close() };
  } catch (err) {
    await volume.close();
    throw err;
  }
}

function noSnapshot(root: string): ReplfsError {
  return new ReplfsError('notFound', `${root} has no snapshot yet, so no latest`, 'take one with: replfs snapshot <path>');
}

function unknownSnapshot(name: string): ReplfsError {
  return new ReplfsError('notFound', `no snapshot named ${JSON.stringify(name)}`, 'list them with `replfs snapshots <path>`');
}

/** A failure half way, as the user should read it. */
async function exportError(err: unknown, source: Source, dest: string): Promise<unknown> {
  if (err instanceof OutputError) {
    const why = err.code === 'EPIPE' ? 'the reader of the archive went away' : err.code === 'ENOSPC' || err.code === 'EDQUOT' ? 'no space left' : err.message;
    return new ReplfsError('unavailable', `writing the archive to ${dest} failed: ${why}; the archive is incomplete${dest === 'stdout' ? '' : ' and was removed'}`);
  }
  if (err instanceof ReplfsError) return err;
  if (source.mounted && hasCode(err, 'ENOENT', 'ESTALE') && !(await fsp.lstat(source.mounted).then(() => true, () => false))) {
    return new ReplfsError('notFound', `snapshot ${source.name} was deleted during the export`);
  }
  if (hasCode(err, 'EACCES', 'EPERM')) return new ReplfsError('permission', `reading snapshot ${source.name} failed: ${messageOf(err)}`);
  if (err instanceof ShortFileError) return new ReplfsError('internal', `reading snapshot ${source.name} failed: ${err.message}`);
  return err;
}
