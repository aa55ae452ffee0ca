// Helpers for tests that drive the engine (Volume) directly, without FUSE.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Volume } from '../../src/volume/volume.js';

/** The caller the tests act as. */
export const me = { uid: process.getuid!(), gid: process.getgid!(), pid: process.pid };
const { O_RDWR, O_WRONLY, O_CREAT } = fs.constants;

/** A fresh directory under the system temp dir, removed after the test. */
export function tmpDir(t: { teardown(fn: () => unknown): void }, prefix = 'replfs-engine-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
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
