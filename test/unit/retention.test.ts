import test from '../helpers/ava.js';
import { decide, parseCount, parseDuration, PolicyError, type Dated } from '../../src/policy/retention.js';

const at = (iso: string): Dated => ({ name: iso, time: Date.parse(iso) });
const kept = (snaps: Dated[], policy: Parameters<typeof decide>[1]) =>
  decide(snaps, policy).filter((v) => v.keep).map((v) => v.name).sort();

const SNAPS = [
  '2026-11-01T10:00:00Z', '2026-11-01T10:30:00Z', '2026-11-01T11:15:00Z',
  '2026-11-02T09:00:00Z', '2026-11-08T23:59:00Z', '2026-11-09T00:01:00Z',
  '2026-10-31T23:00:00Z', '2026-09-15T12:00:00Z',
].map(at);

const cases: Array<[string, Parameters<typeof decide>[1], string[]]> = [
  ['last 2', { last: 2 }, ['2026-11-08T23:59:00Z', '2026-11-09T00:01:00Z']],
  ['hourly 3: newest of each of the 3 newest hours', { hourly: 3 }, ['2026-11-02T09:00:00Z', '2026-11-08T23:59:00Z', '2026-11-09T00:01:00Z']],
  ['daily 3', { daily: 3 }, ['2026-11-02T09:00:00Z', '2026-11-08T23:59:00Z', '2026-11-09T00:01:00Z']],
  // 2026-11-09 is a Monday: 11-08 (Sunday) and 11-09 fall in different weeks.
  ['weekly 2', { weekly: 2 }, ['2026-11-08T23:59:00Z', '2026-11-09T00:01:00Z']],
  ['weekly 3 reaches the week of 10-26', { weekly: 3 }, ['2026-11-01T11:15:00Z', '2026-11-08T23:59:00Z', '2026-11-09T00:01:00Z']],
  ['monthly 3', { monthly: 3 }, ['2026-09-15T12:00:00Z', '2026-10-31T23:00:00Z', '2026-11-09T00:01:00Z']],
  ['within 1 day of the newest', { withinMs: parseDuration('1d') }, ['2026-11-08T23:59:00Z', '2026-11-09T00:01:00Z']],
  ['rules add up', { last: 1, monthly: 2 }, ['2026-10-31T23:00:00Z', '2026-11-09T00:01:00Z']],
  ['more than there are keeps all', { last: 100 }, SNAPS.map((s) => s.name).sort()],
];

for (const [title, policy, expected] of cases) {
  test(`retention: ${title}`, (t) => {
    t.deepEqual(kept(SNAPS, policy), [...expected].sort());
  });
}

test('retention: reasons name every rule that keeps a snapshot', (t) => {
  const v = decide(SNAPS, { last: 1, daily: 1 }).find((x) => x.name === '2026-11-09T00:01:00Z')!;
  t.deepEqual(v.reasons, ['last', 'daily']);
});

test('retention: no rule at all is refused rather than deleting everything', (t) => {
  t.throws(() => decide(SNAPS, {}), { instanceOf: PolicyError });
});

test('retention: empty input keeps nothing and fails nothing', (t) => {
  t.deepEqual(decide([], { last: 3 }), []);
});

const durations: Array<[string, number | null]> = [
  ['12h', 12 * 3_600_000], ['7d', 7 * 86_400_000], ['2w', 14 * 86_400_000], ['1m', 30 * 86_400_000],
  ['1y2m', 425 * 86_400_000], ['1d12h', 36 * 3_600_000],
  ['', null], ['5x', null], ['0d', null], ['-1d', null], ['d', null], ['1.5d', null], ['1h1d', null],
];
for (const [text, ms] of durations) {
  test(`duration ${JSON.stringify(text)}`, (t) => {
    if (ms === null) t.throws(() => parseDuration(text), { instanceOf: PolicyError });
    else t.is(parseDuration(text), ms);
  });
}

const counts: Array<[string, number | null]> = [['1', 1], ['30', 30], ['0', null], ['-1', null], ['abc', null], ['2.5', null], ['', null], ['99999999999999999999', null]];
for (const [text, n] of counts) {
  test(`count ${JSON.stringify(text)}`, (t) => {
    if (n === null) t.throws(() => parseCount('keep-last', text), { instanceOf: PolicyError });
    else t.is(parseCount('keep-last', text), n);
  });
}
