// A stand-in for ssh that injects faults into a real sync: `replfs sync` runs it as
// REPLFS_SSH, it runs the far side's command (a real `replfs serve --stdio`) here, relays
// the bytes both ways, and at a chosen byte of one direction cuts the connection, kills the
// receiver, or kills the sender (its parent) with SIGKILL.
//
//   node faultproxy.js --config FILE [--log FILE] [ssh options...] -- host command
//
// FILE, read when a sync starts, holds {"at": N, "dir": "up"|"down", "fault": "cut" |
// "kill-receiver" | "kill-sender"}; without it the relay only relays. `up` counts what the
// sender sends, `down` what the receiver answers. --log FILE gets one JSON line when it
// ends: bytes each way and what it did. (A file rather than arguments, so that a mount
// daemon, which runs syncs with the environment it started with, can be given a new fault.)
import { spawn } from 'node:child_process';
import fs from 'node:fs';

interface Options {
  at: number | null;
  dir: 'up' | 'down';
  fault: 'cut' | 'kill-receiver' | 'kill-sender';
  log: string | null;
  command: string;
}

function parse(argv: string[]): Options {
  const o: Options = { at: null, dir: 'up', fault: 'cut', log: null, command: '' };
  const sep = argv.indexOf('--');
  for (let i = 0; i < sep; i++) {
    const a = argv[i]!;
    if (a === '--config') {
      const file = argv[++i]!;
      if (fs.existsSync(file)) Object.assign(o, JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<Options>);
    } else if (a === '--log') {
      o.log = argv[++i]!;
    }
    // Anything else is an ssh option (-p PORT and the like): ignored.
  }
  // After `--`: the host, then the command the far side would run.
  o.command = argv.slice(sep + 2).join(' ');
  return o;
}

const o = parse(process.argv.slice(2));
const child = spawn('/bin/sh', ['-c', o.command], { stdio: ['pipe', 'pipe', 'inherit'] });
const counts = { up: 0, down: 0 };
let fired = false;

function finish(what: string): void {
  if (o.log) fs.appendFileSync(o.log, JSON.stringify({ ...counts, at: o.at, dir: o.dir, fault: o.fault, what }) + '\n');
}

function fire(): void {
  fired = true;
  if (o.fault === 'kill-receiver') child.kill('SIGKILL');
  if (o.fault === 'kill-sender') process.kill(process.ppid, 'SIGKILL');
  // A cut: both directions end here, the receiver is left to see its input end mid-stream.
  child.stdin.destroy();
  child.stdout.destroy();
  finish('fired');
  process.exit(0);
}

/** Passes `chunk` on, up to the fault's byte if it lies inside it. */
function relay(dir: 'up' | 'down', chunk: Buffer, write: (b: Buffer) => void): void {
  if (fired) return;
  if (o.at !== null && o.dir === dir && counts[dir] + chunk.length >= o.at) {
    const keep = Math.max(0, o.at - counts[dir]);
    if (keep > 0) write(chunk.subarray(0, keep));
    counts[dir] += keep;
    fire();
    return;
  }
  counts[dir] += chunk.length;
  write(chunk);
}

process.stdin.on('data', (c: Buffer) => relay('up', c, (b) => child.stdin.write(b)));
process.stdin.on('end', () => child.stdin.end());
child.stdout.on('data', (c: Buffer) => relay('down', c, (b) => process.stdout.write(b)));
child.stdin.on('error', () => undefined);
child.on('exit', (code, signal) => {
  if (fired) return;
  finish(`receiver exited ${code ?? signal}`);
  process.stdout.end(() => process.exit(code ?? 1));
});
