// Child process for schedule-zones.test.ts: runs in the time zone its parent put in TZ,
// follows cron expressions from given instants and prints what it found as JSON.
//   node schedule-zone.js '[{"expr":"30 2 * * *","after":"2026-03-28T12:00+01:00","count":2}]'
import { nextCronTime, parseCron } from '../../src/policy/schedule.js';

export interface ZoneQuery { expr: string; after: string; count: number }
export interface ZoneAnswer {
  /** The zone Node is in, as ICU names it: proves that TZ took effect. */
  zone: string;
  /** Per query: the successive firing instants, and the same as local times with offsets. */
  chains: Array<{ ms: number[]; local: string[] } | { error: string }>;
}

/** An instant as local time with its offset: "2026-03-29T03:00+02:00". */
function localText(t: number): string {
  const d = new Date(t);
  const off = -d.getTimezoneOffset();
  const p = (n: number) => String(Math.trunc(Math.abs(n))).padStart(2, '0');
  const wall = new Date(t + off * 60_000).toISOString().slice(0, 16);
  return `${wall}${off < 0 ? '-' : '+'}${p(off / 60)}:${p(off % 60)}`;
}

const queries = JSON.parse(process.argv[2] ?? '[]') as ZoneQuery[];
const answer: ZoneAnswer = {
  zone: Intl.DateTimeFormat().resolvedOptions().timeZone,
  chains: queries.map((q) => {
    try {
      const c = parseCron(q.expr);
      const ms: number[] = [];
      let at = Date.parse(q.after);
      for (let i = 0; i < q.count; i++) ms.push(at = nextCronTime(c, at));
      return { ms, local: ms.map(localText) };
    } catch (e) {
      return { error: String(e) };
    }
  }),
};
process.stdout.write(JSON.stringify(answer));
