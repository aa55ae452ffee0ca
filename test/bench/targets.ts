// The four configurations under test, each with its own backing directory in the scratch
// directory: how to bring one up, where its files are reached, which process serves it,
// and how to take it down again whatever state it is in.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isAlive, mountAt, must, run, sleep } from './proc.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = path.join(ROOT, 'src/cli/replfs.mjs');

export const CONFIG_NAMES = ['direct', 'bindfs', 'replfs', 'replfs-nojournal'] as const;
export type ConfigName = (typeof CONFIG_NAMES)[number];

export interface Target {
  name: ConfigName;
  /** The backing directory: the files as they land on disk. */
  backing: string;
  /** Where workloads read and write: the backing directory itself, or the mountpoint. */
  path: string;
  /** The mountpoint, for the FUSE configurations. */
  mountpoint: string | null;
  /** The process serving the mount. */
  pid: number | null;
  /** The bindfs process, which the benchmark starts itself. */
  child: ChildProcess | null;
  /** Environment for `replfs` commands aimed at this target. */
  env: NodeJS.ProcessEnv;
}

export function replfsEnv(runtimeDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, REPLFS_RUNTIME_DIR: runtimeDir };
  delete env.REPLFS_BENCH_NO_JOURNAL;
  return env;
}

export function replfs(t: Target, args: string[], timeoutMs = 120_000) {
  return must(process.execPath, [BIN, ...args], { env: t.env, timeoutMs });
}

/**
 * Creates the directories of a target; `up` then mounts it. `dirName` (default: the
 * configuration's name) lets one run hold several volumes of one configuration.
 */
export function makeTarget(name: ConfigName, scratch: string, dirName: string = name): Target {
  const base = path.join(scratch, dirName);
  const backing = path.join(base, 'data');
  fs.mkdirSync(backing, { recursive: true });
  let mountpoint: string | null = null;
  if (name !== 'direct') {
    mountpoint = path.join(base, 'mnt');
    fs.mkdirSync(mountpoint);
  }
  const env = replfsEnv(path.join(scratch, 'run'));
  if (name === 'replfs-nojournal') env.REPLFS_BENCH_NO_JOURNAL = '1';
  return { name, backing, path: mountpoint ?? backing, mountpoint, pid: null, child: null, env };
}

/**
 * A replfs volume mounted in place, as users run it (`replfs init <dir>`, then
 * `replfs mount <dir>`): the backing directory, the mountpoint and the workload path are
 * one and the same. `env` is added to the environment of every `replfs` command, the
 * mount's included (the daemon runs `replfs sync`, so it sees the mount's environment).
 */
export function makeInPlaceTarget(scratch: string, dirName: string, env: Record<string, string> = {}): Target {
  const dir = path.join(scratch, dirName);
  fs.mkdirSync(dir, { recursive: true });
  return { name: 'replfs', backing: dir, path: dir, mountpoint: dir, pid: null, child: null, env: { ...replfsEnv(path.join(scratch, 'run')), ...env } };
}

const EXPECTED_FSTYPE: Record<ConfigName, string | null> = {
  direct: null, bindfs: 'fuse', replfs: 'fuse.replfs', 'replfs-nojournal': 'fuse.replfs',
};

export async function up(t: Target): Promise<void> {
  if (t.name === 'direct') return;
  const mnt = t.mountpoint!;
  if (t.name === 'bindfs') {
    // `bindfs <backing> <mnt>` with -f so that its process is ours to watch and stop; the
    // mount itself is the same as the daemonized one.
    const log = fs.openSync(path.join(path.dirname(t.backing), 'bindfs.log'), 'a');
    const child = spawn('bindfs', ['-f', t.backing, mnt], { detached: true, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    t.child = child;
    let exited: string | null = null;
    child.on('exit', (code, sig) => { exited = `bindfs exited (${sig ?? code})`; });
    child.on('error', (err) => { exited = `cannot run bindfs: ${err.message}`; });
    const deadline = Date.now() + 15_000;
    while (!mountAt(mnt)) {
      if (exited) throw new Error(`${exited} before mounting ${mnt}; see ${path.dirname(t.backing)}/bindfs.log`);
      if (Date.now() > deadline) throw new Error(`bindfs did not mount ${mnt} within 15 s`);
      await sleep(20);
    }
    t.pid = child.pid ?? null;
  } else {
    await replfs(t, ['init', t.backing]);
    const extra = (process.env.REPLFS_BENCH_MOUNT_OPTS ?? '').split(/\s+/).filter(Boolean).flatMap((o) => ['-o', o]);
    const where = mnt === t.backing ? [mnt] : [t.backing, mnt];
    await must(process.execPath, [BIN, 'mount', ...where, ...extra], { env: t.env, timeoutMs: 120_000 });
    const status = JSON.parse((await replfs(t, ['status', '--json', mnt])).stdout) as { pid: number | null };
    t.pid = status.pid;
  }
  const m = mountAt(mnt);
  if (!m || m.fstype !== EXPECTED_FSTYPE[t.name]) {
    throw new Error(`${t.name}: expected a ${EXPECTED_FSTYPE[t.name]} mount at ${mnt}, found ${m ? m.fstype : 'nothing'}`);
  }
}

async function waitExit(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

/**
 * Unmounts a target and stops its daemon, escalating from a clean unmount (which lets
 * replfs flush its journal) to a lazy one and finally to signals. Never throws; returns
 * what went wrong, if anything.
 */
export async function down(t: Target, log: (s: string) => void): Promise<void> {
  if (t.name === 'direct' || !t.mountpoint) return;
  const mnt = t.mountpoint;
  const tryRun = async (cmd: string, args: string[], env?: NodeJS.ProcessEnv) => {
    const r = await run(cmd, args, { env: env ?? process.env, timeoutMs: 150_000 }).catch((err: Error) => ({ code: -1, stderr: err.message, stdout: '' }));
    if (r.code !== 0) log(`${t.name}: ${cmd} ${args.join(' ')}: ${(r.stderr + r.stdout).trim()}`);
    return r.code === 0;
  };
  if (mountAt(mnt)) {
    if (t.name === 'bindfs') {
      if (!(await tryRun('fusermount', ['-u', mnt]))) await tryRun('fusermount', ['-uz', mnt]);
    } else {
      if (!(await tryRun(process.execPath, [BIN, 'unmount', '--timeout', '120', mnt], t.env))) {
        if (mountAt(mnt)) await tryRun(process.execPath, [BIN, 'unmount', '--lazy', '--timeout', '30', mnt], t.env);
      }
    }
    if (mountAt(mnt)) await tryRun('fusermount', ['-uz', mnt]);
    if (mountAt(mnt)) await tryRun('umount', ['-l', mnt]);
  }
  // The serving process should now exit on its own; stop it if it does not.
  const pid = t.pid ?? t.child?.pid ?? null;
  if (pid !== null && isAlive(pid)) {
    if (!(await waitExit(pid, 30_000))) {
      log(`${t.name}: daemon pid ${pid} still running after unmount; sending SIGTERM`);
      try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
      if (!(await waitExit(pid, 10_000))) {
        log(`${t.name}: daemon pid ${pid} ignored SIGTERM; sending SIGKILL`);
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
        await waitExit(pid, 5_000);
      }
    }
  }
}
