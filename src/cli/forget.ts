// `replfs forget`: a destination given up for good stops pinning its base on the source.
import { act } from './locate.js';
import type { ForgetResult } from './actions.js';
import { printJson, type Command } from './command.js';

export const forget: Command = {
  name: 'forget',
  summary: 'Forget a destination given up for good: its base is no longer kept on the source.',
  args: '<path> <destination>',
  description: [
    'The source keeps the snapshot each destination last confirmed (and one being sent to',
    'it), whatever prune\'s rules say, so that the next sync starts from it. A destination',
    'that will never sync again keeps that snapshot forever; forget it, and prune (or',
    'snapshot delete) can then remove it. The destination is named as sync was given it,',
    'by its name in the policy, or by its replica id (status --json shows them). A',
    'destination forgotten and synced to again starts from a snapshot both sides still',
    'hold, or, with none left, from a compare of every file: only what it lacks is sent.',
  ].join('\n'),
  options: {
    json: { type: 'boolean', description: 'print what was forgotten as JSON' },
  },
  positionals: { min: 2, max: 2 },
  async run({ values, positionals }) {
    const res = await act<ForgetResult>(positionals[0]!, 'forget', { destination: positionals[1]!, cwd: process.cwd() });
    if (values.json) {
      printJson(res);
      return 0;
    }
    for (const r of res.replicas) console.log(`forgot ${res.destination} (replica ${r.replicaId}); its base ${r.base} is no longer kept for it`);
    return 0;
  },
};
