// Which conditions raise which alerts, at which severity, and how alerts come and go.
import test from '../helpers/ava.js';
import { evaluate, transition, worst, type ActiveAlert, type DestinationFacts, type VolumeFacts } from '../../src/policy/alerts.js';
import { ALERT_DEFAULTS, type AlertPolicy } from '../../src/policy/config.js';

const NOW = Date.UTC(2026, 5, 1, 12, 0, 0);
const M = 60_000;
const H = 60 * M;
const GiB = 1024 ** 3;

function dest(over: Partial<DestinationFacts> = {}): DestinationFacts {
  return {
    name: 'offsite', url: 'h:/r', rpoMs: H, confirmedSourceTime: NOW - 10 * M, watchedSince: NOW - 100 * H,
    failingSince: null, lastError: null, space: { free: 500 * GiB, total: 1000 * GiB }, ...over,
  };
}

function facts(over: Partial<VolumeFacts> = {}, d: DestinationFacts[] = [dest()]): VolumeFacts {
  return {
    now: NOW, mounted: true, scheduled: true, journal: { overflowed: false, inconsistent: null }, configError: null, snapshotError: null,
    destinations: d, ...over,
  };
}

const P: AlertPolicy = { ...ALERT_DEFAULTS };

// [what, facts, policy, expected alerts as "severity kind destination"]
const CASES: Array<[string, VolumeFacts, AlertPolicy, string[]]> = [
  ['all well', facts(), P, []],
  ['lag just under the RPO', facts({}, [dest({ confirmedSourceTime: NOW - H + 1000 })]), P, []],
  ['lag over the RPO', facts({}, [dest({ confirmedSourceTime: NOW - H - 1000 })]), P, ['warning rpo offsite']],
  ['lag over twice the RPO', facts({}, [dest({ confirmedSourceTime: NOW - 2 * H - 1000 })]), P, ['critical rpo offsite']],
  ['never synced, watched for less than the RPO', facts({}, [dest({ confirmedSourceTime: null, watchedSince: NOW - 30 * M })]), P, []],
  ['never synced, watched for longer', facts({}, [dest({ confirmedSourceTime: null, watchedSince: NOW - 90 * M })]), P, ['warning rpo offsite']],
  ['no RPO: no lag alert however old', facts({}, [dest({ rpoMs: null, confirmedSourceTime: NOW - 1000 * H })]), P, []],
  ['failing with transient errors, not for long', facts({}, [dest({ failingSince: NOW - 5 * M, lastError: { message: 'refused', transient: true } })]), P, []],
  ['unreachable past the threshold', facts({}, [dest({ failingSince: NOW - 16 * M, lastError: { message: 'connection refused', transient: true } })]), P, ['critical unreachable offsite']],
  ['the threshold is the policy\'s', facts({}, [dest({ failingSince: NOW - 16 * M, lastError: { message: 'x', transient: true } })]), { ...P, unreachableAfterMs: H }, []],
  ['a permanent error at once', facts({}, [dest({ failingSince: NOW - 1000, lastError: { message: 'the replica diverged', transient: false } })]), P, ['critical sync-failed offsite']],
  ['low on space (percent)', facts({}, [dest({ space: { free: 40 * GiB, total: 1000 * GiB } })]), P, ['warning space offsite']],
  ['enough space (percent)', facts({}, [dest({ space: { free: 60 * GiB, total: 1000 * GiB } })]), P, []],
  ['low on space (bytes)', facts({}, [dest({ space: { free: 9 * GiB, total: 1000 * GiB } })]), { ...P, minFree: { bytes: 10 * GiB } }, ['warning space offsite']],
  ['space unknown', facts({}, [dest({ space: null })]), P, []],
  ['journal overflowed', facts({ journal: { overflowed: true, inconsistent: null } }), P, ['warning journal -']],
  ['journal inconsistent (wins over overflow)', facts({ journal: { overflowed: true, inconsistent: 'a header is unreadable' } }), P, ['critical journal -']],
  ['config invalid', facts({ configError: 'x: bad' }), P, ['warning config -']],
  ['snapshots failing', facts({ snapshotError: 'the pre-hook failed' }), P, ['critical snapshot-failed -']],
  ['not mounted with a schedule', facts({ mounted: false }), P, ['warning not-mounted -']],
  ['not mounted, nothing scheduled', facts({ mounted: false, scheduled: false }, []), P, []],
  ['two destinations, each its own', facts({}, [dest({ name: 'a', confirmedSourceTime: NOW - 3 * H }), dest({ name: 'b', space: { free: 1, total: 100 } })]), P, ['critical rpo a', 'warning space b']],
];

for (const [what, f, p, expected] of CASES) {
  test(`evaluate: ${what}`, (t) => {
    const got = evaluate(f, p).map((a) => `${a.severity} ${a.kind} ${a.destination ?? '-'}`);
    t.deepEqual(got.sort(), [...expected].sort());
    t.is(worst(evaluate(f, p)), expected.some((e) => e.startsWith('critical')) ? 'critical' : expected.length ? 'warning' : 'ok');
  });
}

test('alert messages say what and how much', (t) => {
  const [rpo] = evaluate(facts({}, [dest({ confirmedSourceTime: NOW - 2 * H - 10 * M })]), P);
  t.is(rpo!.message, 'offsite holds nothing newer than 2h10m ago: over its RPO of 1h');
  const [space] = evaluate(facts({}, [dest({ space: { free: 10 * GiB, total: 1000 * GiB } })]), P);
  t.is(space!.message, 'offsite is low on space: 10.0 GiB free of 1000.0 GiB');
  const [down] = evaluate(facts({}, [dest({ failingSince: NOW - 20 * M, lastError: { message: 'connection refused', transient: true } })]), P);
  t.is(down!.message, 'offsite has been unreachable for 20m: connection refused');
});

test('transition: raised once, repeated after repeatAfter, raised again on a new severity, resolved when gone', (t) => {
  const warn = evaluate(facts({}, [dest({ confirmedSourceTime: NOW - H - M })]), P);
  const crit = evaluate(facts({}, [dest({ confirmedSourceTime: NOW - 3 * H })]), P);
  let active: Record<string, ActiveAlert> = {};
  let r = transition(active, warn, NOW, 6 * H);
  t.deepEqual(r.events.map((e) => e.state), ['raised']);
  active = r.active;
  r = transition(active, warn, NOW + H, 6 * H);
  t.deepEqual(r.events, [], 'nothing new an hour later');
  active = r.active;
  r = transition(active, warn, NOW + 6 * H, 6 * H);
  t.deepEqual(r.events.map((e) => e.state), ['repeated']);
  t.is(r.events[0]!.since, NOW, 'since the first time');
  active = r.active;
  r = transition(active, crit, NOW + 7 * H, 6 * H);
  t.deepEqual(r.events.map((e) => [e.state, e.alert.severity]), [['raised', 'critical']]);
  t.is(r.active['rpo:offsite']!.since, NOW, 'the same alert, worse');
  active = r.active;
  r = transition(active, [], NOW + 8 * H, 6 * H);
  t.deepEqual(r.events.map((e) => [e.state, e.alert.kind]), [['resolved', 'rpo']]);
  t.deepEqual(r.active, {});
  // repeatAfter null: once.
  const once = transition(transition({}, warn, NOW, null).active, warn, NOW + 100 * H, null);
  t.deepEqual(once.events, []);
});
