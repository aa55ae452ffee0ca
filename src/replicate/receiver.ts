// The receiving side of a sync: applies a change set to a replica volume through the
// volume's own operations (so the replica's earlier snapshots stay intact by copy-on-write),
// compares blocks by BLAKE3 and writes only those that differ, then takes a replica
// snapshot dated with the source's time that records the new base in the same write.
// Its methods are the protocol's requests; in one process they are called directly.
import { constants as fsConstants } from 'node:fs';
import { ROOT_FID, type FileId } from '../core/types.js';
import { ReplfsError } from '../errors/index.js';
import type { OpenReport, Volume } from '../volume/index.js';
import { readFull } from '../volume/io.js';
import { TypeTag, type OriginNode, type ReplicaMeta } from '../volume/format.js';
import { specOf } from '../volume/view.js';
import { nodeTypeOf, type FileChange } from './changes.js';
import type { HashPool } from './hasher.js';
import { plan, type Node, type Step } from './plan.js';

/** Where names are parked while a plan runs; removed again before the replica snapshot. */
export const STAGING_DIR = '.replfs-incoming';

export interface SnapshotInfo {
  name: string;
  sourceTime: string;
  label: string | null;
  consistency: 'app' | 'crash';
}

export interface Begin {
  sourceVolumeId: string;
  snapshot: SnapshotInfo;
  blockSize: number;
}

export interface ReceiverState {
  /** The replica volume's id: the source pins this destination's base under it. */
  replicaId: string;
  /** The source snapshot the replica last confirmed, or null. */
  base: { name: string; sourceTime: string } | null;
}

/** What a sender calls; the wire protocol carries exactly these requests. */
export interface ReceiverApi {
  begin(b: Begin): Promise<ReceiverState>;
  files(changes: FileChange[]): Promise<void>;
  /**
   * Which of the blocks of the `length` bytes at `offset` (hashed in `blockSize` pieces)
   * the replica lacks. Past the replica file's end it holds zeros (a hole once the file
   * is given its size), so zero blocks are never sent.
   */
  compare(fid: FileId, offset: number, blockSize: number, length: number, hashes: Buffer[]): Promise<number[]>;
  write(fid: FileId, offset: number, data: Buffer): Promise<void>;
  finish(): Promise<{ replicaSnapshot: string }>;
}

const typeTagOf = (n: Node): string => (n.type === 'other' ? 'p' : TypeTag[n.type]);

export class Receiver implements ReceiverApi {
  private started: Begin | null = null;
  private meta: ReplicaMeta | undefined;
  private changes: FileChange[] = [];
  private byFid = new Map<FileId, FileChange>();
  private known = new Map<FileId, OriginNode>();
  private readonly open = new Map<FileId, number>();
  /** Replica directories found to be real directories during this sync. */
  private readonly checkedDirs = new Set<string>();

  constructor(private readonly replica: Volume, private readonly pool: HashPool, readonly opts: { openReport?: OpenReport } = {}) {}

  async begin(b: Begin): Promise<ReceiverState> {
    const meta = await this.replica.replicaMeta();
    if (meta && meta.sourceVolumeId !== b.sourceVolumeId) {
      throw new ReplfsError('refused', `the destination is a replica of another volume (${meta.sourceVolumeId})`, 'choose another destination');
    }
    if (meta?.applying) {
      throw new ReplfsError('refused', 'an earlier sync to this destination stopped half way, and resuming it is not supported yet',
        'its earlier snapshots are intact; sync to a new destination');
    }
    this.started = b;
    this.meta = meta;
    return { replicaId: this.replica.config.volumeId, base: meta?.base ?? null };
  }

  async files(changes: FileChange[]): Promise<void> {
    const b = this.need();
    for (const c of changes) checkChange(c);
    this.changes = changes;
    this.byFid = new Map(changes.map((c) => [c.fid, c]));
    if (this.byFid.size !== changes.length) throw new ReplfsError('refused', 'the change set names a file twice');
    this.known = await this.loadOrigins(changes);
    // Planned (and so checked) before anything changes: a refused change set leaves the
    // replica as it was, ready for the next sync.
    const steps = plan({ current: (fid) => this.current(fid), changes: new Map(changes.map((c) => [c.fid, c.node])), stage: STAGING_DIR });
    await this.replica.setReplicaMeta({ sourceVolumeId: b.sourceVolumeId, base: this.meta?.base ?? null, applying: true });
    const me = { uid: this.replica.myUid, gid: this.replica.myGid, pid: process.pid };
    await this.replica.mkdir(`/${STAGING_DIR}`, 0o700, me).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'EEXIST') throw err; });
    for (const step of steps) await this.apply(step, me);
    await this.replica.rmdir(`/${STAGING_DIR}`);
  }

  async compare(fid: FileId, offset: number, blockSize: number, length: number, hashes: Buffer[]): Promise<number[]> {
    if (Math.ceil(length / blockSize) !== hashes.length) throw new ReplfsError('refused', 'the hashes do not cover the range');
    this.checkRange(fid, offset, length);
    const fd = await this.fdOf(fid);
    const mine = Buffer.allocUnsafeSlow(length);
    const have = await readFull((b, n, p) => this.replica.read(fd, b, n, p), mine, length, offset);
    mine.fill(0, have);
    const ours = (await this.pool.hash(mine, blockSize)).hashes;
    const needed: number[] = [];
    for (let i = 0; i < hashes.length; i++) if (!ours[i] || !ours[i]!.equals(hashes[i]!)) needed.push(i);
    return needed;
  }

  async write(fid: FileId, offset: number, data: Buffer): Promise<void> {
    this.checkRange(fid, offset, data.length);
    const fd = await this.fdOf(fid);
    for (let done = 0; done < data.length;) done += await this.replica.write(fd, data.subarray(done), data.length - done, offset + done);
  }

  async finish(): Promise<{ replicaSnapshot: string }> {
    const b = this.need();
    for (const [, fd] of this.open) await this.replica.release(fd);
    this.open.clear();
    // Sizes and attributes: files first, then directories deepest first (their times last).
    const kept = this.changes.filter((c) => c.node && c.attr);
    const depth = (c: FileChange) => (c.fid === ROOT_FID ? 0 : this.pathOf(c.fid).split('/').length);
    kept.sort((x, y) => Number(x.node!.type === 'dir') - Number(y.node!.type === 'dir') || depth(y) - depth(x));
    for (const c of kept) {
      const rel = this.pathOf(c.fid);
      if (c.node!.type === 'file') await this.replica.truncate(`/${rel}`, c.attr!.size);
      await this.applyAttrs(c, rel);
    }
    const origin: Array<[FileId, OriginNode | null]> = this.changes.map((c) => [c.fid,
      c.node ? { t: typeTagOf(c.node), n: c.node.names.map(([parent, n]) => [parent, n] as [FileId, string]) } : null]);
    const meta: ReplicaMeta = { sourceVolumeId: b.sourceVolumeId, base: { name: b.snapshot.name, sourceTime: b.snapshot.sourceTime }, applying: false };
    const rec = await this.replica.snapshot({
      name: this.replica.reserveSnapshotName(new Date(b.snapshot.sourceTime)),
      sourceTime: b.snapshot.sourceTime, label: b.snapshot.label, consistency: b.snapshot.consistency,
      extraOps: [...this.replica.originOps(origin), this.replica.replicaMetaOp(meta)],
    });
    return { replicaSnapshot: rec.name };
  }

  /** Data may only land inside the file's new size. */
  private checkRange(fid: FileId, offset: number, length: number): void {
    const size = this.byFid.get(fid)?.attr?.size;
    if (size === undefined || !Number.isSafeInteger(offset) || offset < 0 || offset + length > size) {
      throw new ReplfsError('refused', `the sender wrote outside file ${fid}`);
    }
  }

  private need(): Begin {
    if (!this.started) throw new ReplfsError('internal', 'the sync has not begun');
    return this.started;
  }

  private current(fid: FileId): Node | undefined {
    if (fid === ROOT_FID) return { type: 'dir', names: [] };
    const o = this.known.get(fid);
    return o ? { type: nodeTypeOf(o.t), names: o.n } : undefined;
  }

  /** A file's path once the plan has run: its new names, or the ones it kept. */
  private pathOf(fid: FileId, depth = 0): string {
    if (fid === ROOT_FID) return '';
    const node = this.byFid.has(fid) ? this.byFid.get(fid)!.node ?? undefined : this.current(fid);
    const first = node?.names[0];
    if (!first || depth > 4096) throw new ReplfsError('internal', `no path for source file ${fid}`);
    const up = this.pathOf(first[0], depth + 1);
    return up === '' ? first[1] : `${up}/${first[1]}`;
  }

  private async fdOf(fid: FileId): Promise<number> {
    let fd = this.open.get(fid);
    if (fd === undefined) {
      const c = this.byFid.get(fid);
      if (!c || c.node?.type !== 'file') throw new ReplfsError('internal', `source file ${fid} is not a regular file of this change set`);
      const rel = this.pathOf(fid);
      await this.checkPath(rel, 'file');
      fd = await this.replica.open(`/${rel}`, fsConstants.O_RDWR);
      this.open.set(fid, fd);
    }
    return fd;
  }

  /** The origin records of every changed file and of every directory above their names. */
  private async loadOrigins(changes: FileChange[]): Promise<Map<FileId, OriginNode>> {
    const known = new Map<FileId, OriginNode>();
    let want = new Set<FileId>(changes.map((c) => c.fid));
    for (const c of changes) for (const [parent] of c.node?.names ?? []) want.add(parent);
    while (want.size > 0) {
      const ids = [...want].filter((f) => f !== ROOT_FID && !known.has(f));
      want = new Set();
      if (ids.length === 0) break;
      for (const [fid, node] of await this.replica.originNodes(ids)) {
        known.set(fid, node);
        for (const [parent] of node.n) if (parent !== ROOT_FID && !known.has(parent)) want.add(parent);
      }
    }
    return known;
  }

  /**
   * Every directory on the way to `rel` must be a real directory, and `rel` itself, if
   * `expect` is given, of that type: a symlink put into the replica outside replfs must
   * never lead a change outside it.
   */
  private async checkPath(rel: string, expect?: Node['type']): Promise<void> {
    const parts = rel === '' ? [] : rel.split('/');
    let cur = '';
    for (let i = 0; i < parts.length; i++) {
      cur = cur === '' ? parts[i]! : `${cur}/${parts[i]}`;
      const last = i === parts.length - 1;
      if (!last && this.checkedDirs.has(cur)) continue;
      if (last && expect === undefined) return;
      const st = await this.replica.lstatRel(cur);
      const kind = !st ? 'missing' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
      const want = last ? expect! : 'dir';
      if (kind !== want) {
        throw new ReplfsError('refused', `the replica was changed outside replfs: ${cur} is ${kind === 'missing' ? 'missing' : `a ${kind}`}, not a ${want}`,
          'a replica must only be changed by replfs sync');
      }
      if (!last) this.checkedDirs.add(cur);
    }
  }

  private async apply(s: Step, me: { uid: number; gid: number; pid: number }): Promise<void> {
    const r = this.replica;
    const type = this.byFid.get(s.fid)?.node?.type ?? (s.op === 'rmdir' ? 'dir' : undefined);
    if (s.op === 'rename' || s.op === 'link') {
      await this.checkPath(s.from, s.from.startsWith(`${STAGING_DIR}/`) ? undefined : type);
      await this.checkPath(s.to);
    } else if (s.op === 'create') {
      await this.checkPath(s.path);
    } else {
      await this.checkPath(s.path, s.op === 'rmdir' ? 'dir' : undefined);
    }
    switch (s.op) {
      case 'rename': return r.rename(`/${s.from}`, `/${s.to}`);
      case 'link': return r.link(`/${s.from}`, `/${s.to}`);
      case 'unlink': return r.unlink(`/${s.path}`);
      case 'rmdir': return r.rmdir(`/${s.path}`);
      case 'create': {
        const c = this.byFid.get(s.fid)!;
        const p = `/${s.path}`;
        if (s.type === 'dir') return r.mkdir(p, 0o700, me);
        if (s.type === 'symlink') return r.symlink(c.target ?? '', p, me);
        if (s.type === 'file') return r.release(await r.create(p, 0o600, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, me));
        return r.mknod(p, c.attr!.mode, c.attr!.rdev, me);
      }
    }
  }

  private async applyAttrs(c: FileChange, rel: string): Promise<void> {
    const r = this.replica;
    await this.checkPath(rel, c.node!.type === 'other' ? undefined : c.node!.type);
    const p = rel === '' ? '/' : `/${rel}`;
    const a = c.attr!;
    await r.chown(p, a.uid, a.gid);
    if (c.node!.type !== 'symlink') await r.chmod(p, a.mode & 0o7777);
    const wanted = new Map(c.xattrs ?? []);
    for (const name of await r.listxattr(p)) if (!wanted.has(name)) await r.removexattr(p, name);
    for (const [name, value] of wanted) await r.setxattr(p, name, Buffer.from(value, 'base64'), 0);
    await r.utimens(p, specOf(a.atime), specOf(a.mtime));
  }
}

const isId = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isNs = (v: unknown): v is string => typeof v === 'string' && /^-?\d{1,30}$/.test(v);

/** A change from the wire, checked for shape before anything trusts it. */
function checkChange(c: FileChange): void {
  const bad = (why: string) => new ReplfsError('refused', `a malformed change from the sender (file ${String((c as { fid?: unknown }).fid)}): ${why}`);
  if (typeof c !== 'object' || c === null || !isId(c.fid)) throw bad('no valid file id');
  if (c.node !== null) {
    if (typeof c.node !== 'object' || !['dir', 'file', 'symlink', 'other'].includes(c.node.type) || !Array.isArray(c.node.names)) throw bad('a malformed node');
    for (const r of c.node.names) {
      if (!Array.isArray(r) || r.length !== 2 || !isId(r[0]) || typeof r[1] !== 'string') throw bad('a malformed name');
    }
    const a = c.attr;
    if (!a || ![a.mode, a.uid, a.gid, a.size, a.rdev].every(isCount) || !isNs(a.atime) || !isNs(a.mtime)) throw bad('malformed attributes');
  } else if (c.attr !== null) {
    throw bad('attributes for a deleted file');
  }
  if (c.target !== undefined && (typeof c.target !== 'string' || c.target.includes('\0'))) throw bad('a malformed symlink target');
  if (c.xattrs !== undefined && (!Array.isArray(c.xattrs) || !c.xattrs.every((x) => Array.isArray(x) && x.length === 2 && typeof x[0] === 'string' && typeof x[1] === 'string'))) {
    throw bad('malformed xattrs');
  }
  if (!Array.isArray(c.extents) || !c.extents.every((e) => isCount(e?.offset) && isCount(e?.length))) throw bad('malformed extents');
}
