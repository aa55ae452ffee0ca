// Snapshot operations, shared by the mount daemon (answering the control socket) and the
// CLI working on an unmounted volume directly, so both behave the same.
import path from 'node:path';
import { ReplfsError } from '../errors/index.js';
import { cloexecAll, type GcReport, type SnapshotRecord, type Volume } from '../volume/index.js';
import { checkSnapshotName } from './command.js';
import { decide, PolicyError, type KeepPolicy } from '../policy/retention.js';
import { parsePolicy, type Policy } from '../policy/config.js';
import { OpsBook } from './operations.js';
import { ConfigError, parseQuiesce, runHook, type HookOutcome, type QuiesceConfig } from '../policy/hooks.js';
import { ConnectionError, greet } from '../replicate/connection.js';
import type { Welcome } from '../replicate/handshake.js';
import { parseDestination } from '../replicate/destination.js';
import { ProtocolError } from '../replicate/frames.js';
import { HashPool } from '../replicate/hasher.js';
import { send, verify, type SyncProgress } from '../replicate/sender.js';
import { connect, type Link } from '../replicate/transport.js';
import { RemoteReceiver } from '../replicate/wire.js';
import { VERSION } from './version.js';
import { Glob, GlobError } from '../policy/glob.js';
import { findVersions, type FindProgress } from './versions.js';

export interface ActionContext {
  /** Where the volume is mounted, or null when it is not. */
  mountpoint: string | null;
  /** Where a long action reports how far it got (a terminal's progress bar). */
  progress?: (p: SyncProgress) => void;
  /** The policy in effect (a mount daemon's); without it, the volume's config.json is read. */
  policy?: () => Promise<Policy>;
  /** Aborts a long action (a sync, when the daemon unmounts). */
  signal?: AbortSignal;
}

export type Action = (volume: Volume, args: Record<string, unknown>, ctx: ActionContext) => Promise<unknown>;

export interface SnapshotResult {
  snapshot: SnapshotRecord;
  quiesced: boolean;
  hooks: { pre: HookOutcome | null; post: HookOutcome | null };
}

export interface SnapshotListing {
  snapshots: Array<SnapshotRecord & { uniqueBytes: number }>;
  latest: string | null;
}

function str(args: Record<string, unknown>, key: string): string | undefined {
  const v = args[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new ReplfsError('usage', `${key} must be a string`);
  return v;
}


/**
 * A replica changes only by syncs: a snapshot not taken by one would show its live tree,
 * maybe half way through a sync, as its newest; a restore into it would change it behind
 * its source's back.
 */
async function refuseOnReplica(volume: Volume, what: 'snapshot' | 'send' | 'restore'): Promise<void> {
  if (!(await volume.replicaMeta())) return;
  if (what === 'snapshot') throw new ReplfsError('refused', `${volume.root} is a replica: its snapshots are taken by the syncs into it`, 'take the snapshot on the source');
  if (what === 'send') throw new ReplfsError('refused', `${volume.root} is a replica: it cannot take a new snapshot to send`, 'name one of its snapshots with --snapshot');
  throw new ReplfsError('refused', `${volume.root} is a replica: nothing may be restored into it`,
    'restore somewhere else with --to, or copy from its mount: cp -a <mount>/.snapshots/<name>/<path> <destination>');
}

/**
 * The volume's quiesce settings: the daemon's policy, or the volume's config.json read
 * afresh; a malformed one is a usage error naming the field.
 */
async function quiesceConfig(volume: Volume, ctx: ActionContext): Promise<QuiesceConfig> {
  if (ctx.policy) return (await ctx.policy()).quiesce;
  try {
    return parseQuiesce((await volume.currentConfig()).quiesce);
  } catch (err) {
    if (err instanceof ConfigError) throw new ReplfsError('usage', `${volume.root}/.replfs/config.json: ${err.message}`);
    throw err;
  }
}

const snapshot: Action = async (volume, args, ctx) => {
  await refuseOnReplica(volume, 'snapshot');
  const label = str(args, 'label') ?? null;
  const quiesce = args.quiesce === true;
  const q = await quiesceConfig(volume, ctx);
  const name = volume.reserveSnapshotName();
  const env = (phase: string, extra: Record<string, string> = {}) => ({
    ...q.env,
    REPLFS_VOLUME: volume.root, REPLFS_MOUNTPOINT: ctx.mountpoint ?? '', REPLFS_SNAPSHOT: name, REPLFS_PHASE: phase, ...extra,
  });
  const cwd = ctx.mountpoint ?? volume.root;
  // Hooks must not inherit the daemon's descriptors: a hook leaving a process behind would
  // otherwise hold /dev/fuse and keep the mount alive after the daemon is gone.
  if (quiesce && (q.pre || q.post)) cloexecAll();
  const hooks: SnapshotResult['hooks'] = { pre: null, post: null };
  let consistency: 'app' | 'crash' = 'crash';
  try {
    if (quiesce && q.pre) {
      hooks.pre = await runHook(q.pre, env('pre'), q.preTimeoutMs, cwd);
      if (hooks.pre.status === 'ok') consistency = 'app';
      else if (q.onPreFailure === 'abort') {
        throw new ReplfsError('refused', `the pre-hook ${hooks.pre.status === 'timeout' ? `timed out after ${q.preTimeoutMs} ms` : `failed (exit ${hooks.pre.exitCode ?? hooks.pre.signal})`}; no snapshot taken (quiesce.onPreFailure is "abort")`,
          hooks.pre.stderr ? `hook stderr: ${hooks.pre.stderr.slice(-300)}` : undefined);
      }
    }
    const rec = await volume.snapshot({ name, label, consistency, barrierTimeoutMs: q.barrierTimeoutMs });
    return { snapshot: rec, quiesced: quiesce, hooks } satisfies SnapshotResult;
  } finally {
    volume.releaseSnapshotName(name);
    // Always, once the pre-hook was tried: the application must not stay paused.
    if (quiesce && q.post) hooks.post = await runHook(q.post, env('post', { REPLFS_PRE_STATUS: hooks.pre?.status ?? 'none' }), q.postTimeoutMs, cwd);
  }
};

const list: Action = async (volume) => {
  const usage = await volume.snapshotUsage();
  const snaps = volume.snapshots();
  return {
    snapshots: snaps.map((s) => ({ ...s, uniqueBytes: usage.get(s.epoch) ?? 0 })),
    latest: snaps.at(-1)?.name ?? null,
  } satisfies SnapshotListing;
};

const remove: Action = async (volume, args) => {
  const name = str(args, 'name') ?? '';
  checkSnapshotName(name);
  const gc = await volume.deleteSnapshots([name]);
  return { deleted: name, gc };
};

export interface PruneResult {
  dryRun: boolean;
  kept: Array<{ name: string; reasons: string[] }>;
  removed: string[];
  gc: GcReport | null;
}

const prune: Action = async (volume, args) => {
  const policy = args.policy as KeepPolicy;
  const snaps = volume.snapshots();
  let verdicts;
  try {
    verdicts = decide(snaps.map((s) => ({ name: s.name, time: Date.parse(s.sourceTime) })), policy);
  } catch (err) {
    if (err instanceof PolicyError) throw new ReplfsError('usage', err.message);
    throw err;
  }
  // A destination's base stays, whatever the rules say: its next sync starts from it.
  const pinned = new Map<string, string>();
  for (const d of await volume.destinations()) {
    pinned.set(d.base, `base of ${d.destination}`);
    if (d.pending !== undefined) pinned.set(d.pending, `being sent to ${d.destination}`);
  }
  for (const v of verdicts) {
    const why = pinned.get(v.name);
    if (why !== undefined) {
      v.keep = true;
      v.reasons.push(why);
    }
  }
  const removed = verdicts.filter((v) => !v.keep).map((v) => v.name);
  const kept = verdicts.filter((v) => v.keep).map((v) => ({ name: v.name, reasons: v.reasons }));
  const dryRun = args.dryRun === true;
  const gc = dryRun ? null : await volume.deleteSnapshots(removed);
  return { dryRun, kept, removed, gc } satisfies PruneResult;
};

const diff: Action = async (volume, args) => {
  const from = str(args, 'from') ?? '';
  const to = str(args, 'to') ?? 'live';
  checkSnapshotName(from);
  if (to !== 'live') checkSnapshotName(to);
  return volume.diff(from, to);
};

const restore: Action = async (volume, args, ctx) => {
  const name = str(args, 'name') ?? '';
  checkSnapshotName(name);
  const from = (str(args, 'from') ?? '').replace(/^\/+|\/+$/g, '');
  const to = str(args, 'to');
  if (to === undefined) {
    await refuseOnReplica(volume, 'restore');
    return volume.restore(name, from, { intoRel: from });
  }
  if (!path.isAbsolute(to)) throw new ReplfsError('usage', `--to must be an absolute path, got ${JSON.stringify(to)}`);
  for (const base of [ctx.mountpoint, volume.root]) {
    if (base && (to === base || to.startsWith(base + '/'))) {
      await refuseOnReplica(volume, 'restore');
      const rel = path.relative(base, to);
      const leaf = from === '' ? '' : from.slice(from.lastIndexOf('/') + 1);
      return volume.restore(name, from, { intoRel: [rel, leaf].filter(Boolean).join('/') });
    }
  }
  return volume.restore(name, from, { intoDir: to });
};

const DESTINATION_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * A destination named in the policy (`replfs sync /srv/data offsite`): its URL, with its
 * settings (bwlimit, compress, token, CA, retention) where the command line gave none. A
 * name never holds "/" or ":", so a path or URL is never taken for one.
 */
async function namedDestination(volume: Volume, args: Record<string, unknown>, ctx: ActionContext): Promise<Record<string, unknown>> {
  const given = str(args, 'destination') ?? '';
  if (!DESTINATION_NAME.test(given)) return absoluteLocal(args);
  let policy: Policy;
  if (ctx.policy) policy = await ctx.policy();
  else {
    try {
      policy = parsePolicy((await volume.currentConfig()) as unknown, { origin: 'volume' });
    } catch (err) {
      if (err instanceof ConfigError) throw new ReplfsError('usage', `${volume.root}/.replfs/config.json: ${err.message}`);
      throw err;
    }
  }
  const d = policy.destinations.find((x) => x.name === given);
  if (!d) return absoluteLocal(args);
  return {
    ...args, destination: d.url, bwlimit: args.bwlimit ?? d.bwlimit, compress: args.compress ?? d.compress,
    tokenFile: args.tokenFile ?? d.tokenFile ?? undefined, tlsCa: args.tlsCa ?? d.tlsCa ?? undefined, retention: args.retention ?? d.retention ?? undefined,
  };
}

/**
 * A local destination given relative is taken from the directory the command was run in
 * (`cwd`, sent by the CLI), not the daemon's: the same path always names the same replica,
 * and its records and status show it whole.
 */
function absoluteLocal(args: Record<string, unknown>): Record<string, unknown> {
  const given = str(args, 'destination') ?? '';
  let local: boolean;
  try {
    local = parseDestination(given).kind === 'local';
  } catch {
    return args; // the caller's parse says what is wrong with it
  }
  if (!local || path.isAbsolute(given)) return args;
  return { ...args, destination: path.resolve(str(args, 'cwd') ?? process.cwd(), given) };
}

/** Reaches the destination of a sync or verify, and says hello. */
async function reach(args: Record<string, unknown>): Promise<{ link: Link; remote: RemoteReceiver }>{
  const destination = str(args, 'destination') ?? '';
  const dest = parseDestination(destination);
  const link = await connect(dest, { tokenFile: str(args, 'tokenFile'), tlsCa: str(args, 'tlsCa') });
  let welcome: Welcome;
  try {
    const rate = args.bwlimit;
    if (typeof rate === 'number' && rate > 0) link.conn.limitSendRate(rate);
    welcome = await greet(link.conn, VERSION, link.token, link.target);
  } catch (err) {
    await link.close();
    throw linkError(err, destination, link);
  }
  return { link, remote: new RemoteReceiver(link.conn, { compress: args.compress === true, version: welcome.version }) };
}

/** A failure of the connection as the user should read it: transient (exit 10) or not. */
function linkError(err: unknown, destination: string, link: Link): unknown {
  if (err instanceof ConnectionError || err instanceof ProtocolError) {
    const far = link.stderr();
    // A stream that ends inside a frame was cut, not malformed: worth another try.
    const exit = err instanceof ConnectionError ? (err.code === 'auth' ? 'permission' : err.transient ? 'unavailable' : 'refused')
      : err.reason === 'truncated' ? 'unavailable' : 'refused';
    return new ReplfsError(exit,
      `the sync to ${destination} failed: ${err.message}${far ? `; the destination said: ${far.split('\n').at(-1)}` : ''}`);
  }
  return err;
}

/** `replfs sync`: a new snapshot (or the one named), sent to the destination. */
const sync: Action = async (volume, given, ctx) => {
  const args = await namedDestination(volume, given, ctx);
  const dryRun = args.dryRun === true;
  parseDestination(str(args, 'destination') ?? '');
  let name = str(args, 'snapshot');
  if (name !== undefined) {
    checkSnapshotName(name);
    volume.snapshotNamed(name);
  } else if (dryRun) {
    // A dry run changes nothing, not even the source: it looks at the newest snapshot.
    name = volume.snapshots().at(-1)?.name;
    if (name === undefined) throw new ReplfsError('refused', 'the source has no snapshot yet', 'take one with replfs snapshot, or sync without --dry-run');
  } else {
    await refuseOnReplica(volume, 'send');
    const quiesce = args.quiesce === true || (await quiesceConfig(volume, ctx)).onSync;
    name = ((await snapshot(volume, { quiesce, label: str(args, 'label') ?? null }, ctx)) as SnapshotResult).snapshot.name;
  }
  const destination = str(args, 'destination') ?? '';
  const book = dryRun ? null : await OpsBook.for(volume);
  let reached;
  try {
    reached = await reach(args);
  } catch (err) {
    await book?.recordFailure(destination, err, Date.now());
    throw err;
  }
  const { link, remote } = reached;
  const pool = new HashPool();
  const closeOnAbort = () => { void link.close(); };
  ctx.signal?.addEventListener('abort', closeOnAbort);
  try {
    const summary = await send(volume, remote, {
      retention: (args.retention as KeepPolicy | undefined) ?? undefined,
      snapshot: name, hashPool: pool, mode: dryRun ? 'dry-run' : 'sync', force: args.force === true,
      wireBytes: () => remote.wireBytes, onProgress: ctx.progress,
      // Until the destination confirms, the snapshot being sent is kept too: an interrupted sync resumes from it.
      onStart: async (state, target) => {
        if (dryRun || !state.base) return;
        await volume.recordDestination(state.replicaId, {
          destination, base: state.base.name, sourceTime: state.base.sourceTime, at: new Date().toISOString(), pending: target.name,
        });
      },
    });
    if (!dryRun) {
      const base = volume.snapshotNamed(summary.snapshot);
      await volume.recordDestination(summary.replicaId, { destination, base: base.name, sourceTime: base.sourceTime, at: new Date().toISOString() });
      await book?.recordSync(destination, summary, Date.now());
    }
    return summary;
  } catch (err) {
    const shown = ctx.signal?.aborted ? new ReplfsError('unavailable', `the sync to ${destination} was stopped: the volume is being unmounted`) : linkError(err, destination, link);
    await book?.recordFailure(destination, shown, Date.now());
    throw shown;
  } finally {
    ctx.signal?.removeEventListener('abort', closeOnAbort);
    await pool.close();
    await link.close();
  }
};

/** `replfs verify`: a source snapshot against the replica's snapshot of the same source time. */
const verifyAction: Action = async (volume, given, ctx) => {
  const args = await namedDestination(volume, given, ctx);
  const destination = str(args, 'destination') ?? '';
  parseDestination(destination);
  let name = str(args, 'snapshot');
  if (name !== undefined) {
    checkSnapshotName(name);
    volume.snapshotNamed(name);
  } else {
    // What the destination last confirmed, if this source synced to it under that name; else the newest.
    const known = (await volume.destinations()).find((d) => d.destination === destination);
    name = known?.base ?? volume.snapshots().at(-1)?.name;
    if (name === undefined) throw new ReplfsError('refused', 'the source has no snapshot to verify');
  }
  const { link, remote } = await reach(args);
  const pool = new HashPool();
  try {
    return await verify(volume, remote, { snapshot: name, hashPool: pool, wireBytes: () => remote.wireBytes, onProgress: ctx.progress });
  } catch (err) {
    throw linkError(err, destination, link);
  } finally {
    await pool.close();
    await link.close();
  }
};

/** `replfs find`: the versions of the files matching a glob, in the newest snapshot or in all. */
const find: Action = async (volume, args, ctx) => {
  let glob: Glob;
  try {
    glob = Glob.parse(str(args, 'glob') ?? '');
  } catch (err) {
    if (err instanceof GlobError) throw new ReplfsError('usage', err.message, 'see: replfs find --help');
    throw err;
  }
  // Progress lines keep a long search alive on the control socket (the CLI waits for silence, not for the end).
  const progress = ctx.progress as ((p: FindProgress) => void) | undefined;
  return findVersions(volume, glob, { all: args.all === true, progress });
};

export interface ForgetResult {
  destination: string;
  /** The replicas forgotten (a URL synced to by more than one replica over time has several). */
  replicas: Array<{ replicaId: string; base: string }>;
}

/** `replfs forget`: a destination given up for good no longer keeps its base on the source. */
const forget: Action = async (volume, given, ctx) => {
  const args = await namedDestination(volume, given, ctx);
  const destination = str(args, 'destination') ?? '';
  const typed = str(given, 'destination') ?? '';
  const records = (await volume.destinations()).filter((d) => [destination, typed].includes(d.destination) || d.replicaId === typed);
  if (records.length === 0) {
    const known = (await volume.destinations()).map((d) => d.destination);
    throw new ReplfsError('notFound', `${volume.root} has synced to no destination ${JSON.stringify(destination)}`,
      known.length ? `it knows: ${[...new Set(known)].join(', ')}` : 'it has synced to no destination at all');
  }
  for (const r of records) await volume.forgetDestination(r.replicaId);
  const book = await OpsBook.for(volume);
  await book.update((o) => { for (const r of records) delete o.destinations[r.destination]; });
  return { destination, replicas: records.map((r) => ({ replicaId: r.replicaId, base: r.base })) } satisfies ForgetResult;
};

export const ACTIONS: Record<string, Action> = {
  forget,
  diff,
  find,
  restore,
  snapshot,
  snapshots: list,
  'snapshot-delete': remove,
  prune,
  sync,
  verify: verifyAction,
};

/** Whether an action changes the volume (run directly, it needs the volume open for writing). */
export const WRITES = new Set(['snapshot', 'snapshot-delete', 'prune', 'restore', 'sync', 'forget']);
