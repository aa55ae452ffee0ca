// The whole round trip, for real, over TCP (replfs serve --listen) and over SSH (a real
// sshd on 127.0.0.1): a source replicating to a second site crashes with a change that
// never left it; the replica is promoted and written to; the old source, repaired, takes a
// sync back (only what changed since the snapshot both hold), keeping its own change in a
// snapshot; both sides verify; and then the roles go back the other way.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import { BIN, scratch, replfs, initVolume, mountVolume, forceUnmount, describeTree, fails, type Scratch, type RunResult } from '../helpers/env.js';
import { startServer, tokenFile } from '../helpers/server.js';
import { startSshd } from '../helpers/sshd.js';
import type { SyncSummary } from '../../src/replicate/sender.js';

function ok(t: ExecutionContext, r: RunResult, what: string): void {
  t.is(r.code, 0, `${what}: exit ${r.code}\n${r.stderr}${r.stdout}`);
}

interface Link {
  /** Where site A's and site B's volume are reached from the other site. */
  toA: string;
  toB: string;
  /** Options every sync and verify needs. */
  args: string[];
  /** The environment mounts need (their daemons run the syncs). */
  env: NodeJS.ProcessEnv;
}

async function tcp(t: ExecutionContext, s: Scratch, siteA: string, siteB: string): Promise<Link> {
  const token = tokenFile(s);
  // The servers see the test's runtime directory: syncs into a mounted replica go to its daemon.
  const a = await startServer(t, siteA, ['--token-file', token], '127.0.0.1:0', s.env);
  const b = await startServer(t, siteB, ['--token-file', token], '127.0.0.1:0', s.env);
  return { toA: `replfs://127.0.0.1:${a.port}/data`, toB: `replfs://127.0.0.1:${b.port}/data`, args: ['--token-file', token], env: {} };
}

async function ssh(t: ExecutionContext, s: Scratch, siteA: string, siteB: string): Promise<Link> {
  const sshd = await startSshd(t, { env: { REPLFS_RUNTIME_DIR: s.runtime } });
  const env = { REPLFS_SSH: ['ssh', ...sshd.sshArgs].join(' '), REPLFS_REMOTE_COMMAND: `${process.execPath} ${BIN}` };
  return { toA: `${sshd.target}:${siteA}/data`, toB: `${sshd.target}:${siteB}/data`, args: [], env };
}

async function syncJson(t: ExecutionContext, s: Scratch, from: string, to: string, link: Link, what: string): Promise<SyncSummary> {
  const r = await replfs(s, ['sync', from, to, '--json', ...link.args], { env: link.env });
  ok(t, r, what);
  return JSON.parse(r.stdout) as SyncSummary;
}

/** A tree as applications see it through a mount (without the snapshot directory). */
async function visible(dir: string): Promise<Record<string, unknown>> {
  const tree = await describeTree(dir, { inodes: false });
  for (const k of Object.keys(tree)) if (k === '.snapshots' || k.startsWith('.snapshots/')) delete tree[k];
  return tree;
}

for (const [name, connect] of [['TCP', tcp], ['SSH', ssh]] as const) {
  test.serial(`failover and failback over ${name}: promote, write, sync back only the changes, keep the old source's own, both verify, and back again`, async (t) => {
    const s = scratch(t);
    const siteA = path.join(s.dir, 'site-a');
    const siteB = path.join(s.dir, 'site-b');
    fs.mkdirSync(siteA);
    fs.mkdirSync(siteB);
    const a = path.join(siteA, 'data');
    const b = path.join(siteB, 'data');
    const link = await connect(t, s, siteA, siteB);
    fs.mkdirSync(path.join(a, 'docs'), { recursive: true });
    fs.writeFileSync(path.join(a, 'big.bin'), randomBytes(2 << 20));
    fs.writeFileSync(path.join(a, 'docs/readme.txt'), 'hello\n');
    await initVolume(t, s, a);
    await mountVolume(t, s, a, undefined, []);
    await replfs(s, ['unmount', a]);
    ok(t, await replfs(s, ['mount', a], { env: link.env }), 'mount the source with the transport\'s environment');
    t.teardown(() => forceUnmount(s, a));

    // Replicating as usual.
    const first = await syncJson(t, s, a, link.toB, link, 'the first sync');
    t.is(first.kind, 'full');
    fs.appendFileSync(path.join(a, 'docs/readme.txt'), 'more\n');
    fs.renameSync(path.join(a, 'docs'), path.join(a, 'documents'));
    const c = await syncJson(t, s, a, link.toB, link, 'an incremental sync');
    t.is(c.kind, 'incremental');

    // Site A writes something that never reaches B, and its daemon dies.
    fs.writeFileSync(path.join(a, 'late.txt'), 'written on A after its last sync\n');
    const pid = Number(/daemon pid (\d+)/.exec((await replfs(s, ['status', a])).stdout)?.[1]);
    t.true(pid > 0);
    process.kill(pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    ok(t, await replfs(s, ['unmount', a]), 'clear the dead mount');

    // Failover: B becomes the live volume.
    const promoted = await replfs(s, ['promote', b], { env: link.env });
    ok(t, promoted, 'promote');
    t.regex(promoted.stdout, new RegExp(`^promoted ${b}: its live files are snapshot ${c.snapshot} `, 'm'));
    t.regex(promoted.stdout, /^mounted writable in place: point applications at /m);
    t.teardown(() => forceUnmount(s, b));
    t.is(fs.readFileSync(path.join(b, 'documents/readme.txt'), 'utf8'), 'hello\nmore\n');
    fs.writeFileSync(path.join(b, 'from-b.txt'), 'written on B after the failover\n');
    const fd = fs.openSync(path.join(b, 'big.bin'), 'r+');
    fs.writeSync(fd, randomBytes(64 * 1024), 0, 64 * 1024, 1 << 20);
    fs.closeSync(fd);
    fs.renameSync(path.join(b, 'documents/readme.txt'), path.join(b, 'documents/README'));

    // Failback: A, repaired and unmounted, takes a sync from B.
    fails(t, await replfs(s, ['sync', b, link.toA, '--dry-run', ...link.args], { env: link.env }), 'refused', /a dry-run cannot take the place of a failback/, 'a dry run of the failback');
    const back = await syncJson(t, s, b, link.toA, link, 'the failback');
    t.truthy(back.rebased);
    t.is(back.rebased!.base, c.snapshot, 'from the newest snapshot both hold');
    t.is(back.kind, 'incremental', 'never a full copy');
    t.true(back.bytesSent < 256 * 1024, `only the changes travel (64 KiB of data and a small file): ${back.bytesSent} bytes`);
    t.truthy(back.rebased!.kept, 'A\'s own change is kept in a snapshot');
    ok(t, await replfs(s, ['verify', b, link.toA, ...link.args], { env: link.env }), 'verify the failback');
    ok(t, await replfs(s, ['verify', b, link.toA, '--snapshot', c.snapshot, ...link.args], { env: link.env }), 'verify the common snapshot');

    // A is now B's replica: mounted read-only, it shows B's files, and its kept snapshot the late change.
    const human = await replfs(s, ['status', b]);
    t.regex(human.stdout, /confirmed/);
    ok(t, await replfs(s, ['mount', '--read-only', a]), 'mount A as a replica');
    t.deepEqual(await visible(a), await visible(b), 'A shows what B holds');
    t.is(fs.readFileSync(path.join(a, '.snapshots', back.rebased!.kept!, 'late.txt'), 'utf8'), 'written on A after its last sync\n');
    t.false(fs.existsSync(path.join(a, 'late.txt')));

    // And back: B's last changes to A, then A promoted again, and B (unmounted) its replica.
    fs.writeFileSync(path.join(b, 'last-on-b.txt'), 'x\n');
    const final = await syncJson(t, s, b, link.toA, link, 'the last sync from B');
    t.is(final.kind, 'incremental');
    t.is(final.rebased, undefined, 'an ordinary sync now');
    ok(t, await replfs(s, ['unmount', b]), 'unmount B');
    ok(t, await replfs(s, ['promote', a], { env: link.env }), 'promote A again');
    fs.writeFileSync(path.join(a, 'home-again.txt'), 'A is the source again\n');
    const home = await syncJson(t, s, a, link.toB, link, 'A to B again');
    t.truthy(home.rebased);
    t.is(home.rebased!.base, final.snapshot);
    t.is(home.rebased!.kept, null, 'B changed nothing after its last snapshot');
    t.true(home.bytesSent < 64 * 1024, `${home.bytesSent} bytes`);
    ok(t, await replfs(s, ['verify', a, link.toB, ...link.args], { env: link.env }), 'verify the way back');
  });
}

test.serial('promote refuses what it cannot promote, and changes nothing', async (t) => {
  const s = scratch(t);
  const src = path.join(s.dir, 'src');
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, 'f'), 'f');
  await initVolume(t, s, src);
  fails(t, await replfs(s, ['promote', src, '--no-mount']), 'refused', /is not a replica: there is nothing to promote/, 'an ordinary volume');
  fails(t, await replfs(s, ['promote', path.join(s.dir, 'nowhere')]), 'notFound', /is not a replica \(no \.replfs\/ there\)/, 'nothing there');
  const rep = path.join(s.dir, 'rep');
  ok(t, await replfs(s, ['sync', src, rep]), 'a replica');
  fails(t, await replfs(s, ['promote', path.join(rep, 'f')]), 'notFound', /name the replica itself/, 'a file inside');
  fails(t, await replfs(s, ['promote', rep, path.join(s.dir, 'mnt'), '--no-mount']), 'usage', /--no-mount and a <mountpoint> do not go together/, 'both');
  await mountVolume(t, s, src);
  fails(t, await replfs(s, ['promote', src]), 'refused', /is mounted as a writable volume: it is no replica/, 'a mounted volume');
  ok(t, await replfs(s, ['promote', rep, '--no-mount']), 'promote without mounting');
  fails(t, await replfs(s, ['promote', rep]), 'refused', /it was promoted already/, 'twice');
});
