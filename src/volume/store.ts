// The volume's LevelDB: one database, keys prefixed by sublevel (see format.ts), values
// as raw bytes. All writes go through one group-commit queue so that their order on disk
// is the order they were issued in, and concurrent writers share one batch.
import { Level } from 'level';
import { access, realpath } from 'node:fs/promises';
import { ReplfsError } from '../errors/index.js';

export type Sub = string;

export type Op =
  | { type: 'put'; sub: Sub; key: string; value: Uint8Array }
  | { type: 'del'; sub: Sub; key: string };

interface Waiter { resolve: () => void; reject: (err: unknown) => void }

const openInThisProcess = new Set<string>();

export const putJson = (sub: Sub, key: string, value: unknown): Op =>
  ({ type: 'put', sub, key, value: Buffer.from(JSON.stringify(value)) });

export class Store {
  private pending: Op[] = [];
  private waiters: Waiter[] = [];
  private syncRequested = false;
  private inFlight: Promise<void> | null = null;
  private closed = false;
  /** Bytes and batches written, for status and benchmarks. */
  readonly stats = { batches: 0, ops: 0, syncs: 0 };

  private constructor(private readonly db: Level<string, Buffer>, private readonly guardKey: string,
    readonly strict: boolean) {}

  /**
   * Opens the database at `location`. A second open of the same database in one process
   * would release LevelDB's lock, so it is refused here before LevelDB sees it.
   */
  static async open(location: string, opts: { create: boolean; strict?: boolean; displayPath?: string }): Promise<Store> {
    const shown = opts.displayPath ?? location;
    // LevelDB makes the directory (LOCK, LOG) even when it will not create a database:
    // look first, so that opening a damaged volume changes nothing.
    if (!opts.create && !(await exists(`${location}/CURRENT`))) {
      throw new ReplfsError('damaged', `the volume database is missing (${shown})`,
        'the state directory .replfs is incomplete; see docs/operations.md, "Repairing a damaged journal"');
    }
    let guardKey = location;
    try { guardKey = await realpath(location); } catch { /* created below when allowed */ }
    if (openInThisProcess.has(guardKey)) {
      throw new ReplfsError('busy', 'the volume database is already open in this process');
    }
    const db = new Level<string, Buffer>(location, {
      createIfMissing: opts.create, errorIfExists: opts.create, valueEncoding: 'buffer',
    });
    try {
      await db.open();
    } catch (err) {
      throw translateOpenError(err, shown);
    }
    openInThisProcess.add(guardKey);
    return new Store(db, guardKey, opts.strict ?? false);
  }

  async get(sub: Sub, key: string): Promise<Buffer | undefined> {
    return this.db.get(`${sub}!${key}`);
  }

  async getMany(sub: Sub, keys: string[]): Promise<Array<Buffer | undefined>> {
    if (keys.length === 0) return [];
    return this.db.getMany(keys.map((k) => `${sub}!${k}`));
  }

  async getJson<T>(sub: Sub, key: string): Promise<T | undefined> {
    const v = await this.get(sub, key);
    return v === undefined ? undefined : (JSON.parse(v.toString('utf8')) as T);
  }

  /** Iterates one sublevel (optionally a key range inside it), yielding unprefixed keys. */
  async *entries(sub: Sub, range: { gte?: string; lt?: string } = {}): AsyncGenerator<[string, Buffer]> {
    const prefix = `${sub}!`;
    const it = this.db.iterator({
      gte: prefix + (range.gte ?? ''),
      lt: range.lt !== undefined ? prefix + range.lt : `${sub}"`,
    });
    try {
      for await (const [k, v] of it) yield [k.slice(prefix.length), v];
    } finally {
      await it.close();
    }
  }

  /**
   * Iterates one sublevel in batches of up to `size` entries, keys unprefixed and values
   * decoded as UTF-8 text. For reading many small JSON values (every file record at a
   * mount): a fraction of the cost of `entries`, which makes a Buffer and two promises
   * per entry. The next batch is read while the caller works on one.
   */
  async *textBatches(sub: Sub, size = 1000): AsyncGenerator<Array<[string, string]>> {
    const prefix = `${sub}!`;
    const it = this.db.iterator<string, string>({ gte: prefix, lt: `${sub}"`, valueEncoding: 'utf8' });
    let next = it.nextv(size);
    try {
      for (;;) {
        const batch = await next;
        if (batch.length === 0) return;
        next = it.nextv(size);
        for (const entry of batch) entry[0] = entry[0].slice(prefix.length);
        yield batch;
      }
    } finally {
      // A caller that stops early leaves a read in flight: let it end before closing.
      await next.catch(() => undefined);
      await it.close();
    }
  }

  async approximateSize(sub: Sub): Promise<number> {
    // classic-level has approximateSize; level's typings do not list it.
    const db = this.db as unknown as { approximateSize(start: string, end: string): Promise<number> };
    return db.approximateSize(`${sub}!`, `${sub}"`);
  }

  /**
   * Queues operations; resolves once they are in LevelDB (in the OS, or on disk when
   * `sync` or strict durability). Operations issued later are never written earlier.
   */
  write(ops: Op[], sync = false): Promise<void> {
    if (this.closed) return Promise.reject(new Error('store is closed'));
    if (ops.length === 0 && !sync) return Promise.resolve();
    for (const op of ops) this.pending.push(op);
    if (sync || this.strict) this.syncRequested = true;
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (!this.inFlight) this.inFlight = this.drain();
    return done;
  }

  private async drain(): Promise<void> {
    // Yield first: more writers may join this batch, and inFlight is set before we end.
    await null;
    while (this.waiters.length > 0) {
      const ops = this.pending;
      const waiters = this.waiters;
      const sync = this.syncRequested;
      this.pending = [];
      this.waiters = [];
      this.syncRequested = false;
      try {
        // A sync with nothing to write still has to reach the disk: write a marker.
        if (ops.length === 0) ops.push({ type: 'put', sub: 'm', key: 'lastSync', value: Buffer.from(String(Date.now())) });
        await this.db.batch(ops.map((op) => op.type === 'put'
          ? { type: 'put' as const, key: `${op.sub}!${op.key}`, value: Buffer.from(op.value.buffer, op.value.byteOffset, op.value.byteLength) }
          : { type: 'del' as const, key: `${op.sub}!${op.key}` }), { sync });
        this.stats.batches++;
        this.stats.ops += ops.length;
        if (sync) this.stats.syncs++;
        for (const w of waiters) w.resolve();
      } catch (err) {
        for (const w of waiters) w.reject(err);
      }
    }
    this.inFlight = null;
  }

  /** Waits for every queued write. */
  async settle(): Promise<void> {
    while (this.inFlight) await this.inFlight;
  }

  async close(): Promise<void> {
    await this.settle();
    this.closed = true;
    openInThisProcess.delete(this.guardKey);
    await this.db.close();
  }
}

async function exists(p: string): Promise<boolean> {
  try { await access(p); return true; } catch { return false; }
}

function translateOpenError(err: unknown, location: string): ReplfsError {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const message = cause?.message ?? (err as Error).message;
  if (cause?.code === 'LEVEL_LOCKED') {
    return new ReplfsError('busy', 'the volume is in use by another replfs process (its database is locked)',
      'if a replfs daemon is mounted on it, use `replfs status` or `replfs unmount`');
  }
  if (cause?.code === 'LEVEL_CORRUPTION') {
    return new ReplfsError('damaged', `the volume database is damaged: ${message}`,
      'see docs/operations.md, "Repairing a damaged journal"');
  }
  if (/does not exist/.test(message)) {
    return new ReplfsError('damaged', `the volume database is missing (${location})`,
      'the state directory .replfs is incomplete; see docs/operations.md');
  }
  if (/exists \(error_if_exists/.test(message)) {
    return new ReplfsError('refused', `a volume database already exists at ${location}`);
  }
  return new ReplfsError('damaged', `cannot open the volume database: ${message}`);
}
