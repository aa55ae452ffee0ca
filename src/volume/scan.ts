// Walking the protected directory. `init` uses the walk to record a baseline; every
// mount uses it to find what changed while replfs was not watching (edits made while
// unmounted, or lost with power): size, mtime and ctime against the recorded values.
import { unlink } from 'node:fs/promises';
import { io } from './io.js';
import type { BigIntStats } from 'node:fs';
import { ChangeKind, ROOT_FID, type FileId, type FileType } from '../core/types.js';
import { ReplfsError } from '../errors/index.js';
import { STATE_DIR, TypeTag, type FileRecord, type NameRef } from './format.js';
import type { Backing } from './backing.js';
import { joinRel } from './backing.js';
import type { FileTable } from './files.js';
import type { Journal } from './journal.js';
import type { Op } from './store.js';
import { readdirStatMany, StatField as F, STAT_FIELDS as F_COUNT, type DirStats } from './sys.js';

/**
 * The walk reads up to this many directories ahead of the one it visits, on the thread
 * pool while the JS thread works, several to a call: when fewer than half as many are
 * still to come, the next ones are asked for in one readdirStatMany...
 */
const READ_AHEAD = 16;
/**
 * ...as long as their sizes (what lstat gives a directory: roughly proportional to its
 * entries, ~24 KiB for a thousand on ext4) add up to no more than this, so that a run of
 * huge directories is not all held in memory at once.
 */
const READ_AHEAD_BYTES = 1 << 20;
/** What libfuse renames a file to when it is unlinked while still open. */
const FUSE_HIDDEN = /^\.fuse_hidden[0-9a-f]{16}$/;
const FUSE_HIDDEN_LENGTH = 28;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const NS_PER_SEC = 1_000_000_000;

export function fileTypeOf(mode: number): FileType {
  switch (mode & 0o170000) {
    case 0o040000: return 'dir';
    case 0o120000: return 'symlink';
    case 0o010000: return 'fifo';
    case 0o140000: return 'socket';
    case 0o020000: return 'chardev';
    case 0o060000: return 'blockdev';
    default: return 'file';
  }
}

/** TypeTag[fileTypeOf(mode)] for each file format, (mode & S_IFMT) >> 12. */
const TAG_OF_FORMAT: readonly string[] = Array.from({ length: 16 }, (_, format) => TypeTag[fileTypeOf(format << 12)]);

function tagOf(mode: number): string {
  return TAG_OF_FORMAT[(mode & S_IFMT) >>> 12]!;
}

export function recordFromStat(st: BigIntStats, names: NameRef[]): FileRecord {
  const rec: FileRecord = {
    t: TypeTag[fileTypeOf(Number(st.mode))],
    ino: Number(st.ino),
    names,
    size: Number(st.size),
    mtime: st.mtimeNs.toString(),
    ctime: st.ctimeNs.toString(),
  };
  if (st.birthtimeNs > 0n) rec.btime = st.birthtimeNs.toString();
  return rec;
}

// Times in a stat row are whole seconds plus nanoseconds; records keep sec * 1e9 + nsec as
// a decimal string (what BigIntStats' mtimeNs.toString() gives). The functions below
// produce and compare those strings without a BigInt in the usual case: a positive number
// of seconds that a double holds exactly, and nanoseconds below a second. Anything else
// takes the BigInt way, so the results are always those of BigInt arithmetic.

function usual(sec: number, nsec: number): boolean {
  return sec >= 1 && sec < 1e15 && nsec >= 0 && nsec < NS_PER_SEC;
}

/** The decimal string of sec * 1e9 + nsec. */
export function nsString(sec: number, nsec: number): string {
  if (usual(sec, nsec)) {
    const n = String(nsec);
    return String(sec) + '000000000'.slice(n.length) + n;
  }
  return (BigInt(sec) * 1_000_000_000n + BigInt(nsec)).toString();
}

/** Whether `s` is nsString(sec, nsec) (false for anything but a string: records come from disk). */
export function nsEquals(s: string, sec: number, nsec: number): boolean {
  if (typeof s !== 'string') return false;
  const len = s.length;
  if (!usual(sec, nsec) || len <= 9 || len > 24) return s === nsString(sec, nsec);
  const split = len - 9;
  let a = 0;
  for (let i = 0; i < split; i++) {
    const d = s.charCodeAt(i) - 48;
    if (d < 0 || d > 9 || (i === 0 && d === 0)) return false;
    a = a * 10 + d;
  }
  if (a !== sec) return false;
  let b = 0;
  for (let i = split; i < len; i++) {
    const d = s.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return false;
    b = b * 10 + d;
  }
  return b === nsec;
}

/** Whether sec * 1e9 + nsec > 0. */
function nsPositive(sec: number, nsec: number): boolean {
  if (nsec >= 0 && nsec < NS_PER_SEC) return sec > 0 || (sec === 0 && nsec > 0);
  return BigInt(sec) * 1_000_000_000n + BigInt(nsec) > 0n;
}

/** recordFromStat for row `at` of a readdirStat result. */
export function recordFromRow(stats: Float64Array, at: number, names: NameRef[]): FileRecord {
  const rec: FileRecord = {
    t: tagOf(stats[at + F.mode]!),
    ino: stats[at + F.ino]!,
    names,
    size: stats[at + F.size]!,
    mtime: nsString(stats[at + F.mtimeSec]!, stats[at + F.mtimeNsec]!),
    ctime: nsString(stats[at + F.ctimeSec]!, stats[at + F.ctimeNsec]!),
  };
  const bsec = stats[at + F.birthtimeSec]!, bnsec = stats[at + F.birthtimeNsec]!;
  if (nsPositive(bsec, bnsec)) rec.btime = nsString(bsec, bnsec);
  return rec;
}

/**
 * Whether a file found with a recorded inode number is that recorded file. Inode numbers
 * are reused as soon as they are freed; a different type or birth time gives it away.
 */
export function sameFile(rec: FileRecord, stats: Float64Array, at: number): boolean {
  if (rec.t !== tagOf(stats[at + F.mode]!)) return false;
  if (!rec.btime) return true;
  const bsec = stats[at + F.birthtimeSec]!, bnsec = stats[at + F.birthtimeNsec]!;
  return !nsPositive(bsec, bnsec) || nsEquals(rec.btime, bsec, bnsec);
}

/** Writes the numbers of a BigIntStats into row `at`, as readdirStat would have. */
function fillRow(stats: Float64Array, at: number, st: BigIntStats): void {
  const time = (ns: bigint, field: number) => {
    let nsec = ns % 1_000_000_000n;
    if (nsec < 0n) nsec += 1_000_000_000n;
    stats[at + field] = Number((ns - nsec) / 1_000_000_000n);
    stats[at + field + 1] = Number(nsec);
  };
  const dev = BigInt.asUintN(64, st.dev);
  stats[at + F.ino] = Number(st.ino);
  stats[at + F.mode] = Number(st.mode);
  stats[at + F.nlink] = Number(st.nlink);
  stats[at + F.size] = Number(st.size);
  time(st.mtimeNs, F.mtimeSec);
  time(st.ctimeNs, F.ctimeSec);
  time(st.birthtimeNs, F.birthtimeSec);
  stats[at + F.devHi] = Number(dev >> 32n);
  stats[at + F.devLo] = Number(dev & 0xffffffffn);
  stats[at + F.rdev] = Number(st.rdev);
  stats[at + F.errno] = 0;
}

function isDirRow(stats: Float64Array, at: number): boolean {
  return (stats[at + F.mode]! & S_IFMT) === S_IFDIR;
}

export interface WalkEntry {
  /** The directory the entry is in, relative to the root ('' for the root). */
  dir: string;
  parent: FileId;
  name: string;
  /** The entry's lstat numbers: row `at` of a readdirStat result (see StatField). */
  stats: Float64Array;
  at: number;
}

/** The entry's path relative to the root. */
export function relOf(e: WalkEntry): string {
  return joinRel(e.dir, e.name);
}

/**
 * Visits every entry below the root, parents before children (breadth first, entries in
 * directory order). `visit` maps a visited directory to its id so children can name their
 * parent. Refuses nested mount points and nested protected directories.
 *
 * Each directory is read with one readdirStat: those read ahead on the thread pool while
 * the JS thread visits another, the others (the root, and a directory too big to be read
 * ahead) the way `io` runs syscalls. An entry that readdirStat could not look at (a name
 * that is not valid UTF-8, or a failed lstat) is looked at by name as a single lstat
 * would, with the same result or error.
 */
export async function walk(
  backing: Backing,
  skipAtRoot: ReadonlySet<string>,
  visit: (e: WalkEntry) => FileId | undefined,
): Promise<void> {
  const rootDev = BigInt.asUintN(64, (await io.lstat(backing.abs(''))).dev);
  const rootDevHi = Number(rootDev >> 32n), rootDevLo = Number(rootDev & 0xffffffffn);
  interface Dir { rel: string; fid: FileId; size: number; listing?: Promise<DirStats> | undefined }
  const queue: Array<Dir | undefined> = [{ rel: '', fid: ROOT_FID, size: 0 }];
  const ignore = () => undefined;
  // queue[head + 1 .. asked - 1] have been asked for.
  let asked = 1;
  const readAhead = (head: number) => {
    if (asked <= head) asked = head + 1;
    if (asked - head - 1 >= READ_AHEAD / 2) return;
    let bytes = 0;
    for (let i = head + 1; i < asked; i++) bytes += queue[i]!.size;
    const batch: Dir[] = [];
    for (; asked < queue.length && asked <= head + READ_AHEAD; asked++) {
      const next = queue[asked]!;
      bytes += next.size;
      if (bytes > READ_AHEAD_BYTES) break;
      batch.push(next);
    }
    if (batch.length === 0) return;
    const read = readdirStatMany(batch.map((d) => backing.abs(d.rel)));
    batch.forEach((d, k) => {
      d.listing = read.then((all) => {
        const one = all[k]!;
        if (one instanceof Error) throw one;
        return one;
      });
      // Awaited in its turn; a failure of one read ahead of a failing walk goes unheard.
      d.listing.catch(ignore);
    });
  };
  for (let head = 0; head < queue.length; head++) {
    const dir = queue[head]!;
    queue[head] = undefined;
    readAhead(head);
    const { names, stats } = await (dir.listing ?? io.readdirStat(backing.abs(dir.rel)));
    const atRoot = dir.rel === '';
    if (!atRoot && names.includes(STATE_DIR)) {
      throw new ReplfsError('refused', `${joinRel(dir.rel, STATE_DIR)} exists: protected directories cannot be nested`);
    }
    for (let i = 0; i < names.length; i++) {
      const at = i * F_COUNT;
      if (stats[at + F.errno] !== 0 && !(atRoot && skipAtRoot.has(names[i]!))) {
        fillRow(stats, at, await io.lstat(backing.abs(joinRel(dir.rel, names[i]!))));
      }
    }
    for (let i = 0; i < names.length; i++) {
      const name = names[i]!;
      if (atRoot && skipAtRoot.has(name)) continue;
      const at = i * F_COUNT;
      if (stats[at + F.devHi] !== rootDevHi || stats[at + F.devLo] !== rootDevLo) {
        throw new ReplfsError('refused', `${joinRel(dir.rel, name)} is a mount point inside the protected directory`,
          'unmount it or protect a directory without nested mounts');
      }
      const fid = visit({ dir: dir.rel, parent: dir.fid, name, stats, at });
      if (fid !== undefined && isDirRow(stats, at)) queue.push({ rel: joinRel(dir.rel, name), fid, size: stats[at + F.size]! });
    }
  }
}

export interface ReconcileResult {
  ops: Op[];
  created: number;
  changed: number;
  moved: number;
  deleted: number;
  /** A few of the paths found changed (at most EXAMPLES). */
  examples: string[];
}

const EXAMPLES = 10;

/** A file seen in the walk whose record has to be written (or compared name by name). */
interface Seen {
  /** The record as the walk found the file: its first sighting's numbers, every name. */
  fresh: FileRecord;
  /** Path of the first name seen. */
  rel: string;
}

/**
 * Whether the file in row `at`, found as `parent`/`name`, is exactly as recorded: the one
 * name, and everything recordFromRow would put in a record (type and inode number
 * matched already) equal to the recorded values.
 */
function asRecorded(rec: FileRecord, stats: Float64Array, at: number, parent: FileId, name: string): boolean {
  const only = rec.names.length === 1 ? rec.names[0]! : undefined;
  if (!only || only[0] !== parent || only[1] !== name || rec.size !== stats[at + F.size]) return false;
  if (!nsEquals(rec.mtime, stats[at + F.mtimeSec]!, stats[at + F.mtimeNsec]!)) return false;
  if (!nsEquals(rec.ctime, stats[at + F.ctimeSec]!, stats[at + F.ctimeNsec]!)) return false;
  const bsec = stats[at + F.birthtimeSec]!, bnsec = stats[at + F.birthtimeNsec]!;
  return nsPositive(bsec, bnsec) ? rec.btime !== undefined && nsEquals(rec.btime, bsec, bnsec) : rec.btime === undefined;
}

/**
 * Compares the tree with the recorded files and journals every difference: new inodes
 * as created, changed size/mtime/ctime as modified (whole-file compare), missing ones
 * as deleted, and changed names as renames or link changes.
 */
export async function reconcile(
  backing: Backing,
  files: FileTable,
  journal: Journal,
  recorded: Map<FileId, FileRecord>,
  /** Called before a leftover `.fuse_hidden` file is removed, with the id it had. */
  beforeRemove?: (rel: string, fid: FileId) => Promise<void>,
): Promise<ReconcileResult> {
  const result: ReconcileResult = { ops: [], created: 0, changed: 0, moved: 0, deleted: 0, examples: [] };
  const ops = result.ops;
  const example = (rel: string | undefined) => {
    if (rel !== undefined && result.examples.length < EXAMPLES && !result.examples.includes(rel)) result.examples.push(rel);
  };
  // Inode number -> id of every recorded live file but the root: the table's map, which
  // mirrors `recorded` as loaded (nothing is put until the walk is over), under the ids
  // given to new files here.
  const newByIno = new Map<number, FileId>();
  const fidOfIno = (ino: number): FileId | undefined => {
    const fid = newByIno.get(ino) ?? files.fidOfIno(ino);
    return fid === ROOT_FID ? undefined : fid;
  };
  // Per file seen: the path of its directory when it was found exactly as recorded (the
  // usual case, which then needs nothing more unless another name turns up), else a Seen.
  const seen = new Map<FileId, string | Seen>();
  const leftovers: Array<[string, FileId | undefined]> = [];

  await walk(backing, new Set([STATE_DIR]), (e) => {
    const { stats, at, parent, name } = e;
    if (name.length === FUSE_HIDDEN_LENGTH && FUSE_HIDDEN.test(name) && !isDirRow(stats, at)) {
      leftovers.push([relOf(e), fidOfIno(stats[at + F.ino]!)]);
      return undefined;
    }
    const ino = stats[at + F.ino]!;
    let fid = fidOfIno(ino);
    const rec = fid === undefined ? undefined : recorded.get(fid);
    if (fid !== undefined && rec && !sameFile(rec, stats, at)) fid = undefined;
    const known = fid !== undefined;
    if (fid === undefined) {
      fid = files.allocate();
      newByIno.set(ino, fid);
      recorded.set(fid, { ...recordFromRow(stats, at, []), names: [] });
      ops.push(...journal.mark(fid, ChangeKind.created | ChangeKind.data, { unknown: 'created-offline' }));
      result.created++;
      example(relOf(e));
    }
    const s = seen.get(fid);
    if (s === undefined) {
      if (known && rec && asRecorded(rec, stats, at, parent, name)) seen.set(fid, e.dir);
      else seen.set(fid, { fresh: recordFromRow(stats, at, [[parent, name]]), rel: relOf(e) });
    } else if (typeof s === 'string') {
      // A second name of a file first found as recorded: its record, with both names.
      const r = recorded.get(fid)!;
      const first = r.names[0]!;
      const fresh: FileRecord = { t: r.t, ino: r.ino, names: [[first[0], first[1]], [parent, name]], size: r.size, mtime: r.mtime, ctime: r.ctime };
      if (r.btime !== undefined) fresh.btime = r.btime;
      seen.set(fid, { fresh, rel: joinRel(s, first[1]) });
    } else {
      s.fresh.names.push([parent, name]);
    }
    return fid;
  });

  // Files unlinked while open that a killed daemon never got to remove; nobody can have
  // them open now, so they go the way their last close would have sent them.
  for (const [rel, fid] of leftovers) {
    if (fid !== undefined && beforeRemove) await beforeRemove(rel, fid);
    await unlink(backing.abs(rel)).catch(() => undefined);
  }

  const rootRec = recorded.get(ROOT_FID);
  const rootNow = recordFromStat(await io.lstat(backing.abs('')), []);
  if (!rootRec || rootRec.ino !== rootNow.ino || rootRec.ctime !== rootNow.ctime || rootRec.mtime !== rootNow.mtime) {
    if (rootRec) ops.push(...journal.mark(ROOT_FID, ChangeKind.attributes));
    ops.push(files.put(ROOT_FID, rootNow));
  }

  const sameName = (a: NameRef, b: NameRef) => a[0] === b[0] && a[1] === b[1];
  const entryChanged = (ref: NameRef, kinds: number) => {
    ops.push(...journal.markEntry(ref[0], ref[1], kinds), ...journal.mark(ref[0], ChangeKind.entries));
  };

  for (const [fid, rec] of recorded) {
    if (fid === ROOT_FID || rec.gone) continue;
    const now = seen.get(fid);
    if (now === undefined) {
      ops.push(...journal.mark(fid, ChangeKind.deleted | ChangeKind.unlinked));
      for (const ref of rec.names) entryChanged(ref, ChangeKind.deleted);
      ops.push(files.put(fid, { ...rec, gone: true, died: journal.epoch }));
      result.deleted++;
      example(rec.names[0] && files.pathOfName(rec.names[0]));
      continue;
    }
    // Found as recorded, under its one recorded name: nothing to journal or write.
    if (typeof now === 'string') continue;
    const { fresh } = now;
    const isNew = rec.names.length === 0;
    const added = fresh.names.filter((n) => !rec.names.some((o) => sameName(o, n)));
    const removed = rec.names.filter((o) => !fresh.names.some((n) => sameName(o, n)));
    for (const ref of added) entryChanged(ref, ChangeKind.created);
    for (const ref of removed) entryChanged(ref, ChangeKind.deleted);
    if (!isNew && (added.length > 0 || removed.length > 0)) {
      const kinds = added.length === removed.length ? ChangeKind.renamed
        : added.length > removed.length ? ChangeKind.linked : ChangeKind.unlinked;
      ops.push(...journal.mark(fid, kinds));
      result.moved++;
      example(now.rel);
    }
    if (!isNew && (fresh.size !== rec.size || fresh.mtime !== rec.mtime || fresh.ctime !== rec.ctime)) {
      if (rec.t === TypeTag.dir) {
        ops.push(...journal.mark(fid, ChangeKind.attributes));
      } else {
        ops.push(...journal.mark(fid, ChangeKind.data | ChangeKind.attributes, { unknown: 'offline-change' }));
        result.changed++;
        example(now.rel);
      }
    }
    if (isNew || added.length || removed.length || fresh.size !== rec.size || fresh.mtime !== rec.mtime || fresh.ctime !== rec.ctime) {
      ops.push(files.put(fid, fresh));
    }
  }
  if (result.created > 0) ops.push(files.nextFidOp());
  return result;
}

/** Records every file of a freshly protected directory, journaling nothing. */
export async function baseline(backing: Backing, files: FileTable, skipAtRoot: ReadonlySet<string>): Promise<{ ops: Op[]; files: number; dirs: number; bytes: number }> {
  const ops: Op[] = [];
  const rootSt = await io.lstat(backing.abs(''));
  ops.push(files.put(ROOT_FID, recordFromStat(rootSt, [])));
  const byIno = new Map<number, FileId>();
  const recs = new Map<FileId, FileRecord>();
  let nfiles = 0, dirs = 0, bytes = 0;
  await walk(backing, skipAtRoot, ({ parent, name, stats, at }) => {
    const ino = stats[at + F.ino]!;
    const known = byIno.get(ino);
    if (known !== undefined) {
      recs.get(known)!.names.push([parent, name]);
      return known;
    }
    const fid = files.allocate();
    byIno.set(ino, fid);
    recs.set(fid, recordFromRow(stats, at, [[parent, name]]));
    if (isDirRow(stats, at)) dirs++;
    else { nfiles++; bytes += stats[at + F.size]!; }
    return fid;
  });
  for (const [fid, rec] of recs) ops.push(files.put(fid, rec));
  ops.push(files.nextFidOp());
  return { ops, files: nfiles, dirs, bytes };
}
