// Copying a file or a tree out of a snapshot view: back into the volume (through the
// volume's own operations, so the restore is an ordinary journaled, copy-on-write change)
// or into a directory elsewhere. Holes stay holes, hard links inside the copied tree stay
// links, and mode, owner, times and xattrs are restored last, directories after their
// contents. Entries that exist at the destination but not in the snapshot are left alone.
import fs, { constants as fsc, promises as fsp } from 'node:fs';
import type { BigIntStats } from 'node:fs';
import path from 'node:path';
import type { FileId } from '../core/types.js';
import { ReplfsError, hasCode } from '../errors/index.js';
import { TypeTag, type PreservedAttr } from './format.js';
import { io } from './io.js';
import * as sys from './sys.js';
import { specOf, type SnapshotView } from './view.js';

/** Where restored files go. Paths are relative to the sink's base ('' is the base itself). */
export interface Sink {
  lstat(rel: string): Promise<BigIntStats | null>;
  mkdir(rel: string, mode: number): Promise<void>;
  remove(rel: string, isDir: boolean): Promise<void>;
  /** Opens a file for writing from scratch; returns a handle for write/finish. */
  create(rel: string, mode: number): Promise<number>;
  write(handle: number, buf: Buffer, len: number, pos: number): Promise<void>;
  finish(handle: number, rel: string, size: number): Promise<void>;
  symlink(target: string, rel: string): Promise<void>;
  link(existing: string, rel: string): Promise<void>;
  mknod(rel: string, mode: number, rdev: number): Promise<void>;
  setAttrs(rel: string, a: PreservedAttr, isLink: boolean): Promise<void>;
}

export interface RestoreReport {
  files: number;
  dirs: number;
  symlinks: number;
  links: number;
  other: number;
  bytes: number;
}

const CHUNK = 1024 * 1024;
const ZERO = Buffer.alloc(CHUNK);
const HOLE_GRAIN = 64 * 1024;

const join = (dir: string, name: string) => (dir === '' ? name : `${dir}/${name}`);

export async function restoreTree(view: SnapshotView, from: string, sink: Sink, to: string): Promise<RestoreReport> {
  const report: RestoreReport = { files: 0, dirs: 0, symlinks: 0, links: 0, other: 0, bytes: 0 };
  const linked = new Map<FileId, string>();

  const copy = async (src: string, dst: string): Promise<void> => {
    const { fid, t } = await view.resolve(src);
    const a = await view.attrOf(fid);
    const existing = await sink.lstat(dst);
    const existingIsDir = existing?.isDirectory() ?? false;
    if (t === TypeTag.dir) {
      if (existing && !existingIsDir) await sink.remove(dst, false);
      if (!existing || !existingIsDir) await sink.mkdir(dst, 0o700);
      report.dirs++;
      for (const e of await view.readdir(src)) await copy(join(src, e.name), join(dst, e.name));
      await sink.setAttrs(dst, a, false);
      return;
    }
    if (existing && existingIsDir) {
      throw new ReplfsError('refused', `cannot restore ${src || '/'} over the directory ${dst}: remove or move it first`);
    }
    const first = linked.get(fid);
    if (first !== undefined && a.nlink > 1) {
      if (existing) await sink.remove(dst, false);
      await sink.link(first, dst);
      report.links++;
      return;
    }
    if (t === TypeTag.file) {
      // Not over a hard link of a file that must keep its other names: write in place.
      const h = await sink.create(dst, 0o600);
      const handle = await view.open(src);
      try {
        const buf = Buffer.allocUnsafe(CHUNK);
        for (let pos = 0; pos < a.size; pos += CHUNK) {
          const n = await view.read(handle, buf, Math.min(CHUNK, a.size - pos), pos);
          if (n === 0) break;
          // Zero pieces are skipped, so holes stay holes (the final size is set by finish).
          for (let at = 0; at < n; at += HOLE_GRAIN) {
            const piece = buf.subarray(at, Math.min(n, at + HOLE_GRAIN));
            if (!piece.equals(ZERO.subarray(0, piece.length))) await sink.write(h, piece, piece.length, pos + at);
          }
          report.bytes += n;
        }
      } finally {
        view.release(handle);
        await sink.finish(h, dst, a.size);
      }
      report.files++;
    } else {
      if (existing) await sink.remove(dst, false);
      if (t === TypeTag.symlink) {
        await sink.symlink(a.l ?? '', dst);
        report.symlinks++;
      } else {
        await sink.mknod(dst, a.mode, a.rdev);
        report.other++;
      }
    }
    linked.set(fid, dst);
    await sink.setAttrs(dst, a, t === TypeTag.symlink);
  };

  await copy(from, to);
  return report;
}

/** A sink writing plain files under an absolute directory. */
export class DirSink implements Sink {
  constructor(private readonly base: string) {}

  private abs(rel: string): string {
    return rel === '' ? this.base : path.join(this.base, rel);
  }

  async lstat(rel: string): Promise<BigIntStats | null> {
    try { return await io.lstat(this.abs(rel)); } catch (err) { if (hasCode(err, 'ENOENT')) return null; throw err; }
  }

  async mkdir(rel: string, mode: number): Promise<void> { await fsp.mkdir(this.abs(rel), { mode, recursive: true }); }
  async remove(rel: string, isDir: boolean): Promise<void> { await (isDir ? fsp.rmdir(this.abs(rel)) : fsp.unlink(this.abs(rel))); }
  create(rel: string, mode: number): Promise<number> {
    return io.open(this.abs(rel), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_NOFOLLOW, mode);
  }

  async write(fd: number, buf: Buffer, len: number, pos: number): Promise<void> {
    for (let done = 0; done < len;) done += await io.write(fd, buf.subarray(done), len - done, pos + done);
  }

  async finish(fd: number, _rel: string, size: number): Promise<void> {
    try { await new Promise<void>((res, rej) => fs.ftruncate(fd, size, (e) => (e ? rej(e) : res()))); } finally { await io.close(fd); }
  }

  async symlink(target: string, rel: string): Promise<void> { await fsp.symlink(target, this.abs(rel)); }
  async link(existing: string, rel: string): Promise<void> { await fsp.link(this.abs(existing), this.abs(rel)); }
  async mknod(rel: string, mode: number, rdev: number): Promise<void> { await sys.mknod(this.abs(rel), mode, rdev); }

  async setAttrs(rel: string, a: PreservedAttr, isLink: boolean): Promise<void> {
    const p = this.abs(rel);
    await fsp.lchown(p, a.uid, a.gid).catch((err) => { if (!hasCode(err, 'EPERM')) throw err; });
    if (!isLink) await fsp.chmod(p, a.mode & 0o7777);
    for (const [name, value] of a.x ?? []) await sys.lsetxattr(p, name, Buffer.from(value, 'base64'), 0);
    const at = specOf(a.atime);
    const mt = specOf(a.mtime);
    await sys.utimensat(p, at.sec, at.nsec, mt.sec, mt.nsec, true);
  }
}
