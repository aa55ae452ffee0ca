// A path-keyed model of a directory tree for checking namespace plans: it applies plan
// steps with the rules a real directory tree enforces.
import { ROOT_FID } from '../../src/core/types.js';
import { plan, stepBatches, type Node, type Step } from '../../src/replicate/plan.js';

export type Tree = Map<number, Node>;
export const STAGE = '.stage';

/** Every path of a tree with the id it names, sorted. */
export function listing(tree: Tree): string[] {
  const pathOf = (fid: number, seen = 0): string => {
    if (fid === ROOT_FID) return '';
    const n = tree.get(fid);
    if (!n || !n.names[0] || seen > 100) throw new Error(`no path for ${fid}`);
    const up = pathOf(n.names[0][0], seen + 1);
    return up === '' ? n.names[0][1] : `${up}/${n.names[0][1]}`;
  };
  const out: string[] = [];
  for (const [fid, n] of tree) {
    if (fid === ROOT_FID) continue;
    for (const r of n.names) {
      const up = pathOf(r[0]);
      out.push(`${up === '' ? r[1] : `${up}/${r[1]}`} ${fid} ${n.type}`);
    }
  }
  return out.sort();
}

/** A path-keyed model of a directory tree that refuses what a real one would. */
export class Model {
  readonly entries = new Map<string, { fid: number; type: string }>();
  constructor(tree: Tree) {
    for (const line of listing(tree)) {
      const [p, fid, type] = line.split(' ');
      this.entries.set(p!, { fid: Number(fid), type: type! });
    }
    this.entries.set(STAGE, { fid: -1, type: 'dir' });
  }
  private parentOk(p: string): void {
    const cut = p.lastIndexOf('/');
    if (cut < 0) return;
    const parent = this.entries.get(p.slice(0, cut));
    if (!parent || parent.type !== 'dir') throw new Error(`ENOENT: no directory for ${p}`);
  }
  apply(s: Step): void {
    switch (s.op) {
      case 'create': {
        if (this.entries.has(s.path)) throw new Error(`EEXIST ${s.path}`);
        this.parentOk(s.path);
        this.entries.set(s.path, { fid: s.fid, type: s.type });
        return;
      }
      case 'link': {
        const e = this.entries.get(s.from);
        if (!e || e.type === 'dir') throw new Error(`link: bad source ${s.from}`);
        if (e.fid !== s.fid) throw new Error(`link: ${s.from} is ${e.fid}, not ${s.fid}`);
        if (this.entries.has(s.to)) throw new Error(`EEXIST ${s.to}`);
        this.parentOk(s.to);
        this.entries.set(s.to, e);
        return;
      }
      case 'rename': {
        const e = this.entries.get(s.from);
        if (!e) throw new Error(`rename: ENOENT ${s.from}`);
        if (e.fid !== s.fid) throw new Error(`rename: ${s.from} is ${e.fid}, not ${s.fid}`);
        if (this.entries.has(s.to)) throw new Error(`rename: EEXIST ${s.to} (plans never replace)`);
        if (s.to.startsWith(`${s.from}/`)) throw new Error(`rename: EINVAL ${s.from} into itself`);
        this.parentOk(s.to);
        for (const [p, v] of [...this.entries]) {
          if (p === s.from || p.startsWith(`${s.from}/`)) {
            this.entries.delete(p);
            this.entries.set(s.to + p.slice(s.from.length), v);
          }
        }
        return;
      }
      case 'unlink': {
        const e = this.entries.get(s.path);
        if (!e || e.type === 'dir' || e.fid !== s.fid) throw new Error(`unlink: bad ${s.path}`);
        this.entries.delete(s.path);
        return;
      }
      case 'rmdir': {
        const e = this.entries.get(s.path);
        if (!e || e.type !== 'dir' || e.fid !== s.fid) throw new Error(`rmdir: bad ${s.path}`);
        for (const p of this.entries.keys()) if (p.startsWith(`${s.path}/`)) throw new Error(`rmdir: ENOTEMPTY ${s.path}`);
        this.entries.delete(s.path);
      }
    }
  }
  listing(): string[] {
    const out: string[] = [];
    for (const [p, v] of this.entries) if (p !== STAGE) out.push(`${p} ${v.fid} ${v.type}`);
    if ([...this.entries.keys()].some((p) => p.startsWith(`${STAGE}/`))) out.push('(staging not empty)');
    return out.sort();
  }
}

const sameNode = (a: Node | undefined, b: Node | undefined) =>
  !!a && !!b && a.type === b.type && a.names.length === b.names.length &&
  a.names.every((r) => b.names.some((x) => x[0] === r[0] && x[1] === r[1]));

/** The change set between two trees: every id whose names differ, or that came or went. */
export function changesOf(before: Tree, after: Tree): Map<number, Node | null> {
  const out = new Map<number, Node | null>();
  for (const [fid, n] of after) if (!sameNode(before.get(fid), n)) out.set(fid, n);
  for (const fid of before.keys()) if (!after.has(fid)) out.set(fid, null);
  return out;
}

/** Plans from `before` to `after`, applies the plan, and returns what came out. */
export function roundTrip(before: Tree, after: Tree): { got: string[]; want: string[]; steps: Step[] } {
  const steps = plan({ current: (fid) => before.get(fid), changes: changesOf(before, after), stage: STAGE });
  const m = new Model(before);
  for (const s of steps) m.apply(s);
  return { got: m.listing(), want: listing(after), steps };
}


/**
 * As roundTrip, but runs the plan batch by batch (stepBatches) with each batch's steps in
 * an order drawn from `rand`, as concurrent execution may: the outcome must not change.
 */
export function roundTripShuffled(before: Tree, after: Tree, rand: () => number): { got: string[]; want: string[]; batches: Step[][] } {
  const steps = plan({ current: (fid) => before.get(fid), changes: changesOf(before, after), stage: STAGE });
  const batches = stepBatches(steps);
  const m = new Model(before);
  for (const b of batches) {
    const order = [...b];
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    for (const s of order) m.apply(s);
  }
  return { got: m.listing(), want: listing(after), batches };
}
