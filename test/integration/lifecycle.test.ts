// How a mount ends: signals, files still open, an unmount by hand, and the demo that
// `npm start` runs.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import { BIN, scratch, replfs, initVolume, mountVolume, forceUnmount, isMounted, run, waitFor, alive, type Scratch } from '../helpers/env.js';
import type { VolumeStatus } from '../../src/core/types.js';


async function status(t: ExecutionContext, s: Scratch, dir: string): Promise<VolumeStatus> {
  const r = await replfs(s, ['status', dir, '--json']);
  t.is(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as VolumeStatus;
}

async function mounted(t: ExecutionContext, name: string): Promise<{ s: Scratch; dir: string; pid: number }> {
  const s = scratch(t);
  const dir = path.join(s.dir, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'f'), 'data');
  await initVolume(t, s, dir);
  await mountVolume(t, s, dir);
  return { s, dir, pid: (await status(t, s, dir)).pid! };
}

test('SIGTERM unmounts, flushes the journal and ends the daemon', async (t) => {
  const { s, dir, pid } = await mounted(t, 'term');
  await fsp.appendFile(path.join(dir, 'f'), ' more');
  process.kill(pid, 'SIGTERM');
  await waitFor(() => !alive(pid), 20_000, 'the daemon to exit');
  t.false(await isMounted(dir));
  const st = await status(t, s, dir);
  t.false(st.mounted);
  t.true(st.lastCleanShutdown, 'the session was closed cleanly');
  const j = JSON.parse((await replfs(s, ['journal', dir, '--json'])).stdout) as { files: Array<{ path: string; kinds: string[] }> };
  t.deepEqual(j.files.find((f) => f.path === 'f')?.kinds, ['data'], 'the write made before the signal is in the journal');
});

test('SIGTERM with a file open detaches at once and ends the daemon when the file closes', async (t) => {
  const { dir, pid } = await mounted(t, 'busy');
  // A child keeps a file open through the mount until its stdin closes.
  const holder = spawn(process.execPath, ['-e', `const fd = require('fs').openSync(${JSON.stringify(path.join(dir, 'f'))}, 'r'); process.stdout.write('open\\n'); process.stdin.on('end', () => { require('fs').closeSync(fd); process.exit(0); }); process.stdin.resume();`], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => { holder.kill('SIGKILL'); });
  await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
  process.kill(pid, 'SIGTERM');
  await waitFor(async () => !(await isMounted(dir)), 10_000, 'the mount to be detached');
  await new Promise((r) => setTimeout(r, 500));
  t.true(alive(pid), 'the daemon keeps serving the open file');
  holder.stdin.end();
  await waitFor(() => !alive(pid), 20_000, 'the daemon to exit after the last close');
  t.pass();
});

test('replfs unmount refuses while a file is open, and --lazy detaches', async (t) => {
  const { s, dir, pid } = await mounted(t, 'lazy');
  const fh = await fsp.open(path.join(dir, 'f'), 'r');
  try {
    const refused = await replfs(s, ['unmount', dir]);
    t.is(refused.code, 5);
    t.regex(refused.stderr, /busy/);
    t.true(await isMounted(dir), 'still mounted after the refusal');
    t.true(alive(pid));
    const lazy = replfs(s, ['unmount', '--lazy', dir]);
    await waitFor(async () => !(await isMounted(dir)), 10_000, 'the lazy detach');
    await fh.close();
    const r = await lazy;
    t.is(r.code, 0, r.stderr);
  } finally {
    await fh.close().catch(() => undefined);
  }
  await waitFor(() => !alive(pid), 20_000, 'the daemon to exit');
});

test('a mount removed by hand (fusermount -u) ends its daemon', async (t) => {
  const { s, dir, pid } = await mounted(t, 'byhand');
  const r = await run('fusermount', ['-u', dir]);
  t.is(r.code, 0, r.stderr);
  await waitFor(() => !alive(pid), 20_000, 'the daemon to notice and exit');
  t.true((await status(t, s, dir)).lastCleanShutdown);
});

test('mount --foreground stays attached and Ctrl-C (SIGINT) unmounts', async (t) => {
  const s = scratch(t);
  const dir = path.join(s.dir, 'fg');
  fs.mkdirSync(dir);
  await initVolume(t, s, dir);
  t.teardown(() => forceUnmount(s, dir));
  const child = spawn(process.execPath, [BIN, 'mount', '--foreground', dir], { env: s.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  await waitFor(() => out.includes('mounted'), 30_000, 'the foreground mount');
  t.true(await isMounted(dir));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  child.kill('SIGINT');
  t.is(await exited, 0);
  t.false(await isMounted(dir));
  t.regex(out, /unmounted/);
});

test('the demo (npm start) protects its directory, replicates it every few seconds to a read-only replica, prints each snapshot and sync, and Ctrl-C unmounts both', async (t) => {
  const s = scratch(t);
  const dir = path.join(s.dir, 'demo', 'live');
  const replica = path.join(s.dir, 'demo', 'replica');
  t.teardown(() => forceUnmount(s, dir));
  t.teardown(() => forceUnmount(s, replica));
  const child = spawn(process.execPath, [BIN, 'demo', '--dir', dir, '--every', '1s'], { env: s.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  // On a timeout, what the demo printed is the clue.
  const until = async (fn: () => Promise<boolean> | boolean, ms: number, what: string): Promise<void> => {
    try {
      await waitFor(fn, ms, what);
    } catch (err) {
      t.log(out);
      throw err;
    }
  };
  await until(() => out.includes('Press Ctrl-C'), 60_000, 'the demo to be ready');
  t.true(await isMounted(dir));
  t.true(fs.existsSync(path.join(dir, 'README.txt')), 'sample files are there');
  await until(() => isMounted(replica), 30_000, 'the replica to be mounted');
  t.regex(out, /^\d\d:\d\d:\d\d live {4}snapshot \S+ taken/m);
  t.regex(out, /^\d\d:\d\d:\d\d live {4}synced \S+ to replica \(full\): \d+ files, [\d.]+ MiB sent, [\d.]+ MiB on the wire/m);
  // The line follows the mount.
  await until(() => /^\d\d:\d\d:\d\d replica mounted .* in place, read-only$/m.test(out), 10_000, 'the replica\'s mount to be printed');
  await fsp.appendFile(path.join(dir, 'README.txt'), 'edited\n');
  const readmeThere = () => { try { return fs.readFileSync(path.join(replica, 'README.txt'), 'utf8').endsWith('edited\n'); } catch { return false; } };
  await until(readmeThere, 20_000, 'the change to reach the replica');
  // The replica shows the change once it has confirmed; the sender's line follows.
  await until(() => /synced \S+ to replica \(incremental\): 1 files, \d+ B sent/.test(out), 20_000, 'the incremental sync to be printed');
  t.throws(() => fs.writeFileSync(path.join(replica, 'x'), 'x'), { code: 'EROFS' }, 'the replica is read-only');
  t.true(fs.readdirSync(path.join(replica, '.snapshots')).length >= 2);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  child.kill('SIGINT');
  t.is(await exited, 0);
  t.false(await isMounted(dir));
  t.false(await isMounted(replica));
  t.true(fs.existsSync(path.join(dir, '.replfs', 'config.json')), 'the demo directory stays protected');
  t.true(fs.existsSync(path.join(replica, '.replfs', 'config.json')), 'and the replica stays a replica');
});


test('a second SIGTERM stops a daemon that waits for open files', async (t) => {
  const { dir, pid } = await mounted(t, 'twice');
  const fh = await fsp.open(path.join(dir, 'f'), 'r');
  t.teardown(() => fh.close().catch(() => undefined));
  process.kill(pid, 'SIGTERM');
  await waitFor(async () => !(await isMounted(dir)), 10_000, 'the mount to be detached');
  await new Promise((r) => setTimeout(r, 300));
  t.true(alive(pid), 'the first signal waits for the open file');
  process.kill(pid, 'SIGTERM');
  await waitFor(() => !alive(pid), 20_000, 'the daemon to exit after the second signal');
  t.true(fs.readFileSync(path.join(dir, '.replfs', 'daemon.log'), 'utf8').includes('again: closing the volume'));
});
