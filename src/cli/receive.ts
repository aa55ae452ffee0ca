// The receiving end of a sync, whatever carries it (stdin/stdout of `serve --stdio`, a TCP
// connection of `serve --listen`): opens the replica at `root`, made on first use in a new
// or empty directory, and answers one sender on `stream`.
import fs from 'node:fs';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { ReplfsError } from '../errors/index.js';
import { Connection } from '../replicate/connection.js';
import { HashPool } from '../replicate/hasher.js';
import { Receiver } from '../replicate/receiver.js';
import { serveReceiver } from '../replicate/wire.js';
import { STATE_DIR, Volume, type OpenReport } from '../volume/index.js';
import { VERSION } from './version.js';

export interface ReceiveOptions {
  /** Required of the sender in its hello (TCP listeners). */
  token?: string;
}

/**
 * Answers one sync on `stream` into the replica at `rootFor(target)`, where `target` is what
 * the sender's hello named (null if nothing). Resolves once it is over.
 */
export async function receiveOn(rootFor: (target: string | null) => string, stream: Duplex, opts: ReceiveOptions = {}): Promise<{ replicaSnapshot: string | null }> {
  const conn = new Connection(stream);
  const pool = new HashPool();
  let replica: Volume | null = null;
  try {
    // The replica is opened once the sender has said hello, so that a refusal reaches it
    // as a protocol error (permanent) rather than as a broken connection.
    return await serveReceiver(conn, async (target, begin) => {
      const opened = await openReplica(rootFor(target), { create: begin?.mode === 'sync' });
      replica = opened.volume;
      return new Receiver(opened.volume, pool, { openReport: opened.report });
    }, { software: VERSION, token: opts.token });
  } finally {
    await conn.flushed();
    await pool.close();
    await (replica as Volume | null)?.close();
  }
}

/**
 * The replica volume at `root`. With `create` (a sync), a new or empty directory is made
 * one; a dry run or a verify changes no file, so there a missing replica is refused. All
 * open it for writing all the same: that runs the scan that finds changes made to the
 * replica behind replfs's back, which they report.
 */
export async function openReplica(root: string, opts: { create: boolean }): Promise<{ volume: Volume; report: OpenReport }> {
  const none = () => new ReplfsError('notFound', `there is no replica at ${root} yet`, 'a first sync copies everything; run it without --dry-run');
  let entries: string[];
  try {
    entries = fs.readdirSync(root);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    if (!fs.existsSync(path.dirname(root))) throw new ReplfsError('notFound', `${path.dirname(root)} does not exist`);
    if (!opts.create) throw none();
    fs.mkdirSync(root, { mode: 0o755 });
    entries = [];
  }
  if (!entries.includes(STATE_DIR)) {
    if (entries.length > 0) throw new ReplfsError('refused', `${root} is neither empty nor a replica`, 'sync into a new or empty directory');
    if (!opts.create) throw none();
    await Volume.init(root, {});
  }
  return Volume.open(root, { writable: true });
}
