// The sender's change set, from a real volume (engine, LevelDB, copy-on-write; no FUSE):
// between two snapshots it must name every file whose names, attributes or data changed,
// so that the planner turns the first snapshot's tree into the second's; and its extents
// and attributes must be those of the second snapshot.
import fs from 'node:fs';
import path from 'node:path';
import test from '../helpers/ava.js';
import { me, put, tmpDir, writeAt } from '../helpers/engine.js';
import { ROOT_FID } from '../../src/core/types.js';
import { Volume } from '../../src/volume/volume.js';
import { changeSet, type FileChange } from '../../src/replicate/changes.js';
import { plan } from '../../src/replicate/plan.js';
import { Model, STAGE, changesOf, listing, type Tree } from '../helpers/namespace.js';





const treeOf = (changes: FileChange[]): Tree => {
  const t: Tree = new Map();
  for (const c of changes) if (c.node) t.set(c.fid, { type: c.node.type, names: c.node.names });
  return t;
};

test('a change set between two snapshots carries every changed name, and the planner rebuilds the newer tree from the older', async (t) => {
  const dir = tmpDir(t, 'replfs-changes-');
  fs.mkdirSync(path.join(dir, 'a/b'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'c'));
  fs.writeFileSync(path.join(dir, 'a/b/f'), Buffer.alloc(200_000, 7));
  fs.writeFileSync(path.join(dir, 'x'), 'x');
  fs.writeFileSync(path.join(dir, 'y'), 'y');
  fs.writeFileSync(path.join(dir, 'db'), 'old database');
  fs.writeFileSync(path.join(dir, 'c/gone'), 'bye');
  fs.writeFileSync(path.join(dir, 'untouched'), 'same');
  await Volume.init(dir, { blockSize: 4096 });
  const v = (await Volume.open(dir, { writable: true })).volume;
  try {
    const a = await v.snapshot();
    await writeAt(v, '/a/b/f', Buffer.alloc(5000, 1), 10_000);         // data in the middle
    await v.rename('/x', '/x.tmp');                                     // swap x and y
    await v.rename('/y', '/x');
    await v.rename('/x.tmp', '/y');
    await put(v, '/db.tmp', 'new database');                             // atomic save
    await v.rename('/db.tmp', '/db');
    await v.rename('/a', '/c/a2');                                       // a directory moves
    await v.link('/c/a2/b/f', '/f-link');                                // a hard link
    await v.unlink('/c/gone');
    await v.mkdir('/new', 0o755, me);
    await put(v, '/new/file', 'fresh');
    await v.symlink('../y', '/new/link', me);
    await v.chmod('/untouched', 0o600);                                  // attributes only
    const b = await v.snapshot();

    const full = { a: await changeSet(v, null, a.name), b: await changeSet(v, null, b.name) };
    const delta = await changeSet(v, a.name, b.name);
    const before = treeOf(full.a);
    const after = treeOf(full.b);
    const needed = changesOf(before, after);
    const sent = new Map(delta.map((c) => [c.fid, c.node]));
    for (const fid of needed.keys()) t.true(sent.has(fid), `file ${fid} changed its names between the snapshots and must be in the change set`);

    const steps = plan({ current: (fid) => before.get(fid), changes: sent, stage: STAGE });
    const m = new Model(before);
    for (const s of steps) m.apply(s);
    t.deepEqual(m.listing(), listing(after), JSON.stringify(steps));
    t.false(steps.some((s) => s.op === 'create' && s.path === 'c/a2'), 'the moved directory is renamed, not made again');

    const byPath = (changes: FileChange[], tree: Tree, p: string) => {
      const line = listing(tree).find((l) => l.startsWith(`${p} `));
      const fid = Number(line?.split(' ')[1]);
      return changes.find((c) => c.fid === fid);
    };
    const f = byPath(delta, after, 'c/a2/b/f')!;
    t.deepEqual(f.extents, [{ offset: 8192, length: 8192 }], 'the write of 5000 bytes at 10000 touches blocks 2 and 3 of 4 KiB');
    t.is(f.node?.names.length, 2, 'and it has two names now');
    t.is(byPath(delta, after, 'db')?.attr?.size, 'new database'.length, 'the replaced file is sent whole');
    t.deepEqual(byPath(delta, after, 'db')?.extents, [{ offset: 0, length: 12 }]);
    t.is(byPath(delta, after, 'new/link')?.target, '../y');
    t.is((byPath(delta, after, 'untouched')?.attr?.mode ?? 0) & 0o7777, 0o600);
    t.deepEqual(byPath(delta, after, 'untouched')?.extents, [], 'an attribute change sends no data');
    t.false(delta.some((c) => c.fid === ROOT_FID && c.node?.names.length), 'the root has no names');
    // c/a2/b only moved with its parent: its own name is unchanged, so the plan leaves it be
    // (it is in the change set only because an entry in it changed: its times).
    const inner = Number(listing(after).find((l) => l.startsWith('c/a2/b '))!.split(' ')[1]);
    t.deepEqual(delta.find((c) => c.fid === inner)?.node?.names, before.get(inner)?.names);
    t.false(steps.some((s) => s.fid === inner), 'no step for a directory that only moved with its parent');
    t.is(full.b.find((c) => c.fid === f.fid)?.extents[0]?.length, 200_000, 'a first sync sends every file whole');
  } finally {
    await v.close();
  }
});
