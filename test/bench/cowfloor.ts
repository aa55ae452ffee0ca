// Child process of the benchmark: the least I/O any copy-on-write without reflinks must do
// to overwrite <file> sequentially while keeping its old contents, done directly on the
// disk: for each 1 MiB, read the old data, append it to <keep>, write the new data in
// place; then fsync both. Prints how long that took as JSON. Compared with a plain
// overwrite of the same file, it is the ceiling for replfs's copy-on-write ratio on
// this disk (replfs also hashes, indexes and goes through FUSE).
//
//   node cowfloor.js <file> <keep> <mb>
import fs from 'node:fs';
import { randomFillSync } from 'node:crypto';

const [file, keep, mbArg] = process.argv.slice(2);
const mb = Number(mbArg);
if (!file || !keep || !(mb > 0)) {
  process.stderr.write('usage: cowfloor <file> <keep> <mb>\n');
  process.exit(2);
}

const CHUNK = 1 << 20;
const fresh = randomFillSync(Buffer.alloc(CHUNK));
const old = Buffer.alloc(CHUNK);
const started = process.hrtime.bigint();
const fd = fs.openSync(file, 'r+');
const kfd = fs.openSync(keep, 'w', 0o644);
for (let i = 0; i < mb; i++) {
  const pos = i * CHUNK;
  let got = 0;
  while (got < CHUNK) {
    const n = fs.readSync(fd, old, got, CHUNK - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  fs.writeSync(kfd, old, 0, got, pos);
  fs.writeSync(fd, fresh, 0, CHUNK, pos);
}
fs.fsyncSync(kfd);
fs.fsyncSync(fd);
fs.closeSync(kfd);
fs.closeSync(fd);
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
process.stdout.write(JSON.stringify({ mb, seconds }) + '\n');
