// Snapshot names and the catalog of a volume's snapshots. Naming is pure.
import type { Epoch } from '../core/types.js';
import type { SnapshotRecord } from './format.js';

/** `2026-11-25T11-05-18Z`, optionally followed by `-1`, `-2`, ... */
export const SNAPSHOT_NAME = /^(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z)(?:-([1-9]\d{0,5}))?$/;
export const LATEST = 'latest';

/** The UTC time of `at` to the second, without colons. */
export function baseName(at: Date): string {
  return at.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/:/g, '-');
}

/** A name for a snapshot taken at `at` that none of `taken` has. */
export function snapshotName(at: Date, taken: (name: string) => boolean): string {
  const base = baseName(at);
  if (!taken(base)) return base;
  for (let i = 1; ; i++) if (!taken(`${base}-${i}`)) return `${base}-${i}`;
}

export function isSnapshotName(name: string): boolean {
  return SNAPSHOT_NAME.test(name);
}

/** The snapshots of a volume in memory, by epoch and by name. */
export class Catalog {
  private readonly byEpoch = new Map<Epoch, SnapshotRecord>();
  private readonly byName = new Map<string, SnapshotRecord>();
  /** Names handed out for snapshots still being taken (quiesce hooks run first). */
  private readonly reserved = new Set<string>();

  constructor(records: Iterable<SnapshotRecord> = []) {
    for (const r of records) this.add(r);
  }

  add(rec: SnapshotRecord): void {
    this.byEpoch.set(rec.epoch, rec);
    this.byName.set(rec.name, rec);
    this.reserved.delete(rec.name);
  }

  remove(rec: SnapshotRecord): void {
    this.byEpoch.delete(rec.epoch);
    this.byName.delete(rec.name);
  }

  get(name: string): SnapshotRecord | undefined {
    return this.byName.get(name);
  }

  /** Oldest first. */
  list(): SnapshotRecord[] {
    return [...this.byEpoch.values()].sort((a, b) => a.epoch - b.epoch);
  }

  get size(): number {
    return this.byEpoch.size;
  }

  newest(): SnapshotRecord | undefined {
    let best: SnapshotRecord | undefined;
    for (const r of this.byEpoch.values()) if (!best || r.epoch > best.epoch) best = r;
    return best;
  }

  /**
   * Reserves a fresh name for a snapshot of time `at`: `preferred` if it is a snapshot name
   * of that second or an earlier one, and free (a replica takes its source snapshot's name:
   * a quiesced snapshot is named when it is asked for and cut after its pre-hook, maybe
   * seconds later), else the first free one of `at`'s second.
   */
  reserve(at: Date, preferred?: string): string {
    const taken = (n: string) => this.byName.has(n) || this.reserved.has(n) || n === LATEST;
    const m = preferred === undefined ? null : SNAPSHOT_NAME.exec(preferred);
    // Names compare as the times they spell: YYYY-MM-DDTHH-MM-SSZ, fixed width.
    const name = m && m[1]! <= baseName(at) && !taken(preferred!) ? preferred! : snapshotName(at, taken);
    this.reserved.add(name);
    return name;
  }

  release(name: string): void {
    this.reserved.delete(name);
  }

  /**
   * Whether some snapshot has an epoch in (after, upTo]: the test for whether a value
   * preserved as version `upTo`, whose next older version is `after`, is still needed.
   */
  anyIn(after: Epoch, upTo: Epoch): boolean {
    for (const e of this.byEpoch.keys()) if (e > after && e <= upTo) return true;
    return false;
  }
}
