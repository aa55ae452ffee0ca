// Cron schedules across daylight-saving changes, with real dates in real zones. Each zone
// runs in a child process started with TZ set (test/helpers/schedule-zone.ts), so the
// zone is in force before any date is made. Expected times are local, with their offset.
//
// The rule (Vixie cron's): a fixed-time job (minute and hour fields not starting with "*")
// due at a skipped time runs when the clocks jump, and at a repeated time runs once; other
// jobs do not run at skipped times and run at both occurrences of repeated ones.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import test from '../helpers/ava.js';
import type { ZoneAnswer, ZoneQuery } from '../helpers/schedule-zone.js';

const CHILD = fileURLToPath(new URL('../helpers/schedule-zone.js', import.meta.url));

type Case = [zone: string, title: string, expr: string, after: string, want: string[]];

const cases: Case[] = [
  // Europe/Berlin: 2026-03-29 02:00 CET becomes 03:00 CEST; 2026-10-25 03:00 CEST becomes 02:00 CET.
  ['Europe/Berlin', 'a fixed-time job in the skipped hour runs when the clocks jump', '30 2 * * *', '2026-03-28T12:00+01:00', ['2026-03-29T03:00+02:00', '2026-03-30T02:30+02:00']],
  ['Europe/Berlin', 'so does one at the first skipped minute', '0 2 * * *', '2026-03-28T12:00+01:00', ['2026-03-29T03:00+02:00', '2026-03-30T02:00+02:00']],
  ['Europe/Berlin', 'and one at the last skipped minute', '59 2 * * *', '2026-03-29T01:59+01:00', ['2026-03-29T03:00+02:00', '2026-03-30T02:59+02:00']],
  ['Europe/Berlin', 'skipped times and the first real one run once together', '0,30 2,3 * * *', '2026-03-29T01:00+01:00', ['2026-03-29T03:00+02:00', '2026-03-29T03:30+02:00', '2026-03-30T02:00+02:00']],
  ['Europe/Berlin', 'a fixed-time job that ran at the jump waits for the next day', '30 2 * * *', '2026-03-29T03:00+02:00', ['2026-03-30T02:30+02:00']],
  ['Europe/Berlin', 'an hourly job has no run in the skipped hour', '30 * * * *', '2026-03-29T01:00+01:00', ['2026-03-29T01:30+01:00', '2026-03-29T03:30+02:00', '2026-03-29T04:30+02:00']],
  ['Europe/Berlin', 'nor has a job every 30 minutes', '*/30 * * * *', '2026-03-29T01:00+01:00', ['2026-03-29T01:30+01:00', '2026-03-29T03:00+02:00', '2026-03-29T03:30+02:00']],
  ['Europe/Berlin', 'nor a job every two hours ("*" in the hour field)', '0 */2 * * *', '2026-03-29T00:30+01:00', ['2026-03-29T04:00+02:00', '2026-03-29T06:00+02:00']],
  ['Europe/Berlin', 'a fixed-time job in the repeated hour runs once, at the first occurrence', '30 2 * * *', '2026-10-24T12:00+02:00', ['2026-10-25T02:30+02:00', '2026-10-26T02:30+01:00']],
  ['Europe/Berlin', 'a fixed-time job that ran in the first pass does not run in the second', '30 2 * * *', '2026-10-25T02:30+02:00', ['2026-10-26T02:30+01:00']],
  ['Europe/Berlin', 'nor does it when asked from the second pass, before its time comes again', '30 2 * * *', '2026-10-25T02:10+01:00', ['2026-10-26T02:30+01:00']],
  ['Europe/Berlin', 'a fixed-time job with two times in the repeated hour runs each once', '0,30 2 * * *', '2026-10-25T01:50+02:00', ['2026-10-25T02:00+02:00', '2026-10-25T02:30+02:00', '2026-10-26T02:00+01:00']],
  ['Europe/Berlin', 'an hourly job still runs every real hour', '0 * * * *', '2026-10-25T01:30+02:00', ['2026-10-25T02:00+02:00', '2026-10-25T02:00+01:00', '2026-10-25T03:00+01:00']],
  ['Europe/Berlin', 'an hourly job at :30 runs in both passes', '30 * * * *', '2026-10-25T01:00+02:00', ['2026-10-25T01:30+02:00', '2026-10-25T02:30+02:00', '2026-10-25T02:30+01:00', '2026-10-25T03:30+01:00']],
  ['Europe/Berlin', 'late in the first pass, the next run is back in the repeated hour', '10 * * * *', '2026-10-25T02:50+02:00', ['2026-10-25T02:10+01:00', '2026-10-25T03:10+01:00']],
  ['Europe/Berlin', 'late in the first pass, a job every 20 minutes goes on in the second', '*/20 * * * *', '2026-10-25T02:50+02:00', ['2026-10-25T02:00+01:00', '2026-10-25T02:20+01:00']],
  ['Europe/Berlin', 'a "*" minute in a fixed hour runs in both passes', '*/20 2 * * *', '2026-10-25T01:50+02:00', ['2026-10-25T02:00+02:00', '2026-10-25T02:20+02:00', '2026-10-25T02:40+02:00', '2026-10-25T02:00+01:00', '2026-10-25T02:20+01:00', '2026-10-25T02:40+01:00', '2026-10-26T02:00+01:00']],
  ['Europe/Berlin', 'a daily job keeps its local time across both changes', '@daily', '2026-03-28T12:00+01:00', ['2026-03-29T00:00+01:00', '2026-03-30T00:00+02:00']],

  // America/New_York: 2026-03-08 02:00 EST becomes 03:00 EDT; 2026-11-01 02:00 EDT becomes 01:00 EST.
  ['America/New_York', 'a fixed-time job in the skipped hour runs when the clocks jump', '30 2 * * *', '2026-03-07T12:00-05:00', ['2026-03-08T03:00-04:00', '2026-03-09T02:30-04:00']],
  ['America/New_York', 'a job every 30 minutes has no run in the skipped hour', '*/30 * * * *', '2026-03-08T01:00-05:00', ['2026-03-08T01:30-05:00', '2026-03-08T03:00-04:00', '2026-03-08T03:30-04:00']],
  ['America/New_York', 'a fixed-time job in the repeated hour runs once', '30 1 * * *', '2026-10-31T12:00-04:00', ['2026-11-01T01:30-04:00', '2026-11-02T01:30-05:00']],
  ['America/New_York', 'asked after its run in the first pass, it waits for the next day', '0 1 * * *', '2026-11-01T01:30-04:00', ['2026-11-02T01:00-05:00']],
  ['America/New_York', 'a job every 30 minutes runs in both passes', '*/30 * * * *', '2026-11-01T00:45-04:00', ['2026-11-01T01:00-04:00', '2026-11-01T01:30-04:00', '2026-11-01T01:00-05:00', '2026-11-01T01:30-05:00', '2026-11-01T02:00-05:00']],
  ['America/New_York', '02:00 comes once when the clocks go back at 02:00', '0 2 * * *', '2026-10-31T12:00-04:00', ['2026-11-01T02:00-05:00', '2026-11-02T02:00-05:00']],

  // Australia/Lord_Howe shifts by 30 minutes: 2026-10-04 02:00 (+10:30) becomes 02:30 (+11:00);
  // 2026-04-05 02:00 (+11:00) becomes 01:30 (+10:30).
  ['Australia/Lord_Howe', 'a fixed-time job in the skipped half hour runs when the clocks jump', '15 2 * * *', '2026-10-03T12:00+10:30', ['2026-10-04T02:30+11:00', '2026-10-05T02:15+11:00']],
  ['Australia/Lord_Howe', 'a fixed-time job after the skipped half hour runs as usual', '45 2 * * *', '2026-10-03T12:00+10:30', ['2026-10-04T02:45+11:00']],
  ['Australia/Lord_Howe', 'a job every 15 minutes has no runs in the skipped half hour', '*/15 * * * *', '2026-10-04T01:30+10:30', ['2026-10-04T01:45+10:30', '2026-10-04T02:30+11:00', '2026-10-04T02:45+11:00']],
  ['Australia/Lord_Howe', 'an hourly job loses the skipped 02:00', '0 * * * *', '2026-10-04T01:30+10:30', ['2026-10-04T03:00+11:00']],
  ['Australia/Lord_Howe', 'a fixed-time job in the repeated half hour runs once', '45 1 * * *', '2026-04-04T12:00+11:00', ['2026-04-05T01:45+11:00', '2026-04-06T01:45+10:30']],
  ['Australia/Lord_Howe', 'a fixed-time job before the repeated half hour is untouched', '15 1 * * *', '2026-04-04T12:00+11:00', ['2026-04-05T01:15+11:00', '2026-04-06T01:15+10:30']],
  ['Australia/Lord_Howe', 'a job every 15 minutes runs in both passes of the half hour', '*/15 * * * *', '2026-04-05T01:15+11:00', ['2026-04-05T01:30+11:00', '2026-04-05T01:45+11:00', '2026-04-05T01:30+10:30', '2026-04-05T01:45+10:30', '2026-04-05T02:00+10:30']],
  ['Australia/Lord_Howe', 'an hourly job: 01:00 is not repeated, 02:00 comes 90 minutes later', '0 * * * *', '2026-04-05T00:30+11:00', ['2026-04-05T01:00+11:00', '2026-04-05T02:00+10:30']],

  // UTC has no changes: the same expressions on the same dates, plainly.
  ['UTC', 'no skipped hour', '30 2 * * *', '2026-03-28T12:00Z', ['2026-03-29T02:30+00:00', '2026-03-30T02:30+00:00']],
  ['UTC', 'no repeated hour', '30 1 * * *', '2026-10-31T12:00Z', ['2026-11-01T01:30+00:00', '2026-11-02T01:30+00:00']],
  ['UTC', 'hours one after another', '0 * * * *', '2026-10-25T00:30Z', ['2026-10-25T01:00+00:00', '2026-10-25T02:00+00:00', '2026-10-25T03:00+00:00']],

  // Pacific/Apia skipped a whole day: 2011-12-29 24:00 (-10:00) became 2011-12-31 00:00 (+14:00).
  ['Pacific/Apia', 'a daily job due in the skipped day runs at the jump', '0 12 * * *', '2011-12-29T13:00-10:00', ['2011-12-31T00:00+14:00', '2011-12-31T12:00+14:00']],
  ['Pacific/Apia', 'an hourly job skips the day', '0 * * * *', '2011-12-29T22:30-10:00', ['2011-12-29T23:00-10:00', '2011-12-31T00:00+14:00', '2011-12-31T01:00+14:00']],
  ['Pacific/Apia', 'a yearly job on the skipped date runs at the jump', '0 12 30 12 *', '2011-06-01T00:00Z', ['2011-12-31T00:00+14:00', '2012-12-30T12:00+14:00']],
];

const zones = [...new Set(cases.map((c) => c[0]))];
const answers = new Map<string, Promise<ZoneAnswer>>();

/** One child per zone answers all of that zone's cases. */
function answersFor(zone: string): Promise<ZoneAnswer> {
  let p = answers.get(zone);
  if (!p) {
    const queries: ZoneQuery[] = cases.filter((c) => c[0] === zone).map(([, , expr, after, want]) => ({ expr, after, count: want.length }));
    p = promisify(execFile)(process.execPath, [CHILD, JSON.stringify(queries)], { env: { ...process.env, TZ: zone } })
      .then(({ stdout }) => JSON.parse(stdout) as ZoneAnswer);
    answers.set(zone, p);
  }
  return p;
}

for (const zone of zones) {
  test(`${zone}: the child runs in that zone`, async (t) => {
    t.is((await answersFor(zone)).zone, zone);
  });
}

for (const [zone, title, expr, after, want] of cases) {
  const index = cases.filter((c) => c[0] === zone).findIndex((c) => c[1] === title && c[2] === expr && c[3] === after);
  test(`${zone}: ${title} (${expr} after ${after})`, async (t) => {
    const chain = (await answersFor(zone)).chains[index]!;
    if ('error' in chain) { t.fail(chain.error); return; }
    t.deepEqual(chain.local, want);
    t.deepEqual(chain.ms, want.map((w) => Date.parse(w)), 'the instants themselves');
  });
}
