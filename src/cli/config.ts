// `replfs config`: shows the effective policy of a volume (every default filled in),
// checks a config file, or loads a new policy into a volume.
import fs from 'node:fs';
import path from 'node:path';
import { ReplfsError } from '../errors/index.js';
import { STATE_DIR, CONFIG_FILE } from '../volume/format.js';
import { policyToJson } from '../policy/config.js';
import { call } from '../control/client.js';
import { locate } from './locate.js';
import { checkFile, checkReplacement, loadPolicy, replacePolicy, writeAtomically } from './policy.js';
import type { ConfigDescription } from './operator.js';
import { printJson, type Command } from './command.js';

function readFile(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ReplfsError('notFound', `${file} does not exist`);
    throw new ReplfsError('refused', `cannot read ${file}: ${(err as Error).message}`);
  }
}

/** The effective policy of the volume at `p`: from its daemon when mounted, else from its files. */
async function describe(p: string, outside: string | null, load: string | null): Promise<ConfigDescription> {
  const target = await locate(p);
  if (target.kind === 'daemon') {
    if (outside !== null) throw new ReplfsError('usage', '--config checks a policy file for an unmounted volume; this one is mounted', `to check the file alone: replfs config ${outside} --check`);
    if (load !== null) return call<ConfigDescription>(target.record.socket, 'config-load', { text: readFile(load), shown: load });
    return call<ConfigDescription>(target.record.socket, 'config');
  }
  const volumeFile = path.join(target.root, STATE_DIR, CONFIG_FILE);
  if (load !== null) {
    if (outside !== null) throw new ReplfsError('usage', '--load and --config do not go together');
    const next = replacePolicy(readFile(volumeFile), readFile(load), { volume: volumeFile, load });
    await checkReplacement(next, load, target.root);
    await writeAtomically(volumeFile, next);
  }
  const loaded = await loadPolicy({ volume: { read: volumeFile, shown: volumeFile }, outside, hookCwd: target.root });
  return { source: loaded.source, outside, error: null, ignored: loaded.ignored, policy: policyToJson(loaded.policy) };
}

export const config: Command = {
  name: 'config',
  summary: 'Show a volume\'s effective policy, check a config file, or load a new policy.',
  args: '<path>',
  description: [
    'The policy (snapshot schedule, quiesce hooks, retention, destinations, alerts, the',
    'journal bound) lives in <dir>/.replfs/config.json, or in a file given to mount --config.',
    'With a volume (or a path inside it), shows the policy in effect with every default filled',
    'in; a mount daemon rereads its file within seconds of a change, and an invalid edit',
    'leaves the previous policy running. With a file, checks it alone.',
    'While a volume is mounted in place its .replfs/ is hidden: save the policy with',
    '--json, edit it, and load it with --load.',
  ].join('\n'),
  options: {
    check: { type: 'boolean', description: 'only say whether the config is valid (exit 0) or not (exit 2, naming the field)' },
    json: { type: 'boolean', description: 'print the policy as JSON, in the form --load takes' },
    config: { type: 'string', value: 'FILE', description: 'the policy file an unmounted volume would be mounted with (mount --config)' },
    load: { type: 'string', value: 'FILE', description: 'replace the volume\'s policy with the one in FILE, checked first; in effect at once when mounted' },
  },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    const p = path.resolve(positionals[0]!);
    const outside = typeof values.config === 'string' ? path.resolve(values.config) : null;
    const load = typeof values.load === 'string' ? path.resolve(values.load) : null;
    if (load !== null && values.check) throw new ReplfsError('usage', '--load and --check do not go together: --load checks the file first anyway');
    let d: ConfigDescription;
    let st: fs.Stats | null = null;
    try { st = fs.statSync(p); } catch { /* locate says why */ }
    if (st?.isFile()) {
      if (outside !== null || load !== null) throw new ReplfsError('usage', `${p} is a file: --config and --load go with a volume`);
      const loaded = await checkFile(p);
      d = { source: p, outside: null, error: null, ignored: [], policy: policyToJson(loaded.policy) };
    } else {
      d = await describe(p, outside, load);
    }
    if (values.check) {
      if (d.error) throw new ReplfsError('usage', `${d.error} (the mount goes on with the previous policy)`);
      console.log(`${d.source}: valid`);
      for (const key of d.ignored) console.log(`note: ${key} in the volume's config.json is ignored: the policy comes from ${d.source}`);
      return 0;
    }
    if (values.json) {
      printJson(d.policy);
      if (d.error) process.stderr.write(`replfs config: the file on disk is invalid, this is the policy still in effect: ${d.error}\n`);
      return 0;
    }
    if (load !== null) console.log(`loaded ${load} into ${d.source}`);
    console.log(`policy from ${d.source} (defaults filled in):`);
    if (d.error) console.log(`warning: the file on disk is invalid; the mount goes on with this policy: ${d.error}`);
    for (const key of d.ignored) console.log(`note: ${key} in the volume's config.json is ignored: the policy comes from ${d.source}`);
    console.log(JSON.stringify(d.policy, null, 2));
    return 0;
  },
};
