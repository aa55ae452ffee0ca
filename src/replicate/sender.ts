// The sending side of a sync: picks the snapshot, asks the receiver for its base, sends the
// change set since that base, and for each changed range sends block hashes first and then
// only the blocks the receiver lacks. Ranges are worked on many at a time (reading,
// hashing, and waiting for the receiver's answers overlap), in file order.
import { ROOT_FID, type FileId, type KeepPolicy } from '../core/types.js';
import { ReplfsError } from '../errors/index.js';
import type { SnapshotRecord, Volume } from '../volume/index.js';
import { readFull } from '../volume/io.js';
import type { SnapshotView, ViewHandle } from '../volume/view.js';
import { changeSet, type FileChange } from './changes.js';
import type { HashPool } from './hasher.js';
import type { Difference, FinishResult, ListingNode, ReceiverApi, ReceiverState, Space, SyncMode } from './receiver.js';
import type { NameRef } from './plan.js';

/** Bytes hashed and compared per request. */
const CHUNK = 1024 * 1024;
/** Requests in flight. */
const CONCURRENCY = 16;
/** Progress reports at most this often, and at least this often. */
const PROGRESS_MS = 200;
const HEARTBEAT_MS = 5000;

export interface SyncProgress {
  phase: 'plan' | 'names' | 'data' | 'finish';
  filesTotal: number;
  filesDone: number;
  /** Bytes to read and compare, and read so far. */
  bytesTotal: number;
  bytesDone: number;
  bytesSent: number;
}

export interface SendOptions {
  snapshot?: string;
  hashPool: HashPool;
  mode?: SyncMode;
  /** Go on although the replica was changed outside replfs (a full compare). */
  force?: boolean;
  onProgress?: (p: SyncProgress) => void;
  /** Once the receiver has answered and before any change is sent (to pin what is being sent). */
  onStart?: (state: ReceiverState, target: SnapshotRecord) => Promise<void>;
  /** Bytes the connection carried, both ways (a remote receiver knows). */
  wireBytes?: () => number;
  /** Once the replica confirms, prune its snapshots by these rules. */
  retention?: KeepPolicy;
}

export interface SyncSummary {
  /** The source snapshot sent, and its time. */
  snapshot: string;
  sourceTime: string;
  /** The replica snapshot that now holds it (null when the destination already had it, or for a dry run). */
  replicaSnapshot: string | null;
  /** The source snapshot the destination had confirmed before, if any. */
  base: string | null;
  /** The replica's volume id. */
  replicaId: string;
  /** `full`: the first sync; `incremental`: the change set since the base; `complete`: every file compared (--force after outside changes). */
  kind: 'full' | 'incremental' | 'complete';
  /** Why every file was compared (kind `complete`). */
  completeReason?: string;
  /** An interrupted sync of this destination was finished by this one. */
  resumed: boolean;
  dryRun: boolean;
  filesChanged: number;
  /** File data read and hashed on the source. */
  bytesRead: number;
  /** Block data sent to the receiver (what a dry run would send). */
  bytesSent: number;
  blocksSent: number;
  /** Blocks the receiver already had. */
  blocksSkipped: number;
  /** Everything the connection carried both ways: frames, metadata, hashes and blocks. */
  bytesOnWire: number;
  durationMs: number;
  /** Free and total bytes where the replica lives, as the destination last said. */
  space?: Space;
  /** What the destination's retention removed, or why it could not. */
  pruned?: FinishResult['pruned'];
  /**
   * A failback: the destination was the volume this one was promoted from; it kept its own
   * changes since `base` in snapshot `kept` (if any), undid them, and became a replica.
   */
  rebased?: { base: string; kept: string | null; reverted: { files: number; bytesCopied: number } };
}

export interface VerifySummary {
  snapshot: string;
  sourceTime: string;
  /** The replica snapshot compared with. */
  replicaSnapshot: string;
  identical: boolean;
  filesChecked: number;
  bytesChecked: number;
  /** How replica and source differ (at most 1000 listed), and how many differences there are. */
  differences: Difference[];
  totalDifferences: number;
  bytesOnWire: number;
  durationMs: number;
}

interface Task {
  c: FileChange;
  pos: number;
  len: number;
}

export async function send(source: Volume, receiver: ReceiverApi, opts: SendOptions): Promise<SyncSummary> {
  return (await start(source, receiver, opts)).summary;
}

export async function verify(source: Volume, receiver: ReceiverApi, opts: Omit<SendOptions, 'mode' | 'force' | 'onStart'>): Promise<VerifySummary> {
  const began = Date.now();
  const target = pick(source, opts.snapshot);
  const state = await receiver.begin(beginOf(source, target, 'verify', false));
  const changes = await changeSet(source, null, target.name, { paths: true });
  const names = await receiver.files(changes, true);
  const differences = [...(names.differences ?? [])];
  let total = names.total ?? differences.length;
  const byFile = new Map<FileId, { path: string; blocks: number; first: number }>();
  const counts = await transfer(source, receiver, target, changes, opts, 'verify', (c, at) => {
    const d = byFile.get(c.fid) ?? { path: c.paths?.[0] ?? String(c.fid), blocks: 0, first: at };
    d.blocks++;
    d.first = Math.min(d.first, at);
    byFile.set(c.fid, d);
  });
  await receiver.finish();
  for (const d of byFile.values()) {
    total++;
    if (differences.length < 1000) differences.push({ path: d.path, what: `data (${d.blocks} block${d.blocks === 1 ? ' differs' : 's differ'}, the first at byte ${d.first})` });
  }
  return {
    snapshot: target.name, sourceTime: target.sourceTime, replicaSnapshot: state.snapshot ?? '',
    identical: total === 0, filesChecked: changes.length, bytesChecked: counts.bytesRead,
    differences, totalDifferences: total, bytesOnWire: opts.wireBytes?.() ?? 0, durationMs: Date.now() - began,
  };
}

/** Every file of snapshot `name`: id, type tag and names (a failback's base, for the receiver). */
async function baseListing(volume: Volume, name: string): Promise<ListingNode[]> {
  const view = volume.view(name);
  const names = new Map<FileId, { t: string; n: NameRef[] }>([[ROOT_FID, { t: 'd', n: [] }]]);
  let level: FileId[] = [ROOT_FID];
  while (level.length > 0) {
    const next: FileId[] = [];
    for (const dir of level) {
      for (const c of await view.childrenOf(dir)) {
        const known = names.get(c.fid);
        if (known) { known.n.push([dir, c.name]); continue; }
        names.set(c.fid, { t: c.t, n: [[dir, c.name]] });
        if (c.t === 'd') next.push(c.fid);
      }
    }
    level = next;
  }
  return [...names].map(([fid, x]) => [fid, x.t, x.n]);
}

function pick(source: Volume, name: string | undefined): SnapshotRecord {
  const target = name ? source.snapshotNamed(name) : source.snapshots().at(-1);
  if (!target) throw new ReplfsError('refused', 'the source has no snapshot to send', 'take one with `replfs snapshot`');
  return target;
}

function beginOf(source: Volume, target: SnapshotRecord, mode: SyncMode, force: boolean) {
  return {
    sourceVolumeId: source.config.volumeId, blockSize: source.config.blockSize, mode, force,
    snapshot: { name: target.name, sourceTime: target.sourceTime, label: target.label, consistency: target.consistency },
  };
}

async function start(source: Volume, receiver: ReceiverApi, opts: SendOptions): Promise<{ summary: SyncSummary }> {
  // The last progress is said again every few seconds, so a long quiet step (planning a huge
  // tree, the receiver applying its names) is not taken for a hung sync.
  if (opts.onProgress) {
    const report = opts.onProgress;
    let last: SyncProgress | null = null;
    const heartbeat = setInterval(() => { if (last) report(last); }, HEARTBEAT_MS);
    opts = { ...opts, onProgress: (p) => { last = p; report(p); } };
    try {
      return await run(source, receiver, opts);
    } finally {
      clearInterval(heartbeat);
    }
  }
  return run(source, receiver, opts);
}

async function run(source: Volume, receiver: ReceiverApi, opts: SendOptions): Promise<{ summary: SyncSummary }> {
  const began = Date.now();
  const mode = opts.mode ?? 'sync';
  const target = pick(source, opts.snapshot);
  // A volume promoted from a replica says so: sent back to the volume it replicated (a
  // failback), the sync starts from the newest snapshot both hold.
  const promoted = await source.promoted();
  const lineage = promoted ? { from: promoted.from, snapshots: source.snapshots().map((x) => ({ name: x.name, sourceTime: x.sourceTime })) } : undefined;
  const state = await receiver.begin({ ...beginOf(source, target, mode, opts.force === true), ...(lineage ? { lineage } : {}) });
  const base = state.base;
  const summary: SyncSummary = {
    snapshot: target.name, sourceTime: target.sourceTime, replicaSnapshot: null, base: base?.name ?? null, replicaId: state.replicaId,
    kind: 'full', resumed: state.resume !== null, dryRun: mode === 'dry-run',
    filesChanged: 0, bytesRead: 0, bytesSent: 0, blocksSent: 0, blocksSkipped: 0, bytesOnWire: 0, durationMs: 0,
    ...(state.space ? { space: state.space } : {}),
  };
  const finish = () => {
    summary.bytesOnWire = opts.wireBytes?.() ?? 0;
    summary.durationMs = Date.now() - began;
    return { summary };
  };
  if (base && !state.complete) {
    if (base.name === target.name && !state.resume && !state.rebase) return finish();
    if (Date.parse(base.sourceTime) >= Date.parse(target.sourceTime)) {
      throw new ReplfsError('refused', `${target.name} is not newer than ${base.name}, which the destination already has`);
    }
  }
  opts.onProgress?.({ phase: 'plan', filesTotal: 0, filesDone: 0, bytesTotal: 0, bytesDone: 0, bytesSent: 0 });
  if (state.rebase) {
    if (!base || !source.snapshots().some((x) => x.name === base.name)) throw new ReplfsError('refused', 'the destination offered a base this volume does not hold');
    const r = await receiver.rebase(await baseListing(source, base.name));
    summary.rebased = { base: base.name, kept: r.kept, reverted: r.reverted };
    // The destination now holds the snapshot being sent: nothing more to do.
    if (base.name === target.name) return finish();
  }
  // Every file when the destination has no base, asks for all, or its base is gone here;
  // else the journal's change set since the base, with what an interrupted sync touched.
  const baseHere = base !== null && source.snapshots().some((s) => s.name === base.name);
  const resumeHere = state.resume !== null && source.snapshots().some((s) => s.name === state.resume!.name);
  let complete = !baseHere || state.complete || (state.resume !== null && !resumeHere);
  if (base !== null) {
    if (!baseHere) summary.completeReason = `the base ${base.name} is no longer on the source`;
    else if (state.complete) summary.completeReason = 'the destination asked for every file (a --force sync)';
    else if (state.resume !== null && !resumeHere) summary.completeReason = `the interrupted sync's snapshot ${state.resume.name} is no longer on the source`;
  }
  // A journal that lost detail (or was found damaged, maybe only now, while reading it)
  // cannot say which blocks changed: everything is compared, never a change missed.
  const degraded = () => (baseHere && !complete
    ? (source.fullCompareReason(base!.name, target.name) ?? (resumeHere ? source.fullCompareReason(base!.name, state.resume!.name) : null))?.reason ?? null
    : null);
  let why = degraded();
  if (why) { complete = true; summary.completeReason = why; }
  let changes = complete
    ? await changeSet(source, null, target.name)
    : await changeSet(source, base!.name, target.name, resumeHere ? { also: state.resume!.name } : {});
  why = degraded();
  if (why) {
    complete = true;
    summary.completeReason = why;
    changes = await changeSet(source, null, target.name);
  }
  summary.kind = base === null ? 'full' : complete ? 'complete' : 'incremental';
  summary.filesChanged = changes.length;
  await opts.onStart?.(state, target);
  opts.onProgress?.({ phase: 'names', filesTotal: changes.length, filesDone: 0, bytesTotal: 0, bytesDone: 0, bytesSent: 0 });
  await receiver.files(changes, complete);
  const counts = await transfer(source, receiver, target, changes, opts, mode, null);
  Object.assign(summary, counts);
  opts.onProgress?.({ phase: 'finish', filesTotal: changes.length, filesDone: changes.length, bytesTotal: counts.bytesRead, bytesDone: counts.bytesRead, bytesSent: counts.bytesSent });
  const fin = await receiver.finish(opts.retention && mode === 'sync' ? { retention: opts.retention } : {});
  summary.replicaSnapshot = fin.replicaSnapshot;
  if (fin.space) summary.space = fin.space;
  if (fin.pruned) summary.pruned = fin.pruned;
  return finish();
}

interface Counts {
  bytesRead: number;
  bytesSent: number;
  blocksSent: number;
  blocksSkipped: number;
}

/**
 * Reads each changed range as of the snapshot, hashes it, asks the receiver which blocks it
 * lacks and sends those (a dry run counts them; a verify reports them to `differs`).
 */
async function transfer(
  source: Volume, receiver: ReceiverApi, target: SnapshotRecord, changes: FileChange[], opts: SendOptions, mode: SyncMode,
  differs: ((c: FileChange, at: number) => void) | null,
): Promise<Counts> {
  const counts: Counts = { bytesRead: 0, bytesSent: 0, blocksSent: 0, blocksSkipped: 0 };
  const blockSize = source.config.blockSize;
  const step = CHUNK - (CHUNK % blockSize);
  const tasks: Task[] = [];
  const left = new Map<FileId, number>();
  let bytesTotal = 0;
  for (const c of changes) {
    if (c.node?.type !== 'file' || !c.attr) continue;
    for (const ext of c.extents) {
      const end = Math.min(c.attr.size, ext.offset + ext.length);
      for (let pos = ext.offset; pos < end; pos += step) {
        const len = Math.min(step, end - pos);
        tasks.push({ c, pos, len });
        bytesTotal += len;
        left.set(c.fid, (left.get(c.fid) ?? 0) + 1);
      }
    }
  }
  const filesTotal = changes.length;
  let filesDone = changes.length - left.size;
  const view = source.view(target.name);
  const handles = new Map<FileId, Promise<ViewHandle>>();
  let lastReport = 0;
  const report = (force = false) => {
    if (!opts.onProgress) return;
    const now = Date.now();
    if (!force && now - lastReport < PROGRESS_MS) return;
    lastReport = now;
    opts.onProgress({ phase: 'data', filesTotal, filesDone, bytesTotal, bytesDone: counts.bytesRead, bytesSent: counts.bytesSent });
  };
  report(true);
  let next = 0;
  let failed: unknown = null;
  const worker = async () => {
    while (next < tasks.length && failed === null) {
      const task = tasks[next++]!;
      const fid = task.c.fid;
      let h = handles.get(fid);
      if (!h) {
        h = openAt(view, task.c);
        handles.set(fid, h);
      }
      try {
        await chunk(await h, task);
      } catch (err) {
        failed ??= err;
      } finally {
        const n = left.get(fid)! - 1;
        left.set(fid, n);
        if (n === 0) {
          left.delete(fid);
          handles.delete(fid);
          filesDone++;
          h.then((x) => view.release(x), () => undefined);
        }
        report();
      }
    }
  };
  // Chunk buffers are reused: a gigabyte of fresh ones costs page faults, and garbage
  // collections that the external memory brings on.
  const spare: ArrayBuffer[] = [];
  const chunk = async (h: ViewHandle, { c, pos, len }: Task) => {
    const mem = spare.pop();
    const buf = mem ? Buffer.from(mem, 0, len) : Buffer.allocUnsafeSlow(step).subarray(0, len);
    const got = await readFull((b, n, p) => view.read(h, b, n, p), buf, len, pos);
    if (got === 0) {
      spare.push(buf.buffer as ArrayBuffer);
      return;
    }
    counts.bytesRead += got;
    const { hashes, data } = await opts.hashPool.hash(buf.subarray(0, got), blockSize);
    const needed = await receiver.compare(c.fid, pos, blockSize, got, hashes);
    counts.blocksSkipped += hashes.length - needed.length;
    for (const i of needed) {
      const block = data.subarray(i * blockSize, Math.min(got, (i + 1) * blockSize));
      if (mode === 'sync') await receiver.write(c.fid, pos + i * blockSize, block);
      else if (differs) differs(c, pos + i * blockSize);
      counts.bytesSent += block.length;
      counts.blocksSent++;
    }
    // Every block of it is written (or handed to the connection): the memory is free again.
    spare.push(data.buffer as ArrayBuffer);
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, tasks.length) }, worker));
  // Handles of files whose tasks stopped early.
  for (const h of handles.values()) h.then((x) => view.release(x), () => undefined);
  if (failed !== null) throw failed;
  report(true);
  return mode === 'verify' ? { ...counts, bytesSent: 0, blocksSent: 0 } : counts;
}

function openAt(view: SnapshotView, c: FileChange): Promise<ViewHandle> {
  return view.openFid(c.fid);
}
