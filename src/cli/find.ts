// `replfs find`: which snapshots hold which version of the files matching a glob.
import { ReplfsError } from '../errors/index.js';
import { Glob, GlobError } from '../policy/glob.js';
import { formatBytes } from '../policy/size.js';
import { act } from './locate.js';
import { printJson, type Command } from './command.js';
import type { FindReport } from './versions.js';

export const find: Command = {
  name: 'find',
  summary: 'Show which snapshots hold which version of the files matching a glob.',
  args: '<path> <glob>',
  description: [
    'The glob is a path relative to the top of the volume: * and ? do not match /, [abc],',
    '[a-z] and [!abc] match one character, \\ quotes; a component ** matches any number of',
    'directories. Quote it, or the shell expands it. Regular files only.',
    'Only the newest snapshot is searched, unless --all-snapshots. For each file: its',
    'versions (a content, BLAKE3, and an mtime), newest first, and the snapshots holding',
    'each. A file is read only where the journal says it changed. Nothing matching is not an',
    'error: exit 0, with a note on stderr. Works mounted (through the daemon) and unmounted.',
  ].join('\n'),
  options: {
    'all-snapshots': { type: 'boolean', description: 'search every snapshot, not only the newest' },
    json: { type: 'boolean', description: 'print the result as JSON (schema in docs/cli.md)' },
  },
  positionals: { min: 2, max: 2 },
  async run({ values, positionals }) {
    const [p, pattern] = positionals as [string, string];
    try {
      Glob.parse(pattern);
    } catch (err) {
      if (err instanceof GlobError) throw new ReplfsError('usage', err.message, 'see: replfs find --help');
      throw err;
    }
    const all = values['all-snapshots'] === true;
    const report = await act<FindReport>(p, 'find', { glob: pattern, all });
    if (values.json) {
      printJson(report);
      return 0;
    }
    if (report.files.length === 0) {
      const where = report.searched.length === 1 ? `snapshot ${report.searched[0]}` : `${report.searched.length} snapshots`;
      process.stderr.write(`replfs find: no file matches ${JSON.stringify(pattern)} in ${where}${all ? '' : ' (the newest; --all-snapshots searches every one)'}\n`);
      return 0;
    }
    const lines: string[] = [];
    for (const f of report.files) {
      if (lines.length) lines.push('');
      lines.push(`${f.path}: ${f.versions.length} version${f.versions.length === 1 ? '' : 's'}`);
      for (const v of f.versions) {
        lines.push(`  ${formatBytes(v.size).padStart(10)}  ${v.mtime}  ${v.blake3}`);
        lines.push(`      in ${runs(v.snapshots, report.searched)}`);
      }
    }
    process.stdout.write(lines.join('\n') + '\n');
    return 0;
  },
};

/** Snapshot names, with runs of three or more consecutive searched snapshots as `first .. last (n)`. */
function runs(names: string[], searched: string[]): string {
  const at = new Map(searched.map((n, i) => [n, i]));
  const out: string[] = [];
  for (let i = 0; i < names.length;) {
    let j = i;
    while (j + 1 < names.length && at.get(names[j + 1]!)! === at.get(names[j]!)! + 1) j++;
    if (j - i >= 2) out.push(`${names[i]} .. ${names[j]} (${j - i + 1} snapshots)`);
    else for (let k = i; k <= j; k++) out.push(names[k]!);
    i = j + 1;
  }
  return out.join(', ');
}
