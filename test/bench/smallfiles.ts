// Child process of the benchmark: creates <count> files of <bytes> each, spread over <dirs>
// new directories under <dir> (a new directory too), with plain synchronous
// mkdir / open / write / close calls, and prints how long that took as JSON. It runs in its
// own process so that the FUSE daemon serving <dir> is always another process, and it
// times itself so that Node's start-up is not counted.
//
//   node smallfiles.js <dir> <count> <dirs> <bytes>
import fs from 'node:fs';
import path from 'node:path';

const [dir, countArg, dirsArg, bytesArg] = process.argv.slice(2);
const count = Number(countArg);
const dirs = Number(dirsArg);
const bytes = Number(bytesArg);
if (!dir || !(count > 0) || !(dirs > 0) || !(bytes >= 0)) {
  process.stderr.write('usage: smallfiles <dir> <count> <dirs> <bytes>\n');
  process.exit(2);
}

const data = Buffer.alloc(bytes);
for (let i = 0; i < bytes; i++) data[i] = (i * 131 + 7) & 0xff;
const perDir = Math.ceil(count / dirs);

const started = process.hrtime.bigint();
fs.mkdirSync(dir);
let written = 0;
for (let d = 0; d < dirs && written < count; d++) {
  const sub = path.join(dir, `d${String(d).padStart(3, '0')}`);
  fs.mkdirSync(sub);
  for (let i = 0; i < perDir && written < count; i++, written++) {
    const fd = fs.openSync(path.join(sub, `f${String(i).padStart(5, '0')}`), 'w', 0o644);
    let off = 0;
    while (off < bytes) off += fs.writeSync(fd, data, off, bytes - off, off);
    fs.closeSync(fd);
  }
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
process.stdout.write(JSON.stringify({ files: written, seconds }) + '\n');
