import type { VolumeStatus } from '../volume/index.js';
import { formatBytes } from '../policy/size.js';
import { ask } from './locate.js';
import { printJson, type Command } from './command.js';

export function getStatus(p: string): Promise<VolumeStatus> {
  return ask(p, 'status', (volume) => volume.status({ mountpoint: null, pid: null }));
}

export const status: Command = {
  name: 'status',
  summary: 'Show a volume: mount state, epoch, journal size, dirty files and bytes.',
  args: '[<path>]',
  description: 'The path may be the protected directory, its mountpoint, or anything inside them (default: the current directory).',
  options: {
    json: { type: 'boolean', description: 'print the status as JSON (schema in docs/cli.md)' },
  },
  positionals: { min: 0, max: 1 },
  async run({ values, positionals }) {
    const s = await getStatus(positionals[0] ?? '.');
    if (values.json) {
      printJson(s);
      return 0;
    }
    const rows: Array<[string, string]> = [
      ['volume', `${s.root}  (id ${s.volumeId}, format ${s.formatVersion}, block size ${formatBytes(s.blockSize)})`],
      ['mount', s.mounted ? `${s.mountpoint === s.root ? 'mounted in place' : `mounted at ${s.mountpoint}`} (daemon pid ${s.pid})` : 'not mounted'],
      ['epoch', String(s.epoch)],
      ['journal', `${s.journal.entries} entries, ${formatBytes(s.journal.bytes)} on disk, durability ${s.durability}`],
      ['changed', `${s.journal.dirtyFiles} files, ${formatBytes(s.journal.dirtyBytes)} dirty`],
      ['files', String(s.files)],
    ];
    if (!s.lastCleanShutdown && !s.mounted) rows.push(['warning', 'the last daemon did not shut down cleanly; recovery runs at the next mount']);
    for (const [k, v] of rows) console.log(`${k.padEnd(9)}${v}`);
    return 0;
  },
};
