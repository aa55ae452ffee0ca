// Destination arguments of `replfs sync`, good and bad.
import test from '../helpers/ava.js';
import { parseDestination } from '../../src/replicate/destination.js';

const good: Array<[string, ReturnType<typeof parseDestination>]> = [
  ['/srv/replica', { kind: 'local', path: '/srv/replica' }],
  ['replica', { kind: 'local', path: 'replica' }],
  ['./a:b', { kind: 'local', path: './a:b' }],
  ['dir/with:colon', { kind: 'local', path: 'dir/with:colon' }],
  ['backup:/srv/r', { kind: 'ssh', user: null, host: 'backup', port: null, path: '/srv/r' }],
  ['root@10.0.0.2:/srv/r', { kind: 'ssh', user: 'root', host: '10.0.0.2', port: null, path: '/srv/r' }],
  ['host:relative/dir', { kind: 'ssh', user: null, host: 'host', port: null, path: 'relative/dir' }],
  ['ssh://host/srv/r', { kind: 'ssh', user: null, host: 'host', port: null, path: '/srv/r' }],
  ['ssh://me@host:2222/srv/r', { kind: 'ssh', user: 'me', host: 'host', port: 2222, path: '/srv/r' }],
  ['replfs://127.0.0.1:7007/main', { kind: 'tcp', host: '127.0.0.1', port: 7007, name: 'main' }],
];
for (const [arg, expected] of good) test(`destination ${arg}`, (t) => t.deepEqual(parseDestination(arg), expected));

const bad: Array<[string, RegExp]> = [
  ['', /empty/],
  ['a\0b', /NUL/],
  ['host:', /no path/],
  ['-oProxyCommand=x:/p', /not a host name/],
  ['-l@host:/p', /not a user name/],
  ['ssh://host:0/p', /port "0"/],
  ['ssh://host:70000/p', /port "70000"/],
  ['ssh://host:abc/p', /port "abc"/],
  ['ssh://host', /expected ssh:/],
  ['replfs://host/name', /expected replfs:/],
  ['replfs://host:7007/../x', /the name/],
  ['replfs://host:7007/', /the name/],
  ['http://host/x', /unknown scheme/],
];
for (const [arg, message] of bad) {
  test(`destination refused: ${JSON.stringify(arg)}`, (t) => {
    const err = t.throws(() => parseDestination(arg), { message });
    t.is((err as { exit?: string } | undefined)?.exit, 'usage');
  });
}
