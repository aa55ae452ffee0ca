// The syscalls behind the filesystem operations, as promises. A mount daemon runs them on
// libuv's thread pool: one slow syscall must not hold up every other request (and inline
// ones measured no faster there). A process that serves no mount (replfs serve, a command
// working on an unmounted volume) runs them inline on its own thread instead: a warm
// lstat then costs ~2 µs against ~12 µs of hand-offs to the pool and back on this kind of
// machine, which a sync of many small files pays per file several times over.
import fs from 'node:fs';
import type { BigIntStats } from 'node:fs';
import { readdirStat, readdirStatSync } from './sys.js';

const asyncIo = {
  lstat: (p: string) => new Promise<BigIntStats>((res, rej) => fs.lstat(p, { bigint: true }, (e, s) => (e ? rej(e) : res(s)))),
  fstat: (fd: number) => new Promise<BigIntStats>((res, rej) => fs.fstat(fd, { bigint: true }, (e, s) => (e ? rej(e) : res(s)))),
  open: (p: string, flags: number, mode?: number) => new Promise<number>((res, rej) => fs.open(p, flags, mode, (e, fd) => (e ? rej(e) : res(fd)))),
  close: (fd: number) => new Promise<void>((res, rej) => fs.close(fd, (e) => (e ? rej(e) : res()))),
  read: (fd: number, buf: Buffer, len: number, pos: number) => new Promise<number>((res, rej) => fs.read(fd, buf, 0, len, pos, (e, n) => (e ? rej(e) : res(n)))),
  write: (fd: number, buf: Buffer, len: number, pos: number) => new Promise<number>((res, rej) => fs.write(fd, buf, 0, len, pos, (e, n) => (e ? rej(e) : res(n)))),
  fsync: (fd: number, datasync = false) => new Promise<void>((res, rej) => (datasync ? fs.fdatasync : fs.fsync)(fd, (e) => (e ? rej(e) : res()))),
  fchown: (fd: number, uid: number, gid: number) => new Promise<void>((res, rej) => fs.fchown(fd, uid, gid, (e) => (e ? rej(e) : res()))),
  fchmod: (fd: number, mode: number) => new Promise<void>((res, rej) => fs.fchmod(fd, mode, (e) => (e ? rej(e) : res()))),
  readdirStat,
};

const now = <T>(f: () => T): Promise<T> => { try { return Promise.resolve(f()); } catch (e) { return Promise.reject(e); } };
const syncIo: typeof asyncIo = {
  lstat: (p) => now(() => fs.lstatSync(p, { bigint: true })),
  fstat: (fd) => now(() => fs.fstatSync(fd, { bigint: true })),
  open: (p, flags, mode) => now(() => fs.openSync(p, flags, mode)),
  close: (fd) => now(() => fs.closeSync(fd)),
  read: (fd, buf, len, pos) => now(() => fs.readSync(fd, buf, 0, len, pos)),
  write: (fd, buf, len, pos) => now(() => fs.writeSync(fd, buf, 0, len, pos)),
  fsync: (fd, datasync = false) => now(() => (datasync ? fs.fdatasyncSync : fs.fsyncSync)(fd)),
  fchown: (fd, uid, gid) => now(() => fs.fchownSync(fd, uid, gid)),
  fchmod: (fd, mode) => now(() => fs.fchmodSync(fd, mode)),
  readdirStat: (p) => now(() => readdirStatSync(p)),
};

export const io: typeof asyncIo = { ...asyncIo };

/** Runs the syscalls of `io` inline (for processes that serve no mount) or on the thread pool. */
export function inlineSyscalls(on: boolean): void {
  Object.assign(io, on ? syncIo : asyncIo);
}

/**
 * Reads with `read` until `len` bytes are in `buf` or the file ends (a read returns 0), for
 * reads that may come back short. Returns how many bytes were read.
 */
export async function readFull(read: (buf: Buffer, len: number, pos: number) => Promise<number>, buf: Buffer, len: number, pos: number): Promise<number> {
  let got = 0;
  while (got < len) {
    const n = await read(buf.subarray(got), len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}
