import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ReplfsError, hasCode } from '../errors/index.js';
import { STATE_DIR, DAEMON_LOG, Volume, isUnder } from '../volume/index.js';
import { findRecord } from '../control/registry.js';
import { fuseProblem, mountState, isMountPoint, unmountPath } from '../fuse/mountpoint.js';
import { Daemon, checkMode } from './daemon.js';
import type { Command } from './command.js';
import { parseMountOptions, type MountOptions } from './mount-options.js';

export {
  parseMountOptions, DEFAULT_ATTR_TIMEOUT, DEFAULT_ENTRY_TIMEOUT, REPLICA_ATTR_TIMEOUT, REPLICA_ENTRY_TIMEOUT, type MountOptions,
} from './mount-options.js';

export interface MountRequest extends MountOptions {
  root: string;
  mountpoint: string;
  /** A replica, mounted with --read-only. */
  replica: boolean;
  /** The policy file given with --config. */
  configFile: string | null;
}

/**
 * Checks everything that can be checked before starting a daemon, and clears a stale
 * mount left by a killed one. Returns notes worth telling the user.
 */
export async function prepareMount(root: string, mountpoint: string): Promise<string[]> {
  const notes: string[] = [];
  const problem = fuseProblem();
  if (problem) throw new ReplfsError('fuseUnavailable', problem);
  for (const p of new Set([mountpoint, root])) {
    const state = await mountState(p);
    if (state === 'stale') {
      await unmountPath(p, true);
      notes.push(`cleared a stale mount at ${p} left by a daemon that was killed`);
    } else if (state === 'live') {
      const rec = await findRecord(p);
      throw new ReplfsError('busy', `${p} is already mounted${rec?.alive ? ` (daemon pid ${rec.pid})` : ''}`, `unmount it first: replfs unmount ${p}`);
    }
  }
  const running = await findRecord(root);
  if (running?.alive && running.root === root) {
    throw new ReplfsError('busy', `${root} is already mounted at ${running.mountpoint} (daemon pid ${running.pid})`);
  }
  let st: fs.Stats;
  try {
    st = fs.statSync(root);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) throw new ReplfsError('notFound', `${root} does not exist`);
    throw err;
  }
  if (!st.isDirectory()) throw new ReplfsError('notFound', `${root} is not a directory`);
  if (!fs.existsSync(path.join(root, STATE_DIR))) {
    throw new ReplfsError('notFound', `${root} is not a protected directory (no ${STATE_DIR}/)`, `run: replfs init ${root}`);
  }
  if (mountpoint !== root) {
    let mst: fs.Stats;
    try {
      mst = fs.statSync(mountpoint);
    } catch (err) {
      if (hasCode(err, 'ENOENT')) throw new ReplfsError('notFound', `mountpoint ${mountpoint} does not exist`, `create it: mkdir -p ${mountpoint}`);
      throw err;
    }
    if (!mst.isDirectory()) throw new ReplfsError('refused', `mountpoint ${mountpoint} is not a directory`);
    if (fs.readdirSync(mountpoint).length > 0) throw new ReplfsError('refused', `mountpoint ${mountpoint} is not empty`, 'use an empty directory, or omit it to mount in place');
    if (isUnder(mountpoint, root)) throw new ReplfsError('refused', `mountpoint ${mountpoint} is inside the protected directory ${root}`);
    if (isUnder(root, mountpoint)) throw new ReplfsError('refused', `mountpoint ${mountpoint} contains the protected directory ${root}`);
    if (await isMountPoint(mountpoint)) throw new ReplfsError('busy', `${mountpoint} is already a mount point`);
  }
  return notes;
}

export const mount: Command = {
  name: 'mount',
  summary: 'Mount a protected directory so that every change to it is journaled.',
  args: '<dir> [<mountpoint>]',
  description: [
    'Without <mountpoint> the directory is mounted in place, over itself: applications keep',
    'using the same path. Returns once the mount is ready; the daemon stays in the',
    `background and logs to <dir>/${STATE_DIR}/${DAEMON_LOG}. A stale mount left by a killed`,
    'daemon is cleared first.',
    '',
    'A replica (a directory that replfs sync made) is mounted with --read-only: its root',
    'shows the newest snapshot the syncs brought, .snapshots/ all of them, and nothing in',
    'it can be changed. Syncs into a mounted replica are applied by its daemon; the root',
    'moves to the new snapshot when one completes.',
  ].join('\n'),
  options: {
    'read-only': { type: 'boolean', description: 'mount a replica: its newest snapshot at the root, every write refused (EROFS)' },
    foreground: { type: 'boolean', short: 'f', description: 'stay attached; Ctrl-C unmounts' },
    option: { type: 'string', short: 'o', multiple: true, value: 'OPTS', description: 'mount options, comma separated: ro, kernel_cache, attr_timeout=S, entry_timeout=S, max_readahead=N, allow_root, snapdir=hidden|visible, debug' },
    config: { type: 'string', value: 'FILE', description: 'take the policy (schedules, destinations, alerts) from FILE instead of <dir>/.replfs/config.json' },
  },
  positionals: { min: 1, max: 2 },
  async run({ values, positionals }) {
    const root = path.resolve(positionals[0]!);
    const mountpoint = positionals[1] !== undefined ? path.resolve(positionals[1]) : root;
    const replica = values['read-only'] === true;
    const configFile = typeof values.config === 'string' ? path.resolve(values.config) : null;
    if (configFile !== null && replica) {
      throw new ReplfsError('usage', '--config does not go with --read-only: a replica follows its source and runs no policy of its own',
        'the retention of a replica is set on the source, in its destination\'s "retention"');
    }
    if (configFile !== null && !fs.existsSync(configFile)) throw new ReplfsError('notFound', `the policy file ${configFile} does not exist`);
    const opts = parseMountOptions((values.option as string[] | undefined) ?? [], replica);
    const notes = await prepareMount(root, mountpoint);
    const readyFd = process.env.REPLFS_READY_FD ? Number(process.env.REPLFS_READY_FD) : undefined;
    // Checked before a daemon starts, so that a refusal changes nothing; the daemon checks
    // again once it holds the volume.
    if (readyFd === undefined) await checkVolumeMode(root, replica, mountpoint);
    if (values.foreground || readyFd !== undefined) {
      return runForeground({ root, mountpoint, replica, configFile, ...opts }, notes, readyFd);
    }
    return runBackground(root, mountpoint, [...((values.option as string[] | undefined) ?? []).flatMap((o) => ['-o', o]), ...(configFile ? ['--config', configFile] : [])], replica, notes);
  },
};

/** Refuses --read-only for an ordinary volume, and a replica without it. */
async function checkVolumeMode(root: string, replica: boolean, mountpoint: string): Promise<void> {
  const { volume } = await Volume.open(root, { writable: false });
  try {
    await checkMode(volume, root, replica, mountpoint);
  } finally {
    await volume.close();
  }
}

async function runForeground(req: MountRequest, notes: string[], readyFd: number | undefined): Promise<number> {
  const log = (line: string) => console.log(`${new Date().toISOString()} replfs[${process.pid}]: ${line}`);
  for (const n of notes) log(n);
  let daemon: Daemon;
  try {
    daemon = await Daemon.start({
      root: req.root, mountpoint: req.mountpoint, log, replica: req.replica, configFile: req.configFile,
      mount: { extra: req.extra, attrTimeout: req.attrTimeout, entryTimeout: req.entryTimeout, debug: req.debug, snapdirVisible: req.snapdirVisible },
    });
  } catch (err) {
    if (readyFd !== undefined) {
      const e = err instanceof ReplfsError ? { exit: err.exit, message: err.message, hint: err.hint } : { exit: 'internal', message: (err as Error).message };
      fs.writeSync(readyFd, JSON.stringify({ ok: false, error: e }) + '\n');
      fs.closeSync(readyFd);
    }
    throw err;
  }
  daemon.installSignalHandlers();
  const r = daemon.report;
  log(`mounted ${req.replica ? 'the replica ' : ''}${req.root}${req.mountpoint === req.root ? ' in place' : ` at ${req.mountpoint}`}${req.replica ? ', read-only' : ''}`);
  if (!r.lastCleanShutdown) log(`previous daemon did not shut down cleanly; ${r.recoveredRegions} write-intent regions recovered as dirty`);
  const o = r.offline;
  if (o.created || o.changed || o.moved || o.deleted) {
    log(`changes made while unmounted: ${o.created} created, ${o.changed} modified, ${o.moved} moved, ${o.deleted} deleted (journaled for a whole-file compare)`);
  }
  if (readyFd !== undefined) {
    fs.writeSync(readyFd, JSON.stringify({ ok: true, pid: process.pid, report: r }) + '\n');
    fs.closeSync(readyFd);
  }
  await daemon.stopped;
  return 0;
}

/** `args`: the mount's options as given (-o ..., --config ...), passed on to the daemon. */
async function runBackground(root: string, mountpoint: string, args0: string[], replica: boolean, notes: string[]): Promise<number> {
  const logPath = path.join(root, STATE_DIR, DAEMON_LOG);
  const logFd = fs.openSync(logPath, 'a', 0o600);
  const args = [process.argv[1]!, 'mount', root, ...(mountpoint !== root ? [mountpoint] : []), ...(replica ? ['--read-only'] : []), ...args0];
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: ['ignore', logFd, logFd, 'pipe'],
    env: { ...process.env, REPLFS_READY_FD: '3' },
  });
  fs.closeSync(logFd);
  const pipe = child.stdio[3] as NodeJS.ReadableStream;
  const answer = await new Promise<string>((resolve) => {
    let text = '';
    pipe.setEncoding('utf8');
    pipe.on('data', (d: string) => { text += d; });
    pipe.on('end', () => resolve(text));
    child.on('exit', () => setTimeout(() => resolve(text), 50));
  });
  const line = answer.split('\n').find((l) => l.trim());
  if (!line) {
    const tail = readTail(logPath);
    throw new ReplfsError('internal', `the mount daemon exited before the mount was ready${tail ? `; its log ends with:\n${tail}` : ''}`);
  }
  const msg = JSON.parse(line) as { ok: true; pid: number } | { ok: false; error: { exit: string; message: string; hint?: string } };
  if (!msg.ok) throw new ReplfsError(msg.error.exit as ReplfsError['exit'], msg.error.message, msg.error.hint);
  child.unref();
  (pipe as unknown as { destroy(): void }).destroy();
  for (const n of notes) console.log(n);
  console.log(`mounted ${replica ? 'the replica ' : ''}${root}${mountpoint === root ? ' in place' : ` at ${mountpoint}`}${replica ? ', read-only' : ''} (daemon pid ${msg.pid}, log ${logPath})`);
  return 0;
}

function readTail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-10).join('\n');
  } catch {
    return '';
  }
}
