import path from 'node:path';
import { ReplfsError } from '../errors/index.js';
import { call } from '../control/client.js';
import { findRecord, isAlive, unregister } from '../control/registry.js';
import { mountState, unmountPath } from '../fuse/mountpoint.js';
import type { Command } from './command.js';

export const unmount: Command = {
  name: 'unmount',
  summary: 'Flush the journal, unmount, and wait for the daemon to exit.',
  args: '<mountpoint|dir>',
  description: [
    'Refuses while files in the mount are open, unless --lazy is given: then the mount is',
    'detached at once and the daemon exits when the last open file is closed. A stale',
    'mount left by a killed daemon is cleared.',
  ].join('\n'),
  options: {
    lazy: { type: 'boolean', short: 'l', description: 'detach even while files are open' },
    timeout: { type: 'string', value: 'SECONDS', description: 'how long to wait for the daemon to exit (default 60)' },
  },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    const target = path.resolve(positionals[0]!);
    const timeoutS = values.timeout === undefined ? 60 : Number(values.timeout);
    if (!Number.isFinite(timeoutS) || timeoutS <= 0) throw new ReplfsError('usage', `--timeout ${JSON.stringify(values.timeout)} is not a positive number of seconds`);
    const rec = await findRecord(target);
    if (rec && (rec.mountpoint === target || rec.root === target)) {
      if (rec.alive) {
        await call(rec.socket, 'unmount', { lazy: values.lazy === true }, timeoutS * 1000);
        const deadline = Date.now() + timeoutS * 1000;
        while (isAlive(rec.pid)) {
          if (Date.now() > deadline) throw new ReplfsError('timeout', `the daemon (pid ${rec.pid}) unmounted but did not exit within ${timeoutS}s`);
          await new Promise((r) => setTimeout(r, 50));
        }
        console.log(`unmounted ${rec.mountpoint}`);
        return 0;
      }
      await unregister(rec.mountpoint, rec.pid);
      if ((await mountState(rec.mountpoint)) !== 'none') {
        await unmountPath(rec.mountpoint, true);
        console.log(`cleared the stale mount at ${rec.mountpoint} (its daemon, pid ${rec.pid}, was gone)`);
        return 0;
      }
    }
    const state = await mountState(target);
    if (state === 'stale') {
      await unmountPath(target, true);
      console.log(`cleared the stale mount at ${target}`);
      return 0;
    }
    if (state === 'live') {
      throw new ReplfsError('refused', `${target} is a replfs mount without a known daemon`, `unmount it with: fusermount -u ${target}`);
    }
    throw new ReplfsError('notFound', `${target} is not a mounted replfs volume`);
  },
};
