// `npm start`: the whole of replfs in one command. A demo directory with sample files is
// protected and mounted in place at mount/live; its daemon snapshots it every few seconds
// and replicates each snapshot to mount/replica, a replica mounted read-only in place; each
// snapshot and sync is printed with its bytes; Ctrl-C unmounts both.
import fs from 'node:fs';
import path from 'node:path';
import { ReplfsError, messageOf } from '../errors/index.js';
import { Volume, STATE_DIR, CONFIG_FILE } from '../volume/index.js';
import { formatBytes } from '../policy/size.js';
import { Daemon } from './daemon.js';
import { prepareMount, DEFAULT_ATTR_TIMEOUT, DEFAULT_ENTRY_TIMEOUT, REPLICA_ATTR_TIMEOUT, REPLICA_ENTRY_TIMEOUT } from './mount.js';
import { replacePolicy, writeAtomically } from './policy.js';
import { PACKAGE_ROOT } from './version.js';
import type { Command } from './command.js';

/** The embedded default: what the demo runs. */
function demoPolicy(replica: string, every: string): Record<string, unknown> {
  return {
    snapshots: { schedule: { every }, label: 'demo' },
    retention: { 'keep-last': 20 },
    destinations: { replica: { url: replica, rpo: '1m', retention: { 'keep-last': 20 } } },
  };
}

function seed(dir: string): void {
  fs.mkdirSync(path.join(dir, 'docs'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'README.txt'), 'This directory is protected by replfs.\nEdit anything here: the next snapshot is replicated to mount/replica within seconds.\n');
  fs.writeFileSync(path.join(dir, 'docs', 'notes.md'), '# Notes\n\n- every change is journaled\n- snapshots are under .snapshots/\n');
  const blob = Buffer.alloc(4 * 1024 * 1024);
  for (let i = 0; i < blob.length; i += 4) blob.writeUInt32LE((i * 2654435761) >>> 0, i);
  fs.writeFileSync(path.join(dir, 'data', 'blob.bin'), blob);
}

/** The demo directory, created and protected on first use, with the demo's policy. */
async function liveVolume(root: string, replica: string, every: string, say: (l: string) => void): Promise<void> {
  const rel = path.relative(process.cwd(), root) || '.';
  if (!fs.existsSync(path.join(root, STATE_DIR))) {
    fs.mkdirSync(root, { recursive: true });
    if (fs.readdirSync(root).length === 0) seed(root);
    const r = await Volume.init(root);
    say(`created the demo directory ${rel}: ${r.files} files, ${formatBytes(r.bytes)}`);
  }
  const file = path.join(root, STATE_DIR, CONFIG_FILE);
  const next = replacePolicy(fs.readFileSync(file, 'utf8'), JSON.stringify(demoPolicy(replica, every)), { volume: file, load: '(the demo policy)' });
  await writeAtomically(file, next);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const demo: Command = {
  name: 'demo',
  summary: 'Run the demo: a protected directory replicated every few seconds to a read-only replica, until Ctrl-C.',
  args: '',
  description: [
    'This is what `npm start` runs. The demo directory (mount/live) is created with sample',
    'files and protected on first use, and mounted in place; its daemon takes a snapshot',
    'every few seconds and syncs each to mount/replica, which is mounted read-only in place',
    'once the first sync has made it. Every snapshot and sync is printed with its bytes.',
    'Ctrl-C unmounts both. The demo\'s policy (docs/config.md) is written into the demo',
    'directory\'s own config.json each time it starts.',
  ].join('\n'),
  options: {
    dir: { type: 'string', value: 'DIR', description: 'the demo directory (default: mount/live in the checkout)' },
    replica: { type: 'string', value: 'DIR', description: 'the replica (default: mount/replica in the checkout, or DIR/../replica with --dir)' },
    every: { type: 'string', value: 'INTERVAL', description: 'how often to snapshot and sync (default 5s)' },
  },
  positionals: { min: 0, max: 0 },
  async run({ values }) {
    const root = path.resolve(typeof values.dir === 'string' ? values.dir : path.join(PACKAGE_ROOT, 'mount', 'live'));
    const replica = path.resolve(typeof values.replica === 'string' ? values.replica : path.join(path.dirname(root), 'replica'));
    const every = typeof values.every === 'string' ? values.every : '5s';
    if (replica === root || replica.startsWith(root + '/') || root.startsWith(replica + '/')) {
      throw new ReplfsError('usage', 'the demo directory and the replica must be apart, neither inside the other');
    }
    const rel = (p: string) => path.relative(process.cwd(), p) || '.';
    const say = (l: string) => console.log(l);
    await liveVolume(root, replica, every, say);
    for (const n of await prepareMount(root, root)) say(n);
    if (fs.existsSync(path.join(replica, STATE_DIR)) || fs.existsSync(replica)) for (const n of await prepareMount(replica, replica).catch(() => [])) say(n);

    const stamp = () => new Date().toISOString().slice(11, 19);
    const logAs = (who: string) => (l: string) => console.log(`${stamp()} ${who.padEnd(7)} ${l}`);
    const live = await Daemon.start({
      root, mountpoint: root, log: logAs('live'),
      mount: { extra: [], attrTimeout: DEFAULT_ATTR_TIMEOUT, entryTimeout: DEFAULT_ENTRY_TIMEOUT },
    });
    live.installSignalHandlers();
    say(`
${rel(root)} is protected and mounted in place. A snapshot is taken every ${every} and
replicated to ${rel(replica)}, mounted read-only once the first sync has made it.
In another terminal, try:

  echo hello >> ${rel(root)}/README.txt
  dd if=/dev/urandom of=${rel(root)}/data/blob.bin bs=64K count=2 seek=10 conv=notrunc
  mv ${rel(root)}/docs/notes.md ${rel(root)}/docs/ideas.md
  ls ${rel(root)}/.snapshots ${rel(replica)}/.snapshots
  cat ${rel(replica)}/README.txt
  npx replfs status ${rel(root)}

Press Ctrl-C to unmount both.
`);
    // The replica is mounted once a first sync has made it (its database free again).
    let replicaDaemon: Daemon | null = null;
    let stopping = false;
    void live.stopped.then(() => { stopping = true; });
    const mountReplica = async () => {
      for (let tries = 0; !stopping; tries++) {
        if (fs.existsSync(path.join(replica, STATE_DIR))) {
          try {
            // Between two syncs: one running would hold the replica, and at a sync a second
            // a busy machine might never leave a gap by itself.
            replicaDaemon = await live.whileIdle(() => Daemon.start({
              root: replica, mountpoint: replica, replica: true, log: logAs('replica'),
              mount: { extra: [], attrTimeout: REPLICA_ATTR_TIMEOUT, entryTimeout: REPLICA_ENTRY_TIMEOUT },
            }));
            replicaDaemon.installSignalHandlers();
            logAs('replica')(`mounted ${rel(replica)} in place, read-only`);
            return;
          } catch (err) {
            // Busy while a sync into it holds it: tried again shortly.
            if (!(err instanceof ReplfsError && err.exit === 'busy') || tries > 600) {
              logAs('replica')(`could not be mounted: ${messageOf(err)}`);
              return;
            }
          }
        }
        await sleep(500);
      }
    };
    await Promise.all([live.stopped, mountReplica()]);
    const r = replicaDaemon as Daemon | null;
    if (r) await r.stopped;
    return 0;
  },
};
