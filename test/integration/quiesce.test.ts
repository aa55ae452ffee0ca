// `replfs snapshot --quiesce` with real hooks: the pre-hook runs while writes flow, the
// cut is made with writes held, the post-hook always runs; what the hooks are told (env,
// working directory), how failures, hangs and `onPreFailure: "abort"` end, that writers
// get through and resume, and a real application (SQLite in WAL mode under continuous
// writes) whose quiesced snapshots are each a valid database.
//
// Every hook scenario runs unmounted (the CLI opens the volume itself) and mounted (the
// daemon runs the hooks, in the mount).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import test from '../helpers/ava.js';
import {
  scratch, replfs, initVolume, mountVolume, describeTree, run, waitFor, isMounted,
  type Scratch, type RunResult,
  concurrencyGate,
} from '../helpers/env.js';
import { ExitCode } from '../../src/errors/index.js';

// ---------------------------------------------------------------- declaring

/** Each case mounts and runs hooks; at most this many cases run together. */
const PARALLEL = 3;
const gated = concurrencyGate(PARALLEL);
type Body = (t: ExecutionContext) => Promise<void>;
const q = (title: string, body: Body) => test(title, (t) => gated(() => body(t)));

type Mode = 'unmounted' | 'mounted' | 'mounted elsewhere';
const MODES: Mode[] = ['unmounted', 'mounted', 'mounted elsewhere'];
/** Declares a case once per mode. */
function each(title: string, body: (t: ExecutionContext, mode: Mode) => Promise<void>, modes: Mode[] = MODES): void {
  for (const mode of modes) q(`${title} (${mode})`, (t) => body(t, mode));
}

// ---------------------------------------------------------------- a volume with hooks

interface Vol {
  s: Scratch;
  /** The protected directory. */
  dir: string;
  /** Where its files are reached: the mountpoint, or the directory when not mounted. */
  files: string;
  /** The mountpoint, or null. */
  mnt: string | null;
  /** Outside the volume: where the hooks write what they saw. */
  log: string;
  mode: Mode;
}

type Quiesce = Record<string, unknown>;

/** Writes the `quiesce` key of .replfs/config.json (while unmounted, as documented). */
function setQuiesce(dir: string, quiesce: Quiesce | undefined): void {
  const file = path.join(dir, '.replfs', 'config.json');
  const config = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  if (quiesce === undefined) delete config.quiesce;
  else config.quiesce = quiesce;
  fs.writeFileSync(file, JSON.stringify(config, null, 2) + '\n');
}

async function setup(t: ExecutionContext, mode: Mode, quiesce: (log: string) => Quiesce | undefined, initArgs: string[] = []): Promise<Vol> {
  const s = scratch(t);
  const dir = path.join(s.dir, 'data');
  fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'a.txt'), 'alpha\n');
  fs.writeFileSync(path.join(dir, 'sub', 'b.txt'), 'beta\n');
  await initVolume(t, s, dir, initArgs);
  const log = path.join(s.dir, 'hooks.log');
  setQuiesce(dir, quiesce(log));
  let mnt: string | null = null;
  if (mode === 'mounted') mnt = await mountVolume(t, s, dir);
  if (mode === 'mounted elsewhere') {
    mnt = path.join(s.dir, 'mnt');
    fs.mkdirSync(mnt);
    await mountVolume(t, s, dir, mnt);
  }
  return { s, dir, files: mnt ?? dir, mnt, log, mode };
}

/**
 * A hook command that appends what it saw to `log`: when it began and ended (ns, the same
 * clock as the test), its working directory and every REPLFS_* variable.
 */
function record(log: string, then = ''): string {
  return `{ echo "begin $(date +%s%N)"; echo "pwd $(pwd)"; env | grep '^REPLFS_' | sort; echo "end $(date +%s%N)"; } >> '${log}'${then ? `; ${then}` : ''}`;
}

interface HookRun {
  beginMs: number;
  endMs: number;
  pwd: string;
  env: Record<string, string>;
}

function readLog(log: string): HookRun[] {
  if (!fs.existsSync(log)) return [];
  const runs: HookRun[] = [];
  let cur: HookRun | null = null;
  for (const line of fs.readFileSync(log, 'utf8').split('\n')) {
    if (line.startsWith('begin ')) cur = { beginMs: Number(BigInt(line.slice(6)) / 1_000_000n), endMs: NaN, pwd: '', env: {} };
    else if (!cur) continue;
    else if (line.startsWith('pwd ')) cur.pwd = line.slice(4);
    else if (line.startsWith('end ')) { cur.endMs = Number(BigInt(line.slice(4)) / 1_000_000n); runs.push(cur); cur = null; }
    else if (line.startsWith('REPLFS_')) { const eq = line.indexOf('='); cur.env[line.slice(0, eq)] = line.slice(eq + 1); }
  }
  return runs;
}

/** What the contract says a hook is told; REPLFS_PRE_STATUS only for the post-hook. */
function checkEnv(t: ExecutionContext, v: Vol, run: HookRun | undefined, phase: 'pre' | 'post', name: string | null, preStatus?: string): void {
  t.truthy(run, `the ${phase}-hook ran`);
  if (!run) return;
  t.is(run.env.REPLFS_PHASE, phase);
  if (name !== null) t.is(run.env.REPLFS_SNAPSHOT, name, `${phase}: REPLFS_SNAPSHOT is the name the snapshot gets`);
  else t.regex(run.env.REPLFS_SNAPSHOT ?? '', /^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z(-\d+)?$/);
  t.is(run.env.REPLFS_VOLUME, v.dir);
  t.is(run.env.REPLFS_MOUNTPOINT, v.mnt ?? '', `${phase}: REPLFS_MOUNTPOINT`);
  t.is(run.pwd, v.files, `${phase}: runs in the mount directory (or the volume when unmounted)`);
  if (phase === 'pre') t.false('REPLFS_PRE_STATUS' in run.env, 'the pre-hook is not told a pre status');
  else t.is(run.env.REPLFS_PRE_STATUS, preStatus ?? '(missing)', 'post: REPLFS_PRE_STATUS');
}

interface SnapshotJson { name: string; epoch: number; sourceTime: string; label: string | null; consistency: string; nextFid: number; uniqueBytes: number }

async function listing(t: ExecutionContext, v: Vol): Promise<SnapshotJson[]> {
  const r = await replfs(v.s, ['snapshots', v.files, '--json']);
  t.is(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { snapshots: SnapshotJson[] }).snapshots;
}

async function epochOf(t: ExecutionContext, v: Vol): Promise<number> {
  const r = await replfs(v.s, ['status', v.files, '--json']);
  t.is(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { epoch: number }).epoch;
}

// ---------------------------------------------------------------- the deadlock guard
//
// Hooks used to deadlock a mounted volume (fixed in f21e4b8): the daemon spawned them with
// the mountpoint as cwd, libuv's spawn holds the event loop until the child has exec'd, and
// the forked child's chdir() into the mount waited for that event loop. The child also held
// /dev/fuse, so killing the daemon did not end the mount either. Should it come back, the
// guard below sees it within seconds, aborts the FUSE connection (the only way out), and
// fails the test saying so, instead of hanging the run with processes stuck in the kernel.

function readText(p: string): string {
  try { return fs.readFileSync(p, 'utf8'); } catch { return ''; }
}

function daemonPids(s: Scratch): number[] {
  if (!fs.existsSync(s.runtime)) return [];
  return fs.readdirSync(s.runtime).filter((f) => f.endsWith('.json'))
    .map((f) => (JSON.parse(readText(path.join(s.runtime, f)) || '{}') as { pid?: number }).pid)
    .filter((p): p is number => typeof p === 'number');
}

/**
 * The deadlock, as the kernel shows it: the daemon's main thread waits on a pipe
 * (libuv waiting for a spawned child to exec) while one of its children, still the
 * daemon's own program, waits for an answer from the FUSE mount.
 */
function deadlocked(s: Scratch): string | null {
  for (const pid of daemonPids(s)) {
    const main = readText(`/proc/${pid}/wchan`);
    if (!main.includes('pipe_read') && !main.includes('pipe_wait')) continue;
    const exe = readText(`/proc/${pid}/cmdline`);
    for (const child of readText(`/proc/${pid}/task/${pid}/children`).split(' ').filter(Boolean)) {
      if (readText(`/proc/${child}/wchan`) === 'request_wait_answer' && readText(`/proc/${child}/cmdline`) === exe) {
        return `daemon ${pid} waits in ${main}; its forked child ${child} (not exec'd yet) waits in request_wait_answer`;
      }
    }
  }
  return null;
}

/** Ends a deadlocked mount: aborts its FUSE connection, kills its daemon, detaches it. */
async function unstick(t: ExecutionContext, v: Vol): Promise<void> {
  if (!v.mnt) return;
  const line = readText('/proc/self/mountinfo').split('\n').find((l) => l.split(' ')[4] === v.mnt);
  const minor = line?.split(' ')[2]?.split(':')[1];
  const conns = '/sys/fs/fuse/connections';
  if (minor) {
    if (!fs.existsSync(path.join(conns, minor))) await run('mount', ['-t', 'fusectl', 'none', conns]);
    try {
      fs.writeFileSync(path.join(conns, minor, 'abort'), '1');
    } catch (err) {
      t.log(`could not abort FUSE connection ${minor}: ${String(err)}`);
    }
  }
  for (const pid of daemonPids(v.s)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  await run('fusermount', ['-uz', v.mnt]);
}

/**
 * `replfs snapshot <files> --quiesce ...`, watched: if the hook deadlock sets in, it is
 * ended at once and the test fails saying so.
 */
async function snapshotQuiesced(t: ExecutionContext, v: Vol, extra: string[] = []): Promise<RunResult & { ms: number }> {
  const started = Date.now();
  const pending = replfs(v.s, ['snapshot', v.files, '--quiesce', ...extra], { timeoutMs: 120_000 });
  let settled = false;
  void pending.then(() => { settled = true; });
  let seen = 0;
  while (!settled) {
    await Promise.race([pending, new Promise((r) => setTimeout(r, 250))]);
    if (settled || !v.mnt) continue;
    const why = deadlocked(v.s);
    seen = why ? seen + 1 : 0;
    if (seen >= 8) {
      await unstick(t, v);
      await pending;
      throw new Error(`the mount deadlocked while starting a hook: ${why}`);
    }
  }
  return { ...(await pending), ms: Date.now() - started };
}

function okRun(t: ExecutionContext, r: RunResult, what: string): void {
  t.is(r.code, 0, `${what}: exit ${r.code}; stderr: ${r.stderr}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whether any process of process group `pgid` is left. */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- no deadlock, no leak

q('ten quiesced snapshots of a mounted volume in a row: the hooks never deadlock the mount', async (t) => {
  const v = await setup(t, 'mounted', (log) => ({ pre: record(log, 'echo pre >> hook-writes.txt'), post: record(log) }));
  for (let i = 0; i < 10; i++) {
    const r = await snapshotQuiesced(t, v);
    okRun(t, r, `quiesced snapshot ${i}`);
  }
  t.is(readLog(v.log).length, 20, 'both hooks ran each time');
  t.deepEqual((await listing(t, v)).map((e) => e.consistency), Array(10).fill('app'));
  t.is(fs.readFileSync(path.join(v.files, 'hook-writes.txt'), 'utf8'), 'pre\n'.repeat(10));
});

// A hook that leaves a process behind (a helper started in the background) must not keep
// /dev/fuse open: the mount would then hang, instead of failing with ENOTCONN, once the
// daemon is gone. Nor should it hold the volume's database files.
each('a hook inherits none of the descriptors of the process running it (no /dev/fuse, nothing of .replfs/)', async (t, mode) => {
  const v = await setup(t, mode, (log) => ({ pre: `ls -l /proc/$$/fd > '${log}.pre-fds'`, post: `ls -l /proc/$$/fd > '${log}.post-fds'` }));
  const r = await snapshotQuiesced(t, v);
  okRun(t, r, 'snapshot --quiesce');
  for (const phase of ['pre', 'post']) {
    const fds = fs.readFileSync(`${v.log}.${phase}-fds`, 'utf8');
    const leaked = fds.split('\n').filter((l) => l.includes('/dev/fuse') || l.includes('/.replfs/'));
    t.deepEqual(leaked, [], `${phase}-hook descriptors:\n${fds}`);
    t.true(fds.includes(' 0 -> /dev/null'), `${phase}: stdin is /dev/null`);
  }
}, ['unmounted', 'mounted']);

// ---------------------------------------------------------------- order and environment

each('pre and post run in order around the cut, told the snapshot, volume, mountpoint and phase', async (t, mode) => {
  const v = await setup(t, mode, (log) => ({
    pre: record(log, mode === 'unmounted' ? '' : 'echo "written by the pre-hook" > from-pre.txt'),
    post: record(log, mode === 'unmounted' ? '' : 'echo "written by the post-hook" > from-post.txt'),
  }));
  const r = await snapshotQuiesced(t, v, ['--label', 'quiesced', '--json']);
  okRun(t, r, 'snapshot --quiesce');
  t.is(r.stderr, '', 'no warning when both hooks succeed');
  const res = JSON.parse(r.stdout) as { snapshot: SnapshotJson; quiesced: boolean; hooks: Record<string, { status: string; exitCode: number | null } | null> };
  t.true(res.quiesced);
  t.is(res.snapshot.consistency, 'app');
  t.is(res.hooks.pre?.status, 'ok');
  t.is(res.hooks.post?.status, 'ok');
  const name = res.snapshot.name;
  const runs = readLog(v.log);
  t.is(runs.length, 2, 'each hook ran once');
  const [pre, post] = runs;
  checkEnv(t, v, pre, 'pre', name);
  checkEnv(t, v, post, 'post', name, 'ok');
  // The cut (sourceTime) lies after the pre-hook ended and before the post-hook began.
  const cut = Date.parse(res.snapshot.sourceTime);
  t.true(pre!.endMs <= cut, `pre ended ${pre!.endMs}, cut ${cut}`);
  t.true(cut <= post!.beginMs, `cut ${cut}, post began ${post!.beginMs}`);
  const snaps = await listing(t, v);
  t.deepEqual(snaps.map((e) => [e.name, e.consistency, e.label]), [[name, 'app', 'quiesced']]);
  if (v.mnt) {
    // The pre-hook's own write went through the mount, was not held, and is in the snapshot;
    // the post-hook's came after the cut.
    const view = path.join(v.mnt, '.snapshots', name);
    t.is(fs.readFileSync(path.join(view, 'from-pre.txt'), 'utf8'), 'written by the pre-hook\n');
    t.false(fs.existsSync(path.join(view, 'from-post.txt')), 'the post-hook ran after the cut');
    t.is(fs.readFileSync(path.join(v.mnt, 'from-post.txt'), 'utf8'), 'written by the post-hook\n');
  }
  // The human form prints the name only; a plain snapshot runs no hook and is crash-consistent.
  const second = await snapshotQuiesced(t, v);
  okRun(t, second, 'second snapshot --quiesce');
  t.regex(second.stdout, /^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z(-\d+)?\n$/);
  t.is(readLog(v.log).length, 4);
  checkEnv(t, v, readLog(v.log)[2], 'pre', second.stdout.trim());
  const plain = await replfs(v.s, ['snapshot', v.files]);
  okRun(t, plain, 'snapshot');
  t.is(readLog(v.log).length, 4, 'no hook without --quiesce');
  t.deepEqual((await listing(t, v)).map((e) => e.consistency), ['app', 'app', 'crash']);
  if (v.mnt) t.true(await isMounted(v.mnt));
});

for (const mode of ['unmounted', 'mounted'] as const) q(`--quiesce with no hooks configured takes a crash-consistent snapshot (${mode})`, async (t) => {
  const v = await setup(t, mode, () => undefined);
  const r = await snapshotQuiesced(t, v, ['--json']);
  okRun(t, r, 'snapshot --quiesce');
  t.is(r.stderr, '');
  const res = JSON.parse(r.stdout) as { snapshot: SnapshotJson; quiesced: boolean; hooks: { pre: unknown; post: unknown } };
  t.true(res.quiesced);
  t.is(res.snapshot.consistency, 'crash', '"app" needs a pre-hook that succeeded');
  t.deepEqual(res.hooks, { pre: null, post: null });
});

each('--quiesce with only a post-hook: it runs, told there was no pre-hook; crash-consistent', async (t, mode) => {
  const v = await setup(t, mode, (log) => ({ post: record(log) }));
  const r = await snapshotQuiesced(t, v);
  okRun(t, r, 'snapshot --quiesce');
  const name = r.stdout.trim();
  const runs = readLog(v.log);
  t.is(runs.length, 1);
  checkEnv(t, v, runs[0], 'post', name, 'none');
  t.deepEqual((await listing(t, v)).map((e) => e.consistency), ['crash']);
}, ['unmounted', 'mounted']);

// ---------------------------------------------------------------- failures

each('a pre-hook that fails: crash-consistent snapshot, the post-hook still runs, a warning on stderr', async (t, mode) => {
  const v = await setup(t, mode, (log) => ({
    pre: record(log, 'echo "cannot flush the cache" >&2; exit 3'),
    post: record(log),
  }));
  const r = await snapshotQuiesced(t, v);
  okRun(t, r, 'snapshot --quiesce');
  const name = r.stdout.trim();
  t.regex(name, /^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z(-\d+)?$/, 'stdout is the name only');
  t.true(r.stderr.startsWith('replfs snapshot: warning: the pre-hook failed (exit 3): cannot flush the cache'), r.stderr);
  const runs = readLog(v.log);
  t.is(runs.length, 2);
  checkEnv(t, v, runs[0], 'pre', name);
  checkEnv(t, v, runs[1], 'post', name, 'failed');
  t.deepEqual((await listing(t, v)).map((e) => [e.name, e.consistency]), [[name, 'crash']]);
  // --json says which hook failed and how.
  const j = await snapshotQuiesced(t, v, ['--json']);
  okRun(t, j, 'snapshot --quiesce --json');
  const res = JSON.parse(j.stdout) as { snapshot: SnapshotJson; hooks: Record<string, { status: string; exitCode: number | null; stderr: string }> };
  t.is(res.hooks.pre!.status, 'failed');
  t.is(res.hooks.pre!.exitCode, 3);
  t.true(res.hooks.pre!.stderr.includes('cannot flush the cache'));
  t.is(res.hooks.post!.status, 'ok');
  t.is(res.snapshot.consistency, 'crash');
});

each('a pre-hook that hangs is stopped after preTimeoutMs: crash-consistent snapshot, the post-hook runs, time bounded', async (t, mode) => {
  const pidfile = (log: string) => `${log}.pre.pid`;
  const v = await setup(t, mode, (log) => ({
    // Ignores SIGTERM (and so does its sleep): only the SIGKILL that follows ends it.
    pre: `echo $$ > '${pidfile(log)}'; ${record(log)}; trap '' TERM; sleep 60; echo "not stopped" >> '${log}'`,
    post: record(log),
    preTimeoutMs: 500,
  }));
  const r = await snapshotQuiesced(t, v);
  okRun(t, r, 'snapshot --quiesce');
  t.log(`took ${r.ms} ms`);
  t.true(r.ms < 30_000, `bounded: 500 ms, the kill grace, and the snapshot (the hook alone would take 60 s); took ${r.ms} ms`);
  t.true(r.ms >= 500, 'waited for the pre-hook at least preTimeoutMs');
  const name = r.stdout.trim();
  t.true(r.stderr.startsWith('replfs snapshot: warning: the pre-hook timed out'), r.stderr);
  const runs = readLog(v.log);
  t.is(runs.length, 2);
  checkEnv(t, v, runs[0], 'pre', name);
  checkEnv(t, v, runs[1], 'post', name, 'timeout');
  t.deepEqual((await listing(t, v)).map((e) => [e.name, e.consistency]), [[name, 'crash']]);
  const pgid = Number(fs.readFileSync(pidfile(v.log), 'utf8'));
  await waitFor(() => !groupAlive(pgid), 10_000, 'the hung hook and its children to be gone');
  await sleep(300);
  t.false(fs.readFileSync(v.log, 'utf8').includes('not stopped'), 'the hook never went on');
});

each('a post-hook that hangs is stopped after postTimeoutMs: the snapshot stands, a warning on stderr', async (t, mode) => {
  const v = await setup(t, mode, (log) => ({ pre: record(log), post: `${record(log)}; exec sleep 60`, postTimeoutMs: 500 }));
  const r = await snapshotQuiesced(t, v);
  okRun(t, r, 'snapshot --quiesce');
  t.true(r.ms < 30_000, `bounded (the hook alone would take 60 s); took ${r.ms} ms`);
  t.true(r.stderr.startsWith('replfs snapshot: warning: the post-hook timed out'), r.stderr);
  const name = r.stdout.trim();
  t.deepEqual((await listing(t, v)).map((e) => [e.name, e.consistency]), [[name, 'app']], 'the pre-hook succeeded: app-consistent');
}, ['unmounted', 'mounted']);

each('onPreFailure "abort": a failing or hanging pre-hook means exit 4, no snapshot, and the post-hook still runs', async (t, mode) => {
  const v = await setup(t, mode, (log) => ({
    pre: record(log, `if [ -e '${log}.hang' ]; then exec sleep 60; fi; echo "database is locked" >&2; exit 3`),
    post: record(log),
    preTimeoutMs: 500,
    onPreFailure: 'abort',
  }));
  const epoch = await epochOf(t, v);
  const before = await describeTree(v.files);
  const r = await snapshotQuiesced(t, v);
  t.is(r.code, ExitCode.refused, `exit 4 (refused); stderr: ${r.stderr}`);
  t.is(r.stdout, '', 'no name: no snapshot');
  t.true(r.stderr.startsWith('replfs snapshot: the pre-hook failed (exit 3); no snapshot taken (quiesce.onPreFailure is "abort")'), r.stderr);
  t.true(r.stderr.includes('database is locked'), 'the hint shows what the hook said');
  let runs = readLog(v.log);
  t.is(runs.length, 2, 'the post-hook ran');
  checkEnv(t, v, runs[0], 'pre', null);
  checkEnv(t, v, runs[1], 'post', runs[0]!.env.REPLFS_SNAPSHOT!, 'failed');
  fs.writeFileSync(`${v.log}.hang`, '');
  const hung = await snapshotQuiesced(t, v);
  t.is(hung.code, ExitCode.refused, hung.stderr);
  t.is(hung.stdout, '');
  t.true(hung.stderr.startsWith('replfs snapshot: the pre-hook timed out after 500 ms; no snapshot taken'), hung.stderr);
  t.true(hung.ms < 30_000, `bounded (the hook alone would take 60 s); took ${hung.ms} ms`);
  runs = readLog(v.log);
  t.is(runs.length, 4);
  t.is(runs[3]!.env.REPLFS_PRE_STATUS, 'timeout');
  t.deepEqual(await listing(t, v), [], 'no snapshot');
  t.is(await epochOf(t, v), epoch, 'the epoch did not move');
  t.deepEqual(await describeTree(v.files), before);
  // Nothing is left reserved: the next snapshot without hooks is taken, under a fresh name.
  const plain = await replfs(v.s, ['snapshot', v.files]);
  okRun(t, plain, 'plain snapshot');
  t.deepEqual((await listing(t, v)).map((e) => e.name), [plain.stdout.trim()]);
}, ['unmounted', 'mounted']);

for (const [quiesce, message] of [
  [{ onPreFailure: 'maybe' }, 'quiesce.onPreFailure: must be "crash" or "abort"'],
  [{ pre: 'true', preTimeoutMs: 0 }, 'quiesce.preTimeoutMs: must be a whole number of milliseconds between 1 and 3600000'],
  [{ post: '' }, 'quiesce.post: must be a shell command (a non-empty string) or null'],
  [{ pre: 'true', preHook: 'true' }, 'quiesce.preHook: unknown key'],
  ['sync', 'quiesce: must be an object'],
] as const) {
  q(`a bad quiesce config (${JSON.stringify(quiesce)}) is refused, naming the field, and takes no snapshot`, async (t) => {
    const v = await setup(t, 'unmounted', () => quiesce as Quiesce);
    const r = await snapshotQuiesced(t, v);
    t.is(r.code, ExitCode.usage, r.stderr);
    t.is(r.stdout, '');
    t.true(r.stderr.startsWith(`replfs snapshot: ${v.dir}/.replfs/config.json: ${message}`), r.stderr);
    t.deepEqual(await listing(t, v), []);
  });
}

// ---------------------------------------------------------------- writers

/** A writer through the mount: appends numbered lines to `file`, one write() each, until told to stop. */
function startWriter(file: string, stop: string): { child: ChildProcess; done: Promise<{ code: number | null; stderr: string; out: string }> } {
  const js = `
    const fs = require('fs');
    const fd = fs.openSync(${JSON.stringify(file)}, 'a');
    let i = 0, worst = 0;
    while (!fs.existsSync(${JSON.stringify(stop)})) {
      const t0 = process.hrtime.bigint();
      fs.writeSync(fd, i + '\\n');
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (ms > worst) worst = ms;
      i++;
    }
    fs.closeSync(fd);
    process.stdout.write(JSON.stringify({ lines: i, worstMs: worst }));`;
  const child = spawn(process.execPath, ['-e', js], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const done = new Promise<{ code: number | null; stderr: string; out: string }>((resolve) => child.on('close', (code) => resolve({ code, stderr, out })));
  return { child, done };
}

function lineCount(file: string): number {
  const text = fs.readFileSync(file, 'utf8');
  return text.length === 0 ? 0 : text.split('\n').length - 1;
}

/** The file holds exactly the lines 0..n-1, each whole: returns n. */
function prefixLines(t: ExecutionContext, text: string, what: string): number {
  t.true(text === '' || text.endsWith('\n'), `${what}: ends with a whole line`);
  const lines = text === '' ? [] : text.slice(0, -1).split('\n');
  const bad = lines.findIndex((l, i) => l !== String(i));
  t.is(bad, -1, `${what}: line ${bad} is ${JSON.stringify(lines[bad])}`);
  return lines.length;
}

q('a writer through the mount is held only for the cut, and resumes; each snapshot holds a whole prefix of its writes', async (t) => {
  const v = await setup(t, 'mounted', (log) => ({ pre: `${record(log)}; sleep 0.3`, post: record(log) }));
  const file = path.join(v.files, 'sub', 'stream.log');
  const stop = path.join(v.s.dir, 'stop-writer');
  const w = startWriter(file, stop);
  t.teardown(() => { fs.writeFileSync(stop, ''); w.child.kill('SIGKILL'); });
  await waitFor(() => fs.existsSync(file) && lineCount(file) > 100, 30_000, 'the writer to start');
  const names: string[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await snapshotQuiesced(t, v);
    okRun(t, r, `quiesced snapshot ${i}`);
    names.push(r.stdout.trim());
    // It resumes: more lines arrive after the snapshot returned.
    const after = lineCount(file);
    await waitFor(() => lineCount(file) > after + 50, 30_000, `the writer to resume after snapshot ${i}`);
  }
  fs.writeFileSync(stop, '');
  const end = await w.done;
  t.is(end.code, 0, `the writer saw no error: ${end.stderr}`);
  const { lines, worstMs } = JSON.parse(end.out) as { lines: number; worstMs: number };
  t.log(`${lines} writes, the slowest took ${worstMs.toFixed(1)} ms`);
  t.is(prefixLines(t, fs.readFileSync(file, 'utf8'), 'live'), lines, 'every write is in the live file');
  let last = 0;
  for (const name of names) {
    const n = prefixLines(t, fs.readFileSync(path.join(v.files, '.snapshots', name, 'sub', 'stream.log'), 'utf8'), name);
    t.true(n > last, `${name} has more lines (${n}) than the snapshot before (${last})`);
    last = n;
  }
  t.true(last < lines, 'the writer went on after the last snapshot');
  t.deepEqual((await listing(t, v)).map((e) => e.consistency), ['app', 'app', 'app']);
});

// ---------------------------------------------------------------- a real application

const SQLITE = spawnSync('/bin/sh', ['-c', 'command -v sqlite3']).status === 0;

/** sqlite3 on `db`, statements on stdin; returns stdout. */
async function sqlite(t: ExecutionContext, db: string, sql: string): Promise<string> {
  const r = await run('sqlite3', ['-batch', db], { input: sql });
  t.is(r.code, 0, `sqlite3 ${db}: ${r.stderr}`);
  t.is(r.stderr, '', `sqlite3 ${db} wrote to stderr`);
  return r.stdout;
}

/**
 * One sqlite3 process holding the database open (WAL mode) and running small transactions
 * back to back, each of three rows of one batch number, until stopped. Each transaction is
 * acknowledged before the next is sent, so the count of acknowledged ones is known.
 */
function startDbWriter(db: string): { stop: () => Promise<{ acked: number; code: number | null; stderr: string }> } {
  const child = spawn('sqlite3', ['-batch', db], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  let buffered = '';
  let acked = 0;
  let stopping = false;
  let ended = false;
  const end = (): void => { if (!ended) { ended = true; child.stdin!.end(); } };
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const send = (): void => {
    const i = acked + 1;
    child.stdin!.write(`BEGIN IMMEDIATE;
INSERT INTO t(batch, v) VALUES (${i}, randomblob(200));
INSERT INTO t(batch, v) VALUES (${i}, randomblob(5000));
INSERT INTO t(batch, v) VALUES (${i}, randomblob(40));
COMMIT;
SELECT 'ack ' || ${i};
`);
  };
  child.stdout!.on('data', (d: Buffer) => {
    buffered += d.toString();
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line === `ack ${acked + 1}`) {
        acked++;
        if (!stopping) send();
        else end();
      }
    }
  });
  child.stdin!.write('.timeout 20000\n');
  send();
  const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return {
    stop: async () => {
      // What was sent is still run and acknowledged; then sqlite3 reads the end of its input.
      stopping = true;
      end();
      const code = await closed;
      return { acked, code, stderr };
    },
  };
}

q('SQLite in WAL mode under continuous writes: every quiesced snapshot is a valid database, rows only grow', async (t) => {
  if (!SQLITE) {
    t.log('sqlite3 is not installed (`command -v sqlite3` failed): nothing to test here');
    t.pass();
    return;
  }
  t.timeout(240_000);
  const v = await setup(t, 'mounted', (log) => ({
    // The pre-hook checkpoints the WAL into the database file, while writes go on.
    pre: `${record(log)}; sqlite3 -batch app/shop.db '.timeout 20000' 'PRAGMA wal_checkpoint(TRUNCATE);' >> '${log}.checkpoints'`,
    post: record(log),
  }), ['--block-size', '4K']);
  const db = path.join(v.files, 'app', 'shop.db');
  fs.mkdirSync(path.dirname(db));
  t.is((await sqlite(t, db, 'PRAGMA journal_mode=WAL;\nCREATE TABLE t(id INTEGER PRIMARY KEY, batch INTEGER NOT NULL, v BLOB);\n')).trim(), 'wal');
  const writer = startDbWriter(db);
  let stopped = false;
  t.teardown(async () => { if (!stopped) await writer.stop(); });
  await waitFor(() => fs.existsSync(`${db}-wal`), 20_000, 'the WAL file');
  await sleep(500);
  const names: string[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await snapshotQuiesced(t, v, ['--label', `sqlite ${i}`]);
    okRun(t, r, `quiesced snapshot ${i}`);
    t.is(r.stderr, '', `snapshot ${i}: no hook warning`);
    names.push(r.stdout.trim());
    await sleep(300 + 100 * i);
  }
  const end = await writer.stop();
  stopped = true;
  t.is(end.code, 0, `the writer exited cleanly: ${end.stderr}`);
  t.is(end.stderr, '', 'no SQLite error during the snapshots');
  t.true(end.acked > 10, `the writer committed ${end.acked} transactions`);
  const checkpoints = fs.readFileSync(`${v.log}.checkpoints`, 'utf8').trim().split('\n');
  t.is(checkpoints.length, 5, 'the pre-hook checkpointed before each snapshot');
  t.log(`checkpoint results (busy|log|checkpointed): ${checkpoints.join(', ')}`);

  const counts: number[] = [];
  for (const name of names) {
    const copy = path.join(v.s.dir, 'copies', name);
    fs.mkdirSync(copy, { recursive: true });
    const from = path.join(v.files, '.snapshots', name, 'app');
    const files = fs.readdirSync(from);
    t.true(files.includes('shop.db'), `${name} has the database`);
    fs.copyFileSync(path.join(from, 'shop.db'), path.join(copy, 'shop.db'));
    if (files.includes('shop.db-wal')) fs.copyFileSync(path.join(from, 'shop.db-wal'), path.join(copy, 'shop.db-wal'));
    const cdb = path.join(copy, 'shop.db');
    t.is((await sqlite(t, cdb, 'PRAGMA integrity_check;\n')).trim(), 'ok', `${name}: integrity_check`);
    const [rows, batches, lo, hi] = (await sqlite(t, cdb, "SELECT count(*) || ' ' || count(DISTINCT batch) || ' ' || ifnull(min(batch), 0) || ' ' || ifnull(max(batch), 0) FROM t;\n"))
      .trim().split(' ').map(Number) as [number, number, number, number];
    t.is(rows, 3 * batches, `${name}: whole transactions only (${rows} rows, ${batches} batches)`);
    t.is(lo, batches === 0 ? 0 : 1, `${name}: batches start at 1`);
    t.is(hi, batches, `${name}: no batch missing`);
    t.is((await sqlite(t, cdb, 'SELECT count(*) FROM (SELECT batch FROM t GROUP BY batch HAVING count(*) <> 3);\n')).trim(), '0');
    counts.push(rows);
  }
  t.log(`rows per snapshot: ${counts.join(', ')}; writer committed ${end.acked} transactions`);
  for (let i = 1; i < counts.length; i++) t.true(counts[i]! >= counts[i - 1]!, `rows never decrease: ${counts.join(', ')}`);
  t.true(counts.at(-1)! > counts[0]!, 'writes went on between the snapshots');
  const live = Number((await sqlite(t, db, 'SELECT count(*) FROM t;\n')).trim());
  t.is(live, 3 * end.acked, 'the live database has every acknowledged transaction');
  t.true(live >= counts.at(-1)!);
  t.deepEqual((await listing(t, v)).map((e) => e.consistency), ['app', 'app', 'app', 'app', 'app']);
});
