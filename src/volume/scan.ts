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
import { readdirIno } from './sys.js';
import { mapLimit } from './limit.js';

const LSTAT_CONCURRENCY = 32;
/** What libfuse renames a file to when it is unlinked while still open. */
const FUSE_HIDDEN = /^\.fuse_hidden[0-9a-f]{16}$/;

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

/**
 * Whether a file found with a recorded inode number is that recorded file. Inode numbers
 * are reused as soon as they are freed; a different type or birth time gives it away.
 */
export function sameFile(rec: FileRecord, st: BigIntStats): boolean {
  if (rec.t !== TypeTag[fileTypeOf(Number(st.mode))]) return false;
  return !(rec.btime && st.birthtimeNs > 0n && rec.btime !== st.birthtimeNs.toString());
}

export interface WalkEntry {
  rel: string;
  parent: FileId;
  name: string;
  st: BigIntStats;
}

/**
 * Visits every entry below the root, parents before children. `fidOf` maps a visited
 * directory to its id so children can name their parent. Refuses nested mount points
 * and nested protected directories.
 */
export async function walk(
  backing: Backing,
  skipAtRoot: ReadonlySet<string>,
  visit: (e: WalkEntry) => FileId | undefined,
): Promise<void> {
  const rootSt = await io.lstat(backing.abs(''));
  const queue: Array<{ rel: string; fid: FileId }> = [{ rel: '', fid: ROOT_FID }];
  while (queue.length > 0) {
    const dir = queue.shift()!;
    const listing = await readdirIno(backing.abs(dir.rel));
    const names = listing.names.filter((n) => !(dir.rel === '' && skipAtRoot.has(n)));
    if (dir.rel !== '' && names.includes(STATE_DIR)) {
      throw new ReplfsError('refused', `${joinRel(dir.rel, STATE_DIR)} exists: protected directories cannot be nested`);
    }
    const stats = await mapLimit(names, LSTAT_CONCURRENCY, (n) => io.lstat(backing.abs(joinRel(dir.rel, n))));
    names.forEach((name, i) => {
      const st = stats[i]!;
      const rel = joinRel(dir.rel, name);
      if (st.dev !== rootSt.dev) {
        throw new ReplfsError('refused', `${rel} is a mount point inside the protected directory`,
          'unmount it or protect a directory without nested mounts');
      }
      const fid = visit({ rel, parent: dir.fid, name, st });
      if (st.isDirectory() && fid !== undefined) queue.push({ rel, fid });
    });
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
  const byIno = new Map<number, FileId>();
  for (const [fid, rec] of recorded) if (!rec.gone && fid !== ROOT_FID) byIno.set(rec.ino, fid);
  const seen = new Map<FileId, { st: BigIntStats; names: NameRef[]; rel: string }>();
  const leftovers: Array<[string, FileId | undefined]> = [];

  await walk(backing, new Set([STATE_DIR]), ({ rel, parent, name, st }) => {
    if (FUSE_HIDDEN.test(name) && !st.isDirectory()) {
      leftovers.push([rel, byIno.get(Number(st.ino))]);
      return undefined;
    }
    const ino = Number(st.ino);
    let fid = byIno.get(ino);
    const rec = fid === undefined ? undefined : recorded.get(fid);
    if (fid !== undefined && rec && !sameFile(rec, st)) fid = undefined;
    if (fid === undefined) {
      fid = files.allocate();
      byIno.set(ino, fid);
      recorded.set(fid, { ...recordFromStat(st, []), names: [] });
      ops.push(...journal.mark(fid, ChangeKind.created | ChangeKind.data, { unknown: 'created-offline' }));
      result.created++;
      example(rel);
    }
    const s = seen.get(fid);
    if (s) s.names.push([parent, name]);
    else seen.set(fid, { st, names: [[parent, name]], rel });
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
    if (!now) {
      ops.push(...journal.mark(fid, ChangeKind.deleted | ChangeKind.unlinked));
      for (const ref of rec.names) entryChanged(ref, ChangeKind.deleted);
      ops.push(files.put(fid, { ...rec, gone: true, died: journal.epoch }));
      result.deleted++;
      example(rec.names[0] && files.pathOfName(rec.names[0]));
      continue;
    }
    const fresh = recordFromStat(now.st, now.names);
    const isNew = rec.names.length === 0;
    const added = now.names.filter((n) => !rec.names.some((o) => sameName(o, n)));
    const removed = rec.names.filter((o) => !now.names.some((n) => sameName(o, n)));
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
  await walk(backing, skipAtRoot, ({ parent, name, st }) => {
    const ino = Number(st.ino);
    const known = byIno.get(ino);
    if (known !== undefined) {
      recs.get(known)!.names.push([parent, name]);
      return known;
    }
    const fid = files.allocate();
    byIno.set(ino, fid);
    recs.set(fid, recordFromStat(st, [[parent, name]]));
    if (st.isDirectory()) dirs++;
    else { nfiles++; bytes += Number(st.size); }
    return fid;
  });
  for (const [fid, rec] of recs) ops.push(files.put(fid, rec));
  ops.push(files.nextFidOp());
  return { ops, files: nfiles, dirs, bytes };
}
