// The sending side of a sync: picks the snapshot, asks the receiver for its base, sends the
// change set since that base, and for each changed range sends block hashes first and then
// only the blocks the receiver lacks.
import { ReplfsError } from '../errors/index.js';
import type { Volume } from '../volume/index.js';
import { readFull } from '../volume/io.js';
import { changeSet } from './changes.js';
import type { HashPool } from './hasher.js';
import type { ReceiverApi } from './receiver.js';

/** Bytes hashed and compared per round trip. */
const CHUNK = 1024 * 1024;

export interface SyncSummary {
  /** The source snapshot sent, and its time. */
  snapshot: string;
  sourceTime: string;
  /** The replica snapshot that now holds it (null when the destination already had it). */
  replicaSnapshot: string | null;
  /** The source snapshot the destination had confirmed before, if any. */
  base: string | null;
  /** The replica's volume id. */
  replicaId: string;
  filesChanged: number;
  /** File data read and hashed on the source. */
  bytesRead: number;
  /** Block data sent to the receiver. */
  bytesSent: number;
  blocksSent: number;
  /** Blocks the receiver already had. */
  blocksSkipped: number;
  durationMs: number;
}

export async function send(source: Volume, receiver: ReceiverApi, opts: { snapshot?: string; hashPool: HashPool }): Promise<SyncSummary> {
  const began = Date.now();
  const target = opts.snapshot ? source.snapshotNamed(opts.snapshot) : source.snapshots().at(-1);
  if (!target) throw new ReplfsError('refused', 'the source has no snapshot to send', 'take one with `replfs snapshot`');
  const blockSize = source.config.blockSize;
  const { base, replicaId } = await receiver.begin({
    sourceVolumeId: source.config.volumeId, blockSize,
    snapshot: { name: target.name, sourceTime: target.sourceTime, label: target.label, consistency: target.consistency },
  });
  const summary: SyncSummary = {
    snapshot: target.name, sourceTime: target.sourceTime, replicaSnapshot: null, base: base?.name ?? null, replicaId,
    filesChanged: 0, bytesRead: 0, bytesSent: 0, blocksSent: 0, blocksSkipped: 0, durationMs: 0,
  };
  if (base) {
    if (base.name === target.name) {
      summary.durationMs = Date.now() - began;
      return summary;
    }
    if (!source.snapshots().some((s) => s.name === base.name)) {
      throw new ReplfsError('refused', `the snapshot ${base.name} that the destination last confirmed is gone from the source`);
    }
    if (Date.parse(base.sourceTime) >= Date.parse(target.sourceTime)) {
      throw new ReplfsError('refused', `${target.name} is not newer than ${base.name}, which the destination already has`);
    }
  }
  const changes = await changeSet(source, base?.name ?? null, target.name);
  summary.filesChanged = changes.length;
  await receiver.files(changes);

  const view = source.view(target.name);
  const step = CHUNK - (CHUNK % blockSize);
  for (const c of changes) {
    if (c.node?.type !== 'file' || c.extents.length === 0) continue;
    const h = await view.open((await view.pathsOf(c.fid))[0]!);
    try {
      for (const ext of c.extents) {
        const end = Math.min(c.attr!.size, ext.offset + ext.length);
        for (let pos = ext.offset; pos < end;) {
          const len = Math.min(step, end - pos);
          const buf = Buffer.allocUnsafeSlow(len);
          const got = await readFull((b, n, p) => view.read(h, b, n, p), buf, len, pos);
          if (got === 0) break;
          summary.bytesRead += got;
          const { hashes, data } = await opts.hashPool.hash(buf.subarray(0, got), blockSize);
          const needed = await receiver.compare(c.fid, pos, blockSize, got, hashes);
          summary.blocksSkipped += hashes.length - needed.length;
          for (const i of needed) {
            const block = data.subarray(i * blockSize, Math.min(got, (i + 1) * blockSize));
            await receiver.write(c.fid, pos + i * blockSize, block);
            summary.bytesSent += block.length;
            summary.blocksSent++;
          }
          pos += got;
        }
      }
    } finally {
      view.release(h);
    }
  }
  summary.replicaSnapshot = (await receiver.finish()).replicaSnapshot;
  summary.durationMs = Date.now() - began;
  return summary;
}
