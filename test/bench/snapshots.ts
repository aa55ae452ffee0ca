// The snapshot group of `npm run bench`: what taking, keeping, reading and listing
// copy-on-write snapshots costs. Each part runs on replfs volumes of its own (mounted
// next to the four main configurations, unmounted by the same cleanup), so the volume
// sizes in the table are exactly what the volumes hold. docs/performance.md ("Snapshots")
// describes the method.
//
//   snapcreate  the cut of a snapshot at two volume sizes; CLI round trips; `cp -al`
//   cow         sequential overwrite of a file a snapshot sees, against one it does not
//   snapread    reading a file from a snapshot (overwritten since, or unchanged) against live
//   snapspace   block-store growth for a 1 MiB change under a snapshot
//   snaplist    `ls .snapshots` with many snapshots; `ls -f` of a big directory in a snapshot
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { call } from '../../src/control/client.js';
import { cpuOf, ioOf, must, sleep } from './proc.js';
import { BIN, down, makeTarget, up, type ConfigName, type Target } from './targets.js';
import { formatNumber, median, table } from './report.js';

export const SNAPSHOT_WORKLOAD_IDS = ['snapcreate', 'cow', 'snapread', 'snapspace', 'snaplist'] as const;
export type SnapWorkloadId = (typeof SNAPSHOT_WORKLOAD_IDS)[number];

export interface Outcome { value: number; seconds: number }

export interface SnapContext {
  scratch: string;
  sizeMb: number;
  files: number;
  dirs: number;
  repeat: number;
  /** Snapshots on the volume for the listing test. */
  snapshots: number;
  workloads: SnapWorkloadId[];
  configs: ConfigName[];
  /** The compiled small-file writer. */
  smallfiles: string;
  /** Script doing copy-on-write's least I/O on the direct disk (cowfloor.ts). */
  cowfloor: string;
  progress(line: string): void;
  warn(line: string): void;
  /** Hands a target to the run's cleanup, which unmounts it whatever happens. */
  adopt(t: Target): void;
  /** Waits until none of these daemons uses CPU. */
  settle(pids: number[]): Promise<void>;
  /** sync, then drop the page cache. */
  dropCaches(): Promise<void>;
  /** One fio pass with 1 MiB calls; a write ends with fsync. An existing file is overwritten in place. */
  sequential(file: string, rw: 'write' | 'read', mb: number): Promise<Outcome>;
}

export interface SnapRow {
  key: string;
  id: SnapWorkloadId;
  label: string;
  unit: string;
  values: number[];
}

export interface SnapCheck {
  id: SnapWorkloadId;
  what: string;
  value: string;
  target: string;
  verdict: 'PASS' | 'MISS' | 'report' | 'n/a';
}

export interface SnapReport {
  rows: SnapRow[];
  checks: SnapCheck[];
  notes: string[];
}

const MiB = 2 ** 20;
const LONG = 60 * 60_000;

interface Vol {
  t: Target;
  mnt: string;
  pid: number;
  socket: string;
}

interface SnapshotRecord { name: string; epoch: number; nextFid: number }
interface Listing { snapshots: Array<SnapshotRecord & { uniqueBytes: number }>; latest: string | null }

const fmtSize = (bytes: number) => {
  const mib = bytes / MiB;
  return `${Number.isInteger(mib) ? mib : mib.toFixed(1)} MiB`;
};
const fmtCount = (n: number) => n.toLocaleString('en-US');
const ms = (seconds: number) => seconds * 1000;

export async function snapshotGroup(ctx: SnapContext): Promise<SnapReport> {
  const rows = new Map<string, SnapRow>();
  const notes: string[] = [];
  const add = (id: SnapWorkloadId, key: string, label: string, unit: string, value: number) => {
    let r = rows.get(key);
    if (!r) rows.set(key, r = { key, id, label, unit, values: [] });
    r.values.push(value);
    const shown = unit === 'ms' ? value.toFixed(1) : formatNumber(value);
    ctx.progress(`${id}: ${label}: ${shown} ${unit}`);
  };
  const has = (w: SnapWorkloadId) => ctx.workloads.includes(w);
  const withDirect = ctx.configs.includes('direct');
  const directBase = path.join(ctx.scratch, 'snap-direct');
  if (withDirect) fs.mkdirSync(directBase, { recursive: true });
  const reps = Array.from({ length: ctx.repeat }, (_, i) => i);

  // ---------------------------------------------------------------- helpers

  const volume = async (dirName: string): Promise<Vol> => {
    const t = makeTarget('replfs', ctx.scratch, dirName);
    ctx.adopt(t);
    await up(t);
    const mnt = t.mountpoint!;
    const socket = socketOf(path.join(ctx.scratch, 'run'), mnt);
    ctx.progress(`snapshots: mounted ${t.backing} at ${mnt} (pid ${t.pid})`);
    return { t, mnt, pid: t.pid!, socket };
  };
  const unmount = async (v: Vol) => {
    const began = Date.now();
    await down(v.t, ctx.warn);
    ctx.progress(`snapshots: unmounted ${v.mnt} in ${((Date.now() - began) / 1000).toFixed(1)} s`);
  };
  /** The daemon's own time for a snapshot: the control-socket round trip, no CLI start-up. */
  const cut = async (v: Vol): Promise<{ rec: SnapshotRecord; seconds: number }> => {
    const began = process.hrtime.bigint();
    const res = await call<{ snapshot: SnapshotRecord }>(v.socket, 'snapshot', {}, 600_000);
    return { rec: res.snapshot, seconds: Number(process.hrtime.bigint() - began) / 1e9 };
  };
  const ping = async (v: Vol): Promise<number> => {
    const began = process.hrtime.bigint();
    await call(v.socket, 'ping', {}, 60_000);
    return Number(process.hrtime.bigint() - began) / 1e9;
  };
  const remove = (v: Vol, name: string) => call(v.socket, 'snapshot-delete', { name }, 600_000);
  const listing = (v: Vol) => call<Listing>(v.socket, 'snapshots', {}, 600_000);
  /** Before a measurement: no daemon busy, nothing dirty; `cold` also drops the page cache. */
  const ready = async (v: Vol, cold: boolean) => {
    await ctx.settle([v.pid]);
    if (cold) await ctx.dropCaches();
    else await must('sync', []);
  };
  const fill = async (dir: string, count: number, dirs: number, bytes: number): Promise<number> => {
    const r = await must(process.execPath, [ctx.smallfiles, dir, String(count), String(dirs), String(bytes)], { timeoutMs: LONG });
    return (JSON.parse(r.stdout) as { seconds: number }).seconds;
  };
  const countFiles = (dir: string) => fs.readdirSync(dir).reduce((n, d) => n + fs.readdirSync(path.join(dir, d)).length, 0);
  const du = async (p: string): Promise<number> => {
    if (!fs.existsSync(p)) return 0;
    return Number((await must('du', ['-sb', p])).stdout.split('\t')[0]);
  };
  const lines = (out: string) => (out === '' ? 0 : out.trimEnd().split('\n').length);
  /** What the daemon did while `body` ran: CPU seconds (all threads) and bytes from and to storage. */
  const usage = async <T>(v: Vol, body: () => Promise<T>) => {
    const [c0, i0] = [await cpuOf(v.pid), await ioOf(v.pid)];
    const out = await body();
    const [c1, i1] = [await cpuOf(v.pid), await ioOf(v.pid)];
    return {
      out,
      cpu: c0 && c1 ? c1.total - c0.total : null,
      mainCpu: c0 && c1 ? c1.main - c0.main : null,
      read: i0 && i1 ? i1.readBytes - i0.readBytes : null,
      written: i0 && i1 ? i1.writeBytes - i0.writeBytes : null,
    };
  };
  type Usage = { cpu: number | null; mainCpu: number | null; read: number | null; written: number | null };
  /** Indented rows under a throughput row: the daemon's CPU and disk traffic during it. */
  const addUsage = (id: SnapWorkloadId, key: string, u: Usage, seconds: number, what: Array<'read' | 'written'>) => {
    if (u.cpu !== null) add(id, `${key}-cpu`, '  daemon CPU during it (all threads; 100% = one core)', '%', (100 * u.cpu) / seconds);
    if (u.mainCpu !== null) add(id, `${key}-js`, '  daemon CPU during it, JS thread only', '%', (100 * u.mainCpu) / seconds);
    for (const w of what) {
      const v = u[w];
      if (v !== null) add(id, `${key}-${w}`, `  daemon's disk ${w === 'read' ? 'reads' : 'writes'} during it (/proc/<pid>/io)`, 'MiB', v / MiB);
    }
  };

  // ---------------------------------------------------------------- snapcreate

  const sizes = [
    { key: 'small', files: ctx.files, bytes: Math.floor((ctx.sizeMb * MiB) / 10) },
    { key: 'large', files: ctx.files * 10, bytes: ctx.sizeMb * MiB },
  ].map((s) => {
    const perFile = Math.floor(s.bytes / s.files);
    return { ...s, perFile, label: `${fmtCount(s.files)} files / ${fmtSize(perFile * s.files)}` };
  });
  let large: Vol | null = null;
  let largeLabel = '';

  if (has('snapcreate')) {
    for (const size of sizes) {
      const v = await volume(`snap-${size.key}`);
      ctx.progress(`snapcreate: writing ${size.label} (${size.perFile} bytes each, ${ctx.dirs} dirs) through ${v.mnt} (not timed)`);
      const fillSec = await fill(path.join(v.mnt, 'tree'), size.files, ctx.dirs, size.perFile);
      const onDisk = countFiles(path.join(v.t.backing, 'tree'));
      if (onDisk !== size.files) throw new Error(`snapcreate: ${onDisk} of ${size.files} files reached ${v.t.backing}/tree`);
      notes.push(`snapcreate: filling ${size.label} through the mount took ${fillSec.toFixed(0)} s (${fmtCount(Math.round(size.files / fillSec))} files/s)`);
      const directTree = path.join(directBase, `tree-${size.key}`);
      if (withDirect) await fill(directTree, size.files, ctx.dirs, size.perFile);

      // The first snapshot after the volume was filled: everything written so far is in
      // the epoch that this cut closes.
      // The write barrier is up during a cut: a write issued meanwhile waits for it.
      await ready(v, false);
      const oneFile = path.join(v.mnt, 'tree', 'd000', 'f00000');
      const change = randomBytes(4096);
      const firstCut = usage(v, () => cut(v));
      await sleep(200);
      const wrote = process.hrtime.bigint();
      const fh = await fsp.open(oneFile, 'r+');
      try { await fh.write(change, 0, change.length, 0); } finally { await fh.close(); }
      const waited = Number(process.hrtime.bigint() - wrote) / 1e9;
      const first = await firstCut;
      add('snapcreate', `cut-first-${size.key}`, `first cut after filling, ${size.label}`, 'ms', ms(first.out.seconds));
      if (first.cpu !== null) add('snapcreate', `cut-first-cpu-${size.key}`, '  daemon CPU time during it (all threads)', 'ms', ms(first.cpu));
      if (first.mainCpu !== null) add('snapcreate', `cut-first-js-${size.key}`, '  daemon CPU time during it, JS thread only', 'ms', ms(first.mainCpu));
      add('snapcreate', `cut-first-write-${size.key}`, '  a 4 KiB write to the volume issued 200 ms into it took', 'ms', ms(waited));

      for (const rep of reps) {
        // Five cuts per repetition (one sample is at the mercy of the scheduler), each
        // after a small change, so the cut has a journal to close and a block to keep.
        for (let k = 0; k < 5; k++) {
          const fd = fs.openSync(oneFile, 'r+');
          try { fs.writeSync(fd, change, 0, change.length, 0); } finally { fs.closeSync(fd); }
          await ready(v, false);
          add('snapcreate', `cut-${size.key}`, `cut (control socket) after a 4 KiB change, ${size.label}`, 'ms', ms((await cut(v)).seconds));
          await ready(v, false);
          add('snapcreate', `ping-${size.key}`, `ping (control socket), ${size.label}`, 'ms', ms(await ping(v)));
        }
        // Whole CLI processes, wall clock. Node's start-up (about 0.3 s) varies more than
        // the cut takes, so three interleaved samples of each per repetition.
        for (let k = 0; k < 3; k++) {
          await ready(v, false);
          add('snapcreate', `cli-version-${size.key}`, `CLI \`replfs --version\` (process start only), ${size.label}`, 'ms',
            ms((await must(process.execPath, [BIN, '--version'], { env: v.t.env })).seconds));
          await ready(v, false);
          add('snapcreate', `cli-status-${size.key}`, `CLI \`replfs status --json\`, ${size.label}`, 'ms',
            ms((await must(process.execPath, [BIN, 'status', '--json', v.mnt], { env: v.t.env, timeoutMs: 600_000 })).seconds));
          await ready(v, false);
          add('snapcreate', `cli-snapshot-${size.key}`, `CLI \`replfs snapshot\`, ${size.label}`, 'ms',
            ms((await must(process.execPath, [BIN, 'snapshot', v.mnt], { env: v.t.env, timeoutMs: 600_000 })).seconds));
        }
        if (withDirect) {
          const copy = path.join(directBase, `tree-${size.key}-cp${rep}`);
          await ctx.settle([v.pid]);
          await must('sync', []);
          add('snapcreate', `cpal-${size.key}`, `\`cp -al\` of the tree on the direct disk, ${size.label}`, 'ms',
            ms((await must('cp', ['-al', directTree, copy], { timeoutMs: LONG })).seconds));
          fs.rmSync(copy, { recursive: true, force: true });
        }
      }
      if (size.key === 'large') {
        large = v;
        largeLabel = size.label;
      } else {
        await unmount(v);
      }
      if (withDirect) fs.rmSync(directTree, { recursive: true, force: true });
    }
  }

  // ---------------------------------------------------------------- cow, snapread, snapspace

  if (has('cow') || has('snapread') || has('snapspace')) {
    const v = await volume('snap-cow');
    const blocksDir = path.join(v.t.backing, '.replfs', 'blocks');
    const dbDir = path.join(v.t.backing, '.replfs', 'db');
    const mb = ctx.sizeMb;
    const sizeLabel = `${fmtSize(mb * MiB)} file`;
    for (const rep of reps) {
      const name = `cow-${rep}.bin`;
      const file = path.join(v.mnt, name);
      const taken: string[] = [];
      ctx.progress(`cow ${rep + 1}/${ctx.repeat}: writing ${file} (not timed)`);
      await ctx.sequential(file, 'write', mb);

      if (has('cow')) {
        // No snapshot sees the file: it was made after the newest one.
        await ready(v, true);
        const before = await du(blocksDir);
        const u = await usage(v, () => ctx.sequential(file, 'write', mb));
        add('cow', 'cow-base', `overwrite ${sizeLabel} + fsync, no snapshot sees it`, 'MB/s', u.out.value);
        addUsage('cow', 'cow-base', u, u.out.seconds, ['read', 'written']);
        const grew = (await du(blocksDir)) - before;
        if (grew !== 0) ctx.warn(`cow: the block store grew by ${grew} bytes during an overwrite no snapshot sees`);
      }
      if (has('cow') && withDirect) {
        // The same overwrite on the direct disk, plain and with the least copy-on-write I/O.
        const direct = path.join(directBase, name);
        const keep = path.join(directBase, `${name}.kept`);
        await ctx.sequential(direct, 'write', mb);
        await ready(v, true);
        add('cow', 'cow-direct', `overwrite ${sizeLabel} + fsync, direct disk`, 'MB/s', (await ctx.sequential(direct, 'write', mb)).value);
        await ready(v, true);
        const r = await must(process.execPath, [ctx.cowfloor, direct, keep, String(mb)], { timeoutMs: LONG });
        const seconds = (JSON.parse(r.stdout) as { seconds: number }).seconds;
        add('cow', 'cow-floor', `  same, keeping the old data (read, append elsewhere, overwrite; fsync both), direct disk`, 'MB/s', (mb * MiB) / 1e6 / seconds);
        fs.rmSync(direct, { force: true });
        fs.rmSync(keep, { force: true });
      }
      let a: SnapshotRecord | null = null;
      if (has('cow') || has('snapread')) {
        await ready(v, false);
        a = (await cut(v)).rec;
        taken.push(a.name);
        await ready(v, true);
        const before = await du(blocksDir);
        const u = await usage(v, () => ctx.sequential(file, 'write', mb));
        await ctx.settle([v.pid]);
        const grew = (await du(blocksDir)) - before;
        if (has('cow')) {
          add('cow', 'cow-snap', `overwrite ${sizeLabel} + fsync, right after a snapshot`, 'MB/s', u.out.value);
          addUsage('cow', 'cow-snap', u, u.out.seconds, ['read', 'written']);
          add('cow', 'cow-grew', '  block store growth (du -sb blocks/)', 'MiB', grew / MiB);
        }
        if (grew < 0.95 * mb * MiB) ctx.warn(`cow: the overwrite after a snapshot preserved only ${(grew / MiB).toFixed(1)} of ${mb} MiB`);
      }
      let b: SnapshotRecord | null = null;
      if (has('snapread') || has('snapspace')) {
        await ready(v, false);
        b = (await cut(v)).rec;
        taken.push(b.name);
      }
      if (has('snapread')) {
        // Rotating order, caches dropped before each read.
        const reads: Array<[string, string, string]> = [
          ['read-live', `read ${sizeLabel}, live`, file],
          ['read-over', `read ${sizeLabel} from a snapshot, overwritten since (all from the block store)`, path.join(v.mnt, '.snapshots', a!.name, name)],
          ['read-same', `read ${sizeLabel} from a snapshot, unchanged since (all from the live file)`, path.join(v.mnt, '.snapshots', b!.name, name)],
        ];
        for (let i = 0; i < reads.length; i++) {
          const [key, label, f] = reads[(i + rep) % reads.length]!;
          await ready(v, true);
          const u = await usage(v, () => ctx.sequential(f, 'read', mb));
          add('snapread', key, label, 'MB/s', u.out.value);
          addUsage('snapread', key, u, u.out.seconds, ['read']);
        }
      }
      if (has('snapspace')) {
        // Snapshot b sees the file. Change 1 MiB at an offset that is not block-aligned
        // (a contiguous 1 MiB change then spans 17 blocks of 64 KiB), take snapshot c.
        await ready(v, false);
        const blocks0 = await du(blocksDir);
        const db0 = await du(dbDir);
        const off = Math.max(0, Math.min(mb * MiB - MiB, Math.floor((mb * MiB) / 2) + 4096));
        const fd = fs.openSync(file, 'r+');
        try {
          fs.writeSync(fd, randomBytes(MiB), 0, MiB, off);
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
        const c = (await cut(v)).rec;
        taken.push(c.name);
        await ctx.settle([v.pid]);
        const blocks1 = await du(blocksDir);
        const db1 = await du(dbDir);
        add('snapspace', 'space-blocks', `block store growth (du -sb blocks/), 1 MiB changed in a ${sizeLabel}, snapshot after`, 'MiB', (blocks1 - blocks0) / MiB);
        add('snapspace', 'space-db', '  LevelDB growth meanwhile (du -sb db/; compaction makes it noisy)', 'MiB', (db1 - db0) / MiB);
        const held = (await listing(v)).snapshots.find((s) => s.name === b!.name)?.uniqueBytes;
        if (held !== undefined) add('snapspace', 'space-held', '  what `replfs snapshots` says the older snapshot alone holds', 'MiB', held / MiB);
      }
      // Not timed: free the space for the next repetition.
      const began = Date.now();
      for (const n of taken) await remove(v, n);
      fs.rmSync(file, { force: true });
      ctx.progress(`cow ${rep + 1}/${ctx.repeat}: deleted ${taken.length} snapshots and the file in ${((Date.now() - began) / 1000).toFixed(1)} s`);
    }
    await unmount(v);
  }

  // ---------------------------------------------------------------- snaplist

  if (has('snaplist')) {
    const v = large ?? await volume('snap-list');
    const entries = ctx.files * 10;
    const flatLabel = `${fmtCount(entries)}-entry directory`;
    ctx.progress(`snaplist: creating ${flatLabel} of empty files through ${v.mnt} (not timed)`);
    const flatSec = await fill(path.join(v.mnt, 'flat'), entries, 1, 0);
    notes.push(`snaplist: creating the ${flatLabel} of empty files through the mount took ${flatSec.toFixed(0)} s (${fmtCount(Math.round(entries / flatSec))} files/s)`);
    const directFlat = path.join(directBase, 'flat');
    if (withDirect) await fill(directFlat, entries, 1, 0);

    const have = (await listing(v)).snapshots.length;
    const want = Math.max(ctx.snapshots, have + 1);
    ctx.progress(`snaplist: taking ${want - have} snapshots (${have} already there${large ? `; the volume also holds ${largeLabel}` : ''})`);
    const cuts: number[] = [];
    for (let i = have; i < want; i++) {
      const { seconds } = await cut(v);
      if (i === have) add('snaplist', 'cut-after-flat', `first cut after creating the ${flatLabel}`, 'ms', ms(seconds));
      else cuts.push(ms(seconds));
    }
    const early = cuts.slice(0, 10);
    const late = cuts.slice(-10);
    for (const x of early) add('snaplist', 'cut-few', `cut with ${have + 1}-${have + early.length} snapshots present`, 'ms', x);
    for (const x of late) add('snaplist', 'cut-many', `cut with ${want - late.length}-${want - 1} snapshots present`, 'ms', x);

    const latest = (await listing(v)).latest!;
    const snapdir = path.join(v.mnt, '.snapshots');
    // Controls for `ls .snapshots`: the same number of names on the direct disk (what the
    // ls process itself costs), and one readdir of .snapshots from this process (what the
    // mount costs, without any process start).
    const sameSize = path.join(ctx.scratch, 'snap-lsdir');
    fs.mkdirSync(sameSize, { recursive: true });
    for (let i = 0; i <= want; i++) fs.mkdirSync(path.join(sameSize, `d${String(i).padStart(4, '0')}`));
    for (const rep of reps) {
      await ready(v, false);
      const ls = await must('ls', [snapdir], { timeoutMs: 600_000 });
      // The snapshots and the `latest` symlink.
      if (lines(ls.stdout) !== want + 1) throw new Error(`snaplist: ls ${snapdir} listed ${lines(ls.stdout)} names, not ${want} and latest`);
      add('snaplist', 'ls-snapdir', `\`ls .snapshots\` with ${want} snapshots`, 'ms', ms(ls.seconds));
      await ready(v, false);
      add('snaplist', 'ls-control', `  \`ls\` of a directory of ${want + 1} names on the direct disk (the ls process alone)`, 'ms',
        ms((await must('ls', [sameSize], { timeoutMs: 600_000 })).seconds));
      await ready(v, false);
      const began = process.hrtime.bigint();
      const names = await fsp.readdir(snapdir);
      if (names.length !== want + 1) throw new Error(`snaplist: readdir ${snapdir} gave ${names.length} names, not ${want + 1}`);
      add('snaplist', 'readdir-snapdir', '  one readdir() of .snapshots from the harness process (no process start)', 'ms', ms(Number(process.hrtime.bigint() - began) / 1e9));
      await ready(v, false);
      const lsl = await must('ls', ['-l', snapdir], { timeoutMs: 600_000 });
      add('snaplist', 'lsl-snapdir', `\`ls -l .snapshots\` with ${want} snapshots`, 'ms', ms(lsl.seconds));
      const lsf: Array<[string, string]> = [
        ['lsf-live', path.join(v.mnt, 'flat', 'd000')],
        ['lsf-snap', path.join(snapdir, latest, 'flat', 'd000')],
        ...(withDirect ? [['lsf-direct', path.join(directFlat, 'd000')] as [string, string]] : []),
      ];
      for (let i = 0; i < lsf.length; i++) {
        const [key, dir] = lsf[(i + rep) % lsf.length]!;
        await ready(v, false);
        const r = await must('ls', ['-f', dir], { timeoutMs: 600_000 });
        if (lines(r.stdout) !== entries + 2) throw new Error(`snaplist: ls -f ${dir} listed ${lines(r.stdout)} names, not ${entries + 2}`);
        const where = key === 'lsf-live' ? 'live, through the mount' : key === 'lsf-snap' ? 'in the newest snapshot' : 'on the direct disk';
        add('snaplist', key, `\`ls -f\` of a ${flatLabel}, ${where}`, 'ms', ms(r.seconds));
      }
    }
    if (withDirect) fs.rmSync(directFlat, { recursive: true, force: true });
    fs.rmSync(sameSize, { recursive: true, force: true });
    await unmount(v);
  } else if (large) {
    await unmount(large);
  }

  const list = [...rows.values()];
  return { rows: list, checks: evaluateSnapshots(list, sizes.map((s) => s.key), ctx.workloads), notes };
}

/** The control socket of the daemon serving `mnt`, from its record in the runtime directory. */
function socketOf(runtimeDir: string, mnt: string): string {
  for (const name of fs.readdirSync(runtimeDir)) {
    if (!name.endsWith('.json')) continue;
    try {
      const rec = JSON.parse(fs.readFileSync(path.join(runtimeDir, name), 'utf8')) as { mountpoint: string; socket: string };
      if (rec.mountpoint === mnt) return rec.socket;
    } catch { /* being written */ }
  }
  throw new Error(`no daemon record for ${mnt} in ${runtimeDir}`);
}

// ---------------------------------------------------------------- targets

/** Targets from the issue. Ratios are speed ratios: higher is better, as in the main tables. */
function evaluateSnapshots(rows: SnapRow[], sizeKeys: string[], workloads: SnapWorkloadId[]): SnapCheck[] {
  const med = (key: string) => {
    const r = rows.find((x) => x.key === key);
    return r && r.values.length ? median(r.values) : null;
  };
  const label = (key: string) => rows.find((x) => x.key === key)?.label ?? key;
  const out: SnapCheck[] = [];
  const na = (id: SnapWorkloadId, what: string, target: string) => out.push({ id, what, value: 'n/a', target, verdict: 'n/a' });
  const maxMs = (id: SnapWorkloadId, key: string, max: number, what = label(key)) => {
    const v = med(key);
    if (v === null) return na(id, what, `< ${max} ms`);
    out.push({ id, what, value: `${v.toFixed(1)} ms`, target: `< ${max} ms`, verdict: v < max ? 'PASS' : 'MISS' });
  };
  /**
   * Speed ratio of `key` against `base`: base time / key time, or key rate / base rate.
   * When both have one sample per repetition, the median of the per-repetition ratios:
   * each pair ran back to back, so a slow spell of the machine hits both sides of it.
   */
  const ratio = (id: SnapWorkloadId, key: string, base: string, what: string, min?: number, time = false) => {
    const target = min === undefined ? 'report only' : `>= ${min.toFixed(2)}x`;
    const ka = rows.find((x) => x.key === key)?.values ?? [];
    const kb = rows.find((x) => x.key === base)?.values ?? [];
    let r: number;
    if (ka.length > 1 && ka.length === kb.length && ka.every((v) => v > 0) && kb.every((v) => v > 0)) {
      r = median(ka.map((v, i) => (time ? kb[i]! / v : v / kb[i]!)));
    } else {
      const a = med(key);
      const b = med(base);
      if (a === null || b === null || a <= 0 || b <= 0) return na(id, what, target);
      r = time ? b / a : a / b;
    }
    out.push({ id, what, value: `${r >= 100 ? Math.round(r).toLocaleString('en-US') : r.toFixed(2)}x`, target, verdict: min === undefined ? 'report' : r >= min ? 'PASS' : 'MISS' });
  };

  if (workloads.includes('snapcreate')) {
    const [small, big] = sizeKeys as [string, string];
    for (const k of sizeKeys) maxMs('snapcreate', `cut-${k}`, 50);
    const a = med(`cut-${small}`);
    const b = med(`cut-${big}`);
    const what = 'cut: 10x the files and bytes costs at most 10 ms more';
    if (a === null || b === null) na('snapcreate', what, '<= +10 ms');
    else out.push({ id: 'snapcreate', what, value: `${b - a >= 0 ? '+' : ''}${(b - a).toFixed(1)} ms (${(b / a).toFixed(2)}x)`, target: '<= +10 ms', verdict: b - a <= 10 ? 'PASS' : 'MISS' });
    for (const k of sizeKeys) maxMs('snapcreate', `cut-first-${k}`, 50);
    for (const k of sizeKeys) {
      const c = med(`cli-snapshot-${k}`);
      const p = med(`cli-version-${k}`);
      const w = `CLI \`replfs snapshot\` minus CLI \`replfs --version\`, ${label(`cut-${k}`).replace(/^.*, /, '')}`;
      if (c === null || p === null) na('snapcreate', w, 'report only');
      else out.push({ id: 'snapcreate', what: w, value: `${(c - p).toFixed(1)} ms`, target: 'report only', verdict: 'report' });
    }
    for (const k of sizeKeys) ratio('snapcreate', `cut-${k}`, `cpal-${k}`, `cut vs \`cp -al\` (cp time / cut time), ${label(`cut-${k}`).replace(/^.*, /, '')}`, undefined, true);
  }
  if (workloads.includes('cow')) {
    ratio('cow', 'cow-snap', 'cow-base', 'overwrite after a snapshot / overwrite with none', 0.4);
    if (rows.some((r) => r.key === 'cow-floor')) ratio('cow', 'cow-floor', 'cow-direct', 'the same I/O done naively on the direct disk (for scale)');
  }
  if (workloads.includes('snapread')) {
    ratio('snapread', 'read-over', 'read-live', 'snapshot read, file overwritten since / live read', 0.5);
    ratio('snapread', 'read-same', 'read-live', 'snapshot read, file unchanged since / live read', 0.5);
  }
  if (workloads.includes('snapspace')) {
    const v = med('space-blocks');
    const what = 'block store growth for a 1 MiB change';
    if (v === null) na('snapspace', what, '<= 1.10 MiB');
    else out.push({ id: 'snapspace', what, value: `${v.toFixed(3)} MiB`, target: '<= 1.10 MiB', verdict: v <= 1.1 ? 'PASS' : 'MISS' });
  }
  if (workloads.includes('snaplist')) {
    maxMs('snaplist', 'ls-snapdir', 100);
    maxMs('snaplist', 'cut-many', 50);
    ratio('snaplist', 'lsf-snap', 'lsf-live', '`ls -f` big directory: snapshot / live (live time / snapshot time)', undefined, true);
    ratio('snaplist', 'lsf-snap', 'lsf-direct', '`ls -f` big directory: snapshot / direct disk', undefined, true);
  }
  return out;
}

// ---------------------------------------------------------------- tables

export function snapshotFiguresTable(rows: SnapRow[]): string {
  const fmt = (unit: string, v: number) => (unit === 'ms' ? (v >= 1000 ? Math.round(v).toLocaleString('en-US') : v.toFixed(1)) : unit === 'MiB' ? v.toFixed(v >= 100 ? 0 : 3) : formatNumber(v));
  const body = rows.map((r) => {
    const med = fmt(r.unit, median(r.values));
    const range = r.values.length > 1 ? ` (${fmt(r.unit, Math.min(...r.values))}-${fmt(r.unit, Math.max(...r.values))})` : '';
    return [r.id, r.label, r.unit, `${med}${range}`, String(r.values.length)];
  });
  return table(['group', 'measurement', 'unit', 'median (min-max)', 'n'], body, [false, false, false, true, true]);
}

export function snapshotChecksTable(checks: SnapCheck[]): string {
  return table(['group', 'check', 'value', 'target', 'result'], checks.map((c) => [c.id, c.what, c.value, c.target, c.verdict]), [false, false, true, false, false]);
}
