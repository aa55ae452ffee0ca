// The sender's change set (DESIGN.md, Replication, step 2): what changed between the base
// snapshot a destination confirmed and the snapshot being sent, read from the journal and
// the snapshot views, never from a tree walk. With no base (a first sync) it is every file
// of the snapshot, found by walking the snapshot's tree.
import { ROOT_FID, type Extent, type FileId } from '../core/types.js';
import { clip, coalesce } from '../volume/extents.js';
import { mapLimit } from '../volume/limit.js';
import type { Volume } from '../volume/index.js';
import { typeOfTag } from '../volume/format.js';
import type { NameRef, Node, NodeType } from './plan.js';

/** One file's state as of the snapshot being sent. */
export interface FileChange {
  fid: FileId;
  /** Type and names as of the snapshot; null when the file is gone by then. */
  node: Node | null;
  /** Attributes as of the snapshot (times as nanosecond strings); null when gone. */
  attr: { mode: number; uid: number; gid: number; size: number; rdev: number; atime: string; mtime: string } | null;
  /** A symlink's target. */
  target?: string;
  /** Extended attributes, values base64. */
  xattrs?: Array<[string, string]>;
  /** verify only: the file's paths as of the snapshot. */
  paths?: string[];
  /**
   * Byte ranges of a regular file to compare and send: the journal's extents, or the whole
   * file when it is new since the base or its journal is unknown.
   */
  extents: Extent[];
}

export function nodeTypeOf(tag: string): NodeType {
  const t = typeOfTag(tag);
  return t === 'file' || t === 'dir' || t === 'symlink' ? t : 'other';
}

/** Files described at once while a change set is made (LevelDB reads and lstats). */
const CONCURRENCY = 32;

async function describe(volume: Volume, snapshot: string, fid: FileId, extents: Extent[] | 'whole', withPaths: boolean): Promise<FileChange> {
  const view = volume.view(snapshot);
  if (!(await view.has(fid))) return { fid, node: null, attr: null, extents: [] };
  const a = await view.attrOf(fid);
  const type = nodeTypeOf(a.t);
  const change: FileChange = {
    fid,
    node: { type, names: await view.namesOf(fid) },
    attr: { mode: a.mode, uid: a.uid, gid: a.gid, size: a.size, rdev: a.rdev, atime: a.atime, mtime: a.mtime },
    extents: type !== 'file' ? [] : extents === 'whole' ? (a.size > 0 ? [{ offset: 0, length: a.size }] : []) : clip(coalesce(extents), a.size),
  };
  if (a.l !== undefined) change.target = a.l;
  if (a.x && a.x.length > 0) change.xattrs = a.x;
  if (withPaths) change.paths = await view.pathsOf(fid);
  return change;
}

/** One file as of `snapshot` (node null when the snapshot does not have it), with the ranges to compare. */
export function describeFile(volume: Volume, snapshot: string, fid: FileId, extents: Extent[] | 'whole'): Promise<FileChange> {
  return describe(volume, snapshot, fid, extents, false);
}

export interface ChangeSetOptions {
  /**
   * A snapshot an interrupted sync was applying: every file it changed since the base is
   * described too (as of the target), its changed ranges compared again.
   */
  also?: string;
  /** verify: each file's paths as of the snapshot. */
  paths?: boolean;
}

/**
 * The change set from snapshot `base` (null for everything) to snapshot `target`, ordered
 * by file id. Files whose only change is a parent directory's rename are not in it: their
 * names ([parent, name]) did not change. Directories whose entries changed are in it, for
 * their times.
 */
export async function changeSet(volume: Volume, base: string | null, target: string, opts: ChangeSetOptions = {}): Promise<FileChange[]> {
  const withPaths = opts.paths === true;
  const out: FileChange[] = [];
  if (base === null) {
    const view = volume.view(target);
    out.push(await describe(volume, target, ROOT_FID, 'whole', withPaths));
    const seen = new Set<FileId>([ROOT_FID]);
    let level: FileId[] = [ROOT_FID];
    while (level.length > 0) {
      const found: FileId[] = [];
      const dirs: FileId[] = [];
      for (const children of await mapLimit(level, CONCURRENCY, (dir) => view.childrenOf(dir))) {
        for (const child of children) {
          if (seen.has(child.fid)) continue;
          seen.add(child.fid);
          found.push(child.fid);
          if (child.t === 'd') dirs.push(child.fid);
        }
      }
      out.push(...await mapLimit(found, CONCURRENCY, (fid) => describe(volume, target, fid, 'whole', withPaths)));
      level = dirs;
    }
  } else {
    // What to compare of each file: whole (new since the base, or its journal unknown), or ranges.
    const ranges = new Map<FileId, Extent[] | 'whole'>();
    const add = (fid: FileId, r: Extent[] | 'whole') => {
      const had = ranges.get(fid);
      ranges.set(fid, had === 'whole' || r === 'whole' ? 'whole' : [...(had ?? []), ...r]);
    };
    const snaps = [target, ...(opts.also !== undefined && opts.also !== target ? [opts.also] : [])];
    for (const to of snaps) {
      for (const e of (await volume.diff(base, to)).files) add(e.id, e.status === 'added' || e.unknown !== null ? 'whole' : e.extents);
    }
    out.push(...await mapLimit([...ranges], CONCURRENCY, ([fid, r]) => describe(volume, target, fid, r, withPaths)));
    // A directory that gained or lost a name changed its times; the journal knows it only as
    // a change of its entries, so it comes along with the names that came and went (the
    // directories of a file whose names did not change are left out).
    const parents = new Set<FileId>();
    const key = (names: readonly NameRef[]) => names.map(([p, n]) => `${p}/${n}`).sort().join('\0');
    const nowNames = new Map(out.map((c) => [c.fid, c.node?.names ?? []]));
    await mapLimit([base, ...snaps.slice(1)], 2, async (snap) => {
      const view = volume.view(snap);
      await mapLimit([...ranges.keys()], CONCURRENCY, async (fid) => {
        const then = (await view.has(fid)) ? await view.namesOf(fid) : [];
        const now = nowNames.get(fid) ?? [];
        if (key(then) === key(now)) return;
        for (const [parent] of [...then, ...now]) parents.add(parent);
      });
    });
    const extra = [...parents].filter((fid) => !ranges.has(fid));
    for (const c of await mapLimit(extra, CONCURRENCY, (fid) => describe(volume, target, fid, [], withPaths))) if (c.node) out.push(c);
  }
  return out.sort((a, b) => a.fid - b.fid);
}
