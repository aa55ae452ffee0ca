import { ReplfsError } from '../errors/index.js';
import { Volume, DEFAULT_BLOCK_SIZE, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE } from '../volume/index.js';
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
    'block-size': { type: 'string', value: 'SIZE', description: `journal block size, a power of two from 4K to 1M (default ${DEFAULT_BLOCK_SIZE / 1024}K)` },
    strict: { type: 'boolean', description: 'make every journal write durable before the write it covers (slower; see docs/format.md)' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    let blockSize = DEFAULT_BLOCK_SIZE;
    if (typeof values['block-size'] === 'string') {
      // Checked here, before the directory is looked at: a bad command line is exit 2 whatever the directory.
      const text = JSON.stringify(values['block-size']);
      const parsed = parseSize(values['block-size']);
      if (parsed === undefined) throw new ReplfsError('usage', `--block-size ${text} is not a size (examples: 4K, 64K, 1M)`);
      if (!Number.isInteger(parsed) || parsed < MIN_BLOCK_SIZE || parsed > MAX_BLOCK_SIZE || (parsed & (parsed - 1)) !== 0) {
        throw new ReplfsError('usage', `--block-size ${text} is not a power of two from 4K to 1M`, `examples: 4K, 64K, 1M (default ${DEFAULT_BLOCK_SIZE / 1024}K)`);
      }
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
