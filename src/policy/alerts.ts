// What is wrong with a volume's protection, from facts gathered by the daemon or by
// `replfs status`: pure, so every condition is table-tested. Severities follow the
// convention of monitoring systems (Nagios plugins): OK, WARNING, CRITICAL.
import type { AlertPolicy } from './config.js';

export type Severity = 'ok' | 'warning' | 'critical';
export type AlertKind = 'rpo' | 'unreachable' | 'sync-failed' | 'space' | 'journal' | 'snapshot-failed' | 'config' | 'not-mounted';

export interface Alert {
  /** Stable across evaluations: kind, and the destination when there is one. */
  key: string;
  kind: AlertKind;
  severity: Exclude<Severity, 'ok'>;
  destination: string | null;
  message: string;
}

export interface DestinationFacts {
  name: string;
  url: string;
  rpoMs: number | null;
  /** The source time of the newest snapshot the destination confirmed, or null if none. */
  confirmedSourceTime: number | null;
  /** Since when the policy names this destination (a destination never synced is late from then). */
  watchedSince: number;
  /** The start of the current run of failed syncs, or null when the last one worked. */
  failingSince: number | null;
  lastError: { message: string; transient: boolean } | null;
  /** Free and total bytes of the destination, as it last said. */
  space: { free: number; total: number } | null;
}

export interface JournalHealth {
  /** Epochs whose block detail was dropped (the journal grew past journal.maxBytes). */
  overflowed: boolean;
  /** Records found damaged or contradictory. */
  inconsistent: string | null;
}

export interface VolumeFacts {
  now: number;
  /** Whether a daemon serves the volume (changes are journaled and schedules run only then). */
  mounted: boolean;
  /** Whether the policy expects the volume to run by itself (a schedule, or destinations). */
  scheduled: boolean;
  journal: JournalHealth;
  /** The config on disk is invalid and the daemon runs with its previous one. */
  configError: string | null;
  /** The scheduled snapshot job keeps failing. */
  snapshotError: string | null;
  destinations: DestinationFacts[];
}

/** "2h10m", "45s": short durations for messages. */
export function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${m % 60 ? `${m % 60}m` : ''}`;
  return `${Math.floor(h / 24)}d${h % 24 ? `${h % 24}h` : ''}`;
}

function formatSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/** The lag of a destination: how old the newest state it holds is (never synced: since watched). */
export function lagOf(d: DestinationFacts, now: number): number {
  return now - (d.confirmedSourceTime ?? d.watchedSince);
}

/**
 * Every alert the facts call for:
 * - rpo: the lag exceeds the RPO (WARNING), or twice the RPO (CRITICAL);
 * - unreachable: syncs have failed with transient errors for longer than unreachableAfter (CRITICAL);
 * - sync-failed: the last sync failed with an error retrying will not fix (CRITICAL);
 * - space: the destination's free space is below minFree (WARNING);
 * - journal: an overflow (WARNING: the next syncs compare every block) or an inconsistency (CRITICAL);
 * - snapshot-failed: scheduled snapshots fail (CRITICAL);
 * - config: the config on disk is invalid, the previous one runs (WARNING);
 * - not-mounted: the policy has schedules or destinations and no daemon serves the volume (WARNING).
 */
export function evaluate(f: VolumeFacts, p: AlertPolicy): Alert[] {
  const out: Alert[] = [];
  if (!f.mounted && f.scheduled) {
    out.push({ key: 'not-mounted', kind: 'not-mounted', severity: 'warning', destination: null, message: 'the volume is not mounted: changes are not journaled and no schedule runs' });
  }
  if (f.configError) out.push({ key: 'config', kind: 'config', severity: 'warning', destination: null, message: `the config is invalid, the previous one stays in effect: ${f.configError}` });
  if (f.snapshotError) out.push({ key: 'snapshot-failed', kind: 'snapshot-failed', severity: 'critical', destination: null, message: `scheduled snapshots fail: ${f.snapshotError}` });
  if (f.journal.inconsistent) {
    out.push({ key: 'journal', kind: 'journal', severity: 'critical', destination: null, message: `the journal is inconsistent (${f.journal.inconsistent}); the next sync to each destination compares every block` });
  } else if (f.journal.overflowed) {
    out.push({ key: 'journal', kind: 'journal', severity: 'warning', destination: null, message: 'the journal overflowed (journal.maxBytes); the next sync to each destination compares every block' });
  }
  for (const d of f.destinations) {
    const key = (kind: AlertKind) => `${kind}:${d.name}`;
    if (d.rpoMs !== null) {
      const lag = lagOf(d, f.now);
      if (lag > d.rpoMs) {
        const since = d.confirmedSourceTime === null ? 'has never been synced' : `holds nothing newer than ${ago(lag)} ago`;
        out.push({ key: key('rpo'), kind: 'rpo', severity: lag > 2 * d.rpoMs ? 'critical' : 'warning', destination: d.name, message: `${d.name} ${since}: over its RPO of ${ago(d.rpoMs)}` });
      }
    }
    if (d.failingSince !== null && d.lastError) {
      if (!d.lastError.transient) {
        out.push({ key: key('sync-failed'), kind: 'sync-failed', severity: 'critical', destination: d.name, message: `syncs to ${d.name} fail: ${d.lastError.message}` });
      } else if (f.now - d.failingSince >= p.unreachableAfterMs) {
        out.push({ key: key('unreachable'), kind: 'unreachable', severity: 'critical', destination: d.name, message: `${d.name} has been unreachable for ${ago(f.now - d.failingSince)}: ${d.lastError.message}` });
      }
    }
    if (d.space) {
      const floor = 'percent' in p.minFree ? d.space.total * p.minFree.percent / 100 : p.minFree.bytes;
      if (d.space.free < floor) {
        out.push({ key: key('space'), kind: 'space', severity: 'warning', destination: d.name, message: `${d.name} is low on space: ${formatSize(d.space.free)} free of ${formatSize(d.space.total)}` });
      }
    }
  }
  return out;
}

export function worst(alerts: readonly Alert[]): Severity {
  if (alerts.some((a) => a.severity === 'critical')) return 'critical';
  return alerts.length ? 'warning' : 'ok';
}

/** An alert the manager has raised and not yet seen resolved. */
export interface ActiveAlert {
  kind: AlertKind;
  severity: Exclude<Severity, 'ok'>;
  destination: string | null;
  message: string;
  since: number;
  lastRaised: number;
}

export type AlertEvent = { state: 'raised' | 'repeated' | 'resolved'; alert: Alert; since: number };

/**
 * From the alerts active before and the alerts now, what to announce: new ones and those
 * whose severity changed are raised, those still active past `repeatAfterMs` repeated,
 * gone ones resolved. Returns the events and the new active set.
 */
export function transition(before: Record<string, ActiveAlert>, now: readonly Alert[], at: number, repeatAfterMs: number | null): { events: AlertEvent[]; active: Record<string, ActiveAlert> } {
  const events: AlertEvent[] = [];
  const active: Record<string, ActiveAlert> = {};
  for (const a of now) {
    const old = before[a.key];
    if (!old || old.severity !== a.severity) {
      events.push({ state: 'raised', alert: a, since: old?.since ?? at });
      active[a.key] = { kind: a.kind, severity: a.severity, destination: a.destination, message: a.message, since: old?.since ?? at, lastRaised: at };
    } else if (repeatAfterMs !== null && at - old.lastRaised >= repeatAfterMs) {
      events.push({ state: 'repeated', alert: a, since: old.since });
      active[a.key] = { ...old, message: a.message, lastRaised: at };
    } else {
      active[a.key] = { ...old, message: a.message };
    }
  }
  for (const [key, old] of Object.entries(before)) {
    if (!(key in active)) events.push({ state: 'resolved', alert: { key, kind: old.kind, severity: old.severity, destination: old.destination, message: old.message }, since: old.since });
  }
  return { events, active };
}
