// The operations record of a source volume (meta `operations`, opaque to the engine): the
// scheduler's jobs, the outcome of every sync to each destination (by URL), and the alerts
// raised. Written by the mount daemon, and by `replfs sync` run on an unmounted volume;
// read by `replfs status`.
import { ReplfsError, messageOf } from '../errors/index.js';
import type { ActiveAlert } from '../policy/alerts.js';
import type { JobRecord } from '../policy/scheduler.js';
import type { SyncSummary } from '../replicate/sender.js';
import type { Volume } from '../volume/index.js';

export interface SyncOutcome {
  at: number;
  durationMs: number;
  snapshot: string;
  sourceTime: string;
  replicaSnapshot: string | null;
  kind: SyncSummary['kind'];
  filesChanged: number;
  bytesSent: number;
  bytesOnWire: number;
}

export interface DestinationOps {
  /** When this destination was first named (by the policy, or by a sync): a destination never synced is late from then. */
  firstSeen: number;
  lastSync: SyncOutcome | null;
  lastAttempt: number | null;
  lastError: { at: number; message: string; exit: string; transient: boolean } | null;
  /** The start of the current run of failures, or null after a success. */
  failingSince: number | null;
  space: { free: number; total: number; at: number } | null;
}

export interface OperationsRecord {
  version: 1;
  jobs: Record<string, JobRecord>;
  destinations: Record<string, DestinationOps>;
  alerts: Record<string, ActiveAlert>;
}

const EMPTY: OperationsRecord = { version: 1, jobs: {}, destinations: {}, alerts: {} };

export function emptyDestination(now: number): DestinationOps {
  return { firstSeen: now, lastSync: null, lastAttempt: null, lastError: null, failingSince: null, space: null };
}

/** Errors worth retrying soon: the destination was unreachable, busy, or too slow. */
export function isTransient(err: unknown): boolean {
  return err instanceof ReplfsError && (err.exit === 'unavailable' || err.exit === 'timeout' || err.exit === 'busy');
}

/**
 * The record of one volume, cached, with writes applied one at a time: the daemon's
 * scheduler, alerts and manual syncs all update it.
 */
export class OpsBook {
  private static readonly books = new WeakMap<Volume, Promise<OpsBook>>();
  private writing: Promise<void> = Promise.resolve();

  private constructor(private readonly volume: Volume, private record: OperationsRecord) {}

  static for(volume: Volume): Promise<OpsBook> {
    let book = OpsBook.books.get(volume);
    if (!book) {
      book = volume.operations<OperationsRecord>().then((r) => new OpsBook(volume, r?.version === 1 ? { ...EMPTY, ...r } : structuredClone(EMPTY)));
      OpsBook.books.set(volume, book);
    }
    return book;
  }

  get current(): OperationsRecord {
    return this.record;
  }

  /** Changes the record and writes it (a read-only volume keeps the change in memory only). */
  update(change: (r: OperationsRecord) => void): Promise<void> {
    change(this.record);
    const snapshot = structuredClone(this.record);
    const write = this.writing.then(() => (this.volume.writable ? this.volume.setOperations(snapshot) : undefined));
    this.writing = write.catch(() => undefined);
    return write;
  }

  destination(url: string, now: number): DestinationOps {
    this.record.destinations[url] ??= emptyDestination(now);
    return this.record.destinations[url]!;
  }

  recordSync(url: string, s: SyncSummary, at: number): Promise<void> {
    return this.update(() => {
      const d = this.destination(url, at);
      d.lastAttempt = at;
      d.lastError = null;
      d.failingSince = null;
      d.lastSync = {
        at, durationMs: s.durationMs, snapshot: s.snapshot, sourceTime: s.sourceTime, replicaSnapshot: s.replicaSnapshot, kind: s.kind,
        filesChanged: s.filesChanged, bytesSent: s.bytesSent, bytesOnWire: s.bytesOnWire,
      };
      if (s.space) d.space = { ...s.space, at };
    });
  }

  recordFailure(url: string, err: unknown, at: number): Promise<void> {
    return this.update(() => {
      const d = this.destination(url, at);
      d.lastAttempt = at;
      d.lastError = { at, message: messageOf(err), exit: err instanceof ReplfsError ? err.exit : 'internal', transient: isTransient(err) };
      d.failingSince ??= at;
    });
  }
}
