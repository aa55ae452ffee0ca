// Crash consistency of the journal: SIGKILL the mount daemon in the middle of a write
// workload, clear the stale mount, remount, and check that the journal covers every
// write that returned success to the application.
//
// The workload runs in its own process (the daemon is a separate process too, so the
// test itself may block on the mount). After each pwrite() returns, the workload appends
// `file offset length` to a log outside the mount, so the log is exactly the set of
// acknowledged writes, less at most the one in flight when the daemon died.
//
// Files that existed before `init` are the interesting ones: they are not created in the
// current epoch, so their writes go through the write-intent path (pending regions,
// exact bitmaps at each flush). For them only the extents count as coverage: the
// mount-time scan may add `unknown: 'offline-change'` as a safety net, which is allowed,
// but the check looks at the extents alone. Files created during the workload must be
// journaled as created and covered whole.
//
// Reproduce a failure with the seed it logs: REPLFS_CRASH_SEED=<seed> REPLFS_CRASH_RUNS=1.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import test from '../helpers/ava.js';
import {
  scratch, replfs, initVolume, mountVolume, forceUnmount, isMounted, run, rng, seedFromEnv, waitFor,
  type Scratch, alive, exited
} from '../helpers/env.js';

// The --json schemas are the engine's own types (docs/cli.md documents them).
import type { Extent, JournalFile, JournalReport, VolumeStatus as Status } from '../../src/core/types.js';

const MiB = 1024 * 1024;
const RUNS = Number(process.env.REPLFS_CRASH_RUNS ?? 5);
const BASE_SEED = seedFromEnv('REPLFS_CRASH_SEED');

// Three files inside one 16 MiB write-intent region, and one spanning three regions, so
// both a whole-region intent and several regions of one file are exercised.
const PREEXISTING: Array<[string, number]> = [['a.bin', 8 * MiB], ['b.bin', 8 * MiB], ['c.bin', 8 * MiB], ['big.bin', 40 * MiB]];

/**
 * The workload. Arguments: root of the mount, log path, seed, mode ('random' or 'fsync'),
 * then the pre-existing files as name:size. Prints "ready" once every file is open, and
 * in fsync mode "fsynced" after its fsync phase. Runs until killed (random mode) or until
 * the phase is over and it is killed (fsync mode).
 */
const WORKLOAD = String.raw`
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const [root, logPath, seedText, mode, ...specs] = process.argv.slice(2);
let a = Number(seedText) >>> 0;
const rand = () => {
  a = (a + 0x6d2b79f5) >>> 0;
  let t = a;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
const KiB = 1024;
const MAX_LEN = 256 * KiB;
const buf = Buffer.alloc(MAX_LEN);
for (let i = 0; i < MAX_LEN; i++) buf[i] = (i * 31 + (a & 0xff)) & 0xff;
const logFd = fs.openSync(logPath, 'a');
const log = (line) => fs.writeSync(logFd, line + '\n');
const files = specs.map((s) => {
  const i = s.lastIndexOf(':');
  const name = s.slice(0, i);
  return { name, size: Number(s.slice(i + 1)), fd: fs.openSync(path.join(root, name), 'r+') };
});
let created = 0;
function create() {
  const name = 'new-' + created++ + '.bin';
  const fd = fs.openSync(path.join(root, name), 'w+');
  log('+ ' + name);
  files.push({ name, size: 0, fd });
}
// Random mode works in phases of 150-700 ms, each writing to one or two "hot" files
// within a 4 MiB window (plus appends). Files and regions left alone for a while get
// their exact bitmaps flushed, so a kill finds some regions exact and some pending.
let hot = [];
let windowStart = new Map();
let phaseEnd = 0;
function newPhase() {
  hot = [files[int(0, files.length - 1)], files[int(0, files.length - 1)]];
  windowStart = new Map(hot.map((f) => [f, int(0, Math.max(0, f.size - 4 * 1024 * KiB))]));
  phaseEnd = Date.now() + int(150, 700);
}
function randomWrite(f) {
  // Mostly small writes, some up to 256 KiB (split by the kernel into two FUSE writes).
  const len = rand() < 0.5 ? int(1, 4 * KiB) : int(1, MAX_LEN);
  const from = windowStart.get(f) ?? 0;
  const to = Math.min(f.size, from + 4 * 1024 * KiB);
  const off = to > from && rand() < 0.85 ? int(from, to - 1) : f.size + int(0, 512 * KiB);
  const n = fs.writeSync(f.fd, buf, 0, len, off);
  log(f.name + ' ' + off + ' ' + n);
  f.size = Math.max(f.size, off + n);
  return f;
}
log('# seed ' + seedText + ' mode ' + mode);
process.stdout.write('ready\n');
let count = 0;
if (mode === 'fsync') {
  create();
  create();
  for (let i = 0; i < 150; i++) {
    const f = randomWrite(files[int(0, files.length - 1)]);
    fs.fsyncSync(f.fd);
  }
  for (const f of files) fs.fsyncSync(f.fd);
  process.stdout.write('fsynced\n');
  setInterval(() => undefined, 1000);
} else {
  for (;;) {
    if (Date.now() >= phaseEnd) {
      if (created < 4 && rand() < 0.3) create();
      newPhase();
    }
    randomWrite(hot[int(0, hot.length - 1)]);
    if (++count % 20 === 0) fs.fsyncSync(logFd);
  }
}
`;

interface Write { file: string; offset: number; length: number }

function parseLog(text: string): { writes: Write[]; created: Set<string> } {
  const writes: Write[] = [];
  const created = new Set<string>();
  for (const line of text.split('\n')) {
    let m = /^\+ (\S+)$/.exec(line);
    if (m) { created.add(m[1]!); continue; }
    m = /^(\S+) (\d+) (\d+)$/.exec(line);
    if (m) writes.push({ file: m[1]!, offset: Number(m[2]), length: Number(m[3]) });
  }
  return { writes, created };
}

function coalesce(extents: readonly Extent[]): Extent[] {
  const out: Extent[] = [];
  for (const e of [...extents].filter((x) => x.length > 0).sort((x, y) => x.offset - y.offset)) {
    const last = out[out.length - 1];
    if (last && e.offset <= last.offset + last.length) last.length = Math.max(last.length, e.offset + e.length - last.offset);
    else out.push({ ...e });
  }
  return out;
}

/** The parts of [offset, offset + length) that no extent covers. */
function uncovered(extents: readonly Extent[], offset: number, length: number): Extent[] {
  const gaps: Extent[] = [];
  let at = offset;
  const end = offset + length;
  for (const e of coalesce(extents)) {
    if (e.offset + e.length <= at) continue;
    if (e.offset >= end) break;
    if (e.offset > at) gaps.push({ offset: at, length: e.offset - at });
    at = Math.max(at, e.offset + e.length);
    if (at >= end) break;
  }
  if (at < end) gaps.push({ offset: at, length: end - at });
  return gaps;
}

async function jsonOf<T>(t: ExecutionContext, s: Scratch, args: string[]): Promise<T> {
  const r = await replfs(s, args);
  if (r.code !== 0) throw new Error(`replfs ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  t.truthy(r.stdout);
  return JSON.parse(r.stdout) as T;
}



/** A protected directory holding the pre-existing files, written before init. */
async function prepare(t: ExecutionContext, s: Scratch, name: string): Promise<string> {
  const dir = path.join(s.dir, name);
  fs.mkdirSync(dir);
  const chunk = Buffer.alloc(MiB, 0x5a);
  for (const [file, size] of PREEXISTING) {
    const fd = fs.openSync(path.join(dir, file), 'w');
    for (let off = 0; off < size; off += MiB) fs.writeSync(fd, chunk, 0, MiB, off);
    fs.closeSync(fd);
  }
  await initVolume(t, s, dir);
  return dir;
}

function startWorkload(s: Scratch, dir: string, logPath: string, seed: number, mode: 'random' | 'fsync') {
  const script = path.join(s.dir, 'workload.cjs');
  if (!fs.existsSync(script)) fs.writeFileSync(script, WORKLOAD);
  const child = spawn(process.execPath, [script, dir, logPath, String(seed), mode, ...PREEXISTING.map(([f, n]) => `${f}:${n}`)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  return { child, out: () => stdout, err: () => stderr };
}

/** The pid of the daemon serving `dir`, from `replfs status --json`. */
async function daemonPid(t: ExecutionContext, s: Scratch, dir: string): Promise<number> {
  const st = await jsonOf<Status>(t, s, ['status', dir, '--json']);
  t.true(st.mounted, 'status before the kill says mounted');
  if (typeof st.pid !== 'number') throw new Error(`status --json gave no daemon pid: ${JSON.stringify(st)}`);
  return st.pid;
}

/** SIGKILLs the daemon and waits for it to be gone. */
async function killDaemon(pid: number): Promise<void> {
  process.kill(pid, 'SIGKILL');
  await waitFor(() => !alive(pid), 10_000, `daemon ${pid} to die`);
}

async function isStale(dir: string): Promise<boolean> {
  try {
    // statfs always goes to the daemon; stat can be answered from the attribute cache.
    await fs.promises.statfs(dir);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOTCONN';
  }
}

/**
 * Checks the journal against the acknowledged writes. Returns a list of problems, empty
 * when every write is covered. `requireCreated`: files created by the workload must be in
 * the journal (false for the read-only view taken before the mount-time scan, which only
 * finds files whose creation record had not reached LevelDB).
 */
interface CheckResult {
  problems: string[];
  /** Pre-existing files with logged writes and no unknown marker. */
  exact: number;
  /** Pre-existing files with logged writes whose extents leave part of the file out. */
  partial: number;
  /** Pre-existing files with logged writes that are also marked unknown. */
  unknown: number;
}

function check(report: JournalReport, writes: Write[], created: Set<string>, sizes: Map<string, number>, requireCreated: boolean): CheckResult {
  const problems: string[] = [];
  const byPath = new Map<string, JournalFile>();
  for (const f of report.files) if (f.type === 'file') for (const p of f.paths.length ? f.paths : [f.path]) byPath.set(p, f);
  let exact = 0;
  let partial = 0;
  let unknown = 0;
  const written = new Set(writes.map((w) => w.file));
  for (const name of new Set([...written, ...created])) {
    const size = sizes.get(name);
    const jf = byPath.get(name);
    if (size === undefined) { problems.push(`${name}: missing from the directory`); continue; }
    if (created.has(name)) {
      if (!jf) { if (requireCreated) problems.push(`${name} (created during the workload): not in the journal`); continue; }
      if (!jf.kinds.includes('created')) problems.push(`${name} (created during the workload): kinds ${jf.kinds.join(',')} lack 'created'`);
      const gaps = uncovered(jf.extents, 0, size);
      if (gaps.length) problems.push(`${name} (created, size ${size}): extents ${JSON.stringify(jf.extents)} leave ${JSON.stringify(gaps.slice(0, 3))} uncovered`);
      continue;
    }
    if (!jf) { problems.push(`${name}: written (${writes.filter((w) => w.file === name).length} acknowledged writes) but not in the journal`); continue; }
    if (jf.unknown) unknown++; else exact++;
    if (uncovered(jf.extents, 0, size).length > 0) partial++;
    for (const w of writes) {
      if (w.file !== name) continue;
      if (w.offset + w.length > size) problems.push(`${name}: acknowledged write ${w.offset}+${w.length} ends beyond the file size ${size}`);
      const gaps = uncovered(jf.extents, w.offset, w.length);
      if (gaps.length) {
        problems.push(`${name}: acknowledged write ${w.offset}+${w.length} not covered (gaps ${JSON.stringify(gaps.slice(0, 3))}; unknown=${jf.unknown}; extents ${JSON.stringify(jf.extents.slice(0, 8))}${jf.extents.length > 8 ? '...' : ''})`);
        if (problems.length > 30) return { problems, exact, partial, unknown };
      }
    }
  }
  return { problems, exact, partial, unknown };
}

function sizesOf(dir: string, names: Iterable<string>): Map<string, number> {
  const out = new Map<string, number>();
  for (const n of names) {
    try { out.set(n, fs.statSync(path.join(dir, n)).size); } catch { /* reported as missing */ }
  }
  return out;
}

test.serial('SIGKILL of the daemon during random writes: the journal covers every acknowledged write', async (t) => {
  t.timeout(60_000 + RUNS * 60_000);
  t.log('seed', BASE_SEED, 'runs', RUNS);
  const s = scratch(t);
  // Iteration 0 uses the base seed, each later one a seed drawn from the previous one, so
  // REPLFS_CRASH_SEED=<an iteration's seed> REPLFS_CRASH_RUNS=1 repeats that iteration alone.
  let seed = BASE_SEED;
  for (let i = 0; i < RUNS; i++, seed = Math.floor(rng(seed)() * 2 ** 31)) {
    t.log(`iteration ${i}: seed ${seed}`);
    // A fresh volume each iteration. With one volume the journal would accumulate: bits
    // set by earlier iterations would cover later writes, and the first crash makes the
    // mount-time scan mark the written files `offline-change` for the rest of the epoch,
    // after which their writes take no write intents at all (readers compare them whole),
    // so later iterations would check nothing. (No snapshot command yet to start a new epoch.)
    const dir = await prepare(t, s, `data-${i}`);
    await mountVolume(t, s, dir);
    const logPath = path.join(s.dir, `writes-${i}.log`);
    const r = rng(seed);
    // Up to 3 s rather than 1.5 s: the journal is flushed every second, and a kill after one
    // or two flushes finds files whose last writes are only in exact (flushed) bitmaps.
    const delay = 100 + Math.floor(r() * 2900);
    // Odd iterations let `replfs mount` clear the stale mount (and check it says so). Even
    // ones clear it by hand first and also read the journal read-only, before the mount-time
    // scan runs: there no offline-change marker can cover for a missing write intent.
    const readBeforeScan = i % 2 === 0;

    const pid = await daemonPid(t, s, dir);
    const w = startWorkload(s, dir, logPath, seed, 'random');
    try {
      await waitFor(() => w.out().includes('ready') || w.child.exitCode !== null, 20_000, 'the workload to start');
      t.true(w.out().includes('ready'), `workload did not start: ${w.err()}`);
      await new Promise((res) => setTimeout(res, delay));
      t.is(w.child.exitCode, null, `the workload stopped before the kill: ${w.err()}`);
      await killDaemon(pid);
      t.log(`iteration ${i}: killed daemon ${pid} after ${delay} ms`);
    } finally {
      w.child.kill('SIGKILL');
      await exited(w.child);
    }
    t.true(await isStale(dir), 'the mount is stale after the daemon was killed');

    const { writes, created } = parseLog(fs.readFileSync(logPath, 'utf8'));
    t.true(writes.length > 0, 'the workload acknowledged some writes before the kill');

    if (readBeforeScan) {
      const u = await run('fusermount', ['-uz', dir]);
      t.is(u.code, 0, `fusermount -uz: ${u.stderr}`);
      t.false(await isMounted(dir));
      const sizes = sizesOf(dir, new Set([...writes.map((x) => x.file), ...created]));
      const before = await jsonOf<JournalReport>(t, s, ['journal', dir, '--json']);
      const c = check(before, writes, created, sizes, false);
      t.log(`iteration ${i}: before the scan, pre-existing files written: ${c.exact} not marked unknown, ${c.unknown} marked unknown, ${c.partial} with extents short of the whole file`);
      t.deepEqual(c.problems, [], `iteration ${i} seed ${seed}: journal read before the mount-time scan`);
    }

    t.teardown(() => forceUnmount(s, dir));
    const m = await replfs(s, ['mount', dir]);
    t.is(m.code, 0, `remount failed: ${m.stderr}${m.stdout}`);
    if (!readBeforeScan) t.regex(m.stdout, /cleared a stale mount/, 'replfs mount reports that it cleared the stale mount');
    t.true(await isMounted(dir));
    t.false(await isStale(dir));

    const sizes = sizesOf(dir, new Set([...writes.map((x) => x.file), ...created]));
    const report = await jsonOf<JournalReport>(t, s, ['journal', dir, '--json']);
    const c = check(report, writes, created, sizes, true);
    t.log(`iteration ${i}: ${writes.length} acknowledged writes, ${created.size} files created; after remount, pre-existing files written: ${c.exact} not marked unknown, ${c.unknown} marked unknown, ${c.partial} with extents short of the whole file`);
    t.deepEqual(c.problems, [], `iteration ${i} seed ${seed}: journal after remount`);

    const u = await replfs(s, ['unmount', dir]);
    t.is(u.code, 0, `unmount: ${u.stderr}`);
    t.false(await isMounted(dir));
    if (!t.passed) break;
  }
});

test.serial('SIGKILL right after an fsync-heavy phase: remount recovers, status and log say so', async (t) => {
  t.timeout(120_000);
  const seed = seedFromEnv('REPLFS_CRASH_SEED');
  t.log('seed', seed);
  const s = scratch(t);
  const dir = await prepare(t, s, 'data');
  await mountVolume(t, s, dir);
  const logPath = path.join(s.dir, 'writes.log');
  const oldPid = await daemonPid(t, s, dir);
  const w = startWorkload(s, dir, logPath, seed, 'fsync');
  try {
    await waitFor(() => w.out().includes('fsynced') || w.child.exitCode !== null, 60_000, 'the fsync phase to end');
    t.true(w.out().includes('fsynced'), `workload failed: ${w.err()}`);
    await killDaemon(oldPid);
  } finally {
    w.child.kill('SIGKILL');
    await exited(w.child);
  }
  t.true(await isStale(dir), 'the mount is stale after the daemon was killed');
  const { writes, created } = parseLog(fs.readFileSync(logPath, 'utf8'));
  t.is(writes.length, 150);
  t.is(created.size, 2);

  t.teardown(() => forceUnmount(s, dir));
  const m = await replfs(s, ['mount', dir]);
  t.is(m.code, 0, `remount failed: ${m.stderr}${m.stdout}`);
  t.regex(m.stdout, /cleared a stale mount/);

  const st = await jsonOf<Status>(t, s, ['status', dir, '--json']);
  t.true(st.mounted);
  t.is(st.mountpoint, dir);
  t.not(st.pid, oldPid);
  t.false(st.lastCleanShutdown, 'status reports that the previous daemon did not shut down cleanly');

  const sizes = sizesOf(dir, new Set([...writes.map((x) => x.file), ...created]));
  const report = await jsonOf<JournalReport>(t, s, ['journal', dir, '--json']);
  const c = check(report, writes, created, sizes, true);
  t.deepEqual(c.problems, []);

  const u = await replfs(s, ['unmount', dir]);
  t.is(u.code, 0, `unmount: ${u.stderr}`);
  const daemonLog = fs.readFileSync(path.join(dir, '.replfs', 'daemon.log'), 'utf8');
  t.regex(daemonLog, /did not shut down cleanly/);
  t.regex(daemonLog, /write-intent regions recovered/);

  // Once cleanly unmounted, the next open sees a clean shutdown again.
  const again = await jsonOf<Status>(t, s, ['status', dir, '--json']);
  t.false(again.mounted);
  t.true(again.lastCleanShutdown);
});
