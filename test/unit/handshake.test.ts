// The receiver's answer to every kind of hello, with and without a token.
import test from '../helpers/ava.js';
import { AUTH_FAILED, PROTOCOL_VERSIONS, answerHello, makeHello, tokenMatches } from '../../src/replicate/handshake.js';

const software = '9.9.9';
const TOKEN = 's3cret-token';

const cases: Array<[string, unknown, string | undefined, { version: number } | { code: string; message?: RegExp }]> = [
  ['a hello of this build', makeHello('1.0.0'), undefined, { version: 2 }],
  ['a hello offering versions 1 to 3', { protocol: 'replfs', versions: [1, 2, 3], software: 'x' }, undefined, { version: 2 }],
  ['an older sender, speaking only version 1', { protocol: 'replfs', versions: [1], software: 'x' }, undefined, { version: 1 }],
  ['versions in any order', { protocol: 'replfs', versions: [7, 1], software: 'x' }, undefined, { version: 1 }],
  ['only a future version', { protocol: 'replfs', versions: [3], software: 'x' }, undefined, { code: 'version', message: /this side speaks 1, 2, the peer 3/ }],
  ['no versions', { protocol: 'replfs', software: 'x' }, undefined, { code: 'version', message: /the peer none/ }],
  ['versions that are not integers', { protocol: 'replfs', versions: ['1', 1.5, null] }, undefined, { code: 'version' }],
  ['another protocol', { protocol: 'rsync', versions: [1] }, undefined, { code: 'protocol', message: /does not speak the replfs protocol/ }],
  ['null', null, undefined, { code: 'protocol' }],
  ['an array', [1], undefined, { code: 'protocol' }],
  ['a string', 'hello', undefined, { code: 'protocol' }],
  ['the right token', makeHello('1.0.0', TOKEN), TOKEN, { version: 2 }],
  ['a wrong token', makeHello('1.0.0', 'guess'), TOKEN, { code: 'auth' }],
  ['the token with one more character', makeHello('1.0.0', TOKEN + 'x'), TOKEN, { code: 'auth' }],
  ['the token in another case', makeHello('1.0.0', TOKEN.toUpperCase()), TOKEN, { code: 'auth' }],
  ['no token', makeHello('1.0.0'), TOKEN, { code: 'auth' }],
  ['a token that is a number', { ...makeHello('1.0.0'), token: 42 }, TOKEN, { code: 'auth' }],
  ['an empty token', makeHello('1.0.0', ''), TOKEN, { code: 'auth' }],
  // Authentication comes first: a stranger learns nothing about versions either.
  ['no token and a future version', { protocol: 'replfs', versions: [3] }, TOKEN, { code: 'auth' }],
  ['no token and not replfs at all', 'GET / HTTP/1.1', TOKEN, { code: 'auth' }],
];

for (const [title, hello, token, expected] of cases) {
  test(`hello: ${title}${token ? ' (token required)' : ''}`, (t) => {
    const answer = answerHello(hello, { software, ...(token === undefined ? {} : { token }) });
    if ('version' in expected) {
      t.true(answer.ok);
      if (answer.ok) t.deepEqual(answer.welcome, { version: expected.version, software });
      return;
    }
    t.false(answer.ok);
    if (answer.ok) return;
    t.is(answer.error.code, expected.code);
    t.false(answer.error.transient, 'a refused hello is never worth retrying');
    if (expected.message) t.regex(answer.error.message, expected.message);
    if (expected.code === 'auth') t.deepEqual(answer.error, AUTH_FAILED, 'every authentication failure reads the same');
  });
}

test('tokenMatches: only the exact string', (t) => {
  t.true(tokenMatches(TOKEN, TOKEN));
  for (const given of [undefined, null, 0, '', 'x', TOKEN.slice(0, -1), `${TOKEN} `, Buffer.from(TOKEN)]) {
    t.false(tokenMatches(TOKEN, given), `refuses ${String(given)}`);
  }
  t.deepEqual(PROTOCOL_VERSIONS, [1, 2]);
});
