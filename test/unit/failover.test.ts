// Promote and failback between two real volumes in one process: a replica promoted in the
// middle of a sync, writes on it, then a sync back to the old source, which had changes of
// its own that never reached the replica. Only what changed since the common snapshot
// travels; the old source's own changes are kept in a snapshot; the refusals change nothing.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import { describeSnapshot as describe, put, volumePair, writeAt } from '../helpers/engine.js';
import { Volume } from '../../src/volume/volume.js';
import { HashPool } from '../../src/replicate/hasher.js';
import { Receiver, type ReceiverApi } from '../../src/replicate/receiver.js';
import { send, type SyncSummary } from '../../src/replicate/sender.js';
import { promote } from '../../src/replicate/promote.js';

interface Sites {
  a: Volume;
  b: Volume;
  aDir: string;
  bDir: string;
  pool: HashPool;
}

async function sites(t: ExecutionContext): Promise<Sites> {
  const p = await volumePair(t, 'replfs-failover-', (src) => {
    fs.writeFileSync(path.join(src, 'docs/readme.txt'), 'hello\n');
    for (let i = 0; i < 4; i++) fs.writeFileSync(path.join(src, `f${i}.bin`), randomBytes(512 * 1024));
  });
  return { a: p.source, b: p.replica, aDir: p.src, bDir: p.dst, pool: p.pool };
}

async function sync(s: Sites, from: Volume, to: Volume, opts: { wrap?: (r: ReceiverApi) => ReceiverApi; mode?: 'sync' | 'dry-run' } = {}): Promise<SyncSummary> {
  const real = new Receiver(to, s.pool);
  try {
    return await send(from, opts.wrap ? opts.wrap(real) : real, { hashPool: s.pool, mode: opts.mode });
  } catch (err) {
    await real.abort();
    throw err;
  }
}

function failAfterWrites(limit: number): (r: ReceiverApi) => ReceiverApi {
  let writes = 0;
  return (r) => ({
    begin: (b) => r.begin(b), files: (c, complete) => r.files(c, complete), compare: (...a) => r.compare(...a),
    write: async (...a) => { if (++writes > limit) throw new Error('injected: the link broke'); return r.write(...a); },
    finish: (o) => r.finish(o), rebase: (n) => r.rebase(n), abort: () => r.abort(),
  });
}

test('failover in the middle of a sync, writes on the promoted replica, failback: only the changes travel, the old source keeps its own', async (t) => {
  const s = await sites(t);
  const c = await s.a.snapshot({ label: 'c' });
  await sync(s, s.a, s.b);
  const atC = await describe(s.a.view(c.name));
  // A second sync dies half way: the replica is between snapshots.
  for (let i = 0; i < 4; i++) await writeAt(s.a, `/f${i}.bin`, randomBytes(100_000), 200_000);
  await s.a.rename('/docs', '/documents');
  await s.a.snapshot();
  await t.throwsAsync(sync(s, s.a, s.b, { wrap: failAfterWrites(3) }), { message: /injected/ });
  t.truthy((await s.b.replicaMeta())!.pending, 'the replica is between snapshots');
  // The old source goes on a little, then "fails".
  await put(s.a, '/only-on-a.txt', 'never replicated');

  const p = await promote(s.b);
  t.is(p.snapshot, s.b.snapshots().at(-1)!.name);
  t.is(p.formerSource, s.a.config.volumeId);
  t.true(p.reverted.files > 0, 'the half-applied sync was undone');
  t.is(await s.b.replicaMeta(), undefined, 'no longer a replica');
  t.is((await s.b.promoted())!.from, s.a.config.volumeId);
  const live = await s.b.snapshot();
  t.deepEqual(await describe(s.b.view(live.name)), atC, 'the promoted volume\'s live files are the newest complete snapshot');
  await t.throwsAsync(promote(s.b), { message: /not a replica \(it was promoted already\)/ });

  // Writes on the promoted volume.
  await put(s.b, '/from-b.txt', 'written after the failover');
  await writeAt(s.b, '/f1.bin', randomBytes(20_000), 0);
  await s.b.rename('/docs/readme.txt', '/docs/README');
  const t1 = await s.b.snapshot({ label: 'on b' });
  const wanted = await describe(s.b.view(t1.name));
  const aBefore = await s.a.snapshot({ label: 'a as it was' });
  const aHad = await describe(s.a.view(aBefore.name));

  const back = await sync(s, s.b, s.a);
  t.truthy(back.rebased);
  t.is(s.b.snapshotNamed(back.rebased!.base).sourceTime, c.sourceTime, 'from the newest snapshot both hold');
  t.is(back.kind, 'incremental', 'never a full copy');
  t.true(back.bytesSent < 120_000, `only the changes since ${c.name} travel: ${back.bytesSent} bytes`);
  t.is((await s.a.replicaMeta())!.sourceVolumeId, s.b.config.volumeId, 'the old source is now a replica of the promoted one');
  const newest = s.a.snapshots().at(-1)!;
  t.is(newest.sourceTime, t1.sourceTime, 'its newest snapshot holds the sender\'s');
  t.deepEqual(await describe(s.a.view(newest.name)), wanted, 'the old source equals the promoted volume');
  t.deepEqual(await describe(s.a.view(aBefore.name)), aHad, 'its own later state is still in its snapshot');
  // Its changes made after the last snapshot were kept in one too.
  t.is(back.rebased!.kept, null, 'nothing changed since "a as it was"');

  // And back again, the other way: the old source promoted, the first promoted one becomes its replica.
  await promote(s.a);
  await put(s.a, '/home-again.txt', 'back on a');
  await s.a.snapshot();
  const home = await sync(s, s.a, s.b);
  t.is(s.a.snapshotNamed(home.rebased!.base).sourceTime, t1.sourceTime, 'from the snapshot both hold');
  t.is(home.kind, 'incremental');
  t.deepEqual(await describe(s.b.view(s.b.snapshots().at(-1)!.name)), await describe(s.a.view(s.a.snapshots().at(-1)!.name)));
});

test('a failback keeps the old source\'s unsnapshotted changes in a snapshot before undoing them', async (t) => {
  const s = await sites(t);
  await s.a.snapshot();
  await sync(s, s.a, s.b);
  await put(s.a, '/late.txt', 'written on a after its last sync');
  await writeAt(s.a, '/f0.bin', 'late data', 0);
  await promote(s.b);
  await s.b.snapshot();
  const back = await sync(s, s.b, s.a);
  const kept = back.rebased!.kept!;
  t.truthy(kept);
  t.is(s.a.snapshotNamed(kept).label, 'kept before a failback');
  const view = s.a.view(kept);
  const h = await view.open('late.txt');
  const buf = Buffer.alloc(h.size);
  await view.read(h, buf, h.size, 0);
  view.release(h);
  t.is(buf.toString(), 'written on a after its last sync');
  t.false(fs.existsSync(path.join(s.aDir, 'late.txt')), 'undone in the live files');
});

test('refusals change nothing: no common snapshot, a dry run, a volume that is not the sender\'s old source, a listing that is not the base', async (t) => {
  const s = await sites(t);
  await s.a.snapshot();
  await sync(s, s.a, s.b);
  await promote(s.b);
  const before = await s.a.snapshot();
  const aHad = await describe(s.a.view(before.name));
  const snapsBefore = s.a.snapshots().length;

  await t.throwsAsync(sync(s, s.b, s.a, { mode: 'dry-run' }), { message: /a dry-run cannot take the place of a failback/ });

  // A listing that does not match the old source's snapshot.
  await s.b.snapshot();
  const real = new Receiver(s.a, s.pool);
  const fake: ReceiverApi = {
    begin: (b) => real.begin(b), files: (c, k) => real.files(c, k), compare: (...a) => real.compare(...a), write: (...a) => real.write(...a),
    finish: (o) => real.finish(o), abort: () => real.abort(),
    rebase: (nodes) => real.rebase([...nodes, [99_999, 'f', [[1, 'invented.txt']]]]),
  };
  await t.throwsAsync(send(s.b, fake, { hashPool: s.pool }), { message: /is not this volume's: invented\.txt is missing here/ });
  await real.abort();

  // The promoted volume drops every snapshot it shares with the old source.
  await put(s.b, '/x', 'x');
  const only = await s.b.snapshot();
  await s.b.deleteSnapshots(s.b.snapshots().filter((x) => x.name !== only.name).map((x) => x.name));
  await t.throwsAsync(sync(s, s.b, s.a), { message: /hold no snapshot in common: taking this sync would mean copying everything, which replfs never does unasked/ });

  t.is(await s.a.replicaMeta(), undefined, 'still not a replica');
  t.is(s.a.snapshots().length, snapsBefore, 'no snapshot taken');
  const after = await s.a.snapshot();
  t.deepEqual(await describe(s.a.view(after.name)), aHad, 'its files untouched');

  // A third volume is not the promoted volume's old source.
  const other = path.join(path.dirname(s.aDir), 'other');
  fs.mkdirSync(other);
  fs.writeFileSync(path.join(other, 'z'), 'z');
  await Volume.init(other);
  const o = (await Volume.open(other, { writable: true })).volume;
  t.teardown(() => o.close());
  await o.snapshot();
  await t.throwsAsync(sync(s, s.b, o), { message: /is a protected directory, not a replica.*/ });
});
