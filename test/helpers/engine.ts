// Helpers for tests that drive the engine (Volume) directly, without FUSE.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { Volume } from '../../src/volume/volume.js';
import type { SnapshotView } from '../../src/volume/view.js';
import { HashPool } from '../../src/replicate/hasher.js';

/** The caller the tests act as. */
export const me = { uid: process.getuid!(), gid: process.getgid!(), pid: process.pid };
const { O_RDWR, O_WRONLY, O_CREAT } = fs.constants;

/** A fresh directory under the system temp dir, removed after the test. */
export function tmpDir(t: { teardown(fn: () => unknown): void }, prefix = 'replfs-engine-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A source and a replica volume, both open for writing, and a hash pool for syncs between them. */
export interface VolumePair {
  src: string;
  dst: string;
  source: Volume;
  /** Tests may reopen the replica: teardown closes whichever is here then. */
  replica: Volume;
  pool: HashPool;
}

/**
 * Two fresh volumes of 16 KiB blocks under a temp dir: `src`, with `docs/` and whatever
 * `fill` writes before it is protected, and an empty `dst`. All closed after the test.
 */
export async function volumePair(t: { teardown(fn: () => unknown): void }, prefix: string, fill: (src: string) => void): Promise<VolumePair> {
  const base = tmpDir(t, prefix);
  const src = path.join(base, 'src');
  const dst = path.join(base, 'dst');
  fs.mkdirSync(path.join(src, 'docs'), { recursive: true });
  fs.mkdirSync(dst);
  fill(src);
  await Volume.init(src, { blockSize: 16384 });
  await Volume.init(dst, { blockSize: 16384 });
  const p: VolumePair = {
    src, dst,
    source: (await Volume.open(src, { writable: true })).volume,
    replica: (await Volume.open(dst, { writable: true })).volume,
    pool: new HashPool(2),
  };
  t.teardown(async () => {
    await p.pool.close();
    await p.source.close().catch(() => undefined);
    await p.replica.close().catch(() => undefined);
  });
  return p;
}

/** Creates (or opens) `p` through the volume and writes `data` at `pos`. */
export async function put(v: Volume, p: string, data: Buffer | string, pos = 0): Promise<void> {
  const fd = await v.create(p, 0o644, O_WRONLY | O_CREAT, me);
  const buf = Buffer.from(data);
  await v.write(fd, buf, buf.length, pos);
  await v.release(fd);
}

/** Writes `data` at `pos` of the existing file `p` through the volume. */
export async function writeAt(v: Volume, p: string, data: Buffer | string, pos: number): Promise<void> {
  const fd = await v.open(p, O_RDWR);
  const buf = Buffer.from(data);
  await v.write(fd, buf, buf.length, pos);
  await v.release(fd);
}

/** Everything a snapshot shows, path by path; hard links as groups of paths. */
export async function describeSnapshot(view: SnapshotView): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const groups = new Map<number, string[]>();
  const walk = async (rel: string) => {
    for (const e of (await view.readdir(rel)).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = rel === '' ? e.name : `${rel}/${e.name}`;
      const a = await view.getattr(p);
      const xattrs = (await view.listxattr(p)).sort().map(async (n) => `${n}=${(await view.getxattr(p, n)).toString('hex')}`);
      const head = `${(a.mode >>> 0).toString(8)} ${a.uid}:${a.gid} size=${a.size} mtime=${a.mtime.sec}.${a.mtime.nsec} x[${(await Promise.all(xattrs)).join(',')}]`;
      const kind = a.mode & 0o170000;
      if (kind === 0o040000) {
        out[p] = head;
        await walk(p);
      } else if (kind === 0o120000) {
        out[p] = `${head} -> ${await view.readlink(p)}`;
      } else {
        const h = await view.open(p);
        const buf = Buffer.alloc(h.size);
        for (let pos = 0; pos < h.size;) pos += await view.read(h, buf.subarray(pos), h.size - pos, pos) || h.size;
        view.release(h);
        out[p] = `${head} sha256=${createHash('sha256').update(buf).digest('hex').slice(0, 16)}`;
        if (a.nlink > 1) groups.set(a.ino, [...(groups.get(a.ino) ?? []), p]);
      }
    }
  };
  await walk('');
  out['(hard links)'] = [...groups.values()].map((g) => g.sort().join('=')).sort().join(' ');
  return out;
}
