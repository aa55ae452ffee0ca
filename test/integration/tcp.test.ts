// `replfs serve --listen` and replfs://host:port/NAME for real: a server process on an
// ephemeral port of 127.0.0.1, real `replfs sync` processes, and hand-made senders on raw
// sockets for what a real sender never does. Every server is killed in teardown.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import {
  scratch, replfs, initVolume, mountVolume, describeTree, run, waitFor, alive,
  type Scratch, fails,
} from '../helpers/env.js';
import type { ExitCodeName } from '../../src/errors/index.js';
import { startServer, tokenFile, type Server } from '../helpers/server.js';
import { Connection, greet } from '../../src/replicate/connection.js';
import { FrameType, decodeJson, encodeJson, type Frame } from '../../src/replicate/frames.js';
import type { SyncSummary as Summary } from '../../src/replicate/sender.js';

/** A wrong token ends the sender with `permission` (8). */
const AUTH_EXIT: ExitCodeName = 'permission';

/** The server's per-connection log lines (after the first two). */
function connections(srv: Server): string[] {
  return srv.log().split('\n').filter((l) => / 127\.0\.0\.1:\d+ /.test(l));
}

async function logged(srv: Server, count: number): Promise<string[]> {
  await waitFor(() => connections(srv).length >= count, 20_000, `${count} connection lines in the server log`);
  return connections(srv);
}


/** A protected directory with a few kinds of files (unmounted unless `mount`). */
/** A server on a root of its own, with a token file; `good` is the token itself. */
async function served(t: ExecutionContext, s: Scratch, args: string[] = []): Promise<{ root: string; token: string; good: string; srv: Server }> {
  const root = path.join(s.dir, 'replicas');
  fs.mkdirSync(root);
  const token = tokenFile(s);
  const good = fs.readFileSync(token, 'utf8').trim();
  const srv = await startServer(t, root, ['--token-file', token, ...args]);
  return { root, token, good, srv };
}

async function source(t: ExecutionContext, s: Scratch, name: string, mount = false): Promise<string> {
  const dir = path.join(s.dir, name);
  fs.mkdirSync(path.join(dir, 'docs/deep'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'docs/a.txt'), `alpha of ${name}\n`);
  fs.writeFileSync(path.join(dir, 'docs/deep/b.txt'), 'beta\n');
  fs.writeFileSync(path.join(dir, 'big.bin'), randomBytes(300 * 1024));
  fs.symlinkSync('docs/a.txt', path.join(dir, 'link'));
  fs.linkSync(path.join(dir, 'docs/a.txt'), path.join(dir, 'hard'));
  fs.chmodSync(path.join(dir, 'docs/deep/b.txt'), 0o640);
  await initVolume(t, s, dir);
  if (mount) await mountVolume(t, s, dir);
  return dir;
}

async function syncJson(t: ExecutionContext, s: Scratch, args: string[], env?: NodeJS.ProcessEnv): Promise<Summary> {
  const r = await replfs(s, ['sync', ...args, '--json'], env ? { env } : {});
  t.is(r.code, 0, `replfs sync ${args.join(' ')}: exit ${r.code}; stderr: ${r.stderr}`);
  return JSON.parse(r.stdout || 'null') as Summary;
}

/** The replica's tree must be `want`'s (a source snapshot, or an unmounted source as it stands). */
async function same(t: ExecutionContext, want: string, replica: string, what: string): Promise<void> {
  t.deepEqual(await describeTree(replica, { xattrs: true, inodes: false }), await describeTree(want, { xattrs: true, inodes: false }), what);
}

function dial(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1', () => resolve(sock));
    sock.once('error', reject);
  });
}

/** Sends `bytes`, then returns all the server answers until it hangs up (in 10 s at most). */
async function rawAnswer(port: number, bytes: Buffer): Promise<Buffer> {
  const sock = await dial(port);
  const chunks: Buffer[] = [];
  sock.on('data', (c: Buffer) => chunks.push(c));
  sock.write(bytes);
  const timer = setTimeout(() => sock.destroy(), 10_000);
  await new Promise<void>((resolve) => sock.on('close', () => resolve()));
  clearTimeout(timer);
  return Buffer.concat(chunks);
}

/** The error body in an answer that must be exactly one `error` frame. */
function errorOf(t: ExecutionContext, answer: Buffer): { code: string; message: string; transient: boolean } {
  t.true(answer.length >= 5 && answer[4] === FrameType.error && answer.readUInt32BE(0) + 4 === answer.length, `one error frame, got ${answer.toString('hex').slice(0, 80)}`);
  return JSON.parse(answer.subarray(5).toString('utf8')) as { code: string; message: string; transient: boolean };
}

const SNAP = { name: '2026-11-25T10-00-00Z', sourceTime: '2026-11-25T10:00:00.000Z', label: null, consistency: 'crash' };

/** A hand-made sender: greeted with `target`, then `begin` as volume `volumeId`; returns the answer to begin. */
async function begin(port: number, token: string, target: string | undefined, volumeId = 'hand-made-volume'): Promise<{ conn: Connection; answer: Frame }> {
  const conn = new Connection(await dial(port));
  await greet(conn, 'hand-made', token, target);
  await conn.sendJson('begin', { sourceVolumeId: volumeId, snapshot: SNAP, blockSize: 65536, mode: 'sync', force: false });
  return { conn, answer: await conn.next(10_000) };
}

function volumeIdOf(dir: string): string {
  return (JSON.parse(fs.readFileSync(path.join(dir, '.replfs/config.json'), 'utf8')) as { volumeId: string }).volumeId;
}

function makeCert(t: ExecutionContext, s: Scratch, name: string, cn: string, san: string): Promise<unknown> {
  return run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${cn}`,
    '-addext', `subjectAltName=${san}`, '-days', '2', '-keyout', path.join(s.dir, `${name}.key`), '-out', path.join(s.dir, `${name}.pem`)])
    .then((r) => { if (r.code !== 0) t.fail(`openssl failed: ${r.stderr}`); });
}

test('a full then an incremental sync over replfs://, the replica equal to the source snapshot each time', async (t) => {
  const s = scratch(t);
  const src = await source(t, s, 'src', true);
  const { root, token, srv } = await served(t, s);
  const dest = `replfs://127.0.0.1:${srv.port}/main`;

  const first = await syncJson(t, s, [src, dest, '--token-file', token]);
  t.is(first.base, null);
  t.truthy(first.replicaSnapshot);
  await same(t, path.join(src, '.snapshots', first.snapshot), path.join(root, 'main'), 'after the first sync');

  fs.appendFileSync(path.join(src, 'docs/a.txt'), 'more\n');
  fs.renameSync(path.join(src, 'docs/deep'), path.join(src, 'moved'));
  fs.writeFileSync(path.join(src, 'new.txt'), 'new\n');
  fs.unlinkSync(path.join(src, 'hard'));
  const second = await syncJson(t, s, [src, dest, '--token-file', token]);
  t.is(second.base, first.snapshot);
  t.true(second.bytesSent < 64 * 1024, `an incremental sync sends only the changed blocks (${second.bytesSent} bytes)`);
  await same(t, path.join(src, '.snapshots', second.snapshot), path.join(root, 'main'), 'after the second sync');

  const again = await syncJson(t, s, [src, dest, '--token-file', token, '--snapshot', second.snapshot]);
  t.is(again.replicaSnapshot, null, 'the replica already has it: nothing sent');
  t.deepEqual(fs.readdirSync(root), ['main'], 'one replica, under its NAME');

  const lines = await logged(srv, 3);
  t.regex(lines[0]!, new RegExp(`127\\.0\\.0\\.1:\\d+ main ok: replica snapshot ${first.replicaSnapshot} \\(\\d+ bytes in, \\d+ out, [\\d.]+ s\\)$`));
  t.regex(lines[2]!, / main ok: already current/);
  t.false(srv.log().includes(fs.readFileSync(token, 'utf8').trim()), 'the token is never logged');
});

test('the token: a wrong or missing one gets the same answer, bad token files are refused, nothing is created', async (t) => {
  const s = scratch(t);
  const src = await source(t, s, 'src');
  const { root, good, srv } = await served(t, s);
  const dest = `replfs://127.0.0.1:${srv.port}/main`;

  // By hand: every failure to present the token, each naming a replica, gets the same bytes.
  const hellos: unknown[] = [
    { protocol: 'replfs', versions: [1], software: 'x', token: 'wrong-wrong-wrong-wrong', target: 'main' },
    { protocol: 'replfs', versions: [1], software: 'x', target: 'main' },
    { protocol: 'replfs', versions: [1], software: 'x', token: good.slice(0, -1), target: '../evil' },
    { protocol: 'replfs', versions: [1], software: 'x', token: 12345, target: 'main' },
    { protocol: 'other', token: `${good}x` },
  ];
  const answers = await Promise.all(hellos.map((h) => rawAnswer(srv.port, encodeJson('hello', h))));
  t.deepEqual(errorOf(t, answers[0]!), { code: 'auth', message: 'authentication failed', transient: false });
  for (const [i, a] of answers.entries()) t.true(a.equals(answers[0]!), `hello ${i}: byte for byte the same answer`);

  fails(t, await replfs(s, ['sync', src, dest, '--token-file', tokenFile(s, 'wrong', 'this-is-not-the-right-token\n')]), AUTH_EXIT,
    /the sync to replfs:\/\/.* failed: the peer refused: authentication failed$/m, 'a wrong token');
  const authLines = await logged(srv, hellos.length + 1);
  t.true(authLines.every((l) => / - refused: authentication failed \(/.test(l)), 'each logged as an authentication failure, without a NAME');

  // Refused before connecting: the server sees none of these.
  const before = connections(srv).length;
  fails(t, await replfs(s, ['sync', src, dest], { env: { REPLFS_TOKEN_FILE: '' } }), 'usage', /needs the server's token: --token-file FILE, or REPLFS_TOKEN_FILE/, 'no token at all');
  fails(t, await replfs(s, ['sync', src, dest, '--token-file', tokenFile(s, 'empty', '\n  \n')]), 'usage', /token file .* is empty/, 'an empty token file');
  fails(t, await replfs(s, ['sync', src, dest, '--token-file', tokenFile(s, 'short', 'short-token\n')]), 'usage', /is 11 characters long; at least 16/, 'a short token');
  fails(t, await replfs(s, ['sync', src, dest, '--token-file', tokenFile(s, 'open', `${good}\n`, 0o644)]), 'permission', /accessible by group or others \(mode 0644\)[^]*hint: chmod 600 /, 'a world-readable token file');
  fails(t, await replfs(s, ['sync', src, dest, '--token-file', tokenFile(s, 'group', `${good}\n`, 0o640)]), 'permission', /mode 0640/, 'a group-readable token file');
  fails(t, await replfs(s, ['sync', src, dest, '--token-file', path.join(s.dir, 'nope')]), 'notFound', /token file .*nope does not exist/, 'a missing token file');
  await rawAnswer(srv.port, encodeJson('hello', hellos[0]));
  t.is((await logged(srv, before + 1)).length, before + 1, 'of those, only the last hand-made hello reached the server');
  t.deepEqual(fs.readdirSync(root), [], 'nothing was created under the root');

  // The token from the environment, with the first line only, trimmed.
  const spaced = tokenFile(s, 'spaced', `  ${good}  \nsecond line is not the token\n`);
  await syncJson(t, s, [src, dest], { REPLFS_TOKEN_FILE: spaced });
  await same(t, src, path.join(root, 'main'), 'a sync with the token of REPLFS_TOKEN_FILE');

  // The server refuses bad token files too, before it listens.
  for (const [file, exit, message] of [
    [tokenFile(s, 'empty2', ''), 'usage', /is empty/],
    [tokenFile(s, 'short2', 'abc\n'), 'usage', /is 3 characters long; at least 16/],
    [tokenFile(s, 'open2', `${good}\n`, 0o604), 'permission', /accessible by group or others \(mode 0604\)[^]*chmod 600/],
    [path.join(s.dir, 'missing'), 'notFound', /does not exist/],
  ] as Array<[string, ExitCodeName, RegExp]>) {
    fails(t, await replfs(s, ['serve', root, '--listen', '127.0.0.1:0', '--token-file', file]), exit, message, `serve with the token file ${path.basename(file)}`);
  }
});

test('hostile NAMEs are refused after the token, and nothing is created inside or outside the root', async (t) => {
  const s = scratch(t);
  const root = path.join(s.dir, 'replicas');
  fs.mkdirSync(root);
  const outside = path.join(s.dir, 'outside');
  fs.mkdirSync(outside);
  fs.symlinkSync(outside, path.join(root, 'planted'));
  fs.writeFileSync(path.join(root, 'a-file'), 'not a replica');
  const token = tokenFile(s);
  const good = fs.readFileSync(token, 'utf8').trim();
  const srv = await startServer(t, root, ['--token-file', token]);
  const listing = () => ({ root: fs.readdirSync(root).sort(), dir: fs.readdirSync(s.dir).sort(), outside: fs.readdirSync(outside) });
  const was = listing();

  const names: Array<[string | undefined, RegExp]> = [
    ['../evil', /is not a replica name/],
    ['..', /is not a replica name/],
    ['.', /is not a replica name/],
    ['', /is not a replica name/],
    ['/tmp/evil', /is not a replica name/],
    ['a/b', /is not a replica name/],
    ['a\u0000b', /is not a replica name/],
    ['.replfs', /is not a replica name/],
    ['-rf', /is not a replica name/],
    ['x'.repeat(256), /is not a replica name/],
    ['ok\nforged log line', /is not a replica name/],
    [undefined, /named no replica/],
    ['planted', /is not a directory on the server \(a symlink\)/],
    ['a-file', /is not a directory on the server \(a file\)/],
  ];
  for (const [name, message] of names) {
    const { conn, answer } = await begin(srv.port, good, name);
    t.is(answer.type, 'error', `${JSON.stringify(name)}: refused`);
    const body = decodeJson(answer) as { message: string; transient: boolean };
    t.regex(body.message, message, JSON.stringify(name));
    t.false(body.transient, `${JSON.stringify(name)}: a permanent refusal`);
    conn.close();
  }
  // A target that is not a string is a malformed hello.
  const answer = await rawAnswer(srv.port, encodeJson('hello', { protocol: 'replfs', versions: [1], software: 'x', token: good, target: ['..'] }));
  t.is(errorOf(t, answer).code, 'protocol');

  t.deepEqual(listing(), was, 'nothing was created or changed, in the root, beside it, or through the planted link');
  const lines = await logged(srv, names.length + 1);
  t.true(lines.some((l) => l.includes(' "ok\\nforged log line" refused: ')), 'a hostile NAME is logged quoted, on one line');
  t.true(lines.every((l) => !l.includes('\u0000')));
});

test('TLS: a round trip with a self-signed certificate; a plaintext sender and a wrong CA are refused cleanly', async (t) => {
  const s = scratch(t);
  await makeCert(t, s, 'server', 'localhost', 'IP:127.0.0.1,DNS:localhost');
  await makeCert(t, s, 'stranger', 'localhost', 'IP:127.0.0.1,DNS:localhost');
  const src = await source(t, s, 'src');
  const { root, token, srv } = await served(t, s, ['--tls-cert', path.join(s.dir, 'server.pem'), '--tls-key', path.join(s.dir, 'server.key')]);
  const ca = path.join(s.dir, 'server.pem');

  const first = await syncJson(t, s, [src, `replfs://127.0.0.1:${srv.port}/main`, '--token-file', token, '--tls-ca', ca]);
  t.truthy(first.replicaSnapshot);
  await same(t, src, path.join(root, 'main'), 'over TLS, by address');
  fs.writeFileSync(path.join(src, 'new.txt'), 'over TLS by name\n');
  const second = await syncJson(t, s, [src, `replfs://localhost:${srv.port}/main`, '--token-file', token, '--tls-ca', ca]);
  t.is(second.base, first.snapshot);
  await same(t, src, path.join(root, 'main'), 'over TLS, by the name in the certificate');

  fails(t, await replfs(s, ['sync', src, `replfs://127.0.0.1:${srv.port}/plain`, '--token-file', token]), 'refused', /the peer refused: this server requires TLS/, 'a plaintext sender');
  const plain = await rawAnswer(srv.port, encodeJson('hello', { protocol: 'replfs', versions: [1], software: 'x' }));
  t.deepEqual(errorOf(t, plain), { code: 'tls-required', message: 'this server requires TLS (sync with --tls-ca)', transient: false });
  fails(t, await replfs(s, ['sync', src, `replfs://127.0.0.1:${srv.port}/wrongca`, '--token-file', token, '--tls-ca', path.join(s.dir, 'stranger.pem')]), 'refused',
    /the certificate of 127\.0\.0\.1:\d+ does not verify against .*stranger\.pem/, 'a certificate that does not verify');
  fails(t, await replfs(s, ['sync', src, `replfs://127.0.0.1:${srv.port}/x`, '--token-file', token, '--tls-ca', path.join(s.dir, 'none.pem')]), 'notFound', /--tls-ca .*none\.pem does not exist/, 'a missing CA file');

  // A plaintext server answers a TLS sender with a TLS alert: a clear, permanent refusal.
  const plainRoot = path.join(s.dir, 'plain-replicas');
  fs.mkdirSync(plainRoot);
  const plainSrv = await startServer(t, plainRoot, ['--token-file', token]);
  fails(t, await replfs(s, ['sync', src, `replfs://127.0.0.1:${plainSrv.port}/main`, '--token-file', token, '--tls-ca', ca]), 'refused',
    /refused the TLS handshake \(alert: handshake failure\): it may not serve TLS/, 'TLS to a plaintext server');
  t.regex((await logged(plainSrv, 1))[0]!, / - refused: a TLS connection, but this server has no --tls-cert/);
  t.deepEqual(fs.readdirSync(plainRoot), []);

  const lines = await logged(srv, 4);
  t.true(lines.some((l) => / - refused: a plaintext connection, but this server requires TLS/.test(l)));
  t.true(lines.some((l) => / - refused: TLS handshake failed/.test(l)), 'the wrong CA shows as a failed handshake');
  t.deepEqual(fs.readdirSync(root), ['main'], 'the refused senders created nothing');
  // Still serving after all that.
  fs.writeFileSync(path.join(src, 'last.txt'), 'still there\n');
  await syncJson(t, s, [src, `replfs://127.0.0.1:${srv.port}/main`, '--token-file', token, '--tls-ca', ca]);
  await same(t, src, path.join(root, 'main'), 'a sync after the refusals');
});

test('syncs to two NAMEs run at once; the same NAME at once is refused as busy (exit 10) until the first ends', async (t) => {
  const s = scratch(t);
  const [a, b] = [await source(t, s, 'a'), await source(t, s, 'b')];
  const { root, token, good, srv } = await served(t, s);
  const dest = (name: string) => `replfs://127.0.0.1:${srv.port}/${name}`;

  const [ra, rb] = await Promise.all([syncJson(t, s, [a, dest('a'), '--token-file', token]), syncJson(t, s, [b, dest('b'), '--token-file', token])]);
  t.truthy(ra.replicaSnapshot);
  t.truthy(rb.replicaSnapshot);
  await same(t, a, path.join(root, 'a'), 'replica a');
  await same(t, b, path.join(root, 'b'), 'replica b');

  // A sync into `a` held open half way (begun, as the source of `a`).
  const held = await begin(srv.port, good, 'a', volumeIdOf(a));
  t.is(held.answer.type, 'state', 'the held sync has begun');
  fs.writeFileSync(path.join(a, 'new.txt'), 'new\n');
  fs.writeFileSync(path.join(b, 'new.txt'), 'new\n');
  fails(t, await replfs(s, ['sync', a, dest('a'), '--token-file', token]), 'unavailable', /the replica a is busy: another sync into it is running/, 'the same NAME at once');
  await syncJson(t, s, [b, dest('b'), '--token-file', token]);
  await same(t, b, path.join(root, 'b'), 'another NAME meanwhile');
  held.conn.close();
  await waitFor(() => connections(srv).some((l) => / a ok: already current/.test(l)), 20_000, 'the held sync to end');
  await syncJson(t, s, [a, dest('a'), '--token-file', token]);
  await same(t, a, path.join(root, 'a'), 'the same NAME once free again');
});

test('beyond --max-connections a sender is told busy (exit 10), and served once a place is free', async (t) => {
  const s = scratch(t);
  const src = await source(t, s, 'src');
  const { root, token, good, srv } = await served(t, s, ['--max-connections', '1']);
  const held = await begin(srv.port, good, 'held');
  t.is(held.answer.type, 'state');
  const busy = await rawAnswer(srv.port, encodeJson('hello', { protocol: 'replfs', versions: [1], software: 'x', token: good, target: 'main' }));
  t.like(errorOf(t, busy), { code: 'busy', transient: true });
  fails(t, await replfs(s, ['sync', src, `replfs://127.0.0.1:${srv.port}/main`, '--token-file', token]), 'unavailable',
    /the peer refused: the server is serving its most syncs at once \(1\); try again later/, 'over the cap');
  t.false(fs.existsSync(path.join(root, 'main')));
  held.conn.close();
  await waitFor(() => connections(srv).some((l) => / held ok:/.test(l)), 20_000, 'the held connection to end');
  await syncJson(t, s, [src, `replfs://127.0.0.1:${srv.port}/main`, '--token-file', token]);
  await same(t, src, path.join(root, 'main'), 'served once a place was free');
  t.is(connections(srv).filter((l) => / - busy: /.test(l)).length, 2);
});

test('SIGTERM stops accepting, lets a running sync end, and exits 0; after --grace it cuts what is left', async (t) => {
  const s = scratch(t);
  const root = path.join(s.dir, 'replicas');
  fs.mkdirSync(root);
  const token = tokenFile(s);
  const good = fs.readFileSync(token, 'utf8').trim();

  const idle = await startServer(t, root, ['--token-file', token]);
  idle.child.kill('SIGINT');
  t.is(await idle.exit, 0, 'an idle server exits 0 on SIGINT');
  t.regex(idle.log(), /SIGINT: no new connections; waiting up to 60 s for 0 running sync\(s\)\n.* stopped\n$/);
  const src = await source(t, s, 'src');
  fails(t, await replfs(s, ['sync', src, `replfs://127.0.0.1:${idle.port}/main`, '--token-file', token]), 'unavailable',
    new RegExp(`cannot reach 127\\.0\\.0\\.1:${idle.port}: connection refused`), 'a server that is gone: worth retrying');

  const srv = await startServer(t, root, ['--token-file', token, '--grace', '60']);
  const held = await begin(srv.port, good, 'held');
  t.is(held.answer.type, 'state');
  srv.child.kill('SIGTERM');
  await waitFor(() => srv.log().includes('SIGTERM: no new connections; waiting up to 60 s for 1 running sync(s)'), 10_000, 'the server to say it stops');
  await t.throwsAsync(dial(srv.port), { code: 'ECONNREFUSED' }, 'no new connections');
  await new Promise((r) => setTimeout(r, 300));
  t.true(alive(srv.child.pid!), 'still running while a sync is');
  held.conn.close();
  t.is(await srv.exit, 0, 'exit 0 once the sync ended');
  t.regex(srv.log(), / held ok: already current[^\n]*\n[^\n]* stopped\n$/);

  const short = await startServer(t, root, ['--token-file', token, '--grace', '1']);
  const stuck = await begin(short.port, good, 'stuck');
  t.is(stuck.answer.type, 'state');
  const started = Date.now();
  short.child.kill('SIGTERM');
  t.is(await short.exit, 0, 'exit 0 after the grace time');
  t.true(Date.now() - started < 15_000, `within the grace and the wind-down (${Date.now() - started} ms)`);
  t.regex(short.log(), / stuck cut: the server stopped before the connection ended \([^\n]*\n[^\n]* stopped \(1 connection\(s\) cut before they ended\)\n$/);
  await t.throwsAsync(stuck.conn.next(5000), undefined, 'the cut connection is closed');
});

test('bad serve options are refused with their exit codes, and nothing listens', async (t) => {
  const s = scratch(t);
  const root = path.join(s.dir, 'replicas');
  fs.mkdirSync(root);
  const token = tokenFile(s);
  const occupier = net.createServer();
  await new Promise<void>((resolve) => occupier.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => occupier.close(() => resolve())));
  const taken = (occupier.address() as net.AddressInfo).port;
  fs.writeFileSync(path.join(s.dir, 'bad.pem'), 'not a certificate\n');

  const cases: Array<[string, string[], ExitCodeName, RegExp]> = [
    ['no mode', [root], 'usage', /say how to serve: --stdio or --listen HOST:PORT/],
    ['both modes', [root, '--stdio', '--listen', '127.0.0.1:0', '--token-file', token], 'usage', /--stdio and --listen do not go together/],
    ['a host without a port', [root, '--listen', '127.0.0.1', '--token-file', token], 'usage', /--listen "127\.0\.0\.1" is not HOST:PORT/],
    ['a port out of range', [root, '--listen', '127.0.0.1:65536', '--token-file', token], 'usage', /is not HOST:PORT/],
    ['no host', [root, '--listen', ':7000', '--token-file', token], 'usage', /is not HOST:PORT/],
    ['a port that is not a number', [root, '--listen', 'localhost:http', '--token-file', token], 'usage', /is not HOST:PORT/],
    ['a port in use', [root, '--listen', `127.0.0.1:${taken}`, '--token-file', token], 'busy', new RegExp(`127\\.0\\.0\\.1:${taken} is in use by another process`)],
    ['no token file', [root, '--listen', '127.0.0.1:0'], 'usage', /--listen needs --token-file FILE/],
    ['a missing token file', [root, '--listen', '127.0.0.1:0', '--token-file', path.join(s.dir, 'nope')], 'notFound', /the token file .*nope does not exist/],
    ['a missing root', [path.join(s.dir, 'nope'), '--listen', '127.0.0.1:0', '--token-file', token], 'notFound', /nope does not exist/],
    ['a root that is a file', [token, '--listen', '127.0.0.1:0', '--token-file', token], 'notFound', /is not a directory/],
    ['a certificate without its key', [root, '--listen', '127.0.0.1:0', '--token-file', token, '--tls-cert', token], 'usage', /--tls-cert and --tls-key go together/],
    ['a missing certificate', [root, '--listen', '127.0.0.1:0', '--token-file', token, '--tls-cert', path.join(s.dir, 'no.pem'), '--tls-key', path.join(s.dir, 'no.key')], 'notFound', /--tls-cert .*no\.pem does not exist/],
    ['a certificate that is not one', [root, '--listen', '127.0.0.1:0', '--token-file', token, '--tls-cert', path.join(s.dir, 'bad.pem'), '--tls-key', path.join(s.dir, 'bad.pem')], 'usage', /the TLS certificate or key does not load/],
    ['--token-file with --stdio', [root, '--stdio', '--token-file', token], 'usage', /--token-file goes with --listen, not --stdio/],
    ['a cap of 0', [root, '--listen', '127.0.0.1:0', '--token-file', token, '--max-connections', '0'], 'usage', /--max-connections wants a whole number of at least 1/],
    ['a grace that is not a number', [root, '--listen', '127.0.0.1:0', '--token-file', token, '--grace', '1m'], 'usage', /--grace wants a whole number/],
  ];
  for (const [what, args, exit, message] of cases) fails(t, await replfs(s, ['serve', ...args], { timeoutMs: 20_000 }), exit, message, what);
  t.deepEqual(fs.readdirSync(root), []);
});
