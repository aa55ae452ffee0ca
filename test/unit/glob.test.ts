// The globs of `replfs find` (src/policy/glob.ts): what each pattern matches and does not,
// the walk's pruning answers (descend or not, names to look up instead of a listing), and
// every malformed pattern refused with a message saying why.
import test from '../helpers/ava.js';
import { Glob, GlobError } from '../../src/policy/glob.js';

const TABLE: Array<[pattern: string, yes: string[], no: string[]]> = [
  ['a.txt', ['a.txt'], ['b.txt', 'a.txtx', 'dir/a.txt', 'a']],
  ['*.txt', ['a.txt', '.hidden.txt', '.txt', 'x y.txt'], ['a.txt/b', 'dir/a.txt', 'a.txt.gz']],
  ['docs/*', ['docs/a', 'docs/.b'], ['docs', 'docs/a/b', 'other/a']],
  ['docs/*/x', ['docs/a/x'], ['docs/x', 'docs/a/b/x']],
  ['?.c', ['a.c', 'é.c', '日.c'], ['ab.c', '.c', 'a/c']],
  ['[abc]*', ['a', 'bz', 'c.txt'], ['d', 'A']],
  ['[a-c][!0-9]', ['ax', 'c-'], ['a1', 'dx', 'a']],
  ['[^a]', ['b'], ['a']],
  ['[]x]', [']', 'x'], ['y']],
  ['[a-]', ['a', '-'], ['b']],
  ['\\*', ['*'], ['a', '\\a']],
  ['a\\?b', ['a?b'], ['axb']],
  ['**', ['a', 'a/b', 'a/b/c', '.x/y'], []],
  ['**/x', ['x', 'a/x', 'a/b/x'], ['a/xy', 'x/a']],
  ['a/**', ['a', 'a/b', 'a/b/c'], ['b', 'ab']],
  ['a/**/b', ['a/b', 'a/x/b', 'a/x/y/b'], ['a', 'b', 'a/x', 'a/bb']],
  ['a/**/**/b', ['a/b', 'a/x/y/b'], ['a/x']],
  ['**/*.log', ['x.log', 'var/log/y.log'], ['x.log/z', 'x.logs']],
  ['a**b', ['ab', 'axxb'], ['a/b', 'a/x/b']],
  ['line\nbreak', ['line\nbreak'], ['line']],
  ['(x)+$', ['(x)+$'], ['x', 'xx']],
];

for (const [pattern, yes, no] of TABLE) {
  test(`glob ${JSON.stringify(pattern)}`, (t) => {
    const g = Glob.parse(pattern);
    for (const p of yes) t.true(g.test(p), `${JSON.stringify(pattern)} matches ${JSON.stringify(p)}`);
    for (const p of no) t.false(g.test(p), `${JSON.stringify(pattern)} does not match ${JSON.stringify(p)}`);
  });
}

test('a walk descends only where a match is still possible, and looks literal names up', (t) => {
  const g = Glob.parse('docs/2024/*.pdf');
  const top = g.start();
  t.deepEqual(g.literals(top), ['docs']);
  const docs = g.next(top, 'docs');
  t.true(g.canDescend(docs));
  t.false(g.matches(docs));
  t.deepEqual(g.next(top, 'other'), [], 'nothing below other can match');
  t.deepEqual(g.literals(docs), ['2024']);
  const year = g.next(docs, '2024');
  t.is(g.literals(year), null, 'a wildcard needs a listing');
  const pdf = g.next(year, 'a.pdf');
  t.true(g.matches(pdf));
  t.false(g.canDescend(pdf), 'nothing below a full match');
  const star = Glob.parse('**/x');
  t.is(star.literals(star.start()), null);
  t.true(star.canDescend(star.next(star.start(), 'any')));
  const both = Glob.parse('a/**');
  const a = both.next(both.start(), 'a');
  t.true(both.matches(a) && both.canDescend(a), 'a/** matches a, and everything below it');
});

const BAD: Array<[string, RegExp]> = [
  ['', /it is empty/],
  ['/etc/passwd', /relative to the top of the volume/],
  ['a//b', /empty component/],
  ['a/', /empty component/],
  ['a/../b', /"\.\." is not a name/],
  ['./a', /"\." is not a name/],
  ['[abc', /the \[ at character 1 is not closed/],
  ['x[!', /is not closed/],
  ['a\\', /lone \\/],
  ['a\\/b', /cannot be escaped/],
  ['[z-a]', /the range z-a is backwards/],
  ['a\0b', /NUL/],
];

for (const [pattern, why] of BAD) {
  test(`bad glob ${JSON.stringify(pattern)} is refused`, (t) => {
    const err = t.throws(() => Glob.parse(pattern), { instanceOf: GlobError });
    t.regex(err!.message, /^bad glob /);
    t.regex(err!.message, why);
  });
}
