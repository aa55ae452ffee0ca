// `replfs verify`: compare a source snapshot with the replica's copy of it, block by block.
import { ExitCode } from '../errors/index.js';
import { formatBytes } from '../policy/size.js';
import type { VerifySummary } from '../replicate/sender.js';
import { checkSnapshotName, printJson, type Command } from './command.js';
import { TRANSPORT_OPTIONS, actWithProgress, transportArgs } from './remote.js';

/** Differences listed on a terminal; --json lists up to 1000. */
const SHOWN = 50;

export const verify: Command = {
  name: 'verify',
  summary: 'Compare a source snapshot with the replica\'s snapshot of the same time, block by block.',
  args: '<path> <destination>',
  description: [
    'Reads every file of the snapshot on both sides and compares names, types, modes, owners,',
    'sizes, mtimes, symlink targets, xattrs, hard links and the BLAKE3 of every block. The',
    'snapshot is the one named with --snapshot, else the one the destination last confirmed',
    '(as this source knows it), else the newest. Exit 0: identical; exit 11: they differ,',
    'and the differences are listed. The destination is written as for `replfs sync`.',
  ].join('\n'),
  options: {
    snapshot: { type: 'string', value: 'NAME', description: 'the source snapshot to compare' },
    json: { type: 'boolean', description: 'print the result as JSON' },
    ...TRANSPORT_OPTIONS,
  },
  positionals: { min: 2, max: 2 },
  async run({ values, positionals }) {
    const [source, destination] = positionals as [string, string];
    const name = values.snapshot as string | undefined;
    if (name !== undefined) checkSnapshotName(name);
    const res = await actWithProgress<VerifySummary>(source, 'verify', { destination, cwd: process.cwd(), snapshot: name ?? null, ...transportArgs(values) }, values.json === true);
    if (values.json) {
      printJson(res);
    } else if (res.identical) {
      console.log(`${destination} holds ${res.snapshot} exactly (replica snapshot ${res.replicaSnapshot}): `
        + `${res.filesChecked} files, ${formatBytes(res.bytesChecked)} compared, ${(res.durationMs / 1000).toFixed(1)} s`);
    } else {
      for (const d of res.differences.slice(0, SHOWN)) console.log(`${d.what.padEnd(8)} ${d.path}`);
      if (res.totalDifferences > SHOWN) console.log(`... and ${res.totalDifferences - SHOWN} more (--json lists up to ${res.differences.length})`);
      console.log(`${destination} differs from ${res.snapshot} (replica snapshot ${res.replicaSnapshot}): ${res.totalDifferences} difference${res.totalDifferences === 1 ? '' : 's'}`);
    }
    return res.identical ? 0 : ExitCode.different;
  },
};
