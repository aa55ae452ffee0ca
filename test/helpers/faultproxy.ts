// A stand-in for ssh that injects faults into a real sync: `replfs sync` runs it as
// REPLFS_SSH, it runs the far side's command (a real `replfs serve --stdio`) here, relays
// the bytes both ways, and at a chosen byte of one direction cuts the connection, kills the
// receiver, or kills the sender (its parent) with SIGKILL.
//
//   node faultproxy.js --config FILE [--log FILE] [ssh options...] -- host command
//
// FILE, read when a sync starts, holds {"at": N, "dir": "up"|"down", "fault": "cut" |
// "kill-receiver" | "kill-sender" | "stall", "ms": M}; without it the relay only relays.
// "stall" holds both directions for M ms at that byte, then goes on. `up` counts what the
// sender sends, `down` what the receiver answers. --log FILE gets one JSON line when it
// ends: bytes each way and what it did. (A file rather than arguments, so that a mount
// daemon, which runs syncs with the environment it started with, can be given a new fault.)
import { spawn } from 'node:child_process';
import fs from 'node:fs';

interface Options {
  at: number | null;
  dir: 'up' | 'down';
  fault: 'cut' | 'kill-receiver' | 'kill-sender' | 'stall';
  ms: number;
  log: string | null;
  command: string;
}

function parse(argv: string[]): Options {
  const o: Options = { at: null, dir: 'up', fault: 'cut', ms: 0, log: null, command: '' };
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
/** A cut or kill: nothing more passes. */
let cutOff = false;

function finish(what: string): void {
  if (o.log) fs.appendFileSync(o.log, JSON.stringify({ ...counts, at: o.at, dir: o.dir, fault: o.fault, what }) + '\n');
}

function fire(): void {
  fired = true;
  cutOff = true;
  if (o.fault === 'kill-receiver') child.kill('SIGKILL');
  if (o.fault === 'kill-sender') process.kill(process.ppid, 'SIGKILL');
  // A cut: both directions end here, the receiver is left to see its input end mid-stream.
  child.stdin.destroy();
  child.stdout.destroy();
  finish('fired');
  process.exit(0);
}

/** Until a stall is over: what arrived meanwhile, to pass on in order. */
let held: Array<() => void> | null = null;

/** Passes `chunk` on, up to the fault's byte if it lies inside it. */
function relay(dir: 'up' | 'down', chunk: Buffer, write: (b: Buffer) => void): void {
  if (cutOff) return;
  if (held) { held.push(() => relay(dir, chunk, write)); return; }
  if (fired) { counts[dir] += chunk.length; write(chunk); return; }
  if (o.at !== null && o.dir === dir && counts[dir] + chunk.length >= o.at && o.fault === 'stall') {
    fired = true;
    held = [];
    counts[dir] += chunk.length;
    write(chunk);
    setTimeout(() => { const later = held!; held = null; for (const f of later) f(); }, o.ms);
    return;
  }
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
/** Runs `f` now, or after a stall if one is holding the bytes that came before. */
const inOrder = (f: () => void) => { if (held) held.push(() => inOrder(f)); else f(); };
process.stdin.on('end', () => inOrder(() => child.stdin.end()));
child.stdout.on('data', (c: Buffer) => relay('down', c, (b) => process.stdout.write(b)));
child.stdin.on('error', () => undefined);
child.on('close', (code, signal) => {
  if (cutOff) return;
  inOrder(() => {
    finish(`receiver exited ${code ?? signal}`);
    process.stdout.end(() => process.exit(code ?? 1));
  });
});
