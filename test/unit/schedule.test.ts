// Schedules: intervals, crontab parsing, next cron times, config values and missed runs.
// This file runs in Asia/Kolkata (UTC+05:30, no daylight saving), so that local and UTC
// times differ by a non-whole hour and any mix-up of the two shows. Daylight-saving
// changes are tested in schedule-zones.test.ts, in child processes per zone.
import test from '../helpers/ava.js';
import {
  describeSchedule, nextCronTime, nextRun, parseCron, parseInterval, parseSchedule, ScheduleError,
  type CronSchedule, type Schedule,
} from '../../src/policy/schedule.js';

// Node re-reads the zone when TZ is assigned; nothing above has used local time yet.
process.env.TZ = 'Asia/Kolkata';

/** An expression for a test title: ava collapses runs of spaces in titles, so they are spelt out. */
const label = (expr: string) => JSON.stringify(expr).replace(/ {2,}/g, (m) => `<${m.length} spaces>`);

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

/** A local time "2026-05-10 10:00" (optionally ":ss") as milliseconds. */
function local(text: string): number {
  const m = /^(\d{4,6})-(\d\d)-(\d\d) (\d\d):(\d\d)(?::(\d\d))?$/.exec(text);
  if (!m) throw new Error(`bad local time ${text}`);
  const [y, mo, d, h, mi, s] = m.slice(1).map((x) => Number(x ?? 0));
  const date = new Date(2000, 0, 1);
  date.setFullYear(y!, mo! - 1, d!);
  date.setHours(h!, mi!, s!, 0);
  return date.getTime();
}

/** Milliseconds as a local time "2026-05-10 10:00" (":ss.mmm" when not on a minute), for readable failures. */
function show(t: number): string {
  const d = new Date(t);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  const base = `${p(d.getFullYear(), 4)}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
  return d.getSeconds() || d.getMilliseconds() ? `${base}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}` : base;
}

/** The next `count` firings after a local time, as local times. */
function chain(expr: string, after: string, count: number): string[] {
  const c = parseCron(expr);
  const out: string[] = [];
  let t = local(after);
  for (let i = 0; i < count; i++) out.push(show(t = nextCronTime(c, t)));
  return out;
}

test('the tests run in Asia/Kolkata', (t) => {
  t.is(new Date(Date.UTC(2026, 0, 1)).getTimezoneOffset(), -330);
  t.is(new Date(Date.UTC(2026, 6, 1)).getTimezoneOffset(), -330);
  t.is(show(local('2026-05-10 10:00')), '2026-05-10 10:00');
  t.is(local('2026-05-10 10:00'), Date.parse('2026-05-10T04:30:00Z'));
});

// ---------------------------------------------------------------------------------------
// Intervals

const intervals: Array<[string, number]> = [
  ['1s', 1000], ['90s', 90_000], ['15m', 15 * MIN], ['60m', HOUR], ['1h30m', 90 * MIN], ['2d', 2 * DAY],
  ['1d12h', 36 * HOUR], ['1d2h3m4s', DAY + 2 * HOUR + 3 * MIN + 4000], ['1h0m', HOUR], ['0h1s', 1000],
  ['05m', 5 * MIN], ['366d', 366 * DAY], ['8784h', 366 * DAY], ['365d23h59m59s', 366 * DAY - 1000],
];
for (const [text, ms] of intervals) {
  test(`interval ${JSON.stringify(text)} is ${ms} ms`, (t) => {
    t.is(parseInterval(text), ms);
  });
}

const EXAMPLES = '(examples: 30s, 15m, 1h30m, 1d; m is minutes here, not months as in --keep-within)';
const badIntervals: Array<[string, string]> = [
  ['15x', `"15x" is not an interval ${EXAMPLES}`],
  ['', `"" is not an interval ${EXAMPLES}`],
  [' 15m', `" 15m" is not an interval: it must not contain spaces ${EXAMPLES}`],
  ['15m ', `"15m " is not an interval: it must not contain spaces ${EXAMPLES}`],
  ['15 m', `"15 m" is not an interval: it must not contain spaces ${EXAMPLES}`],
  ['1h 30m', `"1h 30m" is not an interval: it must not contain spaces ${EXAMPLES}`],
  ['900', `"900" is not an interval: it needs a unit, e.g. "900s" ${EXAMPLES}`],
  ['500ms', `"500ms" is not an interval: the smallest unit is s ${EXAMPLES}`],
  ['30m1h', `"30m1h" is not an interval: units go from the largest to the smallest, each at most once ${EXAMPLES}`],
  ['1h1h', `"1h1h" is not an interval: units go from the largest to the smallest, each at most once ${EXAMPLES}`],
  ['1.5h', `"1.5h" is not an interval: use whole numbers, e.g. 1h30m for 1.5h ${EXAMPLES}`],
  ['-1m', `"-1m" is not an interval ${EXAMPLES}`],
  ['+1m', `"+1m" is not an interval ${EXAMPLES}`],
  ['15M', `"15M" is not an interval ${EXAMPLES}`],
  ['1w', `"1w" is not an interval ${EXAMPLES}`],
  ['1y', `"1y" is not an interval ${EXAMPLES}`],
  ['m', `"m" is not an interval ${EXAMPLES}`],
  ['0s', '"0s" is shorter than the shortest interval, 1s'],
  ['0d0h', '"0d0h" is shorter than the shortest interval, 1s'],
  ['366d1s', '"366d1s" is longer than the longest interval, 366d'],
  ['367d', '"367d" is longer than the longest interval, 366d'],
  ['99999999999999999999s', '"99999999999999999999s" is longer than the longest interval, 366d'],
];
for (const [text, message] of badIntervals) {
  test(`interval ${JSON.stringify(text)} is refused`, (t) => {
    t.throws(() => parseInterval(text), { instanceOf: ScheduleError, message });
  });
}

// ---------------------------------------------------------------------------------------
// Crontab syntax

const range = (a: number, b: number, step = 1) => Array.from({ length: Math.floor((b - a) / step) + 1 }, (_, i) => a + i * step);

type Sets = Pick<CronSchedule, 'minutes' | 'hours' | 'daysOfMonth' | 'months' | 'daysOfWeek'>;
const ALL: Sets = { minutes: range(0, 59), hours: range(0, 23), daysOfMonth: range(1, 31), months: range(1, 12), daysOfWeek: range(0, 6) };
const sets = (c: CronSchedule): Sets => ({ minutes: c.minutes, hours: c.hours, daysOfMonth: c.daysOfMonth, months: c.months, daysOfWeek: c.daysOfWeek });

const syntax: Array<[string, Partial<Sets>]> = [
  ['* * * * *', {}],
  ['5 * * * *', { minutes: [5] }],
  ['05 07 * * *', { minutes: [5], hours: [7] }],
  ['1-5 * * * *', { minutes: [1, 2, 3, 4, 5] }],
  ['7-7 * * * *', { minutes: [7] }],
  ['*/15 * * * *', { minutes: [0, 15, 30, 45] }],
  ['*/59 * * * *', { minutes: [0, 59] }],
  ['10-30/10 * * * *', { minutes: [10, 20, 30] }],
  ['10-31/10 * * * *', { minutes: [10, 20, 30] }],
  ['10/20 * * * *', { minutes: [10, 30, 50] }],
  ['1,5-7,30 * * * *', { minutes: [1, 5, 6, 7, 30] }],
  ['30,1,30 * * * *', { minutes: [1, 30] }],
  ['0-59/30,45 * * * *', { minutes: [0, 30, 45] }],
  ['0 */6 * * *', { minutes: [0], hours: [0, 6, 12, 18] }],
  ['0 9-17/4 * * *', { minutes: [0], hours: [9, 13, 17] }],
  ['0 0 */10 * *', { minutes: [0], hours: [0], daysOfMonth: [1, 11, 21, 31] }],
  ['0 0 1,15 * *', { minutes: [0], hours: [0], daysOfMonth: [1, 15] }],
  ['0 0 1 jan *', { minutes: [0], hours: [0], daysOfMonth: [1], months: [1] }],
  ['0 0 1 JAN,Dec *', { minutes: [0], hours: [0], daysOfMonth: [1], months: [1, 12] }],
  ['0 0 1 Feb-Apr *', { minutes: [0], hours: [0], daysOfMonth: [1], months: [2, 3, 4] }],
  ['0 0 1 */3 *', { minutes: [0], hours: [0], daysOfMonth: [1], months: [1, 4, 7, 10] }],
  ['0 0 1 mar/3 *', { minutes: [0], hours: [0], daysOfMonth: [1], months: [3, 6, 9, 12] }],
  ['0 0 1 2-11/3 *', { minutes: [0], hours: [0], daysOfMonth: [1], months: [2, 5, 8, 11] }],
  ['0 0 * * mon-fri', { minutes: [0], hours: [0], daysOfWeek: [1, 2, 3, 4, 5] }],
  ['0 0 * * SUN', { minutes: [0], hours: [0], daysOfWeek: [0] }],
  ['0 0 * * 0', { minutes: [0], hours: [0], daysOfWeek: [0] }],
  ['0 0 * * 7', { minutes: [0], hours: [0], daysOfWeek: [0] }],
  ['0 0 * * 0,7', { minutes: [0], hours: [0], daysOfWeek: [0] }],
  ['0 0 * * 5-7', { minutes: [0], hours: [0], daysOfWeek: [0, 5, 6] }],
  ['0 0 * * fri-7', { minutes: [0], hours: [0], daysOfWeek: [0, 5, 6] }],
  ['0 0 * * sat,sun', { minutes: [0], hours: [0], daysOfWeek: [0, 6] }],
  ['0 0 * * */2', { minutes: [0], hours: [0], daysOfWeek: [0, 2, 4, 6] }],
  ['0 0 * * 1/2', { minutes: [0], hours: [0], daysOfWeek: [1, 3, 5] }],
  ['0 0 * * mon/2', { minutes: [0], hours: [0], daysOfWeek: [1, 3, 5] }],
  ['0 0 * * 7/2', { minutes: [0], hours: [0], daysOfWeek: [0] }],
  ['0\t0  *   * \t*', { minutes: [0], hours: [0] }],
  ['@yearly', { minutes: [0], hours: [0], daysOfMonth: [1], months: [1] }],
  ['@annually', { minutes: [0], hours: [0], daysOfMonth: [1], months: [1] }],
  ['@monthly', { minutes: [0], hours: [0], daysOfMonth: [1] }],
  ['@weekly', { minutes: [0], hours: [0], daysOfWeek: [0] }],
  ['@daily', { minutes: [0], hours: [0] }],
  ['@midnight', { minutes: [0], hours: [0] }],
  ['@hourly', { minutes: [0] }],
  ['@Daily', { minutes: [0], hours: [0] }],
];
for (const [expr, want] of syntax) {
  test(`cron ${label(expr)} expands to its sets`, (t) => {
    const c = parseCron(expr);
    t.deepEqual(sets(c), { ...ALL, ...want });
    t.is(c.text, expr);
  });
}

const shortcuts: Array<[string, string]> = [
  ['@yearly', '0 0 1 1 *'], ['@annually', '0 0 1 1 *'], ['@monthly', '0 0 1 * *'], ['@weekly', '0 0 * * 0'],
  ['@daily', '0 0 * * *'], ['@midnight', '0 0 * * *'], ['@hourly', '0 * * * *'], ['0\t0  * * *', '0 0 * * *'],
];
for (const [expr, fields] of shortcuts) {
  test(`cron ${label(expr)} stands for "${fields}"`, (t) => {
    t.is(parseCron(expr).fields, fields);
  });
}

// Vixie cron: either day field may match when neither starts with "*"; else both must.
const dayRules: Array<[string, 'either' | 'both']> = [
  ['0 0 1 * mon', 'either'], ['0 0 1-7 * 1', 'either'], ['0 0 13 * fri', 'either'],
  ['0 0 * * mon', 'both'], ['0 0 1 * *', 'both'], ['0 0 * * *', 'both'],
  ['0 0 */2 * mon', 'both'], ['0 0 1 * */2', 'both'], ['0 0 *,1 * mon', 'both'], ['@weekly', 'both'], ['@monthly', 'both'],
];
for (const [expr, rule] of dayRules) {
  test(`cron ${JSON.stringify(expr)}: the day must match ${rule}`, (t) => {
    t.is(parseCron(expr).dayRule, rule);
  });
}

// Vixie cron's "fixed-time" jobs: neither the minute nor the hour field starts with "*".
const fixedTimes: Array<[string, boolean]> = [
  ['30 2 * * *', true], ['0 1-3 * * *', true], ['0,30 2 * * *', true], ['0 0 1 1 *', true], ['@daily', true], ['@weekly', true],
  ['*/15 * * * *', false], ['0 * * * *', false], ['0 */2 * * *', false], ['*/5 2 * * *', false], ['* 2 * * *', false], ['@hourly', false],
];
for (const [expr, fixed] of fixedTimes) {
  test(`cron ${JSON.stringify(expr)} is ${fixed ? '' : 'not '}a fixed-time job`, (t) => {
    t.is(parseCron(expr).fixedTime, fixed);
  });
}

const badCrons: Array<[string, string]> = [
  ['0 25 * * *', 'cron "0 25 * * *": hour 25 is out of range 0-23'],
  ['60 * * * *', 'cron "60 * * * *": minute 60 is out of range 0-59'],
  ['99999999999999999999 * * * *', 'cron "99999999999999999999 * * * *": minute 99999999999999999999 is out of range 0-59'],
  ['* * 0 * *', 'cron "* * 0 * *": day-of-month 0 is out of range 1-31'],
  ['* * 32 * *', 'cron "* * 32 * *": day-of-month 32 is out of range 1-31'],
  ['* * * 0 *', 'cron "* * * 0 *": month 0 is out of range 1-12'],
  ['* * * 13 *', 'cron "* * * 13 *": month 13 is out of range 1-12'],
  ['* * * * 8', 'cron "* * * * 8": day-of-week 8 is out of range 0-7'],
  ['0 0-24 * * *', 'cron "0 0-24 * * *": hour 24 is out of range 0-23'],
  ['5-1 * * * *', 'cron "5-1 * * * *": minute range 5-1 goes backwards'],
  ['* * * dec-jan *', 'cron "* * * dec-jan *": month range dec-jan goes backwards'],
  ['* * * * fri-sun', 'cron "* * * * fri-sun": day-of-week range fri-sun goes backwards (7 is also Sunday: fri-sun is 5-7)'],
  ['*/0 * * * *', 'cron "*/0 * * * *": minute step 0 is out of range 1-59'],
  ['*/60 * * * *', 'cron "*/60 * * * *": minute step 60 is out of range 1-59'],
  ['*/90 * * * *', 'cron "*/90 * * * *": minute step 90 is out of range 1-59'],
  ['0 */24 * * *', 'cron "0 */24 * * *": hour step 24 is out of range 1-23'],
  ['0 0 * */12 *', 'cron "0 0 * */12 *": month step 12 is out of range 1-11'],
  ['0 0 * * */7', 'cron "0 0 * * */7": day-of-week step 7 is out of range 1-6'],
  ['*/x * * * *', 'cron "*/x * * * *": minute step "x" is not a number'],
  ['*/ * * * *', 'cron "*/ * * * *": minute step "" is not a number'],
  ['*/2/3 * * * *', 'cron "*/2/3 * * * *": minute "*/2/3" has more than one step'],
  ['1,,2 * * * *', 'cron "1,,2 * * * *": minute "1,,2" has an empty list item'],
  ['1, * * * *', 'cron "1, * * * *": minute "1," has an empty list item'],
  ['1-2-3 * * * *', 'cron "1-2-3 * * * *": minute "1-2-3" is not a number, range or step'],
  ['-1 * * * *', 'cron "-1 * * * *": minute "-1" is not a number, range or step'],
  ['1- * * * *', 'cron "1- * * * *": minute "1-" is not a number, range or step'],
  ['/5 * * * *', 'cron "/5 * * * *": minute "/5" is not a number, range or step'],
  ['a * * * *', 'cron "a * * * *": minute "a" is not a number'],
  ['0 noon * * *', 'cron "0 noon * * *": hour "noon" is not a number'],
  ['0 0 1.5 * *', 'cron "0 0 1.5 * *": day-of-month "1.5" is not a number'],
  ['0 0 ? * mon', 'cron "0 0 ? * mon": day-of-month "?" is not a number'],
  ['0 0 L * *', 'cron "0 0 L * *": day-of-month "L" is not a number'],
  ['0 0 1 foo *', 'cron "0 0 1 foo *": month "foo" is not a number or a month name (jan-dec)'],
  ['0 0 1 january *', 'cron "0 0 1 january *": month "january" is not a number or a month name (jan-dec)'],
  ['0 0 1 mon *', 'cron "0 0 1 mon *": month "mon" is not a number or a month name (jan-dec)'],
  ['0 0 * * monday', 'cron "0 0 * * monday": day-of-week "monday" is not a number or a day name (sun-sat)'],
  ['0 0 * * jan', 'cron "0 0 * * jan": day-of-week "jan" is not a number or a day name (sun-sat)'],
  ['0 0 * * 1#2', 'cron "0 0 * * 1#2": day-of-week "1#2" is not a number or a day name (sun-sat)'],
  ['jan * * * *', 'cron "jan * * * *": minute "jan" is not a number'],
  ['', 'cron "": has 0 fields, needs 5 (minute hour day-of-month month day-of-week)'],
  ['*', 'cron "*": has 1 field, needs 5 (minute hour day-of-month month day-of-week)'],
  ['* * * *', 'cron "* * * *": has 4 fields, needs 5 (minute hour day-of-month month day-of-week)'],
  ['0 0 * * * *', 'cron "0 0 * * * *": has 6 fields, needs 5 (minute hour day-of-month month day-of-week); seconds and years are not supported'],
  ['0 0 * * * * 2026', 'cron "0 0 * * * * 2026": has 7 fields, needs 5 (minute hour day-of-month month day-of-week)'],
  [' 0 * * * *', 'cron " 0 * * * *": has spaces around it'],
  ['0 * * * *\n', 'cron "0 * * * *\\n": has spaces around it'],
  ['@daily ', 'cron "@daily ": has spaces around it'],
  ['@reboot', 'cron "@reboot": @reboot is not supported: a schedule gives times to run at, not events'],
  ['@REBOOT', 'cron "@REBOOT": @reboot is not supported'],
  ['@every', 'cron "@every": unknown shortcut (known: @yearly @annually @monthly @weekly @daily @midnight @hourly)'],
  ['@', 'cron "@": unknown shortcut'],
  ['0 0 30 2 *', 'cron "0 0 30 2 *": never fires: February has no day 30'],
  ['0 0 31 feb *', 'cron "0 0 31 feb *": never fires: February has no day 31'],
  ['0 0 30,31 2 *', 'cron "0 0 30,31 2 *": never fires: February has no day 30 or 31'],
  ['0 0 31 4,6,9,11 *', 'cron "0 0 31 4,6,9,11 *": never fires: April, June, September and November have no day 31'],
  ['0 0 31 apr,jun *', 'cron "0 0 31 apr,jun *": never fires: April and June have no day 31'],
  ['0 0 30-31 2 *', 'cron "0 0 30-31 2 *": never fires: February has no day 30 or 31'],
  // "*/2" starts with "*": both day fields must match, and no February has a 30th.
  ['0 0 30 2 */2', 'cron "0 0 30 2 */2": never fires: February has no day 30'],
  ['0 0 30 2 *,mon', 'cron "0 0 30 2 *,mon": never fires'],
];
for (const [expr, message] of badCrons) {
  test(`cron ${JSON.stringify(expr)} is refused`, (t) => {
    const err = t.throws(() => parseCron(expr), { instanceOf: ScheduleError });
    t.true(err?.message.startsWith(message), `message: ${err?.message}\nexpected to start with: ${message}`);
  });
}

// Expressions near the impossible ones that do fire.
const possible: Array<[string, string, string[]]> = [
  ['0 0 29 2 *', '2026-01-01 00:00', ['2028-02-29 00:00', '2032-02-29 00:00', '2036-02-29 00:00']],
  ['0 0 30,31 2,3 *', '2026-01-01 00:00', ['2026-03-30 00:00', '2026-03-31 00:00', '2027-03-30 00:00']],
  ['0 0 31 4,6,9,11,12 *', '2026-01-01 00:00', ['2026-12-31 00:00', '2027-12-31 00:00']],
  // Both day fields restricted: Mondays in February fire, the 30th never does.
  ['0 0 30 2 mon', '2026-01-01 00:00', ['2026-02-02 00:00', '2026-02-09 00:00', '2026-02-16 00:00', '2026-02-23 00:00', '2027-02-01 00:00']],
];
for (const [expr, after, want] of possible) {
  test(`cron ${JSON.stringify(expr)} fires`, (t) => {
    t.deepEqual(chain(expr, after, want.length), want);
  });
}

// ---------------------------------------------------------------------------------------
// Next times (in this file's zone, which has no daylight saving)

const nexts: Array<[string, string, string[]]> = [
  ['* * * * *', '2026-05-10 10:00', ['2026-05-10 10:01', '2026-05-10 10:02']],
  ['* * * * *', '2026-05-10 10:00:30', ['2026-05-10 10:01']],
  ['* * * * *', '2026-05-10 09:59:59', ['2026-05-10 10:00']],
  ['0 * * * *', '2026-05-10 10:00', ['2026-05-10 11:00', '2026-05-10 12:00']],
  ['0 * * * *', '2026-05-10 09:59', ['2026-05-10 10:00']],
  ['*/15 * * * *', '2026-05-10 10:07', ['2026-05-10 10:15', '2026-05-10 10:30', '2026-05-10 10:45', '2026-05-10 11:00']],
  ['30 2 * * *', '2026-05-10 02:30', ['2026-05-11 02:30']],
  ['30 2 * * *', '2026-05-10 02:29:59', ['2026-05-10 02:30']],
  ['0 9-17 * * mon-fri', '2026-05-08 17:00', ['2026-05-11 09:00', '2026-05-11 10:00']],
  ['0 0 * * 7', '2026-01-01 00:00', ['2026-01-04 00:00', '2026-01-11 00:00']],
  ['0 0 * * 0', '2026-01-01 00:00', ['2026-01-04 00:00', '2026-01-11 00:00']],
  ['@weekly', '2026-01-01 00:00', ['2026-01-04 00:00']],
  ['@monthly', '2026-05-10 10:00', ['2026-06-01 00:00', '2026-07-01 00:00']],
  ['@yearly', '2026-05-10 10:00', ['2027-01-01 00:00', '2028-01-01 00:00']],
  // Month ends.
  ['0 0 1 * *', '2026-01-31 12:00', ['2026-02-01 00:00']],
  ['0 0 31 * *', '2026-01-31 00:00', ['2026-03-31 00:00', '2026-05-31 00:00', '2026-07-31 00:00', '2026-08-31 00:00', '2026-10-31 00:00', '2026-12-31 00:00', '2027-01-31 00:00']],
  ['0 0 30 * *', '2026-01-30 00:00', ['2026-03-30 00:00', '2026-04-30 00:00']],
  ['0 0 29 * *', '2026-01-29 00:00', ['2026-03-29 00:00']],
  ['0 0 29 * *', '2028-01-29 00:00', ['2028-02-29 00:00', '2028-03-29 00:00']],
  ['0 0 28-31 2 *', '2026-01-01 00:00', ['2026-02-28 00:00', '2027-02-28 00:00', '2028-02-28 00:00', '2028-02-29 00:00', '2029-02-28 00:00']],
  // Leap years: 2100 is not one, 2000 and 2400 are.
  ['0 0 29 2 *', '2028-02-29 00:00', ['2032-02-29 00:00']],
  ['0 0 29 2 *', '2096-02-29 00:00', ['2104-02-29 00:00']],
  ['0 0 29 2 *', '1999-06-01 00:00', ['2000-02-29 00:00', '2004-02-29 00:00']],
  ['0 0 29 2 *', '2397-01-01 00:00', ['2400-02-29 00:00', '2404-02-29 00:00']],
  ['0 12 29 feb *', '2028-02-29 12:00', ['2032-02-29 12:00']],
  // Year wrap.
  ['0 0 1 1 *', '2026-12-31 23:59', ['2027-01-01 00:00']],
  ['* * * * *', '2026-12-31 23:59', ['2027-01-01 00:00']],
  ['59 23 31 12 *', '2026-12-31 23:59', ['2027-12-31 23:59']],
  ['59 23 31 12 *', '2026-12-31 23:58', ['2026-12-31 23:59', '2027-12-31 23:59']],
  ['0 0 * jan mon', '2026-12-31 12:00', ['2027-01-04 00:00']],
  ['*/20 23 31 dec *', '2026-12-31 23:30', ['2026-12-31 23:40', '2027-12-31 23:00']],
  // Vixie's OR: the 13th or any Friday (2026-01-02 is a Friday).
  ['0 0 13 * fri', '2026-01-01 00:00', ['2026-01-02 00:00', '2026-01-09 00:00', '2026-01-13 00:00', '2026-01-16 00:00', '2026-01-23 00:00']],
  // The classic surprise: "the first Monday" written this way is days 1-7 and every Monday.
  ['0 0 1-7 * mon', '2026-06-01 00:00', ['2026-06-02 00:00', '2026-06-03 00:00', '2026-06-04 00:00', '2026-06-05 00:00', '2026-06-06 00:00', '2026-06-07 00:00', '2026-06-08 00:00', '2026-06-15 00:00']],
  // A "*" at the start of either day field means AND: odd days that are Fridays.
  ['0 0 */2 * fri', '2026-01-01 00:00', ['2026-01-09 00:00', '2026-01-23 00:00', '2026-02-13 00:00', '2026-02-27 00:00']],
  ['0 0 13 * */5', '2026-01-01 00:00', ['2026-02-13 00:00', '2026-03-13 00:00', '2026-09-13 00:00', '2026-11-13 00:00']],
  // Sparse: Feb 29 or a Monday in February.
  ['0 0 29 2 1', '2027-03-01 00:00', ['2028-02-07 00:00', '2028-02-14 00:00', '2028-02-21 00:00', '2028-02-28 00:00', '2028-02-29 00:00', '2029-02-05 00:00']],
];
for (const [expr, after, want] of nexts) {
  test(`cron ${JSON.stringify(expr)} after ${after}`, (t) => {
    t.deepEqual(chain(expr, after, want.length), want);
  });
}

test('nextCronTime refuses a time that is not one', (t) => {
  t.throws(() => nextCronTime(parseCron('* * * * *'), Number.NaN), { instanceOf: RangeError });
  t.throws(() => nextCronTime(parseCron('* * * * *'), Infinity), { instanceOf: RangeError });
});

test('nextCronTime gives up on a hand-made schedule that never fires instead of looping', (t) => {
  const never: CronSchedule = { ...parseCron('0 0 1 2 *'), daysOfMonth: [30] };
  t.throws(() => nextCronTime(never, local('2026-01-01 00:00')), { instanceOf: RangeError, message: /never fires/ });
});

// An independent answer, minute by minute with the local getters, over a window that holds
// a year wrap, month ends and a February 29th.
function bruteForce(c: CronSchedule, from: number, to: number): string[] {
  const out: string[] = [];
  for (let t = from; t < to; t += MIN) {
    const d = new Date(t);
    if (!c.minutes.includes(d.getMinutes()) || !c.hours.includes(d.getHours()) || !c.months.includes(d.getMonth() + 1)) continue;
    const dom = c.daysOfMonth.includes(d.getDate());
    const dow = c.daysOfWeek.includes(d.getDay());
    if (c.dayRule === 'either' ? dom || dow : dom && dow) out.push(show(t));
  }
  return out;
}

const bruteExprs = [
  '*/7 3 * * *', '0 */5 * * *', '59 23 * * *', '0 0 29 2 *', '0 0 31 * *', '30 12 13 * fri', '15 6 */3 * mon',
  '0 0 * 2 0,7', '0 12 1-7 * mon', '0 9 * * mon-fri', '5,35 1-2 28-31 dec,feb *', '*/30 */6 */2 */2 */2', '0 0 1,31 * 1-5',
];
for (const expr of bruteExprs) {
  test(`cron ${JSON.stringify(expr)} agrees with a minute-by-minute search`, (t) => {
    const c = parseCron(expr);
    const from = local('2027-12-20 00:00');
    const to = local('2028-03-10 00:00');
    const want = bruteForce(c, from + MIN, to);
    t.true(want.length > 0);
    const got: string[] = [];
    for (let at = nextCronTime(c, from); at < to; at = nextCronTime(c, at)) got.push(show(at));
    t.deepEqual(got, want);
  });
}

// Efficient by construction (it steps by field, never minute by minute over years); these
// check that 10,000 calls on sparse expressions give the right answers.
test('10,000 successive February 29ths are the leap days', (t) => {
  const c = parseCron('0 0 29 2 *');
  const leap = (y: number) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
  let at = local('2026-01-01 00:00');
  let year = 2026;
  const wrong: string[] = [];
  for (let i = 0; i < 10_000; i++) {
    at = nextCronTime(c, at);
    do year++; while (!leap(year));
    const d = new Date(at);
    if (d.getFullYear() !== year || d.getMonth() !== 1 || d.getDate() !== 29 || d.getHours() !== 0 || d.getMinutes() !== 0) wrong.push(`${i}: ${show(at)}, wanted ${year}-02-29`);
  }
  t.deepEqual(wrong, []);
});

test('10,000 firings of "0 0 29 2 1" are Mondays in February and February 29ths, none missing', (t) => {
  const c = parseCron('0 0 29 2 1');
  const expected: number[] = [];
  for (let y = 2026; expected.length < 10_000; y++) {
    for (let d = 1; d <= 29; d++) {
      const t0 = local(`${y}-02-${String(d).padStart(2, '0')} 00:00`);
      if (new Date(t0).getMonth() !== 1) break;
      if (d === 29 || new Date(t0).getDay() === 1) expected.push(t0);
    }
  }
  let at = local('2026-01-01 00:00');
  const wrong: string[] = [];
  for (let i = 0; i < 10_000; i++) {
    at = nextCronTime(c, at);
    if (at !== expected[i]) { wrong.push(`${i}: ${show(at)}, wanted ${show(expected[i]!)}`); break; }
  }
  t.deepEqual(wrong, []);
});

// ---------------------------------------------------------------------------------------
// Config values

const FIELD = 'snapshots.schedule';
const everySchedules: Array<[unknown, Schedule]> = [
  [{ every: '15m' }, { kind: 'every', ms: 15 * MIN, text: '15m' }],
  [{ every: '1h30m' }, { kind: 'every', ms: 90 * MIN, text: '1h30m' }],
];
for (const [value, want] of everySchedules) {
  test(`schedule ${JSON.stringify(value)}`, (t) => {
    t.deepEqual(parseSchedule(value, FIELD), want);
  });
}

const cronSchedules: Array<[unknown, string, string]> = [
  [{ cron: '*/15 * * * *' }, '*/15 * * * *', '*/15 * * * *'],
  [{ cron: '@daily' }, '@daily', '0 0 * * *'],
];
for (const [value, text, fields] of cronSchedules) {
  test(`schedule ${JSON.stringify(value)}`, (t) => {
    const s = parseSchedule(value, FIELD);
    t.deepEqual(s, { kind: 'cron', cron: parseCron(text), text });
    t.is(s.kind === 'cron' ? s.cron.fields : undefined, fields);
  });
}

const badSchedules: Array<[string, unknown, string]> = [
  ['a bad interval', { every: '15x' }, `snapshots.schedule.every: "15x" is not an interval (examples: 30s, 15m, 1h30m, 1d; m is minutes here, not months as in --keep-within)`],
  ['a too short interval', { every: '0s' }, 'snapshots.schedule.every: "0s" is shorter than the shortest interval, 1s'],
  ['a number for an interval', { every: 900 }, 'snapshots.schedule.every: must be a string such as "15m", not 900'],
  ['a null interval', { every: null }, 'snapshots.schedule.every: must be a string such as "15m", not null'],
  ['a bad cron field', { cron: '0 25 * * *' }, 'snapshots.schedule.cron: "0 25 * * *": hour 25 is out of range 0-23'],
  ['an impossible cron', { cron: '0 0 30 2 *' }, 'snapshots.schedule.cron: "0 0 30 2 *": never fires: February has no day 30'],
  ['@reboot', { cron: '@reboot' }, 'snapshots.schedule.cron: "@reboot": @reboot is not supported'],
  ['a cron array', { cron: ['0', '*', '*', '*', '*'] }, 'snapshots.schedule.cron: must be a string such as "0 * * * *", not ["0","*","*","*","*"]'],
  ['both keys', { every: '15m', cron: '0 * * * *' }, 'snapshots.schedule: give either "every" or "cron", not both'],
  ['no key', {}, 'snapshots.schedule: needs "every" or "cron" (e.g. { "every": "15m" } or { "cron": "0 * * * *" })'],
  ['a misspelt key', { evry: '15m' }, 'snapshots.schedule: unknown key "evry" (a schedule has either "every" or "cron")'],
  ['an extra key', { every: '15m', at: 'noon' }, 'snapshots.schedule: unknown key "at"'],
  ['a bare string', '15m', 'snapshots.schedule: must be an object with "every" or "cron" (e.g. { "every": "15m" } or { "cron": "0 * * * *" }), not "15m"'],
  ['null', null, 'snapshots.schedule: must be an object with "every" or "cron" (e.g. { "every": "15m" } or { "cron": "0 * * * *" }), not null'],
  ['undefined', undefined, 'snapshots.schedule: must be an object with "every" or "cron" (e.g. { "every": "15m" } or { "cron": "0 * * * *" }), not undefined'],
  ['an array', [{ every: '15m' }], 'snapshots.schedule: must be an object with "every" or "cron"'],
  ['a number', 15, 'snapshots.schedule: must be an object with "every" or "cron"'],
  ['a BigInt', 15n, 'snapshots.schedule: must be an object with "every" or "cron" (e.g. { "every": "15m" } or { "cron": "0 * * * *" }), not 15'],
];
for (const [title, value, message] of badSchedules) {
  test(`schedule: ${title} is refused`, (t) => {
    const err = t.throws(() => parseSchedule(value, FIELD), { instanceOf: ScheduleError });
    t.true(err?.message.startsWith(message), `message: ${err?.message}\nexpected to start with: ${message}`);
  });
}

const descriptions: Array<[unknown, string]> = [
  [{ every: '15m' }, 'every 15 min'], [{ every: '90s' }, 'every 1 min 30 s'], [{ every: '1h30m' }, 'every 1 h 30 min'],
  [{ every: '2d' }, 'every 2 d'], [{ every: '1d12h' }, 'every 1 d 12 h'], [{ every: '36h' }, 'every 1 d 12 h'],
  [{ every: '1s' }, 'every 1 s'],
  [{ cron: '0 * * * *' }, 'cron 0 * * * *'], [{ cron: '@daily' }, 'cron @daily'],
];
for (const [value, text] of descriptions) {
  test(`describeSchedule ${JSON.stringify(value)} is "${text}"`, (t) => {
    t.is(describeSchedule(parseSchedule(value, FIELD)), text);
  });
}

// ---------------------------------------------------------------------------------------
// nextRun: when a job is due, missed runs included

const every15 = parseSchedule({ every: '15m' }, FIELD);
const hourly = parseSchedule({ cron: '0 * * * *' }, FIELD);
const NOW = '2026-05-10 11:30';

const runs: Array<[string, Schedule, string | null, string, string]> = [
  ['every: a job never run is due at once', every15, null, NOW, NOW],
  ['every: due an interval after the last run', every15, '2026-05-10 11:20', NOW, '2026-05-10 11:35'],
  ['every: a missed run is due now, at its time', every15, '2026-05-10 10:00', NOW, '2026-05-10 10:15'],
  ['every: due exactly now', every15, '2026-05-10 11:15', NOW, NOW],
  ['every: a last run in the future (clock set back) counts as now', every15, '2026-05-11 09:00', NOW, '2026-05-10 11:45'],
  ['cron: a job never run waits for its next time', hourly, null, NOW, '2026-05-10 12:00'],
  ['cron: a job never run, now on its time, waits for the next one', hourly, null, '2026-05-10 11:00', '2026-05-10 12:00'],
  ['cron: the next time after the last run', hourly, '2026-05-10 11:00', NOW, '2026-05-10 12:00'],
  ['cron: one missed run is due, at its time', hourly, '2026-05-10 10:00', NOW, '2026-05-10 11:00'],
  ['cron: of many missed runs, the first one is due', hourly, '2026-05-07 10:00', NOW, '2026-05-07 11:00'],
  ['cron: due exactly now', hourly, '2026-05-10 10:00', '2026-05-10 11:00', '2026-05-10 11:00'],
  ['cron: a last run in the future (clock set back) counts as now', hourly, '2026-05-11 09:00', NOW, '2026-05-10 12:00'],
];
for (const [title, s, last, now, want] of runs) {
  test(`nextRun ${title}`, (t) => {
    t.is(show(nextRun(s, last === null ? null : local(last), local(now))), want);
  });
}

// A scheduler as the daemon will run one, on a clock that ticks by the minute: when it starts
// it asks when the job is due, runs it once that time has come, remembers when it ran and
// asks again. While it is down nothing runs; when it starts again, a missed job runs once.
function simulate(s: Schedule, from: string, to: string, down: [string, string] | null): string[] {
  const ran: string[] = [];
  let last: number | null = null;
  let due: number | null = null;
  for (let now = local(from); now < local(to); now += MIN) {
    if (down && now >= local(down[0]) && now < local(down[1])) { due = null; continue; }
    due ??= nextRun(s, last, now);
    if (due <= now) { ran.push(show(now)); last = now; due = nextRun(s, last, now); }
  }
  return ran;
}

test('nextRun: a cron job missed many times while the daemon was down runs once when it is back', (t) => {
  const ran = simulate(parseSchedule({ cron: '0 */6 * * *' }, FIELD), '2026-05-10 00:00', '2026-05-12 13:00', ['2026-05-10 07:00', '2026-05-12 09:10']);
  // Not at 00:00: a job never run waits for its first time strictly after now.
  t.deepEqual(ran, ['2026-05-10 06:00', '2026-05-12 09:10', '2026-05-12 12:00']);
});

test('nextRun: a cron job never run first runs at its time, not at once', (t) => {
  const ran = simulate(parseSchedule({ cron: '30 * * * *' }, FIELD), '2026-05-10 10:00', '2026-05-10 12:00', null);
  t.deepEqual(ran, ['2026-05-10 10:30', '2026-05-10 11:30']);
});

test('nextRun: an interval job runs at once, then every interval, and once after an outage', (t) => {
  const ran = simulate(parseSchedule({ every: '45m' }, FIELD), '2026-05-10 10:00', '2026-05-10 16:00', ['2026-05-10 11:00', '2026-05-10 13:05']);
  t.deepEqual(ran, ['2026-05-10 10:00', '2026-05-10 10:45', '2026-05-10 13:05', '2026-05-10 13:50', '2026-05-10 14:35', '2026-05-10 15:20']);
});
