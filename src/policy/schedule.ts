// When scheduled jobs (snapshots, syncs) run: an interval ("every": "15m") or a crontab
// expression ("cron": "0 * * * *") from a volume's config. Pure code: text in, times out.
// docs/schedules.md describes the syntax and the semantics for users.

export class ScheduleError extends Error {}

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

// ---------------------------------------------------------------------------------------
// Intervals

// Here `m` is minutes, as in `sleep 15m` and systemd. `replfs prune --keep-within`
// (retention.ts parseDuration) follows restic, where `m` is months: the two parsers
// deliberately differ, so the error message says which one this is.
const INTERVAL_EXAMPLES = '(examples: 30s, 15m, 1h30m, 1d; m is minutes here, not months as in --keep-within)';
const MIN_INTERVAL = SECOND;
const MAX_INTERVAL = 366 * DAY;

/** Parses an interval such as 90s, 15m, 1h30m, 2d or 1d12h into milliseconds (1s to 366d). */
export function parseInterval(text: string): number {
  const bad = (why: string) => new ScheduleError(`${JSON.stringify(text)} is not an interval${why} ${INTERVAL_EXAMPLES}`);
  if (/\s/.test(text)) throw bad(': it must not contain spaces');
  const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(text);
  if (!m || text === '') {
    if (/^\d+$/.test(text)) throw bad(`: it needs a unit, e.g. "${text}s"`);
    if (/^\d+ms$/.test(text)) throw bad(': the smallest unit is s');
    if (/\d\.\d/.test(text)) throw bad(': use whole numbers, e.g. 1h30m for 1.5h');
    if (/^(?:\d+[dhms])+$/.test(text)) throw bad(': units go from the largest to the smallest, each at most once');
    throw bad('');
  }
  const [d, h, min, s] = m.slice(1).map((x) => (x === undefined ? 0 : Number(x)));
  const ms = d! * DAY + h! * HOUR + min! * MINUTE + s! * SECOND;
  if (ms < MIN_INTERVAL) throw new ScheduleError(`${JSON.stringify(text)} is shorter than the shortest interval, 1s`);
  if (ms > MAX_INTERVAL) throw new ScheduleError(`${JSON.stringify(text)} is longer than the longest interval, 366d`);
  return ms;
}

/** "1 h 30 min", "15 min", "1 d 12 h", "45 s". */
function formatInterval(ms: number): string {
  const parts: string[] = [];
  let rest = ms;
  for (const [unit, size] of [['d', DAY], ['h', HOUR], ['min', MINUTE], ['s', SECOND]] as const) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    if (n > 0) parts.push(`${n} ${unit}`);
  }
  if (rest > 0 || parts.length === 0) parts.push(`${rest} ms`);
  return parts.join(' ');
}

// ---------------------------------------------------------------------------------------
// Crontab expressions

/** A parsed crontab expression. Plain data: every set is sorted ascending. */
export interface CronSchedule {
  /** The expression as written, e.g. "@daily" or "*\/15 * * * *". */
  readonly text: string;
  /** The five fields it stands for, e.g. "0 0 * * *" for "@daily". */
  readonly fields: string;
  readonly minutes: readonly number[];
  readonly hours: readonly number[];
  /** 1-31. */
  readonly daysOfMonth: readonly number[];
  /** 1-12. */
  readonly months: readonly number[];
  /** 0-6, Sunday is 0 (a 7 in the expression is stored as 0). */
  readonly daysOfWeek: readonly number[];
  /**
   * Vixie cron's rule: when neither the day-of-month nor the day-of-week field starts with
   * `*`, a day matches if either matches; otherwise it must match both.
   */
  readonly dayRule: 'either' | 'both';
  /**
   * Neither the minute nor the hour field starts with `*` (Vixie cron's "fixed-time" job,
   * e.g. "30 2 * * *"). Decides what happens at daylight-saving changes: see nextCronTime.
   */
  readonly fixedTime: boolean;
}

interface FieldSpec {
  name: string;
  min: number;
  max: number;
  /** Where `*` and `a/n` end, when not at max. */
  last?: number;
  names?: readonly string[];
  /** What the names are, for messages. */
  namesHint?: string;
}

const MONTH_NAMES = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
const MONTH_FULL = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];

const FIELDS: readonly FieldSpec[] = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day-of-month', min: 1, max: 31 },
  // Names map to their position plus min: jan is 1, sun is 0.
  { name: 'month', min: 1, max: 12, names: MONTH_NAMES, namesHint: 'a month name (jan-dec)' },
  // 7 is Sunday too, but `*` and `a/n` stop at 6, so that "1/2" is Monday, Wednesday and
  // Friday, without Sunday.
  { name: 'day-of-week', min: 0, max: 7, last: 6, names: DAY_NAMES, namesHint: 'a day name (sun-sat)' },
];

const SHORTCUTS: Record<string, string> = {
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
  '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@hourly': '0 * * * *',
};

/** A problem in an expression, without the expression itself (the callers add it). */
class Invalid extends Error {}

function fieldValue(spec: FieldSpec, token: string): number {
  let n: number;
  if (/^\d+$/.test(token)) n = Number(token);
  else {
    const i = spec.names?.indexOf(token.toLowerCase()) ?? -1;
    if (i < 0) throw new Invalid(`${spec.name} ${JSON.stringify(token)} is not a number${spec.namesHint ? ` or ${spec.namesHint}` : ''}`);
    n = i + (spec.name === 'month' ? 1 : 0);
  }
  if (n < spec.min || n > spec.max) throw new Invalid(`${spec.name} ${token} is out of range ${spec.min}-${spec.max}`);
  return n;
}

function parseField(spec: FieldSpec, text: string): number[] {
  const values = new Set<number>();
  for (const item of text.split(',')) {
    if (item === '') throw new Invalid(`${spec.name} ${JSON.stringify(text)} has an empty list item`);
    const [base, step, extra] = item.split('/');
    if (extra !== undefined) throw new Invalid(`${spec.name} ${JSON.stringify(item)} has more than one step`);
    const last = spec.last ?? spec.max;
    let lo: number;
    let hi: number;
    if (base === '*') { lo = spec.min; hi = last; }
    else {
      const bounds = base!.split('-');
      if (bounds.length > 2 || bounds.includes('')) throw new Invalid(`${spec.name} ${JSON.stringify(item)} is not a number, range or step`);
      lo = fieldValue(spec, bounds[0]!);
      hi = bounds.length === 2 ? fieldValue(spec, bounds[1]!) : step !== undefined ? Math.max(lo, last) : lo;
      if (lo > hi) {
        const hint = spec.name === 'day-of-week' ? ' (7 is also Sunday: fri-sun is 5-7)' : '';
        throw new Invalid(`${spec.name} range ${base} goes backwards${hint}`);
      }
    }
    let by = 1;
    if (step !== undefined) {
      if (!/^\d+$/.test(step)) throw new Invalid(`${spec.name} step ${JSON.stringify(step)} is not a number`);
      by = Number(step);
      // A step that cannot reach a second value is a mistake ("*/90" for every 90 minutes
      // fires once an hour): cron steps restart at each hour, day or month.
      if (by < 1 || by > last - spec.min) {
        throw new Invalid(`${spec.name} step ${step} is out of range 1-${last - spec.min}`);
      }
    }
    for (let v = lo; v <= hi; v += by) values.add(spec.name === 'day-of-week' && v === 7 ? 0 : v);
  }
  return [...values].sort((a, b) => a - b);
}

const DAYS_IN_MONTH_MAX = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function listWords(words: readonly string[], last: string): string {
  return words.length <= 1 ? words.join('') : `${words.slice(0, -1).join(', ')} ${last} ${words[words.length - 1]}`;
}

function compileCron(text: string): CronSchedule {
  if (text !== text.trim()) throw new Invalid('has spaces around it');
  if (text.startsWith('@')) {
    const key = text.toLowerCase();
    if (key === '@reboot') throw new Invalid('@reboot is not supported: a schedule gives times to run at, not events');
    const fields = SHORTCUTS[key];
    if (fields === undefined) throw new Invalid(`unknown shortcut (known: ${Object.keys(SHORTCUTS).join(' ')})`);
    return { ...compileFields(fields), text };
  }
  return { ...compileFields(text), text };
}

function compileFields(text: string): CronSchedule {
  const parts = text === '' ? [] : text.split(/[ \t]+/);
  if (parts.length !== 5) {
    const extra = parts.length === 6 ? '; seconds and years are not supported' : '';
    throw new Invalid(`has ${parts.length} field${parts.length === 1 ? '' : 's'}, needs 5 (minute hour day-of-month month day-of-week)${extra}`);
  }
  const [minutes, hours, daysOfMonth, months, daysOfWeek] = FIELDS.map((spec, i) => parseField(spec, parts[i]!));
  const domStar = parts[2]!.startsWith('*');
  const dowStar = parts[4]!.startsWith('*');
  const dayRule = domStar || dowStar ? 'both' : 'either';
  // With "both", the day of month must exist in some allowed month. (Any weekday falls on
  // any day of any month over the years, so the day of week can never make it impossible;
  // with "either", the day of week alone always fires.)
  if (dayRule === 'both' && !months!.some((mo) => daysOfMonth![0]! <= DAYS_IN_MONTH_MAX[mo - 1]!)) {
    const names = months!.map((mo) => MONTH_FULL[mo - 1]!);
    throw new Invalid(`never fires: ${listWords(names, 'and')} ${names.length === 1 ? 'has' : 'have'} no day ${listWords(daysOfMonth!.map(String), 'or')}`);
  }
  return {
    text,
    fields: parts.join(' '),
    minutes: minutes!, hours: hours!, daysOfMonth: daysOfMonth!, months: months!, daysOfWeek: daysOfWeek!,
    dayRule,
    fixedTime: !parts[0]!.startsWith('*') && !parts[1]!.startsWith('*'),
  };
}

/**
 * Parses a crontab expression: five fields (minute hour day-of-month month day-of-week)
 * or a shortcut (@yearly @annually @monthly @weekly @daily @midnight @hourly). Throws a
 * ScheduleError that quotes the expression and names the field, e.g.
 * `cron "0 25 * * *": hour 25 is out of range 0-23`.
 */
export function parseCron(expr: string): CronSchedule {
  try {
    return compileCron(expr);
  } catch (e) {
    if (e instanceof Invalid) throw new ScheduleError(`cron ${JSON.stringify(expr)}: ${e.message}`);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------
// The next time a cron schedule fires
//
// The search runs on "wall" times: a local date and time of day counted as if it were UTC
// (milliseconds, read with the UTC getters), so that calendar steps never meet a
// daylight-saving change. Only then are wall times mapped to real instants, through the
// machine's time zone as Date sees it.

/** The offset of local time from UTC at instant t, in milliseconds (+2 h for CEST). */
function offsetAt(t: number): number {
  return -new Date(t).getTimezoneOffset() * MINUTE;
}

function wallOf(t: number): number {
  return t + offsetAt(t);
}

/**
 * The instants whose local time is `wall`, ascending: one as a rule, two when clocks go
 * back, none when they skip it. Assumes at most one change of offset within 14 hours of
 * it, which holds for every zone in use.
 */
function instantsOf(wall: number): number[] {
  // Offsets lie within -12 h..+14 h, so the instants lie within wall-14h..wall+12h.
  const offsets = new Set([offsetAt(wall - 14 * HOUR), offsetAt(wall), offsetAt(wall + 14 * HOUR)]);
  const out: number[] = [];
  for (const o of offsets) if (offsetAt(wall - o) === o) out.push(wall - o);
  return out.sort((a, b) => a - b);
}

/** For a skipped wall time: the instant the clocks jumped, i.e. the first one after it that exists. */
function gapEnd(wall: number): number {
  let lo = wall - 14 * HOUR;
  let hi = wall + 14 * HOUR;
  const before = offsetAt(lo);
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (offsetAt(mid) === before) lo = mid;
    else hi = mid;
  }
  return hi;
}

/** The smallest value of a sorted set that is >= v. */
function atLeast(set: readonly number[], v: number): number | undefined {
  for (const x of set) if (x >= v) return x;
  return undefined;
}

function dayMatches(c: CronSchedule, dayOfMonth: number, dayOfWeek: number): boolean {
  const dom = c.daysOfMonth.includes(dayOfMonth);
  const dow = c.daysOfWeek.includes(dayOfWeek);
  return c.dayRule === 'either' ? dom || dow : dom && dow;
}

/**
 * The first wall minute >= `wall` (minute-aligned) that the fields match, stepping by
 * month, day, hour and minute rather than minute by minute.
 */
function nextWallMatch(c: CronSchedule, wall: number): number {
  const start = new Date(wall);
  let y = start.getUTCFullYear();
  let mo = start.getUTCMonth() + 1;
  let d = start.getUTCDate();
  let h = start.getUTCHours();
  let mi = start.getUTCMinutes();
  // The Gregorian calendar repeats every 400 years: a schedule without a match in that
  // span has none at all (parseCron refuses those; this guards hand-made ones).
  const limit = y + 401;
  for (;;) {
    if (!(y <= limit)) throw new RangeError(`cron ${JSON.stringify(c.text)} never fires after ${start.toISOString()} (wall time)`);
    const month = atLeast(c.months, mo);
    if (month === undefined) { y++; mo = 1; d = 1; h = 0; mi = 0; continue; }
    if (month !== mo) { mo = month; d = 1; h = 0; mi = 0; }
    const days = new Date(Date.UTC(y, mo, 0)).getUTCDate();
    const weekdayOfFirst = new Date(Date.UTC(y, mo - 1, 1)).getUTCDay();
    let day = d;
    while (day <= days && !dayMatches(c, day, (weekdayOfFirst + day - 1) % 7)) day++;
    if (day > days) { mo++; d = 1; h = 0; mi = 0; if (mo > 12) { y++; mo = 1; } continue; }
    if (day !== d) { d = day; h = 0; mi = 0; }
    const hour = atLeast(c.hours, h);
    if (hour === undefined) { d++; h = 0; mi = 0; continue; }
    if (hour !== h) { h = hour; mi = 0; }
    const minute = atLeast(c.minutes, mi);
    if (minute === undefined) { h++; mi = 0; continue; }
    return Date.UTC(y, mo - 1, d, h, minute);
  }
}

/** The instants at which a matching wall minute fires (see nextCronTime). */
function firings(c: CronSchedule, wall: number): number[] {
  const at = instantsOf(wall);
  if (at.length === 0) return c.fixedTime ? [gapEnd(wall)] : [];
  return c.fixedTime ? [at[0]!] : at;
}

/** The earliest instant that a wall minute stands for (the jump, for a skipped one). */
function earliest(wall: number): number {
  return instantsOf(wall)[0] ?? gapEnd(wall);
}

/**
 * The first instant strictly after `afterMs` at which the schedule fires, at the start of a
 * minute, in the machine's local time zone (as cron does; set TZ to choose another).
 *
 * Daylight-saving changes follow Vixie cron:
 * - Clocks go forward (a local time is skipped): a fixed-time job (neither the minute nor the
 *   hour field starts with `*`, e.g. "30 2 * * *") due at a skipped time runs at the first
 *   minute that exists after it, i.e. at the instant the clocks jumped (03:00 in Berlin on
 *   2026-03-29), once however many of its times were skipped. Other jobs ("*\/15 * * * *",
 *   "30 * * * *") simply have no run at the skipped times: they run at their next time.
 * - Clocks go back (a local time happens twice): a fixed-time job runs at the first
 *   occurrence only; other jobs run at both, so an hourly job still runs every hour.
 */
export function nextCronTime(s: CronSchedule, afterMs: number): number {
  if (!Number.isFinite(afterMs)) throw new RangeError(`nextCronTime: ${afterMs} is not a time`);
  const minuteOf = (wall: number) => Math.floor(wall / MINUTE) * MINUTE;
  let wall = minuteOf(wallOf(afterMs)) + MINUTE;
  // When clocks go back soon, the repeated wall times start below the current one, and
  // their second occurrences still lie ahead: start the search that much earlier.
  const shift = offsetAt(afterMs) - offsetAt(afterMs + 26 * HOUR);
  if (shift > 0) wall = Math.min(wall, minuteOf(wallOf(afterMs) - shift));
  // Wall minutes come in order, and the earliest instant of each never decreases, so the
  // first firing after afterMs is found once a wall minute cannot start before it.
  let best = Infinity;
  for (;;) {
    wall = nextWallMatch(s, wall);
    for (const t of firings(s, wall)) if (t > afterMs && t < best) best = t;
    wall += MINUTE;
    if (best !== Infinity && earliest(wall) >= best) return best;
  }
}

// ---------------------------------------------------------------------------------------
// Schedules as the config gives them

export type Schedule =
  | { kind: 'every'; ms: number; text: string }
  | { kind: 'cron'; cron: CronSchedule; text: string };

/** A config value as JSON, for messages (whatever it is). */
function show(v: unknown): string {
  try {
    const json = JSON.stringify(v);
    if (json !== undefined) return json;
  } catch { /* a BigInt or a cycle: fall through */ }
  return String(v);
}

const SCHEDULE_EXAMPLES = '(e.g. { "every": "15m" } or { "cron": "0 * * * *" })';

/**
 * Reads a schedule from a config value: `{ "every": "15m" }` or `{ "cron": "*\/15 * * * *" }`,
 * exactly one of the two. `field` is the value's path in the config; every ScheduleError
 * message starts with it, e.g. `snapshots.schedule.every: "15x" is not an interval (...)`.
 */
export function parseSchedule(value: unknown, field: string): Schedule {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ScheduleError(`${field}: must be an object with "every" or "cron" ${SCHEDULE_EXAMPLES}, not ${show(value)}`);
  }
  const keys = Object.keys(value);
  const unknown = keys.find((k) => k !== 'every' && k !== 'cron');
  if (unknown !== undefined) throw new ScheduleError(`${field}: unknown key ${JSON.stringify(unknown)} (a schedule has either "every" or "cron")`);
  if (keys.length !== 1) {
    throw new ScheduleError(keys.length === 0 ? `${field}: needs "every" or "cron" ${SCHEDULE_EXAMPLES}` : `${field}: give either "every" or "cron", not both`);
  }
  const key = keys[0] as 'every' | 'cron';
  const text = (value as Record<string, unknown>)[key];
  if (typeof text !== 'string') {
    const example = key === 'every' ? '"15m"' : '"0 * * * *"';
    throw new ScheduleError(`${field}.${key}: must be a string such as ${example}, not ${show(text)}`);
  }
  try {
    if (key === 'every') return { kind: 'every', ms: parseInterval(text), text };
    return { kind: 'cron', cron: compileCron(text), text };
  } catch (e) {
    if (e instanceof ScheduleError) throw new ScheduleError(`${field}.${key}: ${e.message}`);
    if (e instanceof Invalid) throw new ScheduleError(`${field}.${key}: ${JSON.stringify(text)}: ${e.message}`);
    throw e;
  }
}

/** A short text for status output: "every 15 min", "every 1 h 30 min", "cron 0 * * * *". */
export function describeSchedule(s: Schedule): string {
  return s.kind === 'every' ? `every ${formatInterval(s.ms)}` : `cron ${s.text}`;
}

/**
 * When a job on schedule `s` is next due, given when it last ran (null: never) and the
 * time now. A result <= nowMs means "due now": run it at the next chance.
 *
 * - every: a job never run is due at once (nowMs); otherwise lastRunMs + interval, returned
 *   as is when that is already past (a missed run).
 * - cron: a job never run is due at the first firing after nowMs. Otherwise the first firing
 *   after lastRunMs; when that is <= nowMs (runs were missed, e.g. the daemon was down), it
 *   is returned, so the job runs once at the next chance, however many runs were missed.
 *
 * Once only, provided the caller records as lastRunMs the time the job actually ran (not
 * the time this returned): the next call then looks for firings after that.
 * For a cron job never run, the result is always after nowMs: keep it and run the job when
 * it comes, rather than ask again at that moment (which gives the time after it).
 * A lastRunMs later than nowMs (the clock was set back) counts as nowMs, so that a job does
 * not wait for the clock to catch up with a run in its future.
 */
export function nextRun(s: Schedule, lastRunMs: number | null, nowMs: number): number {
  const last = lastRunMs === null ? null : Math.min(lastRunMs, nowMs);
  if (s.kind === 'every') return last === null ? nowMs : last + s.ms;
  return nextCronTime(s.cron, last ?? nowMs);
}
