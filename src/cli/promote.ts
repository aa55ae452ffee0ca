// `replfs promote`: failover. A replica becomes a writable protected volume at its newest
// complete snapshot, and is mounted so that applications can be pointed at it.
import path from 'node:path';
import { ReplfsError } from '../errors/index.js';
import { call } from '../control/client.js';
import { findRecord, isAlive } from '../control/registry.js';
import type { PromoteReport } from '../replicate/promote.js';
import { findVolumeRoot } from './locate.js';
import { printJson, type Command } from './command.js';

/**
 * Stops the daemon of a read-only replica mount named by its directory or its mountpoint;
 * returns the replica and where it was mounted (an in-place mount hides .replfs/).
 */
async function letGo(given: string): Promise<{ root: string; wasAt: string | null }> {
  const rec = await findRecord(given);
  if (!rec?.alive || (rec.root !== given && rec.mountpoint !== given)) return { root: given, wasAt: null };
  if (!rec.replica) throw new ReplfsError('refused', `${rec.root} is mounted as a writable volume: it is no replica`);
  await call(rec.socket, 'unmount', { lazy: false }, 60_000);
  const deadline = Date.now() + 60_000;
  while (isAlive(rec.pid)) {
    if (Date.now() > deadline) throw new ReplfsError('timeout', `the replica's daemon (pid ${rec.pid}) did not exit within 60 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { root: rec.root, wasAt: rec.mountpoint };
}

export const promote: Command = {
  name: 'promote',
  summary: 'Fail over: make a replica the live, writable volume at its newest complete snapshot.',
  args: '<replica> [<mountpoint>]',
  description: [
    'The replica\'s live files become its newest complete snapshot (a sync it was applying is',
    'undone, and so is anything changed behind replfs\'s back); every snapshot stays. It is',
    'then an ordinary protected directory, mounted writable: in place, or at <mountpoint>, or',
    'where its read-only mount was (which is taken down first). Applications can be pointed',
    'at it.',
    'Failing back later: once the old source is repaired and unmounted, `replfs sync <this>',
    '<old source>` sends only what changed since the newest snapshot both hold; the old',
    'source keeps its own later changes in a snapshot, then becomes a replica.',
  ].join('\n'),
  options: {
    'no-mount': { type: 'boolean', description: 'only promote; mount it later with replfs mount' },
    json: { type: 'boolean', description: 'print what was done as JSON' },
  },
  positionals: { min: 1, max: 2 },
  async run({ values, positionals }) {
    const given = path.resolve(positionals[0]!);
    const mountpointArg = positionals[1] !== undefined ? path.resolve(positionals[1]) : null;
    if (values['no-mount'] && mountpointArg !== null) throw new ReplfsError('usage', '--no-mount and a <mountpoint> do not go together');
    const { root, wasAt } = await letGo(given);
    const found = findVolumeRoot(root);
    if (found !== root) throw new ReplfsError('notFound', found ? `${root} is inside the volume ${found}: name the replica itself` : `${root} is not a replica (no .replfs/ there)`);
    const [{ Volume, inlineSyscalls }, { promote: promoteVolume }] = await Promise.all([import('../volume/index.js'), import('../replicate/promote.js')]);
    inlineSyscalls(true);
    const { volume } = await Volume.open(root, { writable: true });
    let report: PromoteReport;
    try {
      report = await promoteVolume(volume);
    } finally {
      await volume.close();
    }
    let mountedAt: string | null = null;
    if (!values['no-mount']) {
      mountedAt = mountpointArg ?? wasAt ?? root;
      const { mount } = await import('./mount.js');
      const quiet = console.log;
      // mount says what it did; promote says it once, below.
      console.log = () => undefined;
      try {
        await mount.run({ values: {}, positionals: [root, ...(mountedAt !== root ? [mountedAt] : [])] });
      } catch (err) {
        console.log = quiet;
        throw new ReplfsError(err instanceof ReplfsError ? err.exit : 'internal',
          `${root} is promoted, but mounting it failed: ${(err as Error).message}`, `mount it with: replfs mount ${root}${mountedAt !== root ? ` ${mountedAt}` : ''}`);
      } finally {
        console.log = quiet;
      }
    }
    if (values.json) {
      printJson({ ...report, root, mountpoint: mountedAt });
      return 0;
    }
    const undone = report.reverted.files > 0 ? `; undid changes to ${report.reverted.files} files (a half-applied sync, or changes made outside replfs)` : '';
    console.log(`promoted ${root}: its live files are snapshot ${report.snapshot} (source time ${report.sourceTime}) of volume ${report.formerSource}${undone}`);
    console.log(mountedAt ? `mounted writable ${mountedAt === root ? 'in place' : `at ${mountedAt}`}: point applications at ${mountedAt}` : `mount it with: replfs mount ${root}`);
    console.log(`to fail back later: repair and unmount the old source, then: replfs sync ${root} <old source>`);
    return 0;
  },
};
