// Paths into the protected directory. The daemon opens the directory before mounting
// over it and reaches every file as /proc/self/fd/<fd>/<relative path>, so an in-place
// mount never loops back into itself.
import { FsError } from '../errors/index.js';
import { STATE_DIR } from './format.js';

export class Backing {
  readonly prefix: string;
  constructor(readonly rootFd: number, readonly rootPath: string) {
    this.prefix = `/proc/self/fd/${rootFd}`;
  }

  /** Absolute path of a relative path inside the protected directory ('' is the root). */
  abs(rel: string): string {
    return rel === '' ? `${this.prefix}/.` : `${this.prefix}/${rel}`;
  }

  stateDir(): string {
    return `${this.prefix}/${STATE_DIR}`;
  }
}

/**
 * Turns a path from the kernel ("/a/b") into a relative path ("a/b"). The kernel never
 * sends "." or ".." components; anything odd is refused rather than resolved. The state
 * directory does not exist as far as the mount is concerned.
 */
export function relPath(fusePath: string): string {
  if (fusePath === '/') return '';
  // An empty path is what an unlinked file's handle-less operations get: nothing by name.
  if (fusePath === '') throw new FsError('ENOENT');
  if (!fusePath.startsWith('/')) throw new FsError('EINVAL', `relative path from kernel: ${fusePath}`);
  const rel = fusePath.slice(1);
  for (const part of rel.split('/')) {
    if (part === '' || part === '.' || part === '..') throw new FsError('EINVAL', `bad path component in ${fusePath}`);
  }
  if (rel === STATE_DIR || rel.startsWith(STATE_DIR + '/')) throw new FsError('ENOENT');
  return rel;
}

export function parentOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

export function baseName(rel: string): string {
  return rel.slice(rel.lastIndexOf('/') + 1);
}

export function joinRel(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}
