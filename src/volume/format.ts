// The on-disk format of a volume's state directory, version 1. docs/format.md is the
// human description of everything here; change both together and bump FORMAT_VERSION
// for any change an older build could misread.
import type { FileId, Epoch, FileType, UnknownReason, Durability } from '../core/types.js';

export const FORMAT_VERSION = 1;
export const STATE_DIR = '.replfs';
export const CONFIG_FILE = 'config.json';
export const DB_DIR = 'db';
export const CONTROL_SOCKET = 'control.sock';
export const DAEMON_LOG = 'daemon.log';

export const MIN_BLOCK_SIZE = 4 * 1024;
export const MAX_BLOCK_SIZE = 1024 * 1024;
export const DEFAULT_BLOCK_SIZE = 64 * 1024;
/** Write intents are taken per region: at least 16 MiB and at least 256 blocks. */
export const MIN_REGION_BYTES = 16 * 1024 * 1024;
export const MIN_BLOCKS_PER_REGION = 256;

/** `.replfs/config.json`. */
export interface VolumeConfig {
  formatVersion: number;
  volumeId: string;
  blockSize: number;
  createdAt: string;
  journal: { durability: Durability; flushIntervalMs: number };
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
} as const;

export const MetaKey = {
  format: 'format',
  epoch: 'epoch',
  nextFid: 'nextFid',
  session: 'session',
  journalSince: 'journalSince',
} as const;

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
}

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

/** Range bounds covering every key of one epoch in the journal sublevels. */
export function epochRange(epoch: Epoch): { gte: string; lt: string } {
  return { gte: `${hex(epoch)}!`, lt: `${hex(epoch)}"` };
}
