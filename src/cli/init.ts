import { ReplfsError } from '../errors/index.js';
import { Volume, DEFAULT_BLOCK_SIZE } from '../volume/index.js';
import { parseSize, formatBytes } from '../policy/size.js';
import { printJson, type Command } from './command.js';

export const init: Command = {
  name: 'init',
  summary: 'Make a directory protected: record its files and start its change journal.',
  args: '<dir>',
  description: [
    'The state lives in <dir>/.replfs/. The directory must not already be protected, must not',
    'be inside a protected directory, and must not contain other mount points.',
  ].join('\n'),
  options: {
    'block-size': { type: 'string', value: 'SIZE', description: `journal block size, a power of two from 4K to 1M (default ${formatBytes(DEFAULT_BLOCK_SIZE)})` },
    strict: { type: 'boolean', description: 'make every journal write durable before the write it covers (slower; see docs/format.md)' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    let blockSize = DEFAULT_BLOCK_SIZE;
    if (typeof values['block-size'] === 'string') {
      const parsed = parseSize(values['block-size']);
      if (parsed === undefined) throw new ReplfsError('usage', `init: --block-size ${JSON.stringify(values['block-size'])} is not a size (examples: 4K, 64K, 1M)`);
      blockSize = parsed;
    }
    const result = await Volume.init(positionals[0]!, { blockSize, durability: values.strict ? 'strict' : 'default' });
    if (values.json) printJson(result);
    else {
      console.log(`protected ${result.root}`);
      console.log(`  ${result.files} files and ${result.dirs} directories (${formatBytes(result.bytes)}), block size ${formatBytes(result.blockSize)}`);
      console.log(`  next: replfs mount ${result.root}`);
    }
    return 0;
  },
};
