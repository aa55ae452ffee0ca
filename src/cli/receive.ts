// The receiving end of a sync, whatever carries it (stdin/stdout of `serve --stdio`, a TCP
// connection of `serve --listen`): answers one sender on `stream`, into the replica its
// hello names. If a daemon has that replica mounted (mount --read-only), the daemon holds
// the replica's database, and LevelDB admits one process: the bytes are then passed to the
// daemon over its control socket, untouched, and the daemon answers the sender (handshake
// and token included, so the token is checked exactly once, there). Otherwise the replica
// is opened here, made on first use in a new or empty directory.
import fs from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { ReplfsError, messageOf } from '../errors/index.js';
import { Connection, ConnectionError, HANDSHAKE_TIMEOUT_MS } from '../replicate/connection.js';
import { FrameDecoder, decodeJson, type Frame } from '../replicate/frames.js';
import { HashPool } from '../replicate/hasher.js';
import { Receiver } from '../replicate/receiver.js';
import { serveReceiver } from '../replicate/wire.js';
import { STATE_DIR, Volume, type OpenReport } from '../volume/index.js';
import { openStream } from '../control/client.js';
import { findRecord, type DaemonRecord } from '../control/registry.js';
import { VERSION } from './version.js';
import { decide } from '../policy/retention.js';
import type { KeepPolicy, PruneOutcome } from '../core/types.js';

export interface ReceiveOptions {
  /** Required of the sender in its hello (TCP listeners). */
  token?: string;
  /**
   * Called once the sender is authenticated and begins, with the replica it named, before
   * the replica is opened here; throws to refuse (a `busy` ReplfsError: try again later).
   * Returns what to call when the sync is over.
   */
  claim?: (target: string | null) => () => void;
}

export interface Received {
  /** The replica snapshot the sync made, or null when the replica already had it. */
  replicaSnapshot: string | null;
  /** The replica the sender named in its hello (null if none). */
  target: string | null;
}

/**
 * Answers one sync on `stream` into the replica at `rootFor(target)`, where `target` is what
 * the sender's hello named (null if nothing). Resolves once it is over.
 */
export async function receiveOn(rootFor: (target: string | null) => string, stream: Duplex, opts: ReceiveOptions = {}): Promise<Received> {
  rootFor = once(rootFor);
  const first = await peekFirstFrame(stream, HANDSHAKE_TIMEOUT_MS);
  switch (first.kind) {
    case 'ended': throw new ConnectionError('closed', 'the peer closed the connection before its hello', true);
    case 'failed': throw new ConnectionError('io', `connection failed: ${first.message}`, true);
    case 'timeout': {
      // As accept() does: hang up without explaining more than that.
      const conn = listen(stream);
      conn.sendError({ code: 'timeout', message: 'no hello in time', transient: true });
      await conn.flushed();
      throw new ConnectionError('timeout', `no hello in ${HANDSHAKE_TIMEOUT_MS / 1000} s`, true);
    }
    case 'hello': {
      // Only a lookup before the handshake: a name that maps nowhere is refused after it.
      const root = rootOf(rootFor, first.target);
      const daemon = root === null ? undefined : await daemonServing(root);
      if (daemon) return { ...(await forward(daemon, stream, opts)), target: first.target };
      break;
    }
    case 'other': break;
  }
  return receiveHere(rootFor, stream, opts);
}

/** `rootFor` asked at most once per target (it may reserve the replica), its answer or refusal kept. */
function once(rootFor: (target: string | null) => string): (target: string | null) => string {
  const answers = new Map<string | null, { root: string } | { err: unknown }>();
  return (target) => {
    let a = answers.get(target);
    if (!a) {
      try { a = { root: rootFor(target) }; } catch (err) { a = { err }; }
      answers.set(target, a);
    }
    if ('err' in a) throw a.err;
    return a.root;
  };
}

/** Serves the sync with the replica opened in this process. */
async function receiveHere(rootFor: (target: string | null) => string, stream: Duplex, opts: ReceiveOptions): Promise<Received> {
  const conn = listen(stream);
  const pool = new HashPool();
  let replica: Volume | null = null;
  let release: (() => void) | null = null;
  let named: string | null = null;
  try {
    // The replica is opened once the sender has said hello, so that a refusal reaches it
    // as a protocol error (permanent) rather than as a broken connection.
    const done = await serveReceiver(conn, async (target, begin) => {
      named = target;
      release = opts.claim?.(target) ?? null;
      const root = rootFor(target);
      const opened = await openReplica(root, { create: begin?.mode === 'sync', failback: begin?.lineage !== undefined });
      replica = opened.volume;
      return new Receiver(opened.volume, pool, { prune: pruneReplica });
    }, { software: VERSION, token: opts.token });
    return { ...done, target: named };
  } finally {
    await conn.flushed();
    await pool.close();
    await (replica as Volume | null)?.close();
    (release as (() => void) | null)?.();
  }
}

/**
 * The daemon side of a forwarded sync: serves it on `stream` into the daemon's open
 * replica. `admit` is asked once the sender begins; it throws to refuse (a ReplfsError
 * `busy` tells the sender to try again later).
 */
export async function receiveInto(stream: Duplex, volume: Volume, opts: { token?: string; admit: () => void }): Promise<Received> {
  const conn = listen(stream);
  let pool: HashPool | null = null;
  let named: string | null = null;
  try {
    const done = await serveReceiver(conn, async (target) => {
      named = target;
      opts.admit();
      pool = new HashPool();
      return new Receiver(volume, pool, { prune: pruneReplica });
    }, { software: VERSION, token: opts.token });
    return { ...done, target: named };
  } finally {
    await conn.flushed();
    await (pool as HashPool | null)?.close();
  }
}

/** A connection on `stream`, which the hello peek left paused. */
function listen(stream: Duplex): Connection {
  const conn = new Connection(stream);
  stream.resume();
  return conn;
}

type FirstFrame =
  | { kind: 'hello'; target: string | null }
  | { kind: 'other' }
  | { kind: 'timeout' }
  | { kind: 'ended' }
  | { kind: 'failed'; message: string };

/**
 * Reads the sender's first frame to learn which replica it wants, then puts every byte
 * read back, so that whoever answers the sender sees the stream from its first byte.
 * Leaves the stream paused. Anything but a well-formed hello is `other`: the answering
 * side refuses it in the protocol.
 */
function peekFirstFrame(stream: Duplex, timeoutMs: number): Promise<FirstFrame> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const decoder = new FrameDecoder();
    const done = (result: FirstFrame) => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.pause();
      if ((result.kind === 'hello' || result.kind === 'other' || result.kind === 'timeout') && chunks.length) stream.unshift(Buffer.concat(chunks));
      resolve(result);
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      let frames: Frame[];
      try {
        frames = decoder.push(chunk);
      } catch {
        done({ kind: 'other' });
        return;
      }
      if (frames.length > 0) done(helloTarget(frames[0]!));
    };
    const onEnd = () => done({ kind: 'ended' });
    const onError = (err: Error) => done({ kind: 'failed', message: err.message });
    const timer = setTimeout(() => done({ kind: 'timeout' }), timeoutMs);
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', onError);
  });
}

function helloTarget(frame: Frame): FirstFrame {
  if (frame.type !== 'hello') return { kind: 'other' };
  let body: unknown;
  try {
    body = decodeJson(frame);
  } catch {
    return { kind: 'other' };
  }
  if (typeof body !== 'object' || body === null) return { kind: 'other' };
  const target = (body as { target?: unknown }).target;
  if (target === undefined) return { kind: 'hello', target: null };
  return typeof target === 'string' ? { kind: 'hello', target } : { kind: 'other' };
}

function rootOf(rootFor: (target: string | null) => string, target: string | null): string | null {
  try {
    return realpathOrSelf(rootFor(target));
  } catch {
    return null;
  }
}

function realpathOrSelf(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/** The live daemon that has the replica at `root` mounted, if one has. */
async function daemonServing(root: string): Promise<DaemonRecord | undefined> {
  const rec = await findRecord(root);
  if (!rec?.alive) return undefined;
  return rec.root === root || realpathOrSelf(rec.root) === root ? rec : undefined;
}

/** Passes the sync to the daemon that holds the replica, and the daemon's answers back. */
async function forward(daemon: DaemonRecord, stream: Duplex, opts: ReceiveOptions): Promise<Omit<Received, 'target'>> {
  let sock: net.Socket;
  try {
    sock = await openStream(daemon.socket, 'receive', opts.token === undefined ? {} : { token: opts.token });
  } catch (err) {
    // Tell the sender, in its protocol, why nobody will answer it.
    const conn = listen(stream);
    const transient = !(err instanceof ReplfsError) || ['busy', 'timeout', 'unavailable'].includes(err.exit);
    conn.sendError({ code: 'refused', message: `the daemon that has ${daemon.root} mounted cannot take the sync: ${messageOf(err)}`, transient });
    await conn.flushed();
    throw err;
  }
  return new Promise<Omit<Received, 'target'>>((resolve, reject) => {
    // The daemon's frames pass through untouched; watching them tells how the sync ended.
    const decoder = new FrameDecoder();
    let outcome: { ok: true; snapshot: string | null } | { ok: false; message: string; transient: boolean } | null = null;
    let senderDone = false;
    sock.on('data', (chunk: Buffer) => {
      if (outcome) return;
      try {
        for (const f of decoder.push(chunk)) {
          if (f.type === 'confirmed') {
            const body = decodeJson(f) as { replicaSnapshot?: unknown };
            outcome = { ok: true, snapshot: typeof body.replicaSnapshot === 'string' ? body.replicaSnapshot : null };
          } else if (f.type === 'error') {
            const body = decodeJson(f) as { message?: unknown; transient?: unknown };
            outcome = { ok: false, message: String(body.message ?? 'no reason given'), transient: body.transient === true };
          }
        }
      } catch {
        // Not ours to judge: the sender reads the same bytes and refuses them itself.
        outcome = { ok: false, message: 'the daemon sent bytes that are not the replication protocol', transient: false };
      }
    });
    stream.on('end', () => { senderDone = true; });
    // A sender that dies makes its stream fail (EPIPE) rather than end: the daemon must
    // still hear that nobody is left, or it would wait for the rest of the sync forever.
    stream.on('error', () => sock.end());
    stream.on('close', () => sock.end());
    sock.on('error', () => undefined);
    sock.on('close', () => {
      stream.unpipe(sock);
      void writableDone(stream).then(() => {
        const o = outcome as typeof outcome;
        if (o?.ok) resolve({ replicaSnapshot: o.snapshot });
        else if (o) reject(new ReplfsError(o.transient ? 'unavailable' : 'refused', `the sync into ${daemon.root} failed in its daemon (pid ${daemon.pid}): ${o.message}`));
        // The sender hung up after `begin` with nothing to send: the replica was current.
        else if (senderDone) resolve({ replicaSnapshot: null });
        else reject(new ReplfsError('unavailable', `the daemon that has ${daemon.root} mounted (pid ${daemon.pid}) closed the connection during the sync`));
      });
    });
    stream.pipe(sock);
    sock.pipe(stream);
  });
}

/** Resolves once what was written to `s` has been handed on (or it failed, or 5 s passed). */
function writableDone(s: Duplex, timeoutMs = 5000): Promise<void> {
  if (s.writableFinished || s.destroyed) return Promise.resolve();
  if (!s.writableEnded) s.end();
  return new Promise((resolve) => {
    const timer = setTimeout(done, timeoutMs);
    function done() { clearTimeout(timer); resolve(); }
    s.once('finish', done);
    s.once('close', done);
    s.once('error', done);
  });
}

/**
 * The replica volume at `root`. With `create` (a sync), a new or empty directory is made
 * one; a dry run or a verify changes no file, so there a missing replica is refused. All
 * open it for writing all the same: that runs the scan that finds changes made to the
 * replica behind replfs's back, which they report.
 */
export async function openReplica(root: string, opts: { create: boolean; failback?: boolean }): Promise<{ volume: Volume; report: OpenReport }> {
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
  const opened = await Volume.open(root, { writable: true });
  // A protected directory holding files: only a replica may be synced into, or the volume a
  // promoted replica came from (a failback; the receiver checks that it is).
  if (entries.length > 1 && !opts.failback && !(await opened.volume.replicaMeta())) {
    await opened.volume.close();
    throw new ReplfsError('refused', `${root} is a protected directory, not a replica: a sync would overwrite its files`,
      'sync into a new or empty directory');
  }
  return opened;
}

/**
 * A destination's retention, applied by the replica after a sync: the rules decide, and
 * the newest snapshot (the base of the next sync) always stays.
 */
export async function pruneReplica(replica: Volume, rules: KeepPolicy): Promise<PruneOutcome> {
  const snaps = replica.snapshots();
  const verdicts = decide(snaps.map((s) => ({ name: s.name, time: Date.parse(s.sourceTime) })), rules);
  const newest = replica.snapshots().at(-1)?.name;
  const removed = verdicts.filter((v) => !v.keep && v.name !== newest).map((v) => v.name);
  const gc = removed.length ? await replica.deleteSnapshots(removed) : null;
  return { removed, kept: snaps.length - removed.length, bytesFreed: gc?.bytesFreed ?? 0 };
}
