// `replfs snapshot`, `replfs snapshot delete`, `replfs snapshots`.
import { ReplfsError } from '../errors/index.js';
import { formatBytes } from '../policy/size.js';
import { act } from './locate.js';
import type { SnapshotListing, SnapshotResult } from './actions.js';
import { checkSnapshotName, printJson, type Command } from './command.js';
import type { GcReport } from '../volume/index.js';

export const snapshot: Command = {
  name: 'snapshot',
  summary: 'Take a snapshot of a volume (or delete one: `replfs snapshot delete <path> <name>`).',
  args: '<path> | delete <path> <name>',
  description: [
    'Prints the new snapshot\'s name. The snapshot is browsable at <mount>/.snapshots/<name>/.',
    'With --quiesce, the pre-hook of .replfs/config.json runs first (writes still flowing),',
    'then new writes are held while the cut is made, then the post-hook runs. The snapshot is',
    '"app"-consistent when the pre-hook succeeded, "crash"-consistent otherwise.',
    'Works mounted (through the daemon) and unmounted (directly).',
  ].join('\n'),
  options: {
    quiesce: { type: 'boolean', description: 'run the quiesce hooks around the cut (see docs/cli.md)' },
    label: { type: 'string', value: 'TEXT', description: 'a free-form label stored with the snapshot' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  positionals: { min: 1, max: 3 },
  async run({ values, positionals }) {
    if (positionals[0] === 'delete') return deleteSnapshot(positionals.slice(1), values.json === true);
    if (positionals.length > 1) {
      throw new ReplfsError('usage', `unexpected argument ${JSON.stringify(positionals[1])}`, 'see: replfs snapshot --help');
    }
    const label = values.label as string | undefined;
    if (label !== undefined && (label.length > 1024 || label.includes('\0'))) {
      throw new ReplfsError('usage', 'a label is at most 1024 characters, without NUL');
    }
    const res = await act<SnapshotResult>(positionals[0]!, 'snapshot', { quiesce: values.quiesce === true, label: label ?? null });
    for (const [phase, h] of Object.entries(res.hooks)) {
      if (h && h.status !== 'ok') process.stderr.write(`replfs snapshot: warning: the ${phase}-hook ${h.status === 'timeout' ? 'timed out' : `failed (exit ${h.exitCode ?? h.signal})`}${h.stderr ? `: ${h.stderr.split('\n').at(-1)}` : ''}\n`);
    }
    if (values.json) printJson(res);
    else console.log(res.snapshot.name);
    return 0;
  },
};

async function deleteSnapshot(args: string[], json: boolean): Promise<number> {
  if (args.length !== 2) throw new ReplfsError('usage', 'usage: replfs snapshot delete <path> <name>', 'see: replfs snapshot --help');
  checkSnapshotName(args[1]!);
  const res = await act<{ deleted: string; gc: GcReport }>(args[0]!, 'snapshot-delete', { name: args[1] });
  if (json) printJson(res);
  else console.log(`deleted ${res.deleted}; freed ${formatBytes(res.gc.bytesFreed)}`);
  return 0;
}

export const snapshots: Command = {
  name: 'snapshots',
  summary: 'List the snapshots of a volume: name, source time, label, consistency, space it alone holds.',
  args: '[<path>]',
  description: 'Oldest first. "holds" is what deleting that snapshot alone would free.',
  options: {
    json: { type: 'boolean', description: 'print the list as JSON (schema in docs/cli.md)' },
  },
  positionals: { min: 0, max: 1 },
  async run({ values, positionals }) {
    const res = await act<SnapshotListing>(positionals[0] ?? '.', 'snapshots', {});
    if (values.json) {
      printJson(res);
      return 0;
    }
    if (res.snapshots.length === 0) {
      console.log('no snapshots');
      return 0;
    }
    const rows = res.snapshots.map((s) => [s.name, s.sourceTime, s.consistency, formatBytes(s.uniqueBytes), s.label ?? '']);
    const head = ['NAME', 'SOURCE TIME', 'CONSISTENCY', 'HOLDS', 'LABEL'];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    for (const r of [head, ...rows]) console.log(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd());
    return 0;
  },
};
