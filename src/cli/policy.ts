// Where a volume's policy comes from and how it is read: the volume's own
// .replfs/config.json, or a file given with --config (then the volume's file still holds
// the volume's own keys). A mount daemon keeps the last valid policy and rereads the file
// when it changes; a bad edit is logged and changes nothing.
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ReplfsError, messageOf } from '../errors/index.js';
import { ConfigError, ENGINE_KEYS, checkCommands, parsePolicyText, parsePolicy, type Policy } from '../policy/config.js';
import { commandProblem } from '../policy/hooks.js';
import { parseDestination } from '../replicate/destination.js';

export interface PolicyFiles {
  /** The volume's config.json: where to read it, and its name for people. */
  volume: { read: string; shown: string };
  /** A policy file given with --config, if any (an absolute path). */
  outside: string | null;
  /** Where hooks run: their relative paths are taken from here. */
  hookCwd: string | null;
}

export interface LoadedPolicy {
  policy: Policy;
  /** The file the policy came from, as people know it. */
  source: string;
  /** Policy keys of the volume's file that an outside file overrides (they are ignored). */
  ignored: string[];
}

export function probeUrl(url: string): string | null {
  try {
    // The daemon runs the policy, in a directory of its own: a relative path would name a
    // different place than the one the author had in mind.
    if (parseDestination(url).kind === 'local' && !path.isAbsolute(url)) return `${JSON.stringify(url)} is a relative path: a destination in a policy is written absolute`;
    return null;
  } catch (err) {
    return messageOf(err);
  }
}

async function readText(file: string, shown: string): Promise<string> {
  try {
    return await fsp.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ReplfsError('notFound', `${shown} does not exist`);
    if (code === 'EACCES' || code === 'EPERM') throw new ReplfsError('permission', `cannot read ${shown}: permission denied`);
    throw new ReplfsError('refused', `cannot read ${shown}: ${messageOf(err)}`);
  }
}

/** A ConfigError as the user sees it: the file, then the field. */
function configError(shown: string, err: unknown): unknown {
  if (err instanceof ConfigError) return new ReplfsError('usage', `${shown}: ${err.message}`, 'see docs/config.md for every key');
  return err;
}

/**
 * Reads and validates the effective policy: shape, then (when `probe`) that the hook
 * commands exist and can run. Throws ReplfsError `usage` naming the file and the field.
 */
export async function loadPolicy(files: PolicyFiles, probe = true): Promise<LoadedPolicy> {
  const volumeText = await readText(files.volume.read, files.volume.shown);
  let policy: Policy;
  let source = files.volume.shown;
  const ignored: string[] = [];
  try {
    const own = parsePolicyText(volumeText, { origin: 'volume', probeUrl });
    policy = own;
    if (files.outside !== null) {
      source = files.outside;
      const outsideText = await readText(files.outside, files.outside);
      try {
        policy = { ...parsePolicyText(outsideText, { origin: 'outside', probeUrl }), journal: own.journal };
      } catch (err) {
        throw configError(files.outside, err);
      }
      const raw = JSON.parse(volumeText) as Record<string, unknown>;
      for (const key of Object.keys(raw)) if (!(ENGINE_KEYS as readonly string[]).includes(key)) ignored.push(key);
    }
  } catch (err) {
    throw configError(files.volume.shown, err);
  }
  if (probe) {
    try {
      await checkCommands(policy, (cmd) => commandProblem(cmd, files.hookCwd));
    } catch (err) {
      throw configError(source, err);
    }
  }
  return { policy, source, ignored };
}

/**
 * Checks one file on its own (`replfs config FILE --check`): a volume's config.json when
 * it holds the volume's own keys, else a policy file.
 */
export async function checkFile(file: string): Promise<LoadedPolicy> {
  const text = await readText(file, file);
  let origin: 'volume' | 'outside' = 'outside';
  try {
    const raw = JSON.parse(text) as unknown;
    if (raw && typeof raw === 'object' && 'formatVersion' in raw) origin = 'volume';
  } catch { /* parsePolicyText says where */ }
  try {
    const policy = parsePolicyText(text, { origin, probeUrl });
    // A file on its own says nothing of where hooks will run: relative paths go unchecked.
    await checkCommands(policy, (cmd) => commandProblem(cmd, null));
    return { policy, source: file, ignored: [] };
  } catch (err) {
    throw configError(file, err);
  }
}

/**
 * The text of the volume's config.json with its policy (and journal bound) replaced by the
 * one in `loadText` (`replfs config --load`): the volume's identity keys stay as they are.
 */
export function replacePolicy(volumeText: string, loadText: string, shown: { volume: string; load: string }): string {
  let loadRaw: Record<string, unknown>;
  try {
    parsePolicyText(loadText, { origin: 'load', probeUrl });
    loadRaw = JSON.parse(loadText) as Record<string, unknown>;
  } catch (err) {
    throw configError(shown.load, err);
  }
  let volumeRaw: Record<string, unknown>;
  try {
    volumeRaw = JSON.parse(volumeText) as Record<string, unknown>;
  } catch (err) {
    throw new ReplfsError('damaged', `${shown.volume} is not valid JSON: ${messageOf(err)}`);
  }
  const out: Record<string, unknown> = {};
  for (const key of ENGINE_KEYS) if (key !== 'journal' && volumeRaw[key] !== undefined) out[key] = volumeRaw[key];
  // The journal's durability and flush interval stay unless the file sets them.
  const journal = { ...(volumeRaw.journal as Record<string, unknown> | undefined), ...(loadRaw.journal as Record<string, unknown> | undefined) };
  Object.assign(out, { journal }, Object.fromEntries(Object.entries(loadRaw).filter(([k]) => k !== 'journal')));
  try {
    parsePolicy(out, { origin: 'volume', probeUrl });
  } catch (err) {
    throw configError(shown.volume, err);
  }
  return JSON.stringify(out, null, 2) + '\n';
}

/** Checks the hook commands of a config.json text `replacePolicy` made, before it is written. */
export async function checkReplacement(next: string, shown: string, hookCwd: string | null): Promise<void> {
  try {
    await checkCommands(parsePolicy(JSON.parse(next), { origin: 'volume', probeUrl }), (cmd) => commandProblem(cmd, hookCwd));
  } catch (err) {
    throw configError(shown, err);
  }
}

/** Writes a file by renaming a complete copy over it, so a reader never sees half of it. */
export async function writeAtomically(file: string, text: string): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  const h = await fsp.open(tmp, 'w', 0o644);
  try {
    await h.writeFile(text);
    await h.sync();
  } finally {
    await h.close();
  }
  await fsp.rename(tmp, file);
}

/** The identity of a file's current contents, cheap to poll: changes when it is rewritten. */
export async function stamp(file: string): Promise<string> {
  const st = await fsp.stat(file).catch(() => null);
  return st ? `${st.ino}:${st.size}:${st.mtimeMs}` : 'missing';
}
