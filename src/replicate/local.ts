// A sync between two volumes open in this process: the source's change set since the base
// the replica confirmed, planned and applied to the replica through its own operations (so
// its earlier snapshots stay intact by copy-on-write), blocks compared by BLAKE3 and only
// the different ones written, then a replica snapshot dated with the source's time that
// also records the new base. The wire protocol will carry exactly these steps.
import { constants as fsConstants } from 'node:fs';
import { ROOT_FID, type FileId } from '../core/types.js';
import { ReplfsError } from '../errors/index.js';
import type { Volume } from '../volume/index.js';
import { TypeTag, type OriginNode, type ReplicaMeta } from '../volume/format.js';
import { specOf } from '../volume/view.js';
import { changeSet, nodeTypeOf, type FileChange } from './changes.js';
import type { HashPool } from './hasher.js';
import { plan, type Node, type Step } from './plan.js';

/** Where names are parked while a plan runs; removed again before the replica snapshot. */
export const STAGING_DIR = '.replfs-incoming';
/** Bytes compared per round trip to the hashing threads. */
const CHUNK = 1024 * 1024;

export interface SyncSummary {
  /** The source snapshot sent, and its time. */
  snapshot: string;
  sourceTime: string;
  /** The replica snapshot that now holds it (null when there was nothing new). */
  replicaSnapshot: string | null;
  base: string | null;
  filesChanged: number;
  /** Bytes of file data compared. */
  bytesRead: number;
  /** Bytes written into the replica. */
  bytesWritten: number;
  blocksWritten: number;
  /** Blocks compared equal, so not written. */
  blocksSkipped: number;
  durationMs: number;
}

const typeTagOf = (n: Node): string => (n.type === 'other' ? 'p' : TypeTag[n.type]);

export async function syncLocal(source: Volume, replica: Volume, opts: { snapshot?: string; hashPool: HashPool }): Promise<SyncSummary> {
  const began = Date.now();
  const sourceId = source.config.volumeId;
  const meta = await replica.replicaMeta();
  if (meta && meta.sourceVolumeId !== sourceId) {
    throw new ReplfsError('refused', `the destination is a replica of another volume (${meta.sourceVolumeId})`, 'choose another destination');
  }
  if (meta?.applying) {
    throw new ReplfsError('refused', 'an earlier sync to this destination stopped half way, and resuming it is not supported yet',
      'its earlier snapshots are intact; sync to a new destination');
  }
  const target = opts.snapshot ? source.snapshotNamed(opts.snapshot) : source.snapshots().at(-1);
  if (!target) throw new ReplfsError('refused', 'the source has no snapshot to send', 'take one with `replfs snapshot`');
  const base = meta?.base ?? null;
  if (base && !source.snapshots().some((s) => s.name === base.name)) {
    throw new ReplfsError('refused', `the snapshot ${base.name} that the destination last confirmed is gone from the source`);
  }
  const summary: SyncSummary = {
    snapshot: target.name, sourceTime: target.sourceTime, replicaSnapshot: null, base: base?.name ?? null,
    filesChanged: 0, bytesRead: 0, bytesWritten: 0, blocksWritten: 0, blocksSkipped: 0, durationMs: 0,
  };
  if (base && Date.parse(base.sourceTime) >= Date.parse(target.sourceTime)) {
    if (base.name !== target.name) throw new ReplfsError('refused', `${target.name} is not newer than ${base.name}, which the destination already has`);
    summary.durationMs = Date.now() - began;
    return summary;
  }

  const changes = await changeSet(source, base?.name ?? null, target.name);
  summary.filesChanged = changes.length;
  await replica.setReplicaMeta({ sourceVolumeId: sourceId, base, applying: true });

  // ---- names
  const known = await loadOrigins(replica, changes);
  const current = (fid: FileId): Node | undefined => {
    if (fid === ROOT_FID) return { type: 'dir', names: [] };
    const o = known.get(fid);
    return o ? { type: nodeTypeOf(o.t), names: o.n } : undefined;
  };
  const byFid = new Map(changes.map((c) => [c.fid, c]));
  const steps = plan({ current, changes: new Map(changes.map((c) => [c.fid, c.node])), stage: STAGING_DIR });
  const me = { uid: replica.myUid, gid: replica.myGid, pid: process.pid };
  await replica.mkdir(`/${STAGING_DIR}`, 0o700, me).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'EEXIST') throw err; });
  for (const step of steps) await applyStep(replica, step, byFid, me);
  await replica.rmdir(`/${STAGING_DIR}`);

  // ---- data and attributes: files first, then directories deepest first (their times last)
  const finalNode = (fid: FileId): Node | undefined => (byFid.has(fid) ? byFid.get(fid)!.node ?? undefined : current(fid));
  const pathOf = (fid: FileId, depth = 0): string => {
    if (fid === ROOT_FID) return '';
    const first = finalNode(fid)?.names[0];
    if (!first || depth > 4096) throw new ReplfsError('internal', `no path for source file ${fid}`);
    const up = pathOf(first[0], depth + 1);
    return up === '' ? first[1] : `${up}/${first[1]}`;
  };
  const kept = changes.filter((c) => c.node && c.attr);
  const depth = (c: FileChange) => (c.fid === ROOT_FID ? 0 : pathOf(c.fid).split('/').length);
  kept.sort((a, b) => Number(a.node!.type === 'dir') - Number(b.node!.type === 'dir') || depth(b) - depth(a));
  const view = source.view(target.name);
  for (const c of kept) {
    const rel = pathOf(c.fid);
    if (c.node!.type === 'file') await copyData(view, c, rel, replica, opts.hashPool, source.config.blockSize, summary);
    await applyAttrs(replica, c, rel);
  }

  // ---- the replica snapshot, with the new base and names recorded in the same write
  const originEntries: Array<[FileId, OriginNode | null]> = changes.map((c) => [c.fid, c.node ? { t: typeTagOf(c.node), n: c.node.names.map(([parent, n]) => [parent, n] as [FileId, string]) } : null]);
  const newMeta: ReplicaMeta = { sourceVolumeId: sourceId, base: { name: target.name, sourceTime: target.sourceTime }, applying: false };
  const name = replica.reserveSnapshotNameAt(new Date(target.sourceTime));
  const rec = await replica.snapshot({
    name, sourceTime: target.sourceTime, label: target.label, consistency: target.consistency,
    extraOps: [...replica.originOps(originEntries), replica.replicaMetaOp(newMeta)],
  });
  summary.replicaSnapshot = rec.name;
  summary.durationMs = Date.now() - began;
  return summary;
}

/** The origin records of every changed file and of every directory above their names. */
async function loadOrigins(replica: Volume, changes: FileChange[]): Promise<Map<FileId, OriginNode>> {
  const known = new Map<FileId, OriginNode>();
  let want = new Set<FileId>(changes.map((c) => c.fid));
  for (const c of changes) for (const [parent] of c.node?.names ?? []) want.add(parent);
  while (want.size > 0) {
    const ids = [...want].filter((f) => f !== ROOT_FID && !known.has(f));
    want = new Set();
    if (ids.length === 0) break;
    const found = await replica.originNodes(ids);
    for (const [fid, node] of found) {
      known.set(fid, node);
      for (const [parent] of node.n) if (parent !== ROOT_FID && !known.has(parent)) want.add(parent);
    }
  }
  return known;
}

async function applyStep(replica: Volume, s: Step, byFid: Map<FileId, FileChange>, me: { uid: number; gid: number; pid: number }): Promise<void> {
  switch (s.op) {
    case 'rename': return replica.rename(`/${s.from}`, `/${s.to}`);
    case 'link': return replica.link(`/${s.from}`, `/${s.to}`);
    case 'unlink': return replica.unlink(`/${s.path}`);
    case 'rmdir': return replica.rmdir(`/${s.path}`);
    case 'create': {
      const c = byFid.get(s.fid)!;
      const p = `/${s.path}`;
      if (s.type === 'dir') return replica.mkdir(p, 0o700, me);
      if (s.type === 'symlink') return replica.symlink(c.target ?? '', p, me);
      if (s.type === 'file') {
        const fd = await replica.create(p, 0o600, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, me);
        return replica.release(fd);
      }
      return replica.mknod(p, c.attr!.mode, c.attr!.rdev, me);
    }
  }
}

/** Compares the file's extents block by block and writes the blocks that differ. */
async function copyData(view: ReturnType<Volume['view']>, c: FileChange, rel: string, replica: Volume, pool: HashPool, blockSize: number, summary: SyncSummary): Promise<void> {
  const size = c.attr!.size;
  const from = await view.open((await view.pathsOf(c.fid))[0]!);
  const fd = await replica.open(`/${rel}`, fsConstants.O_RDWR);
  try {
    for (const ext of c.extents) {
      const end = Math.min(size, ext.offset + ext.length);
      for (let pos = ext.offset; pos < end;) {
        const len = Math.min(CHUNK - (CHUNK % blockSize), end - pos);
        const mine = Buffer.allocUnsafeSlow(len);
        const theirs = Buffer.allocUnsafeSlow(len);
        const got = await readFully((b, n, p) => view.read(from, b, n, p), mine, len, pos);
        const have = await readFully((b, n, p) => replica.read(fd, b, n, p), theirs, len, pos);
        theirs.fill(0, have);
        summary.bytesRead += got;
        const [a, b] = await Promise.all([pool.hash(mine.subarray(0, got), blockSize), pool.hash(theirs.subarray(0, got), blockSize)]);
        for (let i = 0; i < a.hashes.length; i++) {
          const start = i * blockSize;
          const n = Math.min(blockSize, got - start);
          if (start + n <= have && a.hashes[i]!.equals(b.hashes[i]!)) { summary.blocksSkipped++; continue; }
          for (let done = 0; done < n;) done += await replica.write(fd, a.data.subarray(start + done, start + n), n - done, pos + start + done);
          summary.blocksWritten++;
          summary.bytesWritten += n;
        }
        pos += got;
        if (got < len) break;
      }
    }
  } finally {
    view.release(from);
    await replica.release(fd);
  }
  await replica.truncate(`/${rel}`, size);
}

async function readFully(read: (b: Buffer, n: number, p: number) => Promise<number>, buf: Buffer, len: number, pos: number): Promise<number> {
  let got = 0;
  while (got < len) {
    const n = await read(buf.subarray(got), len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

async function applyAttrs(replica: Volume, c: FileChange, rel: string): Promise<void> {
  const p = rel === '' ? '/' : `/${rel}`;
  const a = c.attr!;
  await replica.chown(p, a.uid, a.gid);
  if (c.node!.type !== 'symlink') await replica.chmod(p, a.mode & 0o7777);
  const wanted = new Map(c.xattrs ?? []);
  for (const name of await replica.listxattr(p)) if (!wanted.has(name)) await replica.removexattr(p, name);
  for (const [name, value] of wanted) await replica.setxattr(p, name, Buffer.from(value, 'base64'), 0);
  await replica.utimens(p, specOf(a.atime), specOf(a.mtime));
}
