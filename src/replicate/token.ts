// The shared secret of a `replfs serve --listen` server and its senders: the first line of
// a token file that only its owner can read (as ssh treats a private key). Both ends read
// it the same way, so a file one side accepts the other accepts too.
import fs from 'node:fs';
import { ReplfsError, hasCode } from '../errors/index.js';

/** The shortest token accepted, in characters. */
export const MIN_TOKEN_LENGTH = 16;

const MAKE_ONE = (file: string) => `make one with: (umask 077; openssl rand -hex 32 > ${file})`;

/**
 * The token in `file` (its first line, trimmed). Refused: a missing file (notFound), one
 * this process cannot read or that group or others can read or write (permission), not a
 * regular file, empty, or shorter than MIN_TOKEN_LENGTH (usage).
 */
export function readTokenFile(file: string): string {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) throw new ReplfsError('notFound', `the token file ${file} does not exist`, MAKE_ONE(file));
    if (hasCode(err, 'EACCES', 'EPERM')) throw new ReplfsError('permission', `the token file ${file} cannot be read: permission denied`);
    throw new ReplfsError('usage', `the token file ${file} cannot be opened: ${(err as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new ReplfsError('usage', `the token file ${file} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      throw new ReplfsError('permission', `the token file ${file} is accessible by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); it must be private to its owner`,
        `chmod 600 ${file}`);
    }
    // Only the first line matters; a token file is small, and a huge one is not a token file.
    const buf = Buffer.alloc(4096);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    const text = buf.subarray(0, n).toString('utf8');
    if (n === buf.length && !text.includes('\n')) throw new ReplfsError('usage', `the first line of the token file ${file} is over ${buf.length} bytes long: not a token`);
    const token = (text.split(/\r?\n/)[0] ?? '').trim();
    if (token === '') throw new ReplfsError('usage', `the token file ${file} is empty (its first line is the token)`, MAKE_ONE(file));
    if (token.length < MIN_TOKEN_LENGTH) {
      throw new ReplfsError('usage', `the token in ${file} is ${token.length} characters long; at least ${MIN_TOKEN_LENGTH} are needed`, MAKE_ONE(file));
    }
    return token;
  } finally {
    fs.closeSync(fd);
  }
}
