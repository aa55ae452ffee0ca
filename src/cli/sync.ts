// `replfs sync` (send a snapshot to a replica) and `replfs serve` (the receiving end).
import fs from 'node:fs';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { ReplfsError, messageOf } from '../errors/index.js';
import { formatBytes } from '../policy/size.js';
import { Connection } from '../replicate/connection.js';
import { HashPool } from '../replicate/hasher.js';
import { Receiver } from '../replicate/receiver.js';
import type { SyncSummary } from '../replicate/sender.js';
import { serveReceiver } from '../replicate/wire.js';
import { STATE_DIR, Volume } from '../volume/index.js';
import { checkSnapshotName } from './actions.js';
import { printJson, type Command } from './command.js';
import { act } from './locate.js';
import { VERSION } from './version.js';

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
  },
  positionals: { min: 2, max: 2 },
  async run({ values, positionals }) {
    const [source, destination] = positionals as [string, string];
    const name = values.snapshot as string | undefined;
    if (name !== undefined) {
      checkSnapshotName(name);
      if (values.quiesce) throw new ReplfsError('usage', '--snapshot and --quiesce do not go together: --quiesce takes a new snapshot');
    }
    const res = await act<SyncSummary>(source, 'sync', { destination, snapshot: name ?? null, quiesce: values.quiesce === true });
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

export const serve: Command = {
  name: 'serve',
  summary: 'Receive syncs into a replica directory (what `replfs sync` runs at the far end).',
  args: '<replica-root>',
  description: [
    'With --stdio, answers one sync on standard input and output, then exits: `replfs sync`',
    'runs it as a child for a local destination, and through ssh for a remote one. The',
    'replica root is created (or protected, if it is an empty directory) on the first sync.',
    'A directory that is neither empty nor a replica is refused.',
  ].join('\n'),
  options: {
    stdio: { type: 'boolean', description: 'serve one sync on stdin and stdout' },
  },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    if (!values.stdio) throw new ReplfsError('usage', 'say how to serve: --stdio', 'see: replfs serve --help');
    const root = path.resolve(positionals[0]!);
    // Nothing may reach stdout but protocol frames.
    console.log = console.error;
    const pool = new HashPool();
    const conn = new Connection(Duplex.from({ readable: process.stdin, writable: process.stdout }));
    let replica: Volume | null = null;
    try {
      // The replica is opened once the sender has said hello, so that a refusal reaches it
      // as a protocol error (permanent) rather than as a broken connection.
      await serveReceiver(conn, async () => new Receiver(replica = await openReplica(root), pool), { software: VERSION });
      return 0;
    } catch (err) {
      process.stderr.write(`replfs serve: ${messageOf(err)}\n`);
      return err instanceof ReplfsError ? err.exitCode : 1;
    } finally {
      await pool.close();
      await (replica as Volume | null)?.close();
    }
  },
};

/** The replica volume at `root`, made on first use in a new or empty directory. */
async function openReplica(root: string): Promise<Volume> {
  let entries: string[];
  try {
    entries = fs.readdirSync(root);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    if (!fs.existsSync(path.dirname(root))) throw new ReplfsError('notFound', `${path.dirname(root)} does not exist`);
    fs.mkdirSync(root, { mode: 0o755 });
    entries = [];
  }
  if (!entries.includes(STATE_DIR)) {
    if (entries.length > 0) throw new ReplfsError('refused', `${root} is neither empty nor a replica`, 'sync into a new or empty directory');
    await Volume.init(root, {});
  }
  return (await Volume.open(root, { writable: true })).volume;
}
