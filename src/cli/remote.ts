// What `replfs sync` and `replfs verify` share: the options that reach a replfs://
// destination, and running an action with a progress line on a terminal.
import path from 'node:path';
import type { SyncProgress } from '../replicate/sender.js';
import type { OptionDef } from './command.js';
import { act } from './locate.js';
import { progressLine } from './progress.js';

export const TRANSPORT_OPTIONS: Record<string, OptionDef> = {
  'token-file': { type: 'string', value: 'FILE', description: 'replfs:// destinations: the server\'s token, the first line of FILE' },
  'tls-ca': { type: 'string', value: 'FILE', description: 'replfs:// destinations: speak TLS, trusting the certificate(s) in FILE' },
};

/**
 * The transport options as absolute paths, REPLFS_TOKEN_FILE read here (a daemon running the
 * action has its own environment).
 */
export function transportArgs(values: Record<string, unknown>): { tokenFile: string | null; tlsCa: string | null } {
  const file = (v: unknown) => (typeof v === 'string' && v !== '' ? path.resolve(v) : null);
  return { tokenFile: file(values['token-file'] ?? process.env.REPLFS_TOKEN_FILE), tlsCa: file(values['tls-ca']) };
}

/** Runs `cmd` on the volume at `source`, drawing its progress on a terminal unless `quiet`. */
export async function actWithProgress<T>(source: string, cmd: string, args: Record<string, unknown>, quiet: boolean): Promise<T> {
  const bar = quiet ? null : progressLine();
  try {
    return await act<T>(source, cmd, args, { progress: bar ? (p: SyncProgress) => bar.update(p) : undefined });
  } finally {
    bar?.done();
  }
}
