// The on-disk format of a volume's state directory, version 2. docs/format.md is the
// human description of everything here; change both together and bump FORMAT_VERSION
// for any change an older build could misread.
import type { FileId, Epoch, FileType, UnknownReason, Durability } from '../core/types.js';

export const FORMAT_VERSION = 2;
/** Older formats this build opens, upgrading them when it opens the volume for writing. */
export const UPGRADABLE_FORMATS = [1];
export const STATE_DIR = '.replfs';
export const CONFIG_FILE = 'config.json';
export const DB_DIR = 'db';
export const CONTROL_SOCKET = 'control.sock';
export const DAEMON_LOG = 'daemon.log';
/** Pack files of the block store: preserved block contents, addressed through `k!`. */
export const BLOCKS_DIR = 'blocks';
/** Hard links keeping deleted files readable for the snapshots that still show them. */
export const FARM_DIR = 'farm';
/** The virtual directory of snapshot views at the root of a mount. */
export const SNAPSHOT_DIR = '.snapshots';

export const MIN_BLOCK_SIZE = 4 * 1024;
export const MAX_BLOCK_SIZE = 1024 * 1024;
export const DEFAULT_BLOCK_SIZE = 64 * 1024;
/** journal.maxBytes when the volume's config says nothing: the block detail one epoch keeps. */
export const DEFAULT_JOURNAL_MAX_BYTES = 256 * 1024 * 1024;
/** Write intents are taken per region: at least 16 MiB and at least 256 blocks. */
export const MIN_REGION_BYTES = 16 * 1024 * 1024;
export const MIN_BLOCKS_PER_REGION = 256;

/** `.replfs/config.json`. */
export interface VolumeConfig {
  formatVersion: number;
  volumeId: string;
  blockSize: number;
  createdAt: string;
  journal: { durability: Durability; flushIntervalMs: number; maxBytes?: unknown };
  /** Quiesce hooks; validated by the policy layer (src/policy/hooks.ts), opaque to the engine. */
  quiesce?: unknown;
}

export function blocksPerRegion(blockSize: number): number {
  return Math.max(MIN_BLOCKS_PER_REGION, MIN_REGION_BYTES / blockSize);
}

/** The sublevels of the volume's LevelDB and what each holds. */
export const Sublevel = {
  /** meta: format, epoch, nextFid, session, journalSince */
  meta: 'm',
  /** files: fid -> FileRecord */
  files: 'f',
  /** journal headers: epoch!fid -> HeaderValue */
  headers: 'j',
  /** journal regions: epoch!fid!region -> flags byte + dirty-block bitmap */
  regions: 'r',
  /** journal entries: epoch!dirFid!name -> EntryValue */
  entries: 'e',
  /** snapshots: epoch -> SnapshotRecord */
  snapshots: 's',
  /** preserved attributes: fid!version -> PreservedAttr */
  attrs: 'a',
  /** preserved directory entries: dirFid!name\0version -> PreservedEntry */
  dentries: 'd',
  /** preserved blocks: fid!version!block -> BLAKE3 hash (32 bytes; empty = all zero) */
  blocks: 'p',
  /** block store index: hash (hex) -> BlockLocation */
  hashes: 'k',
  /** replicas only: source fid -> OriginNode, the source's names as last applied */
  origin: 'o',
  /** replicas only, while a sync applies names: chunk index -> JSON array of its plan's steps, in order */
  planSteps: 'x',
  /** replicas only, while a sync applies names: chunk index -> JSON array of [source fid, OriginNode | null], as the sync leaves them */
  pendingOrigin: 'y',
} as const;

export const MetaKey = {
  format: 'format',
  epoch: 'epoch',
  nextFid: 'nextFid',
  session: 'session',
  journalSince: 'journalSince',
  /** replicas only: ReplicaMeta */
  replica: 'replica',
  /** JournalHealthRecord: epochs whose journal lost its block detail or was found damaged. */
  journalHealth: 'journalHealth',
  /** PromotedRecord: this volume was a replica, promoted (replfs promote). */
  promoted: 'promoted',
  /** The operations record of the policy layer (schedules, sync outcomes, alerts): opaque JSON to the engine. */
  operations: 'operations',
} as const;

/** meta `dest!<replica volumeId>` (sources): a destination and the base it confirmed. */
export interface DestinationRecord {
  /** The destination as given to `replfs sync`. */
  destination: string;
  /** The snapshot it last confirmed: kept on the source while this record exists. */
  base: string;
  sourceTime: string;
  /** When that sync ended. */
  at: string;
  /** A snapshot a sync began sending and has not confirmed: kept too, so an interrupted sync can resume from it. */
  pending?: string;
}

/** meta `journalHealth`: the epochs a change set cannot trust block by block. */
export interface JournalHealthRecord {
  /** The block detail of these epochs was dropped (journal.maxBytes): their changed files are compared whole. */
  overflowed: Array<{ epoch: number; at: string }>;
  /** Records of these epochs were found damaged or contradictory. */
  inconsistent: Array<{ epoch: number; at: string; detail: string }>;
}

/** meta `promoted`: a volume that was a replica, made writable by `replfs promote`. */
export interface PromotedRecord {
  /** The volume it was a replica of. */
  from: string;
  /** The snapshot its live files were at promotion (the source's name and time). */
  base: { name: string; sourceTime: string };
  at: string;
}

/** origin/<source fid> (replicas): the source file's type tag and names, in source ids. */
export interface OriginNode {
  t: string;
  n: NameRef[];
}

/** meta `replica`: which source a replica follows, and the last snapshot it confirmed. */
export interface ReplicaMeta {
  sourceVolumeId: string;
  /** The source's snapshot name and time of the newest confirmed sync, or null before the first. */
  base: { name: string; sourceTime: string } | null;
  /** A sync that began changing the live tree and has not been confirmed (it was interrupted, or is running). */
  pending: PendingSync | null;
  /** Changes made to the replica outside replfs, found when it was opened; a `--force` sync clears it. */
  divergent?: Divergence;
}

export interface PendingSync {
  /** The source snapshot being applied. */
  name: string;
  sourceTime: string;
  /** `planned`: its name changes are logged (planSteps, pendingOrigin) and may be half done; `applied`: they are done. */
  names: 'planned' | 'applied';
  /** The root's atime and mtime (ns) before the staging directory was made in it, to put back. */
  rootTimes?: [string, string];
}

export interface Divergence {
  /** When it was found. */
  at: string;
  created: number;
  changed: number;
  moved: number;
  deleted: number;
  /** A few of the paths involved. */
  examples: string[];
}

/** `session` meta value: `open` while a process has the volume open for writing. */
export interface SessionValue {
  state: 'open' | 'clean';
  pid: number;
  at: string;
}

/** Short type tags used in file records. */
export const TypeTag: Record<FileType, string> = {
  file: 'f', dir: 'd', symlink: 'l', fifo: 'p', socket: 's', chardev: 'c', blockdev: 'b',
};
const tagToType = new Map(Object.entries(TypeTag).map(([k, v]) => [v, k as FileType]));
export function typeOfTag(tag: string): FileType {
  const t = tagToType.get(tag);
  if (!t) throw new Error(`unknown type tag ${JSON.stringify(tag)}`);
  return t;
}

/** One name of a file: the parent directory's id and the entry name. */
export type NameRef = [parent: FileId, name: string];

/** files/<fid>: what the volume last recorded about a file. Times are nanoseconds as decimal strings. */
export interface FileRecord {
  t: string;
  ino: number;
  names: NameRef[];
  size: number;
  mtime: string;
  ctime: string;
  /** Birth time in nanoseconds, where the filesystem keeps one: tells a reused inode number apart. */
  btime?: string;
  /** Set once the last name is gone; `names` then keeps the last known name. */
  gone?: true;
  /** The epoch in which the last name went (format 2). */
  died?: Epoch;
}

/** snapshots/<epoch>: one snapshot. */
export interface SnapshotRecord {
  name: string;
  epoch: Epoch;
  /** The instant of the cut (ISO 8601, UTC, milliseconds). */
  sourceTime: string;
  label: string | null;
  /** `app` when quiesce hooks succeeded, `crash` otherwise. */
  consistency: 'app' | 'crash';
  /** Every file id below this existed when the snapshot was taken (ids are never reused). */
  nextFid: FileId;
}

/**
 * attrs/<fid>!<version>: a file's attributes as they were at the end of epoch `version`.
 * Times in nanoseconds as decimal strings; `x` the xattrs (name, base64 value); `l` a
 * symlink's target; `n` its names.
 */
export interface PreservedAttr {
  t: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  blocks: number;
  nlink: number;
  rdev: number;
  atime: string;
  mtime: string;
  ctime: string;
  x?: Array<[string, string]>;
  l?: string;
  /** The file's names then ([parent id, name] pairs), so paths as of a snapshot need no tree walk. */
  n?: NameRef[];
}

/** dentries/<dir>!<name>\0<version>: what the entry held at the end of epoch `version`; f 0 = no entry. */
export interface PreservedEntry {
  f: FileId;
  t?: string;
}

/** hashes/<hash>: where a stored block lives: [pack number, offset, length]. */
export type BlockLocation = [pack: number, offset: number, length: number];

/** headers/<epoch>!<fid>. */
export interface HeaderValue {
  /** ChangeKind bit mask. */
  k: number;
  /** Whole-file compare needed, and why. */
  u?: UnknownReason;
  /** Smallest size the file had in this epoch, when it shrank. */
  min?: number;
}

/** entries/<epoch>!<dirFid>!<name>: the entry changed in this epoch (ChangeKind mask). */
export interface EntryValue {
  k: number;
}

/** First byte of a region value. */
export const RegionFlag = {
  /** Writes may have landed anywhere in this region: the bitmap is not yet exact. */
  pending: 1,
} as const;

const HEX = 16;
export function hex(n: number): string {
  return n.toString(16).padStart(HEX, '0');
}
export function unhex(s: string): number {
  return parseInt(s, 16);
}

export const headerKey = (epoch: Epoch, fid: FileId): string => `${hex(epoch)}!${hex(fid)}`;
export const regionKey = (epoch: Epoch, fid: FileId, region: number): string =>
  `${hex(epoch)}!${hex(fid)}!${hex(region)}`;
export const entryKey = (epoch: Epoch, dir: FileId, name: string): string =>
  `${hex(epoch)}!${hex(dir)}!${name}`;
export const fileKey = (fid: FileId): string => hex(fid);
export const snapshotKey = (epoch: Epoch): string => hex(epoch);
export const attrKey = (fid: FileId, version: Epoch): string => `${hex(fid)}!${hex(version)}`;
/** NUL cannot occur in a file name, so it separates the name from the version unambiguously. */
export const dentryKey = (dir: FileId, name: string, version: Epoch): string => `${hex(dir)}!${name}\0${hex(version)}`;
export const blockKey = (fid: FileId, version: Epoch, block: number): string => `${hex(fid)}!${hex(version)}!${hex(block)}`;

/** Range bounds covering every key of one epoch in the journal sublevels. */
export function epochRange(epoch: Epoch): { gte: string; lt: string } {
  return { gte: `${hex(epoch)}!`, lt: `${hex(epoch)}"` };
}
