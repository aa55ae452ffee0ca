// One volume, several destinations: each keeps its own base (pinned on the source until a
// later sync moves it on), an incremental sync to one does not depend on the other, and a
// slow destination does not hold up a sync to another (the daemon runs them side by side).
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import { ROOT, scratch, replfs, initVolume, forceUnmount, type Scratch } from '../helpers/env.js';
import type { SyncSummary } from '../../src/replicate/sender.js';

const PROXY = path.join(ROOT, 'dist/test/helpers/faultproxy.js');
const REMOTE = `${process.execPath} ${path.join(ROOT, 'src/cli/replfs.mjs')}`;

async function sync(t: ExecutionContext, s: Scratch, src: string, dest: string): Promise<SyncSummary> {
  const r = await replfs(s, ['sync', src, dest, '--json']);
  t.is(r.code, 0, `sync to ${dest}: ${r.stderr}`);
  return JSON.parse(r.stdout) as SyncSummary;
}

async function verifies(t: ExecutionContext, s: Scratch, src: string, dest: string, snapshot: string): Promise<void> {
  const v = await replfs(s, ['verify', src, dest, '--snapshot', snapshot]);
  t.is(v.code, 0, `verify ${dest} ${snapshot}: ${v.stdout}${v.stderr}`);
}

test('each destination keeps its own base; a slow one does not hold up another', async (t) => {
  const s = scratch(t);
  const src = path.join(s.dir, 'src');
  fs.mkdirSync(src);
  await initVolume(t, s, src);
  const config = path.join(s.dir, 'fault.json');
  const env = { ...s.env, REPLFS_SSH: `${process.execPath} ${PROXY} --config ${config}`, REPLFS_REMOTE_COMMAND: REMOTE };
  t.teardown(() => forceUnmount(s, src));
  const m = await replfs(s, ['mount', src], { env });
  t.is(m.code, 0, m.stderr);
  const a = `localhost:${path.join(s.dir, 'a')}`;
  const b = path.join(s.dir, 'b');
  fs.writeFileSync(path.join(src, 'one'), randomBytes(3 << 20));
  const a1 = await sync(t, s, src, a);
  const b1 = await sync(t, s, src, b);
  t.not(a1.replicaId, b1.replicaId);

  // A moves on twice, B stays behind; prune keeps both bases.
  fs.writeFileSync(path.join(src, 'two'), 'two\n');
  const a2 = await sync(t, s, src, a);
  t.is(a2.base, a1.snapshot);
  fs.appendFileSync(path.join(src, 'one'), 'more');
  const a3 = await sync(t, s, src, a);
  const pruned = JSON.parse((await replfs(s, ['prune', src, '--keep-last', '1', '--json'])).stdout) as { kept: Array<{ name: string; reasons: string[] }> };
  const why = Object.fromEntries(pruned.kept.map((k) => [k.name, k.reasons]));
  t.true(why[b1.snapshot]?.includes(`base of ${b}`), `B's base is kept: ${JSON.stringify(why)}`);
  t.true(why[a3.snapshot]?.includes(`base of ${a}`), `A's base is kept: ${JSON.stringify(why)}`);
  const b2 = await sync(t, s, src, b);
  t.is(b2.base, b1.snapshot, 'B syncs from its own base');
  t.is(b2.kind, 'incremental');
  t.true(b2.bytesSent < 200_000, `B gets only what changed since its base (${b2.bytesSent} bytes)`);
  await verifies(t, s, src, a, a3.snapshot);
  await verifies(t, s, src, b, b2.snapshot);

  // A stalls for 8 s in the middle of a big sync; B's sync meanwhile is not held up.
  fs.writeFileSync(path.join(src, 'big'), randomBytes(8 << 20));
  fs.writeFileSync(config, JSON.stringify({ at: 2 << 20, dir: 'up', fault: 'stall', ms: 8000 }));
  const started = Date.now();
  const slow = replfs(s, ['sync', src, a, '--json']);
  await new Promise((r) => setTimeout(r, 1500));
  fs.rmSync(config);
  const quick = await sync(t, s, src, b);
  const quickDone = Date.now() - started;
  const slowRes = await slow;
  const slowDone = Date.now() - started;
  t.is(slowRes.code, 0, slowRes.stderr);
  t.true(quickDone < slowDone, `B finished (${quickDone} ms) while A was stalled (${slowDone} ms)`);
  t.true(slowDone >= 8000, `A was held by the stall (${slowDone} ms)`);
  await verifies(t, s, src, b, quick.snapshot);
  await verifies(t, s, src, a, (JSON.parse(slowRes.stdout) as SyncSummary).snapshot);
});
