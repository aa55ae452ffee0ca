import test from '../helpers/ava.js';
import { parseSize, formatBytes } from '../../src/policy/size.js';

test('parseSize reads binary units', (t) => {
  const cases: Array<[string, number | undefined]> = [
    ['4096', 4096], ['4K', 4096], ['4k', 4096], ['64K', 65536], ['64KiB', 65536], ['1M', 1048576], ['1MB', 1048576],
    ['1.5G', 1.5 * 2 ** 30], ['2T', 2 * 2 ** 40], ['0', 0], [' 8K ', 8192],
    ['', undefined], ['abc', undefined], ['-4K', undefined], ['4X', undefined], ['1.5', undefined], ['K', undefined],
  ];
  for (const [text, want] of cases) t.is(parseSize(text), want, JSON.stringify(text));
});

test('formatBytes', (t) => {
  t.is(formatBytes(0), '0 B');
  t.is(formatBytes(1023), '1023 B');
  t.is(formatBytes(1024), '1.00 KiB');
  t.is(formatBytes(65536), '64.0 KiB');
  t.is(formatBytes(3 * 2 ** 20), '3.00 MiB');
  t.is(formatBytes(500 * 2 ** 30), '500 GiB');
});
