// A sync between two volumes open in this process: the sender drives the receiver directly.
import type { Volume } from '../volume/index.js';
import type { HashPool } from './hasher.js';
import { Receiver } from './receiver.js';
import { send, type SyncSummary } from './sender.js';

export type { SyncSummary } from './sender.js';

export function syncLocal(source: Volume, replica: Volume, opts: { snapshot?: string; hashPool: HashPool }): Promise<SyncSummary> {
  return send(source, new Receiver(replica, opts.hashPool), opts);
}
