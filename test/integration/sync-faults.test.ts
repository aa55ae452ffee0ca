// Syncs that break for real, seeded and repeated: the connection cut at a random byte of
// either direction, the receiver or the sender SIGKILLed mid-sync (faults injected by a
// relay standing in for ssh between the real `replfs sync` and the real `replfs serve`),
// and a destination disk that fills up. After every fault the replica's snapshots are as
// they were (verify passes against each), the next sync completes, and verify passes.
// REPLFS_FAULT_SEED picks the faults; REPLFS_FAULT_ROUNDS how many.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import test from '../helpers/ava.js';
import type { ExecutionContext } from 'ava';
import { ROOT, scratch, replfs, initVolume, mountVolume, forceUnmount, rng, seedFromEnv, type Scratch } from '../helpers/env.js';
import { smallFilesystem } from '../helpers/smallfs.js';
import { ExitCode } from '../../src/errors/index.js';
import type { SyncSummary } from '../../src/replicate/sender.js';

const PROXY = path.join(ROOT, 'dist/test/helpers/faultproxy.js');
const REMOTE = `${process.execPath} ${path.join(ROOT, 'src/cli/replfs.mjs')}`;
const ROUNDS = Number(process.env.REPLFS_FAULT_ROUNDS ?? 8);

type Fault = 'cut' | 'kill-receiver' | 'kill-sender';

interface Snap {
  name: string;
  sourceTime: string;
}

interface Relay {
  env: NodeJS.ProcessEnv;
  log: string;
  /** The fault the next sync meets, or none. */
  set(fault: { at: number; dir: 'up' | 'down'; fault: Fault } | null): void;
  /** What the last sync through the relay sent each way. */
  last(): { up: number; down: number; what: string };
}

/** The fault relay of this test, standing in for ssh. */
function relay(s: Scratch): Relay {
  const config = path.join(s.dir, 'fault.json');
  const log = path.join(s.dir, 'relay.log');
  return {
    env: { ...s.env, REPLFS_SSH: `${process.execPath} ${PROXY} --config ${config} --log ${log}`, REPLFS_REMOTE_COMMAND: REMOTE },
    log,
    set(fault) {
      if (fault) fs.writeFileSync(config, JSON.stringify(fault));
      else fs.rmSync(config, { force: true });
    },
    last() {
      return JSON.parse(fs.readFileSync(log, 'utf8').trim().split('\n').at(-1)!) as { up: number; down: number; what: string };
    },
  };
}

async function replicaSnapshots(s: Scratch, replica: string): Promise<Snap[]> {
  const r = await replfs(s, ['snapshots', replica, '--json']);
  if (r.code !== 0) throw new Error(`snapshots ${replica}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { snapshots: Snap[] }).snapshots.map((x) => ({ name: x.name, sourceTime: x.sourceTime }));
}

/** Every source snapshot the replica holds still reads exactly as the source's. */
async function verifyAll(t: ExecutionContext, s: Scratch, src: string, dest: string, synced: string[], rl: Relay, what: string): Promise<void> {
  rl.set(null);
  for (const name of synced) {
    const v = await replfs(s, ['verify', src, dest, '--snapshot', name]);
    t.is(v.code, 0, `${what}: verify ${name}: ${v.stdout}${v.stderr}`);
  }
}

/** Random changes, through the mount: data overwritten, files made and deleted, a directory renamed. */
function mutate(dir: string, r: () => number, round: number): void {
  const pick = (n: number) => Math.floor(r() * n);
  const files = fs.readdirSync(path.join(dir, 'data')).filter((n) => n.endsWith('.bin')).sort();
  for (let i = 0; i < 3 && files.length > 0; i++) {
    const f = path.join(dir, 'data', files[pick(files.length)]!);
    const fd = fs.openSync(f, 'r+');
    fs.writeSync(fd, randomBytes(20_000 + pick(200_000)), 0, undefined, pick(1 << 20));
    fs.closeSync(fd);
  }
  fs.writeFileSync(path.join(dir, 'data', `new-${round}.bin`), randomBytes(pick(400_000)));
  if (files.length > 4) fs.unlinkSync(path.join(dir, 'data', files[pick(files.length)]!));
  const dirs = fs.readdirSync(dir).filter((n) => n.startsWith('tree'));
  if (dirs.length > 0) fs.renameSync(path.join(dir, dirs[0]!), path.join(dir, `tree-${round}`));
}

test('syncs cut at random bytes or killed mid-way leave the replica intact, and the next one completes', async (t) => {
  const s = scratch(t);
  const seed = seedFromEnv('REPLFS_FAULT_SEED');
  const r = rng(seed);
  t.log(`seed ${seed} (REPLFS_FAULT_SEED), ${ROUNDS} rounds`);
  const src = path.join(s.dir, 'src');
  fs.mkdirSync(src);
  await initVolume(t, s, src);
  const rl = relay(s);
  // Mounted in place: changes go through the mount, and the daemon runs each sync (so a
  // killed sender is a killed daemon, which the next mount recovers from).
  t.teardown(() => forceUnmount(s, src));
  const mount = async () => {
    const m = await replfs(s, ['mount', src], { env: rl.env });
    t.is(m.code, 0, `mount: ${m.stderr}`);
  };
  await mount();
  fs.mkdirSync(path.join(src, 'data'));
  fs.mkdirSync(path.join(src, 'tree/a/b'), { recursive: true });
  for (let i = 0; i < 12; i++) fs.writeFileSync(path.join(src, 'data', `f${i}.bin`), randomBytes(100_000 + Math.floor(r() * 1_500_000)));
  for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(src, 'tree/a/b', `small-${i}`), `small ${i}\n`);
  const dest = `localhost:${path.join(s.dir, 'replica')}`;
  const replica = path.join(s.dir, 'replica');
  const first = await replfs(s, ['sync', src, dest, '--json']);
  t.is(first.code, 0, first.stderr);
  const synced = [(JSON.parse(first.stdout) as SyncSummary).snapshot];
  // How much a sync sends each way (the last one that completed), to aim the faults inside the next.
  let whole = rl.last();
  const faults: Fault[] = ['cut', 'cut', 'kill-receiver', 'kill-sender'];
  const seen: string[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    mutate(src, r, round);
    const fault = faults[Math.floor(r() * faults.length)]!;
    const dir = fault === 'cut' && r() < 0.3 ? 'down' : 'up';
    // A third of the faults early (handshake, names), the rest anywhere in the data.
    const span = dir === 'up' ? whole.up : whole.down;
    const at = 1 + Math.floor(r() * (r() < 0.33 ? Math.min(4000, span) : Math.max(span, 100)));
    const before = await replicaSnapshots(s, replica);
    rl.set({ at, dir, fault });
    const cut = await replfs(s, ['sync', src, dest, '--json']);
    rl.set(null);
    const what = `round ${round}: ${fault} at byte ${at} ${dir}`;
    seen.push(`${fault}@${at}${dir}:${cut.code}`);
    if (cut.code === 0) {
      // The fault's byte lay beyond what this sync sent: it completed.
      synced.push((JSON.parse(cut.stdout) as SyncSummary).snapshot);
      whole = rl.last();
    } else {
      if (fault === 'kill-sender') await mount();
      else t.is(cut.code, ExitCode.unavailable, `${what}: a broken sync is transient (exit 10): ${cut.stderr}`);
      t.deepEqual(await replicaSnapshots(s, replica), before, `${what}: the replica's snapshots are the same, latest included`);
      await verifyAll(t, s, src, dest, synced.slice(-2), rl, what);
      const next = await replfs(s, ['sync', src, dest, '--json']);
      t.is(next.code, 0, `${what}: the next sync completes: ${next.stderr}`);
      if (next.code !== 0) return;
      synced.push((JSON.parse(next.stdout) as SyncSummary).snapshot);
      whole = rl.last();
    }
    await verifyAll(t, s, src, dest, [synced.at(-1)!], rl, `${what}, after`);
  }
  t.log(seen.join(' '));
  await verifyAll(t, s, src, dest, synced, rl, 'at the end, every snapshot synced');
});

test('a sync from a mounted source cut mid-way resumes and does not send again what arrived', async (t) => {
  const s = scratch(t);
  const src = path.join(s.dir, 'src');
  fs.mkdirSync(src);
  await initVolume(t, s, src);
  const rl = relay(s);
  // The daemon runs the sync, with the relay it was started with.
  t.teardown(() => forceUnmount(s, src));
  const m = await replfs(s, ['mount', src], { env: rl.env });
  t.is(m.code, 0, m.stderr);
  const dest = `localhost:${path.join(s.dir, 'replica')}`;
  fs.writeFileSync(path.join(src, 'small'), 'small\n');
  t.is((await replfs(s, ['sync', src, dest])).code, 0);
  fs.writeFileSync(path.join(src, 'big'), randomBytes(24 << 20));
  rl.set({ at: 12 << 20, dir: 'up', fault: 'cut' });
  const cut = await replfs(s, ['sync', src, dest, '--json']);
  t.is(cut.code, ExitCode.unavailable, `cut after 12 MiB: ${cut.stderr}`);
  rl.set(null);
  const next = await replfs(s, ['sync', src, dest, '--json']);
  t.is(next.code, 0, next.stderr);
  const sum = JSON.parse(next.stdout) as SyncSummary;
  t.true(sum.resumed);
  // What the receiver wrote before the cut is not sent again (it answers what it has
  // read; frames still in flight when the connection broke are lost).
  t.true(sum.blocksSkipped > 0, `blocks that arrived are skipped (${sum.blocksSkipped} skipped, ${sum.bytesSent} bytes sent)`);
  t.is(sum.bytesSent + sum.blocksSkipped * 65536, 24 << 20, 'every block is either skipped or sent');
  const v = await replfs(s, ['verify', src, dest]);
  t.is(v.code, 0, `${v.stdout}${v.stderr}`);
});

test('a destination that runs out of space fails the sync cleanly; its snapshots stay, and a sync that fits completes', async (t) => {
  const s = scratch(t);
  const small = await smallFilesystem(t, 32);
  const replica = path.join(small, 'replica');
  const src = path.join(s.dir, 'src');
  fs.mkdirSync(src);
  await initVolume(t, s, src);
  // Mounted, so that the source's own snapshots see every change (and keep what it replaces).
  await mountVolume(t, s, src);
  fs.writeFileSync(path.join(src, 'first'), randomBytes(4 << 20));
  const ok = await replfs(s, ['sync', src, replica, '--json']);
  t.is(ok.code, 0, ok.stderr);
  const firstSnapshot = (JSON.parse(ok.stdout) as SyncSummary).snapshot;
  const before = await replicaSnapshots(s, replica);
  fs.writeFileSync(path.join(src, 'too-big'), randomBytes(40 << 20));
  const full = await replfs(s, ['sync', src, replica]);
  t.is(full.code, ExitCode.unavailable, `a full disk is worth retrying later: ${full.stderr}`);
  t.regex(full.stderr, /out of space/);
  t.deepEqual(await replicaSnapshots(s, replica), before, 'the replica\'s snapshots are the same');
  const v = await replfs(s, ['verify', src, replica, '--snapshot', firstSnapshot]);
  t.is(v.code, 0, `the snapshot from before reads as it did: ${v.stdout}${v.stderr}`);
  fs.unlinkSync(path.join(src, 'too-big'));
  fs.writeFileSync(path.join(src, 'fits'), randomBytes(2 << 20));
  const after = await replfs(s, ['sync', src, replica, '--json']);
  t.is(after.code, 0, `once it fits: ${after.stderr}`);
  const last = await replfs(s, ['verify', src, replica]);
  t.is(last.code, 0, `${last.stdout}${last.stderr}`);
});
