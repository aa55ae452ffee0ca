// examples/sqlite, run for real: the shipped policy passes `replfs config --check`; then an
// SQLite application (examples/sqlite/app.sh) writes continuously into a protected directory
// mounted with a copy of that policy (a quiesced snapshot every 2 s, each synced to a local
// replica, retention on both sides), and its hooks (examples/sqlite/hooks) hold the
// database's write lock and checkpoint the WAL around every cut. Afterwards the replica is
// mounted read-only and every snapshot it holds is checked: its database file alone passes
// PRAGMA integrity_check and the ledger's invariants, carries the mark the pre-hook wrote
// for that very snapshot, and lacks no transaction of its WAL (nothing was committed between
// the checkpoint and the cut); transfers only grow from one snapshot to the next, and the
// newest holds every transfer the application committed.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import test from '../helpers/ava.js';
import {
  ROOT, scratch, replfs, run, initVolume, mountVolume, isMounted, waitFor, exited, type Scratch,
} from '../helpers/env.js';
import type { FullStatus } from '../../src/cli/status.js';
import type { DestinationStatus } from '../../src/cli/operator.js';

const EXAMPLE = path.join(ROOT, 'examples', 'sqlite');
const CONFIG = path.join(EXAMPLE, 'replfs.json');
const APP = path.join(EXAMPLE, 'app.sh');
const HOOKS = path.join(EXAMPLE, 'hooks');
const SQLITE = spawnSync('/bin/sh', ['-c', 'command -v sqlite3'], { stdio: 'ignore' }).status === 0;
/** The test's schedule, and the retention it gives each side (small, so that both prune). */
const EVERY = '2s';
const KEEP_SOURCE = 3;
const KEEP_REPLICA = 5;
/** Scheduled syncs to see while the application writes. */
const SYNCS_WHILE_WRITING = 5;
/** The ledger app.sh keeps: ten accounts of 1000. */
const ACCOUNTS = 10;
const TOTAL = ACCOUNTS * 1000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The parts of examples/sqlite/replfs.json the README says to change, and the test does. */
interface ExamplePolicy {
  snapshots: { schedule: { every: string } | null; quiesce: boolean; label: string };
  quiesce: { pre: string; post: string; env: Record<string, string> } & Record<string, unknown>;
  retention: Record<string, number | string> | null;
  destinations: Record<string, { url: string; retention?: Record<string, number | string> | null } & Record<string, unknown>>;
}

function readPolicy(file: string): ExamplePolicy {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as ExamplePolicy;
}

function writePolicy(file: string, p: ExamplePolicy): void {
  // Renamed into place: the daemon rereads the file when it changes and must never see half of it.
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(p, null, 2) + '\n');
  fs.renameSync(`${file}.tmp`, file);
}

function requireSqlite(t: ExecutionContext): boolean {
  if (SQLITE) return true;
  t.fail('sqlite3 is not installed (apt-get install -y sqlite3; .ci/run installs it): the example cannot run');
  return false;
}

/** sqlite3 on `db`, statements on stdin, which must succeed silently; returns stdout trimmed. */
async function sqlite(t: ExecutionContext, db: string, sql: string): Promise<string> {
  const r = await run('sqlite3', ['-batch', '-bail', db], { input: sql });
  t.is(r.code, 0, `sqlite3 ${db}: ${r.stderr}`);
  t.is(r.stderr, '', `sqlite3 ${db} wrote to stderr`);
  return r.stdout.trim();
}

/** Processes whose command line holds `text` (zombies have none). */
function processesMentioning(text: string): Array<{ pid: number; cmd: string }> {
  const out: Array<{ pid: number; cmd: string }> = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    let cmd: string;
    try {
      cmd = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (cmd.includes(text)) out.push({ pid: Number(name), cmd: cmd.split('\0').join(' ').trim() });
  }
  return out;
}

interface App {
  child: ChildProcess;
  /** Asks it to stop (SIGTERM) and waits: its exit code and output. */
  stop(): Promise<{ code: number | null; stdout: string; stderr: string }>;
}

/** `app.sh run DB`: writes until SIGTERM. */
function startApp(db: string): App {
  const child = spawn(APP, ['run', db], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return {
    child,
    stop: async () => {
      child.kill('SIGTERM');
      return { code: await closed, stdout, stderr };
    },
  };
}

async function status(t: ExecutionContext, s: Scratch, dir: string): Promise<FullStatus> {
  const r = await replfs(s, ['status', dir, '--json']);
  t.is(r.code, 0, `replfs status: ${r.stderr}`);
  return JSON.parse(r.stdout) as FullStatus;
}

function destination(st: FullStatus): DestinationStatus {
  const d = st.operations?.destinations.find((x) => x.name === 'replica');
  if (!d) throw new Error(`replfs status shows no destination "replica": ${JSON.stringify(st.operations?.destinations)}`);
  return d;
}

interface HookLine { at: number; phase: string; snapshot: string; message: string }

/** hooks.log: `<time> <phase> <snapshot> <message>` per line. */
function hookLog(runDir: string): HookLine[] {
  const file = path.join(runDir, 'hooks.log');
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((line) => {
    const [at, phase, snapshot, ...message] = line.split(' ');
    return { at: Date.parse(at!), phase: phase!, snapshot: snapshot!, message: message.join(' ') };
  });
}

interface SnapshotJson { name: string; epoch: number; sourceTime: string; label: string | null; consistency: string }

async function snapshots(t: ExecutionContext, s: Scratch, dir: string): Promise<SnapshotJson[]> {
  const r = await replfs(s, ['snapshots', dir, '--json']);
  t.is(r.code, 0, `replfs snapshots ${dir}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { snapshots: SnapshotJson[] }).snapshots;
}

/** What one copy of the database says: transfers, and whether the ledger and the marks add up. */
interface DbFacts { integrity: string; transfers: number; sum: number; unbalanced: number; marked: number }

async function dbFacts(t: ExecutionContext, db: string, snapshot: string): Promise<DbFacts> {
  const integrity = await sqlite(t, db, 'PRAGMA integrity_check;\n');
  const row = await sqlite(t, db, `SELECT (SELECT count(*) FROM transfers) || ' ' || (SELECT sum(balance) FROM accounts) || ' ' ||
  (SELECT count(*) FROM accounts a WHERE balance <> 1000
     + (SELECT ifnull(sum(amount), 0) FROM transfers WHERE dst = a.id)
     - (SELECT ifnull(sum(amount), 0) FROM transfers WHERE src = a.id)) || ' ' ||
  (SELECT count(*) FROM replfs_quiesce WHERE snapshot = '${snapshot}');\n`);
  const [transfers, sum, unbalanced, marked] = row.split(' ').map(Number) as [number, number, number, number];
  return { integrity, transfers, sum, unbalanced, marked };
}

test('examples/sqlite: the shipped policy passes replfs config --check, and its scripts are executable and parse', async (t) => {
  const s = scratch(t);
  const r = await replfs(s, ['config', CONFIG, '--check']);
  t.is(r.code, 0, `replfs config --check: ${r.stderr}`);
  t.is(r.stdout, `${CONFIG}: valid\n`);
  const p = readPolicy(CONFIG);
  // What the README tells a user to change, and what the test below changes, is there.
  t.true(p.snapshots.quiesce, 'scheduled snapshots are quiesced');
  t.truthy(p.snapshots.schedule, 'snapshots on a schedule');
  t.is(p.quiesce.pre, '"$SQLITE_HOOKS/quiesce-pre.sh"');
  t.is(p.quiesce.post, '"$SQLITE_HOOKS/quiesce-post.sh"');
  for (const key of ['SQLITE_HOOKS', 'APP_DB', 'QUIESCE_RUN']) t.truthy(p.quiesce.env[key], `quiesce.env.${key}`);
  t.truthy(p.retention, 'retention on the source');
  t.truthy(p.destinations.replica?.url, 'a destination "replica"');
  t.truthy(p.destinations.replica?.retention, 'retention on the replica');
  t.is(p.destinations.replica?.schedule, undefined, 'the destination follows the snapshot schedule');
  for (const script of ['app.sh', 'run.sh', 'hooks/quiesce-pre.sh', 'hooks/quiesce-post.sh', 'hooks/hold-lock.sh', 'hooks/common.sh']) {
    const file = path.join(EXAMPLE, script);
    const syntax = await run('/bin/sh', ['-n', file]);
    t.is(syntax.code, 0, `${script} parses: ${syntax.stderr}`);
    if (script !== 'hooks/common.sh') t.truthy(fs.statSync(file).mode & 0o100, `${script} is executable`);
  }
});

test('examples/sqlite: under continuous writes, every scheduled snapshot is quiesced, synced, and a whole database on the replica', async (t) => {
  if (!requireSqlite(t)) return;
  t.timeout(180_000);
  const started = Date.now();
  const s = scratch(t);
  const data = path.join(s.dir, 'data');
  const replica = path.join(s.dir, 'replica');
  const runDir = path.join(s.dir, 'run');
  const policyFile = path.join(s.dir, 'policy.json');
  const db = path.join(data, 'app', 'ledger.db');

  // The application's database exists before the directory is protected, as when one
  // starts protecting an application that runs already.
  const created = await run(APP, ['init', db]);
  t.is(created.code, 0, `app.sh init: ${created.stderr}`);
  await initVolume(t, s, data, ['--block-size', '4K']);

  // The shipped policy with this test's paths (what the README says to change), a
  // schedule of seconds, and retention small enough to prune on both sides.
  const policy = readPolicy(CONFIG);
  policy.snapshots.schedule = { every: EVERY };
  policy.quiesce.env.SQLITE_HOOKS = HOOKS;
  policy.quiesce.env.QUIESCE_RUN = runDir;
  policy.retention = { 'keep-last': KEEP_SOURCE };
  policy.destinations.replica!.url = replica;
  policy.destinations.replica!.retention = { 'keep-last': KEEP_REPLICA };
  writePolicy(policyFile, policy);
  const checked = await replfs(s, ['config', policyFile, '--check']);
  t.is(checked.code, 0, `the test's policy: ${checked.stderr}`);

  await mountVolume(t, s, data, undefined, ['--config', policyFile]);
  const app = startApp(db);
  const appStarted = Date.now();
  let appStopped = false;
  // Before the unmount that mountVolume registered: the application and any lock holder
  // left behind (found by this test's own paths) must not keep the mount busy.
  t.teardown(async () => {
    if (!appStopped) {
      app.child.kill('SIGTERM');
      await Promise.race([exited(app.child), sleep(10_000)]);
    }
    for (const p of [...processesMentioning(db), ...processesMentioning(runDir)]) {
      try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
    }
  });

  // Scheduled snapshots and syncs while it writes.
  const synced = new Set<string>();
  const syncErrors = new Set<string>();
  const watch = async (): Promise<DestinationStatus> => {
    const d = destination(await status(t, s, data));
    if (d.lastSync) synced.add(d.lastSync.snapshot);
    if (d.lastError) syncErrors.add(`${d.lastError.exit}: ${d.lastError.message}`);
    return d;
  };
  await waitFor(async () => {
    await watch();
    return synced.size >= SYNCS_WHILE_WRITING;
  }, 90_000, `${SYNCS_WHILE_WRITING} scheduled syncs`);
  t.true(app.child.exitCode === null, 'the application still writes');

  const end = await app.stop();
  appStopped = true;
  const stoppedAt = Date.now();
  t.is(end.code, 0, `the application saw no error: ${end.stderr}`);
  t.is(end.stderr, '', 'the application wrote nothing to stderr: no transaction failed while the hooks held the lock');
  const m = /app: stopped; (\d+) transfers committed/.exec(end.stdout);
  t.truthy(m, `app.sh says how many transfers it committed: ${end.stdout}`);
  const committed = Number(m?.[1] ?? NaN);
  t.log(`the application committed ${committed} transfers in ${((stoppedAt - appStarted) / 1000).toFixed(1)} s`);

  // One more scheduled snapshot, after the application stopped, reaches the replica.
  await waitFor(async () => {
    const d = await watch();
    return d.lastSync !== null && Date.parse(d.lastSync.sourceTime) > stoppedAt;
  }, 30_000, 'a sync of a snapshot taken after the application stopped');

  // The schedule is turned off by editing the file (the daemon rereads it within 2 s), and
  // once nothing runs any more the volume is unmounted: a quiesce under way would hold the
  // database open, and unmount would rightly refuse.
  policy.snapshots.schedule = null;
  writePolicy(policyFile, policy);
  let calm = 0;
  const settle = Date.now() + 30_000;
  while (calm < 2) {
    if (Date.now() > settle) throw new Error('the daemon did not settle within 30 s of the schedule being turned off');
    const st = await status(t, s, data);
    const d = destination(st);
    const lines = hookLog(runDir);
    const open = lines.filter((l) => l.phase === 'pre' && l.message === 'begin').length - lines.filter((l) => l.phase === 'post').length;
    calm = st.operations?.snapshots.schedule === null && !d.running && open === 0 ? calm + 1 : 0;
    await sleep(500);
  }
  const unmounted = await replfs(s, ['unmount', data]);
  t.is(unmounted.code, 0, `replfs unmount: ${unmounted.stderr}`);
  t.deepEqual(syncErrors, new Set(), 'no scheduled sync failed');

  // No process left behind: every lock holder was ended by its post-hook, and the holders'
  // files went with them.
  t.deepEqual(processesMentioning(runDir), [], 'no lock holder is left running');
  t.deepEqual(fs.readdirSync(runDir).filter((f) => f.startsWith('hold-')), [], 'no holder file is left');

  // What the daemon did: every scheduled snapshot was application-consistent.
  const daemonLog = fs.readFileSync(path.join(data, '.replfs', 'daemon.log'), 'utf8');
  const taken = [...daemonLog.matchAll(/snapshot (\S+) taken \(([a-z]+)-consistent\)/g)].map((x) => ({ name: x[1]!, consistency: x[2]! }));
  const syncedLog = [...daemonLog.matchAll(/synced (\S+) to replica/g)].map((x) => x[1]!);
  t.log(`${taken.length} scheduled snapshots, ${syncedLog.length} synced`);
  t.true(taken.length >= SYNCS_WHILE_WRITING + 1, `at least ${SYNCS_WHILE_WRITING + 1} snapshots taken: ${taken.length}`);
  t.deepEqual(taken.filter((x) => x.consistency !== 'application'), [], 'every scheduled snapshot is application-consistent');
  for (const name of syncedLog) t.true(taken.some((x) => x.name === name), `synced ${name} is a scheduled snapshot`);

  // What the hooks did, snapshot by snapshot: the pre-hook locked and checkpointed every
  // WAL frame, the post-hook released, after a pre-hook that succeeded.
  const hooks = hookLog(runDir);
  t.deepEqual(hooks.filter((l) => l.message.startsWith('failed')), [], 'no hook failed');
  const lockedAt = new Map<string, number>();
  const releasedAt = new Map<string, number>();
  for (const { name } of taken) {
    const mine = hooks.filter((l) => l.snapshot === name);
    const locked = mine.find((l) => l.phase === 'pre' && /^locked; checkpoint copied (\d+) of \1 WAL frames$/.test(l.message));
    const released = mine.find((l) => l.phase === 'post' && l.message === 'released (pre-hook: ok)');
    t.truthy(locked, `${name}: the pre-hook held the lock and checkpointed the whole WAL: ${JSON.stringify(mine)}`);
    t.truthy(released, `${name}: the post-hook released it: ${JSON.stringify(mine)}`);
    if (locked) lockedAt.set(name, locked.at);
    if (released) releasedAt.set(name, released.at);
  }

  // The source keeps what its retention says (with a snapshot a prune has not reached yet
  // at most), each application-consistent.
  const sourceSnaps = await snapshots(t, s, data);
  t.true(sourceSnaps.length >= 1 && sourceSnaps.length <= KEEP_SOURCE + 1, `the source keeps ${sourceSnaps.length} snapshots (keep-last ${KEEP_SOURCE})`);
  t.deepEqual(sourceSnaps.filter((x) => x.consistency !== 'app'), [], 'every source snapshot is app-consistent');

  // The replica, mounted read-only: every snapshot it holds.
  const mnt = path.join(s.dir, 'replica-mnt');
  fs.mkdirSync(mnt);
  await mountVolume(t, s, replica, mnt, ['--read-only']);
  const replicaSnaps = await snapshots(t, s, mnt);
  const names = replicaSnaps.map((x) => x.name);
  t.deepEqual(fs.readdirSync(path.join(mnt, '.snapshots')).filter((n) => n !== 'latest').sort(), [...names].sort(), '.snapshots lists what replfs snapshots lists');
  t.is(fs.readlinkSync(path.join(mnt, '.snapshots', 'latest')), names.at(-1) ?? '(none)', 'latest is the newest');
  t.true(replicaSnaps.length >= 3, `the replica holds several snapshots: ${names.join(', ')}`);
  t.true(replicaSnaps.length <= KEEP_REPLICA, `the replica keeps at most ${KEEP_REPLICA} (its retention): ${names.join(', ')}`);
  t.true(syncedLog.length > replicaSnaps.length, `the replica pruned: ${syncedLog.length} synced, ${replicaSnaps.length} kept`);

  const counts: number[] = [];
  let previousTime = 0;
  for (const snap of replicaSnaps) {
    const { name } = snap;
    t.is(snap.consistency, 'app', `${name}: the replica keeps the source's consistency`);
    t.true(taken.some((x) => x.name === name), `${name} is a scheduled source snapshot, under its name; the daemon's log:\n${daemonLog}`);
    const cut = Date.parse(snap.sourceTime);
    t.true(cut > previousTime, `${name}: in time order`);
    previousTime = cut;
    // The cut was made while the pre-hook's holder had the write lock.
    const locked = lockedAt.get(name);
    const released = releasedAt.get(name);
    t.true(locked !== undefined && released !== undefined && locked <= cut && cut <= released,
      `${name}: the cut (${snap.sourceTime}) lies between the lock (${locked}) and its release (${released})`);

    const from = path.join(mnt, '.snapshots', name, 'app');
    const files = fs.readdirSync(from);
    t.true(files.includes('ledger.db'), `${name} holds the database`);
    // The database file alone: the pre-hook checkpointed every frame with writes held.
    const alone = path.join(s.dir, 'copies', name, 'alone', 'ledger.db');
    fs.mkdirSync(path.dirname(alone), { recursive: true });
    fs.copyFileSync(path.join(from, 'ledger.db'), alone);
    const facts = await dbFacts(t, alone, name);
    t.is(facts.integrity, 'ok', `${name}: PRAGMA integrity_check of the database file alone`);
    t.is(facts.sum, TOTAL, `${name}: the balances add up to ${TOTAL}`);
    t.is(facts.unbalanced, 0, `${name}: every balance is 1000 plus what it received minus what it sent`);
    t.is(facts.marked, 1, `${name}: the pre-hook marked the database for this snapshot before the cut`);
    if (files.includes('ledger.db-wal')) {
      // With its WAL, as SQLite would recover it: nothing more, since no transaction was
      // committed between the checkpoint and the cut.
      const whole = path.join(s.dir, 'copies', name, 'with-wal', 'ledger.db');
      fs.mkdirSync(path.dirname(whole), { recursive: true });
      fs.copyFileSync(path.join(from, 'ledger.db'), whole);
      fs.copyFileSync(path.join(from, 'ledger.db-wal'), `${whole}-wal`);
      const withWal = await dbFacts(t, whole, name);
      t.is(withWal.integrity, 'ok', `${name}: PRAGMA integrity_check with the WAL`);
      t.is(withWal.transfers, facts.transfers, `${name}: the WAL holds no transaction the database file lacks`);
    }
    counts.push(facts.transfers);
  }
  t.log(`transfers per replica snapshot: ${counts.join(', ')}`);
  for (let i = 1; i < counts.length; i++) t.true(counts[i]! >= counts[i - 1]!, `transfers never decrease: ${counts.join(', ')}`);
  t.true(counts[0]! < counts.at(-1)!, `the application wrote between the snapshots: ${counts.join(', ')}`);
  t.is(counts.at(-1), committed, 'the newest replica snapshot holds every transfer the application committed');

  const done = await replfs(s, ['unmount', mnt]);
  t.is(done.code, 0, `unmount the replica: ${done.stderr}`);
  t.false(await isMounted(mnt));
  t.log(`took ${((Date.now() - started) / 1000).toFixed(1)} s`);
});
