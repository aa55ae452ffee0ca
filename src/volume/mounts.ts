// Reading the kernel's mount table (/proc/self/mountinfo).
import { readFile } from 'node:fs/promises';

export interface MountEntry {
  mountpoint: string;
  fstype: string;
  source: string;
}

/** Undoes the octal escapes (\040 for space...) used in mountinfo. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export async function readMounts(): Promise<MountEntry[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const fields = left.split(' ');
    const [fstype, source] = right.split(' ');
    out.push({ mountpoint: unescape(fields[4] ?? ''), fstype: fstype ?? '', source: unescape(source ?? '') });
  }
  return out;
}

export function isUnder(path: string, dir: string): boolean {
  return dir === '/' ? path !== '/' : path.startsWith(dir + '/');
}

export const REPLFS_FSTYPE = 'fuse.replfs';
