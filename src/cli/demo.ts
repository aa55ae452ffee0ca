import fs from 'node:fs';
import path from 'node:path';
import { Volume, STATE_DIR } from '../volume/index.js';
import { formatBytes } from '../policy/size.js';
import { Daemon } from './daemon.js';
import { prepareMount, DEFAULT_ATTR_TIMEOUT, DEFAULT_ENTRY_TIMEOUT } from './mount.js';
import { PACKAGE_ROOT } from './version.js';
import type { Command } from './command.js';

function seed(dir: string): void {
  fs.mkdirSync(path.join(dir, 'docs'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'README.txt'), 'This directory is protected by replfs.\nEdit anything here; `npx replfs journal mount/live` shows what changed.\n');
  fs.writeFileSync(path.join(dir, 'docs', 'notes.md'), '# Notes\n\n- snapshots and replication come next\n');
  const blob = Buffer.alloc(4 * 1024 * 1024);
  for (let i = 0; i < blob.length; i += 4) blob.writeUInt32LE((i * 2654435761) >>> 0, i);
  fs.writeFileSync(path.join(dir, 'data', 'blob.bin'), blob);
}

export const demo: Command = {
  name: 'demo',
  summary: 'Run the demo: a protected directory with sample files, mounted in place, until Ctrl-C.',
  args: '',
  description: 'This is what `npm start` runs. The directory is created and protected on first use.',
  options: {
    dir: { type: 'string', value: 'DIR', description: 'the demo directory (default: mount/live in the checkout)' },
  },
  positionals: { min: 0, max: 0 },
  async run({ values }) {
    const root = path.resolve(typeof values.dir === 'string' ? values.dir : path.join(PACKAGE_ROOT, 'mount', 'live'));
    const rel = path.relative(process.cwd(), root) || '.';
    const notes = fs.existsSync(path.join(root, STATE_DIR)) ? await prepareMount(root, root) : [];
    if (!fs.existsSync(path.join(root, STATE_DIR))) {
      fs.mkdirSync(root, { recursive: true });
      if (fs.readdirSync(root).length === 0) seed(root);
      const r = await Volume.init(root);
      console.log(`created the demo directory ${rel}: ${r.files} files, ${formatBytes(r.bytes)}`);
      notes.push(...(await prepareMount(root, root)));
    }
    for (const n of notes) console.log(n);
    const daemon = await Daemon.start({
      root, mountpoint: root, log: (l) => console.log(`replfs: ${l}`),
      mount: { extra: [], attrTimeout: DEFAULT_ATTR_TIMEOUT, entryTimeout: DEFAULT_ENTRY_TIMEOUT },
    });
    daemon.installSignalHandlers();
    console.log(`
${rel} is protected and mounted in place. In another terminal, try:

  echo hello >> ${rel}/README.txt
  dd if=/dev/urandom of=${rel}/data/blob.bin bs=64K count=2 seek=10 conv=notrunc
  mv ${rel}/docs/notes.md ${rel}/docs/ideas.md
  npx replfs journal ${rel}
  npx replfs status ${rel}

Press Ctrl-C to unmount.
`);
    let last = '';
    const timer = setInterval(() => {
      daemon.volume.journalReport().then((r) => {
        const line = `${r.totals.files} changed, ${formatBytes(r.totals.dirtyBytes)} dirty`;
        if (line !== last) { console.log(`journal: ${line}`); last = line; }
      }, () => undefined);
    }, 2000);
    timer.unref();
    await daemon.stopped;
    clearInterval(timer);
    return 0;
  },
};
