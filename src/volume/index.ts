// The engine's public surface, for the layers above it.
export { Volume, toAttr, type Caller, type InitResult, type OpenReport } from './volume.js';
export type { Attr, DirEntry, StatFs, TimeSpec, JournalReport, JournalFile, VolumeStatus, FileId } from '../core/types.js';
export { FORMAT_VERSION, STATE_DIR, CONTROL_SOCKET, DAEMON_LOG, DEFAULT_BLOCK_SIZE, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE } from './format.js';
export { readMounts, isUnder, REPLFS_FSTYPE, type MountEntry } from './mounts.js';
export { UTIME_NOW, UTIME_OMIT, replyShimStats, configureReplyShim } from './sys.js';
