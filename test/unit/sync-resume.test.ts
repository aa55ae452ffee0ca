// Syncs between two real volumes in one process that stop half way (faults injected by
// wrapping the real receiver or the real replica volume), then resume; replicas changed
// behind replfs's back; dry runs and verify. After every fault the replica's earlier
// snapshots are intact, and the next sync leaves it equal to the source snapshot it sends.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import { describeSnapshot as describe, put, tmpDir, volumePair, writeAt, type VolumePair } from '../helpers/engine.js';
import { Volume } from '../../src/volume/volume.js';
import { Receiver, type ReceiverApi } from '../../src/replicate/receiver.js';
import { send, verify, type SyncSummary } from '../../src/replicate/sender.js';

type Pair = VolumePair;

function pair(t: ExecutionContext): Promise<Pair> {
  return volumePair(t, 'replfs-resume-', (src) => {
    fs.writeFileSync(path.join(src, 'docs/a.txt'), 'alpha\n');
    for (let i = 0; i < 6; i++) fs.writeFileSync(path.join(src, `f${i}.bin`), randomBytes(200_000 + i * 1000));
  });
}

/** Syncs the newest (or named) source snapshot, through `wrap` if given; rethrows what failed after letting go. */
async function syncOnce(p: Pair, opts: { snapshot?: string; wrap?: (r: ReceiverApi) => ReceiverApi; replica?: Volume; force?: boolean; mode?: 'sync' | 'dry-run' } = {}): Promise<SyncSummary> {
  const real = new Receiver(opts.replica ?? p.replica, p.pool);
  const receiver = opts.wrap ? opts.wrap(real) : real;
  try {
    return await send(p.source, receiver, { hashPool: p.pool, snapshot: opts.snapshot, force: opts.force, mode: opts.mode });
  } catch (err) {
    await real.abort();
    throw err;
  }
}

/** A receiver that fails once it has been asked to write `limit` blocks. */
function failAfterWrites(limit: number): (r: ReceiverApi) => ReceiverApi {
  let writes = 0;
  return (r) => ({
    begin: (b) => r.begin(b),
    files: (c, complete) => r.files(c, complete),
    compare: (...a) => r.compare(...a),
    write: async (...a) => {
      if (++writes > limit) throw new Error('injected: the connection broke');
      return r.write(...a);
    },
    finish: () => r.finish(),
    rebase: (nodes) => r.rebase(nodes),
    abort: () => r.abort(),
  });
}

/** The replica volume, whose name-changing calls fail from the `limit`-th on. */
function failingNames(v: Volume, limit: number): Volume {
  let calls = 0;
  const names = new Set(['rename', 'link', 'create', 'mkdir', 'symlink', 'mknod', 'unlink', 'rmdir']);
  return new Proxy(v, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      if (typeof prop === 'string' && names.has(prop)) {
        return (...args: unknown[]) => {
          if (++calls >= limit) return Promise.reject(new Error(`injected: ${prop} failed`));
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return (value as (...a: unknown[]) => unknown).bind(target);
    },
  });
}

async function sameAsSource(t: ExecutionContext, p: Pair, sourceSnapshot: string, what: string): Promise<void> {
  const r = p.replica.snapshots().at(-1)!;
  t.is(r.sourceTime, p.source.snapshotNamed(sourceSnapshot).sourceTime, `${what}: the newest replica snapshot holds ${sourceSnapshot}`);
  t.deepEqual(await describe(p.replica.view(r.name)), await describe(p.source.view(sourceSnapshot)), what);
}

test('a sync cut off while sending blocks leaves the replica as it was; the next one resumes and does not send them again', async (t) => {
  const p = await pair(t);
  const s1 = await p.source.snapshot();
  await syncOnce(p);
  const r1 = p.replica.snapshots().at(-1)!;
  const before = await describe(p.replica.view(r1.name));

  for (let i = 0; i < 6; i++) await writeAt(p.source, `/f${i}.bin`, randomBytes(100_000), 50_000);
  await put(p.source, '/new.bin', randomBytes(300_000));
  await p.source.rename('/docs', '/papers');
  const s2 = await p.source.snapshot();
  const err = await t.throwsAsync(syncOnce(p, { wrap: failAfterWrites(20) }));
  t.regex(err!.message, /injected/);
  t.is(p.replica.snapshots().length, 1, 'no replica snapshot for the interrupted sync');
  t.deepEqual(await describe(p.replica.view(r1.name)), before, 'the earlier replica snapshot is intact');
  t.is((await p.replica.replicaMeta())!.base!.name, s1.name, 'the base is still the old one');

  const resumed = await syncOnce(p);
  t.true(resumed.resumed, 'the next sync knows it resumes');
  t.is(resumed.kind, 'incremental');
  t.true(resumed.blocksSkipped >= 20, `blocks that arrived before the cut are not sent again (${resumed.blocksSkipped} skipped)`);
  await sameAsSource(t, p, s2.name, 'after the resumed sync');
  t.deepEqual(await describe(p.replica.view(r1.name)), before, 'the earlier replica snapshot is still intact');
  t.is((await p.replica.replicaMeta())!.pending, null);
});

test('a sync cut off while changing names is finished by the next one, whatever snapshot that one sends', async (t) => {
  for (const cut of [1, 2, 3, 5, 8]) {
    const p = await pair(t);
    await p.source.snapshot();
    await syncOnce(p);
    const r1 = p.replica.snapshots().at(-1)!;
    const before = await describe(p.replica.view(r1.name));
    // Swaps, a move into a new directory, a delete and new files: a plan of many steps.
    await p.source.rename('/f0.bin', '/tmp.bin');
    await p.source.rename('/f1.bin', '/f0.bin');
    await p.source.rename('/tmp.bin', '/f1.bin');
    await p.source.mkdir('/new', 0o755, { uid: 0, gid: 0, pid: 1 });
    await p.source.rename('/docs', '/new/docs');
    await p.source.unlink('/f2.bin');
    await put(p.source, '/new/born.txt', 'born\n');
    await p.source.link('/f3.bin', '/new/f3-again.bin');
    const s2 = await p.source.snapshot();
    // A file made and deleted after s2: present in the interrupted sync, gone by the next snapshot.
    await put(p.source, '/short-lived', 'x');
    const s2b = await p.source.snapshot();
    await p.source.unlink('/short-lived');
    await writeAt(p.source, '/f4.bin', 'changed after', 10);
    const s3 = await p.source.snapshot();

    const err = await t.throwsAsync(syncOnce(p, { snapshot: s2b.name, replica: failingNames(p.replica, cut) }));
    if (process.env.DEBUG_RESUME) console.log(cut, err?.message, JSON.stringify(await p.replica.loggedPlan()));
    t.regex(err!.message, /injected/, `cut at name step ${cut}`);
    t.is(p.replica.snapshots().length, 1, `cut ${cut}: no replica snapshot for the interrupted sync`);
    t.deepEqual(await describe(p.replica.view(r1.name)), before, `cut ${cut}: the earlier replica snapshot is intact`);
    t.is((await p.replica.replicaMeta())!.pending?.names, 'planned', `cut ${cut}: the names are logged as half done`);

    // An older snapshot than the interrupted one first, then the newest.
    const back = await syncOnce(p, { snapshot: s2.name });
    t.true(back.resumed);
    await sameAsSource(t, p, s2.name, `cut ${cut}: resumed with an older snapshot`);
    await syncOnce(p, { snapshot: s3.name });
    await sameAsSource(t, p, s3.name, `cut ${cut}: then the newest`);
    t.false(fs.readdirSync(p.dst).some((n) => n.startsWith('.replfs-incoming')), `cut ${cut}: no staging directory left`);
  }
});

test('changes made to a replica behind replfs are refused, --force undoes them, and a planted symlink never leads outside', async (t) => {
  const p = await pair(t);
  const s1 = await p.source.snapshot();
  await syncOnce(p);
  await p.replica.close();
  const outside = tmpDir(t, 'replfs-outside-');
  fs.writeFileSync(path.join(outside, 'a.txt'), 'not yours');
  fs.renameSync(path.join(p.dst, 'docs'), path.join(p.dst, 'docs-moved'));
  fs.symlinkSync(outside, path.join(p.dst, 'docs'));
  fs.writeFileSync(path.join(p.dst, 'f1.bin'), 'overwritten behind replfs');
  fs.writeFileSync(path.join(p.dst, 'stray'), 'stray');
  p.replica = (await Volume.open(p.dst, { writable: true })).volume;
  t.truthy((await p.replica.replicaMeta())!.divergent, 'the changes were found when the replica was opened');

  await writeAt(p.source, '/docs/a.txt', 'more\n', 6);
  const s2 = await p.source.snapshot();
  const refused = await t.throwsAsync(syncOnce(p));
  t.regex(refused!.message, /changed outside replfs \(2 created, 1 changed, 1 moved or linked; e\.g\. /);
  const dry = await t.throwsAsync(syncOnce(p, { mode: 'dry-run' }));
  t.regex(dry!.message, /changed outside replfs/, 'a dry run says so too');

  // Still divergent after a reopen: the scan does not find the changes twice, the mark stays.
  await p.replica.close();
  p.replica = (await Volume.open(p.dst, { writable: true })).volume;
  await t.throwsAsync(syncOnce(p), { message: /changed outside replfs/ });

  const forced = await syncOnce(p, { force: true });
  t.is(forced.kind, 'complete');
  await sameAsSource(t, p, s2.name, 'after --force');
  t.deepEqual(fs.readdirSync(outside), ['a.txt']);
  t.is(fs.readFileSync(path.join(outside, 'a.txt'), 'utf8'), 'not yours', 'nothing was written through the planted symlink');
  t.false(fs.existsSync(path.join(p.dst, 'stray')), 'the stray file is gone');
  t.false(fs.existsSync(path.join(p.dst, 'docs-moved')), 'the moved-away directory is gone');
  t.is((await p.replica.replicaMeta())!.divergent, undefined, 'the mark is cleared');
  await writeAt(p.source, '/f5.bin', 'later', 0);
  await p.source.snapshot();
  const next = await syncOnce(p);
  t.is(next.kind, 'incremental', 'syncs are ordinary again');
  t.is(next.base, s2.name);
  void s1;
});

test('a symlink or hard link planted while the replica is open is refused before anything is written through it', async (t) => {
  const p = await pair(t);
  await p.source.snapshot();
  await syncOnce(p);
  const outside = tmpDir(t, 'replfs-outside-');
  fs.writeFileSync(path.join(outside, 'a.txt'), 'not yours');
  // Behind the open replica's back: the open-time scan cannot see these.
  fs.renameSync(path.join(p.dst, 'docs'), path.join(p.dst, 'docs-moved'));
  fs.symlinkSync(outside, path.join(p.dst, 'docs'));
  await writeAt(p.source, '/docs/a.txt', 'through the link?\n', 0);
  await put(p.source, '/docs/new.txt', 'new\n');
  await p.source.snapshot();
  await t.throwsAsync(syncOnce(p), { message: /changed outside replfs: docs is a symlink, not a dir/ });
  t.deepEqual(fs.readdirSync(outside), ['a.txt']);
  t.is(fs.readFileSync(path.join(outside, 'a.txt'), 'utf8'), 'not yours');

  // A hard link from outside the replica to one of its files.
  fs.unlinkSync(path.join(p.dst, 'docs'));
  fs.renameSync(path.join(p.dst, 'docs-moved'), path.join(p.dst, 'docs'));
  const victim = path.join(outside, 'victim');
  fs.linkSync(path.join(p.dst, 'f0.bin'), victim);
  const was = fs.readFileSync(victim);
  await writeAt(p.source, '/f0.bin', randomBytes(1000), 0);
  await p.source.snapshot();
  await t.throwsAsync(syncOnce(p), { message: /changed outside replfs: f0\.bin has 2 links/ });
  t.deepEqual(fs.readFileSync(victim), was, 'the file outside is unchanged');
});

test('a dry run changes nothing and says what would be sent; verify finds what differs', async (t) => {
  const p = await pair(t);
  await p.source.snapshot();
  await syncOnce(p);
  const r1 = p.replica.snapshots().at(-1)!;
  await writeAt(p.source, '/f2.bin', randomBytes(40_000), 0);
  const s2 = await p.source.snapshot();
  const tree = await describe(p.replica.view(r1.name));
  const dry = await syncOnce(p, { mode: 'dry-run' });
  t.true(dry.dryRun);
  t.is(dry.replicaSnapshot, null);
  t.true(dry.bytesSent >= 40_000 && dry.bytesSent <= 40_000 + 2 * 16384, `a dry run counts the changed blocks (${dry.bytesSent})`);
  t.is(p.replica.snapshots().length, 1, 'no replica snapshot');
  t.deepEqual(await describe(p.replica.view(r1.name)), tree, 'nothing changed');
  t.is((await p.replica.replicaMeta())!.pending, null, 'nothing logged');

  await syncOnce(p);
  const same = await verify(p.source, new Receiver(p.replica, p.pool), { hashPool: p.pool, snapshot: s2.name });
  t.true(same.identical, JSON.stringify(same.differences));
  t.is(same.totalDifferences, 0);

  // Behind replfs: the newest replica snapshot shares unchanged blocks with the live files.
  const fd = fs.openSync(path.join(p.dst, 'f3.bin'), 'r+');
  fs.writeSync(fd, 'X', 70_000);
  fs.closeSync(fd);
  fs.chmodSync(path.join(p.dst, 'f4.bin'), 0o600);
  fs.writeFileSync(path.join(p.dst, 'extra'), 'x');
  // Opened afresh, as `replfs serve` does for each verify.
  await p.replica.close();
  p.replica = (await Volume.open(p.dst, { writable: false })).volume;
  const differs = await verify(p.source, new Receiver(p.replica, p.pool), { hashPool: p.pool, snapshot: s2.name });
  t.false(differs.identical);
  const what = differs.differences.map((d) => `${d.path} ${d.what.split(' ')[0]}`).sort();
  // A file made behind replfs after the snapshot is not in it (but the root's mtime changed);
  // a changed mode, changed blocks and the mtime that came with them are.
  t.deepEqual(what, ['/ mtime', 'f3.bin data', 'f3.bin mtime', 'f4.bin mode'], JSON.stringify(differs.differences));
  t.regex(differs.differences.find((d) => d.path === 'f3.bin' && d.what.startsWith('data'))!.what, /1 block differs?, the first at byte 65536/);
});

test('blocks the replica already holds in its block store are copied there, not sent', async (t) => {
  const p = await pair(t);
  const content = randomBytes(64 * 1024);
  await put(p.source, '/keep.bin', content);
  await p.source.snapshot();
  await syncOnce(p);
  // The replica preserves keep.bin's blocks when they change; then the old content comes back.
  await writeAt(p.source, '/keep.bin', randomBytes(64 * 1024), 0);
  await p.source.snapshot();
  await syncOnce(p);
  await writeAt(p.source, '/keep.bin', content, 0);
  const s3 = await p.source.snapshot();
  const back = await syncOnce(p);
  t.is(back.bytesSent, 0, 'the old blocks came from the replica\'s own store');
  await sameAsSource(t, p, s3.name, 'after the revert');
});

test('a sync of many more files than the receiver keeps open is exact (descriptors are closed and opened again as it goes)', async (t) => {
  const p = await pair(t);
  await p.source.snapshot();
  await syncOnce(p);
  // Existing files, changed: each is opened on the replica to compare, and written.
  for (let i = 0; i < 300; i++) await put(p.source, `/many-${i}`, randomBytes(70_000));
  await p.source.snapshot();
  await syncOnce(p);
  for (let i = 0; i < 300; i++) await writeAt(p.source, `/many-${i}`, randomBytes(20_000), 1000 + i);
  const s3 = await p.source.snapshot();
  const third = await syncOnce(p);
  t.true(third.filesChanged >= 300);
  t.true(third.bytesSent < 300 * 3 * 16384, `only the changed blocks are sent (${third.bytesSent} bytes)`);
  await sameAsSource(t, p, s3.name, 'after changing 300 files at once');
});
