// `replfs serve`: the receiving end of `replfs sync`.
import path from 'node:path';
import { Duplex } from 'node:stream';
import { ReplfsError, messageOf } from '../errors/index.js';
import type { Command } from './command.js';
import { receiveOn } from './receive.js';

export const serve: Command = {
  name: 'serve',
  summary: 'Receive syncs into a replica directory (what `replfs sync` runs at the far end).',
  args: '<replica-root>',
  description: [
    'With --stdio, answers one sync on standard input and output, then exits: `replfs sync`',
    'runs it as a child for a local destination, and through ssh for a remote one. The',
    'replica root is created (or protected, if it is an empty directory) on the first sync.',
    'A directory that is neither empty nor a replica is refused.',
  ].join('\n'),
  options: {
    stdio: { type: 'boolean', description: 'serve one sync on stdin and stdout' },
  },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    if (!values.stdio) throw new ReplfsError('usage', 'say how to serve: --stdio', 'see: replfs serve --help');
    const root = path.resolve(positionals[0]!);
    // Nothing may reach stdout but protocol frames.
    console.log = console.error;
    try {
      await receiveOn(() => root, Duplex.from({ readable: process.stdin, writable: process.stdout }));
      return 0;
    } catch (err) {
      process.stderr.write(`replfs serve: ${messageOf(err)}\n`);
      return err instanceof ReplfsError ? err.exitCode : 1;
    }
  },
};
