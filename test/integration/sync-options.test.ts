// The options of replfs sync and verify, for real: --bwlimit holds the rate, --compress
// shrinks what crosses the wire, --dry-run changes nothing, and bad options are refused
// with their exit codes before anything is sent.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import { scratch, replfs, initVolume, mountVolume, describeTree, fails, type Scratch } from '../helpers/env.js';
import type { SyncSummary, VerifySummary } from '../../src/replicate/sender.js';

async function mounted(t: ExecutionContext, s: Scratch): Promise<string> {
  const src = path.join(s.dir, 'src');
  fs.mkdirSync(src);
  await initVolume(t, s, src);
  await mountVolume(t, s, src);
  return src;
}

async function syncJson(t: ExecutionContext, s: Scratch, args: string[]): Promise<SyncSummary> {
  const r = await replfs(s, ['sync', ...args, '--json']);
  t.is(r.code, 0, `replfs sync ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as SyncSummary;
}

test('--bwlimit holds what is sent to the rate asked', async (t) => {
  const s = scratch(t);
  const src = await mounted(t, s);
  fs.writeFileSync(path.join(src, 'data'), randomBytes(3 << 20));
  const started = Date.now();
  const sum = await syncJson(t, s, [src, path.join(s.dir, 'replica'), '--bwlimit', '1M']);
  const took = (Date.now() - started) / 1000;
  t.true(sum.bytesOnWire >= 3 << 20);
  // 3 MiB at 1 MiB/s cannot take less than ~3 s (the first 50 ms may go at once).
  t.true(took >= 2.5, `3 MiB at 1 MiB/s took ${took.toFixed(2)} s`);
});

test('--compress sends compressible blocks deflated, and the replica is exact', async (t) => {
  const s = scratch(t);
  const src = await mounted(t, s);
  fs.writeFileSync(path.join(src, 'text'), Buffer.from('the same line over and over\n'.repeat(200_000)));
  fs.writeFileSync(path.join(src, 'noise'), randomBytes(1 << 20));
  const dst = path.join(s.dir, 'replica');
  const sum = await syncJson(t, s, [src, dst, '--compress']);
  t.true(sum.bytesSent > 6 << 20, `the blocks themselves (${sum.bytesSent} bytes)`);
  t.true(sum.bytesOnWire < (1 << 20) + (1 << 19), `on the wire: the noise and a little of the text (${sum.bytesOnWire} bytes)`);
  const v = JSON.parse((await replfs(s, ['verify', src, dst, '--json'])).stdout) as VerifySummary;
  t.true(v.identical, JSON.stringify(v.differences));
  t.deepEqual(await describeTree(dst, { inodes: false }), await describeTree(path.join(src, '.snapshots', sum.snapshot), { inodes: false }));
});

test('--dry-run says what would be sent and changes nothing on either side', async (t) => {
  const s = scratch(t);
  const src = await mounted(t, s);
  const dst = path.join(s.dir, 'replica');
  fs.writeFileSync(path.join(src, 'a'), randomBytes(300_000));
  await syncJson(t, s, [src, dst]);
  fs.writeFileSync(path.join(src, 'b'), randomBytes(200_000));
  t.is((await replfs(s, ['snapshot', src])).code, 0);
  const snapshotsBefore = (await replfs(s, ['snapshots', src, '--json'])).stdout;
  const replicaBefore = await describeTree(dst, { inodes: true });
  const dry = await syncJson(t, s, [src, dst, '--dry-run']);
  t.true(dry.dryRun);
  t.is(dry.replicaSnapshot, null);
  t.true(dry.bytesSent >= 200_000 && dry.bytesSent < 300_000, `what b would take (${dry.bytesSent} bytes)`);
  t.deepEqual(await describeTree(dst, { inodes: true }), replicaBefore, 'the replica is untouched');
  t.is((await replfs(s, ['snapshots', src, '--json'])).stdout, snapshotsBefore, 'no snapshot was taken on the source');
  const human = await replfs(s, ['sync', src, dst, '--dry-run']);
  t.is(human.code, 0);
  t.regex(human.stdout, /^dry run of \S+ to .*: 2 files changed, .* would be sent, .*; nothing was changed\n$/);
  fails(t, await replfs(s, ['sync', src, path.join(s.dir, 'no-replica-yet'), '--dry-run']), 'notFound', /there is no replica at .*no-replica-yet yet/, 'a dry run to where no replica is');
  t.false(fs.existsSync(path.join(s.dir, 'no-replica-yet')), 'and nothing was made there');
});

test('bad sync and verify options are refused before anything is sent', async (t) => {
  const s = scratch(t);
  const src = await mounted(t, s);
  const dst = path.join(s.dir, 'replica');
  fs.writeFileSync(path.join(src, 'a'), 'a');
  fails(t, await replfs(s, ['sync', src, dst, '--bwlimit', 'fast']), 'usage', /--bwlimit "fast" is not a rate/, 'a rate that is not one');
  fails(t, await replfs(s, ['sync', src, dst, '--bwlimit', '100B']), 'usage', /below 1 KiB per second/, 'a rate too low');
  fails(t, await replfs(s, ['sync', src, dst, '--dry-run', '--quiesce']), 'usage', /--dry-run and --quiesce do not go together/, 'a dry run that would take a snapshot');
  fails(t, await replfs(s, ['sync', src, dst, '--snapshot', 'yesterday']), 'usage', /not a snapshot name/, 'a snapshot name that is not one');
  fails(t, await replfs(s, ['verify', src, dst, '--snapshot', 'yesterday']), 'usage', /not a snapshot name/, 'verify, a bad snapshot name');
  t.is((await replfs(s, ['snapshot', src])).code, 0);
  fails(t, await replfs(s, ['verify', src, dst]), 'notFound', /there is no replica at/, 'verify where no replica is');
  t.false(fs.existsSync(dst), 'nothing was made at the destination');
  await syncJson(t, s, [src, dst]);
  fs.writeFileSync(path.join(src, 'later'), 'later');
  const later = await replfs(s, ['snapshot', src, '--json']);
  const name = (JSON.parse(later.stdout) as { snapshot: { name: string } }).snapshot.name;
  fails(t, await replfs(s, ['verify', src, dst, '--snapshot', name]), 'notFound', /the replica has no snapshot of the source's/, 'verify of a snapshot the replica does not have');
});

test('quiesce.onSync in the volume\'s config quiesces the snapshot a sync takes; a malformed one is refused', async (t) => {
  const s = scratch(t);
  const src = path.join(s.dir, 'src');
  fs.mkdirSync(src);
  await initVolume(t, s, src);
  const marker = path.join(s.dir, 'pre-hook-ran');
  const config = path.join(src, '.replfs/config.json');
  const base = JSON.parse(fs.readFileSync(config, 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(config, JSON.stringify({ ...base, quiesce: { onSync: 'yes' } }));
  fails(t, await replfs(s, ['sync', src, path.join(s.dir, 'replica')]), 'usage', /config\.json: quiesce\.onSync: must be true or false/, 'a malformed onSync');
  t.false(fs.existsSync(path.join(s.dir, 'replica')));
  fs.writeFileSync(config, JSON.stringify({ ...base, quiesce: { pre: `touch ${marker}`, onSync: true } }));
  await mountVolume(t, s, src);
  fs.writeFileSync(path.join(src, 'a'), 'a');
  const sum = await syncJson(t, s, [src, path.join(s.dir, 'replica')]);
  t.true(fs.existsSync(marker), 'the pre-hook ran');
  const list = JSON.parse((await replfs(s, ['snapshots', src, '--json'])).stdout) as { snapshots: Array<{ name: string; consistency: string }> };
  t.is(list.snapshots.find((x) => x.name === sum.snapshot)?.consistency, 'app', 'the snapshot sent is app-consistent');
});
