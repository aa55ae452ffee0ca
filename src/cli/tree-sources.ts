// The two ways `replfs export` reads a snapshot, behind one TreeSource (src/archive/writer.ts):
// through a mount's `.snapshots/<name>/` with ordinary file system calls when a daemon holds
// the volume (LevelDB admits one process), or through the engine's SnapshotView when the
// command opened the volume itself. Both walk in the same order and describe every node the
// same way, so the archive of a snapshot is the same byte for byte either way.
import { constants as fsc, promises as fsp } from 'node:fs';
import type { BigIntStats } from 'node:fs';
import { ROOT_FID, type FileId } from '../core/types.js';
import { hasCode } from '../errors/index.js';
import type { FileReader, NodeType, TreeNode, TreeSource } from '../archive/writer.js';
import { TypeTag, type PreservedAttr } from '../volume/format.js';
import * as sys from '../volume/sys.js';
import { specOf, type SnapshotView } from '../volume/view.js';

/** Names in the order every source lists them: by UTF-16 code units, as JavaScript compares strings. */
function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

const join = (dir: string, name: string) => (dir === '' ? name : `${dir}/${name}`);

function typeOfMode(mode: number): NodeType {
  switch (mode & fsc.S_IFMT) {
    case fsc.S_IFREG: return 'file';
    case fsc.S_IFDIR: return 'dir';
    case fsc.S_IFLNK: return 'symlink';
    case fsc.S_IFIFO: return 'fifo';
    case fsc.S_IFCHR: return 'chardev';
    case fsc.S_IFBLK: return 'blockdev';
    default: return 'socket';
  }
}

/**
 * A snapshot read through a mount (`<mountpoint>/.snapshots/<name>`). Inode numbers in a
 * snapshot view are unique per file within that snapshot, so they tell hard links apart.
 */
export class MountTree implements TreeSource {
  constructor(private readonly base: string) {}

  walk(): AsyncIterable<TreeNode> {
    return this.visit('');
  }

  private abs(rel: string): string {
    return rel === '' ? this.base : `${this.base}/${rel}`;
  }

  private async *visit(rel: string): AsyncGenerator<TreeNode> {
    const abs = this.abs(rel);
    const node = await this.node(rel, abs, await fsp.lstat(abs, { bigint: true }));
    yield node;
    if (node.type !== 'dir') return;
    const names = (await fsp.readdir(abs)).sort(byName);
    for (const name of names) yield* this.visit(join(rel, name));
  }

  private async node(rel: string, abs: string, st: BigIntStats): Promise<TreeNode> {
    const type = typeOfMode(Number(st.mode));
    const ns = st.mtimeNs;
    return {
      path: rel,
      type,
      mode: Number(st.mode),
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: Number(st.size),
      nlink: Number(st.nlink),
      rdev: Number(st.rdev),
      mtime: specOf(ns.toString()),
      identity: Number(st.ino),
      ...(type === 'symlink' ? { target: await fsp.readlink(abs) } : {}),
      xattrs: await xattrsOf(abs),
    };
  }

  async open(node: TreeNode): Promise<FileReader> {
    const fh = await fsp.open(this.abs(node.path), fsc.O_RDONLY | fsc.O_NOFOLLOW);
    return {
      read: async (buf, len, pos) => (await fh.read(buf, 0, len, pos)).bytesRead,
      close: () => fh.close(),
    };
  }
}

async function xattrsOf(abs: string): Promise<Array<[string, Buffer]>> {
  let names: string[];
  try {
    names = await sys.llistxattr(abs);
  } catch (err) {
    if (hasCode(err, 'ENOTSUP', 'EOPNOTSUPP')) return [];
    throw err;
  }
  const out: Array<[string, Buffer]> = [];
  for (const name of names.sort(byName)) {
    try {
      out.push([name, await sys.lgetxattr(abs, name)]);
    } catch (err) {
      if (!hasCode(err, 'ENODATA')) throw err;
    }
  }
  return out;
}

const TYPE_OF_TAG: Record<string, NodeType> = {
  [TypeTag.file]: 'file', [TypeTag.dir]: 'dir', [TypeTag.symlink]: 'symlink', [TypeTag.fifo]: 'fifo',
  [TypeTag.chardev]: 'chardev', [TypeTag.blockdev]: 'blockdev', [TypeTag.socket]: 'socket',
};

/** A snapshot read through the engine, on a volume this process opened. File ids tell hard links apart. */
export class ViewTree implements TreeSource {
  constructor(private readonly view: SnapshotView) {}

  walk(): AsyncIterable<TreeNode> {
    return this.visit('', ROOT_FID);
  }

  private async *visit(rel: string, fid: FileId): AsyncGenerator<TreeNode> {
    const a = await this.view.attrOf(fid);
    const node = this.node(rel, fid, a);
    yield node;
    if (node.type !== 'dir') return;
    const children = (await this.view.childrenOf(fid)).sort((x, y) => byName(x.name, y.name));
    for (const c of children) yield* this.visit(join(rel, c.name), c.fid);
  }

  private node(rel: string, fid: FileId, a: PreservedAttr): TreeNode {
    const type = TYPE_OF_TAG[a.t] ?? typeOfMode(a.mode);
    return {
      path: rel,
      type,
      mode: a.mode,
      uid: a.uid,
      gid: a.gid,
      size: a.size,
      nlink: a.nlink,
      rdev: a.rdev,
      mtime: specOf(a.mtime),
      identity: fid,
      ...(type === 'symlink' ? { target: a.l ?? '' } : {}),
      xattrs: (a.x ?? []).map(([n, v]) => [n, Buffer.from(v, 'base64')] as [string, Buffer]).sort(([x], [y]) => byName(x, y)),
    };
  }

  async open(node: TreeNode): Promise<FileReader> {
    // The identity of a node of this tree is its file id.
    const h = await this.view.openFid(node.identity);
    return {
      read: (buf, len, pos) => this.view.read(h, buf, len, pos),
      close: async () => this.view.release(h),
    };
  }
}
