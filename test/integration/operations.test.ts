// The mount daemon running a policy for real: scheduled snapshots and syncs on second-scale
// intervals, prunes on both sides, config changes without a remount, and every alert
// condition produced for real (a server stopped, a disk nearly full, the journal overflowed
// or damaged, a destination late).
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import { scratch, replfs, initVolume, mountVolume, isMounted, waitFor, fails, type Scratch, type RunResult } from '../helpers/env.js';
import { startServer, tokenFile } from '../helpers/server.js';
import { smallFilesystem } from '../helpers/smallfs.js';
import { Store } from '../../src/volume/store.js';
import { Sublevel, regionKey, STATE_DIR, DB_DIR } from '../../src/volume/format.js';
import type { FullStatus } from '../../src/cli/status.js';
import type { SyncSummary } from '../../src/replicate/sender.js';

const ops = test.serial;

function ok(t: ExecutionContext, r: RunResult, what: string): void {
  t.is(r.code, 0, `${what}: exit ${r.code}\n${r.stderr}${r.stdout}`);
}

/** A protected directory with a few files, and a policy loaded into it (unmounted). */
async function volumeWith(t: ExecutionContext, s: Scratch, policy: Record<string, unknown>, files = 3): Promise<string> {
  const dir = path.join(s.dir, 'data');
  fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
  for (let i = 0; i < files; i++) fs.writeFileSync(path.join(dir, 'sub', `f${i}.txt`), `file ${i}\n`);
  await initVolume(t, s, dir);
  await load(t, s, dir, policy);
  return dir;
}

function load(_t: ExecutionContext, s: Scratch, dir: string, policy: Record<string, unknown>): Promise<RunResult> {
  const file = path.join(s.dir, `policy-${Date.now()}-${Math.random().toString(36).slice(2)}.json`);
  fs.writeFileSync(file, JSON.stringify(policy, null, 2));
  return replfs(s, ['config', dir, '--load', file]);
}

async function status(t: ExecutionContext, s: Scratch, dir: string): Promise<FullStatus> {
  const r = await replfs(s, ['status', dir, '--json']);
  ok(t, r, 'status --json');
  return JSON.parse(r.stdout) as FullStatus;
}

async function snapshotNames(t: ExecutionContext, s: Scratch, dir: string): Promise<string[]> {
  const r = await replfs(s, ['snapshots', dir, '--json']);
  ok(t, r, 'snapshots --json');
  return (JSON.parse(r.stdout) as { snapshots: Array<{ name: string }> }).snapshots.map((x) => x.name);
}

/** The lines an alert hook appended to `file`: one JSON object of its REPLFS_ALERT_* environment each. */
function alertHook(s: Scratch): { command: string; events: () => Array<Record<string, string>> } {
  const file = path.join(s.dir, 'alerts.jsonl');
  const script = path.join(s.dir, 'on-alert.sh');
  fs.writeFileSync(script, `#!/bin/sh
printf '{"state":"%s","kind":"%s","severity":"%s","destination":"%s","message":"%s","volume":"%s","extra":"%s"}\\n' \\
  "$REPLFS_ALERT_STATE" "$REPLFS_ALERT_KIND" "$REPLFS_ALERT_SEVERITY" "$REPLFS_ALERT_DESTINATION" \\
  "$(printf %s "$REPLFS_ALERT_MESSAGE" | tr '"\\\\' "''")" "$REPLFS_VOLUME" "$TEAM" >> ${JSON.stringify(file)}
`, { mode: 0o755 });
  return {
    command: script,
    events: () => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, string>) : []),
  };
}

/** The daemon's log lines, read through its stdout (the log file is hidden by an in-place mount). */
function daemonLog(s: Scratch, dir: string): string {
  const rec = fs.readdirSync(path.join(s.runtime)).map((f) => path.join(s.runtime, f)).find((f) => f.endsWith('.json'));
  if (!rec) return '';
  const pid = (JSON.parse(fs.readFileSync(rec, 'utf8')) as { pid: number }).pid;
  try { return fs.readFileSync(`/proc/${pid}/fd/1`, 'utf8'); } catch { return fs.existsSync(path.join(dir, STATE_DIR, 'daemon.log')) ? fs.readFileSync(path.join(dir, STATE_DIR, 'daemon.log'), 'utf8') : ''; }
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

ops('the daemon runs the schedule: snapshots every second, each sent to a follower destination, both sides pruned, and status says so', async (t) => {
  const s = scratch(t);
  const rep = path.join(s.dir, 'rep');
  const dir = await volumeWith(t, s, {
    snapshots: { schedule: { every: '1s' } },
    retention: { 'keep-last': 3 },
    destinations: { rep: { url: rep, rpo: '1m', retention: { 'keep-last': 2 } } },
  });
  await mountVolume(t, s, dir);
  for (let i = 0; i < 8; i++) {
    fs.appendFileSync(path.join(dir, 'sub', 'log.txt'), `line ${i}\n`);
    await new Promise((r) => setTimeout(r, 400));
  }
  await waitFor(async () => ((await status(t, s, dir)).operations?.destinations[0]?.lastSync?.filesChanged ?? 0) > 0, 20_000, 'a sync that carried changes');
  await waitFor(async () => {
    const st = await status(t, s, dir);
    const d = st.operations!.destinations[0]!;
    return d.confirmed !== null && d.pending !== null && d.pending.files === 0;
  }, 20_000, 'the destination to hold every change');
  const st = await status(t, s, dir);
  const ops = st.operations!;
  t.is(ops.severity, 'ok');
  t.true(ops.scheduler);
  t.is(ops.snapshots.schedule, 'every 1 s');
  t.true(ops.snapshots.nextRun !== null && ops.snapshots.nextRun > ops.now - 1000);
  const d = ops.destinations[0]!;
  t.is(d.name, 'rep');
  t.true(d.configured);
  t.true(d.lagMs! < 60_000, 'within its RPO');
  t.true(d.space !== null && d.space.total > 0, 'the destination said how much space it has');
  t.true((await snapshotNames(t, s, dir)).length <= 4, 'retention keep-last 3 (plus the destination\'s pinned base) on the source');
  const human = await replfs(s, ['status', dir]);
  ok(t, human, 'status');
  t.regex(human.stdout, /^snapshots every 1 s; last .*, next /m);
  t.regex(human.stdout, /^destination rep {2}\(.*\/rep\)$/m);
  t.regex(human.stdout, /^ {2}confirmed {2}.* RPO 1m: ok\)$/m);
  t.regex(human.stdout, /^ {2}last sync {2}.*incremental/m);
  t.regex(human.stdout, /^health {4}OK$/m);
  const check = await replfs(s, ['status', dir, '--check']);
  t.is(check.code, 0, check.stdout);
  t.regex(check.stdout, /^REPLFS OK - .*: 1 destination within policy \| 'lag_rep'=\d+s;60;120\n$/);
  const log = daemonLog(s, dir);
  t.regex(log, /snapshot \S+ taken \(crash-consistent\)/);
  t.regex(log, /synced \S+ to rep \(incremental\): [1-9]\d* files/);
  t.regex(log, /pruned \d+ snapshots/);
  t.regex(log, /the replica pruned \d+ snapshots/);
  ok(t, await replfs(s, ['unmount', dir]), 'unmount');
  const replicaSnaps = await snapshotNames(t, s, rep);
  t.true(replicaSnaps.length >= 1 && replicaSnaps.length <= 2, `the replica keeps its last 2: ${replicaSnaps.join(', ')}`);
  ok(t, await replfs(s, ['verify', dir, rep]), 'verify the last confirmed snapshot');
  t.is(fs.readFileSync(path.join(dir, 'sub', 'log.txt'), 'utf8').split('\n').length, 9);
});

ops('a policy change takes effect without a remount; an invalid one is refused, names the field, and the previous one runs on', async (t) => {
  const s = scratch(t);
  const dir = await volumeWith(t, s, {});
  await mountVolume(t, s, dir);
  await new Promise((r) => setTimeout(r, 1500));
  t.deepEqual(await snapshotNames(t, s, dir), [], 'no schedule: no snapshot');
  ok(t, await load(t, s, dir, { snapshots: { schedule: { every: '1s' }, label: 'auto' } }), 'load a schedule');
  await waitFor(async () => (await snapshotNames(t, s, dir)).length >= 2, 15_000, 'scheduled snapshots');
  const bad = await load(t, s, dir, { snapshots: { schedule: { every: '1s' } }, destinations: { x: { url: '/tmp/x', rpo: '60' } } });
  fails(t, bad, 'usage', /^replfs config: .*policy-.*\.json: destinations\.x\.rpo: "60" is not an interval/, 'an invalid policy');
  const before = (await snapshotNames(t, s, dir)).length;
  await waitFor(async () => (await snapshotNames(t, s, dir)).length > before + 1, 15_000, 'the previous schedule to go on');
  const shown = await replfs(s, ['config', dir, '--json']);
  ok(t, shown, 'config --json');
  const policy = JSON.parse(shown.stdout) as { snapshots: { label: string }; destinations: Record<string, unknown> };
  t.is(policy.snapshots.label, 'auto');
  t.deepEqual(policy.destinations, {}, 'the refused policy was never written');
  const identity = await replfs(s, ['config', dir, '--load', path.join(s.dir, 'id.json')]);
  t.is(identity.code, 3, 'a file that does not exist');
  fs.writeFileSync(path.join(s.dir, 'id.json'), JSON.stringify({ volumeId: 'x' }));
  fails(t, await replfs(s, ['config', dir, '--load', path.join(s.dir, 'id.json')]), 'usage', /volumeId: is the volume's own and is never loaded/, 'an identity key');
});

ops('with mount --config the policy file is watched: a broken edit is an alert and the error of commands that need it; fixing it clears both', async (t) => {
  const s = scratch(t);
  const dir = await volumeWith(t, s, {});
  const file = path.join(s.dir, 'policy.json');
  const hook = alertHook(s);
  const good = { snapshots: { schedule: { every: '1s' } }, quiesce: { pre: 'true' }, alerts: { onAlert: hook.command, env: { TEAM: 'ops' } } };
  fs.writeFileSync(file, JSON.stringify(good));
  await mountVolume(t, s, dir, undefined, ['--config', file]);
  const cfg = await replfs(s, ['config', dir]);
  ok(t, cfg, 'config');
  t.true(cfg.stdout.startsWith(`policy from ${file} (defaults filled in):`), cfg.stdout);
  fs.writeFileSync(file, JSON.stringify({ ...good, snapshots: { schedule: { cron: '0 0 30 2 *' } } }));
  await waitFor(async () => (await status(t, s, dir)).operations!.configError !== null, 10_000, 'the daemon to notice');
  const st = await status(t, s, dir);
  t.regex(st.operations!.configError!, /snapshots\.schedule\.cron: "0 0 30 2 \*": never fires/);
  t.true(st.operations!.alerts.some((a) => a.kind === 'config' && a.severity === 'warning'));
  fails(t, await replfs(s, ['snapshot', dir, '--quiesce']), 'usage', /snapshots\.schedule\.cron: "0 0 30 2 \*": never fires/, 'a quiesced snapshot with the file broken');
  const n = (await snapshotNames(t, s, dir)).length;
  await waitFor(async () => (await snapshotNames(t, s, dir)).length > n + 1, 15_000, 'the old schedule to go on');
  await waitFor(() => hook.events().some((e) => e.kind === 'config' && e.state === 'raised'), 20_000, 'the alert hook');
  const raised = hook.events().find((e) => e.kind === 'config')!;
  t.is(raised.severity, 'WARNING');
  t.is(raised.extra, 'ops', 'alerts.env reaches the hook');
  t.is(raised.volume, dir);
  const umask = process.umask();
  t.is(fs.statSync(path.join(s.dir, 'alerts.jsonl')).mode & 0o777, 0o666 & ~umask, 'hooks run with the umask the mount was started with, not the daemon\'s 0');
  fails(t, await replfs(s, ['config', dir, '--check']), 'usage', /never fires.*\(the mount goes on with the previous policy\)/, 'config --check');
  fs.writeFileSync(file, JSON.stringify(good));
  await waitFor(async () => (await status(t, s, dir)).operations!.configError === null, 10_000, 'the fix to be seen');
  await waitFor(() => hook.events().some((e) => e.kind === 'config' && e.state === 'resolved'), 20_000, 'the alert to resolve');
  ok(t, await replfs(s, ['snapshot', dir, '--quiesce']), 'a quiesced snapshot again');
  fails(t, await replfs(s, ['config', dir, '--load', file]), 'refused', /takes its policy from .*policy\.json \(mount --config\): edit that file instead/, '--load into a --config mount');
});

ops('an invalid policy refuses the mount, naming the file and the field; nothing is mounted', async (t) => {
  const s = scratch(t);
  const dir = await volumeWith(t, s, {});
  const file = path.join(s.dir, 'p.json');
  for (const [policy, message] of [
    [{ quiesce: { pre: '/nonexistent/freeze --now' } }, /p\.json: quiesce\.pre: "\/nonexistent\/freeze" does not exist/],
    [{ destinations: { a: { url: 'ftp://x/y' } } }, /p\.json: destinations\.a\.url: "ftp:\/\/x\/y" is not a destination: unknown scheme/],
    [{ journal: { maxBytes: '1G' } }, /p\.json: journal: belongs to the volume itself/],
  ] as const) {
    fs.writeFileSync(file, JSON.stringify(policy));
    fails(t, await replfs(s, ['mount', dir, '--config', file]), 'usage', message, JSON.stringify(policy));
    t.false(await isMounted(dir));
  }
  fails(t, await replfs(s, ['mount', dir, '--config', path.join(s.dir, 'none.json')]), 'notFound', /the policy file .*none\.json does not exist/, 'a missing file');
  fails(t, await replfs(s, ['mount', dir, '--read-only', '--config', file]), 'usage', /--config does not go with --read-only/, '--read-only');
  t.false(await isMounted(dir));
});

ops('alerts for real: a stopped destination server (unreachable), then resolved when it is back', async (t) => {
  const s = scratch(t);
  const root = path.join(s.dir, 'srv');
  fs.mkdirSync(root);
  const token = tokenFile(s);
  const port = await freePort();
  let server = await startServer(t, root, ['--token-file', token], `127.0.0.1:${port}`);
  const hook = alertHook(s);
  const dir = await volumeWith(t, s, {
    snapshots: { schedule: { every: '1s' } },
    destinations: { vault: { url: `replfs://127.0.0.1:${port}/main`, tokenFile: token } },
    alerts: { onAlert: hook.command, unreachableAfter: '2s' },
  });
  await mountVolume(t, s, dir);
  await waitFor(async () => (await status(t, s, dir)).operations!.destinations[0]!.confirmed !== null, 20_000, 'a first sync');
  server.child.kill('SIGKILL');
  await server.exit;
  await waitFor(() => hook.events().some((e) => e.kind === 'unreachable' && e.state === 'raised'), 30_000, 'the unreachable alert');
  const raised = hook.events().find((e) => e.kind === 'unreachable')!;
  t.is(raised.severity, 'CRITICAL');
  t.is(raised.destination, 'vault');
  t.regex(raised.message, /^vault has been unreachable for \d+s: /);
  const check = await replfs(s, ['status', dir, '--check']);
  t.is(check.code, 2, check.stdout);
  t.regex(check.stdout, /^REPLFS CRITICAL - .*vault has been unreachable/);
  const d = (await status(t, s, dir)).operations!.destinations[0]!;
  t.true(d.lastError !== null && d.lastError.transient && d.lastError.exit === 'unavailable');
  t.true(d.failingSince !== null);
  server = await startServer(t, root, ['--token-file', token], `127.0.0.1:${port}`);
  await waitFor(() => hook.events().some((e) => e.kind === 'unreachable' && e.state === 'resolved'), 60_000, 'the alert to resolve once the server is back');
  const after = (await status(t, s, dir)).operations!.destinations[0]!;
  t.is(after.lastError, null);
  t.is(after.failingSince, null);
  t.is((await replfs(s, ['status', dir, '--check'])).code, 0);
  void server;
});

ops('alerts for real: a destination past its RPO is WARNING, past twice it CRITICAL (status --check exits 1, then 2)', async (t) => {
  const s = scratch(t);
  const rep = path.join(s.dir, 'rep');
  const dir = await volumeWith(t, s, {
    destinations: { late: { url: rep, rpo: '3s', schedule: { cron: '0 0 1 1 *' } } },
  });
  ok(t, await replfs(s, ['sync', dir, rep]), 'one sync by hand');
  await mountVolume(t, s, dir);
  const first = await replfs(s, ['status', dir, '--check']);
  t.is(first.code, 0, first.stdout);
  await new Promise((r) => setTimeout(r, 3500));
  const warn = await replfs(s, ['status', dir, '--check']);
  t.is(warn.code, 1, warn.stdout);
  t.regex(warn.stdout, /^REPLFS WARNING - .*late holds nothing newer than \d+s ago: over its RPO of 3s \| 'lag_late'=\d+s;3;6$/m);
  await new Promise((r) => setTimeout(r, 3000));
  const crit = await replfs(s, ['status', dir, '--check']);
  t.is(crit.code, 2, crit.stdout);
  ok(t, await replfs(s, ['sync', dir, 'late']), 'sync by hand, naming the destination of the policy');
  const back = await replfs(s, ['status', dir, '--check']);
  t.is(back.code, 0, back.stdout);
  const st = await status(t, s, dir);
  t.is(st.operations!.destinations[0]!.lastSync!.kind, 'incremental', 'a sync by hand is recorded under the destination\'s URL');
  const unknown = await replfs(s, ['status', path.join(s.dir, 'nothing'), '--check']);
  t.is(unknown.code, 3);
  t.regex(unknown.stdout, /^REPLFS UNKNOWN - .*nothing does not exist/);
});

ops('alerts for real: a destination low on space (a small disk)', async (t) => {
  const s = scratch(t);
  const disk = await smallFilesystem(t, 32);
  const rep = path.join(disk, 'rep');
  const hook = alertHook(s);
  const dir = await volumeWith(t, s, {
    snapshots: { schedule: { every: '1s' } },
    destinations: { usb: { url: rep } },
    alerts: { onAlert: hook.command, minFree: '95%' },
  });
  fs.writeFileSync(path.join(dir, 'sub', 'big.bin'), Buffer.alloc(4 * 1024 * 1024, 7));
  await mountVolume(t, s, dir);
  await waitFor(() => hook.events().some((e) => e.kind === 'space' && e.state === 'raised'), 30_000, 'the space alert');
  const e = hook.events().find((x) => x.kind === 'space')!;
  t.is(e.severity, 'WARNING');
  t.regex(e.message, /^usb is low on space: [\d.]+ MiB free of [\d.]+ MiB$/);
  const d = (await status(t, s, dir)).operations!.destinations[0]!;
  t.true(d.space!.free < d.space!.total * 0.95);
});

ops('the journal bound: an overflow is noted, alerted, makes the next sync compare every file, and clears once synced', async (t) => {
  const s = scratch(t);
  const rep = path.join(s.dir, 'rep');
  const dir = path.join(s.dir, 'data');
  fs.mkdirSync(dir);
  for (let i = 0; i < 600; i++) fs.writeFileSync(path.join(dir, `f${i}`), `${i}\n`);
  await initVolume(t, s, dir);
  ok(t, await load(t, s, dir, { journal: { maxBytes: '64K' }, destinations: { rep: { url: rep } } }), 'the journal bound');
  ok(t, await replfs(s, ['sync', dir, rep]), 'a first full sync');
  await mountVolume(t, s, dir);
  // One block in each of 600 files: 600 regions, past 64 KiB of detail (about 400).
  for (let i = 0; i < 600; i++) fs.appendFileSync(path.join(dir, `f${i}`), 'more\n');
  const st = await status(t, s, dir);
  t.true(st.operations!.journal.overflowedNow);
  t.is(st.operations!.journal.overflowed.length, 1);
  const d = st.operations!.destinations[0]!;
  t.is(d.fullCompare?.kind, 'overflow');
  t.true(st.operations!.alerts.some((a) => a.kind === 'journal' && a.severity === 'warning'));
  const human = await replfs(s, ['status', dir]);
  t.regex(human.stdout, /^ {2}note {7}the next sync compares every block: the journal overflowed \(journal\.maxBytes\)/m);
  const j = await replfs(s, ['journal', dir, '--json']);
  const files = (JSON.parse(j.stdout) as { files: Array<{ path: string; unknown: string | null }> }).files.filter((f) => f.path.startsWith('f'));
  t.is(files.length, 600);
  t.true(files.every((f) => f.unknown === 'overflow'), 'every changed file is compared whole');
  const sync = await replfs(s, ['sync', dir, rep, '--json']);
  ok(t, sync, 'the sync after the overflow');
  const summary = JSON.parse(sync.stdout) as SyncSummary;
  t.is(summary.kind, 'complete');
  t.regex(summary.completeReason!, /the journal overflowed/);
  const after = await status(t, s, dir);
  t.is(after.operations!.destinations[0]!.fullCompare, null);
  t.false(after.operations!.alerts.some((a) => a.kind === 'journal'), 'nothing left to sync through the overflow');
  ok(t, await replfs(s, ['unmount', dir]), 'unmount');
  ok(t, await replfs(s, ['verify', dir, rep]), 'verify');
  t.is(fs.readFileSync(path.join(rep, 'f599'), 'utf8'), '599\nmore\n');
});

ops('the journal found inconsistent (a damaged record): CRITICAL, the next sync compares every file, and the replica verifies', async (t) => {
  const s = scratch(t);
  const rep = path.join(s.dir, 'rep');
  const dir = await volumeWith(t, s, { destinations: { rep: { url: rep } } });
  ok(t, await replfs(s, ['sync', dir, rep]), 'a first sync');
  fs.appendFileSync(path.join(dir, 'sub', 'f1.txt'), 'changed while unmounted\n');
  // Damage: block detail for a file the epoch has no header for.
  const store = await Store.open(path.join(dir, STATE_DIR, DB_DIR), { create: false });
  const epoch = JSON.parse((await store.get(Sublevel.meta, 'epoch'))!.toString()) as number;
  await store.write([{ type: 'put', sub: Sublevel.regions, key: regionKey(epoch, 2, 0), value: Buffer.from([0, 1, 2]) }], true);
  await store.close();
  await mountVolume(t, s, dir);
  const st = await status(t, s, dir);
  t.is(st.operations!.journal.inconsistent.length, 1);
  t.regex(st.operations!.journal.inconsistent[0]!.detail, /holds blocks of file 2 without saying it changed/);
  t.true(st.operations!.alerts.some((a) => a.kind === 'journal' && a.severity === 'critical'));
  const check = await replfs(s, ['status', dir, '--check']);
  t.is(check.code, 2, check.stdout);
  const sync = await replfs(s, ['sync', dir, rep, '--json']);
  ok(t, sync, 'sync');
  const summary = JSON.parse(sync.stdout) as SyncSummary;
  t.is(summary.kind, 'complete');
  t.regex(summary.completeReason!, /inconsistent/);
  t.is((await replfs(s, ['status', dir, '--check'])).code, 0);
  ok(t, await replfs(s, ['unmount', dir]), 'unmount');
  ok(t, await replfs(s, ['verify', dir, rep]), 'verify');
});

ops('forget: a destination given up for good stops keeping its base, and status stops showing it', async (t) => {
  const s = scratch(t);
  const rep = path.join(s.dir, 'rep');
  const dir = await volumeWith(t, s, {});
  fs.writeFileSync(path.join(dir, 'big'), crypto.randomBytes(4 << 20));
  const first = await replfs(s, ['sync', dir, rep, '--json']);
  ok(t, first, 'sync');
  const base = (JSON.parse(first.stdout) as SyncSummary).snapshot;
  ok(t, await replfs(s, ['snapshot', dir]), 'a newer snapshot');
  const kept = await replfs(s, ['prune', dir, '--keep-last', '1']);
  ok(t, kept, 'prune');
  t.regex(kept.stdout, new RegExp(`keep +${base} +\\(base of ${rep.replace(/[/.]/g, '\\$&')}\\)`), 'pinned while the destination is known');
  fails(t, await replfs(s, ['forget', dir, path.join(s.dir, 'elsewhere')]), 'notFound', /has synced to no destination .*elsewhere.*\n.*it knows: .*rep/, 'an unknown destination');
  const f = await replfs(s, ['forget', dir, rep]);
  ok(t, f, 'forget');
  t.regex(f.stdout, new RegExp(`^forgot ${rep.replace(/[/.]/g, '\\$&')} \\(replica [0-9a-f-]+\\); its base ${base} is no longer kept for it$`, 'm'));
  const pruned = await replfs(s, ['prune', dir, '--keep-last', '1']);
  ok(t, pruned, 'prune again');
  t.regex(pruned.stdout, new RegExp(`delete +${base}`));
  t.deepEqual((await status(t, s, dir)).operations!.destinations, [], 'no longer shown');
  // Synced to again with its base gone: a compare of every file, not a full copy.
  fs.appendFileSync(path.join(dir, 'big'), 'one more line\n');
  const again = await replfs(s, ['sync', dir, rep, '--json']);
  ok(t, again, 'sync after forget');
  const summary = JSON.parse(again.stdout) as SyncSummary & { kind: string };
  t.is(summary.kind, 'complete');
  t.true(summary.bytesOnWire < 256 << 10, `${summary.bytesOnWire} bytes on the wire for a 4 MiB file with one line appended`);
  ok(t, await replfs(s, ['verify', dir, rep]), 'verify');
});

ops('a relative local destination names a place under the directory the command runs in, through the daemon too', async (t) => {
  const s = scratch(t);
  const dir = await volumeWith(t, s, {});
  await mountVolume(t, s, dir); // the daemon runs in s.dir
  const work = path.join(s.dir, 'work');
  fs.mkdirSync(work);
  ok(t, await replfs(s, ['sync', dir, 'rep'], { cwd: work }), 'sync to a relative path');
  t.true(fs.existsSync(path.join(work, 'rep', '.replfs')), 'the replica is under the command\'s directory');
  t.false(fs.existsSync(path.join(s.dir, 'rep')), 'and not under the daemon\'s');
  t.deepEqual((await status(t, s, dir)).operations!.destinations.map((d) => d.url), [path.join(work, 'rep')], 'recorded whole');
  ok(t, await replfs(s, ['verify', dir, './rep'], { cwd: work }), 'verify by the same relative path');
  ok(t, await replfs(s, ['forget', dir, 'rep'], { cwd: work }), 'forget by it');
  t.deepEqual((await status(t, s, dir)).operations!.destinations, []);
});
