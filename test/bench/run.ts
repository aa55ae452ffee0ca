// `npm run bench`: replfs against the backing directory itself, against bindfs (a C FUSE
// passthrough on the same libfuse 2.9) and against replfs with journaling switched off,
// side by side in one run on one disk. The method is described in docs/performance.md.
//
// Settings (environment):
//   REPLFS_BENCH_SIZE_MB         sequential file size in MiB (1024)
//   REPLFS_BENCH_REPEAT          runs per measurement; the median is reported (3)
//   REPLFS_BENCH_FILES           small files per run (10000), in REPLFS_BENCH_DIRS directories (100)
//   REPLFS_BENCH_FILE_KB         size of each small file in KiB (4)
//   REPLFS_BENCH_RANDOM_MB       file size for random overwrites in MiB (256)
//   REPLFS_BENCH_RANDOM_SECONDS  duration of each random-overwrite run (10)
//   REPLFS_BENCH_CONFIGS         comma list of direct,bindfs,replfs,replfs-nojournal (all)
//   REPLFS_BENCH_WORKLOADS       comma list of seqwrite,seqread,small,random, the snapshot
//                                group snapcreate,cow,snapread,snapspace,snaplist and the
//                                replication group replinit,replsmall,replrename,replhuge,repltree
//                                (`replication` stands for all five) (all)
//   REPLFS_BENCH_SNAPSHOTS       snapshots on the volume for the snaplist test (500)
//   REPLFS_BENCH_REPL_SCALE      replication: file counts and sizes times this (1 = the issue's sizes)
//   REPLFS_BENCH_REPL_HUGE_MB    replication: size of the huge file in MiB (4096 x scale)
//   REPLFS_BENCH_REPL_CACHE      replication: cold (drop caches before each timed command) or warm (cold)
//   REPLFS_BENCH_REPL_RSYNC_FROM replication: rsync reads the backing directory or the mount (backing)
//   REPLFS_BENCH_MOUNT_OPTS      -o options for both replfs mounts, e.g. attr_timeout=1 (none)
//   REPLFS_BENCH_DIR             where the scratch directory is made (/var/tmp)
//   REPLFS_BENCH_JSON            also write every sample and the verdicts to this file
//   REPLFS_BENCH_STRICT=1        exit 1 when a target is missed
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuOf, filesystemOf, must, mountsUnder, run, running, setClockTicks, sleep } from './proc.js';
import { CONFIG_NAMES, ROOT, down, makeTarget, replfs, up, type ConfigName, type Target } from './targets.js';
import {
  absoluteTable, cpuTable, evaluate, ratioTable, type Results, type Sample, type WorkloadId, type WorkloadInfo,
} from './report.js';
import {
  SNAPSHOT_WORKLOAD_IDS, snapshotChecksTable, snapshotFiguresTable, snapshotGroup, type SnapReport, type SnapWorkloadId,
} from './snapshots.js';
import {
  REPLICATION_WORKLOAD_IDS, replicationGroup, replicationNeededBytes, replicationSizes, replicationTables, type ReplReport, type ReplWorkloadId,
} from './replication.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SMALLFILES = path.join(HERE, 'smallfiles.js');
const COWFLOOR = path.join(HERE, 'cowfloor.js');
const COMMAND_TIMEOUT_MS = 15 * 60_000;

function intEnv(name: string, fallback: number, min = 1): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min) throw new Error(`${name} must be an integer >= ${min}, not ${JSON.stringify(raw)}`);
  return v;
}

function floatEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} must be a number > 0, not ${JSON.stringify(raw)}`);
  return v;
}

function choiceEnv<T extends string>(name: string, choices: readonly T[]): T {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return choices[0]!;
  if (!choices.includes(raw as T)) throw new Error(`${name} must be one of ${choices.join(', ')}, not ${JSON.stringify(raw)}`);
  return raw as T;
}

/** A comma list of names from `all`; an alias stands for several names. */
function listEnv<T extends string>(name: string, all: readonly T[], aliases: Record<string, readonly T[]> = {}): T[] {
  const raw = process.env[name];
  if (!raw) return [...all];
  const picked = raw.split(',').map((s) => s.trim()).filter(Boolean).flatMap((p) => aliases[p] ?? [p]);
  for (const p of picked) {
    if (!all.includes(p as T)) throw new Error(`${name}: unknown name ${JSON.stringify(p)} (known: ${[...all, ...Object.keys(aliases)].join(', ')})`);
  }
  return all.filter((a) => picked.includes(a));
}

const CORE_WORKLOAD_IDS = ['seqwrite', 'seqread', 'small', 'random'] as const;
const WORKLOAD_IDS = [...CORE_WORKLOAD_IDS, ...SNAPSHOT_WORKLOAD_IDS, ...REPLICATION_WORKLOAD_IDS] as const;
type AnyWorkloadId = (typeof WORKLOAD_IDS)[number];

const settings = {
  sizeMb: intEnv('REPLFS_BENCH_SIZE_MB', 1024),
  repeat: intEnv('REPLFS_BENCH_REPEAT', 3),
  files: intEnv('REPLFS_BENCH_FILES', 10_000),
  dirs: intEnv('REPLFS_BENCH_DIRS', 100),
  fileKb: intEnv('REPLFS_BENCH_FILE_KB', 4, 0),
  randomMb: intEnv('REPLFS_BENCH_RANDOM_MB', 256),
  randomSeconds: intEnv('REPLFS_BENCH_RANDOM_SECONDS', 10),
  configs: listEnv<ConfigName>('REPLFS_BENCH_CONFIGS', CONFIG_NAMES),
  workloads: listEnv<AnyWorkloadId>('REPLFS_BENCH_WORKLOADS', WORKLOAD_IDS, { replication: REPLICATION_WORKLOAD_IDS }),
  snapshots: intEnv('REPLFS_BENCH_SNAPSHOTS', 500),
  parent: process.env.REPLFS_BENCH_DIR || (fs.existsSync('/var/tmp') ? '/var/tmp' : os.tmpdir()),
  replScale: floatEnv('REPLFS_BENCH_REPL_SCALE', 1),
  replHugeMb: process.env.REPLFS_BENCH_REPL_HUGE_MB ? intEnv('REPLFS_BENCH_REPL_HUGE_MB', 4096) : null,
  replCache: choiceEnv('REPLFS_BENCH_REPL_CACHE', ['cold', 'warm'] as const),
  replRsyncFrom: choiceEnv('REPLFS_BENCH_REPL_RSYNC_FROM', ['backing', 'mount'] as const),
};
const replWorkloads = settings.workloads.filter((w): w is ReplWorkloadId => (REPLICATION_WORKLOAD_IDS as readonly string[]).includes(w));
const replSizes = replicationSizes(settings.replScale, settings.replHugeMb);

const snapWorkloads = settings.workloads.filter((w): w is SnapWorkloadId => (SNAPSHOT_WORKLOAD_IDS as readonly string[]).includes(w));
const WORKLOADS: WorkloadInfo[] = [
  { id: 'seqwrite', title: `seq write ${settings.sizeMb} MiB + fsync`, unit: 'MB/s' },
  { id: 'seqread', title: `seq read ${settings.sizeMb} MiB, cold cache`, unit: 'MB/s' },
  { id: 'small', title: `${settings.files} files x ${settings.fileKb} KiB, ${settings.dirs} dirs`, unit: 'files/s' },
  { id: 'random', title: `random 4K overwrite, ${settings.randomMb} MiB file`, unit: 'ops/s' },
].filter((w) => settings.workloads.includes(w.id as WorkloadId)) as WorkloadInfo[];

const startedAt = Date.now();
const progress = (line: string) => process.stderr.write(`[${String(Math.round((Date.now() - startedAt) / 1000)).padStart(4)}s] ${line}\n`);
const warn = (line: string) => process.stderr.write(`replfs bench: ${line}\n`);

// ------------------------------------------------------------------ machine facts

async function firstLine(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args, { timeoutMs: 10_000 }).catch(() => null);
  return r && r.code === 0 ? (r.stdout || r.stderr).trim().split('\n')[0]! : 'unknown';
}

async function machineFacts(scratchParent: string): Promise<Array<[string, string]>> {
  const cpus = os.cpus();
  const fsInfo = filesystemOf(fs.realpathSync(scratchParent));
  const osName = (() => {
    try { return /PRETTY_NAME="?([^"\n]*)/.exec(fs.readFileSync('/etc/os-release', 'utf8'))?.[1] ?? 'unknown'; } catch { return 'unknown'; }
  })();
  const libfuse = (() => {
    for (const p of ['/lib/x86_64-linux-gnu/libfuse.so.2', '/usr/lib/x86_64-linux-gnu/libfuse.so.2', '/lib/aarch64-linux-gnu/libfuse.so.2', '/usr/lib/libfuse.so.2']) {
      try { return path.basename(fs.realpathSync(p)); } catch { /* next */ }
    }
    return 'unknown';
  })();
  const rev = await firstLine('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']);
  const dirty = (await run('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no'], { timeoutMs: 10_000 }).catch(() => null))?.stdout.trim();
  const st = fs.statfsSync(scratchParent);
  return [
    ['date', new Date().toISOString().replace(/\.\d+Z$/, 'Z')],
    ['cpu', `${cpus.length} x ${cpus[0]?.model.trim() ?? 'unknown'}`],
    ['memory', `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`],
    ['load', `${os.loadavg().map((l) => l.toFixed(2)).join(' ')} (1/5/15 min averages when the run started)`],
    ['kernel', `${os.release()} (${os.arch()}), ${osName}`],
    ['scratch fs', `${fsInfo?.fstype ?? 'unknown'} on ${fsInfo?.source ?? '?'} (mounted at ${fsInfo?.mountpoint ?? '?'}), ${(Number(st.bavail) * Number(st.bsize) / 2 ** 30).toFixed(0)} GiB free, scratch under ${scratchParent}`],
    ['tools', `node ${process.version}, ${await firstLine('fio', ['--version'])}, ${await firstLine('bindfs', ['--version'])}, ${libfuse}`],
    ['replfs', `${rev}${dirty ? ' with uncommitted changes' : ''}, UV_THREADPOOL_SIZE ${process.env.UV_THREADPOOL_SIZE ?? '32 (replfs default)'}`],
    ['settings', `size ${settings.sizeMb} MiB, repeat ${settings.repeat}, ${settings.files} files x ${settings.fileKb} KiB in ${settings.dirs} dirs, random ${settings.randomMb} MiB for ${settings.randomSeconds} s` +
      (snapWorkloads.length ? `, ${settings.snapshots} snapshots for snaplist` : '') +
      `, workloads ${settings.workloads.join(',')}` +
      (process.env.REPLFS_BENCH_MOUNT_OPTS ? `, replfs mounted with -o ${process.env.REPLFS_BENCH_MOUNT_OPTS}` : '')],
  ];
}

// ------------------------------------------------------------------ cleanup

const targets: Target[] = [];
/** Volumes of the snapshot group: not part of the rotation, but unmounted by the same cleanup. */
const extraTargets: Target[] = [];
/** Teardown steps of the replication group (its sshd, its descriptors): run before the unmounts. */
const extraCleanups: Array<() => Promise<void>> = [];
let scratch: string | null = null;
let cleaning: Promise<number> | null = null;
let signalled: NodeJS.Signals | null = null;

/** Unmounts everything, then removes the scratch directory; 2 when a mount is left behind. */
function cleanup(): Promise<number> {
  cleaning ??= (async () => {
    for (const fn of extraCleanups.splice(0).reverse()) {
      try { await fn(); } catch (err) { warn(`cleanup: ${(err as Error).message}`); }
    }
    for (const t of [...targets, ...extraTargets].reverse()) {
      if (!t.mountpoint) continue;
      const began = Date.now();
      await down(t, warn);
      progress(`${t.name} at ${t.mountpoint}: unmounted in ${((Date.now() - began) / 1000).toFixed(1)} s`);
    }
    if (!scratch) return 0;
    const left = mountsUnder(scratch);
    if (left.length) {
      const bar = '!'.repeat(72);
      process.stderr.write(`\n${bar}\nreplfs bench: MOUNTS LEFT BEHIND, scratch directory kept:\n${left.map((m) => `  ${m.mountpoint} (${m.fstype})`).join('\n')}\n` +
        `clear them with: fusermount -uz <mountpoint>, then rm -rf ${scratch}\n${bar}\n`);
      return 2;
    }
    const began = Date.now();
    fs.rmSync(scratch, { recursive: true, force: true });
    progress(`removed the scratch directory in ${((Date.now() - began) / 1000).toFixed(1)} s`);
    return 0;
  })();
  return cleaning;
}

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
for (const sig of SIGNALS) {
  process.on(sig, () => {
    if (signalled || cleaning) {
      warn(`${sig}: already cleaning up, please wait`);
      return;
    }
    signalled = sig;
    warn(`${sig}: stopping the running workload and unmounting everything`);
    for (const c of running) c.kill('SIGKILL');
    void cleanup().then((code) => process.exit(code || 128 + (os.constants.signals[sig] ?? 1)));
  });
}
process.on('uncaughtException', (err) => {
  warn(`unexpected error: ${err.stack ?? err.message}`);
  void cleanup().then(() => process.exit(1));
});

// ------------------------------------------------------------------ measuring

let coldCache = true;

async function dropCaches(): Promise<void> {
  await must('sync', []);
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
  } catch (err) {
    if (coldCache) warn(`cannot drop the page cache (${(err as Error).message}); reads are not cold (run as root)`);
    coldCache = false;
  }
}

/** Waits until no FUSE daemon is using CPU (a journal flush or compaction left over from the previous run). */
async function settle(pids: number[] = targets.map((t) => t.pid).filter((p): p is number => p !== null)): Promise<void> {
  const total = async () => (await Promise.all(pids.map(cpuOf))).reduce((a, s) => a + (s?.total ?? 0), 0);
  const deadline = Date.now() + 30_000;
  let prev = await total();
  while (Date.now() < deadline) {
    await sleep(250);
    const now = await total();
    if (now - prev <= 0.02) return;
    prev = now;
  }
  warn('the daemons were still busy after 30 s; measuring anyway');
}

interface Outcome { value: number; seconds: number }

async function measure(t: Target, body: () => Promise<Outcome>): Promise<Sample> {
  await settle();
  await dropCaches();
  const before = t.pid !== null ? await cpuOf(t.pid) : null;
  const out = await body();
  const after = t.pid !== null ? await cpuOf(t.pid) : null;
  const cpu = before && after ? after.total - before.total : null;
  const mainCpu = before && after ? after.main - before.main : null;
  return { ...out, cpu, mainCpu };
}

const MB = 1e6;
const seqFile = (t: Target, rep: number) => path.join(t.path, `seq-${rep}.bin`);

interface FioDirection { io_bytes: number; runtime: number; iops: number }
interface FioJob { error: number; read: FioDirection; write: FioDirection }

/**
 * Runs one fio job and returns its figures. fio's own runtime is used rather than the
 * process's wall clock: it leaves out fio's start-up (about 0.4 s here), and it includes
 * the final fsync of --end_fsync.
 */
async function fio(args: string[]): Promise<FioJob> {
  const r = await must('fio', [...args, '--ioengine=psync', '--iodepth=1', '--direct=0', '--fallocate=none', '--output-format=json'], { timeoutMs: COMMAND_TIMEOUT_MS });
  const job = (JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: FioJob[] }).jobs[0]!;
  if (job.error) throw new Error(`fio ${args.join(' ')}: error ${job.error}`);
  return job;
}

/** One sequential pass over a file with 1 MiB calls; a write ends with fsync and writes fio's pseudo-random buffers, not zeros. */
async function sequential(file: string, rw: 'write' | 'read', mb: number): Promise<Outcome> {
  // An existing file is overwritten in place: fio opens it O_RDWR|O_CREAT, without O_TRUNC.
  const job = await fio([`--name=seq${rw}`, `--filename=${file}`, `--rw=${rw}`, '--bs=1M', `--size=${mb}M`, ...(rw === 'write' ? ['--end_fsync=1'] : [])]);
  const d = job[rw];
  if (d.io_bytes !== mb * 2 ** 20) throw new Error(`fio ${rw} of ${file} moved ${d.io_bytes} bytes, not ${mb * 2 ** 20}`);
  const seconds = d.runtime / 1000;
  return { value: d.io_bytes / MB / seconds, seconds };
}

const writeFile = (file: string, mb: number) => sequential(file, 'write', mb);
const seqWrite = (t: Target, rep: number) => sequential(seqFile(t, rep), 'write', settings.sizeMb);
const seqRead = (t: Target, rep: number) => sequential(seqFile(t, rep), 'read', settings.sizeMb);

async function smallFiles(t: Target, rep: number): Promise<Outcome> {
  const dir = path.join(t.path, `small-${rep}`);
  const r = await must(process.execPath, [SMALLFILES, dir, String(settings.files), String(settings.dirs), String(settings.fileKb * 1024)], { timeoutMs: COMMAND_TIMEOUT_MS });
  const res = JSON.parse(r.stdout) as { files: number; seconds: number };
  // Untimed: every file must have landed in the backing directory.
  const onDisk = fs.readdirSync(path.join(t.backing, `small-${rep}`)).reduce((n, d) => n + fs.readdirSync(path.join(t.backing, `small-${rep}`, d)).length, 0);
  if (onDisk !== settings.files) throw new Error(`${t.name}: ${onDisk} of ${settings.files} small files reached the backing directory`);
  return { value: res.files / res.seconds, seconds: res.seconds };
}

async function randomWrites(t: Target): Promise<Outcome> {
  const job = await fio([
    '--name=randwrite', `--filename=${path.join(t.path, 'random.bin')}`, '--rw=randwrite', '--bs=4k', `--size=${settings.randomMb}M`,
    '--time_based=1', `--runtime=${settings.randomSeconds}`, '--end_fsync=1', '--randrepeat=1',
  ]);
  return { value: job.write.iops, seconds: job.write.runtime / 1000 };
}

function runSnapshotGroup(): Promise<SnapReport> {
  return snapshotGroup({
    scratch: scratch!,
    sizeMb: settings.sizeMb,
    files: settings.files,
    dirs: settings.dirs,
    repeat: settings.repeat,
    snapshots: settings.snapshots,
    workloads: snapWorkloads,
    configs: settings.configs,
    smallfiles: SMALLFILES,
    cowfloor: COWFLOOR,
    progress,
    warn,
    adopt: (t) => { extraTargets.push(t); },
    settle: (pids) => settle(pids),
    dropCaches,
    sequential,
  });
}

function runReplicationGroup(): Promise<ReplReport> {
  return replicationGroup({
    scratch: scratch!,
    repeat: settings.repeat,
    sizes: replSizes,
    cache: settings.replCache,
    rsyncFrom: settings.replRsyncFrom,
    workloads: replWorkloads,
    progress,
    warn,
    adopt: (t) => { extraTargets.push(t); },
    onCleanup: (fn) => { extraCleanups.push(fn); },
    settle: (pids) => settle(pids),
    dropCaches,
    stopping: () => signalled !== null,
  });
}

function describe(w: WorkloadId, s: Sample): string {
  const unit = WORKLOADS.find((x) => x.id === w)!.unit;
  const cpu = s.cpu !== null ? `, daemon CPU ${(100 * s.cpu / s.seconds).toFixed(0)}%` : '';
  return `${Math.round(s.value).toLocaleString('en-US')} ${unit} in ${s.seconds.toFixed(1)} s${cpu}`;
}

async function benchmark(results: Results): Promise<void> {
  const add = (w: WorkloadId, t: Target, s: Sample) => {
    if (!results.has(w)) results.set(w, new Map());
    const m = results.get(w)!;
    if (!m.has(t.name)) m.set(t.name, []);
    m.get(t.name)!.push(s);
  };
  // Configurations take turns within each repetition, in a rotating order, so that slow
  // drift of the disk or the machine does not favour one of them.
  const order = (rep: number) => targets.map((_, i) => targets[(i + rep) % targets.length]!);
  const reps = Array.from({ length: settings.repeat }, (_, i) => i);

  const phase = async (w: WorkloadId, body: (t: Target, rep: number) => Promise<Outcome>) => {
    for (const rep of reps) {
      for (const t of order(rep)) {
        const s = await measure(t, () => body(t, rep));
        add(w, t, s);
        progress(`${w} ${rep + 1}/${settings.repeat} ${t.name}: ${describe(w, s)}`);
      }
    }
  };

  if (settings.workloads.includes('seqwrite')) await phase('seqwrite', seqWrite);
  if (settings.workloads.includes('seqread')) {
    for (const t of targets) {
      for (const rep of reps) {
        const f = seqFile(t, rep);
        if (!fs.existsSync(f) || fs.statSync(f).size !== settings.sizeMb * 2 ** 20) {
          progress(`seqread: writing ${f} first (not timed)`);
          await writeFile(f, settings.sizeMb);
        }
      }
    }
    await phase('seqread', seqRead);
  }
  if (settings.workloads.includes('small')) await phase('small', smallFiles);
  if (settings.workloads.includes('random')) {
    for (const t of targets) {
      progress(`random: preallocating ${settings.randomMb} MiB in ${t.name} (not timed)`);
      await writeFile(path.join(t.path, 'random.bin'), settings.randomMb);
    }
    await phase('random', (t) => randomWrites(t));
  }
}

function daemonLogTail(t: Target): string {
  try {
    return fs.readFileSync(path.join(t.backing, '.replfs', 'daemon.log'), 'utf8').trimEnd().split('\n').slice(-15).join('\n');
  } catch {
    return '';
  }
}

function neededBytes(): number {
  const perConfig = (settings.workloads.includes('seqwrite') || settings.workloads.includes('seqread') ? settings.repeat * settings.sizeMb * 2 ** 20 : 0)
    + (settings.workloads.includes('random') ? settings.randomMb * 2 ** 20 : 0)
    + (settings.workloads.includes('small') ? settings.repeat * settings.files * Math.max(4096, settings.fileKb * 1024) * 1.2 : 0);
  // Snapshot group: the two trees (1.1x the size, in replfs and on the direct disk) and,
  // one repetition at a time, a file plus all of it preserved.
  const snap = (settings.workloads.includes('snapcreate') ? 2 * 1.1 * settings.sizeMb * 2 ** 20 * 1.3 : 0)
    + (settings.workloads.some((w) => w === 'cow' || w === 'snapread' || w === 'snapspace') ? 2 * settings.sizeMb * 2 ** 20 : 0);
  // The other groups' data stays in the scratch directory until the end of the run.
  return perConfig * settings.configs.length + snap + replicationNeededBytes(replSizes, replWorkloads);
}

async function main(): Promise<number> {
  const clk = Number(await firstLine('getconf', ['CLK_TCK']));
  setClockTicks(clk);
  fs.mkdirSync(settings.parent, { recursive: true });
  const free = Number(fs.statfsSync(settings.parent).bavail) * Number(fs.statfsSync(settings.parent).bsize);
  const need = neededBytes();
  if (free < need * 1.1 + 2 ** 30) {
    throw new Error(`${settings.parent} has ${(free / 2 ** 30).toFixed(1)} GiB free; this run needs about ${(need / 2 ** 30).toFixed(1)} GiB ` +
      '(lower REPLFS_BENCH_SIZE_MB or REPLFS_BENCH_REPEAT, for replication REPLFS_BENCH_REPL_SCALE or REPLFS_BENCH_REPL_HUGE_MB, or point REPLFS_BENCH_DIR elsewhere)');
  }
  const facts = await machineFacts(settings.parent);
  const fsType = facts.find(([k]) => k === 'scratch fs')![1];
  if (/^tmpfs|^ramfs/.test(fsType)) warn(`the scratch directory is on ${fsType.split(' ')[0]}: the figures say nothing about a disk`);

  scratch = fs.mkdtempSync(path.join(settings.parent, 'replfs-bench-'));
  fs.mkdirSync(path.join(scratch, 'run'));
  progress(`scratch directory ${scratch}`);

  const results: Results = new Map();
  let snap: SnapReport | null = null;
  let repl: ReplReport | null = null;
  let replError: string | null = null;
  let journals: string[] = [];
  try {
    // The snapshot group mounts volumes of its own; the four main ones serve the other workloads.
    for (const name of WORKLOADS.length ? settings.configs : []) {
      const t = makeTarget(name, scratch);
      targets.push(t);
      await up(t);
      progress(`${name}: ${t.mountpoint ? `mounted ${t.backing} at ${t.mountpoint} (pid ${t.pid})` : `using ${t.backing}`}`);
    }
    await benchmark(results);
    if (WORKLOADS.length) journals = await journalState();
    if (snapWorkloads.length) {
      if (settings.configs.includes('replfs')) snap = await runSnapshotGroup();
      else warn(`the snapshot workloads (${snapWorkloads.join(',')}) need replfs in REPLFS_BENCH_CONFIGS; skipped`);
    }
    if (replWorkloads.length) {
      // A failure of replfs is a failed row; this catches what keeps the group from running at all (no sshd, say).
      repl = await runReplicationGroup().catch((err: Error) => {
        if (signalled) throw err;
        replError = err.message;
        warn(`the replication group could not run: ${err.message}`);
        return null;
      });
    }
  } catch (err) {
    if (!signalled) {
      for (const t of [...targets, ...extraTargets]) {
        const tail = t.name.startsWith('replfs') ? daemonLogTail(t) : '';
        if (tail) warn(`${t.name} daemon log ends with:\n${tail}`);
      }
    }
    throw err;
  } finally {
    progress('unmounting everything');
    const code = await cleanup();
    if (code) process.exitCode = code;
  }

  const checks = evaluate(results);
  const out: string[] = [];
  out.push('replfs benchmark', '');
  const w = Math.max(...facts.map(([k]) => k.length));
  for (const [k, v] of facts) out.push(`${k.padEnd(w)}  ${v}`);
  if (!coldCache) out.push(`${'note'.padEnd(w)}  the page cache could not be dropped: reads were NOT cold`);
  out.push(`${'runtime'.padEnd(w)}  ${Math.round((Date.now() - startedAt) / 1000)} s`);
  if (WORKLOADS.length) {
    out.push('', `Absolute figures: median of ${settings.repeat} (min-max); higher is better`, '');
    out.push(absoluteTable(WORKLOADS, settings.configs, results));
  }
  const shown = checks.filter((c) => settings.workloads.includes(c.check.workload) && settings.configs.includes('replfs') && settings.configs.includes(c.check.against));
  if (shown.length) {
    out.push('', 'Ratios against the targets (medians; journal overhead = nojournal/replfs - 1, the extra time per unit of work)', '');
    out.push(ratioTable(WORKLOADS, shown));
  }
  if (WORKLOADS.length && settings.configs.some((c) => c !== 'direct')) {
    out.push('', 'FUSE daemon CPU during each workload (median; 100% = one core busy for the whole run)', '');
    out.push(cpuTable(WORKLOADS, settings.configs, results));
  }
  if (journals.length && WORKLOADS.length) out.push('', ...journals);
  if (snap) {
    out.push('', 'Snapshots: figures (median (min-max) of n samples; ms: lower is better, MB/s: higher is better; caches dropped before MB/s runs only)', '');
    out.push(snapshotFiguresTable(snap.rows));
    out.push('', 'Snapshots: against the targets (ratios are speed ratios: higher is better)', '');
    out.push(snapshotChecksTable(snap.checks));
    if (snap.notes.length) out.push('', ...snap.notes);
  }
  if (repl) {
    out.push('', ...repl.settings);
    out.push(...replicationTables(repl));
  }
  if (replError) out.push('', `replication: the group could not run: ${replError}`);
  console.log(out.join('\n'));

  if (process.env.REPLFS_BENCH_JSON) {
    const samples = Object.fromEntries([...results].map(([wid, m]) => [wid, Object.fromEntries(m)]));
    fs.writeFileSync(process.env.REPLFS_BENCH_JSON, JSON.stringify({ facts: Object.fromEntries(facts), settings, coldCache, samples, checks, snapshots: snap, replication: repl, replicationError: replError }, null, 2) + '\n');
  }
  const missed = checks.filter((c) => c.verdict === 'MISS').length + (snap?.checks.filter((c) => c.verdict === 'MISS').length ?? 0)
    + (repl?.cases.flatMap((c) => c.checks).filter((c) => c.verdict === 'MISS' || c.verdict === 'FAILED').length ?? 0) + (replError ? 1 : 0);
  return process.env.REPLFS_BENCH_STRICT === '1' && missed > 0 ? 1 : 0;
}

/** What each replfs daemon's journal held at the end: shows that the no-journal switch took effect. */
async function journalState(): Promise<string[]> {
  const lines: string[] = [];
  for (const t of targets.filter((x) => x.name.startsWith('replfs'))) {
    try {
      const s = JSON.parse((await replfs(t, ['status', '--json', t.mountpoint!])).stdout) as { journal: { entries: number; bytes: number; dirtyFiles: number } };
      lines.push(`journal at the end, ${t.name}: ${s.journal.entries} entries, ${(s.journal.bytes / 2 ** 20).toFixed(1)} MiB in LevelDB, ${s.journal.dirtyFiles} changed files`);
      if (t.name === 'replfs-nojournal' && s.journal.entries > 0) warn('replfs-nojournal recorded journal entries: REPLFS_BENCH_NO_JOURNAL did not take effect');
      if (t.name === 'replfs' && s.journal.entries === 0) warn('replfs recorded no journal entries: the journaled figures are suspect');
    } catch (err) {
      lines.push(`journal at the end, ${t.name}: status failed (${(err as Error).message.split('\n')[0]})`);
    }
  }
  return lines;
}

main().then(
  (code) => { if (!signalled) process.exit(process.exitCode || code); },
  (err: Error) => {
    if (signalled) return;
    warn(err.message);
    process.exit(typeof process.exitCode === 'number' && process.exitCode ? process.exitCode : 1);
  },
);
