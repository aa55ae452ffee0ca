// The engine's public surface, for the layers above it.
export { Volume, toAttr, type Caller, type InitResult, type OpenReport, type GcReport, type SnapshotOptions, type WantedAttributes } from './volume.js';
export type { Attr, DirEntry, StatFs, TimeSpec, JournalReport, JournalFile, VolumeStatus, FileId } from '../core/types.js';
export {
  FORMAT_VERSION, STATE_DIR, CONFIG_FILE, CONTROL_SOCKET, DAEMON_LOG, DEFAULT_BLOCK_SIZE, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE, SNAPSHOT_DIR,
  type SnapshotRecord,
} from './format.js';
export { LATEST, isSnapshotName } from './snapshots.js';
export { viewIno } from './view.js';
export { inlineSyscalls } from './io.js';
export { readMounts, isUnder, REPLFS_FSTYPE, type MountEntry } from './mounts.js';
export { UTIME_NOW, UTIME_OMIT, replyShimStats, configureReplyShim, cloexecAll, watchDirectory, invalidateEntry } from './sys.js';
// The errno-carrying error, for the adapter's read-only answers.
export { FsError } from '../errors/index.js';
