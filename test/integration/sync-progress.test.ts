// Progress of a long sync: the daemon sends progress lines on the control socket before its
// answer, and the terminal line drawn from them says files, bytes, rate and time left.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import test from '../helpers/ava.js';
import { scratch, initVolume, mountVolume } from '../helpers/env.js';
import { call } from '../../src/control/client.js';
import { findRecord } from '../../src/control/registry.js';
import type { SyncProgress, SyncSummary } from '../../src/replicate/sender.js';
import { progressText } from '../../src/cli/progress.js';

test('a sync run by the daemon reports its progress on the control socket before its answer', async (t) => {
  const s = scratch(t);
  const src = path.join(s.dir, 'src');
  fs.mkdirSync(src);
  await initVolume(t, s, src);
  await mountVolume(t, s, src);
  for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(src, `f${i}`), randomBytes(300_000));
  process.env.REPLFS_RUNTIME_DIR = s.runtime;
  const rec = await findRecord(src);
  t.truthy(rec?.alive, 'the daemon is found');
  const seen: SyncProgress[] = [];
  const sum = await call<SyncSummary>(rec!.socket, 'sync', { destination: path.join(s.dir, 'replica'), snapshot: null, quiesce: false }, 60_000,
    (p) => seen.push(p as SyncProgress));
  t.truthy(sum.replicaSnapshot);
  const phases = [...new Set(seen.map((p) => p.phase))];
  t.deepEqual(phases, ['plan', 'names', 'data', 'finish'], 'every phase is reported, in order');
  const last = seen.filter((p) => p.phase === 'data').at(-1)!;
  t.is(last.bytesDone, last.bytesTotal, 'the data phase ends with every byte done');
  t.is(last.bytesTotal, 40 * 300_000);
  t.is(last.filesDone, last.filesTotal);
});

test('the progress line', (t) => {
  const p: SyncProgress = { phase: 'data', filesTotal: 10, filesDone: 4, bytesTotal: 100 << 20, bytesDone: 25 << 20, bytesSent: 5 << 20 };
  t.is(progressText(p, 5), '[######..................]  25%  4/10 files  25.0 MiB/100 MiB  5.00 MiB/s  5.00 MiB sent  ETA 00:15');
  t.is(progressText({ ...p, bytesDone: 0 }, 0), '[........................]   0%  4/10 files  0 B/100 MiB  0 B/s  5.00 MiB sent  ETA --:--');
  t.regex(progressText({ ...p, phase: 'names' }, 0), /applying names of 10 files/);
});
