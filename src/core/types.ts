// Types shared by every layer. No behaviour lives here.

/** A stable file identity assigned by the volume. Survives renames; never reused. */
export type FileId = number;

/** The root directory of every volume has this id. */
export const ROOT_FID: FileId = 1;

/** An epoch number. Changes are recorded against the epoch they happened in. */
export type Epoch = number;

/** A byte range of a file. */
export interface Extent {
  offset: number;
  length: number;
}

/** Kinds of change recorded in the journal, as bit flags. */
export const ChangeKind = {
  created: 1 << 0,
  data: 1 << 1,
  truncated: 1 << 2,
  attributes: 1 << 3,
  xattrs: 1 << 4,
  renamed: 1 << 5,
  linked: 1 << 6,
  unlinked: 1 << 7,
  deleted: 1 << 8,
  entries: 1 << 9,
  unknown: 1 << 10,
} as const;

export type ChangeKindName = keyof typeof ChangeKind;

export function changeKindNames(mask: number): ChangeKindName[] {
  const names: ChangeKindName[] = [];
  for (const [name, bit] of Object.entries(ChangeKind) as [ChangeKindName, number][]) {
    if (mask & bit) names.push(name);
  }
  return names;
}

/** What kind of object a file id names. */
export type FileType = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'chardev' | 'blockdev';

/** Why a file's content must be compared whole rather than trusted from extents. */
export type UnknownReason = 'offline-change' | 'created-offline' | 'overflow' | 'inconsistent';

/** One file in the journal, as reported to users and to the replicator. */
export interface JournalFile {
  id: FileId;
  type: FileType;
  /** Current path relative to the volume root, or the last known one if deleted. */
  path: string;
  /** Every current name when the file has hard links. */
  paths: string[];
  kinds: ChangeKindName[];
  /**
   * Coalesced dirty byte ranges, block aligned and clipped to the current size. The whole
   * file for a file created since the journal began.
   */
  extents: Extent[];
  /** Bytes a reader must look at: the extents, or the whole size when `unknown` is set. */
  dirtyBytes: number;
  size: number;
  /** Set when the whole file must be compared because the journal cannot vouch for it. */
  unknown: UnknownReason | null;
}

/** How a file differs between two points in time. */
export type DiffStatus = 'added' | 'removed' | 'modified' | 'renamed' | 'attributes';

export interface DiffEntry {
  id: FileId;
  type: FileType;
  status: DiffStatus;
  /** Paths at the older point (empty if added) and at the newer one (empty if removed). */
  before: string[];
  after: string[];
  /** Moved or linked under other names (also set alongside `modified`). */
  renamed: boolean;
  kinds: ChangeKindName[];
  /** Changed byte ranges, block aligned, clipped to the newer size (data changes only). */
  extents: Extent[];
  size: number;
  /** Set when the journal cannot vouch for the extents: compare the whole file. */
  unknown: UnknownReason | null;
}

export interface DiffReport {
  from: string;
  /** A snapshot name, or "live". */
  to: string;
  blockSize: number;
  files: DiffEntry[];
  totals: Record<DiffStatus, number> & { changedBytes: number };
}

export interface JournalReport {
  formatVersion: number;
  epoch: Epoch;
  blockSize: number;
  since: string;
  files: JournalFile[];
  totals: { files: number; dirtyBytes: number };
}

export interface VolumeStatus {
  root: string;
  volumeId: string;
  formatVersion: number;
  blockSize: number;
  epoch: Epoch;
  mounted: boolean;
  mountpoint: string | null;
  pid: number | null;
  journal: { entries: number; bytes: number; dirtyFiles: number; dirtyBytes: number };
  files: number;
  lastCleanShutdown: boolean;
  durability: Durability;
}

export type Durability = 'default' | 'strict';

/** A timestamp with nanosecond precision. `nsec` may also be UTIME_NOW or UTIME_OMIT. */
export interface TimeSpec {
  sec: number;
  nsec: number;
}

/** File attributes as the engine reports them (a subset of stat(2) with exact times). */
export interface Attr {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  ino: number;
  dev: number;
  rdev: number;
  blksize: number;
  blocks: number;
  atime: TimeSpec;
  mtime: TimeSpec;
  ctime: TimeSpec;
}

/** One directory entry: its name, inode number and file type bits (S_IFMT >> 12). */
export interface DirEntry {
  name: string;
  ino: number;
  type: number;
}

export interface StatFs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  namemax: number;
}

/** Which snapshots a retention keeps (restic's rules; src/policy/retention.ts decides). */
export interface KeepPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  /** Milliseconds before the newest snapshot's time. */
  withinMs?: number;
}

/** What pruning a replica's snapshots did (a sync with a destination retention). */
export interface PruneOutcome {
  removed: string[];
  kept: number;
  bytesFreed: number;
}
