// Which snapshots to keep, in restic's terms: keep the N newest; for the N newest hours,
// days, weeks or months that have snapshots, the newest snapshot of each; and every
// snapshot within a duration of the newest one. A snapshot kept by any rule is kept.
// Times are UTC; weeks start on Monday. Pure code: a table of snapshots in, a verdict out.

import type { KeepPolicy } from '../core/types.js';

export type { KeepPolicy };

export interface Dated {
  name: string;
  /** Milliseconds since the epoch. */
  time: number;
}

export interface Verdict {
  name: string;
  keep: boolean;
  /** The rules that keep it, e.g. ["last", "daily"]. */
  reasons: string[];
}

export class PolicyError extends Error {}

const UNIT_MS: Record<string, number> = { h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };

/** Parses a duration as restic writes it: 1y2m3w4d5h (y years, m months, w weeks, d days, h hours). */
export function parseDuration(text: string): number {
  const m = /^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?$/.exec(text);
  if (!m || text === '') throw new PolicyError(`${JSON.stringify(text)} is not a duration (examples: 12h, 7d, 2w, 1m, 1y2m)`);
  const [, y, mo, w, d, h] = m.map((x) => (x === undefined ? 0 : Number(x)));
  const ms = (y! * 365 + mo! * 30) * 86_400_000 + w! * UNIT_MS.w! + d! * UNIT_MS.d! + h! * UNIT_MS.h!;
  if (ms <= 0) throw new PolicyError(`${JSON.stringify(text)} is an empty duration`);
  return ms;
}

/** Checks a count given on the command line: a whole number >= 1. */
export function parseCount(option: string, text: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || !Number.isSafeInteger(Number(text))) {
    throw new PolicyError(`--${option} needs a whole number of at least 1, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

const bucket = {
  hourly: (t: number) => Math.floor(t / 3_600_000),
  daily: (t: number) => Math.floor(t / 86_400_000),
  // 1970-01-01 was a Thursday: shift so weeks start on Monday.
  weekly: (t: number) => Math.floor((t / 86_400_000 + 3) / 7),
  monthly: (t: number) => { const d = new Date(t); return d.getUTCFullYear() * 12 + d.getUTCMonth(); },
} as const;

export function decide(snapshots: readonly Dated[], policy: KeepPolicy): Verdict[] {
  const rules = Object.entries(policy).filter(([, v]) => v !== undefined);
  if (rules.length === 0) throw new PolicyError('say what to keep: at least one --keep-* option');
  const newestFirst = [...snapshots].sort((a, b) => b.time - a.time || (a.name < b.name ? 1 : -1));
  const reasons = new Map<string, string[]>(newestFirst.map((s) => [s.name, []]));
  if (policy.last) for (const s of newestFirst.slice(0, policy.last)) reasons.get(s.name)!.push('last');
  for (const kind of ['hourly', 'daily', 'weekly', 'monthly'] as const) {
    const n = policy[kind];
    if (!n) continue;
    const seen = new Set<number>();
    for (const s of newestFirst) {
      const b = bucket[kind](s.time);
      if (seen.has(b)) continue;
      if (seen.size >= n) break;
      seen.add(b);
      reasons.get(s.name)!.push(kind);
    }
  }
  if (policy.withinMs !== undefined && newestFirst.length) {
    const newest = newestFirst[0]!.time;
    for (const s of newestFirst) if (newest - s.time <= policy.withinMs) reasons.get(s.name)!.push('within');
  }
  return newestFirst.map((s) => ({ name: s.name, keep: reasons.get(s.name)!.length > 0, reasons: reasons.get(s.name)! }));
}
