// `replfs prune`: retention by keep-last/hourly/daily/weekly/monthly/within.
import { ReplfsError } from '../errors/index.js';
import { formatBytes } from '../policy/size.js';
import { parseCount, parseDuration, PolicyError, type KeepPolicy } from '../policy/retention.js';
import { act } from './locate.js';
import type { PruneResult } from './actions.js';
import { printJson, type Command } from './command.js';

const COUNTS = { 'keep-last': 'last', 'keep-hourly': 'hourly', 'keep-daily': 'daily', 'keep-weekly': 'weekly', 'keep-monthly': 'monthly' } as const;

export function policyFrom(values: Record<string, unknown>): KeepPolicy {
  const policy: KeepPolicy = {};
  try {
    for (const [option, key] of Object.entries(COUNTS)) {
      const v = values[option];
      if (typeof v === 'string') policy[key] = parseCount(option, v);
    }
    if (typeof values['keep-within'] === 'string') policy.withinMs = parseDuration(values['keep-within']);
  } catch (err) {
    if (err instanceof PolicyError) throw new ReplfsError('usage', err.message, 'see: replfs prune --help');
    throw err;
  }
  if (Object.keys(policy).length === 0) {
    throw new ReplfsError('usage', 'say what to keep: at least one --keep-* option', 'for example: replfs prune <path> --keep-last 10 --keep-daily 7');
  }
  return policy;
}

export const prune: Command = {
  name: 'prune',
  summary: 'Delete the snapshots no --keep-* rule keeps, then free the space only they held.',
  args: '<path>',
  description: [
    'A snapshot is kept when any rule keeps it (restic semantics): --keep-last N the N newest;',
    '--keep-hourly/daily/weekly/monthly N the newest snapshot of each of the N newest hours,',
    'days, weeks (Monday to Sunday) or months that have one (UTC); --keep-within D every',
    'snapshot within D of the newest one (D like 12h, 7d, 2w, 1m, 1y2m).',
    'Garbage collection never touches data a remaining snapshot needs.',
  ].join('\n'),
  options: {
    'keep-last': { type: 'string', value: 'N', description: 'keep the N newest snapshots' },
    'keep-hourly': { type: 'string', value: 'N', description: 'keep the newest snapshot of each of the N newest hours' },
    'keep-daily': { type: 'string', value: 'N', description: 'keep the newest snapshot of each of the N newest days' },
    'keep-weekly': { type: 'string', value: 'N', description: 'keep the newest snapshot of each of the N newest weeks' },
    'keep-monthly': { type: 'string', value: 'N', description: 'keep the newest snapshot of each of the N newest months' },
    'keep-within': { type: 'string', value: 'DURATION', description: 'keep every snapshot within DURATION of the newest' },
    'dry-run': { type: 'boolean', description: 'only say what would be deleted' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    const policy = policyFrom(values);
    const res = await act<PruneResult>(positionals[0]!, 'prune', { policy, dryRun: values['dry-run'] === true });
    if (values.json) {
      printJson(res);
      return 0;
    }
    for (const k of res.kept) console.log(`keep    ${k.name}  (${k.reasons.join(', ')})`);
    for (const r of res.removed) console.log(`${res.dryRun ? 'would delete' : 'delete '} ${r}`);
    if (res.gc) console.log(`${res.removed.length} deleted, ${res.kept.length} kept; freed ${formatBytes(res.gc.bytesFreed)}`);
    else console.log(`dry run: ${res.removed.length} would be deleted, ${res.kept.length} kept`);
    return 0;
  },
};
