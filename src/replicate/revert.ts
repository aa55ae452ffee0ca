// Making a volume's live files equal to one of its snapshots again (as `zfs rollback`
// does), touching only what the journal says changed since: names through the sync's
// planner (so swaps and cycles are safe), changed block ranges copied from the snapshot
// view, attributes last. Used when a replica is promoted while a sync was half applied,
// and when a former source takes a sync from the volume that replaced it.
//
// Every change goes through the volume's own operations: journaled and copy-on-write like
// any other, so a snapshot taken just before keeps what is undone. Stopped half way, it
// can simply be run again: the journal then also holds what the first run did.
import { constants as fsc } from 'node:fs';
import { ROOT_FID, type FileId, type FileType } from '../core/types.js';
import { ReplfsError } from '../errors/index.js';
import type { Volume } from '../volume/index.js';
import { mapLimit } from '../volume/limit.js';
import { specOf } from '../volume/view.js';
import { describeFile, type FileChange } from './changes.js';
import { plan, stepBatches, type Node, type NodeType, type Step } from './plan.js';

export interface RevertReport {
  snapshot: string;
  /** Files whose names, data or attributes were put back. */
  files: number;
  /** Name changes made (renames, links, creations, removals). */
  steps: number;
  /** Bytes copied back from the snapshot. */
  bytesCopied: number;
}

const CONCURRENCY = 8;
const CHUNK = 1024 * 1024;

function nodeType(t: FileType): NodeType {
  return t === 'file' || t === 'dir' || t === 'symlink' ? t : 'other';
}

/** The live tree made equal to snapshot `name` again. The volume must be open for writing and not mounted. */
export async function revertTo(volume: Volume, name: string): Promise<RevertReport> {
  if (!volume.writable) throw new ReplfsError('refused', 'the volume is open read-only');
  volume.snapshotNamed(name);
  const diff = await volume.diff(name, 'live');
  // Each changed file as the snapshot has it: what to put back.
  const changes: FileChange[] = await mapLimit(diff.files, CONCURRENCY, (f) =>
    describeFile(volume, name, f.id, f.status === 'removed' || f.unknown !== null || f.kinds.includes('truncated') ? 'whole' : f.extents));
  // A directory that gained or lost a name changed its times, which the journal holds only
  // as a change of its entries: such directories are put back too (as a sync sends them).
  const listed = new Map(changes.map((c) => [c.fid, c]));
  const parents = new Set<FileId>();
  for (const f of diff.files) {
    if (f.status !== 'added' && f.status !== 'removed' && f.status !== 'renamed') continue;
    const rec = await volume.files.get(f.id);
    for (const [parent] of [...(rec?.names ?? []), ...(listed.get(f.id)?.node?.names ?? [])]) if (!listed.has(parent)) parents.add(parent);
  }
  for (const c of await mapLimit([...parents], CONCURRENCY, (fid) => describeFile(volume, name, fid, []))) if (c.node) changes.push(c);
  const report: RevertReport = { snapshot: name, files: changes.length, steps: 0, bytesCopied: 0 };
  if (changes.length === 0) return report;

  // The live names of the changed files and of every directory on the way, old and new.
  const current = new Map<FileId, Node | undefined>();
  const load = async (fid: FileId): Promise<void> => {
    if (current.has(fid)) return;
    current.set(fid, undefined);
    const rec = await volume.files.get(fid);
    const node = rec && !rec.gone ? { type: nodeType(volume.files.typeOf(rec)), names: rec.names } : undefined;
    current.set(fid, node);
    for (const [parent] of node?.names ?? []) await load(parent);
  };
  for (const c of changes) {
    await load(c.fid);
    for (const [parent] of c.node?.names ?? []) await load(parent);
  }
  const byFid = new Map(changes.map((c) => [c.fid, c]));
  const stage = `.replfs-revert-${Math.random().toString(16).slice(2, 10)}`;
  const steps = plan({ current: (fid) => current.get(fid), changes: new Map(changes.map((c) => [c.fid, c.node])), stage });
  report.steps = steps.length;

  // Names.
  const me = { uid: volume.myUid, gid: volume.myGid, pid: process.pid };
  const staged = steps.some((s) => (s.op === 'rename' || s.op === 'link' ? s.from.startsWith(`${stage}/`) || s.to.startsWith(`${stage}/`) : s.path.startsWith(`${stage}/`)));
  if (staged) await volume.mkdir(`/${stage}`, 0o700, me);
  const made = new Set<FileId>();
  const apply = (s: Step): Promise<void> => {
    if (s.op === 'create') made.add(s.fid);
    return applyStep(volume, s, byFid.get(s.fid), me);
  };
  for (const batch of stepBatches(steps)) await mapLimit(batch, CONCURRENCY, apply);
  if (staged) await volume.rmdir(`/${stage}`);

  // Data: the changed ranges (or all of a file made again) read from the snapshot.
  const view = volume.view(name);
  const pathAt = async (c: FileChange) => (await view.pathsOf(c.fid))[0] ?? '';
  await mapLimit(changes.filter((c) => c.node?.type === 'file' && c.attr), CONCURRENCY, async (c) => {
    const ranges = made.has(c.fid) ? (c.attr!.size > 0 ? [{ offset: 0, length: c.attr!.size }] : []) : c.extents;
    if (ranges.length === 0) return;
    const rel = await pathAt(c);
    const h = await view.openFid(c.fid);
    const fd = await volume.open(`/${rel}`, fsc.O_WRONLY);
    const buf = Buffer.allocUnsafe(CHUNK);
    try {
      for (const r of ranges) {
        for (let pos = r.offset; pos < r.offset + r.length; pos += CHUNK) {
          const want = Math.min(CHUNK, r.offset + r.length - pos);
          const got = await view.read(h, buf, want, pos);
          if (got < want) buf.fill(0, got, want);
          await volume.write(fd, buf, want, pos);
          report.bytesCopied += want;
        }
      }
    } finally {
      view.release(h);
      await volume.release(fd);
    }
  });

  // Attributes (sizes with them): files first, then directories deepest first.
  const setAttrs = async (c: FileChange) => {
    const a = c.attr!;
    const rel = c.fid === ROOT_FID ? '' : await pathAt(c);
    const type = c.node!.type;
    await volume.setAttributes(rel === '' ? '/' : `/${rel}`, {
      type, ...(type === 'file' ? { size: a.size } : {}),
      uid: a.uid, gid: a.gid, mode: a.mode, atime: specOf(a.atime), mtime: specOf(a.mtime),
      xattrs: (c.xattrs ?? []).map(([n, v]) => [n, Buffer.from(v, 'base64')]),
    });
  };
  const kept = changes.filter((c) => c.node && c.attr);
  await mapLimit(kept.filter((c) => c.node!.type !== 'dir'), CONCURRENCY, setAttrs);
  const dirs = await Promise.all(kept.filter((c) => c.node!.type === 'dir').map(async (c) => ({ c, depth: c.fid === ROOT_FID ? 0 : (await pathAt(c)).split('/').length })));
  for (const depth of [...new Set(dirs.map((d) => d.depth))].sort((a, b) => b - a)) {
    await mapLimit(dirs.filter((d) => d.depth === depth), CONCURRENCY, (d) => setAttrs(d.c));
  }
  return report;
}

/**
 * Makes one step of a name plan through the volume's own operations. Files, directories,
 * symlinks and nodes are created private (0600, 0700) and owned by this process: their
 * attributes are set afterwards, from `c`, the change that holds the created file.
 */
export async function applyStep(volume: Volume, s: Step, c: FileChange | undefined, me: { uid: number; gid: number; pid: number }): Promise<void> {
  switch (s.op) {
    case 'rename': return volume.rename(`/${s.from}`, `/${s.to}`);
    case 'link': return volume.link(`/${s.from}`, `/${s.to}`);
    case 'unlink': return volume.unlink(`/${s.path}`);
    case 'rmdir': return volume.rmdir(`/${s.path}`);
    case 'create': {
      const p = `/${s.path}`;
      if (s.type === 'dir') return volume.mkdir(p, 0o700, me);
      if (s.type === 'symlink') return volume.symlink(c?.target ?? '', p, me);
      if (s.type === 'file') return volume.release(await volume.create(p, 0o600, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, me));
      return volume.mknod(p, c?.attr?.mode ?? 0o10600, c?.attr?.rdev ?? 0, me);
    }
  }
}
