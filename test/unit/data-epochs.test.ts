// Volume.dataEpochs (what `replfs find` trusts to hash a content once) and the find engine
// on it, without FUSE: which files the journal says may have changed between snapshots;
// metadata-only changes are not data changes; damaged records and epochs the journal
// health calls inconsistent are never trusted; and findVersions reads a content again
// exactly when the journal cannot vouch for it.
import fs from 'node:fs';
import path from 'node:path';
import { blake3 } from '@napi-rs/blake-hash';
import test from '../helpers/ava.js';
import { put, tmpDir, writeAt } from '../helpers/engine.js';
import { Volume } from '../../src/volume/volume.js';
import { Sublevel, headerKey, regionKey } from '../../src/volume/format.js';
import { Glob } from '../../src/policy/glob.js';
import { findVersions } from '../../src/cli/versions.js';

async function volume(t: { teardown(fn: () => unknown): void }): Promise<{ dir: string; v: Volume }> {
  const dir = tmpDir(t, 'replfs-data-epochs-');
  for (const n of ['a', 'b', 'c', 'e', 'f']) fs.writeFileSync(path.join(dir, n), `${n} at first\n`);
  await Volume.init(dir, { blockSize: 4096 });
  const { volume: v } = await Volume.open(dir, { writable: true });
  t.teardown(() => v.close());
  return { dir, v };
}

const fidOf = (v: Volume, dir: string, name: string) => v.files.fidOfIno(fs.statSync(path.join(dir, name)).ino)!;

test('dataEpochs: writes, truncations and creations count; chmod, utimes, renames and links do not', async (t) => {
  const { dir, v } = await volume(t);
  const s1 = await v.snapshot();
  await writeAt(v, '/a', 'A', 0);
  await put(v, '/d', 'new in epoch 2\n');
  await v.chmod('/e', 0o600);
  await v.utimens('/e', { sec: 1, nsec: 0 }, { sec: 1, nsec: 0 });
  await v.rename('/f', '/f2');
  await v.link('/b', '/b-link');
  const s2 = await v.snapshot();
  await v.truncate('/c', 1);
  const s3 = await v.snapshot();
  const [a, c, d] = ['a', 'c', 'd'].map((n) => fidOf(v, dir, n));
  const all = await v.dataEpochs(s1.epoch, s3.epoch);
  t.deepEqual(Object.fromEntries(all.files), { [a!]: [s2.epoch], [c!]: [s3.epoch], [d!]: [s2.epoch] });
  t.deepEqual(all.untrusted, []);
  const later = await v.dataEpochs(s2.epoch, s3.epoch);
  t.deepEqual(Object.fromEntries(later.files), { [c!]: [s3.epoch] }, 'only the epochs asked for');
  // The current epoch, from memory.
  await writeAt(v, '/b', 'B', 0);
  const live = await v.dataEpochs(s3.epoch, v.journal.epoch);
  t.deepEqual(Object.fromEntries(live.files), { [fidOf(v, dir, 'b')]: [v.journal.epoch] });
});

test('dataEpochs: a damaged header, block detail without a header and an epoch found inconsistent are not trusted', async (t) => {
  const { dir, v } = await volume(t);
  const s1 = await v.snapshot();
  const s2 = await v.snapshot();
  const s3 = await v.snapshot();
  t.deepEqual(await v.dataEpochs(s1.epoch, s3.epoch), { files: new Map(), untrusted: [] }, 'nothing changed');
  const [b, e] = ['b', 'e'].map((n) => fidOf(v, dir, n));
  await v.store.write([
    { type: 'put', sub: Sublevel.headers, key: headerKey(s2.epoch, b!), value: Buffer.from('{not json') },
    { type: 'put', sub: Sublevel.regions, key: regionKey(s3.epoch, e!, 0), value: new Uint8Array(33) },
  ]);
  const r = await v.dataEpochs(s1.epoch, s3.epoch);
  t.deepEqual(Object.fromEntries(r.files), { [b!]: [s2.epoch], [e!]: [s3.epoch] });
  t.deepEqual(r.untrusted, [s2.epoch], 'an unreadable record makes its epoch untrusted');
  v.health = { overflowed: [], inconsistent: [{ epoch: s3.epoch, at: new Date().toISOString(), detail: 'test' }] };
  t.deepEqual((await v.dataEpochs(s1.epoch, s3.epoch)).untrusted, [s2.epoch, s3.epoch], 'and so does the journal health');
  t.deepEqual((await v.dataEpochs(s3.epoch, s3.epoch)).untrusted, [], 'only inside the range');
});

test('findVersions hashes a content once while the journal vouches for it, and again across an untrusted epoch', async (t) => {
  const { dir, v } = await volume(t);
  const s1 = await v.snapshot();
  await v.chmod('/a', 0o600);
  const s2 = await v.snapshot();
  const s3 = await v.snapshot();
  const glob = Glob.parse('a');
  const first = await findVersions(v, glob, { all: true });
  const content = fs.readFileSync(path.join(dir, 'a'));
  t.deepEqual(first.files, [{
    path: 'a',
    versions: [{
      blake3: blake3(content).toString('hex'), size: content.length,
      mtime: first.files[0]!.versions[0]!.mtime, mtimeNs: fs.statSync(path.join(dir, 'a'), { bigint: true }).mtimeNs.toString(),
      snapshots: [s1.name, s2.name, s3.name],
    }],
  }]);
  t.is(first.totals.hashed, 1, 'read once for three snapshots');
  v.health = { overflowed: [], inconsistent: [{ epoch: s2.epoch, at: new Date().toISOString(), detail: 'test' }] };
  const again = await findVersions(v, glob, { all: true });
  t.is(again.totals.hashed, 2, 'read again across the epoch the journal cannot vouch for');
  t.deepEqual(again.files, first.files, 'with the same answer');
});
