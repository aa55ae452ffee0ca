// Planning the namespace part of a sync: which renames, links, creations and removals turn
// the replica's names into the source's, moving names and never data (DESIGN.md,
// Replication). Pure: the caller gives the replica's current names and the source's new
// ones for the files that changed, and applies the steps in order.
//
// Files are named by their source file id. A name is a reference (parent id, basename), so a
// directory's rename moves everything below it without listing it.
//
// The plan has three phases, which make every swap, cycle and replace-by-rename safe:
//  1. every name that goes away is moved into a staging directory, deepest first (not
//     needed for correctness, since paths are worked out as the plan goes, but then a
//     staged directory never carries a changed child with it and plans read naturally);
//  2. every new name is made, parents before children (by depth in the new tree): by
//     moving a staged name of the same file, else by a link to a name it keeps, else by
//     creating the file;
//  3. what is left in staging is removed: names of deleted files, then emptied directories.
import type { FileId } from '../core/types.js';
import { ROOT_FID } from '../core/types.js';

export type NodeType = 'dir' | 'file' | 'symlink' | 'other';

/** A name: the parent directory's id and the name in it. */
export type NameRef = readonly [parent: FileId, name: string];

export interface Node {
  type: NodeType;
  /** Every name; a directory has exactly one, the root none. */
  names: readonly NameRef[];
}

export type Step =
  | { op: 'rename'; fid: FileId; from: string; to: string }
  | { op: 'link'; fid: FileId; from: string; to: string }
  | { op: 'create'; fid: FileId; type: NodeType; path: string }
  | { op: 'unlink'; fid: FileId; path: string }
  | { op: 'rmdir'; fid: FileId; path: string };

export interface PlanInput {
  /** The replica's current node for any file id it has (changed or not), or undefined. */
  current: (fid: FileId) => Node | undefined;
  /** The new node of each changed file, or null when it was deleted. */
  changes: ReadonlyMap<FileId, Node | null>;
  /** Relative path of an existing, empty directory that names can be moved into meanwhile. */
  stage: string;
}

/** The change set cannot be applied as given (it contradicts itself or the replica). */
export class PlanError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PlanError';
  }
}

/** Stands for the staging directory in name references. */
const STAGE_FID = -1;

const sameRef = (a: NameRef, b: NameRef) => a[0] === b[0] && a[1] === b[1];
const hasRef = (refs: readonly NameRef[], r: NameRef) => refs.some((x) => sameRef(x, r));

function checkName(fid: FileId, r: NameRef): void {
  const name = r[1];
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new PlanError(`file ${fid} has an impossible name ${JSON.stringify(name)}`);
  }
}

export function plan(input: PlanInput): Step[] {
  const { current, changes, stage } = input;
  const steps: Step[] = [];
  // Names as they are while the plan runs, for the files whose names it touches.
  const live = new Map<FileId, NameRef[]>();
  const namesNow = (fid: FileId): NameRef[] => {
    let n = live.get(fid);
    if (!n) {
      n = [...(current(fid)?.names ?? [])];
      live.set(fid, n);
    }
    return n;
  };
  const typeOf = (fid: FileId): NodeType | undefined => changes.get(fid)?.type ?? current(fid)?.type;

  const pathNow = (fid: FileId, seen = 0): string => {
    if (fid === ROOT_FID) return '';
    if (fid === STAGE_FID) return stage;
    const first = namesNow(fid)[0];
    if (!first) throw new PlanError(`file ${fid} is needed as a parent but the replica has no name for it`);
    if (seen > 4096) throw new PlanError(`the names of file ${fid} form a loop`);
    const parent = pathNow(first[0], seen + 1);
    return parent === '' ? first[1] : `${parent}/${first[1]}`;
  };
  const refPath = (r: NameRef) => {
    const parent = pathNow(r[0]);
    return parent === '' ? r[1] : `${parent}/${r[1]}`;
  };

  // Depth of a name in the new tree, through new names where a parent changed.
  const targetDepth = (r: NameRef, seen = 0): number => {
    if (r[0] === ROOT_FID) return 1;
    if (seen > 4096) throw new PlanError('the new names form a loop');
    const parent = changes.has(r[0]) ? changes.get(r[0]) : current(r[0]);
    const up = parent?.names[0];
    if (!parent || !up) throw new PlanError(`a new name is in directory ${r[0]}, which the change set deletes or the replica lacks`);
    if (parent.type !== 'dir') throw new PlanError(`a new name is in file ${r[0]}, which is not a directory`);
    return 1 + targetDepth(up, seen + 1);
  };

  // ---- phase 1: move away every name that goes, deepest first
  const leaving: Array<{ fid: FileId; ref: NameRef; depth: number }> = [];
  for (const [fid, next] of changes) {
    if (fid === ROOT_FID) {
      if (next === null || next.names.length > 0) throw new PlanError('the root cannot be renamed or deleted');
      continue;
    }
    const before = current(fid);
    if (next) {
      if (next.type === 'dir' && next.names.length !== 1) throw new PlanError(`directory ${fid} must have exactly one name, not ${next.names.length}`);
      if (next.names.length === 0) throw new PlanError(`file ${fid} is kept but has no name`);
      for (const r of next.names) checkName(fid, r);
      if (before && before.type !== next.type) throw new PlanError(`file ${fid} changed type from ${before.type} to ${next.type}`);
    }
    if (!before) continue;
    for (const r of before.names) {
      if (next && hasRef(next.names, r)) continue;
      leaving.push({ fid, ref: r, depth: refPath(r).split('/').length });
    }
  }
  leaving.sort((a, b) => b.depth - a.depth || a.fid - b.fid);
  let staged = 0;
  for (const { fid, ref } of leaving) {
    const to: NameRef = [STAGE_FID, `${fid}.${staged++}`];
    steps.push({ op: 'rename', fid, from: refPath(ref), to: refPath(to) });
    const names = namesNow(fid);
    names.splice(names.findIndex((x) => sameRef(x, ref)), 1, to);
  }

  // ---- phase 2: make every new name, parents first
  const arriving: Array<{ fid: FileId; ref: NameRef; depth: number }> = [];
  for (const [fid, next] of changes) {
    if (!next || fid === ROOT_FID) continue;
    const before = current(fid);
    for (const r of next.names) {
      if (before && hasRef(before.names, r)) continue;
      arriving.push({ fid, ref: r, depth: targetDepth(r) });
    }
  }
  arriving.sort((a, b) => a.depth - b.depth || a.fid - b.fid);
  for (const { fid, ref } of arriving) {
    const names = namesNow(fid);
    const to = refPath(ref);
    const stagedAt = names.findIndex((x) => x[0] === STAGE_FID);
    if (stagedAt >= 0) {
      steps.push({ op: 'rename', fid, from: refPath(names[stagedAt]!), to });
      names.splice(stagedAt, 1, ref);
    } else if (names.length > 0) {
      if (typeOf(fid) === 'dir') throw new PlanError(`directory ${fid} would get a second name`);
      steps.push({ op: 'link', fid, from: refPath(names[0]!), to });
      names.push(ref);
    } else {
      steps.push({ op: 'create', fid, type: changes.get(fid)!.type, path: to });
      names.push(ref);
    }
  }

  // ---- phase 3: remove what is left in staging: names first, then directories
  const leftovers: Array<{ fid: FileId; ref: NameRef }> = [];
  for (const [fid, names] of live) for (const r of names) if (r[0] === STAGE_FID) leftovers.push({ fid, ref: r });
  leftovers.sort((a, b) => Number(typeOf(a.fid) === 'dir') - Number(typeOf(b.fid) === 'dir') || a.fid - b.fid);
  for (const { fid, ref } of leftovers) {
    if (typeOf(fid) === 'dir' && changes.get(fid) !== null) throw new PlanError(`directory ${fid} lost its name without being deleted`);
    steps.push(typeOf(fid) === 'dir' ? { op: 'rmdir', fid, path: refPath(ref) } : { op: 'unlink', fid, path: refPath(ref) });
  }
  return steps;
}

/** The paths a step reads or changes. */
function pathsOf(s: Step): string[] {
  return s.op === 'rename' || s.op === 'link' ? [s.from, s.to] : [s.path];
}

function ancestors(p: string): string[] {
  const out: string[] = [];
  for (let cut = p.lastIndexOf('/'); cut > 0; cut = p.lastIndexOf('/', cut - 1)) out.push(p.slice(0, cut));
  return out;
}

/**
 * Cuts a plan into batches whose steps may run in any order, or all at once: a step joins
 * the current batch only if none of its paths is, contains, or lies inside a path of a step
 * already there (so it neither needs nor disturbs their work). Order between batches is the
 * plan's. A whole copy's thousands of creations in a directory become one batch.
 */
export function stepBatches(steps: readonly Step[]): Step[][] {
  const out: Step[][] = [];
  let batch: Step[] = [];
  let touched = new Set<string>();
  let above = new Set<string>();
  for (const s of steps) {
    const paths = pathsOf(s);
    const clash = paths.some((p) => touched.has(p) || above.has(p) || ancestors(p).some((a) => touched.has(a)));
    if (clash) {
      out.push(batch);
      batch = [];
      touched = new Set();
      above = new Set();
    }
    batch.push(s);
    for (const p of paths) {
      touched.add(p);
      for (const a of ancestors(p)) above.add(a);
    }
  }
  if (batch.length > 0) out.push(batch);
  return out;
}
