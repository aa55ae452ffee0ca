// The write-intent journal on a real LevelDB, without FUSE.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from '../helpers/ava.js';
import { Store } from '../../src/volume/store.js';
import { Journal } from '../../src/volume/journal.js';
import { ChangeKind } from '../../src/core/types.js';
import { blocksPerRegion } from '../../src/volume/format.js';

const BS = 64 * 1024;
const BPR = blocksPerRegion(BS);
const REGION = BS * BPR;

async function fresh(t: { teardown(fn: () => unknown): void }): Promise<{ dir: string; store: Store; journal: Journal }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replfs-journal-'));
  const store = await Store.open(path.join(dir, 'db'), { create: true });
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return { dir, store, journal: await Journal.load(store, 1, BS, BPR) };
}

async function reopen(dir: string, store: Store): Promise<{ store: Store; journal: Journal }> {
  await store.close();
  const s = await Store.open(path.join(dir, 'db'), { create: false });
  return { store: s, journal: await Journal.load(s, 1, BS, BPR) };
}

test('the first write into a region waits for an intent; later ones do not', async (t) => {
  const { store, journal } = await fresh(t);
  const first = journal.noteWrite(7, 0, 4096);
  t.truthy(first, 'first write into region 0 must wait for its intent');
  await first;
  t.is(journal.noteWrite(7, 8192, 4096), null, 'same region, intent already on disk');
  t.is(journal.noteWrite(7, REGION - 1, 1), null, 'last byte of region 0');
  t.truthy(journal.noteWrite(7, REGION, 1), 'region 1 needs its own intent');
  await store.settle();
  t.is(store.stats.batches >= 2, true);
  await store.close();
});

test('concurrent writes into a new region share one intent', async (t) => {
  const { store, journal } = await fresh(t);
  const a = journal.noteWrite(3, 0, 100);
  const b = journal.noteWrite(3, 200, 100);
  t.truthy(a);
  t.truthy(b, 'the second write must also wait until the intent has landed');
  await Promise.all([a, b]);
  t.is(store.stats.ops, 2, 'one header and one region record');
  await store.close();
});

test('an unflushed pending region is wholly dirty after a crash', async (t) => {
  const { dir, store, journal } = await fresh(t);
  await journal.noteWrite(9, 3 * BS + 5, 10);
  await journal.noteWrite(9, REGION + 2 * BS, BS);
  // No flush: the process "dies" with only the intents on disk.
  const r = await reopen(dir, store);
  t.deepEqual(r.journal.fileState(9)!.extents(10 * REGION), [{ offset: 3 * BS, length: BS }, { offset: REGION + 2 * BS, length: BS }],
    'the bits written with each intent are there');
  const rec = r.journal.recoverPending();
  t.is(rec.regions, 2);
  t.deepEqual(r.journal.fileState(9)!.extents(10 * REGION), [{ offset: 0, length: 2 * REGION }]);
  await r.store.write(rec.ops);
  const again = await reopen(dir, r.store);
  t.deepEqual(again.journal.fileState(9)!.extents(10 * REGION), [{ offset: 0, length: 2 * REGION }]);
  t.is(again.journal.recoverPending().regions, 0, 'recovery is written down once');
  await again.store.close();
});

test('a flush persists exact extents and clears the intents', async (t) => {
  const { dir, store, journal } = await fresh(t);
  await journal.noteWrite(9, 3 * BS + 5, 10);
  await journal.noteWrite(9, 10 * BS, 2 * BS);
  await store.write(journal.flushOps());
  t.is(journal.pendingFlush, 0);
  const r = await reopen(dir, store);
  t.is(r.journal.recoverPending().regions, 0);
  t.deepEqual(r.journal.fileState(9)!.extents(100 * BS), [{ offset: 3 * BS, length: BS }, { offset: 10 * BS, length: 2 * BS }]);
  t.deepEqual(r.journal.fileState(9)!.extents(11 * BS), [{ offset: 3 * BS, length: BS }, { offset: 10 * BS, length: BS }], 'clipped to size');
  await r.store.close();
});

test('a write after a flush takes a new intent, queued behind the flush', async (t) => {
  const { dir, store, journal } = await fresh(t);
  await journal.noteWrite(4, 0, 1);
  const flush = store.write(journal.flushOps());
  const again = journal.noteWrite(4, 5 * BS, 1);
  t.truthy(again, 'the region is no longer covered once the flush is queued');
  await Promise.all([flush, again]);
  const r = await reopen(dir, store);
  t.is(r.journal.recoverPending().regions, 1, 'the new intent landed after the flush record');
  t.deepEqual(r.journal.fileState(4)!.extents(REGION), [{ offset: 0, length: REGION }], 'pending again: whole region');
  await r.store.close();
});

test('files created in the epoch need no intents and count whole', async (t) => {
  const { dir, store, journal } = await fresh(t);
  await store.write(journal.mark(5, ChangeKind.created));
  t.is(journal.noteWrite(5, 0, 4096), null);
  t.is(journal.noteWrite(5, 50 * REGION, 4096), null);
  t.deepEqual(journal.fileState(5)!.extents(1000), [{ offset: 0, length: 1000 }]);
  await store.write(journal.flushOps());
  const r = await reopen(dir, store);
  t.is(r.journal.kindsOf(5), ChangeKind.created | ChangeKind.data);
  await r.store.close();
});

test('mark merges kinds, keeps the lowest size and the first unknown reason', async (t) => {
  const { dir, store, journal } = await fresh(t);
  await store.write(journal.mark(2, ChangeKind.truncated, { minSize: 100 }));
  t.deepEqual(journal.mark(2, ChangeKind.truncated, { minSize: 500 }), [], 'nothing new to write');
  await store.write(journal.mark(2, ChangeKind.attributes, { minSize: 50, unknown: 'offline-change' }));
  await store.write(journal.mark(2, 0, { unknown: 'created-offline' }));
  const r = await reopen(dir, store);
  const st = r.journal.fileState(2)!;
  t.is(st.kinds, ChangeKind.truncated | ChangeKind.attributes);
  t.is(st.minSize, 50);
  t.is(st.unknown, 'offline-change');
  await r.store.close();
});

test('directory entry changes are recorded once per kind', async (t) => {
  const { dir, store, journal } = await fresh(t);
  await store.write(journal.markEntry(1, 'a b', ChangeKind.created));
  t.deepEqual(journal.markEntry(1, 'a b', ChangeKind.created), []);
  await store.write(journal.markEntry(1, 'a b', ChangeKind.deleted));
  await store.write(journal.markEntry(12, 'x!y', ChangeKind.created));
  const r = await reopen(dir, store);
  t.deepEqual(r.journal.entryChanges().sort((a, b) => a.dir - b.dir), [
    { dir: 1, name: 'a b', kinds: ChangeKind.created | ChangeKind.deleted },
    { dir: 12, name: 'x!y', kinds: ChangeKind.created },
  ]);
  await r.store.close();
});

test('a database open twice in one process is refused before LevelDB sees it', async (t) => {
  const { dir, store } = await fresh(t);
  const err = await t.throwsAsync(Store.open(path.join(dir, 'db'), { create: false }));
  t.regex(err!.message, /already open in this process/);
  await store.write([{ type: 'put', sub: 'm', key: 'still', value: Buffer.from('ok') }]);
  t.is((await store.get('m', 'still'))?.toString(), 'ok', 'the first handle keeps working');
  await store.close();
});
