// Snapshots against a model: a seeded random workload runs through a real mount, and
// right after every `replfs snapshot` the live tree is copied aside with `cp -a` (nothing
// writes meanwhile, so the copy is what the snapshot must show). Later, while the
// workload keeps changing the live tree underneath, every `.snapshots/<name>/` must still
// equal its copy: the same paths, types, modes, owners, sizes, bytes, nanosecond mtimes,
// symlink targets, user xattrs, link counts and hard-link groups.
//
// 1. The model test: the workload alone, compared halfway and at the end, then again
//    after a clean unmount and remount.
// 2. The crash test: the same workload, with the daemon SIGKILLed at random points (right
//    after an operation; while a child process hammers files every snapshot sees; while
//    the daemon takes a snapshot), remounted each time, and every snapshot whose command
//    completed compared again. A snapshot that a killed command left behind anyway is
//    compared too (with the live tree, which nothing changed since, as its reference).
// 3. Garbage collection without a retention policy: `replfs snapshot delete` the oldest
//    snapshots, check the others, and watch `du -sb .replfs/blocks` shrink.
//
// The in-memory model tracks the namespace (paths, types, which names are links of one
// file, file sizes, xattr names) only to choose valid operations; the cp copies are the
// reference for contents and attributes. The live tree is checked against the model at
// every comparison, so a wrong model shows up as such.
//
// Reproduce a failure with the seed it logs:
//   REPLFS_SNAPSHOT_SEED=<seed> node test/run.mjs dist/test/integration/snapshot-model.test.js
// Run longer: REPLFS_SNAPSHOT_OPS=3000 REPLFS_SNAPSHOT_COUNT=20 REPLFS_SNAPSHOT_KILLS=25.
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import test from '../helpers/ava.js';
import {
  scratch, replfs, run, initVolume, mountVolume, hashFile, rng, seedFromEnv, waitFor, isMounted, BIN,
  type Scratch, alive, exited
} from '../helpers/env.js';

const OPS = Number(process.env.REPLFS_SNAPSHOT_OPS ?? 300);
const SNAPSHOTS = Number(process.env.REPLFS_SNAPSHOT_COUNT ?? 6);
const KILLS = Number(process.env.REPLFS_SNAPSHOT_KILLS ?? 5);
const SEED = seedFromEnv('REPLFS_SNAPSHOT_SEED');
/**
 * A safety net for long runs, about twice what they took here: 15-25 ms per operation,
 * 1-2 s per snapshot, and per kill a remount (2-10 s) and a comparison of every snapshot.
 */
const BUDGET_MS = 120_000 + OPS * 60 + SNAPSHOTS * 5_000 + KILLS * (20_000 + SNAPSHOTS * 1_500);

const KiB = 1024;
const MiB = 1024 * KiB;
const BLOCK = 64 * KiB;
/** Names are drawn from a small pool, so they are reused all the time (by new files, by directories, ...). */
const NAMES = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
const MAX_DEPTH = 3;
/** Above this many entries the workload mostly deletes. */
const CROWDED = 140;
const MAX_FILE = 3 * MiB;
/** xattrs are part of the workload and the comparison when setfattr/getfattr are installed. */
const HAVE_SETFATTR = spawnSync('which', ['setfattr']).status === 0 && spawnSync('which', ['getfattr']).status === 0;

// ---------------------------------------------------------------- seeded data

/** Deterministic bytes: xorshift from the rng, sometimes one repeated byte (zeros included). */
function data(r: () => number, len: number): Buffer {
  const pick = r();
  if (pick < 0.08) return Buffer.alloc(len, 0);
  if (pick < 0.2) return Buffer.alloc(len, 1 + Math.floor(r() * 255));
  const buf = Buffer.allocUnsafe(len);
  let x = (Math.floor(r() * 0xffffffff) | 1) >>> 0;
  let i = 0;
  for (; i + 4 <= len; i += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    buf.writeUInt32LE(x, i);
  }
  for (; i < len; i++) buf[i] = (x >>> (8 * (i & 3))) & 0xff;
  return buf;
}

// ---------------------------------------------------------------- the model

/** A file: all its hard links share one. */
interface FileObj { size: number; xattrs: Set<string> }
type MEntry =
  | { kind: 'file'; file: FileObj }
  | { kind: 'symlink' }
  | { kind: 'dir'; xattrs: Set<string> };

const join = (dir: string, name: string) => (dir === '' ? name : `${dir}/${name}`);
const parentOf = (rel: string) => (rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '');
const depthOf = (rel: string) => (rel === '' ? 0 : rel.split('/').length);
const under = (rel: string, dir: string) => rel === dir || rel.startsWith(dir + '/');

/**
 * The workload: chooses an operation valid for the model, applies it through the mount
 * (synchronously: the daemon is another process), and updates the model.
 */
class Workload {
  readonly entries = new Map<string, MEntry>();
  readonly root: MEntry = { kind: 'dir', xattrs: new Set() };
  /** Every operation applied, with the ids of the objects it touched (see `idsByPath`). */
  readonly history: Array<{ text: string; ids: Set<number> }> = [];
  private readonly ids = new WeakMap<object, number>();
  private touched = new Set<number>();
  private nextId = 1;
  private tmp = 0;
  private readonly r: () => number;

  constructor(readonly mnt: string, seed: number) {
    this.r = rng(seed);
  }

  // -------- choosing

  private int(lo: number, hi: number): number {
    return lo + Math.floor(this.r() * (hi - lo + 1));
  }

  private pick<T>(list: readonly T[]): T | undefined {
    return list.length ? list[Math.floor(this.r() * list.length)] : undefined;
  }

  private abs(rel: string): string {
    return rel === '' ? this.mnt : path.join(this.mnt, rel);
  }

  private paths(kind?: MEntry['kind']): string[] {
    return [...this.entries].filter(([, e]) => !kind || e.kind === kind).map(([p]) => p);
  }

  private dirs(maxDepth = MAX_DEPTH): string[] {
    return ['', ...this.paths('dir')].filter((d) => depthOf(d) <= maxDepth);
  }

  private freeName(dir: string): string | undefined {
    return this.pick(NAMES.filter((n) => !this.entries.has(join(dir, n))));
  }

  /** A path where nothing is, in a directory of depth at most maxDepth. */
  private freePath(maxDepth = MAX_DEPTH): string | undefined {
    for (let i = 0; i < 10; i++) {
      const dir = this.pick(this.dirs(maxDepth))!;
      const name = this.freeName(dir);
      if (name !== undefined) return join(dir, name);
    }
    return undefined;
  }

  /** A stable id for a file (all its links), a directory or a symlink. */
  private idOf(e: MEntry): number {
    const key = e.kind === 'file' ? e.file : e;
    let id = this.ids.get(key);
    if (id === undefined) {
      id = this.nextId++;
      this.ids.set(key, id);
    }
    return id;
  }

  /** Notes that the current operation touches what is at `p` now. */
  private mark(p: string): void {
    const e = p === '' ? this.root : this.entries.get(p);
    if (e) this.touched.add(this.idOf(e));
  }

  /** Path -> object id, for telling later which operations touched what a snapshot shows. */
  idsByPath(): Map<string, number> {
    const out = new Map<string, number>([['.', this.idOf(this.root)]]);
    for (const [p, e] of this.entries) out.set(p, this.idOf(e));
    return out;
  }

  private linksOf(file: FileObj): string[] {
    return [...this.entries].filter(([, e]) => e.kind === 'file' && e.file === file).map(([p]) => p);
  }

  private children(dir: string): string[] {
    return [...this.entries.keys()].filter((p) => parentOf(p) === dir);
  }

  /** How many directory levels lie below `dir`. */
  private height(dir: string): number {
    let h = 0;
    for (const [p, e] of this.entries) if (e.kind === 'dir' && p.startsWith(dir + '/')) h = Math.max(h, depthOf(p) - depthOf(dir));
    return h;
  }

  // -------- the operations

  step(i: number): string {
    const crowded = this.entries.size > CROWDED;
    // Each operation returns its description, or undefined when the model offers nothing to apply it to.
    const ops: Array<[number, (this: Workload) => string | undefined]> = [
      [14, this.overwrite],
      [5, this.append],
      [6, this.acrossBlocks],
      [4, this.sparse],
      [6, this.truncate],
      [crowded ? 1 : 8, this.create],
      [5, this.atomicSave],
      [6, this.renameFile],
      [4, this.renameDir],
      [crowded ? 12 : 5, this.unlink],
      [3, this.reuseName],
      [crowded ? 1 : 5, this.link],
      [crowded ? 1 : 3, this.symlink],
      [crowded ? 1 : 5, this.mkdir],
      [crowded ? 6 : 3, this.rmdir],
      [crowded ? 3 : 0.7, this.rmTree],
      [4, this.chmod],
      [5, this.utimes],
      [HAVE_SETFATTR ? 3 : 0, this.xattr],
    ];
    const total = ops.reduce((n, [w]) => n + w, 0);
    for (let attempt = 0; attempt < 100; attempt++) {
      let x = this.r() * total;
      let op = ops[0]![1];
      for (const [w, f] of ops) { if ((x -= w) < 0) { op = f; break; } }
      if (attempt >= 20) op = this.create;
      let done: string | undefined;
      this.touched = new Set();
      try {
        done = op.call(this);
      } catch (err) {
        throw new Error(`operation #${i} (${op.name}) failed: ${(err as Error).message}\nlast operations:\n${this.history.slice(-10).map((h) => h.text).join('\n')}`);
      }
      if (done !== undefined) {
        const text = `#${i} ${done}`;
        this.history.push({ text, ids: this.touched });
        return text;
      }
    }
    throw new Error(`operation #${i}: nothing applicable (model of ${this.entries.size} entries)`);
  }

  private randomFile(): [string, FileObj] | undefined {
    const p = this.pick(this.paths('file'));
    if (p === undefined) return undefined;
    return [p, (this.entries.get(p) as { file: FileObj }).file];
  }

  /** Writes `len` bytes at `off`, through O_RDWR or O_WRONLY. */
  private writeAt(p: string, f: FileObj, off: number, len: number): void {
    this.mark(p);
    const fd = fs.openSync(this.abs(p), this.r() < 0.3 ? fs.constants.O_WRONLY : fs.constants.O_RDWR);
    try {
      const buf = data(this.r, len);
      let done = 0;
      while (done < len) done += fs.writeSync(fd, buf, done, len - done, off + done);
    } finally {
      fs.closeSync(fd);
    }
    f.size = Math.max(f.size, off + len);
  }

  private overwrite(): string | undefined {
    const hit = this.randomFile();
    if (!hit) return undefined;
    const [p, f] = hit;
    if (f.size >= MAX_FILE) return this.shrink(p, f);
    const off = f.size > 0 ? this.int(0, f.size - 1) : 0;
    const len = this.r() < 0.6 ? this.int(1, 8 * KiB) : this.int(1, 200 * KiB);
    this.writeAt(p, f, off, len);
    return `overwrite ${p} ${off}+${len}`;
  }

  private append(): string | undefined {
    const hit = this.randomFile();
    if (!hit) return undefined;
    const [p, f] = hit;
    if (f.size >= MAX_FILE) return this.shrink(p, f);
    const len = this.int(1, 100 * KiB);
    this.mark(p);
    fs.appendFileSync(this.abs(p), data(this.r, len));
    f.size += len;
    return `append ${p} +${len}`;
  }

  /** A write straddling one or more 64 KiB block boundaries. */
  private acrossBlocks(): string | undefined {
    const hit = this.randomFile();
    if (!hit) return undefined;
    const [p, f] = hit;
    if (f.size >= MAX_FILE) return this.shrink(p, f);
    const boundary = BLOCK * this.int(1, Math.max(1, Math.ceil(f.size / BLOCK)));
    const before = this.int(1, 4 * KiB);
    const len = before + (this.r() < 0.7 ? this.int(1, 4 * KiB) : this.int(BLOCK, 3 * BLOCK));
    this.writeAt(p, f, boundary - before, len);
    return `across-blocks ${p} ${boundary - before}+${len}`;
  }

  /** A write far beyond EOF, leaving a hole. */
  private sparse(): string | undefined {
    const hit = this.randomFile();
    if (!hit) return undefined;
    const [p, f] = hit;
    if (f.size >= MAX_FILE - MiB) return this.shrink(p, f);
    const was = f.size;
    const off = f.size + this.int(BLOCK, MiB);
    const len = this.int(1, 64 * KiB);
    this.writeAt(p, f, off, len);
    return `sparse ${p} ${off}+${len} (size was ${was})`;
  }

  private shrink(p: string, f: FileObj): string {
    const size = this.int(0, Math.floor(f.size / 2));
    this.mark(p);
    fs.truncateSync(this.abs(p), size);
    f.size = size;
    return `truncate ${p} ${size} (shrink)`;
  }

  private truncate(): string | undefined {
    const hit = this.randomFile();
    if (!hit) return undefined;
    const [p, f] = hit;
    const grow = f.size < MAX_FILE - MiB && this.r() < 0.4;
    const size = grow ? f.size + this.int(1, MiB) : this.int(0, f.size);
    this.mark(p);
    if (this.r() < 0.5) {
      fs.truncateSync(this.abs(p), size);
    } else {
      const fd = fs.openSync(this.abs(p), 'r+');
      try { fs.ftruncateSync(fd, size); } finally { fs.closeSync(fd); }
    }
    const was = f.size;
    f.size = size;
    return `truncate ${p} ${was} -> ${size}`;
  }

  private newFile(p: string): FileObj {
    const size = this.r() < 0.15 ? 0 : this.r() < 0.7 ? this.int(1, 20 * KiB) : this.int(20 * KiB, 400 * KiB);
    fs.writeFileSync(this.abs(p), data(this.r, size), { mode: 0o644 });
    const file: FileObj = { size, xattrs: new Set() };
    this.entries.set(p, { kind: 'file', file });
    this.mark(p);
    return file;
  }

  private create(): string | undefined {
    const p = this.freePath(MAX_DEPTH);
    if (p === undefined) return undefined;
    const f = this.newFile(p);
    return `create ${p} (${f.size} bytes)`;
  }

  /** The editor / SQLite pattern: write a temporary file, fsync, rename it over the original. */
  private atomicSave(): string | undefined {
    const hit = this.randomFile();
    if (!hit) return undefined;
    const [p] = hit;
    const tmp = join(parentOf(p), `.save-${this.tmp++}`);
    const size = this.int(0, 300 * KiB);
    const fd = fs.openSync(this.abs(tmp), 'wx', 0o640);
    try {
      fs.writeSync(fd, data(this.r, size));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    this.mark(p);
    fs.renameSync(this.abs(tmp), this.abs(p));
    this.entries.set(p, { kind: 'file', file: { size, xattrs: new Set() } });
    this.mark(p);
    return `atomic-save ${p} (${size} bytes via ${tmp})`;
  }

  private renameFile(): string | undefined {
    const src = this.pick([...this.paths('file'), ...this.paths('symlink')]);
    if (src === undefined) return undefined;
    // Over an existing file or symlink half of the time, else to a free name.
    let dst: string | undefined;
    if (this.r() < 0.5) dst = this.pick([...this.paths('file'), ...this.paths('symlink')].filter((x) => x !== src));
    dst ??= this.freePath();
    if (dst === undefined) return undefined;
    const s = this.entries.get(src)!;
    const d = this.entries.get(dst);
    this.mark(src);
    this.mark(dst);
    fs.renameSync(this.abs(src), this.abs(dst));
    if (d && s.kind === 'file' && d.kind === 'file' && d.file === s.file) {
      // rename(2) between two links of one file does nothing.
      return `rename ${src} -> ${dst} (links of one file: no-op)`;
    }
    this.entries.delete(src);
    this.entries.set(dst, s);
    return `rename ${src} -> ${dst}${d ? ` (over a ${d.kind})` : ''}`;
  }

  private renameDir(): string | undefined {
    const src = this.pick(this.paths('dir'));
    if (src === undefined) return undefined;
    const h = this.height(src);
    const ok = (dst: string) => !under(dst, src) && !under(src, dst) && depthOf(dst) + h <= MAX_DEPTH;
    let dst: string | undefined;
    // Over an empty directory sometimes, which rename(2) allows.
    if (this.r() < 0.25) dst = this.pick(this.paths('dir').filter((d) => ok(d) && this.children(d).length === 0));
    for (let i = 0; dst === undefined && i < 10; i++) {
      const p = this.freePath(MAX_DEPTH - h - 1);
      if (p !== undefined && ok(p)) dst = p;
    }
    if (dst === undefined) return undefined;
    const over = this.entries.has(dst);
    this.mark(src);
    this.mark(dst);
    fs.renameSync(this.abs(src), this.abs(dst));
    this.entries.delete(dst);
    const moved = [...this.entries].filter(([p]) => under(p, src));
    for (const [p] of moved) this.entries.delete(p);
    for (const [p, e] of moved) this.entries.set(dst + p.slice(src.length), e);
    return `rename-dir ${src} -> ${dst}${over ? ' (over an empty directory)' : ''} (${moved.length - 1} entries inside)`;
  }

  private unlink(): string | undefined {
    const p = this.pick([...this.paths('file'), ...this.paths('symlink')]);
    if (p === undefined) return undefined;
    const e = this.entries.get(p)!;
    const links = e.kind === 'file' ? this.linksOf(e.file).length : 1;
    this.mark(p);
    fs.unlinkSync(this.abs(p));
    this.entries.delete(p);
    return `unlink ${p}${links > 1 ? ` (${links - 1} links left)` : ''}`;
  }

  /** A name freed by unlink and taken at once by a new file. */
  private reuseName(): string | undefined {
    const hit = this.randomFile();
    if (!hit) return undefined;
    const [p] = hit;
    this.mark(p);
    fs.unlinkSync(this.abs(p));
    this.entries.delete(p);
    const f = this.newFile(p);
    return `unlink and re-create ${p} (${f.size} bytes)`;
  }

  private link(): string | undefined {
    const hit = this.randomFile();
    const dst = this.freePath();
    if (!hit || dst === undefined) return undefined;
    const [src, f] = hit;
    this.mark(src);
    fs.linkSync(this.abs(src), this.abs(dst));
    this.entries.set(dst, { kind: 'file', file: f });
    return `link ${src} -> ${dst} (${this.linksOf(f).length} links)`;
  }

  private symlink(): string | undefined {
    const p = this.freePath();
    if (p === undefined) return undefined;
    const existing = this.pick([...this.entries.keys()]);
    const target = this.r() < 0.3 || existing === undefined
      ? `/nonexistent/${this.int(0, 999)}`
      : path.relative(parentOf(p) || '.', existing) || '.';
    fs.symlinkSync(target, this.abs(p));
    this.entries.set(p, { kind: 'symlink' });
    this.mark(p);
    return `symlink ${p} -> ${target}`;
  }

  private mkdir(): string | undefined {
    const p = this.freePath(MAX_DEPTH - 1);
    if (p === undefined) return undefined;
    const mode = 0o700 | this.int(0, 0o77);
    fs.mkdirSync(this.abs(p), { mode });
    this.entries.set(p, { kind: 'dir', xattrs: new Set() });
    this.mark(p);
    return `mkdir ${p} ${mode.toString(8)}`;
  }

  private rmdir(): string | undefined {
    const p = this.pick(this.paths('dir').filter((d) => this.children(d).length === 0));
    if (p === undefined) return undefined;
    this.mark(p);
    fs.rmdirSync(this.abs(p));
    this.entries.delete(p);
    return `rmdir ${p}`;
  }

  private rmTree(): string | undefined {
    const p = this.pick(this.paths('dir'));
    if (p === undefined) return undefined;
    const gone = [...this.entries.keys()].filter((x) => under(x, p));
    for (const x of gone) this.mark(x);
    fs.rmSync(this.abs(p), { recursive: true });
    for (const x of gone) this.entries.delete(x);
    return `rm -r ${p} (${gone.length} entries)`;
  }

  private chmod(): string | undefined {
    const p = this.pick(['', ...this.entries.keys()]);
    if (p === undefined) return undefined;
    const e = p === '' ? this.root : this.entries.get(p)!;
    if (e.kind === 'symlink') return undefined;
    this.mark(p);
    const mode = e.kind === 'dir' ? 0o700 | this.int(0, 0o77) | (this.r() < 0.1 ? 0o1000 : 0) : this.int(0, 0o777);
    fs.chmodSync(this.abs(p), mode);
    return `chmod ${p || '.'} ${mode.toString(8)}`;
  }

  /** Explicit times: through utimensat from Node, or exact nanoseconds through touch(1). */
  private utimes(): string | undefined {
    const p = this.pick(['', ...this.entries.keys()]);
    if (p === undefined) return undefined;
    const isLink = p !== '' && this.entries.get(p)!.kind === 'symlink';
    this.mark(p);
    const sec = this.int(0, 2_000_000_000);
    const nsec = this.int(0, 999_999_999);
    if (this.r() < 0.5) {
      execFileSync('touch', ['-h', '-m', '-d', `@${sec}.${String(nsec).padStart(9, '0')}`, this.abs(p)]);
      return `touch -m ${p || '.'} ${sec}.${String(nsec).padStart(9, '0')}`;
    }
    const atime = this.int(0, 2_000_000_000) + this.r();
    const mtime = sec + nsec / 1e9;
    if (isLink) fs.lutimesSync(this.abs(p), atime, mtime); else fs.utimesSync(this.abs(p), atime, mtime);
    return `utimes ${p || '.'} mtime ${mtime}`;
  }

  private xattr(): string | undefined {
    const p = this.pick(['', ...this.entries.keys()]);
    if (p === undefined) return undefined;
    const e = p === '' ? this.root : this.entries.get(p)!;
    if (e.kind === 'symlink') return undefined;
    this.mark(p);
    const names = e.kind === 'file' ? e.file.xattrs : e.xattrs;
    const existing = this.pick([...names]);
    if (existing !== undefined && this.r() < 0.3) {
      execFileSync('setfattr', ['-x', existing, this.abs(p)]);
      names.delete(existing);
      return `setfattr -x ${existing} ${p || '.'}`;
    }
    const name = `user.k${this.int(0, 3)}`;
    const value = data(this.r, this.int(1, 64)).toString('hex');
    execFileSync('setfattr', ['-n', name, '-v', `0x${value}`, this.abs(p)]);
    names.add(name);
    return `setfattr -n ${name} ${p || '.'} (${value.length / 2} bytes)`;
  }

  /** The model's paths with their type (and size, for files), to compare with the live tree. */
  shape(): Map<string, string> {
    const out = new Map<string, string>();
    for (const [p, e] of this.entries) out.set(p, e.kind === 'file' ? `file ${e.file.size}` : e.kind);
    return out;
  }
}

// ---------------------------------------------------------------- describing and comparing trees

interface Item {
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  mtimeNs: string;
  ino: string;
  hash?: string;
  target?: string;
  /** A read, readlink or readdir that failed, as its error code. */
  error?: string;
}

interface Tree {
  items: Map<string, Item>;
  /** path -> "name=base64value;..." for paths with user xattrs. */
  xattrs: Map<string, string>;
}

/** Everything observable of a tree; '.' is its root. `skip` leaves top-level names out. */
async function describe(root: string, skip: string[] = []): Promise<Tree> {
  const items = new Map<string, Item>();
  const walk = async (rel: string): Promise<void> => {
    // (`root/.`: the root may be a symlink to a directory, /proc/<pid>/fd/<fd>.)
    const abs = rel === '.' ? `${root}/.` : path.join(root, rel);
    const st = await fsp.lstat(abs, { bigint: true });
    const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
    const item: Item = {
      type, mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid),
      // A directory's size depends on its history on ext4, not on its entries.
      size: type === 'dir' ? 0 : Number(st.size), nlink: Number(st.nlink), mtimeNs: st.mtimeNs.toString(), ino: st.ino.toString(),
    };
    // A failure to read is a difference to report with the others, not a reason to stop.
    const attempt = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
      try {
        return await fn();
      } catch (err) {
        item.error = `${what}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
        return undefined;
      }
    };
    if (type === 'file') item.hash = await attempt('read', () => hashFile(abs));
    if (type === 'symlink') item.target = await attempt('readlink', () => fsp.readlink(abs));
    items.set(rel, item);
    if (type === 'dir') {
      const names = (await attempt('readdir', () => fsp.readdir(abs))) ?? [];
      await Promise.all(names.filter((x) => !(rel === '.' && skip.includes(x))).map((n) => walk(rel === '.' ? n : `${rel}/${n}`)));
    }
  };
  await walk('.');
  const xattrs = new Map<string, string>();
  if (HAVE_SETFATTR) {
    // The root alone, then everything below it but the skipped names.
    const top = [...items.keys()].filter((p) => p !== '.' && !p.includes('/'));
    const getfattr = async (recursive: boolean, names: string[]) => {
      const r = await run('getfattr', [...(recursive ? ['-R', '-P'] : []), '-h', '-d', '-m', '^user\\.', '-e', 'base64', '--', ...names], { cwd: root });
      if (r.code !== 0) throw new Error(`getfattr in ${root} failed (${r.code}): ${r.stderr}`);
      return r.stdout;
    };
    const out = (await getfattr(false, ['.'])) + (top.length ? await getfattr(true, top) : '');
    let current = '';
    for (const line of out.split('\n')) {
      const m = /^# file: (.*)$/.exec(line);
      if (m) { current = m[1]!; continue; }
      if (line.includes('=') && current) xattrs.set(current, [xattrs.get(current), line].filter(Boolean).join(';'));
    }
  }
  return { items, xattrs };
}

/** For every non-directory: the sorted paths of the tree sharing its inode. */
function linkGroups(items: Map<string, Item>): Map<string, string> {
  const byIno = new Map<string, string[]>();
  for (const [p, it] of items) if (it.type !== 'dir') byIno.set(it.ino, [...(byIno.get(it.ino) ?? []), p]);
  const out = new Map<string, string>();
  for (const group of byIno.values()) for (const p of group) out.set(p, group.sort().join(' + '));
  return out;
}

/**
 * The differences between a reference tree and a snapshot, first ones first. The root's
 * link count is left out: the live root also holds .replfs, which the copy lacks.
 */
function compareTrees(ref: Tree, snap: Tree, names = { ref: 'the reference', snap: 'the snapshot' }, limit = 25): string[] {
  const out: string[] = [];
  const add = (s: string) => { if (out.length < limit) out.push(s); else if (out.length === limit) out.push('... more differences'); };
  for (const p of ref.items.keys()) if (!snap.items.has(p)) add(`${p}: missing from ${names.snap} (${ref.items.get(p)!.type})`);
  for (const p of snap.items.keys()) if (!ref.items.has(p)) add(`${p}: in ${names.snap} (${snap.items.get(p)!.type}) but not in ${names.ref}`);
  const fields: Array<keyof Item> = ['type', 'mode', 'uid', 'gid', 'size', 'nlink', 'mtimeNs', 'hash', 'target', 'error'];
  for (const [p, a] of ref.items) {
    const b = snap.items.get(p);
    if (!b) continue;
    for (const f of fields) {
      if (f === 'nlink' && p === '.') continue;
      if (a[f] !== b[f]) add(`${p}: ${f} is ${f === 'mode' ? (b[f] as number).toString(8) : b[f]}, expected ${f === 'mode' ? (a[f] as number).toString(8) : a[f]}`);
    }
  }
  const g1 = linkGroups(ref.items);
  const g2 = linkGroups(snap.items);
  for (const [p, g] of g1) if (g2.has(p) && g2.get(p) !== g) add(`${p}: hard links [${g2.get(p)}], expected [${g}]`);
  for (const p of new Set([...ref.xattrs.keys(), ...snap.xattrs.keys()])) {
    if (ref.xattrs.get(p) !== snap.xattrs.get(p)) add(`${p}: xattrs ${snap.xattrs.get(p) ?? '(none)'}, expected ${ref.xattrs.get(p) ?? '(none)'}`);
  }
  return out;
}

// ---------------------------------------------------------------- volume plumbing

interface Snap {
  name: string;
  /** The reference copy of the live tree, made right after the snapshot. */
  ref: string;
  afterOp: number;
  /** The workload's object ids by path when the snapshot was taken. */
  ids?: Map<string, number>;
}

async function must(cmd: string, args: string[], what: string): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${what}: ${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

async function cli(s: Scratch, args: string[]): Promise<string> {
  const r = await replfs(s, args);
  if (r.code !== 0) throw new Error(`replfs ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

interface SnapshotJson { snapshot: { name: string; epoch: number; sourceTime: string; label: string | null; consistency: string; nextFid: number }; quiesced: boolean }

/** `replfs snapshot`, then the reference copy of the live tree (read through the mount). */
async function takeSnapshot(t: ExecutionContext, s: Scratch, mnt: string, backing: string, afterOp: number, label: string, w?: Workload): Promise<Snap> {
  const res = JSON.parse(await cli(s, ['snapshot', mnt, '--json', '--label', label])) as SnapshotJson;
  const name = res.snapshot.name;
  t.regex(name, /^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z(-\d+)?$/);
  t.is(res.snapshot.label, label);
  t.is(await fsp.readlink(path.join(mnt, '.snapshots', 'latest')), name, '.snapshots/latest points at the new snapshot');
  return { name, ref: await copyReference(t, s, mnt, backing, name), afterOp, ids: w?.idsByPath() };
}

/**
 * The reference copy: `cp -a` of the live tree through the mount. It is then compared with
 * the backing directory itself, so that a mount showing stale attributes or contents is
 * reported as that, and not later as a snapshot that differs from a wrong reference.
 */
async function copyReference(t: ExecutionContext, s: Scratch, mnt: string, backing: string, name: string): Promise<string> {
  const ref = path.join(s.dir, `ref-${name}`);
  fs.mkdirSync(ref);
  await must('cp', ['-a', '--preserve=all', `${mnt}/.`, `${ref}/`], `reference copy for ${name}`);
  const [copy, real] = await Promise.all([describe(ref), describe(backing, ['.replfs'])]);
  report(t, compareTrees(real, copy, { ref: 'the backing directory', snap: 'the copy' }).map((d) => `${name}: ${d}`),
    'the copy of the live tree made through the mount (actual) equals the backing directory (expected)');
  return ref;
}

/**
 * Where the daemon serving `dir` sees the protected directory under its in-place mount:
 * /proc/<pid>/fd/<fd>, from its runtime record (docs/architecture.md, "Processes").
 */
function backingOf(s: Scratch, dir: string): string {
  for (const f of fs.readdirSync(s.runtime).filter((n) => n.endsWith('.json'))) {
    const rec = JSON.parse(fs.readFileSync(path.join(s.runtime, f), 'utf8')) as { pid: number; root: string; socket: string };
    const m = /^(\/proc\/\d+\/fd\/\d+)\/\.replfs\/control\.sock$/.exec(rec.socket);
    if (rec.root === dir && m && alive(rec.pid)) return m[1]!;
  }
  throw new Error(`no live daemon record for ${dir} in ${s.runtime}`);
}

/** Compares every snapshot with its reference; returns the problems, prefixed by snapshot. */
async function checkSnapshots(s: Scratch, mnt: string, snaps: Snap[], w: Workload | null): Promise<string[]> {
  const problems: string[] = [];
  const listed = JSON.parse(await cli(s, ['snapshots', mnt, '--json'])) as { snapshots: Array<{ name: string }>; latest: string | null };
  const names = listed.snapshots.map((x) => x.name);
  for (const snap of snaps) if (!names.includes(snap.name)) problems.push(`${snap.name}: not listed by replfs snapshots (${names.join(', ')})`);
  const inDir = await fsp.readdir(path.join(mnt, '.snapshots'));
  for (const snap of snaps) if (!inDir.includes(snap.name)) problems.push(`${snap.name}: not in .snapshots/ (${inDir.join(', ')})`);
  // Four snapshots at a time (each tree is read with all its entries in flight at once).
  const trees: Array<[Tree, Tree]> = [];
  for (let k = 0; k < snaps.length; k += 4) {
    trees.push(...await Promise.all(snaps.slice(k, k + 4).map((snap) => Promise.all([describe(snap.ref), describe(path.join(mnt, '.snapshots', snap.name))]))));
  }
  for (const [k, snap] of snaps.entries()) {
    const [ref, view] = trees[k]!;
    const diff = compareTrees(ref, view);
    const changed = [...ref.items].filter(([p, it]) => {
      const other = view.items.get(p);
      return it.hash !== undefined && other?.hash !== undefined && other.hash !== it.hash;
    });
    for (const [p] of changed.slice(0, 3)) diff.push(`${p}: ${await whereDiffer(path.join(snap.ref, p), path.join(mnt, '.snapshots', snap.name, p))}`);
    if (diff.length && w) {
      // The operations on the first differing paths, before and since the snapshot. What
      // the snapshot showed is followed by object (renames and other links count), anything
      // else by name.
      const hot = [...new Set(diff.slice(0, 3).map((d) => d.split(':')[0]!))];
      const ids = new Set(hot.map((p) => snap.ids?.get(p)).filter((x) => x !== undefined));
      const named = hot.filter((p) => !snap.ids?.has(p));
      const on = (h: { text: string; ids: Set<number> }) => [...h.ids].some((id) => ids.has(id))
        || h.text.split(' ').some((tok) => named.some((p) => tok === p || under(p, tok)));
      const before = w.history.slice(0, snap.afterOp).filter(on).map((h) => h.text);
      const since = w.history.slice(snap.afterOp).filter(on).map((h) => h.text);
      diff.push(`(the last ${Math.min(8, before.length)} operations on ${hot.join(', ')} before the snapshot:)`, ...before.slice(-8),
        `(the snapshot, after operation #${snap.afterOp}; the ${since.length} operations on them since${since.length > 40 ? ', the first 40' : ''}:)`, ...since.slice(0, 40));
    }
    problems.push(...diff.map((d) => `${snap.name}: ${d}`));
  }
  return problems;
}

/** Where two files' contents first differ, and in how many 64 KiB blocks (for failure messages). */
async function whereDiffer(expected: string, actual: string): Promise<string> {
  const [x, y] = await Promise.all([fsp.readFile(expected), fsp.readFile(actual)]);
  let first = -1;
  let blocks = 0;
  const n = Math.max(x.length, y.length);
  for (let off = 0; off < n; off += BLOCK) {
    const p = x.subarray(off, off + BLOCK);
    const q = y.subarray(off, off + BLOCK);
    if (p.equals(q)) continue;
    blocks++;
    if (first < 0) {
      let k = 0;
      while (k < Math.min(p.length, q.length) && p[k] === q[k]) k++;
      first = off + k;
    }
  }
  return `contents first differ at byte ${first} (block ${Math.floor(first / BLOCK)}); ${blocks} of ${Math.ceil(n / BLOCK)} blocks differ`;
}

/** The live tree, seen through the mount, has the model's shape (paths, types, file sizes). */
async function checkModel(mnt: string, w: Workload, skip: string[]): Promise<string[]> {
  const live = await describeShape(mnt, skip);
  const model = w.shape();
  const out: string[] = [];
  for (const [p, v] of model) if (live.get(p) !== v) out.push(`${p}: live ${live.get(p) ?? 'absent'}, model ${v}`);
  for (const [p, v] of live) if (!model.has(p)) out.push(`${p}: live ${v}, not in the model`);
  return out.slice(0, 20);
}

async function describeShape(root: string, skip: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string) => {
    for (const n of (await fsp.readdir(rel ? path.join(root, rel) : root)).sort()) {
      if (rel === '' && skip.includes(n)) continue;
      const p = rel ? `${rel}/${n}` : n;
      const st = await fsp.lstat(path.join(root, p));
      out.set(p, st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? `file ${st.size}` : 'other');
      if (st.isDirectory()) await walk(p);
    }
  };
  await walk('');
  return out;
}

/**
 * A protected directory with a few files made before `init` (so the baseline adopts
 * them), including hard links and a symlink, plus w/ for the crash test's write loop.
 * Returns the entries for the workload's model (w/ stays out of it).
 */
async function prepare(t: ExecutionContext, s: Scratch, seed: number): Promise<{ dir: string; initial: Array<[string, MEntry]> }> {
  const dir = path.join(s.dir, 'vol');
  const r = rng(seed ^ 0x5eed);
  fs.mkdirSync(path.join(dir, 'a', 'b'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'w'));
  const f1: FileObj = { size: 300 * KiB, xattrs: new Set() };
  const f2: FileObj = { size: 2 * MiB + 100, xattrs: new Set() };
  const f3: FileObj = { size: 5000, xattrs: new Set() };
  fs.writeFileSync(path.join(dir, 'c'), data(r, f1.size));
  fs.writeFileSync(path.join(dir, 'a', 'd'), data(r, f2.size));
  fs.writeFileSync(path.join(dir, 'a', 'b', 'e'), data(r, f3.size));
  fs.linkSync(path.join(dir, 'a', 'b', 'e'), path.join(dir, 'a', 'e'));
  fs.symlinkSync('a/d', path.join(dir, 'g'));
  for (let i = 0; i < LOOP_FILES; i++) fs.writeFileSync(path.join(dir, 'w', `L${i}`), data(r, 512 * KiB));
  await initVolume(t, s, dir);
  const dirEntry = (): MEntry => ({ kind: 'dir', xattrs: new Set() });
  return {
    dir,
    initial: [
      ['a', dirEntry()], ['a/b', dirEntry()], ['c', { kind: 'file', file: f1 }], ['a/d', { kind: 'file', file: f2 }],
      ['a/b/e', { kind: 'file', file: f3 }], ['a/e', { kind: 'file', file: f3 }], ['g', { kind: 'symlink' }],
    ],
  };
}

function newWorkload(mnt: string, seed: number, initial: Array<[string, MEntry]>): Workload {
  const w = new Workload(mnt, seed);
  for (const [p, e] of initial) w.entries.set(p, e);
  return w;
}

function report(t: ExecutionContext, problems: string[], what: string): void {
  t.deepEqual(problems, [], `${what} (seed ${SEED})`);
}

// ---------------------------------------------------------------- 1. the model test

test.serial('snapshots equal copies of the live tree taken when they were made, under a random workload', async (t) => {
  t.timeout(BUDGET_MS);
  t.log(`seed ${SEED}, ${OPS} operations, ${SNAPSHOTS} snapshots (REPLFS_SNAPSHOT_SEED, REPLFS_SNAPSHOT_OPS, REPLFS_SNAPSHOT_COUNT)`);
  const started = Date.now();
  const s = scratch(t);
  const { dir, initial } = await prepare(t, s, SEED);
  await mountVolume(t, s, dir);
  t.false((await fsp.readdir(dir)).includes('.snapshots'), '.snapshots is not listed in the root directory');
  t.false((await fsp.readdir(dir)).includes('.replfs'), '.replfs is not listed in the root directory');

  const w = newWorkload(dir, SEED, initial);
  const every = Math.max(1, Math.floor(OPS / (SNAPSHOTS + 1)));
  const snaps: Snap[] = [];
  const middle = Math.ceil(SNAPSHOTS / 2);
  let compared = 0;
  for (let i = 1; i <= OPS; i++) {
    w.step(i);
    if (i % every === 0 && snaps.length < SNAPSHOTS) {
      snaps.push(await takeSnapshot(t, s, dir, backingOf(s, dir), i, `after op ${i}`, w));
      if (!t.passed) return;
      if (snaps.length === middle) {
        report(t, await checkModel(dir, w, ['w']), `the live tree matches the model after operation ${i}`);
        report(t, await checkSnapshots(s, dir, snaps, w), `snapshots halfway (after operation ${i})`);
        compared += snaps.length;
        if (!t.passed) return;
      }
    }
  }
  t.is(snaps.length, SNAPSHOTS);
  report(t, await checkModel(dir, w, ['w']), 'the live tree matches the model at the end');
  const workloadDone = Date.now();
  report(t, await checkSnapshots(s, dir, snaps, w), 'snapshots at the end');
  compared += snaps.length;
  if (!t.passed) return;

  // A clean unmount and a new daemon: everything is read back from LevelDB and the block store.
  await cli(s, ['unmount', dir]);
  t.false(await isMounted(dir));
  await cli(s, ['mount', dir]);
  report(t, await checkSnapshots(s, dir, snaps, w), 'snapshots after a clean unmount and mount');
  compared += snaps.length;
  t.log(`${OPS} operations and ${snaps.length} snapshots in ${workloadDone - started} ms (with the halfway check); ${compared} snapshot comparisons; total ${Date.now() - started} ms`);
});

// ---------------------------------------------------------------- 2. the crash test

const LOOP_FILES = 4;

/**
 * The write loop run in a child process: overwrites and extends the files of w/ (made
 * before init, so every snapshot sees them and each first write preserves blocks),
 * truncates them, saves over them with a rename, and unlinks and re-creates them. Prints
 * "ready", then a dot every 20 operations, until killed (or until the mount dies).
 */
const LOOP = String.raw`
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const [dir, seedText, count] = process.argv.slice(2);
let a = Number(seedText) >>> 0;
const rand = () => {
  a = (a + 0x6d2b79f5) >>> 0;
  let t = a;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
const buf = Buffer.alloc(256 * 1024);
for (let i = 0; i < buf.length; i++) buf[i] = (i * 131 + (a & 0xff)) & 0xff;
process.stdout.write('ready\n');
for (let n = 0; ; n++) {
  const p = path.join(dir, 'L' + int(0, Number(count) - 1));
  const r = rand();
  buf[int(0, buf.length - 1)] ^= 0x5a;
  // O_CREAT and the existence check: an earlier loop may have been cut off between the
  // unlink and the re-creation of a file.
  if (r < 0.8) {
    const fd = fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_CREAT);
    const size = fs.fstatSync(fd).size;
    if (size > 3 * 1024 * 1024 || r >= 0.7) fs.ftruncateSync(fd, int(0, 1024 * 1024));
    else fs.writeSync(fd, buf, 0, int(1, buf.length), int(0, size + 128 * 1024));
    fs.closeSync(fd);
  } else if (r < 0.9) {
    const tmp = path.join(dir, '.tmp-' + n);
    fs.writeFileSync(tmp, buf.subarray(0, int(0, buf.length)));
    fs.renameSync(tmp, p);
  } else {
    if (fs.existsSync(p)) fs.unlinkSync(p);
    fs.writeFileSync(p, buf.subarray(0, int(0, buf.length)));
  }
  if (n % 20 === 0) process.stdout.write('.');
}
`;



async function daemonPid(s: Scratch, dir: string): Promise<number> {
  const st = JSON.parse(await cli(s, ['status', dir, '--json'])) as { mounted: boolean; pid: number | null };
  if (!st.mounted || typeof st.pid !== 'number') throw new Error(`status --json: not mounted or no pid: ${JSON.stringify(st)}`);
  return st.pid;
}

async function kill(pid: number): Promise<void> {
  process.kill(pid, 'SIGKILL');
  await waitFor(() => !alive(pid), 10_000, `daemon ${pid} to die`);
}

type KillKind = 'after-op' | 'write-loop' | 'during-snapshot';

/**
 * Starts `replfs snapshot <dir> --json`; `connected` resolves once the command holds a
 * socket (its connection to the daemon's control socket, the request follows at once),
 * or once it has exited. Most of the command's time is node starting up: a kill aimed
 * after the connection lands in the daemon's part (barrier, flush, synchronous LevelDB
 * write, epoch bump) or just after it.
 */
function snapshotCommand(s: Scratch, dir: string): { done: Promise<{ code: number; stdout: string; stderr: string }>; connected: Promise<void> } {
  const child = spawn(process.execPath, [BIN, 'snapshot', dir, '--json'], { cwd: s.dir, env: s.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const done = new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
  });
  // Its stdout and stderr are socket pairs too (libuv): wait for a socket it did not start with.
  const sockets = (): string[] | null => {
    const fdDir = `/proc/${child.pid}/fd`;
    let names: string[];
    try { names = fs.readdirSync(fdDir); } catch { return null; }
    return names.map((n) => { try { return fs.readlinkSync(`${fdDir}/${n}`); } catch { return ''; } }).filter((l) => l.startsWith('socket:'));
  };
  const connected = (async () => {
    const initial = new Set(sockets() ?? []);
    while (child.exitCode === null && child.signalCode === null) {
      const now = sockets();
      if (now === null || now.some((l) => !initial.has(l))) return;
      await new Promise((res) => setTimeout(res, 1));
    }
  })();
  return { done, connected };
}

test.serial('SIGKILL of the daemon at random points leaves every completed snapshot intact', async (t) => {
  t.timeout(BUDGET_MS);
  const seed = Math.floor(rng(SEED)() * 2 ** 31);
  t.log(`seed ${SEED} (workload seed ${seed}), ${OPS} operations, ${SNAPSHOTS} snapshots, ${KILLS} kills (REPLFS_SNAPSHOT_KILLS)`);
  const started = Date.now();
  const s = scratch(t);
  const { dir, initial } = await prepare(t, s, seed);
  await mountVolume(t, s, dir);
  const loopScript = path.join(s.dir, 'loop.cjs');
  fs.writeFileSync(loopScript, LOOP);

  const w = newWorkload(dir, seed, initial);
  const r = rng(seed ^ 0x6b696c6c);
  const every = Math.max(1, Math.floor(OPS / (SNAPSHOTS + 1)));
  // Kill points after the first snapshot, so there is always something to protect; the
  // first kill is always during the write loop.
  const points = new Map<number, KillKind>();
  const kinds: KillKind[] = ['after-op', 'write-loop', 'during-snapshot'];
  while (points.size < Math.min(KILLS, OPS - every)) {
    const at = every + 1 + Math.floor(r() * (OPS - every));
    if (!points.has(at)) points.set(at, kinds[Math.floor(r() * kinds.length)]!);
  }
  const first = Math.min(...points.keys());
  points.set(first, 'write-loop');

  const snaps: Snap[] = [];
  let pid = await daemonPid(s, dir);
  const counts: Record<KillKind, number> = { 'after-op': 0, 'write-loop': 0, 'during-snapshot': 0 };
  let loopOps = 0;
  let adopted = 0;
  for (let i = 1; i <= OPS; i++) {
    w.step(i);
    if (i % every === 0 && snaps.length - adopted < SNAPSHOTS) {
      snaps.push(await takeSnapshot(t, s, dir, backingOf(s, dir), i, `after op ${i}`, w));
      if (!t.passed) return;
    }
    const kind = points.get(i);
    if (!kind) continue;
    counts[kind]++;
    let snapshotRun: Promise<{ code: number; stdout: string; stderr: string }> | null = null;
    const known = new Set(snaps.map((x) => x.name));
    if (kind === 'after-op') {
      await kill(pid);
    } else if (kind === 'write-loop') {
      const child = spawn(process.execPath, [loopScript, path.join(dir, 'w'), String(Math.floor(r() * 2 ** 31)), String(LOOP_FILES)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
      child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
      try {
        await waitFor(() => out.startsWith('ready') || child.exitCode !== null, 20_000, 'the write loop to start');
        await new Promise((res) => setTimeout(res, 100 + Math.floor(r() * 1400)));
        t.is(child.exitCode, null, `the write loop stopped before the kill: ${err}`);
        await kill(pid);
      } finally {
        child.kill('SIGKILL');
        await exited(child);
      }
      loopOps += (out.match(/\./g) ?? []).length * 20;
    } else {
      const cmd = snapshotCommand(s, dir);
      snapshotRun = cmd.done;
      await cmd.connected;
      await new Promise((res) => setTimeout(res, Math.floor(r() * 40)));
      await kill(pid);
    }
    const killed = pid;
    const killedAt = Date.now();
    const m = await replfs(s, ['mount', dir]);
    t.is(m.code, 0, `remount after kill at operation ${i} failed: ${m.stderr}${m.stdout}`);
    if (m.code !== 0) return;
    pid = await daemonPid(s, dir);

    if (snapshotRun) {
      const res = await snapshotRun;
      const listed = (JSON.parse(await cli(s, ['snapshots', dir, '--json'])) as { snapshots: Array<{ name: string }> }).snapshots.map((x) => x.name);
      const fresh = listed.filter((n) => !known.has(n));
      t.true(fresh.length <= 1, `at most one new snapshot after a kill during one snapshot command: ${fresh.join(', ')}`);
      if (res.code === 0) {
        const done = JSON.parse(res.stdout) as SnapshotJson;
        t.deepEqual(fresh, [done.snapshot.name], 'a snapshot the command reported as taken survives the kill');
      }
      if (fresh.length === 1) {
        // Taken while nothing wrote, and nothing has written since: the live tree is its reference.
        snaps.push({ name: fresh[0]!, ref: await copyReference(t, s, dir, backingOf(s, dir), fresh[0]!), afterOp: i, ids: w.idsByPath() });
        adopted++;
      }
      t.log(`  the snapshot command ${res.code === 0 ? 'completed' : `failed (${res.code}: ${res.stderr.trim().split('\n')[0]})`}; ${fresh.length ? `snapshot ${fresh[0]} kept` : 'no snapshot made'}`);
    }
    const remounted = Date.now();
    report(t, await checkModel(dir, w, ['w']), `the live tree matches the model after the kill at operation ${i}`);
    report(t, await checkSnapshots(s, dir, snaps, w), `snapshots after the kill at operation ${i} (${kind})`);
    t.log(`operation #${i}: killed daemon ${killed} (${kind}); remount ${remounted - killedAt} ms, ${snaps.length} snapshots checked in ${Date.now() - remounted} ms`);
    if (!t.passed) return;
  }
  report(t, await checkSnapshots(s, dir, snaps, w), 'snapshots at the end');
  t.true(counts['write-loop'] >= 1);
  t.log(`${OPS} operations, ${snaps.length} snapshots (${adopted} from interrupted commands), kills: ${JSON.stringify(counts)}, about ${loopOps} write-loop operations; ${Date.now() - started} ms`);
});

// ---------------------------------------------------------------- 3. garbage collection

/** Apparent size (`du -sb`) and allocated size (`du -s -B1`) of a directory. */
async function du(p: string): Promise<{ apparent: number; allocated: number }> {
  const apparent = Number((await must('du', ['-sb', p], 'du')).split('\t')[0]);
  const allocated = Number((await must('du', ['-s', '-B1', p], 'du')).split('\t')[0]);
  return { apparent, allocated };
}

test.serial('deleting snapshots keeps the others intact and frees the blocks only they needed', async (t) => {
  t.timeout(120_000);
  const seed = Math.floor(rng(SEED + 1)() * 2 ** 31);
  t.log(`seed ${SEED} (data seed ${seed})`);
  const r = rng(seed);
  const s = scratch(t);
  // Mounted beside the directory, so its .replfs/ can be measured while mounted.
  const back = path.join(s.dir, 'back');
  const mnt = path.join(s.dir, 'mnt');
  fs.mkdirSync(back);
  fs.mkdirSync(mnt);
  const SIZE = 2 * MiB;
  for (const n of ['A', 'B', 'C', 'D']) fs.writeFileSync(path.join(back, n), data(() => r() * 0.7 + 0.3, SIZE));
  await initVolume(t, s, back);
  await mountVolume(t, s, back, mnt);
  const blocks = path.join(back, '.replfs', 'blocks');
  const farm = path.join(back, '.replfs', 'farm');
  // Random, incompressible, never all zeros and never equal to anything else.
  const rewrite = (n: string) => fs.writeFileSync(path.join(mnt, n), data(() => r() * 0.7 + 0.3, SIZE));
  const sizes: string[] = [];
  const measure = async (when: string) => {
    const d = await du(blocks);
    sizes.push(`${when}: du -sb ${d.apparent}, allocated ${d.allocated}`);
    return d;
  };
  const del = async (snap: Snap) => {
    const res = JSON.parse(await cli(s, ['snapshot', 'delete', mnt, snap.name, '--json'])) as { deleted: string; gc: Record<string, number> };
    t.is(res.deleted, snap.name);
    await t.throwsAsync(fsp.lstat(path.join(mnt, '.snapshots', snap.name)), { code: 'ENOENT' }, `${snap.name} is gone from .snapshots`);
    return res.gc;
  };
  const check = async (live: Snap[], when: string) => {
    report(t, await checkSnapshots(s, mnt, live, null), `remaining snapshots ${when}`);
    const listed = (JSON.parse(await cli(s, ['snapshots', mnt, '--json'])) as { snapshots: Array<{ name: string }> }).snapshots.map((x) => x.name);
    t.deepEqual(listed, live.map((x) => x.name), `replfs snapshots ${when}`);
    if (live.length) t.is(await fsp.readlink(path.join(mnt, '.snapshots', 'latest')), live.at(-1)!.name);
  };

  // Epoch by epoch, what is preserved, and which snapshots need it:
  //   s1; A rewritten -> A's original (needed by s1 only)
  //   s2; B rewritten, C deleted -> B's original (s1, s2), C's inode in the farm (s1, s2)
  //   s3; D and A rewritten -> D's original (s1..s3), A's second version (s2, s3)
  //   (s1 deleted: A's original goes, its space is punched out of the first pack, which is sealed)
  //   s4; B rewritten -> B's second version (s3, s4), in a new pack
  //   (s2 deleted: B's original goes, and C's farm link)
  //   (s3 deleted: D's original and A's second version go: the first pack is empty and deleted)
  const s1 = await takeSnapshot(t, s, mnt, back, 0, 's1');
  rewrite('A');
  const s2 = await takeSnapshot(t, s, mnt, back, 0, 's2');
  rewrite('B');
  fs.unlinkSync(path.join(mnt, 'C'));
  const s3 = await takeSnapshot(t, s, mnt, back, 0, 's3');
  rewrite('D');
  rewrite('A');
  const before = await measure('s1..s3 taken, 4 files rewritten once');
  t.true(before.allocated >= 4 * SIZE, `the block store holds the 4 preserved versions (${before.allocated} bytes)`);
  t.is(fs.readdirSync(farm).length, 1, 'the deleted file is kept in the farm');
  await check([s1, s2, s3], 'before any delete');

  const gc1 = await del(s1);
  const after1 = await measure('s1 deleted');
  t.log('gc after deleting s1:', JSON.stringify(gc1));
  t.true(before.allocated - after1.allocated >= SIZE, `deleting s1 frees A's original (${before.allocated} -> ${after1.allocated})`);
  await check([s2, s3], 'after deleting s1');

  const s4 = await takeSnapshot(t, s, mnt, back, 0, 's4');
  rewrite('B');
  const withS4 = await measure('s4 taken, B rewritten');
  t.true(withS4.allocated - after1.allocated >= SIZE, 'B\'s second version is preserved for s4');

  const gc2 = await del(s2);
  const after2 = await measure('s2 deleted');
  t.log('gc after deleting s2:', JSON.stringify(gc2));
  t.true(withS4.allocated - after2.allocated >= SIZE, `deleting s2 frees B's original (${withS4.allocated} -> ${after2.allocated})`);
  t.is(fs.readdirSync(farm).length, 0, 'the farm link of C is gone with s2, the last snapshot that shows C');
  await check([s3, s4], 'after deleting s2');

  const gc3 = await del(s3);
  const after3 = await measure('s3 deleted');
  t.log('gc after deleting s3:', JSON.stringify(gc3));
  await check([s4], 'after deleting s3');
  // Nothing needs the first pack any more: it goes, and with it the apparent size.
  t.true(after3.apparent < after2.apparent, `du -sb shrinks once nothing needs the first pack (${after2.apparent} -> ${after3.apparent})`);
  t.true(after3.allocated >= SIZE && after3.allocated < 2 * SIZE, `what is left is B's second version (${after3.allocated} bytes)`);

  const gc4 = await del(s4);
  const after4 = await measure('s4 deleted (no snapshots left)');
  t.log('gc after deleting s4:', JSON.stringify(gc4));
  await check([], 'with no snapshots');
  t.true(after4.apparent < after3.apparent && after4.allocated <= 64 * KiB, `with no snapshot left, the block store is empty (${after4.apparent} bytes apparent, ${after4.allocated} allocated)`);
  for (const line of sizes) t.log(line);
});
