// The receiving side of a sync: applies a change set to a replica volume through the
// volume's own operations (so the replica's earlier snapshots stay intact by copy-on-write),
// compares blocks by BLAKE3 and writes only those that differ, then takes a replica
// snapshot dated with the source's time that records the new base in the same write.
// Its methods are the protocol's requests; in one process they are called directly. Every
// method but begin and files may be called many times at once.
//
// Crash safety. Names are changed under a durable log (the plan's steps and the nodes they
// leave, Volume.logPlan): a sync that stops half way is finished, as far as names go, by
// the next one before anything else (replay skips the steps already done, telling them by
// inode). Data and attributes need no log: the next sync sends every file the stopped one
// touched again, and the block compare makes what already arrived free.
import { constants as fsConstants } from 'node:fs';
import { open as openFile, statfs } from 'node:fs/promises';
import { ROOT_FID, type FileId, type KeepPolicy, type PruneOutcome } from '../core/types.js';
import { FsError, ReplfsError, hasCode } from '../errors/index.js';
import type { Volume } from '../volume/index.js';
import { readFull } from '../volume/io.js';
import { TypeTag, type OriginNode, type ReplicaMeta } from '../volume/format.js';
import { mapLimit } from '../volume/limit.js';
import type { SnapshotView, ViewHandle } from '../volume/view.js';
import { specOf } from '../volume/view.js';
import { nodeTypeOf, type FileChange } from './changes.js';
import type { HashPool } from './hasher.js';
import { plan, stepBatches, type NameRef, type Node, type Step } from './plan.js';
import { applyStep, revertTo } from './revert.js';

/** Where names are parked while a plan runs (suffixed with the replica's id); removed again before the replica snapshot. */
export const STAGING_PREFIX = '.replfs-incoming-';

/** File operations of one sync running at once. */
const CONCURRENCY = 32;
/** Replica files kept open between the requests that read or write them. */
const OPEN_FILES = 128;

export interface SnapshotInfo {
  name: string;
  sourceTime: string;
  label: string | null;
  consistency: 'app' | 'crash';
}

/** `sync` applies; `dry-run` compares and changes nothing; `verify` compares with the replica's snapshot of the same source time. */
export type SyncMode = 'sync' | 'dry-run' | 'verify';

export interface Begin {
  sourceVolumeId: string;
  snapshot: SnapshotInfo;
  blockSize: number;
  mode: SyncMode;
  /** Go on although the replica was changed outside replfs: a full compare undoes those changes. */
  force: boolean;
  /**
   * Protocol 2: the sender was promoted from a replica of volume `from`, and holds these
   * snapshots (name and source time). Sent to that volume, it takes the sync from the
   * newest snapshot both hold (a failback), never by copying everything.
   */
  lineage?: { from: string; snapshots: Array<{ name: string; sourceTime: string }> };
}

/** One file of the base a failback starts from: its id, type tag and names, in the sender's ids. */
export type ListingNode = [fid: FileId, tag: string, names: NameRef[]];

export interface RebaseResult {
  /** A snapshot of this volume's files as they were, taken when they differed from the base. */
  kept: string | null;
  /** What was undone to bring the files back to the base. */
  reverted: { files: number; bytesCopied: number };
}

export interface ReceiverState {
  /** The replica volume's id: the source pins this destination's base under it. */
  replicaId: string;
  /** The source snapshot the replica last confirmed, or null. */
  base: { name: string; sourceTime: string } | null;
  /** A sync of this snapshot stopped half way: the files it changed must be sent again. */
  resume: { name: string; sourceTime: string } | null;
  /** The receiver needs every file of the snapshot, not only the changes since the base. */
  complete: boolean;
  /** verify: the replica snapshot compared with. */
  snapshot?: string;
  /** Free and total bytes of the filesystem holding the replica (protocol 2). */
  space?: Space;
  /**
   * Protocol 2: the receiver is the volume the sender was promoted from; `base` is the
   * newest snapshot both hold. The sender sends that snapshot's names (`rebase`) before the
   * change set since it.
   */
  rebase?: boolean;
}

export interface Space {
  free: number;
  total: number;
}

export interface FinishOptions {
  /** Prune the replica's snapshots by these rules once the new one is confirmed (protocol 2). */
  retention?: KeepPolicy;
}

export interface FinishResult {
  replicaSnapshot: string | null;
  space?: Space;
  /** What the retention removed, or why it could not (the sync itself stands). */
  pruned?: PruneOutcome | { error: string };
}

/** Prunes a replica's snapshots by a retention; given by the caller (the rules live in the policy layer). */
export type ReplicaPrune = (replica: Volume, rules: KeepPolicy) => Promise<PruneOutcome>;

/** The free and total bytes under the replica's root. */
export async function spaceOf(replica: Volume): Promise<Space> {
  const st = await statfs(replica.backing.abs(''));
  return { free: st.bavail * st.bsize, total: st.blocks * st.bsize };
}

/** One way a replica differs from its source (verify, or a dry run's notes). */
export interface Difference {
  path: string;
  what: string;
}

export interface FilesResult {
  /** Name changes planned (a dry run) or made. */
  steps: number;
  /** verify: metadata differences (at most MAX_DIFFERENCES), and how many there were. */
  differences?: Difference[];
  total?: number;
}

/** What a sender calls; the wire protocol carries exactly these requests. */
export interface ReceiverApi {
  begin(b: Begin): Promise<ReceiverState>;
  /** The change set. `complete`: it lists every file of the snapshot, and anything else the replica has goes. */
  files(changes: FileChange[], complete: boolean): Promise<FilesResult>;
  /**
   * Which of the blocks of the `length` bytes at `offset` (hashed in `blockSize` pieces)
   * the replica lacks. Past the replica file's end it holds zeros (a hole once the file
   * is given its size), so zero blocks are never sent.
   */
  compare(fid: FileId, offset: number, blockSize: number, length: number, hashes: Buffer[]): Promise<number[]>;
  /** Resolves once `data` is no longer needed: the caller may then reuse its memory. */
  write(fid: FileId, offset: number, data: Buffer): Promise<void>;
  finish(opts?: FinishOptions): Promise<FinishResult>;
  /**
   * A failback (state.rebase): every file of the base, as the sender has it. The receiver
   * checks that its own snapshot of that name holds the same tree, keeps its files in a
   * snapshot if they changed since, brings them back to the base, and becomes the sender's
   * replica.
   */
  rebase(nodes: ListingNode[]): Promise<RebaseResult>;
  /** The sync is abandoned (for `reason`, if known): let go of what it holds. */
  abort(reason?: unknown): Promise<void>;
}

/** A plan step as logged, with the inode of the file it moves when that was known. */
type LoggedStep = Step & { ino?: number };

/** The most differences a verify reports by name. */
export const MAX_DIFFERENCES = 1000;

const typeTagOf = (n: Node): string => (n.type === 'other' ? 'p' : TypeTag[n.type]);
const join = (dir: string, name: string) => (dir === '' ? name : `${dir}/${name}`);

interface OpenFile {
  fd: Promise<number>;
  /** Requests using it now (counted as they start, before they wait for it). */
  users: number;
}

export class Receiver implements ReceiverApi {
  private started: Begin | null = null;
  /** The snapshot a failback starts from (this volume's name, the sender's, its source time), between begin and rebase. */
  private rebaseBase: { mine: string; theirs: string; sourceTime: string } | null = null;
  /** The name reserved for the replica snapshot a failback ends with. */
  private heldName: string | null = null;
  private mustBeComplete = false;
  private meta: ReplicaMeta | undefined;
  private changes: FileChange[] = [];
  private byFid = new Map<FileId, FileChange>();
  private known = new Map<FileId, OriginNode>();
  /** Files this sync created: empty until its blocks arrive, so nothing needs reading to compare. */
  private readonly fresh = new Set<FileId>();
  /** New files not made yet: each is made when its first block arrives, or at the end. */
  private readonly deferred = new Map<FileId, LoggedStep>();
  /** Each file's size before this sync wrote to it: past it, the replica holds zeros. */
  private readonly sizeBefore = new Map<FileId, Promise<number>>();
  private readonly openFiles = new Map<FileId, OpenFile>();
  /** Replica directories found to be real directories during this sync. */
  private readonly checkedDirs = new Set<string>();
  private readonly zeroHashes = new Map<number, Promise<Buffer>>();
  private readonly stage: string;
  // verify
  private view: SnapshotView | null = null;
  private readonly viewFiles = new Map<FileId, Promise<ViewHandle | null>>();
  private readonly verifyPaths = new Map<FileId, string>();

  constructor(private readonly replica: Volume, private readonly pool: HashPool, private readonly opts: { prune?: ReplicaPrune } = {}) {
    this.stage = STAGING_PREFIX + replica.config.volumeId.slice(0, 8);
  }

  async begin(b: Begin): Promise<ReceiverState> {
    checkBegin(b);
    const meta = await this.replica.replicaMeta();
    if (meta && meta.sourceVolumeId !== b.sourceVolumeId) {
      throw new ReplfsError('refused', `the destination is a replica of another volume (${meta.sourceVolumeId})`, 'choose another destination');
    }
    this.started = b;
    this.meta = meta;
    const state: ReceiverState = {
      replicaId: this.replica.config.volumeId, base: meta?.base ?? null, resume: null, complete: false,
      space: await spaceOf(this.replica).catch(() => undefined),
    };
    if (state.space === undefined) delete state.space;
    if (!meta && this.replica.snapshots().length > 0) return this.beginRebase(b, state);
    if (b.mode === 'verify') {
      const snap = this.replica.snapshots().find((s) => s.sourceTime === b.snapshot.sourceTime);
      if (!snap || !meta) throw new ReplfsError('notFound', `the replica has no snapshot of the source's ${b.snapshot.name} (${b.snapshot.sourceTime})`, 'sync it first');
      this.view = this.replica.view(snap.name);
      return { ...state, snapshot: snap.name };
    }
    if (meta?.divergent && !b.force) {
      const d = meta.divergent;
      const counts = [[d.created, 'created'], [d.changed, 'changed'], [d.moved, 'moved or linked'], [d.deleted, 'deleted']]
        .filter(([n]) => (n as number) > 0).map(([n, w]) => `${n} ${w}`).join(', ');
      throw new ReplfsError('refused', `the replica was changed outside replfs (${counts}; e.g. ${d.examples.slice(0, 3).join(', ') || 'the root'})`,
        'replfs verify lists the differences; replfs sync --force makes the replica equal to the source again');
    }
    if (meta?.pending) {
      // Steps still logged: names half changed, or files the stopped sync had not made yet.
      const logged = await this.replica.loggedPlan<LoggedStep>();
      if (meta.pending.names === 'planned' || logged.length > 0) {
        if (b.mode !== 'sync') throw new ReplfsError('refused', 'an earlier sync to this replica stopped half way; a real sync finishes it first', 'run replfs sync without --dry-run');
        await this.replay(logged);
      }
      state.resume = { name: meta.pending.name, sourceTime: meta.pending.sourceTime };
    }
    state.complete = this.mustBeComplete = !!meta?.divergent;
    return state;
  }

  /**
   * This volume is not a replica but has snapshots: only the volume promoted from its
   * replica may sync into it, from the newest snapshot both hold.
   */
  private beginRebase(b: Begin, state: ReceiverState): ReceiverState {
    const mine = this.replica.config.volumeId;
    if (!b.lineage || b.lineage.from !== mine) {
      throw new ReplfsError('refused', `${this.replica.root} is a protected directory, not a replica: a sync would overwrite its files`,
        b.lineage ? `the sender was promoted from a replica of another volume (${b.lineage.from}); sync into a new or empty directory` : 'sync into a new or empty directory');
    }
    checkLineage(b.lineage);
    if (b.mode !== 'sync') throw new ReplfsError('refused', `a ${b.mode} cannot take the place of a failback: ${this.replica.root} becomes a replica only by a sync`, 'run the sync itself');
    // Matched by source time: a replica's snapshot carries its source's, though its name may
    // differ (two snapshots in one second on one side). The tree is checked in rebase().
    const theirs = new Map(b.lineage.snapshots.map((x) => [x.sourceTime, x.name]));
    const common = [...this.replica.snapshots()].reverse().find((x) => theirs.has(x.sourceTime));
    if (!common) {
      throw new ReplfsError('refused', `${this.replica.root} and the sender (promoted from its replica) hold no snapshot in common: taking this sync would mean copying everything, which replfs never does unasked`,
        'sync into a new or empty directory, or move this one aside first');
    }
    this.rebaseBase = { mine: common.name, theirs: theirs.get(common.sourceTime)!, sourceTime: common.sourceTime };
    return { ...state, base: { name: this.rebaseBase.theirs, sourceTime: common.sourceTime }, rebase: true };
  }

  async rebase(nodes: ListingNode[]): Promise<RebaseResult> {
    const b = this.need();
    if (this.rebaseBase === null) throw new ReplfsError('refused', 'a rebase the receiver did not offer');
    const { mine: baseName, theirs: theirName, sourceTime } = this.rebaseBase;
    // The sender's tree must be this volume's tree at the base, path for path and type for type.
    const theirs = listingPaths(nodes);
    const ours = await this.treeOf(baseName);
    for (const [p, t] of theirs) {
      if (ours.get(p) !== t) throw new ReplfsError('refused', `the sender's ${baseName} is not this volume's: ${p || '/'} ${ours.has(p) ? `is a ${ours.get(p)} here` : 'is missing here'}`, 'sync into a new or empty directory');
    }
    for (const p of ours.keys()) if (!theirs.has(p)) throw new ReplfsError('refused', `the sender's ${baseName} is not this volume's: it lacks ${p}`, 'sync into a new or empty directory');
    // The snapshot this sync ends with gets the sender's name: held now, so that the one
    // keeping this volume's own changes cannot take it.
    this.heldName = this.replica.reserveSnapshotName(new Date(b.snapshot.sourceTime), b.snapshot.name);
    // Whatever changed here since the base is undone; what no snapshot holds yet is kept in one first.
    let kept: string | null = null;
    const newest = this.replica.snapshots().at(-1)!;
    if ((await this.replica.diff(newest.name, 'live')).files.length > 0) {
      kept = (await this.replica.snapshot({ label: 'kept before a failback', consistency: 'crash' })).name;
    }
    const reverted = await revertTo(this.replica, baseName);
    await this.replica.syncData();
    const origin: Array<[FileId, OriginNode]> = nodes.map(([fid, t, n]) => [fid, { t, n: n.map(([p, name]) => [p, name] as [FileId, string]) }]);
    this.meta = { sourceVolumeId: b.sourceVolumeId, base: { name: theirName, sourceTime }, pending: null };
    await this.replica.becomeReplica(this.meta, origin);
    this.rebaseBase = null;
    return { kept, reverted: { files: reverted.files, bytesCopied: reverted.bytesCopied } };
  }

  /** Every path of one of this volume's snapshots, with its type tag. */
  private async treeOf(name: string): Promise<Map<string, string>> {
    const view = this.replica.view(name);
    const out = new Map<string, string>([['', TypeTag.dir]]);
    let level: Array<[FileId, string]> = [[ROOT_FID, '']];
    while (level.length > 0) {
      const next: Array<[FileId, string]> = [];
      for (const [fid, dir] of level) {
        for (const c of await view.childrenOf(fid)) {
          const p = join(dir, c.name);
          out.set(p, c.t);
          if (c.t === TypeTag.dir) next.push([c.fid, p]);
        }
      }
      level = next;
    }
    return out;
  }

  async files(changes: FileChange[], complete: boolean): Promise<FilesResult> {
    const b = this.need();
    for (const c of changes) checkChange(c, b.mode === 'verify');
    this.byFid = new Map(changes.map((c) => [c.fid, c]));
    if (this.byFid.size !== changes.length) throw new ReplfsError('refused', 'the change set names a file twice');
    if (b.mode === 'verify') return this.verifyNames(changes);
    if (this.mustBeComplete && !complete) throw new ReplfsError('refused', 'the replica asked for every file of the snapshot and got only changes');
    if (complete) {
      this.known = await this.replica.allOrigins();
      if (b.mode === 'sync') await this.repair();
      // Files the replica has and the snapshot does not: deleted.
      for (const fid of this.known.keys()) {
        if (!this.byFid.has(fid)) {
          const gone: FileChange = { fid, node: null, attr: null, extents: [] };
          changes.push(gone);
          this.byFid.set(fid, gone);
        }
      }
    } else {
      this.known = await this.loadOrigins(changes);
    }
    this.changes = changes;
    // Planned (and so checked) before anything changes: a refused change set leaves the
    // replica as it was, ready for the next sync.
    const steps = plan({ current: (fid) => this.current(fid), changes: new Map(changes.map((c) => [c.fid, c.node])), stage: this.stage });
    for (const step of steps) if (step.op === 'create') this.fresh.add(step.fid);
    if (b.mode === 'dry-run') return { steps: steps.length };
    const logged: LoggedStep[] = await mapLimit(steps, CONCURRENCY, async (s) => {
      const from = s.op === 'rename' || s.op === 'link' ? s.from : s.op === 'create' ? null : s.path;
      const st = from !== null && !this.staged(from) ? await this.replica.lstatRel(from) : null;
      return st ? { ...s, ino: Number(st.ino) } : s;
    });
    const nodes: Array<[FileId, OriginNode | null]> = changes.map((c) => [c.fid,
      c.node ? { t: typeTagOf(c.node), n: c.node.names.map(([parent, n]) => [parent, n] as [FileId, string]) } : null]);
    // The staging directory is made in the root, which changes the root's times: unless the
    // change set gives the root its times anyway, they are put back afterwards (and kept in
    // the log, for a sync that stops before that).
    let rootTimes: [string, string] | undefined;
    if (this.usesStage(logged) && !this.byFid.get(ROOT_FID)?.attr) {
      const st = await this.replica.lstatRel('');
      if (st) rootTimes = [st.atimeNs.toString(), st.mtimeNs.toString()];
    }
    const pendingMeta: ReplicaMeta = {
      sourceVolumeId: b.sourceVolumeId, base: this.meta?.base ?? null,
      pending: { name: b.snapshot.name, sourceTime: b.snapshot.sourceTime, names: 'planned', ...(rootTimes ? { rootTimes } : {}) },
      ...(this.meta?.divergent ? { divergent: this.meta.divergent } : {}),
    };
    await this.replica.logPlan(pendingMeta, logged, nodes);
    // A new file with one name is made when its first block arrives (or at the end): names
    // and data then overlap, and it is written through the descriptor that made it. Its
    // step stays logged until the replica snapshot, so a sync that stops before making it
    // has the next one make it.
    const linked = new Set(logged.filter((x) => x.op === 'link').map((x) => x.fid));
    const now: LoggedStep[] = [];
    for (const x of logged) {
      if (x.op === 'create' && x.type === 'file' && !linked.has(x.fid)) this.deferred.set(x.fid, x);
      else now.push(x);
    }
    await this.runPlan(now, false, rootTimes);
    this.meta = { ...pendingMeta, pending: { ...pendingMeta.pending!, names: 'applied' } };
    await this.replica.commitPlan(this.meta, [...this.deferred.values()]);
    this.checkedDirs.clear();
    return { steps: steps.length };
  }

  async compare(fid: FileId, offset: number, blockSize: number, length: number, hashes: Buffer[]): Promise<number[]> {
    const b = this.need();
    if (blockSize !== b.blockSize || Math.ceil(length / blockSize) !== hashes.length) throw new ReplfsError('refused', 'the hashes do not cover the range');
    this.checkRange(fid, offset, length);
    let ours: Buffer[];
    if (b.mode === 'verify') {
      ours = await this.hashView(fid, offset, length, blockSize);
    } else if (this.fresh.has(fid) || offset >= await this.sizeOf(fid)) {
      ours = await this.zeros(length, blockSize);
    } else {
      ours = await this.withFile(fid, async (fd) => {
        const mine = Buffer.allocUnsafeSlow(length);
        const have = await readFull((buf, n, p) => this.replica.read(fd, buf, n, p), mine, length, offset);
        mine.fill(0, have);
        return (await this.pool.hash(mine, blockSize)).hashes;
      });
    }
    const needed: number[] = [];
    for (let i = 0; i < hashes.length; i++) if (!ours[i]!.equals(hashes[i]!)) needed.push(i);
    if (b.mode !== 'sync' || needed.length === 0) return needed;
    // Zeros are written here, and a block the replica's store already holds (an older
    // version somewhere) is copied from there: neither crosses the wire.
    const zero = await this.zeros(length, blockSize);
    const found = await this.replica.blocks.has(needed.map((i) => hashes[i]!));
    const missing: number[] = [];
    for (let k = 0; k < needed.length; k++) {
      const i = needed[k]!;
      const at = offset + i * blockSize;
      const len = Math.min(blockSize, length - i * blockSize);
      if (hashes[i]!.equals(zero[i]!)) {
        await this.write(fid, at, Buffer.alloc(len));
        continue;
      }
      if (!found[k]) { missing.push(i); continue; }
      try {
        const data = await this.replica.blocks.get(hashes[i]!);
        if (data.length !== len) { missing.push(i); continue; }
        await this.write(fid, at, data);
      } catch {
        missing.push(i);
      }
    }
    return missing;
  }

  async write(fid: FileId, offset: number, data: Buffer): Promise<void> {
    if (this.need().mode !== 'sync') throw new ReplfsError('refused', 'blocks sent to a dry run or a verify');
    this.checkRange(fid, offset, data.length);
    await this.withFile(fid, async (fd) => {
      for (let done = 0; done < data.length;) done += await this.replica.write(fd, data.subarray(done), data.length - done, offset + done);
    });
  }

  async finish(opts: FinishOptions = {}): Promise<FinishResult> {
    const b = this.need();
    const held = this.heldName;
    this.heldName = null;
    try {
      return await this.confirm(b, held, opts);
    } catch (err) {
      if (held !== null) this.replica.releaseSnapshotName(held);
      throw err;
    }
  }

  /** The end of a sync: attributes, durability, the replica snapshot and what follows it. */
  private async confirm(b: Begin, held: string | null, opts: FinishOptions): Promise<FinishResult> {
    await this.abort();
    if (b.mode !== 'sync') {
      if (held !== null) this.replica.releaseSnapshotName(held);
      return { replicaSnapshot: null };
    }
    // New files no block was sent for (empty, or all zeros).
    await mapLimit([...this.deferred.keys()], CONCURRENCY, async (fid) => this.replica.release(await this.makeDeferred(fid)));
    // Sizes and attributes: files first, then directories deepest first (their times last).
    const kept = this.changes.filter((c) => c.node && c.attr);
    const depth = (c: FileChange) => (c.fid === ROOT_FID ? 0 : this.pathOf(c.fid).split('/').length);
    await mapLimit(kept.filter((c) => c.node!.type !== 'dir'), CONCURRENCY, (c) => this.applyAttrs(c));
    const dirs = kept.filter((c) => c.node!.type === 'dir').map((c) => ({ c, d: depth(c) }));
    for (const level of [...new Set(dirs.map((x) => x.d))].sort((x, y) => y - x)) {
      await mapLimit(dirs.filter((x) => x.d === level), CONCURRENCY, (x) => this.applyAttrs(x.c));
    }
    // The replica confirms only what is on disk: the source may drop its base once it has.
    await this.replica.syncData();
    const meta: ReplicaMeta = { sourceVolumeId: b.sourceVolumeId, base: { name: b.snapshot.name, sourceTime: b.snapshot.sourceTime }, pending: null };
    const rec = await this.replica.snapshot({
      name: held ?? this.replica.reserveSnapshotName(new Date(b.snapshot.sourceTime), b.snapshot.name),
      sourceTime: b.snapshot.sourceTime, label: b.snapshot.label, consistency: b.snapshot.consistency,
      extraOps: [this.replica.replicaMetaOp(meta), ...(await this.replica.planLogDeletes())],
    });
    const out: FinishResult = { replicaSnapshot: rec.name };
    if (opts.retention) {
      if (!this.opts.prune) out.pruned = { error: 'this receiver cannot prune' };
      else out.pruned = await this.opts.prune(this.replica, opts.retention).catch((err: unknown) => ({ error: err instanceof Error ? err.message : String(err) }));
    }
    const space = await spaceOf(this.replica).catch(() => null);
    if (space) out.space = space;
    return out;
  }

  async abort(reason?: unknown): Promise<void> {
    if (this.heldName !== null) { this.replica.releaseSnapshotName(this.heldName); this.heldName = null; }
    const open = [...this.openFiles.values()];
    this.openFiles.clear();
    for (const file of open) {
      const fd = await file.fd.catch(() => null);
      if (fd !== null) await this.replica.release(fd).catch(() => undefined);
    }
    const views = [...this.viewFiles.values()];
    this.viewFiles.clear();
    for (const v of views) {
      const h = await v.catch(() => null);
      if (h) this.view?.release(h);
    }
    // Out of space: what this sync wrote into files it made goes, or the replica could not
    // even open its database for the next sync. No snapshot sees those files; the next
    // sync sends them again.
    if (hasCode(reason, 'ENOSPC', 'EDQUOT')) {
      for (const fid of this.fresh) {
        const c = this.byFid.get(fid);
        if (c?.node?.type !== 'file') continue;
        const rel = this.pathOf(fid);
        await this.checkPath(rel, 'file')
          .then(() => openFile(this.replica.backing.abs(rel), fsConstants.O_WRONLY | fsConstants.O_NOFOLLOW))
          .then((f) => f.truncate(0).finally(() => f.close()))
          .catch(() => undefined);
      }
    }
  }

  // ---------------------------------------------------------------- names

  /** Runs plan steps batch by batch; `replaying` skips the ones an earlier run already made. */
  private async runPlan(steps: LoggedStep[], replaying: boolean, rootTimes?: [string, string]): Promise<void> {
    const me = { uid: this.replica.myUid, gid: this.replica.myGid, pid: process.pid };
    const usesStage = this.usesStage(steps);
    if (usesStage) await this.replica.mkdir(`/${this.stage}`, 0o700, me).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'EEXIST') throw err; });
    for (const batch of stepBatches(steps)) await mapLimit(batch, CONCURRENCY, (s) => this.apply(s as LoggedStep, me, replaying));
    if (usesStage || (replaying && await this.replica.lstatRel(this.stage))) await this.replica.rmdir(`/${this.stage}`);
    if (rootTimes) await this.replica.utimens('/', specOf(rootTimes[0]), specOf(rootTimes[1]));
  }

  private staged(p: string): boolean {
    return p.startsWith(`${this.stage}/`);
  }

  /** Whether a plan moves names through the staging directory (then made in the root for it). */
  private usesStage(steps: readonly Step[]): boolean {
    return steps.some((x) => (x.op === 'rename' || x.op === 'link' ? this.staged(x.from) || this.staged(x.to) : this.staged(x.path)));
  }

  /** Finishes the names of a sync that stopped while changing them, then records them as made. */
  private async replay(steps: LoggedStep[]): Promise<void> {
    await this.runPlan(steps, true, this.meta?.pending?.names === 'planned' ? this.meta.pending.rootTimes : undefined);
    this.meta = { ...this.meta!, pending: { ...this.meta!.pending!, names: 'applied' } };
    await this.replica.commitPlan(this.meta);
    this.checkedDirs.clear();
  }

  private async inoAt(rel: string): Promise<number | null> {
    const st = await this.replica.lstatRel(rel);
    return st ? Number(st.ino) : null;
  }

  private async apply(s: LoggedStep, me: { uid: number; gid: number; pid: number }, replaying: boolean): Promise<void> {
    const r = this.replica;
    const type = this.byFid.get(s.fid)?.node?.type ?? this.current(s.fid)?.type ?? (s.op === 'rmdir' ? 'dir' : undefined);
    if (replaying) {
      // Done already if the file is no longer where the step takes it from (renames,
      // removals), or the name it makes is there (links, creations).
      if (s.op === 'rename' || s.op === 'unlink' || s.op === 'rmdir') {
        const at = await this.inoAt(s.op === 'rename' ? s.from : s.path);
        if (at === null || (s.ino !== undefined && at !== s.ino)) return;
      } else if (s.op === 'link') {
        if (await this.inoAt(s.to) !== null) return;
      } else if (await this.replica.lstatRel(s.path)) {
        await this.checkPath(s.path, s.type);
        return;
      }
    }
    if (s.op === 'rename' || s.op === 'link') {
      await this.checkPath(s.from, this.staged(s.from) ? undefined : type);
      await this.checkPath(s.to);
      // Plans only ever move names to free places: something there was put outside replfs.
      if (await r.lstatRel(s.to)) throw outsideChange(`${s.to} exists`);
    } else if (s.op === 'create') {
      await this.checkPath(s.path);
    } else {
      await this.checkPath(s.path, s.op === 'rmdir' ? 'dir' : undefined);
    }
    return applyStep(r, s, this.byFid.get(s.fid), me);
  }

  /**
   * Before a complete change set is applied over a replica changed outside replfs: names
   * the records give that are missing or hold something else are forgotten (the plan then
   * makes them again), and whatever the records do not name is removed.
   */
  private async repair(): Promise<void> {
    const children = new Map<FileId, Array<[FileId, string]>>();
    for (const [fid, node] of this.known) {
      for (const [parent, name] of node.n) {
        let list = children.get(parent);
        if (!list) children.set(parent, list = []);
        list.push([fid, name]);
      }
    }
    const valid = new Map<FileId, Array<[FileId, string]>>();
    const firstIno = new Map<FileId, number>();
    const expected = new Set<string>(['']);
    const queue: Array<[FileId, string]> = [[ROOT_FID, '']];
    while (queue.length > 0) {
      const [dir, dirPath] = queue.shift()!;
      for (const [fid, name] of children.get(dir) ?? []) {
        const rel = join(dirPath, name);
        const st = await this.replica.lstatRel(rel);
        const want = nodeTypeOf(this.known.get(fid)!.t);
        const kind = !st ? null : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
        if (!st || kind !== want) continue;
        const ino = Number(st.ino);
        if (firstIno.has(fid) ? firstIno.get(fid) !== ino : false) continue;
        firstIno.set(fid, ino);
        let names = valid.get(fid);
        if (!names) valid.set(fid, names = []);
        names.push([dir, name]);
        expected.add(rel);
        if (want === 'dir' && names.length === 1) queue.push([fid, rel]);
      }
    }
    for (const [fid, node] of this.known) node.n = valid.get(fid) ?? [];
    await this.removeStrays('', expected);
  }

  /** Removes, through the volume, every name below `rel` that `expected` does not hold. */
  private async removeStrays(rel: string, expected: Set<string>): Promise<void> {
    for (const e of await this.replica.readdir(rel === '' ? '/' : `/${rel}`)) {
      const child = join(rel, e.name);
      if (rel === '' && e.name.startsWith(STAGING_PREFIX)) { await this.removeTree(child); continue; }
      if (!expected.has(child)) await this.removeTree(child);
      else if (e.type === 4) await this.removeStrays(child, expected);
    }
  }

  private async removeTree(rel: string): Promise<void> {
    const st = await this.replica.lstatRel(rel);
    if (!st) return;
    if (st.isDirectory()) {
      for (const e of await this.replica.readdir(`/${rel}`)) await this.removeTree(join(rel, e.name));
      await this.replica.rmdir(`/${rel}`);
    } else {
      await this.replica.unlink(`/${rel}`);
    }
  }

  // ---------------------------------------------------------------- data

  /** Data may only land inside the file's new size. */
  private checkRange(fid: FileId, offset: number, length: number): void {
    const c = this.byFid.get(fid);
    const size = c?.node?.type === 'file' ? c.attr?.size : undefined;
    if (size === undefined || !Number.isSafeInteger(offset) || offset < 0 || offset + length > size) {
      throw new ReplfsError('refused', `the sender wrote outside file ${fid}`);
    }
  }

  private zeros(length: number, blockSize: number): Promise<Buffer[]> {
    const full = Math.floor(length / blockSize);
    const rest = length - full * blockSize;
    const hashOf = (n: number) => {
      let h = this.zeroHashes.get(n);
      if (!h) this.zeroHashes.set(n, h = this.pool.hash(Buffer.alloc(n), n).then((r) => r.hashes[0]!));
      return h;
    };
    return Promise.all([...Array(full).fill(0).map(() => hashOf(blockSize)), ...(rest > 0 ? [hashOf(rest)] : [])]);
  }

  /** The replica file's size when this sync first looked (what a compare past it finds is zeros). */
  private sizeOf(fid: FileId): Promise<number> {
    let size = this.sizeBefore.get(fid);
    if (!size) {
      size = (async () => {
        const rel = this.dataPathOf(fid);
        await this.checkPath(rel, 'file');
        const st = await this.replica.lstatRel(rel);
        if (!st) throw outsideChange(`${rel} is missing`);
        return Number(st.size);
      })();
      this.sizeBefore.set(fid, size);
    }
    return size;
  }

  /** Runs `work` with the replica file open for reading and writing. */
  private async withFile<T>(fid: FileId, work: (fd: number) => Promise<T>): Promise<T> {
    let file = this.openFiles.get(fid);
    if (!file) {
      const fd = this.openFile(fid);
      file = { fd, users: 0 };
      this.openFiles.set(fid, file);
      fd.catch(() => { if (this.openFiles.get(fid) === file) this.openFiles.delete(fid); });
    } else {
      // Most recently used last.
      this.openFiles.delete(fid);
      this.openFiles.set(fid, file);
    }
    // Counted before the first await: closeIdle never closes a descriptor about to be used.
    file.users++;
    try {
      return await work(await file.fd);
    } finally {
      file.users--;
      void this.closeIdle();
    }
  }

  /** Makes a new file whose creation was left for its first block; returns it open. */
  private async makeDeferred(fid: FileId): Promise<number> {
    const step = this.deferred.get(fid)!;
    this.deferred.delete(fid);
    this.sizeBefore.set(fid, Promise.resolve(0));
    if (step.op !== 'create') throw new ReplfsError('internal', `step for ${fid} is not a creation`);
    await this.checkPath(step.path);
    const me = { uid: this.replica.myUid, gid: this.replica.myGid, pid: process.pid };
    return this.replica.create(`/${step.path}`, 0o600, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_EXCL, me);
  }

  private async openFile(fid: FileId): Promise<number> {
    if (this.deferred.has(fid)) return this.makeDeferred(fid);
    await this.sizeOf(fid);
    const rel = this.dataPathOf(fid);
    const fd = await this.replica.open(`/${rel}`, this.need().mode === 'sync' ? fsConstants.O_RDWR : fsConstants.O_RDONLY);
    const st = await this.replica.fgetattr(`/${rel}`, fd);
    const names = this.byFid.get(fid)?.node?.names.length ?? 1;
    if (st.nlink > names) {
      await this.replica.release(fd);
      throw outsideChange(`${rel} has ${st.nlink} links, more than the ${names} replfs made`);
    }
    return fd;
  }

  /** Closes the least recently used files nobody is using, down to OPEN_FILES. */
  private async closeIdle(): Promise<void> {
    const idle: OpenFile[] = [];
    for (const [fid, file] of this.openFiles) {
      if (this.openFiles.size <= OPEN_FILES) break;
      if (file.users > 0) continue;
      this.openFiles.delete(fid);
      idle.push(file);
    }
    for (const file of idle) {
      const fd = await file.fd.catch(() => null);
      if (fd !== null) await this.replica.release(fd).catch(() => undefined);
    }
  }

  // ---------------------------------------------------------------- attributes

  private async applyAttrs(c: FileChange): Promise<void> {
    const rel = c.fid === ROOT_FID ? '' : this.pathOf(c.fid);
    const type = c.node!.type;
    // The directories on the way (the file itself is checked by setAttributes, with no extra lstat).
    await this.checkPath(rel);
    const a = c.attr!;
    try {
      await this.replica.setAttributes(rel === '' ? '/' : `/${rel}`, {
        type, ...(type === 'file' ? { size: a.size } : {}),
        uid: a.uid, gid: a.gid, mode: a.mode, atime: specOf(a.atime), mtime: specOf(a.mtime),
        xattrs: (c.xattrs ?? []).map(([name, value]) => [name, Buffer.from(value, 'base64')]),
        ...(type === 'file' ? { expectLinks: c.node!.names.length } : {}),
      });
    } catch (err) {
      if (err instanceof FsError && (err.code === 'EMLINK' || err.code === 'EEXIST')) throw outsideChange(err.message);
      if (hasCode(err, 'ENOENT')) throw outsideChange(`${rel} is missing`);
      throw err;
    }
  }

  // ---------------------------------------------------------------- verify

  /** verify: the source's names, types and attributes against the replica snapshot's. */
  private async verifyNames(changes: FileChange[]): Promise<FilesResult> {
    const view = this.view!;
    const out: Difference[] = [];
    let total = 0;
    const note = (path: string, what: string) => { total++; if (out.length < MAX_DIFFERENCES) out.push({ path: path || '/', what }); };
    const sourcePaths = new Set<string>();
    await mapLimit(changes, CONCURRENCY, async (c) => {
      if (!c.node || !c.attr) return;
      const paths = c.paths ?? [];
      let firstFid: FileId | null = null;
      for (const p of paths) {
        sourcePaths.add(p);
        let found: { fid: FileId; t: string };
        try {
          found = await view.resolve(p);
        } catch (err) {
          if (hasCode(err, 'ENOENT', 'ENOTDIR')) { note(p, 'missing'); continue; }
          throw err;
        }
        if (found.t !== typeTagOf(c.node)) { note(p, 'type'); continue; }
        if (firstFid === null) {
          firstFid = found.fid;
          if (c.node.type === 'file') this.verifyPaths.set(c.fid, p);
          const a = await view.attrOf(found.fid);
          const s = c.attr;
          if (c.node.type !== 'symlink' && (a.mode & 0o7777) !== (s.mode & 0o7777)) note(p, 'mode');
          if (a.uid !== s.uid || a.gid !== s.gid) note(p, 'owner');
          if (c.node.type === 'file' && a.size !== s.size) note(p, 'size');
          if (a.mtime !== s.mtime) note(p, 'mtime');
          if (c.node.type === 'symlink' && a.l !== c.target) note(p, 'target');
          if (JSON.stringify(a.x ?? []) !== JSON.stringify(c.xattrs ?? [])) note(p, 'xattrs');
        } else if (found.fid !== firstFid) {
          note(p, 'links');
        }
      }
    });
    const d = this.meta?.divergent;
    if (d) note('', `the replica's live tree was changed outside replfs (${d.created + d.changed + d.moved + d.deleted} files; e.g. ${d.examples.slice(0, 3).join(', ') || 'the root'}); sync --force repairs it`);
    // What the replica has and the source does not.
    const walk = async (rel: string, fid: FileId): Promise<void> => {
      for (const child of await view.childrenOf(fid)) {
        const p = join(rel, child.name);
        if (!sourcePaths.has(p)) note(p, 'extra');
        else if (child.t === TypeTag.dir) await walk(p, child.fid);
      }
    };
    await walk('', ROOT_FID);
    return { steps: 0, differences: out, total };
  }

  private async hashView(fid: FileId, offset: number, length: number, blockSize: number): Promise<Buffer[]> {
    let h = this.viewFiles.get(fid);
    if (!h) {
      const p = this.verifyPaths.get(fid);
      h = p === undefined ? Promise.resolve(null) : this.view!.open(p).catch(() => null);
      this.viewFiles.set(fid, h);
    }
    const handle = await h;
    const mine = Buffer.allocUnsafeSlow(length);
    const have = handle ? await this.view!.read(handle, mine, length, offset) : 0;
    mine.fill(0, have);
    return (await this.pool.hash(mine, blockSize)).hashes;
  }

  // ---------------------------------------------------------------- bookkeeping

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
    return join(this.pathOf(first[0], depth + 1), first[1]);
  }

  /** Where a file's data is: where the plan puts it, or where it is now in a dry run (which makes no plan). */
  private dataPathOf(fid: FileId): string {
    if (this.need().mode !== 'dry-run') return this.pathOf(fid);
    const walk = (f: FileId, depth: number): string => {
      if (f === ROOT_FID) return '';
      const first = this.current(f)?.names[0];
      if (!first || depth > 4096) throw new ReplfsError('internal', `no path for source file ${f}`);
      return join(walk(first[0], depth + 1), first[1]);
    };
    return walk(fid, 0);
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
      cur = join(cur, parts[i]!);
      const last = i === parts.length - 1;
      if (!last && this.checkedDirs.has(cur)) continue;
      if (last && expect === undefined) return;
      const st = await this.replica.lstatRel(cur);
      const kind = !st ? 'missing' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
      const want = last ? expect! : 'dir';
      if (kind !== want) throw outsideChange(`${cur} is ${kind === 'missing' ? 'missing' : `a ${kind}`}, not a ${want}`);
      if (!last) this.checkedDirs.add(cur);
    }
  }
}

function outsideChange(what: string): ReplfsError {
  return new ReplfsError('refused', `the replica was changed outside replfs: ${what}`,
    'replfs verify lists the differences; replfs sync --force makes the replica equal to the source again');
}

const isId = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isNs = (v: unknown): v is string => typeof v === 'string' && /^-?\d{1,30}$/.test(v);

function checkBegin(b: Begin): void {
  const bad = (why: string) => new ReplfsError('refused', `a malformed begin from the sender: ${why}`);
  if (typeof b !== 'object' || b === null) throw bad('not an object');
  if (typeof b.sourceVolumeId !== 'string' || !/^[A-Za-z0-9-]{1,64}$/.test(b.sourceVolumeId)) throw bad('no valid source volume id');
  const s = b.snapshot as Partial<SnapshotInfo> | undefined;
  if (!s || typeof s.name !== 'string' || typeof s.sourceTime !== 'string' || Number.isNaN(Date.parse(s.sourceTime))) throw bad('no valid snapshot');
  if (!Number.isInteger(b.blockSize) || b.blockSize < 4096 || b.blockSize > 1 << 20 || (b.blockSize & (b.blockSize - 1)) !== 0) throw bad('a block size that is not a power of two from 4K to 1M');
  if (!['sync', 'dry-run', 'verify'].includes(b.mode)) throw bad(`an unknown mode ${JSON.stringify(b.mode)}`);
  if (typeof b.force !== 'boolean') throw bad('force is not a boolean');
}

/** A change from the wire, checked for shape before anything trusts it. */
function checkChange(c: FileChange, withPaths: boolean): void {
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
  if (withPaths && c.node !== null) {
    if (!Array.isArray(c.paths) || !c.paths.every((p) => typeof p === 'string' && !p.includes('\0') && !p.split('/').some((x) => x === '..' || x === '.'))) throw bad('malformed paths');
  }
}

function checkLineage(l: NonNullable<Begin['lineage']>): void {
  const bad = (why: string) => new ReplfsError('refused', `a malformed begin from the sender: ${why}`);
  if (typeof l !== 'object' || l === null || typeof l.from !== 'string' || !Array.isArray(l.snapshots)) throw bad('a malformed lineage');
  for (const x of l.snapshots) {
    if (typeof x !== 'object' || x === null || typeof x.name !== 'string' || typeof x.sourceTime !== 'string') throw bad('a malformed lineage snapshot');
  }
}

/** The paths of a listing (names resolved through parents), with type tags; malformed ones refused. */
function listingPaths(nodes: ListingNode[]): Map<string, string> {
  const bad = (why: string) => new ReplfsError('refused', `a malformed base listing from the sender: ${why}`);
  const byFid = new Map<FileId, ListingNode>();
  for (const n of nodes) {
    if (!Array.isArray(n) || n.length !== 3 || !isId(n[0]) || typeof n[1] !== 'string' || !Array.isArray(n[2])) throw bad('a malformed node');
    for (const r of n[2]) if (!Array.isArray(r) || r.length !== 2 || !isId(r[0]) || typeof r[1] !== 'string' || r[1] === '' || r[1].includes('/') || r[1] === '.' || r[1] === '..') throw bad('a malformed name');
    if (byFid.has(n[0])) throw bad(`file ${n[0]} is listed twice`);
    byFid.set(n[0], n);
  }
  const root = byFid.get(ROOT_FID);
  if (!root || root[2].length !== 0) throw bad('no root');
  const dirPath = new Map<FileId, string>([[ROOT_FID, '']]);
  const resolve = (fid: FileId, depth = 0): string => {
    const known = dirPath.get(fid);
    if (known !== undefined) return known;
    const n = byFid.get(fid);
    if (!n || n[1] !== TypeTag.dir || n[2].length !== 1 || depth > 4096) throw bad(`directory ${fid} cannot be placed`);
    const [parent, name] = n[2][0]!;
    const p = join(resolve(parent, depth + 1), name);
    dirPath.set(fid, p);
    return p;
  };
  const out = new Map<string, string>([['', TypeTag.dir]]);
  for (const [fid, t, names] of nodes) {
    for (const [parent, name] of names) {
      const p = join(resolve(parent), name);
      if (out.has(p) && fid !== ROOT_FID) throw bad(`two files at ${p}`);
      out.set(p, t);
    }
  }
  return out;
}
