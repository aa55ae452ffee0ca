// The FUSE side of a replica mount (`replfs mount --read-only`): the same adapter as an
// ordinary mount, with the root of the mount moved from the live tree into the newest
// snapshot. The live tree of a replica is where syncs are applied, half-finished while one
// runs, so it is never shown; every path is in some snapshot, and so every change is EROFS
// (VolumeFuse.mutate refuses anything that is not live). `.snapshots` works as on any mount.
//
// When a sync ends, the receiver takes a snapshot and the root moves to it at once
// (Volume.onSnapshotsChanged). The kernel must not keep showing the old root's names,
// attributes or data for its cache time: see "Replica mounts" in docs/architecture.md for
// how the daemon mounts it (no name or attribute caching, no kernel_cache, `ro`).
import type { Volume } from '../volume/index.js';
import { VolumeFuse, NOWHERE, placeOf, viewPlace, type MountOptions, type Place } from './adapter.js';

export class ReplicaFuse extends VolumeFuse {
  /** The snapshot the root shows: the newest, or null while the replica has none. */
  private root: string | null;
  private readonly unsubscribe: () => void;

  constructor(mountpoint: string, volume: Volume, options: MountOptions) {
    super(mountpoint, volume, options);
    this.root = newestOf(volume);
    // Kept here rather than looked up per request: the catalog sorts on every listing.
    this.unsubscribe = volume.onSnapshotsChanged(async () => { this.root = newestOf(volume); });
  }

  /** The snapshot the root of the mount shows now. */
  get rootSnapshot(): string | null {
    return this.root;
  }

  override dispose(): void {
    this.unsubscribe();
    super.dispose();
  }

  protected override place(path: string): Place {
    const place = placeOf(path);
    if (place.kind !== 'live') return place;
    if (this.root === null) return path === '/' ? { kind: 'empty' } : NOWHERE;
    return viewPlace(this.root, path.slice(1));
  }

  override _fuseOptions(): string {
    // The kernel refuses writes itself too (EROFS before they reach us).
    return `${super._fuseOptions()},ro`;
  }
}

function newestOf(volume: Volume): string | null {
  return volume.snapshots().at(-1)?.name ?? null;
}
