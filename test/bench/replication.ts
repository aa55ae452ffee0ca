// The replication group of `npm run bench`: `replfs sync` against rsync from Debian, on the
// same data, in the same run, with the same cache state. The source is a protected
// directory mounted in place, as users run it, and all data is written through the mount.
// docs/performance.md ("Replication") describes the method.
//
//   replinit    initial copy: 1 GiB in 10,000 files, to a local directory
//   replsmall   1 MiB changed over 10 files of that set, then a sync over ssh
//   replrename  a 100 MiB directory of that set renamed, then a sync over ssh
//   replhuge    1 byte changed in a 4 GiB file (written and synced once first), over ssh
//   repltree    10 files changed in a 100,000-file tree, over ssh
//
// Both tools are timed as whole commands (wall clock, process start included). Over ssh,
// both go through one private sshd on 127.0.0.1 (test/helpers/sshd.ts).
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { randomFillSync } from 'node:crypto';
import type { ExecutionContext } from 'ava';
import { startSshd, type Sshd } from '../helpers/sshd.js';
import { mountAt, mountsUnder, run, type Ran } from './proc.js';
import { BIN, down, makeInPlaceTarget, up, type Target } from './targets.js';
import { median, table } from './report.js';

export const REPLICATION_WORKLOAD_IDS = ['replinit', 'replsmall', 'replrename', 'replhuge', 'repltree'] as const;
export type ReplWorkloadId = (typeof REPLICATION_WORKLOAD_IDS)[number];

const KiB = 1024;
const MiB = 2 ** 20;
const GiB = 2 ** 30;
/** How long one command may run before the harness kills it (replfs's own control-socket timeout is 10 min). */
const LONG = 3 * 60 * 60_000;

// ------------------------------------------------------------------ sizes

/** The sizes, scaled. File sizes stay the same at every scale; counts and totals scale. */
export interface ReplSizes {
  scale: number;
  /** Set A (initial copy, small change, rename): 10 top directories x 10 subdirectories. */
  filesA: number;
  fileBytesA: number;
  /** The changed bytes of `replsmall`, spread over 10 files. */
  smallChange: number;
  /** Set B (`repltree`): files of 4 KiB in 100 directories. */
  filesB: number;
  fileBytesB: number;
  /** The huge file of `replhuge`. */
  hugeBytes: number;
}

export function replicationSizes(scale: number, hugeMb: number | null): ReplSizes {
  const round100 = (n: number) => Math.max(100, Math.round(n / 100) * 100);
  return {
    scale,
    filesA: round100(10_000 * scale),
    fileBytesA: Math.floor(GiB / 10_000),
    smallChange: MiB,
    filesB: round100(100_000 * scale),
    fileBytesB: 4 * KiB,
    hugeBytes: (hugeMb ?? Math.max(1, Math.round(4096 * scale))) * MiB,
  };
}

/**
 * Disk space the selected cases need at their peak: each data set three times (the source,
 * the replfs replica, rsync's copy), with room for directories, inodes and LevelDB.
 */
export function replicationNeededBytes(sizes: ReplSizes, workloads: ReplWorkloadId[]): number {
  const has = (w: ReplWorkloadId) => workloads.includes(w);
  const setA = has('replinit') || has('replsmall') || has('replrename') ? 3 * sizes.filesA * (sizes.fileBytesA + 8 * KiB) : 0;
  const huge = has('replhuge') ? 3 * sizes.hugeBytes : 0;
  const setB = has('repltree') ? 3 * sizes.filesB * (sizes.fileBytesB + 8 * KiB) : 0;
  // Set B is made after set A and the huge file are gone.
  return Math.max(setA + huge, setB);
}

// ------------------------------------------------------------------ report types

/** `replfs-mounted`: replfs syncing into a replica mounted read-only in place, whose daemon holds it open. */
export type Tool = 'replfs' | 'rsync' | 'replfs-mounted';

export interface ToolRun {
  ok: boolean;
  /** Wall-clock seconds of the whole command, process start included. */
  seconds: number;
  /** replfs: `bytesOnWire` (all frames both ways), or null when the summary has no such field. rsync: --stats sent + received. */
  wire: number | null;
  /** replfs only: `bytesSent`, the block payload. */
  payload: number | null;
  /** replfs only: what the daemon reported for the sync itself (`durationMs`), in seconds. */
  reported: number | null;
  /** replfs only: files in the change set, blocks sent, blocks the replica already had. */
  files: number | null;
  blocksSent: number | null;
  blocksSkipped: number | null;
  error: string | null;
}

export interface ReplRow {
  tool: Tool;
  command: string;
  runs: ToolRun[];
}

export interface ReplCheck {
  what: string;
  value: string;
  target: string;
  verdict: 'PASS' | 'MISS' | 'report' | 'n/a' | 'FAILED';
}

export interface ReplCase {
  id: ReplWorkloadId;
  title: string;
  /** What changed before each timed sync, in bytes of file data (0 for a rename). */
  changed: number;
  rows: ReplRow[];
  checks: ReplCheck[];
  notes: string[];
  /** Set when the case could not run to the end (its set-up failed, say). */
  error: string | null;
}

export interface ReplReport {
  settings: string[];
  cases: ReplCase[];
}

export interface ReplContext {
  scratch: string;
  repeat: number;
  sizes: ReplSizes;
  /** `cold`: sync and drop the page cache before every timed command; `warm`: sync only. */
  cache: 'cold' | 'warm';
  /** Where rsync reads the source: the backing directory (no FUSE, as the replfs daemon reads it), or the mount. */
  rsyncFrom: 'backing' | 'mount';
  workloads: ReplWorkloadId[];
  progress(line: string): void;
  warn(line: string): void;
  /** Hands a target to the run's cleanup, which unmounts it whatever happens. */
  adopt(t: Target): void;
  /** Registers a teardown step that the run's cleanup runs (before removing the scratch directory) whatever happens. */
  onCleanup(fn: () => Promise<void>): void;
  settle(pids: number[]): Promise<void>;
  dropCaches(): Promise<void>;
  /** True once the run was told to stop (a signal): the group then starts nothing new. */
  stopping(): boolean;
}

// ------------------------------------------------------------------ formatting

export function fmtBytes(n: number): string {
  if (n < KiB) return `${n} B`;
  if (n < MiB) return `${(n / KiB).toFixed(1)} KiB`;
  if (n < GiB) return `${(n / MiB).toFixed(n < 100 * MiB ? 2 : 1)} MiB`;
  return `${(n / GiB).toFixed(2)} GiB`;
}

export function fmtSeconds(s: number): string {
  if (s < 10) return `${s.toFixed(2)} s`;
  if (s < 1000) return `${s.toFixed(1)} s`;
  return `${Math.round(s).toLocaleString('en-US')} s`;
}

const fmtCount = (n: number) => n.toLocaleString('en-US');
const firstLines = (s: string, n = 3) => s.trim().split('\n').filter(Boolean).slice(-n).join(' | ').slice(0, 600);

// ------------------------------------------------------------------ the group

interface Vol {
  t: Target;
  dir: string;
  pid: number;
  /** A descriptor of the directory opened before it was mounted over: rsync reads the backing files through it (-1 once closed). */
  fd: number;
}

/** Closes the volume's directory descriptor once (its number may be reused afterwards). */
function closeFd(v: Vol): void {
  if (v.fd < 0) return;
  try { fs.closeSync(v.fd); } catch { /* already closed */ }
  v.fd = -1;
}

/**
 * Runs the selected cases. What the group sets up (its sshd, its descriptors) is torn down
 * when it ends, and is also handed to the run's cleanup in case the run is stopped first;
 * each teardown step may run twice and does nothing the second time.
 */
export async function replicationGroup(ctx: ReplContext): Promise<ReplReport> {
  const own: Array<() => Promise<void>> = [];
  const inner: ReplContext = { ...ctx, onCleanup: (fn) => { own.push(fn); ctx.onCleanup(fn); } };
  try {
    return await group(inner);
  } finally {
    if (!ctx.stopping()) {
      for (const fn of own.reverse()) await fn().catch((err: Error) => ctx.warn(`replication: teardown: ${err.message}`));
    }
  }
}

async function group(ctx: ReplContext): Promise<ReplReport> {
  const { sizes } = ctx;
  const has = (w: ReplWorkloadId) => ctx.workloads.includes(w);
  const base = path.join(ctx.scratch, 'repl');
  fs.mkdirSync(base, { recursive: true });
  const reps = Array.from({ length: ctx.repeat }, (_, i) => i);
  const cases: ReplCase[] = [];
  const mounted: Vol[] = [];
  const pids = () => mounted.map((v) => v.pid);

  const rsyncVersion = (await run('rsync', ['--version'], { timeoutMs: 10_000 }).catch(() => null))?.stdout.split('\n')[0]?.trim() ?? 'unknown';
  const debVersions = (await run('dpkg-query', ['-W', '-f', '${Package} ${Version}\\n', 'rsync', 'openssh-client', 'openssh-server'], { timeoutMs: 10_000 }).catch(() => null))
    ?.stdout.trim().split('\n').join(', ') ?? 'unknown';
  const settings = [
    `replication: scale ${sizes.scale}, repeat ${ctx.repeat}, caches ${ctx.cache === 'cold' ? 'dropped before every timed command (sync; echo 3 > drop_caches)' : 'warm (sync only before every timed command)'}, ` +
      `rsync reads the source ${ctx.rsyncFrom === 'backing' ? 'backing directory (no FUSE)' : 'through the mount'}`,
    `replication tools: ${rsyncVersion} (Debian packages: ${debVersions})`,
  ];

  // ---------------------------------------------------------------- sshd

  const needSsh = ctx.workloads.some((w) => w !== 'replinit');
  let sshd: Sshd | null = null;
  const sshEnv: Record<string, string> = {};
  if (needSsh) {
    const teardowns: Array<() => void | Promise<void>> = [];
    // startSshd registers its own teardown (stop sshd and every session, remove its keys)
    // on an ava context before it starts anything; this stands in for one.
    const shim: Pick<ExecutionContext, 'teardown'> = { teardown: (fn) => { teardowns.push(fn); } };
    ctx.onCleanup(async () => { for (const fn of teardowns.splice(0).reverse()) await fn(); });
    sshd = await startSshd(shim as ExecutionContext, { env: { REPLFS_RUNTIME_DIR: path.join(ctx.scratch, 'run') } });
    ctx.progress(`replication: sshd listening on 127.0.0.1:${sshd.port} (pid ${sshd.pid})`);
    sshEnv.REPLFS_SSH = ['ssh', ...sshd.sshArgs].join(' ');
    sshEnv.REPLFS_REMOTE_COMMAND = `${process.execPath} ${BIN}`;
  }
  const remote = (dir: string) => `${sshd!.user}@127.0.0.1:${dir}`;

  // ---------------------------------------------------------------- volumes

  const volume = async (dirName: string): Promise<Vol> => {
    if (ctx.stopping()) throw new Error('stopping');
    const t = makeInPlaceTarget(ctx.scratch, `repl/${dirName}`, sshEnv);
    // Opened before the mount covers the directory: rsync reads the backing files through it.
    const v: Vol = { t, dir: t.backing, pid: 0, fd: fs.openSync(t.backing, 'r') };
    ctx.onCleanup(async () => closeFd(v));
    ctx.adopt(t);
    await up(t);
    v.pid = t.pid!;
    mounted.push(v);
    ctx.progress(`replication: mounted ${v.dir} in place (pid ${v.pid})`);
    return v;
  };
  const unmount = async (v: Vol) => {
    const began = Date.now();
    await down(v.t, ctx.warn);
    mounted.splice(mounted.indexOf(v), 1);
    // Done with, unless the unmount failed: then the run's cleanup tries again and reports it.
    if (!mountAt(v.dir)) v.t.mountpoint = null;
    closeFd(v);
    ctx.progress(`replication: unmounted ${v.dir} in ${((Date.now() - began) / 1000).toFixed(1)} s`);
  };
  /** Removes everything under repl/, unless a mount is left there (removing files through it would be wrong). */
  const clearBase = () => {
    const left = mountsUnder(base);
    if (left.length) {
      ctx.warn(`replication: ${left.map((m) => m.mountpoint).join(', ')} still mounted; its data is left for the final cleanup`);
      return;
    }
    for (const d of fs.readdirSync(base)) fs.rmSync(path.join(base, d), { recursive: true, force: true });
  };
  const backingPath = (v: Vol) => `/proc/${process.pid}/fd/${v.fd}`;
  const daemonLog = (v: Vol) => {
    try {
      return fs.readFileSync(path.join(backingPath(v), '.replfs', 'daemon.log'), 'utf8').trimEnd().split('\n').slice(-5).join('\n');
    } catch {
      return '';
    }
  };

  // ---------------------------------------------------------------- the two tools

  const replfsCommand = (dest: 'local' | 'ssh') => `replfs sync <src> ${dest === 'ssh' ? 'root@127.0.0.1:' : ''}<dir> --json`;
  const rsyncBaseArgs = (dest: 'local' | 'ssh') => (dest === 'local' ? ['-a'] : ['-a', '--inplace', '--no-whole-file', '--delete']);
  const rsyncCommand = (dest: 'local' | 'ssh') =>
    `rsync ${rsyncBaseArgs(dest).join(' ')} --stats${ctx.rsyncFrom === 'backing' ? ' --exclude=/.replfs' : ''}${dest === 'ssh' ? ' -e "ssh ..."' : ''} <src>/ ${dest === 'ssh' ? 'root@127.0.0.1:' : ''}<dir>/`;

  const replfsSync = async (v: Vol, dest: string): Promise<ToolRun> => {
    const r = await run(process.execPath, [BIN, 'sync', v.dir, dest, '--json'], { env: v.t.env, timeoutMs: LONG });
    const failed = (error: string): ToolRun => ({
      ok: false, seconds: r.seconds, wire: null, payload: null, reported: null, files: null, blocksSent: null, blocksSkipped: null, error,
    });
    if (r.code !== 0) return failed(`exit ${r.signal ?? r.code}: ${firstLines(r.stderr + r.stdout) || '(no output)'}`);
    let s: Record<string, unknown>;
    try {
      s = JSON.parse(r.stdout) as Record<string, unknown>;
    } catch {
      return failed(`exit 0 but stdout is not JSON: ${r.stdout.slice(0, 200)}`);
    }
    const num = (k: string) => (typeof s[k] === 'number' ? s[k] : null);
    if (num('bytesSent') === null) return failed(`exit 0 but the summary has no bytesSent: ${r.stdout.slice(0, 200)}`);
    const ms = num('durationMs');
    return {
      ok: true, seconds: r.seconds, wire: num('bytesOnWire'), payload: num('bytesSent'), reported: ms === null ? null : ms / 1000,
      files: num('filesChanged'), blocksSent: num('blocksSent'), blocksSkipped: num('blocksSkipped'), error: null,
    };
  };

  const rsyncRun = async (v: Vol, dest: string, kind: 'local' | 'ssh'): Promise<ToolRun> => {
    const src = ctx.rsyncFrom === 'backing' ? backingPath(v) : v.dir;
    const args = [...rsyncBaseArgs(kind), '--stats', ...(ctx.rsyncFrom === 'backing' ? ['--exclude=/.replfs'] : []),
      ...(kind === 'ssh' ? ['-e', sshd!.rsh] : []), `${src}/`, `${kind === 'ssh' ? remote(dest) : dest}/`];
    const r: Ran = await run('rsync', args, { env: sshd?.env ?? process.env, timeoutMs: LONG });
    const none = { payload: null, reported: null, files: null, blocksSent: null, blocksSkipped: null };
    if (r.code !== 0) return { ok: false, seconds: r.seconds, wire: null, ...none, error: `exit ${r.signal ?? r.code}: ${firstLines(r.stderr + r.stdout) || '(no output)'}` };
    const stat = (label: string) => {
      const m = new RegExp(`^${label}: ([\\d,]+)`, 'm').exec(r.stdout);
      return m ? Number(m[1]!.replace(/,/g, '')) : null;
    };
    const sent = stat('Total bytes sent');
    const received = stat('Total bytes received');
    if (sent === null || received === null) return { ok: false, seconds: r.seconds, wire: null, ...none, error: 'exit 0 but no --stats totals in the output' };
    return { ok: true, seconds: r.seconds, wire: sent + received, ...none, error: null };
  };

  /** Before each timed command: no daemon busy, everything on disk, and (cold) an empty page cache. */
  const ready = async () => {
    await ctx.settle(pids());
    if (ctx.cache === 'cold') await ctx.dropCaches();
    else await run('sync', [], { timeoutMs: LONG });
  };

  const newCase = (id: ReplWorkloadId, title: string, changed: number, kind: 'local' | 'ssh'): ReplCase => {
    const c: ReplCase = {
      id, title, changed, checks: [], notes: [], error: null,
      rows: [{ tool: 'replfs', command: replfsCommand(kind), runs: [] }, { tool: 'rsync', command: rsyncCommand(kind), runs: [] }],
    };
    cases.push(c);
    return c;
  };

  /**
   * One repetition: each tool syncs once (the order alternates between repetitions), each
   * after `ready()`, and each destination is then checked against the source (untimed).
   * A failed command is recorded as a failed run, not thrown.
   */
  const pair = async (c: ReplCase, rep: number, v: Vol, dests: Dests, kind: 'local' | 'ssh', check: (dest: string, tool: Tool) => Promise<string | null>) => {
    const order: Tool[] = rep % 2 === 0 ? ['replfs', 'rsync'] : ['rsync', 'replfs'];
    for (const tool of order) {
      if (ctx.stopping()) throw new Error('stopping');
      await ready();
      const dir = tool === 'replfs' ? dests.replfs : dests.rsync;
      const r = tool === 'replfs' ? await replfsSync(v, kind === 'ssh' ? remote(dir) : dir) : await rsyncRun(v, dir, kind);
      if (r.ok) {
        const bad = await check(dir, tool);
        if (bad) {
          r.ok = false;
          r.error = `exit 0, but the copy differs from the source: ${bad}`;
        }
      } else if (tool === 'replfs') {
        const log = daemonLog(v);
        if (log) ctx.warn(`${c.id}: replfs sync failed; the daemon log ends with:\n${log}`);
      }
      c.rows.find((x) => x.tool === tool)!.runs.push(r);
      ctx.progress(`${c.id} ${rep + 1}/${ctx.repeat} ${tool}: ${describeRun(r)}`);
    }
  };

  /** Untimed: brings both copies up to date with the source; throws when either tool fails. */
  const catchUp = async (c: ReplCase, v: Vol, dests: Dests, what: string) => {
    const began = Date.now();
    const a = await replfsSync(v, remote(dests.replfs));
    if (!a.ok) throw new Error(`set-up: replfs sync to bring its replica up to date (${what}) failed: ${a.error}`);
    const b = await rsyncRun(v, dests.rsync, 'ssh');
    if (!b.ok) throw new Error(`set-up: rsync to bring its copy up to date (${what}) failed: ${b.error}`);
    c.notes.push(`set-up (${what}, untimed): replfs sync ${fmtSeconds(a.seconds)} (${fmtBytes(a.payload ?? 0)} of blocks), rsync ${fmtSeconds(b.seconds)} (${fmtBytes(b.wire ?? 0)} on the wire)`);
    ctx.progress(`${c.id}: ${what}: both copies up to date in ${((Date.now() - began) / 1000).toFixed(0)} s (replfs ${fmtSeconds(a.seconds)}, rsync ${fmtSeconds(b.seconds)})`);
  };

  /** Runs one case; an error ends the case (recorded), not the group. */
  const guarded = async (c: ReplCase, body: () => Promise<void>) => {
    try {
      await body();
    } catch (err) {
      if (ctx.stopping()) throw err;
      c.error = firstLines((err as Error).message, 6);
      ctx.warn(`${c.id}: ${c.error}`);
    }
  };

  // ---------------------------------------------------------------- set A: initial copy, small change, rename, huge file

  const pathA = (i: number) => `tree/t${i % 10}/d${Math.floor(i / 10) % 10}/f${String(i).padStart(6, '0')}`;
  const allA = Array.from({ length: sizes.filesA }, (_, i) => pathA(i));
  const bytesA = sizes.filesA * sizes.fileBytesA;
  const labelA = `${fmtCount(sizes.filesA)} files, ${fmtBytes(bytesA)}`;
  let topZero = 'tree/t0';

  const idsA = (['replinit', 'replsmall', 'replrename', 'replhuge'] as const).filter(has);
  let volA: Vol | null = null;
  if (idsA.length) {
    try {
      volA = await volume('src-a');
    } catch (err) {
      if (ctx.stopping()) throw err;
      for (const id of idsA) {
        const c = newCase(id, `${id}: the source volume could not be set up`, 0, id === 'replinit' ? 'local' : 'ssh');
        c.error = `set-up: ${firstLines((err as Error).message, 6)}`;
      }
      ctx.warn(`replication: ${firstLines((err as Error).message, 6)}`);
      clearBase();
    }
  }
  if (volA) {
    const v: Vol = volA;
    try {
      const withSet = has('replinit') || has('replsmall') || has('replrename');
      if (withSet) {
        ctx.progress(`replication: writing ${labelA} of random data through ${v.dir} (not timed)`);
        const began = Date.now();
        await writeFiles(v.dir, allA.map((rel) => ({ rel, size: sizes.fileBytesA })));
        const sec = (Date.now() - began) / 1000;
        settings.push(`replication: writing set A (${labelA}) through the mount took ${sec.toFixed(0)} s (${fmtCount(Math.round(sizes.filesA / sec))} files/s)`);
      }
      // Over ssh, both tools keep one copy each; the last initial copy seeds them.
      let dests: Dests = { replfs: path.join(base, 'dst-a-replfs'), rsync: path.join(base, 'dst-a-rsync') };

      if (has('replinit')) {
        const c = newCase('replinit', `Initial copy: ${labelA}, to a local directory`, bytesA, 'local');
        await guarded(c, async () => {
          for (const rep of reps) {
            const d: Dests = { replfs: path.join(base, `init-replfs-${rep}`), rsync: path.join(base, `init-rsync-${rep}`) };
            await pair(c, rep, v, d, 'local', async (dir) => compareTrees(v.dir, dir, { content: true }));
            if (rep === reps.length - 1 && c.rows.every((r) => r.runs.at(-1)!.ok)) {
              dests = d;
            } else {
              fs.rmSync(d.replfs, { recursive: true, force: true });
              fs.rmSync(d.rsync, { recursive: true, force: true });
            }
          }
        });
        if (dests.replfs.includes('init-') && (has('replsmall') || has('replrename') || has('replhuge'))) c.notes.push('the copies of the last repetition are the starting point of the cases over ssh');
      }

      if (has('replsmall')) {
        const c = newCase('replsmall', `Small change: ${fmtBytes(sizes.smallChange)} over 10 files of the ${labelA}, over ssh`, sizes.smallChange, 'ssh');
        await guarded(c, async () => {
          await catchUp(c, v, dests, 'before the first change');
          const per = sizes.filesA / 10;
          for (const rep of reps) {
            const changed: string[] = [];
            for (let k = 0; k < 10; k++) {
              // One file in each top directory, a different one in every repetition.
              const rel = allA[(k * per + rep * 11 + k) % sizes.filesA]!;
              const len = Math.floor(((k + 1) * sizes.smallChange) / 10) - Math.floor((k * sizes.smallChange) / 10);
              await overwrite(path.join(v.dir, rel), Math.floor((sizes.fileBytesA - len) / 2), len);
              changed.push(rel);
            }
            await pair(c, rep, v, dests, 'ssh', async (dir) => compareFiles(v.dir, dir, changed));
          }
        });
      }

      if (has('replrename')) {
        const movedFiles = allA.filter((p) => p.startsWith('tree/t0/'));
        const c = newCase('replrename', `Directory rename: tree/t0 (${fmtCount(movedFiles.length)} files, ${fmtBytes(movedFiles.length * sizes.fileBytesA)}) renamed, over ssh`, 0, 'ssh');
        await guarded(c, async () => {
          await catchUp(c, v, dests, 'before the first rename');
          for (const rep of reps) {
            const to = `tree/t0-renamed-${rep + 1}`;
            await fsp.rename(path.join(v.dir, topZero), path.join(v.dir, to));
            topZero = to;
            const sample = movedFiles.slice(0, 3).map((p) => p.replace(/^tree\/t0\//, `${to}/`));
            await pair(c, rep, v, dests, 'ssh', async (dir) => (await compareTrees(v.dir, dir, { content: false })) ?? compareFiles(v.dir, dir, sample));
          }
        });
      }

      if (has('replhuge')) {
        const c = newCase('replhuge', `Tiny change: 1 byte in a ${fmtBytes(sizes.hugeBytes)} file, over ssh`, 1, 'ssh');
        await guarded(c, async () => {
          const huge = path.join(v.dir, 'huge.bin');
          ctx.progress(`replhuge: writing ${fmtBytes(sizes.hugeBytes)} of random data to ${huge} (not timed)`);
          const began = Date.now();
          await writeHuge(huge, sizes.hugeBytes);
          const sec = (Date.now() - began) / 1000;
          c.notes.push(`set-up: writing the file through the mount took ${sec.toFixed(0)} s (${(sizes.hugeBytes / 1e6 / sec).toFixed(0)} MB/s)`);
          await catchUp(c, v, dests, 'the new file, synced once');
          for (const tool of ['replfs', 'rsync'] as const) {
            const bad = await compareFiles(v.dir, tool === 'replfs' ? dests.replfs : dests.rsync, ['huge.bin']);
            if (bad) throw new Error(`set-up: after the first sync, ${tool}'s copy differs: ${bad}`);
          }
          for (const rep of reps) {
            const at = Math.min(sizes.hugeBytes - 1, Math.floor((sizes.hugeBytes * (rep + 0.5)) / ctx.repeat) + 12_345);
            await flipByte(huge, at);
            const lo = Math.max(0, at - 64 * KiB);
            await pair(c, rep, v, dests, 'ssh', async (dir) => compareFiles(v.dir, dir, ['huge.bin'], { offset: lo, length: 128 * KiB }));
          }
        });
      }
      if (has('replsmall') || has('replrename') || has('replhuge')) {
        settings.push(`replication: the ssh cases share one source volume and one copy per tool; the cases run in the order small change, rename, huge file`);
      }
    } finally {
      // After a signal, the run's cleanup unmounts and removes everything.
      if (!ctx.stopping()) {
        await unmount(v);
        clearBase();
      }
    }
  }

  // ---------------------------------------------------------------- set B: few changes in a large tree

  if (has('repltree')) {
    const labelB = `${fmtCount(sizes.filesB)}-file tree (${fmtBytes(sizes.fileBytesB)} each, 100 directories)`;
    const c = newCase('repltree', `Few changes in a large tree: 10 files of a ${labelB} rewritten, over ssh`, 10 * sizes.fileBytesB, 'ssh');
    let v: Vol | null = null;
    await guarded(c, async () => {
      v = await volume('src-b');
      const vol: Vol = v;
      const pathB = (i: number) => `tree/d${String(i % 100).padStart(2, '0')}/f${String(i).padStart(6, '0')}`;
      ctx.progress(`repltree: writing the ${labelB} through ${vol.dir} (not timed)`);
      const began = Date.now();
      await writeFiles(vol.dir, Array.from({ length: sizes.filesB }, (_, i) => ({ rel: pathB(i), size: sizes.fileBytesB })));
      const sec = (Date.now() - began) / 1000;
      c.notes.push(`set-up: writing the tree through the mount took ${sec.toFixed(0)} s (${fmtCount(Math.round(sizes.filesB / sec))} files/s)`);
      const dests: Dests = { replfs: path.join(base, 'dst-b-replfs'), rsync: path.join(base, 'dst-b-rsync') };
      await catchUp(c, vol, dests, 'initial copy of the tree');
      for (const tool of ['replfs', 'rsync'] as const) {
        const bad = await compareTrees(vol.dir, tool === 'replfs' ? dests.replfs : dests.rsync, { content: false });
        if (bad) throw new Error(`set-up: after the initial copy, ${tool}'s copy differs: ${bad}`);
      }
      const per = sizes.filesB / 10;
      for (const rep of reps) {
        const changed: string[] = [];
        for (let k = 0; k < 10; k++) {
          const rel = pathB((k * per + rep * 101 + k * 7) % sizes.filesB);
          await overwrite(path.join(vol.dir, rel), 0, sizes.fileBytesB);
          changed.push(rel);
        }
        await pair(c, rep, vol, dests, 'ssh', async (dir) => compareFiles(vol.dir, dir, changed));
      }
      // The same with the replica mounted read-only in place, as the design has it: its
      // daemon holds the replica open, so a sync does not open it (nor scan its tree).
      const row: ReplRow = { tool: 'replfs-mounted', command: `${replfsCommand('ssh')}, <dir> mounted first: replfs mount --read-only <dir>`, runs: [] };
      c.rows.push(row);
      const m = await run(process.execPath, [BIN, 'mount', '--read-only', dests.replfs], { env: vol.t.env, timeoutMs: LONG });
      if (m.code !== 0) throw new Error(`set-up: replfs mount --read-only ${dests.replfs} failed: ${firstLines(m.stderr + m.stdout)}`);
      try {
        for (const rep of reps) {
          const changed: string[] = [];
          for (let k = 0; k < 10; k++) {
            const rel = pathB((k * per + rep * 211 + k * 13 + 5) % sizes.filesB);
            await overwrite(path.join(vol.dir, rel), 0, sizes.fileBytesB);
            changed.push(rel);
          }
          await ready();
          const r = await replfsSync(vol, remote(dests.replfs));
          if (r.ok) {
            const bad = await compareFiles(vol.dir, dests.replfs, changed);
            if (bad) { r.ok = false; r.error = `exit 0, but the copy differs from the source: ${bad}`; }
          }
          row.runs.push(r);
          ctx.progress(`repltree ${rep + 1}/${ctx.repeat} replfs, replica mounted: ${describeRun(r)}`);
        }
      } finally {
        await run(process.execPath, [BIN, 'unmount', dests.replfs], { env: vol.t.env, timeoutMs: LONG });
      }
    });
    if (!ctx.stopping()) {
      if (v) await unmount(v);
      clearBase();
    }
  }

  for (const c of cases) evaluateCase(c, sizes);
  return { settings, cases };
}

interface Dests { replfs: string; rsync: string }

function describeRun(r: ToolRun): string {
  if (!r.ok) return `FAILED after ${fmtSeconds(r.seconds)}: ${r.error}`;
  const wire = r.wire !== null ? `${fmtBytes(r.wire)} on the wire` : `${fmtBytes(r.payload ?? 0)} of blocks (no bytesOnWire)`;
  const extra = r.reported !== null ? `; daemon ${fmtSeconds(r.reported)}, ${r.files} files, ${r.blocksSent} blocks sent, ${r.blocksSkipped} already there` : '';
  return `${fmtSeconds(r.seconds)}, ${wire}${extra}`;
}

// ------------------------------------------------------------------ data

/** Writes files of fresh random data (no two alike), four at a time, creating their directories. */
async function writeFiles(root: string, files: Array<{ rel: string; size: number }>): Promise<void> {
  for (const d of [...new Set(files.map((f) => path.dirname(f.rel)))].sort()) await fsp.mkdir(path.join(root, d), { recursive: true });
  let next = 0;
  const worker = async () => {
    let buf = Buffer.alloc(0);
    while (next < files.length) {
      const f = files[next++]!;
      if (buf.length < f.size) buf = Buffer.allocUnsafe(f.size);
      randomFillSync(buf, 0, f.size);
      await fsp.writeFile(path.join(root, f.rel), buf.subarray(0, f.size));
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
}

/** A file of fresh random data written in 1 MiB calls, then fsynced: real data, not a sparse file. */
async function writeHuge(file: string, bytes: number): Promise<void> {
  const fh = await fsp.open(file, 'w');
  try {
    const buf = Buffer.allocUnsafe(MiB);
    for (let pos = 0; pos < bytes;) {
      const len = Math.min(MiB, bytes - pos);
      randomFillSync(buf, 0, len);
      const { bytesWritten } = await fh.write(buf, 0, len, pos);
      pos += bytesWritten;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Overwrites `length` bytes at `offset` with fresh random data, in place. */
async function overwrite(file: string, offset: number, length: number): Promise<void> {
  const fh = await fsp.open(file, 'r+');
  try {
    const buf = randomFillSync(Buffer.allocUnsafe(length));
    for (let done = 0; done < length;) done += (await fh.write(buf, done, length - done, offset + done)).bytesWritten;
  } finally {
    await fh.close();
  }
}

/** Changes one byte (to its complement) in place. */
async function flipByte(file: string, at: number): Promise<void> {
  const fh = await fsp.open(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    if ((await fh.read(b, 0, 1, at)).bytesRead !== 1) throw new Error(`cannot read byte ${at} of ${file}`);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, at);
  } finally {
    await fh.close();
  }
}

// ------------------------------------------------------------------ checking a copy

type Entry = string;

/** Every name under `root` with its type and size (`.replfs` at the top left out: the replica's own state). */
async function listTree(root: string): Promise<Map<string, Entry>> {
  const out = new Map<string, Entry>();
  const walk = async (rel: string) => {
    for (const d of await fsp.readdir(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (!rel && (d.name === '.replfs' || d.name === '.snapshots')) continue;
      if (d.isDirectory()) {
        out.set(r, 'dir');
        await walk(r);
      } else if (d.isFile()) {
        out.set(r, `file ${(await fsp.lstat(path.join(root, r))).size}`);
      } else {
        out.set(r, d.isSymbolicLink() ? 'symlink' : 'other');
      }
    }
  };
  await walk('');
  return out;
}

/** Null when `copy` holds the same names, types and sizes as `src` (and, with content, the same bytes); else the first difference. */
async function compareTrees(src: string, copy: string, opts: { content: boolean }): Promise<string | null> {
  const [a, b] = await Promise.all([listTree(src), listTree(copy)]);
  for (const [k, v] of a) {
    if (!b.has(k)) return `${k} is missing`;
    if (b.get(k) !== v) return `${k}: ${b.get(k)} in the copy, ${v} in the source`;
  }
  for (const k of b.keys()) if (!a.has(k)) return `${k} is in the copy only`;
  if (opts.content) return compareFiles(src, copy, [...a].filter(([, v]) => v.startsWith('file')).map(([k]) => k));
  return null;
}

/** Null when each file (or the given range of each) has the same size and bytes in both trees. */
async function compareFiles(src: string, copy: string, rels: string[], range?: { offset: number; length: number }): Promise<string | null> {
  const CHUNK = 4 * MiB;
  const a = Buffer.allocUnsafe(CHUNK);
  const b = Buffer.allocUnsafe(CHUNK);
  for (const rel of rels) {
    let fa: fsp.FileHandle | null = null;
    let fb: fsp.FileHandle | null = null;
    try {
      fa = await fsp.open(path.join(src, rel), 'r');
      try {
        fb = await fsp.open(path.join(copy, rel), 'r');
      } catch {
        return `${rel} is missing`;
      }
      const [sa, sb] = [(await fa.stat()).size, (await fb.stat()).size];
      if (sa !== sb) return `${rel} has ${sb} bytes, not ${sa}`;
      const start = range ? Math.min(range.offset, sa) : 0;
      const end = range ? Math.min(sa, range.offset + range.length) : sa;
      for (let pos = start; pos < end;) {
        const len = Math.min(CHUNK, end - pos);
        const [ra, rb] = await Promise.all([fa.read(a, 0, len, pos), fb.read(b, 0, len, pos)]);
        if (ra.bytesRead !== len || rb.bytesRead !== len) return `${rel}: short read at ${pos}`;
        if (!a.subarray(0, len).equals(b.subarray(0, len))) return `${rel} differs in bytes ${pos}..${pos + len}`;
        pos += len;
      }
    } finally {
      await fa?.close();
      await fb?.close();
    }
  }
  return null;
}

// ------------------------------------------------------------------ targets

const ok = (r: ReplRow | undefined) => r?.runs.filter((x) => x.ok) ?? [];
const med = (xs: number[]) => (xs.length ? median(xs) : null);

/** The median bytes on the wire of replfs, and whether it is only the block payload (no bytesOnWire in the summary). */
function replfsWire(runs: ToolRun[]): { bytes: number | null; payloadOnly: boolean } {
  if (!runs.length) return { bytes: null, payloadOnly: false };
  if (runs.every((r) => r.wire !== null)) return { bytes: median(runs.map((r) => r.wire!)), payloadOnly: false };
  return { bytes: median(runs.map((r) => r.payload!)), payloadOnly: true };
}

/** The targets, judged on medians. Speed ratios are rsync's time / replfs's time: higher is better for replfs. */
function evaluateCase(c: ReplCase, sizes: ReplSizes): void {
  const mine = ok(c.rows.find((r) => r.tool === 'replfs'));
  const theirs = ok(c.rows.find((r) => r.tool === 'rsync'));
  const tMine = med(mine.map((r) => r.seconds));
  const tTheirs = med(theirs.map((r) => r.seconds));
  const failed = c.error !== null || mine.length === 0;
  const verdictFor = (pass: boolean | null): ReplCheck['verdict'] => (pass === null ? (failed ? 'FAILED' : 'n/a') : pass ? 'PASS' : 'MISS');
  const speed = (min: number | null) => {
    const ratio = tMine !== null && tTheirs !== null ? tTheirs / tMine : null;
    c.checks.push({
      what: 'speed: rsync time / replfs time',
      value: ratio === null ? 'n/a' : `${ratio >= 100 ? Math.round(ratio) : ratio.toFixed(2)}x`,
      target: min === null ? 'report only' : `>= ${min.toFixed(2)}x`,
      verdict: min === null ? (ratio === null && failed ? 'FAILED' : 'report') : verdictFor(ratio === null ? null : ratio >= min),
    });
  };
  const time = (max: number) => c.checks.push({
    what: 'replfs sync wall time',
    value: tMine === null ? 'n/a' : fmtSeconds(tMine),
    target: `< ${max} s`,
    verdict: verdictFor(tMine === null ? null : tMine < max),
  });
  const wire = (max: number, target: string) => {
    const w = replfsWire(mine);
    c.checks.push({
      what: `replfs bytes on the wire${w.payloadOnly ? ' (block payload only: no bytesOnWire)' : ''}`,
      value: w.bytes === null ? 'n/a' : fmtBytes(w.bytes),
      target,
      verdict: verdictFor(w.bytes === null ? null : w.bytes <= max),
    });
  };
  switch (c.id) {
    case 'replinit':
      speed(1);
      break;
    case 'replsmall': {
      speed(5);
      const constant = 64 * KiB;
      wire(1.2 * sizes.smallChange + constant, `<= ${fmtBytes(1.2 * sizes.smallChange + constant)} (1.2 x changed + 64 KiB)`);
      break;
    }
    case 'repltree': {
      speed(null);
      time(1);
      const mounted = ok(c.rows.find((r) => r.tool === 'replfs-mounted'));
      const t = med(mounted.map((r) => r.seconds));
      if (c.rows.some((r) => r.tool === 'replfs-mounted')) {
        c.checks.push({
          what: 'replfs sync wall time, replica mounted', value: t === null ? 'n/a' : fmtSeconds(t), target: '< 1 s',
          verdict: t === null ? 'FAILED' : t < 1 ? 'PASS' : 'MISS',
        });
      }
      break;
    }
    case 'replrename':
      speed(null);
      wire(MiB - 1, '< 1 MiB');
      break;
    case 'replhuge':
      speed(null);
      time(1);
      wire(200 * KiB - 1, '< 200 KiB');
      break;
  }
}

// ------------------------------------------------------------------ tables

export function replicationTables(report: ReplReport): string[] {
  const out: string[] = [];
  for (const c of report.cases) {
    out.push('', `Replication: ${c.title}; changed before each sync: ${c.id === 'replrename' ? 'a rename, no data' : fmtBytes(c.changed)}`, '');
    const rows = c.rows.map((r) => {
      const good = r.runs.filter((x) => x.ok);
      const n = `${good.length}/${r.runs.length}`;
      if (!good.length) return [r.tool, r.runs.length ? 'FAILED' : 'not run', '', '', '', n];
      const secs = good.map((x) => x.seconds);
      const wall = good.length > 1 ? `${fmtSeconds(median(secs))} (${fmtSeconds(Math.min(...secs)).replace(/ s$/, '')}-${fmtSeconds(Math.max(...secs)).replace(/ s$/, '')})` : fmtSeconds(secs[0]!);
      let wire: string;
      let payload = '-';
      let reported = '-';
      if (r.tool !== 'rsync') {
        const w = replfsWire(good);
        wire = w.bytes === null ? 'n/a' : `${fmtBytes(w.bytes)}${w.payloadOnly ? ' (block payload only)' : ''}`;
        payload = fmtBytes(median(good.map((x) => x.payload!)));
        const rep = good.filter((x) => x.reported !== null).map((x) => x.reported!);
        if (rep.length) reported = fmtSeconds(median(rep));
      } else {
        wire = fmtBytes(median(good.map((x) => x.wire!)));
      }
      return [r.tool, wall, reported, wire, payload, n];
    });
    out.push(table(['tool', 'wall time, median (min-max)', 'replfs durationMs', 'bytes on the wire', 'block payload', 'ok runs'], rows,
      [false, true, true, true, true, true]));
    out.push('');
    out.push(table(['check', 'value', 'target', 'result'], c.checks.map((k) => [k.what, k.value, k.target, k.verdict]), [false, true, false, false]));
    for (const r of c.rows) out.push(`  ${r.tool}: ${r.command}`);
    if (c.error) out.push(`  CASE FAILED: ${c.error}`);
    for (const r of c.rows) {
      const bad = r.runs.filter((x) => !x.ok);
      if (bad.length) out.push(`  ${r.tool} failed in ${bad.length} of ${r.runs.length} runs; first error: ${bad[0]!.error}`);
    }
    for (const n of c.notes) out.push(`  ${n}`);
  }
  return out;
}
