// The sender's change set (DESIGN.md, Replication, step 2): what changed between the base
// snapshot a destination confirmed and the snapshot being sent, read from the journal and
// the snapshot views, never from a tree walk. With no base (a first sync) it is every file
// of the snapshot, found by walking the snapshot's tree.
import { ROOT_FID, type Extent, type FileId } from '../core/types.js';
import type { Volume } from '../volume/index.js';
import { typeOfTag } from '../volume/format.js';
import type { Node, NodeType } from './plan.js';

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

async function describe(volume: Volume, snapshot: string, fid: FileId, extents: Extent[] | 'whole'): Promise<FileChange> {
  const view = volume.view(snapshot);
  if (!(await view.has(fid))) return { fid, node: null, attr: null, extents: [] };
  const a = await view.attrOf(fid);
  const type = nodeTypeOf(a.t);
  const change: FileChange = {
    fid,
    node: { type, names: await view.namesOf(fid) },
    attr: { mode: a.mode, uid: a.uid, gid: a.gid, size: a.size, rdev: a.rdev, atime: a.atime, mtime: a.mtime },
    extents: type !== 'file' ? [] : extents === 'whole' ? (a.size > 0 ? [{ offset: 0, length: a.size }] : []) : extents,
  };
  if (a.l !== undefined) change.target = a.l;
  if (a.x && a.x.length > 0) change.xattrs = a.x;
  return change;
}

/**
 * The change set from snapshot `base` (null for everything) to snapshot `target`, ordered
 * by file id. Files whose only change is a parent directory's rename are not in it: their
 * names ([parent, name]) did not change. Directories whose entries changed are in it, for
 * their times.
 */
export async function changeSet(volume: Volume, base: string | null, target: string): Promise<FileChange[]> {
  const out: FileChange[] = [];
  if (base === null) {
    const view = volume.view(target);
    const seen = new Set<FileId>([ROOT_FID]);
    out.push(await describe(volume, target, ROOT_FID, 'whole'));
    const queue: FileId[] = [ROOT_FID];
    while (queue.length > 0) {
      const dir = queue.shift()!;
      for (const child of await view.childrenOf(dir)) {
        if (seen.has(child.fid)) continue;
        seen.add(child.fid);
        out.push(await describe(volume, target, child.fid, 'whole'));
        if (child.t === 'd') queue.push(child.fid);
      }
    }
  } else {
    const diff = await volume.diff(base, target);
    const sent = new Set<FileId>();
    for (const e of diff.files) {
      const whole = e.status === 'added' || e.unknown !== null;
      out.push(await describe(volume, target, e.id, whole ? 'whole' : e.extents));
      sent.add(e.id);
    }
    // A directory that gained or lost a name changed its times; the journal knows it only as
    // a change of its entries, so it comes along with the names that came and went.
    const before = volume.view(base);
    const parents = new Set<FileId>();
    for (const c of out) {
      for (const [parent] of c.node?.names ?? []) parents.add(parent);
      if (await before.has(c.fid)) for (const [parent] of await before.namesOf(c.fid)) parents.add(parent);
    }
    for (const fid of parents) {
      if (sent.has(fid)) continue;
      const c = await describe(volume, target, fid, []);
      if (c.node) out.push(c);
    }
  }
  return out.sort((a, b) => a.fid - b.fid);
}
