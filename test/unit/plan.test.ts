// Namespace planning for sync: each plan is applied to an in-memory tree that enforces
// POSIX rules (no rename over an existing name, no rmdir of a non-empty directory, parents
// must exist), and the result must be exactly the source's new names. A table of the hard
// cases, then seeded random workloads (REPLFS_PLAN_SEEDS sets how many).
import test from '../helpers/ava.js';
import { ROOT_FID } from '../../src/core/types.js';
import { plan, stepBatches, PlanError, type Node, type NameRef, type Step } from '../../src/replicate/plan.js';
import { STAGE, listing, roundTrip, roundTripShuffled, type Tree } from '../helpers/namespace.js';

const dir = (parent: number, name: string): Node => ({ type: 'dir', names: [[parent, name]] });
const file = (...names: NameRef[]): Node => ({ type: 'file', names });
const tree = (entries: Array<[number, Node]>): Tree => new Map([[ROOT_FID, { type: 'dir', names: [] }], ...entries]);
const R = ROOT_FID;

const cases: Array<[string, Tree, Tree, number?]> = [
  ['nothing changed', tree([[2, file([R, 'a'])]]), tree([[2, file([R, 'a'])]]), 0],
  ['a new file', tree([]), tree([[2, file([R, 'a'])]]), 1],
  ['a rename', tree([[2, file([R, 'a'])]]), tree([[2, file([R, 'b'])]])],
  ['two files swap names', tree([[2, file([R, 'a'])], [3, file([R, 'b'])]]), tree([[2, file([R, 'b'])], [3, file([R, 'a'])]])],
  ['three names rotate', tree([[2, file([R, 'a'])], [3, file([R, 'b'])], [4, file([R, 'c'])]]),
    tree([[2, file([R, 'b'])], [3, file([R, 'c'])], [4, file([R, 'a'])]])],
  ['replace by rename (the atomic-save pattern)', tree([[2, file([R, 'doc'])], [3, file([R, 'doc.tmp'])]]), tree([[3, file([R, 'doc'])]])],
  // Two renames (into staging and out), and nothing for what is inside it.
  ['a directory renamed with its contents', tree([[2, dir(R, 'd')], [3, file([2, 'x'])], [4, dir(2, 'sub')], [5, file([4, 'y'])]]),
    tree([[2, dir(R, 'e')], [3, file([2, 'x'])], [4, dir(2, 'sub')], [5, file([4, 'y'])]]), 2],
  ['a parent and its child swap places (a/b becomes b/a)', tree([[2, dir(R, 'a')], [3, dir(2, 'b')], [4, file([3, 'f'])]]),
    tree([[3, dir(R, 'b')], [2, dir(3, 'a')], [4, file([3, 'f'])]])],
  ['a file moves out of a directory that is then deleted', tree([[2, dir(R, 'd')], [3, file([2, 'x'])]]), tree([[3, file([R, 'x'])]])],
  ['a deep tree deleted', tree([[2, dir(R, 'd')], [3, dir(2, 'e')], [4, file([3, 'x'])], [5, file([2, 'y'])]]), tree([])],
  ['a new directory with new files in it', tree([]), tree([[2, dir(R, 'd')], [3, dir(2, 'e')], [4, file([3, 'x'], [2, 'x2'])]])],
  ['a hard link added', tree([[2, file([R, 'a'])]]), tree([[2, file([R, 'a'], [R, 'b'])]]), 1],
  ['a hard link removed', tree([[2, file([R, 'a'], [R, 'b'])]]), tree([[2, file([R, 'b'])]])],
  ['one of two links moved', tree([[2, dir(R, 'd')], [3, file([R, 'a'], [2, 'b'])]]), tree([[2, dir(R, 'd')], [3, file([R, 'a'], [2, 'c'])]])],
  ['a name reused by a new file', tree([[2, file([R, 'a'])]]), tree([[3, file([R, 'a'])]])],
  ['a file replaced by a directory of the same name', tree([[2, file([R, 'a'])]]), tree([[3, dir(R, 'a')], [4, file([3, 'in'])]])],
  ['a directory moved into a sibling that is renamed too', tree([[2, dir(R, 'a')], [3, dir(R, 'b')], [4, file([2, 'f'])]]),
    tree([[3, dir(R, 'c')], [2, dir(3, 'a')], [4, file([2, 'f'])]])],
];

for (const [title, before, after, count] of cases) {
  test(`plan: ${title}`, (t) => {
    const r = roundTrip(before, after);
    t.deepEqual(r.got, r.want, JSON.stringify(r.steps));
    if (count !== undefined) t.is(r.steps.length, count, `steps: ${JSON.stringify(r.steps)}`);
  });
}

test('plan: a rename moves the name and never creates or copies', (t) => {
  const r = roundTrip(tree([[2, dir(R, 'd')], [3, file([2, 'big'])]]), tree([[2, dir(R, 'd')], [3, file([R, 'big'])]]));
  t.false(r.steps.some((s) => s.op === 'create'), JSON.stringify(r.steps));
});

const refused: Array<[string, Tree, Map<number, Node | null>, RegExp]> = [
  ['a name with a slash', tree([]), new Map([[2, file([R, 'a/b'])]]), /impossible name "a\/b"/],
  ['a name of ..', tree([]), new Map([[2, file([R, '..'])]]), /impossible name/],
  ['an empty name', tree([]), new Map([[2, file([R, ''])]]), /impossible name/],
  ['a name with NUL', tree([]), new Map([[2, file([R, 'a\0b'])]]), /impossible name/],
  ['a directory with two names', tree([]), new Map([[2, { type: 'dir', names: [[R, 'a'], [R, 'b']] }]]), /exactly one name/],
  ['a kept file without names', tree([[2, file([R, 'a'])]]), new Map([[2, file()]]), /no name/],
  ['a type change', tree([[2, file([R, 'a'])]]), new Map([[2, dir(R, 'a')]]), /changed type/],
  ['the root renamed', tree([]), new Map([[R, dir(R, 'x')]]), /root/],
  ['the root deleted', tree([]), new Map([[R, null]]), /root/],
  ['a name in a deleted directory', tree([[2, dir(R, 'd')]]), new Map([[2, null], [3, file([2, 'x'])]]), /deletes or the replica lacks/],
  ['a name in a directory nobody knows', tree([]), new Map([[3, file([9, 'x'])]]), /deletes or the replica lacks/],
  ['a name inside a file', tree([[2, file([R, 'f'])]]), new Map([[3, file([2, 'x'])]]), /not a directory/],
  ['a directory inside itself', tree([[2, dir(R, 'd')]]), new Map([[2, dir(2, 'd')]]), /loop/],
];

for (const [title, before, changes, message] of refused) {
  test(`plan refuses: ${title}`, (t) => {
    t.throws(() => plan({ current: (fid) => before.get(fid), changes, stage: STAGE }), { instanceOf: PlanError, message });
  });
}

// ---------------------------------------------------------------- random workloads

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s / 0x100000000;
  };
}

function clone(t: Tree): Tree {
  return new Map([...t].map(([k, v]) => [k, { type: v.type, names: v.names.map((r) => [r[0], r[1]] as NameRef) }]));
}

/** A random tree, then random POSIX-valid changes to a copy of it. */
function workload(seed: number): { before: Tree; after: Tree } {
  const r = rng(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  const names = ['a', 'b', 'c', 'd', 'e', 'f'];
  let nextFid = 2;
  const dirs = (t: Tree) => [...t].filter(([, n]) => n.type === 'dir').map(([f]) => f);
  const taken = (t: Tree, parent: number, name: string) => [...t.values()].some((n) => n.names.some((x) => x[0] === parent && x[1] === name));
  const freeName = (t: Tree, parent: number) => names.find((n) => !taken(t, parent, n) && r() < 0.7) ?? names.find((n) => !taken(t, parent, n));
  const inside = (t: Tree, fid: number, ancestor: number): boolean => {
    for (let cur = fid, i = 0; cur !== ROOT_FID && i < 100; i++) {
      if (cur === ancestor) return true;
      cur = t.get(cur)!.names[0]![0];
    }
    return false;
  };
  const create = (t: Tree) => {
    const parent = pick(dirs(t));
    const name = freeName(t, parent);
    if (name) t.set(nextFid++, { type: r() < 0.3 ? 'dir' : r() < 0.2 ? 'symlink' : 'file', names: [[parent, name]] });
  };
  const before = tree([]);
  for (let i = 0; i < 12 + Math.floor(r() * 12); i++) create(before);
  const after = clone(before);
  for (let i = 0; i < 1 + Math.floor(r() * 12); i++) {
    const fids = [...after.keys()].filter((f) => f !== ROOT_FID);
    const what = r();
    if (what < 0.2 || fids.length === 0) { create(after); continue; }
    const fid = pick(fids);
    const n = after.get(fid)!;
    if (what < 0.55) {
      // rename one name somewhere else (never into itself), maybe over an existing file
      const ref = pick(n.names as NameRef[]);
      const parent = pick(dirs(after).filter((d) => !(n.type === 'dir' && inside(after, d, fid))));
      const victims = [...after].filter(([f, m]) => f !== fid && m.type !== 'dir' && n.type !== 'dir' && m.names.some((x) => x[0] === parent));
      if (victims.length && r() < 0.3) {
        const [vf, vn] = pick(victims);
        const vref = pick(vn.names.filter((x) => x[0] === parent) as NameRef[]);
        const rest = vn.names.filter((x) => x !== vref);
        if (rest.length) after.set(vf, { ...vn, names: rest }); else after.delete(vf);
        n.names = n.names.map((x) => (x === ref ? vref : x));
      } else {
        const name = freeName(after, parent);
        if (name) n.names = n.names.map((x) => (x === ref ? [parent, name] as NameRef : x));
      }
    } else if (what < 0.7 && n.type !== 'dir') {
      const parent = pick(dirs(after));
      const name = freeName(after, parent);
      if (name) n.names = [...n.names, [parent, name]];
    } else if (n.type !== 'dir') {
      const ref = pick(n.names as NameRef[]);
      const rest = n.names.filter((x) => x !== ref);
      if (rest.length) n.names = rest; else after.delete(fid);
    } else if (![...after.values()].some((m) => m.names.some((x) => x[0] === fid))) {
      after.delete(fid);
    }
  }
  return { before, after };
}

const seeds = Number(process.env.REPLFS_PLAN_SEEDS ?? 400);
test(`plan: ${seeds} random workloads of renames, swaps, moves, links, deletes and replacements`, (t) => {
  let steps = 0;
  for (let seed = 1; seed <= seeds; seed++) {
    const { before, after } = workload(seed);
    let r: ReturnType<typeof roundTrip>;
    try {
      r = roundTrip(before, after);
    } catch (err) {
      t.fail(`seed ${seed}: ${(err as Error).message}\nbefore ${JSON.stringify(listing(before))}\nafter ${JSON.stringify(listing(after))}`);
      return;
    }
    steps += r.steps.length;
    if (JSON.stringify(r.got) !== JSON.stringify(r.want)) {
      t.deepEqual(r.got, r.want, `seed ${seed}: ${JSON.stringify(r.steps)}`);
      return;
    }
  }
  t.log(`${seeds} workloads, ${steps} steps`);
  t.pass();
});

const shape = (batches: Step[][]) => batches.map((b) => b.map((s) => (s.op === 'rename' || s.op === 'link' ? `${s.op} ${s.from}>${s.to}` : `${s.op} ${s.path}`)));

const batchCases: Array<[string, Step[], string[][]]> = [
  ['creations side by side are one batch',
    [{ op: 'create', fid: 2, type: 'file', path: 'a' }, { op: 'create', fid: 3, type: 'file', path: 'b' }, { op: 'create', fid: 4, type: 'dir', path: 'c' }],
    [['create a', 'create b', 'create c']]],
  ['a directory before what goes in it',
    [{ op: 'create', fid: 2, type: 'dir', path: 'd' }, { op: 'create', fid: 3, type: 'file', path: 'd/x' }, { op: 'create', fid: 4, type: 'file', path: 'd/y' }],
    [['create d'], ['create d/x', 'create d/y']]],
  ['a link waits for the name it links from',
    [{ op: 'create', fid: 2, type: 'file', path: 'a' }, { op: 'link', fid: 2, from: 'a', to: 'b' }],
    [['create a'], ['link a>b']]],
  ['nested names staged one after the other',
    [{ op: 'rename', fid: 3, from: 'a/b', to: '.stage/3.0' }, { op: 'rename', fid: 2, from: 'a', to: '.stage/2.1' }],
    [['rename a/b>.stage/3.0'], ['rename a>.stage/2.1']]],
  ['a name reused after it was staged',
    [{ op: 'rename', fid: 2, from: 'a', to: '.stage/2.0' }, { op: 'create', fid: 3, type: 'file', path: 'a' }, { op: 'unlink', fid: 2, path: '.stage/2.0' }],
    [['rename a>.stage/2.0'], ['create a', 'unlink .stage/2.0']]],
  ['an empty plan', [], []],
];
for (const [title, steps, want] of batchCases) {
  test(`batches: ${title}`, (t) => {
    t.deepEqual(shape(stepBatches(steps)), want);
  });
}

test(`batches: ${seeds} random workloads give the same tree whatever the order inside each batch`, (t) => {
  let batches = 0;
  let steps = 0;
  for (let seed = 1; seed <= seeds; seed++) {
    const { before, after } = workload(seed);
    const r = roundTripShuffled(before, after, rng(seed * 7 + 1));
    batches += r.batches.length;
    steps += r.batches.reduce((n, b) => n + b.length, 0);
    if (JSON.stringify(r.got) !== JSON.stringify(r.want)) {
      t.deepEqual(r.got, r.want, `seed ${seed}: ${JSON.stringify(r.batches)}`);
      return;
    }
  }
  t.log(`${seeds} workloads, ${steps} steps in ${batches} batches`);
  t.true(batches < steps, 'some steps share a batch');
});
