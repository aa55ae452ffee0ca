// Which snapshots hold which version of a file: the work of `replfs find`, run by the `find`
// control action in the process that has the volume open (the mount daemon, or the command).
//
// Each snapshot searched is walked only where the glob can match. A version is one content
// with one mtime. Contents are hashed (BLAKE3, in the HashPool's threads, never on this
// thread, which in a daemon also serves FUSE), but not once per snapshot: the journal says
// in which epochs each file's data changed (Volume.dataEpochs), and two snapshots between
// which a file's data did not change read the same bytes of it, so it is read and hashed
// once for all of them, under whatever names it has there (hard links, renames).
import { ROOT_FID, type FileId } from '../core/types.js';
import { ReplfsError, hasCode } from '../errors/index.js';
import type { Glob, GlobState } from '../policy/glob.js';
import { HashPool } from '../replicate/hasher.js';
import { TypeTag, type SnapshotRecord } from '../volume/format.js';
import { mapLimit } from '../volume/limit.js';
import { specOf, type SnapshotView } from '../volume/view.js';
import type { Volume } from '../volume/index.js';

export interface FileVersion {
  /** BLAKE3 of the content, 64 hex digits. */
  blake3: string;
  size: number;
  /** ISO 8601, UTC, to the nanosecond. */
  mtime: string;
  /** The same, in nanoseconds since 1970 (decimal string). */
  mtimeNs: string;
  /** The snapshots that hold this version at this path, oldest first. */
  snapshots: string[];
}

export interface FoundFile {
  path: string;
  /** Newest first: by the newest snapshot holding each. */
  versions: FileVersion[];
}

export interface FindReport {
  glob: string;
  allSnapshots: boolean;
  /** The snapshots searched, oldest first. */
  searched: string[];
  /** Every regular file that matched in a snapshot searched, by path. */
  files: FoundFile[];
  totals: {
    files: number;
    versions: number;
    /** Contents read and hashed, and their bytes; the rest came from the journal. */
    hashed: number;
    hashedBytes: number;
  };
}

export interface FindProgress {
  phase: 'walk' | 'hash';
  files: number;
  hashed: number;
  hashedBytes: number;
}

const CHUNK = 1024 * 1024;
/** Files hashed at once, and pieces of one file in flight to its hashing thread. */
const FILES_AT_ONCE = 4;
const PIECES_IN_FLIGHT = 2;
const HEARTBEAT_MS = 5000;

interface Sighting {
  /** Index of the snapshot in the list searched. */
  order: number;
  path: string;
  fid: FileId;
  size: number;
  mtimeNs: string;
  /** Which content: the same for sightings that read the same bytes. */
  content: string;
}

const join = (dir: string, name: string) => (dir === '' ? name : `${dir}/${name}`);

export async function findVersions(volume: Volume, glob: Glob, opts: { all: boolean; progress?: (p: FindProgress) => void }): Promise<FindReport> {
  const snaps = volume.snapshots();
  if (snaps.length === 0) throw new ReplfsError('refused', `${volume.root} has no snapshot to search`, 'take one with: replfs snapshot <path>');
  const searched = opts.all ? snaps : [snaps.at(-1)!];
  const state: FindProgress = { phase: 'walk', files: 0, hashed: 0, hashedBytes: 0 };
  const beat = opts.progress && setInterval(() => opts.progress!({ ...state }), HEARTBEAT_MS);
  try {
    // Per file, the epochs its data changed in, between the oldest and the newest snapshot
    // searched, and the epochs in which any file may have (a damaged journal).
    const changed = searched.length > 1
      ? await volume.dataEpochs(searched[0]!.epoch, searched.at(-1)!.epoch)
      : { files: new Map<FileId, number[]>(), untrusted: [] };
    const upTo = (epochs: number[], snap: SnapshotRecord) => epochs.filter((e) => e <= snap.epoch).length;
    const contentOf = (fid: FileId, snap: SnapshotRecord) => `${fid}:${upTo(changed.files.get(fid) ?? [], snap)}:${upTo(changed.untrusted, snap)}`;

    const sightings: Sighting[] = [];
    for (let order = 0; order < searched.length; order++) {
      const snap = searched[order]!;
      const view = volume.view(snap.name);
      await walk(view, glob, async (path, fid) => {
        const a = await view.attrOf(fid);
        sightings.push({ order, path, fid, size: a.size, mtimeNs: a.mtime, content: contentOf(fid, snap) });
        state.files++;
      });
    }

    // One read per content, from the newest snapshot holding it (the likeliest to read the live file).
    state.phase = 'hash';
    const reads = new Map<string, Sighting>();
    for (const s of sightings) reads.set(s.content, s);
    const hashes = new Map<string, string>();
    if (reads.size > 0) {
      const pool = new HashPool();
      try {
        await mapLimit([...reads.values()], FILES_AT_ONCE, async (s) => {
          const hash = await hashFile(volume.view(searched[s.order]!.name), s.fid, pool, (n) => { state.hashedBytes += n; });
          hashes.set(s.content, hash);
          state.hashed++;
        });
      } finally {
        await pool.close();
      }
    }

    const byPath = new Map<string, Sighting[]>();
    for (const s of sightings) {
      const list = byPath.get(s.path);
      if (list) list.push(s);
      else byPath.set(s.path, [s]);
    }
    const files: FoundFile[] = [];
    for (const path of [...byPath.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
      const versions = new Map<string, FileVersion & { newest: number }>();
      for (const s of byPath.get(path)!.sort((a, b) => a.order - b.order)) {
        const blake3 = hashes.get(s.content)!;
        const key = `${blake3}:${s.mtimeNs}`;
        let v = versions.get(key);
        if (!v) {
          v = { blake3, size: s.size, mtime: isoNs(s.mtimeNs), mtimeNs: s.mtimeNs, snapshots: [], newest: s.order };
          versions.set(key, v);
        }
        v.snapshots.push(searched[s.order]!.name);
        v.newest = s.order;
      }
      files.push({
        path,
        versions: [...versions.values()].sort((a, b) => b.newest - a.newest).map(({ newest: _, ...v }) => v),
      });
    }
    return {
      glob: glob.pattern,
      allSnapshots: opts.all,
      searched: searched.map((s) => s.name),
      files,
      totals: { files: files.length, versions: files.reduce((n, f) => n + f.versions.length, 0), hashed: state.hashed, hashedBytes: state.hashedBytes },
    };
  } finally {
    if (beat) clearInterval(beat);
  }
}

/** Calls `found` for every regular file of the snapshot whose path matches, descending only where the glob can match. */
async function walk(view: SnapshotView, glob: Glob, found: (path: string, fid: FileId) => Promise<void>): Promise<void> {
  const visit = async (dirFid: FileId, dirRel: string, at: GlobState): Promise<void> => {
    const names = glob.literals(at);
    let children: Array<{ name: string; fid: FileId; t: string }>;
    if (names) {
      // The pattern spells the next names out: look them up, no listing.
      children = [];
      for (const name of names) {
        try {
          const f = await view.resolve(join(dirRel, name));
          children.push({ name, fid: f.fid, t: f.t });
        } catch (err) {
          if (!hasCode(err, 'ENOENT', 'ENOTDIR')) throw err;
        }
      }
    } else {
      children = await view.childrenOf(dirFid);
    }
    children.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const c of children) {
      const next = glob.next(at, c.name);
      if (next.length === 0) continue;
      if (c.t === TypeTag.file) {
        if (glob.matches(next)) await found(join(dirRel, c.name), c.fid);
      } else if (c.t === TypeTag.dir && glob.canDescend(next)) {
        await visit(c.fid, join(dirRel, c.name), next);
      }
    }
  };
  await visit(ROOT_FID, '', glob.start());
}

/** BLAKE3 of a file of the snapshot, read here a chunk at a time and hashed in a pool thread. */
async function hashFile(view: SnapshotView, fid: FileId, pool: HashPool, onRead: (bytes: number) => void): Promise<string> {
  const h = await view.openFid(fid);
  const stream = pool.stream();
  const inflight: Array<Promise<Buffer>> = [];
  try {
    for (let pos = 0; pos < h.size;) {
      const len = Math.min(CHUNK, h.size - pos);
      // A buffer handed back by the thread, or a new one while fewer than PIECES_IN_FLIGHT are out.
      const back = inflight.length >= PIECES_IN_FLIGHT ? await inflight.shift()! : null;
      const buf = back ? Buffer.from(back.buffer, 0, back.buffer.byteLength) : Buffer.allocUnsafeSlow(Math.min(CHUNK, h.size));
      const n = await view.read(h, buf, len, pos);
      if (n === 0) throw new Error(`file ${fid} of snapshot ${view.snap.name} ended after ${pos} of ${h.size} bytes`);
      const sent = stream.update(buf.subarray(0, n));
      sent.catch(() => undefined);
      inflight.push(sent);
      pos += n;
      onRead(n);
    }
    const digest = await stream.digest();
    await Promise.all(inflight);
    return digest.toString('hex');
  } finally {
    view.release(h);
  }
}

/** Nanoseconds since 1970 (decimal string) as ISO 8601 UTC with nine decimals. */
export function isoNs(ns: string): string {
  const { sec, nsec } = specOf(ns);
  return new Date(sec * 1000).toISOString().replace(/\.\d{3}Z$/, `.${String(nsec).padStart(9, '0')}Z`);
}
