// The tar format, as an encoder only: pure functions from the description of an entry to
// the bytes that come before its data. The format is POSIX.1-2001 "pax": a ustar header per
// entry, preceded by an extended header (typeflag `x`) with `key=value` records whenever
// ustar cannot say something exactly: a long path or link target, a size of 8 GiB or more, a
// large owner id, a time with a fraction of a second (or before 1970), extended attributes
// (`SCHILY.xattr.<name>`, the records GNU tar's --xattrs reads and writes). GNU tar, bsdtar
// and Python's tarfile read it. Nothing here touches a file or a stream (see writer.ts).

/** A tar block: headers take one, data is padded to a whole number of them. */
export const BLOCK = 512;
/** GNU tar writes records of 20 blocks; the archive is padded to a whole record. */
export const RECORD = 20 * BLOCK;

export type TarType = 'file' | 'hardlink' | 'symlink' | 'chardev' | 'blockdev' | 'dir' | 'fifo';

export interface TarTime {
  sec: number;
  /** 0 to 999,999,999. */
  nsec: number;
}

export interface TarEntry {
  /**
   * The member's path: relative, `/`-separated, without `.` or `..` parts and without a
   * trailing slash; `''` is the top directory. It is written as `./<path>` (`./` for the
   * top, `./<path>/` for a directory), as `tar -C <dir> -c .` names members.
   */
  path: string;
  type: TarType;
  /** Permission bits: the low 12 bits of st_mode (set-id and sticky bits included). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of data following the header: a regular file's size; 0 for every other type. */
  size: number;
  mtime: TarTime;
  /** A symlink's target; for a hard link, the `path` (as above) of the member it links to. */
  link?: string;
  /** Device numbers of a character or block device. */
  devmajor?: number;
  devminor?: number;
  /** Extended attributes: name and raw value. */
  xattrs?: ReadonlyArray<readonly [string, Buffer]>;
}

const TYPEFLAG: Record<TarType, string> = {
  file: '0', hardlink: '1', symlink: '2', chardev: '3', blockdev: '4', dir: '5', fifo: '6',
};

/** The largest values the octal fields hold: 7 digits for ids, 11 for sizes and times. */
const MAX_OCTAL_7 = 0o7777777;
const MAX_OCTAL_11 = 0o77777777777;

/** A member's path as written in the archive. */
export function memberName(path: string, dir: boolean): string {
  if (path === '') return './';
  return `./${path}${dir ? '/' : ''}`;
}

/** How many bytes of zeros follow `size` bytes of data to fill its last block. */
export function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** The end of an archive of `written` bytes so far: two zero blocks, then zeros to a whole record. */
export function endOfArchive(written: number): Buffer {
  const end = written + 2 * BLOCK;
  return Buffer.alloc(2 * BLOCK + ((RECORD - (end % RECORD)) % RECORD));
}

/**
 * The headers of one member: its extended header with its records (when ustar falls short)
 * and its ustar header. The member's data, then `padding(size)` zeros, follow them.
 */
export function encodeHeader(e: TarEntry): Buffer {
  check(e);
  const name = memberName(e.path, e.type === 'dir');
  const link = e.link === undefined ? undefined : e.type === 'hardlink' ? memberName(e.link, false) : e.link;
  const records: Array<[string, Buffer | string]> = [];

  const nameBytes = Buffer.from(name, 'utf8');
  const split = splitName(nameBytes);
  if (!split) records.push(['path', name]);
  const linkBytes = link === undefined ? Buffer.alloc(0) : Buffer.from(link, 'utf8');
  if (linkBytes.length > 100) records.push(['linkpath', link!]);
  if (e.size > MAX_OCTAL_11) records.push(['size', String(e.size)]);
  if (e.uid > MAX_OCTAL_7) records.push(['uid', String(e.uid)]);
  if (e.gid > MAX_OCTAL_7) records.push(['gid', String(e.gid)]);
  if (e.mtime.nsec !== 0 || e.mtime.sec < 0 || e.mtime.sec > MAX_OCTAL_11) records.push(['mtime', paxTime(e.mtime)]);
  for (const [xname, value] of [...(e.xattrs ?? [])].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    records.push([`SCHILY.xattr.${xattrKeyword(xname)}`, value]);
  }

  const header = ustarHeader({
    name: split ?? { prefix: Buffer.alloc(0), name: truncate(nameBytes, 100) },
    mode: e.mode & 0o7777,
    uid: e.uid,
    gid: e.gid,
    size: e.type === 'file' ? e.size : 0,
    mtime: clampTime(e.mtime.sec),
    typeflag: TYPEFLAG[e.type],
    linkname: truncate(linkBytes, 100),
    devmajor: e.devmajor ?? 0,
    devminor: e.devminor ?? 0,
  });
  if (records.length === 0) return header;

  const body = paxRecords(records);
  const xheader = ustarHeader({
    name: { prefix: Buffer.alloc(0), name: truncate(Buffer.from(paxHeaderName(e.path), 'utf8'), 100) },
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: body.length,
    mtime: clampTime(e.mtime.sec),
    typeflag: 'x',
    linkname: Buffer.alloc(0),
    devmajor: 0,
    devminor: 0,
  });
  return Buffer.concat([xheader, body, Buffer.alloc(padding(body.length)), header]);
}

/** The pax records `"<length> <key>=<value>\n"`, where the length counts the whole record, its own digits included. */
export function paxRecords(records: ReadonlyArray<readonly [string, Buffer | string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [key, value] of records) {
    const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
    const rest = Buffer.byteLength(key, 'utf8') + v.length + 3; // ' ', '=', '\n'
    let digits = String(rest).length;
    while (String(rest + digits).length > digits) digits++;
    parts.push(Buffer.from(`${rest + digits} ${key}=`, 'utf8'), v, Buffer.from('\n'));
  }
  return Buffer.concat(parts);
}

/** A time as a pax decimal: seconds, and the fraction when there is one (`-1.5` is half a second before -1). */
export function paxTime(t: TarTime): string {
  const ns = BigInt(t.sec) * 1_000_000_000n + BigInt(t.nsec);
  const neg = ns < 0n;
  const abs = neg ? -ns : ns;
  const whole = abs / 1_000_000_000n;
  const frac = (abs % 1_000_000_000n).toString().padStart(9, '0').replace(/0+$/, '');
  return `${neg ? '-' : ''}${whole}${frac ? '.' + frac : ''}`;
}

/** GNU tar writes `%` and `=` in an xattr's name as `%25` and `%3D` (the record's key ends at the first `=`). */
export function xattrKeyword(name: string): string {
  return name.replace(/%/g, '%25').replace(/=/g, '%3D');
}

function check(e: TarEntry): void {
  const bad = (what: string) => { throw new RangeError(`tar entry ${JSON.stringify(e.path)}: ${what}`); };
  if (e.path.startsWith('/') || e.path.endsWith('/') || e.path.includes('\0')) bad('the path must be relative, without a trailing slash or NUL');
  for (const part of e.path === '' ? [] : e.path.split('/')) if (part === '' || part === '.' || part === '..') bad('the path has an empty, . or .. part');
  for (const [n, v] of [['uid', e.uid], ['gid', e.gid], ['size', e.size], ['mode', e.mode]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) bad(`${n} must be a whole number >= 0, got ${v}`);
  }
  if (e.size !== 0 && e.type !== 'file') bad('only a regular file has data');
  if (!Number.isSafeInteger(e.mtime.sec) || !Number.isInteger(e.mtime.nsec) || e.mtime.nsec < 0 || e.mtime.nsec >= 1e9) bad('mtime is not seconds and nanoseconds');
  if ((e.type === 'symlink' || e.type === 'hardlink') !== (e.link !== undefined)) bad('a link target goes with a symlink or a hard link, and only with them');
  if (e.link !== undefined && (e.link === '' || e.link.includes('\0'))) bad('the link target is empty or holds NUL');
  for (const d of [e.devmajor ?? 0, e.devminor ?? 0]) if (!Number.isSafeInteger(d) || d < 0 || d > MAX_OCTAL_7) bad(`device number ${d} does not fit`);
  for (const [n] of e.xattrs ?? []) if (n === '' || n.includes('\0')) bad('an xattr name is empty or holds NUL');
}

interface UstarFields {
  name: { prefix: Buffer; name: Buffer };
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: Buffer;
  devmajor: number;
  devminor: number;
}

function ustarHeader(f: UstarFields): Buffer {
  const h = Buffer.alloc(BLOCK);
  f.name.name.copy(h, 0);
  numeric(h, 100, 8, f.mode);
  numeric(h, 108, 8, f.uid);
  numeric(h, 116, 8, f.gid);
  numeric(h, 124, 12, f.size);
  numeric(h, 136, 12, f.mtime);
  h.write(f.typeflag, 156, 'latin1');
  f.linkname.copy(h, 157);
  h.write('ustar\0', 257, 'latin1');
  h.write('00', 263, 'latin1');
  // uname and gname stay empty: extraction keeps the numeric ids, wherever it runs.
  numeric(h, 329, 8, f.devmajor);
  numeric(h, 337, 8, f.devminor);
  f.name.prefix.copy(h, 345);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}

/**
 * A number in a header field: octal digits and a NUL when it fits, else GNU's base-256 form
 * (first byte 0x80, then the value big-endian), which GNU tar, bsdtar and Go read; the pax
 * record says the same for readers that know only pax.
 */
function numeric(h: Buffer, at: number, len: number, value: number): void {
  const digits = len - 1;
  if (value <= 8 ** digits - 1) {
    h.write(value.toString(8).padStart(digits, '0') + '\0', at, 'latin1');
    return;
  }
  let v = BigInt(value);
  for (let i = at + len - 1; i > at; i--) {
    h[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  h[at] = 0x80;
}

function clampTime(sec: number): number {
  return sec < 0 ? 0 : Math.min(sec, MAX_OCTAL_11);
}

/**
 * ustar's name (100 bytes) and prefix (155 bytes, joined with a `/`), when the path fits
 * them; else null and the path goes in a pax record.
 */
function splitName(name: Buffer): { prefix: Buffer; name: Buffer } | null {
  if (name.length <= 100) return { prefix: Buffer.alloc(0), name };
  // A directory's trailing slash stays in the name part.
  const body = name[name.length - 1] === 0x2f ? name.length - 1 : name.length;
  for (let cut = Math.min(155, body - 1); cut > 0; cut--) {
    if (name[cut] !== 0x2f) continue;
    if (name.length - cut - 1 > 100) return null;
    return { prefix: name.subarray(0, cut), name: name.subarray(cut + 1) };
  }
  return null;
}

/** At most `max` bytes, cut before a UTF-8 continuation byte (for fields a pax record overrides). */
function truncate(b: Buffer, max: number): Buffer {
  if (b.length <= max) return b;
  let end = max;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

/** GNU tar's name for an extended header: `<dir>/PaxHeaders/<base>`. */
function paxHeaderName(path: string): string {
  const cut = path.lastIndexOf('/');
  const dir = cut < 0 ? '.' : `./${path.slice(0, cut)}`;
  const base = path === '' ? '.' : path.slice(cut + 1);
  return `${dir}/PaxHeaders/${base}`;
}
