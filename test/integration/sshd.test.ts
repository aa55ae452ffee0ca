// The test sshd (test/helpers/sshd.ts) against the real ssh client: commands run, their
// stdin and stdout are a binary-clean duplex byte stream (what `replfs serve --stdio`
// will speak over), keys it does not know are refused, and stop() takes the server away.
// Each case gets its own server.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import test from '../helpers/ava.js';
import { generateKey, startSshd } from '../helpers/sshd.js';
import type { Sshd } from '../helpers/sshd.js';
import { run } from '../helpers/env.js';

function ssh(s: Sshd, command: string, args: string[] = s.sshArgs) {
  return run('ssh', [...args, s.target, command], { env: s.env, timeoutMs: 30_000 });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('a command run through ssh prints its output', async (t) => {
  const s = await startSshd(t);
  t.is(s.host, '127.0.0.1');
  t.true(s.port > 0 && s.port < 65536);
  const r = await ssh(s, 'echo hello');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'hello\n');
  t.is(r.stderr, '');
  const who = await ssh(s, 'id -un');
  t.is(who.stdout.trim(), s.user);
});

test('commands run through ssh find the node running the tests on PATH', async (t) => {
  const s = await startSshd(t, { env: { REPLFS_SSHD_TEST: 'set by SetEnv' } });
  const r = await ssh(s, 'node -p "process.version + \' \' + process.env.REPLFS_SSHD_TEST"');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout.trim(), `${process.version} set by SetEnv`);
  const p = await ssh(s, 'echo "$PATH"');
  t.is(p.stdout.trim().split(':')[0], path.dirname(process.execPath));
});

test('stdin and stdout through ssh are a binary-clean duplex byte stream', async (t) => {
  const s = await startSshd(t);
  const child = spawn('ssh', [...s.sshArgs, s.target, 'cat'], { env: s.env, stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); });
  let received = Buffer.alloc(0);
  let stderr = '';
  const waiters: Array<() => void> = [];
  child.stdout.on('data', (c: Buffer) => {
    received = Buffer.concat([received, c]);
    for (const w of waiters.splice(0)) w();
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (c: string) => { stderr += c; });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const until = async (n: number): Promise<void> => {
    const deadline = Date.now() + 20_000;
    while (received.length < n) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`only ${received.length} of ${n} bytes came back; ssh: ${stderr}`);
      await new Promise<void>((r) => { waiters.push(r); setTimeout(r, 100); });
    }
  };

  // Request and answer in turns: each piece comes back before the next is sent, with
  // stdin still open, as a protocol's frames would. Escape sequences and line endings
  // included, which a terminal would have eaten or rewritten.
  const everyByte = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const turns = [Buffer.from('\n~.\r\n~?\r~C\0'), everyByte, Buffer.from([0xff, 0xfe, 0x00, 0x1b, 0x03, 0x04, 0x1a])];
  let sent = 0;
  for (const piece of turns) {
    child.stdin.write(piece);
    sent += piece.length;
    await until(sent);
  }

  // Then 1 MiB in all, in one go, and end of input.
  const bulk = Buffer.concat([...turns, randomBytes(1024 * 1024 - sent)]);
  t.is(bulk.length, 1024 * 1024);
  child.stdin.end(bulk.subarray(sent));
  t.is(await exited, 0, stderr);
  t.is(received.length, bulk.length);
  t.is(sha(received), sha(bulk));
  t.true(received.equals(bulk));
});

test('a key that authorized_keys does not hold is refused', async (t) => {
  const s = await startSshd(t);
  const wrongKey = await generateKey(path.join(s.dir, 'unrelated_ed25519'), 'unrelated');
  const refused = await ssh(s, 'echo hello', s.argsWithIdentity(wrongKey));
  t.not(refused.code, 0);
  t.is(refused.stdout, '');
  t.regex(refused.stderr, /Permission denied \(publickey\)/);
  // The same arguments with the right key work: it was the key that made the difference.
  const accepted = await ssh(s, 'echo hello', s.argsWithIdentity(s.identityFile));
  t.is(accepted.code, 0, accepted.stderr);
  t.is(accepted.stdout, 'hello\n');
});

test('after stop() the port refuses connections and sshd is gone', async (t) => {
  const s = await startSshd(t);
  // A session still open when the server stops is ended with it.
  const session = spawn('ssh', [...s.sshArgs, s.target, 'echo started; exec sleep 60'], { env: s.env, stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => { if (session.exitCode === null && session.signalCode === null) session.kill('SIGKILL'); });
  const sessionEnded = new Promise<void>((resolve) => session.on('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    session.stdout.once('data', () => resolve());
    session.once('close', () => reject(new Error('the session ended before it started')));
  });

  await s.stop();
  const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
    const c = net.connect(s.port, '127.0.0.1');
    c.once('connect', () => { c.destroy(); resolve(null); });
    c.once('error', (e: NodeJS.ErrnoException) => resolve(e));
  });
  t.is(err?.code, 'ECONNREFUSED');
  t.throws(() => process.kill(s.pid, 0), { code: 'ESRCH' });
  const r = await ssh(s, 'echo hello');
  t.not(r.code, 0);
  t.regex(r.stderr, /Connection refused/);
  await Promise.race([sessionEnded, new Promise((r) => setTimeout(r, 10_000))]);
  t.not(session.exitCode ?? session.signalCode, null, 'the open session ended when the server stopped');
  await s.stop();
});
