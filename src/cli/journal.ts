import type { JournalReport } from '../volume/index.js';
import { formatBytes } from '../policy/size.js';
import { ask } from './locate.js';
import { printJson, type Command } from './command.js';

export function getJournal(p: string): Promise<JournalReport> {
  return ask(p, 'journal', (volume) => volume.journalReport());
}

export const journal: Command = {
  name: 'journal',
  summary: 'List the files changed since the journal began, with their kinds of change and dirty extents.',
  args: '[<path>]',
  description: [
    'Paths are current names (for deleted files, the last known one). Extents are byte',
    'ranges rounded to the volume block size; "unknown" files must be compared whole.',
    'Changes made while the volume was not mounted appear after the next mount.',
  ].join('\n'),
  options: {
    json: { type: 'boolean', description: 'print the journal as JSON (stable schema in docs/cli.md)' },
  },
  positionals: { min: 0, max: 1 },
  async run({ values, positionals }) {
    const report = await getJournal(positionals[0] ?? '.');
    if (values.json) {
      printJson(report);
      return 0;
    }
    console.log(`journal since ${report.since}, epoch ${report.epoch}, block size ${formatBytes(report.blockSize)}`);
    for (const f of report.files) {
      const name = f.path === '' ? '/' : f.path;
      const extents = f.extents.length === 0 ? '' : f.extents.length <= 4
        ? f.extents.map((e) => `${e.offset}+${e.length}`).join(' ')
        : `${f.extents.length} extents`;
      const unknown = f.unknown ? ` [compare whole: ${f.unknown}]` : '';
      console.log(`${f.type.padEnd(7)} ${name}  ${f.kinds.join(',')}${f.dirtyBytes ? `  ${formatBytes(f.dirtyBytes)}` : ''}${extents ? `  ${extents}` : ''}${unknown}`);
    }
    console.log(`${report.totals.files} changed, ${formatBytes(report.totals.dirtyBytes)} dirty`);
    return 0;
  },
};
