// Failover: a replica becomes the live, writable volume (`replfs promote`), at its newest
// complete snapshot. A sync that was being applied is undone, and so is anything changed
// behind replfs's back; the replica's snapshots all stay. The volume remembers which
// volume it replicated and where it stood, so that a later sync back to that volume (the
// failback) starts from the snapshot both hold instead of copying everything.
import { ReplfsError } from '../errors/index.js';
import type { Volume } from '../volume/index.js';
import { revertTo, type RevertReport } from './revert.js';

export interface PromoteReport {
  /** The snapshot the live files now equal (the replica's newest), and its source time. */
  snapshot: string;
  sourceTime: string;
  /** The volume it was a replica of. */
  formerSource: string;
  /** What had to be undone: a half-applied sync, changes made outside replfs. */
  reverted: RevertReport;
}

export async function promote(volume: Volume): Promise<PromoteReport> {
  const meta = await volume.replicaMeta();
  if (!meta) {
    const promoted = await volume.promoted();
    throw new ReplfsError('refused', `${volume.root} is not a replica${promoted ? ' (it was promoted already)' : ''}: there is nothing to promote`,
      promoted ? 'it is a writable volume: mount it with replfs mount' : undefined);
  }
  const newest = volume.snapshots().at(-1);
  if (!meta.base || !newest) {
    throw new ReplfsError('refused', `${volume.root} holds no complete snapshot yet: no sync into it has finished`, 'finish a sync into it first');
  }
  const reverted = await revertTo(volume, newest.name);
  await volume.syncData();
  await volume.becomeVolume({ from: meta.sourceVolumeId, base: { name: meta.base.name, sourceTime: meta.base.sourceTime }, at: new Date().toISOString() });
  return { snapshot: newest.name, sourceTime: newest.sourceTime, formerSource: meta.sourceVolumeId, reverted };
}
