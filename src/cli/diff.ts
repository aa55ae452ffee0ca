// `replfs diff`: what changed between two snapshots, or since one, from the journal.
import type { DiffReport } from '../core/types.js';
import { formatBytes } from '../policy/size.js';
import { act } from './locate.js';
import { checkSnapshotName, printJson, type Command } from './command.js';

const MARK = { added: '+', removed: '-', modified: 'M', renamed: 'R', attributes: 'A' } as const;

export const diff: Command = {
  name: 'diff',
  summary: 'Show what changed between two snapshots, or between a snapshot and the live files.',
  args: '<path> <from> [<to>|live]',
  description: [
    'Files added (+), removed (-), modified (M, with the changed byte ranges), renamed or',
    'linked under other names (R), and changed in attributes only (A). Read from the',
    'journal: no tree scan. "compare whole" marks files the journal cannot vouch for',
    '(changed while unmounted). <to> defaults to live.',
  ].join('\n'),
  options: {
    json: { type: 'boolean', description: 'print the difference as JSON (schema in docs/cli.md)' },
  },
  positionals: { min: 2, max: 3 },
  async run({ values, positionals }) {
    const [p, from, to = 'live'] = positionals as [string, string, string?];
    checkSnapshotName(from);
    if (to !== 'live') checkSnapshotName(to);
    const report = await act<DiffReport>(p, 'diff', { from, to });
    if (values.json) {
      printJson(report);
      return 0;
    }
    for (const f of report.files) {
      const where = f.status === 'removed' ? f.before.join(', ')
        : f.renamed ? `${f.before.join(', ')} -> ${f.after.join(', ')}` : f.after.join(', ');
      const ext = f.extents.length === 0 || f.status === 'added' ? '' : f.extents.length <= 4
        ? '  ' + f.extents.map((e) => `${e.offset}+${e.length}`).join(' ') : `  ${f.extents.length} extents`;
      const whole = f.unknown ? `  [compare whole: ${f.unknown}]` : '';
      console.log(`${MARK[f.status]} ${f.type.padEnd(7)} ${where || '/'}${f.type === 'dir' ? '/' : ''}${ext}${whole}`);
    }
    const t = report.totals;
    console.log(`${t.added} added, ${t.removed} removed, ${t.modified} modified (${formatBytes(t.changedBytes)}), ${t.renamed} renamed, ${t.attributes} attributes only`);
    return 0;
  },
};
