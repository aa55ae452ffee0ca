// examples/cron/replfs-sync.sh for real: syncs to a local replica (mounted and not), a
// replfs:// destination with no server behind it (retried, then the alert), a server
// started while the script backs off (a retry succeeds), a replica changed outside replfs
// (refused at once, not retried), two runs at once (the lock), and its own usage errors.
import fs from 'node:fs';
import path from 'node:path';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import { ROOT, scratch, replfs, run, initVolume, mountVolume, waitFor, type Scratch, type RunResult } from '../helpers/env.js';
import { freePort, replfsOnPath, withPath } from '../helpers/examples.js';
import { background, startServer, tokenFile } from '../helpers/server.js';
import { parseCron } from '../../src/policy/schedule.js';

const SCRIPT = path.join(ROOT, 'examples/cron/replfs-sync.sh');
const STAMP = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ replfs-sync';

interface Env {
  s: Scratch;
  env: NodeJS.ProcessEnv;
  /** The script with these arguments, to its end. */
  sync(args: string[], more?: NodeJS.ProcessEnv): Promise<RunResult>;
}

/** A scratch with `replfs` on the PATH and a lock file of its own. */
function setup(t: ExecutionContext): Env {
  const s = scratch(t);
  const env = withPath(s, replfsOnPath(s), { REPLFS_SYNC_LOCK: path.join(s.dir, 'sync.lock') });
  return { s, env, sync: (args, more = {}) => run(SCRIPT, args, { env: { ...env, ...more }, cwd: s.dir, timeoutMs: 120_000 }) };
}

async function volume(t: ExecutionContext, s: Scratch, name = 'data'): Promise<string> {
  const dir = path.join(s.dir, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'a.txt'), 'alpha\n');
  fs.writeFileSync(path.join(dir, 'b.bin'), Buffer.alloc(300_000, 5));
  await initVolume(t, s, dir);
  return dir;
}

interface Snapshots { snapshots: Array<{ name: string; sourceTime: string }>; latest: string | null }

async function snapshots(t: ExecutionContext, s: Scratch, p: string): Promise<Snapshots> {
  const r = await replfs(s, ['snapshots', p, '--json']);
  t.is(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Snapshots;
}

/** An alert command that writes its environment and its stdin to `<file>.env` and `<file>.stdin`, once per run. */
function alertInto(file: string): string {
  return `env | grep '^REPLFS_SYNC_' | sort > ${file}.env; cat > ${file}.stdin; echo ran >> ${file}.count`;
}

function alertEnv(file: string): Record<string, string> {
  return Object.fromEntries(fs.readFileSync(`${file}.env`, 'utf8').trim().split('\n').map((l) => {
    const eq = l.indexOf('=');
    return [l.slice(0, eq), l.slice(eq + 1)];
  }));
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

test('a sync to a local replica logs one line from the JSON summary, and passes replfs sync options on', async (t) => {
  const { s, sync } = setup(t);
  const dir = await volume(t, s);
  await mountVolume(t, s, dir);
  const dest = path.join(s.dir, 'replica');
  const first = await sync([dir, dest]);
  t.is(first.code, 0, first.stderr);
  t.is(first.stderr, '');
  const src = await snapshots(t, s, dir);
  const sent = src.snapshots.at(-1)!;
  t.regex(first.stdout, new RegExp(`^${STAMP}: ${escapeRe(dir)} -> ${escapeRe(dest)}: snapshot ${sent.name} \\(source time ${escapeRe(sent.sourceTime)}, full copy\\): 3 files, 300006 bytes \\(293\\.0 KiB\\) sent, \\d+ bytes \\(\\d+\\.\\d KiB\\) on the wire, \\d+\\.\\d s\\n$`));
  t.is((await snapshots(t, s, dest)).latest, sent.name, 'the replica holds it');

  fs.appendFileSync(path.join(dir, 'a.txt'), 'more\n');
  const second = await sync([dir, dest, '--compress']);
  t.is(second.code, 0, second.stderr);
  const next = (await snapshots(t, s, dir)).snapshots.at(-1)!;
  t.regex(second.stdout, new RegExp(`: snapshot ${next.name} \\(source time [^,]+, since ${sent.name}\\): \\d+ files, 11 bytes sent, \\d+ bytes \\(\\d+\\.\\d KiB\\) on the wire`));

  const again = await sync([dir, dest, '--snapshot', next.name]);
  t.is(again.code, 0, again.stderr);
  t.regex(again.stdout, new RegExp(`: snapshot ${next.name} \\(source time [^)]+\\): already on the destination, nothing sent\\n$`));
});

test('a transient failure (no server: exit 10) is retried with backoff, then the alert runs with the details, and the script exits 10', async (t) => {
  const { s, sync } = setup(t);
  const dir = await volume(t, s);
  const token = tokenFile(s);
  const port = await freePort();
  const dest = `replfs://127.0.0.1:${port}/x`;
  const alert = path.join(s.dir, 'alert');
  const started = Date.now();
  const r = await sync(['--retries', '2', '--backoff', '1', '--alert', alertInto(alert), dir, dest, '--token-file', token]);
  const took = Date.now() - started;
  t.is(r.code, 10, r.stderr);
  t.is(r.stdout, '');
  const lines = r.stderr.trimEnd().split('\n');
  t.is(lines.length, 4, r.stderr);
  t.regex(lines[0]!, new RegExp(`^${STAMP}: ${escapeRe(dir)} -> ${escapeRe(dest)}: attempt 1 of 3 failed \\(exit 10 unavailable, transient\\): replfs sync: cannot reach 127\\.0\\.0\\.1:${port}: connection refused; retrying in 1s$`));
  t.regex(lines[1]!, /: attempt 2 of 3 failed \(exit 10 unavailable, transient\): .*; retrying in 2s$/, 'the wait doubles');
  t.regex(lines[2]!, /: failed \(exit 10 unavailable, transient, gave up after 3 attempts\): replfs sync: cannot reach /);
  t.regex(lines[3]!, /: still failing after 3 attempts; the next run will try again/);
  t.true(took >= 3000, `it waited 1 s, then 2 s (took ${took} ms)`);

  t.is(fs.readFileSync(`${alert}.count`, 'utf8'), 'ran\n', 'the alert ran once');
  const env = alertEnv(alert);
  t.like(env, {
    REPLFS_SYNC_VOLUME: dir, REPLFS_SYNC_DESTINATION: dest, REPLFS_SYNC_EXIT: '10', REPLFS_SYNC_EXIT_NAME: 'unavailable',
    REPLFS_SYNC_TRANSIENT: 'yes', REPLFS_SYNC_ATTEMPTS: '3',
  });
  t.regex(env.REPLFS_SYNC_MESSAGE!, new RegExp(`^replfs sync: cannot reach 127\\.0\\.0\\.1:${port}: connection refused$`));
  t.regex(env.REPLFS_SYNC_ADVICE!, /still failing after 3 attempts/);
  t.regex(fs.readFileSync(`${alert}.stdin`, 'utf8'), /^replfs sync: cannot reach 127\.0\.0\.1:\d+: connection refused$/m, 'the alert gets the error on stdin');

  // The same through the environment variables a crontab line would set; no retry at all.
  const once = await sync([dir, dest, '--token-file', token], { REPLFS_SYNC_RETRIES: '0', REPLFS_SYNC_ALERT: alertInto(alert) });
  t.is(once.code, 10);
  t.regex(once.stderr, /: failed \(exit 10 unavailable, transient, gave up after 1 attempt\)/);
  t.notRegex(once.stderr, /retrying/);
  t.is(alertEnv(alert).REPLFS_SYNC_ATTEMPTS, '1');
});

test('a server that comes up while the script backs off: a retry succeeds, and no alert runs', async (t) => {
  const { s, env } = setup(t);
  const dir = await volume(t, s);
  const token = tokenFile(s);
  const port = await freePort();
  const root = path.join(s.dir, 'replicas');
  fs.mkdirSync(root);
  const dest = `replfs://127.0.0.1:${port}/data`;
  const alert = path.join(s.dir, 'alert');
  const job = background(t, SCRIPT, ['--retries', '5', '--backoff', '2', '--alert', alertInto(alert), dir, dest, '--token-file', token], { env, cwd: s.dir });
  await waitFor(() => /attempt 1 of 6 failed \(exit 10 unavailable/.test(job.stderr()), 30_000, 'the first attempt to fail');
  await startServer(t, root, ['--token-file', token], `127.0.0.1:${port}`, s.env);
  t.is(await job.exit, 0, job.stderr());
  const sent = (await snapshots(t, s, dir)).snapshots.at(-1)!;
  t.regex(job.stdout(), new RegExp(`^${STAMP}: ${escapeRe(dir)} -> ${escapeRe(dest)}: snapshot ${sent.name} \\(source time [^,]+, full copy\\): 3 files, 300006 bytes`));
  t.is((await snapshots(t, s, path.join(root, 'data'))).latest, sent.name);
  t.false(fs.existsSync(`${alert}.count`), 'no alert for a sync that succeeded in the end');
});

test('a replica changed outside replfs (exit 4) is not retried: the alert runs, the advice names verify and --force, and --force then repairs it', async (t) => {
  const { s, sync } = setup(t);
  const dir = await volume(t, s);
  const dest = path.join(s.dir, 'replica');
  t.is((await sync([dir, dest])).code, 0);
  fs.writeFileSync(path.join(dest, 'a.txt'), 'changed behind replfs\n');
  const alert = path.join(s.dir, 'alert');
  const r = await sync(['--retries', '5', '--backoff', '30', '--alert', alertInto(alert), dir, dest]);
  t.is(r.code, 4, r.stderr);
  t.notRegex(r.stderr, /attempt|retrying/, 'not retried');
  t.regex(r.stderr, /: failed \(exit 4 refused, permanent\): replfs sync: the destination refused: the replica was changed outside replfs/);
  t.regex(r.stderr, new RegExp(`: a replica changed outside replfs is refused until checked: replfs verify ${escapeRe(dir)} ${escapeRe(dest)}, then replfs sync --force`));
  t.like(alertEnv(alert), { REPLFS_SYNC_EXIT: '4', REPLFS_SYNC_EXIT_NAME: 'refused', REPLFS_SYNC_TRANSIENT: 'no', REPLFS_SYNC_ATTEMPTS: '1' });

  // What the advice says: verify tells what differs, then --force (passed on to replfs sync).
  const verify = await replfs(s, ['verify', dir, dest]);
  t.is(verify.code, 11, verify.stderr);
  t.regex(verify.stdout, /a\.txt/);
  const forced = await sync([dir, dest, '--force']);
  t.is(forced.code, 0, forced.stderr);
  t.regex(forced.stdout, /every file compared/);
  t.is(fs.readFileSync(path.join(dest, 'a.txt'), 'utf8'), 'alpha\n');
});

test('two runs at once: the second gives up at once (75) unless --wait lets it wait; another destination is not held up', async (t) => {
  const { s, env, sync } = setup(t);
  const dir = await volume(t, s);
  const token = tokenFile(s);
  const dest = `replfs://127.0.0.1:${await freePort()}/x`;
  const alertA = path.join(s.dir, 'alert-a');
  const alertB = path.join(s.dir, 'alert-b');
  // A: fails, and backs off 3 s, then 6 s, holding the lock all along.
  const a = background(t, SCRIPT, ['--retries', '2', '--backoff', '3', '--alert', alertInto(alertA), dir, dest, '--token-file', token], { env, cwd: s.dir });
  let aEnded = 0;
  void a.exit.then(() => { aEnded = Date.now(); });
  await waitFor(() => /attempt 1 of 3 failed/.test(a.stderr()), 30_000, 'the first run to fail once');

  const b = await sync(['--alert', alertInto(alertB), dir, dest, '--token-file', token]);
  t.is(b.code, 75, b.stderr);
  t.regex(b.stdout, new RegExp(`^${STAMP}: ${escapeRe(dir)} -> ${escapeRe(dest)}: another run holds ${escapeRe(env.REPLFS_SYNC_LOCK!)}; not syncing now\\n$`));
  t.is(b.stderr, '');
  t.false(fs.existsSync(`${alertB}.count`), 'no alert for a run that did nothing');
  t.is(aEnded, 0, 'the first run is still going');

  // The same volume to another destination has a lock of its own (the default one).
  const replica = path.join(s.dir, 'replica');
  const sum = (await run('/bin/sh', ['-c', 'printf "%s\\n%s" "$0" "$1" | cksum | cut -d" " -f1', dir, replica])).stdout.trim();
  const defaultLock = `${fs.existsSync('/run/lock') ? '/run/lock' : '/tmp'}/replfs-sync.${sum}.lock`;
  t.teardown(() => fs.rmSync(defaultLock, { force: true }));
  const other = await sync([dir, replica], { REPLFS_SYNC_LOCK: '' });
  t.is(other.code, 0, other.stderr);
  t.true(fs.existsSync(defaultLock), `the default lock is ${defaultLock}`);
  t.is(aEnded, 0, 'the first run is still going');

  // With --wait, a run waits for the first to end, then makes its own attempt.
  const c = await sync(['--wait', '60', '--retries', '0', dir, dest, '--token-file', token]);
  const cEnded = Date.now();
  t.is(await a.exit, 10);
  t.is(c.code, 10, c.stderr);
  t.true(aEnded > 0 && aEnded <= cEnded, 'the waiting run ended after the first');
  t.regex(c.stderr, /gave up after 1 attempt\)/);
  const firstC = /^(\S+) /.exec(c.stderr)![1]!;
  const lastA = /(\S+) replfs-sync: [^\n]*still failing after 3 attempts/.exec(a.stderr())![1]!;
  t.true(firstC >= lastA, `the waiting run tried only after the first had given up (${firstC} >= ${lastA})`);
  t.is(fs.readFileSync(`${alertA}.count`, 'utf8'), 'ran\n');
});

test('replfs-sync.sh refuses a wrong invocation with 64, before doing anything', async (t) => {
  const { s, sync } = setup(t);
  const dir = await volume(t, s);
  for (const [args, message] of [
    [[dir], /missing <volume> or <destination>/],
    [['--retries', 'x', dir, '/tmp/x'], /--retries must be a whole number, got "x"/],
    [['--backoff', '-1', dir, '/tmp/x'], /--backoff must be a whole number/],
    [['--frobnicate', dir, '/tmp/x'], /unknown option --frobnicate \(options of replfs sync go after <volume> <destination>\)/],
    [[dir, '/tmp/x', '--json'], /--json is added by replfs-sync itself/],
    [['--alert'], /--alert needs a value/],
  ] as Array<[string[], RegExp]>) {
    const r = await sync(args);
    t.is(r.code, 64, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, message);
    t.regex(r.stderr, /^usage: replfs-sync \[--retries N\]/m);
  }
  t.is((await snapshots(t, s, dir)).snapshots.length, 0, 'no snapshot was taken');
  const help = await sync(['--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /^replfs-sync\.sh: one `replfs sync`/);
  t.regex(help.stdout, /^ {2}75 {7}another run/m);
});

test('the /etc/cron.d example: a valid schedule, a user, no bare %, and the script it names with options the script takes', async (t) => {
  const { s, sync } = setup(t);
  const text = fs.readFileSync(path.join(ROOT, 'examples/cron/replfs-sync.cron'), 'utf8');
  const jobs = text.split('\n').filter((l) => /^[\d*]/.test(l));
  t.is(jobs.length, 1);
  const fields = jobs[0]!.split(/\s+/);
  t.notThrows(() => parseCron(fields.slice(0, 5).join(' ')), 'the schedule is a cron expression');
  t.is(fields[5], 'root', 'a /etc/cron.d line names its user');
  t.is(fields[6], '/usr/local/sbin/replfs-sync.sh');
  t.notRegex(text.replace(/\\%/g, ''), /^[^#]*%/m, 'cron reads a bare % as a newline');
  const vars = Object.fromEntries(text.split('\n').filter((l) => /^[A-Z_]+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  t.truthy(vars.REPLFS_SYNC_ALERT);
  // The script's options of the line, with the volume and destination swapped for scratch ones: accepted.
  const args = fields.slice(7, fields.indexOf('>>/var/log/replfs-sync.log'));
  t.deepEqual(args, ['--retries', '4', '--backoff', '60', '/srv/data', 'replfs://backup.example:7007/data', '--token-file', '/etc/replfs/token']);
  const dir = await volume(t, s);
  const r = await sync([...args.slice(0, 4), dir, path.join(s.dir, 'replica')]);
  t.is(r.code, 0, r.stderr);
});

