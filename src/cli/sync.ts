// `replfs sync`: send a snapshot to a replica.
import { ReplfsError } from '../errors/index.js';
import { formatBytes, parseSize } from '../policy/size.js';
import type { SyncSummary } from '../replicate/sender.js';
import { checkSnapshotName, printJson, type Command } from './command.js';
import { TRANSPORT_OPTIONS, actWithProgress, transportArgs } from './remote.js';

/** --bwlimit: a size per second with a unit (K, M, G), or a plain number of KiB per second as rsync reads it. */
export function parseRate(text: string): number {
  const plain = /^\s*\d+(\.\d+)?\s*$/.test(text);
  const n = parseSize(text);
  if (n === undefined || n <= 0) {
    throw new ReplfsError('usage', `--bwlimit ${JSON.stringify(text)} is not a rate`, 'give bytes per second with a unit, as in 500K or 10M (a plain number is KiB per second)');
  }
  const rate = plain ? n * 1024 : n;
  if (rate < 1024) throw new ReplfsError('usage', `--bwlimit ${JSON.stringify(text)} is below 1 KiB per second`);
  return rate;
}

export const sync: Command = {
  name: 'sync',
  summary: 'Send a snapshot to a replica: only the blocks that changed since the last sync.',
  args: '<path> <destination>',
  description: [
    'Takes a new snapshot first (quiesced with --quiesce, or when the volume\'s config sets',
    'quiesce.onSync), or sends the one named with --snapshot. The destination is a local',
    'directory, [user@]host:/path or',
    'ssh://[user@]host[:port]/path through ssh (the far side runs `replfs serve --stdio`), or',
    'replfs://host:port/NAME on a `replfs serve --listen` server.',
    'The first sync to an empty destination copies everything; later ones send the change',
    'set since the snapshot the destination last confirmed, comparing blocks by BLAKE3.',
    'An interrupted sync is resumed by the next one. The replica keeps one snapshot per',
    'sync, dated with the source snapshot\'s time.',
    'A destination may also be the name of one in the volume\'s policy (docs/config.md):',
    'its URL and settings are used, options given here taking precedence.',
  ].join('\n'),
  options: {
    snapshot: { type: 'string', value: 'NAME', description: 'send this snapshot instead of taking a new one' },
    quiesce: { type: 'boolean', description: 'take the new snapshot with the quiesce hooks' },
    'dry-run': { type: 'boolean', description: 'compare and report what would be sent; change nothing (uses the newest snapshot)' },
    force: { type: 'boolean', description: 'sync a replica that was changed outside replfs: compare every file and undo those changes' },
    bwlimit: { type: 'string', value: 'RATE', description: 'send at most RATE per second: 500K, 10M (a plain number is KiB/s)' },
    compress: { type: 'boolean', description: 'compress blocks on the wire (deflate), for slow links' },
    json: { type: 'boolean', description: 'print the summary as JSON' },
    ...TRANSPORT_OPTIONS,
  },
  positionals: { min: 2, max: 2 },
  async run({ values, positionals }) {
    const [source, destination] = positionals as [string, string];
    const name = values.snapshot as string | undefined;
    if (name !== undefined) {
      checkSnapshotName(name);
      if (values.quiesce) throw new ReplfsError('usage', '--snapshot and --quiesce do not go together: --quiesce takes a new snapshot');
    }
    if (values['dry-run'] && values.quiesce) throw new ReplfsError('usage', '--dry-run and --quiesce do not go together: a dry run takes no snapshot');
    const bwlimit = typeof values.bwlimit === 'string' ? parseRate(values.bwlimit) : null;
    const res = await actWithProgress<SyncSummary>(source, 'sync', {
      destination, cwd: process.cwd(), snapshot: name ?? null, quiesce: values.quiesce === true, dryRun: values['dry-run'] === true,
      force: values.force === true, bwlimit, compress: values.compress === true ? true : null, ...transportArgs(values),
    }, values.json === true);
    if (values.json) {
      printJson(res);
    } else if (res.dryRun && res.base === res.snapshot) {
      console.log(`${destination} already has ${res.snapshot}, the newest snapshot: nothing would be sent. `
        + 'Changes made since are in no snapshot yet, and a dry run takes none (replfs snapshot, then sync --dry-run again)');
    } else if (res.dryRun) {
      console.log(`dry run of ${res.snapshot} to ${destination}${res.base ? ` (since ${res.base})` : ' (full copy)'}: ${res.filesChanged} files changed, `
        + `${formatBytes(res.bytesSent)} of blocks would be sent, ${res.blocksSkipped} blocks already there; nothing was changed`);
    } else if (res.replicaSnapshot === null) {
      console.log(`${destination} already has ${res.snapshot}; nothing to send`);
    } else {
      const how = res.kind === 'full' ? 'full copy' : res.kind === 'complete' ? `every file compared: ${res.completeReason ?? 'asked for'}` : `since ${res.base}`;
      console.log(`sent ${res.snapshot} to ${destination} (${how}${res.resumed ? ', resuming an interrupted sync' : ''}): ${res.filesChanged} files, `
        + `${formatBytes(res.bytesSent)} of blocks sent (${formatBytes(res.bytesOnWire)} on the wire), ${res.blocksSkipped} blocks already there, ${(res.durationMs / 1000).toFixed(1)} s`);
    }
    if (res.rebased && !values.json) {
      const r = res.rebased;
      console.log(`${destination} is the volume ${source} was promoted from: it started from ${r.base}, the newest snapshot both held`
        + (r.kept ? `; its own changes since are kept in its snapshot ${r.kept} (${r.reverted.files} files undone)` : '')
        + `, and is now a replica of ${source} (mount it with replfs mount --read-only)`);
    }
    return 0;
  },
};
