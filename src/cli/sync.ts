// `replfs sync`: send a snapshot to a replica.
import path from 'node:path';
import { ReplfsError } from '../errors/index.js';
import { formatBytes } from '../policy/size.js';
import type { SyncSummary } from '../replicate/sender.js';
import { checkSnapshotName } from './actions.js';
import { printJson, type Command } from './command.js';
import { act } from './locate.js';

export const sync: Command = {
  name: 'sync',
  summary: 'Send a snapshot to a replica: only the blocks that changed since the last sync.',
  args: '<path> <destination>',
  description: [
    'Takes a new snapshot first (quiesced with --quiesce), or sends the one named with',
    '--snapshot. The destination is a local directory, or [user@]host:/path and',
    'ssh://[user@]host[:port]/path through ssh (the far side runs `replfs serve --stdio`).',
    'The first sync to an empty destination copies everything; later ones send the change',
    'set since the snapshot the destination last confirmed, comparing blocks by BLAKE3.',
    'The replica keeps one snapshot per sync, dated with the source snapshot\'s time.',
  ].join('\n'),
  options: {
    snapshot: { type: 'string', value: 'NAME', description: 'send this snapshot instead of taking a new one' },
    quiesce: { type: 'boolean', description: 'take the new snapshot with the quiesce hooks' },
    json: { type: 'boolean', description: 'print the summary as JSON' },
    'token-file': { type: 'string', value: 'FILE', description: 'replfs:// destinations: the server\'s token, the first line of FILE' },
    'tls-ca': { type: 'string', value: 'FILE', description: 'replfs:// destinations: speak TLS, trusting the certificate(s) in FILE' },
  },
  positionals: { min: 2, max: 2 },
  async run({ values, positionals }) {
    const [source, destination] = positionals as [string, string];
    const name = values.snapshot as string | undefined;
    if (name !== undefined) {
      checkSnapshotName(name);
      if (values.quiesce) throw new ReplfsError('usage', '--snapshot and --quiesce do not go together: --quiesce takes a new snapshot');
    }
    const file = (v: unknown) => (typeof v === 'string' ? path.resolve(v) : null);
    const res = await act<SyncSummary>(source, 'sync', {
      destination, snapshot: name ?? null, quiesce: values.quiesce === true,
      tokenFile: file(values['token-file']), tlsCa: file(values['tls-ca']),
    });
    if (values.json) {
      printJson(res);
    } else if (res.replicaSnapshot === null) {
      console.log(`${destination} already has ${res.snapshot}; nothing to send`);
    } else {
      console.log(`sent ${res.snapshot} to ${destination}${res.base ? ` (since ${res.base})` : ' (full copy)'}: ${res.filesChanged} files, `
        + `${formatBytes(res.bytesSent)} of blocks sent, ${res.blocksSkipped} blocks already there, ${(res.durationMs / 1000).toFixed(1)} s`);
    }
    return 0;
  },
};
