// Writing a tree as a tar archive to a stream. The tree comes from a TreeSource (the CLI has
// one that reads a snapshot through a mount's `.snapshots/<name>/` and one that reads it
// through the engine's SnapshotView), so there is one encoding path whatever the tree is.
// Data is read in chunks and written only as fast as the output takes it: memory stays
// bounded by a few chunks whatever the size of a file.
import type { Writable } from 'node:stream';
import { encodeHeader, endOfArchive, padding, type TarEntry, type TarType } from './tar.js';

export type NodeType = 'file' | 'dir' | 'symlink' | 'fifo' | 'chardev' | 'blockdev' | 'socket';

/** One file, directory or other object of a tree, as a TreeSource describes it. */
export interface TreeNode {
  /** Relative path, `/`-separated; `''` is the top of the tree. */
  path: string;
  type: NodeType;
  /** st_mode (only its low 12 bits are used). */
  mode: number;
  uid: number;
  gid: number;
  /** A regular file's size; ignored for other types. */
  size: number;
  nlink: number;
  /** The device of a character or block device, as st_rdev. */
  rdev: number;
  mtime: { sec: number; nsec: number };
  /** Equal for the names of one file and different for different files: how hard links are told. */
  identity: number;
  /** A symlink's target. */
  target?: string;
  xattrs: Array<[string, Buffer]>;
}

export interface FileReader {
  /** Reads up to `len` bytes at `pos` into `buf`; 0 at the end of the file. */
  read(buf: Buffer, len: number, pos: number): Promise<number>;
  close(): Promise<void>;
}

export interface TreeSource {
  /** Every node of the tree: the top first, each directory before its contents, and the contents of a directory in name order. */
  walk(): AsyncIterable<TreeNode>;
  /** Opens a regular file that walk() yielded. */
  open(node: TreeNode): Promise<FileReader>;
}

export interface ArchiveReport {
  /** Members written (hard links included). */
  entries: number;
  files: number;
  dirs: number;
  links: number;
  /** Bytes of file data. */
  dataBytes: number;
  /** Bytes of the archive, padding included. */
  archiveBytes: number;
  /** Nodes a tar archive cannot hold (sockets), left out. */
  skipped: Array<{ path: string; type: NodeType }>;
}

export interface WriteOptions {
  /** How much of a file is read at a time (default 1 MiB). */
  chunkSize?: number;
  /** Called for each node left out, as it is left out. */
  onSkip?: (node: TreeNode) => void;
}

/** Writing to the output failed (a full disk, a reader that went away): the archive is incomplete. */
export class OutputError extends Error {
  readonly code: string | undefined;
  constructor(readonly reason: unknown) {
    super(reason instanceof Error ? reason.message : String(reason));
    this.name = 'OutputError';
    const code = reason && typeof reason === 'object' && 'code' in reason ? (reason as { code: unknown }).code : undefined;
    this.code = typeof code === 'string' ? code : undefined;
  }
}

/** A file whose data ended before the size its node gave. */
export class ShortFileError extends Error {
  constructor(readonly path: string, readonly got: number, readonly expected: number) {
    super(`${path}: the file ended after ${got} of ${expected} bytes`);
    this.name = 'ShortFileError';
  }
}

const CHUNK = 1024 * 1024;

const TYPE: Record<Exclude<NodeType, 'socket'>, TarType> = {
  file: 'file', dir: 'dir', symlink: 'symlink', fifo: 'fifo', chardev: 'chardev', blockdev: 'blockdev',
};

/**
 * Writes the tree of `source` to `out` as a tar archive, the end of the archive included,
 * and resolves once the last byte has been handed to the system (it does not end `out`).
 * A second name of a file with several links becomes a hard-link member naming the first.
 * Throws OutputError when `out` fails; errors of the source are thrown as they are. On a
 * failure the archive written so far is incomplete, and the caller must discard it.
 */
export async function writeTar(source: TreeSource, out: Writable, opts: WriteOptions = {}): Promise<ArchiveReport> {
  const chunk = opts.chunkSize ?? CHUNK;
  const sink = new Sink(out);
  const report: ArchiveReport = { entries: 0, files: 0, dirs: 0, links: 0, dataBytes: 0, archiveBytes: 0, skipped: [] };
  /** Files with several links whose first name is written: identity -> that path. */
  const firstNames = new Map<number, string>();
  try {
    for await (const node of source.walk()) {
      if (node.type === 'socket') {
        report.skipped.push({ path: node.path, type: node.type });
        opts.onSkip?.(node);
        continue;
      }
      const entry: TarEntry = {
        path: node.path,
        type: TYPE[node.type],
        mode: node.mode & 0o7777,
        uid: node.uid,
        gid: node.gid,
        size: node.type === 'file' ? node.size : 0,
        mtime: node.mtime,
        xattrs: node.xattrs,
      };
      if (node.type === 'symlink') entry.link = node.target ?? '';
      if (node.type === 'chardev' || node.type === 'blockdev') Object.assign(entry, deviceNumbers(node.rdev));
      if (node.type !== 'dir' && node.nlink > 1) {
        const first = firstNames.get(node.identity);
        if (first !== undefined) {
          // The first name carries the data and the attributes; this one only names it.
          await sink.put(encodeHeader({ ...entry, type: 'hardlink', size: 0, link: first }));
          report.entries++;
          report.links++;
          continue;
        }
        firstNames.set(node.identity, node.path);
      }
      await sink.put(encodeHeader(entry));
      report.entries++;
      if (node.type === 'dir') report.dirs++;
      if (node.type !== 'file') continue;
      report.files++;
      await copyData(source, node, sink, chunk);
      report.dataBytes += node.size;
    }
    await sink.put(endOfArchive(sink.written), true);
  } catch (err) {
    throw sink.failure ? new OutputError(sink.failure) : err;
  }
  report.archiveBytes = sink.written;
  return report;
}

/** A regular file's data and its padding, read a chunk ahead of what is being written. */
async function copyData(source: TreeSource, node: TreeNode, sink: Sink, chunk: number): Promise<void> {
  if (node.size === 0) return;
  const reader = await source.open(node);
  let next: Promise<Buffer> | null = null;
  try {
    const readAt = async (pos: number): Promise<Buffer> => {
      const len = Math.min(chunk, node.size - pos);
      const buf = Buffer.allocUnsafe(len);
      let got = 0;
      while (got < len) {
        const n = await reader.read(buf.subarray(got), len - got, pos + got);
        if (n === 0) throw new ShortFileError(node.path, pos + got, node.size);
        got += n;
      }
      return buf;
    };
    next = readAt(0);
    for (let pos = 0; next !== null;) {
      const buf: Buffer = await next;
      pos += buf.length;
      next = pos < node.size ? readAt(pos) : null;
      // A read ahead that fails while this write waits is reported by the await above, next turn.
      next?.catch(() => undefined);
      await sink.put(buf);
    }
  } finally {
    // Not closed under a read still running.
    await next?.catch(() => undefined);
    await reader.close();
  }
  const pad = padding(node.size);
  if (pad) await sink.put(Buffer.alloc(pad));
}

/** Linux's st_rdev as major and minor numbers (glibc's gnu_dev_major / gnu_dev_minor). */
export function deviceNumbers(rdev: number): { devmajor: number; devminor: number } {
  const r = BigInt(rdev);
  const devmajor = Number(((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn));
  const devminor = Number((r & 0xffn) | ((r >> 12n) & ~0xffn));
  return { devmajor, devminor };
}

/** The output, written with backpressure: a write that fills the stream's buffer waits for it to drain. */
class Sink {
  written = 0;
  failure: unknown = null;
  private wake: (() => void) | null = null;

  constructor(private readonly out: Writable) {
    out.on('error', (err) => this.fail(err));
    out.on('close', () => { if (!this.out.writableFinished) this.fail(new Error('the output was closed')); });
  }

  private fail(err: unknown): void {
    this.failure ??= err;
    this.wake?.();
  }

  /** Writes `buf`; with `flush`, resolves only once it has been handed to the system. */
  async put(buf: Buffer, flush = false): Promise<void> {
    if (this.failure) throw new OutputError(this.failure);
    this.written += buf.length;
    let done: Promise<void> | null = null;
    let ok: boolean;
    try {
      if (flush) {
        done = new Promise<void>((resolve) => this.out.write(buf, (err) => { if (err) this.fail(err); resolve(); }));
        ok = true;
      } else {
        ok = this.out.write(buf);
      }
    } catch (err) {
      this.fail(err);
      throw new OutputError(err);
    }
    if (!ok) await this.drained();
    if (done) await Promise.race([done, this.failed()]);
    if (this.failure) throw new OutputError(this.failure);
  }

  private drained(): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.failure) return resolve();
      const go = () => {
        this.out.off('drain', go);
        this.wake = null;
        resolve();
      };
      this.wake = go;
      this.out.on('drain', go);
    });
  }

  private failed(): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.failure) resolve();
      else this.wake = resolve;
    });
  }
}
