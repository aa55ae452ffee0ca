// The volume's policy: what `.replfs/config.json` (or a file given with --config) says
// about snapshots, quiesce hooks, retention, destinations, alerts and the journal bound.
// Parsing is pure and every error names its field: `destinations.offsite.rpo: ...`.
// The volume's own keys (formatVersion, volumeId, blockSize, createdAt, journal) live only
// in its .replfs/config.json; a policy file given with --config holds the rest.
import { ConfigError, parseQuiesce, QUIESCE_DEFAULTS, type QuiesceConfig } from './hooks.js';
import { parseDuration, PolicyError, type KeepPolicy } from './retention.js';
import { parseSchedule, parseInterval, ScheduleError, type Schedule } from './schedule.js';
import { parseSize } from './size.js';

export { ConfigError };

export interface SnapshotPolicy {
  /** When the daemon takes snapshots by itself; null: only when asked. */
  schedule: Schedule | null;
  /** Scheduled snapshots run the quiesce hooks. */
  quiesce: boolean;
  /** The label scheduled snapshots carry. */
  label: string;
}

export interface DestinationPolicy {
  name: string;
  /** As `replfs sync` takes it: a path, [user@]host:/path, ssh://..., replfs://host:port/NAME. */
  url: string;
  /** Its own schedule (a new snapshot each time), or null: each scheduled snapshot is sent once taken. */
  schedule: Schedule | null;
  /** Bytes per second, or null for no limit. */
  bwlimit: number | null;
  compress: boolean;
  tokenFile: string | null;
  tlsCa: string | null;
  /** Which of the replica's snapshots to keep; null keeps them all. */
  retention: KeepPolicy | null;
  /** The recovery point objective: how old the newest snapshot the replica holds may get. */
  rpoMs: number | null;
  /** A disabled destination is neither synced by the schedule nor checked by status. */
  enabled: boolean;
}

export interface AlertPolicy {
  /** Shell command run for every alert raised and resolved, with the details in its environment. */
  onAlert: string | null;
  timeoutMs: number;
  env: Record<string, string>;
  /** A destination failing with transient errors for this long is an alert. */
  unreachableAfterMs: number;
  /** Free space on a destination below this is an alert: a byte count, or a share of its size. */
  minFree: { bytes: number } | { percent: number };
  /** An alert still active is raised again after this long; null: once. */
  repeatAfterMs: number | null;
}

export interface JournalPolicy {
  durability: 'default' | 'strict';
  flushIntervalMs: number;
  /** Past this many bytes of block detail in one epoch, the journal keeps only which files changed. */
  maxBytes: number;
}

export interface Policy {
  snapshots: SnapshotPolicy;
  quiesce: QuiesceConfig;
  /** Source snapshots to keep, applied after each scheduled snapshot; null keeps them all. */
  retention: KeepPolicy | null;
  destinations: DestinationPolicy[];
  alerts: AlertPolicy;
  journal: JournalPolicy;
}

/** Keys of the volume itself, written by init: only in its own .replfs/config.json. */
export const ENGINE_KEYS = ['formatVersion', 'volumeId', 'blockSize', 'createdAt', 'journal'] as const;
const POLICY_KEYS = ['snapshots', 'quiesce', 'retention', 'destinations', 'alerts'] as const;

export const JOURNAL_DEFAULTS: JournalPolicy = { durability: 'default', flushIntervalMs: 1000, maxBytes: 256 * 1024 * 1024 };
export const ALERT_DEFAULTS: AlertPolicy = {
  onAlert: null, timeoutMs: 30_000, env: {}, unreachableAfterMs: 15 * 60_000, minFree: { percent: 5 }, repeatAfterMs: 24 * 3_600_000,
};

/** Says what is wrong with a hook command (missing, not executable), or null. */
export type CommandProbe = (command: string) => Promise<string | null>;
/** Says what is wrong with a destination URL, or null. */
export type UrlProbe = (url: string) => string | null;

export interface ParseOptions {
  /**
   * `volume`: the volume's own config.json, engine keys allowed; `outside`: a file given
   * with --config; `load`: a file `replfs config --load` puts into the volume's config.json
   * (the policy and the journal bound, never the volume's identity).
   */
  origin: 'volume' | 'outside' | 'load';
  probeUrl?: UrlProbe;
}

type Obj = Record<string, unknown>;

function object(value: unknown, field: string): Obj {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ConfigError(field, 'must be an object');
  return value as Obj;
}

function onlyKeys(obj: Obj, field: string, known: readonly string[]): void {
  for (const key of Object.keys(obj)) {
    if (!known.includes(key)) throw new ConfigError(field ? `${field}.${key}` : key, `unknown key (known: ${known.join(', ')})`);
  }
}

function bool(value: unknown, field: string): boolean {
  if (typeof value !== 'boolean') throw new ConfigError(field, 'must be true or false');
  return value;
}

function text(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.trim() === '') throw new ConfigError(field, 'must be a non-empty string');
  if (value.includes('\0')) throw new ConfigError(field, 'must not hold a NUL');
  return value;
}

function wholeMs(value: unknown, field: string, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
    throw new ConfigError(field, `must be a whole number of milliseconds between 1 and ${max}`);
  }
  return value;
}

function interval(value: unknown, field: string): number {
  if (typeof value !== 'string') throw new ConfigError(field, 'must be an interval written as a string, as in "15m", "1h30m" or "2d"');
  try {
    return parseInterval(value);
  } catch (err) {
    if (err instanceof ScheduleError) throw new ConfigError(field, err.message);
    throw err;
  }
}

function size(value: unknown, field: string, min = 1): number {
  const n = typeof value === 'string' ? parseSize(value) : undefined;
  if (n === undefined) throw new ConfigError(field, 'must be a size written as a string with a unit, as in "64M" or "1G"');
  if (n < min) throw new ConfigError(field, `must be at least ${min} bytes`);
  return n;
}

function env(value: unknown, field: string): Record<string, string> {
  const obj = object(value, field);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new ConfigError(`${field}.${k}`, 'is not an environment variable name (letters, digits and _, not starting with a digit)');
    if (typeof v !== 'string') throw new ConfigError(`${field}.${k}`, 'must be a string');
    if (v.includes('\0')) throw new ConfigError(`${field}.${k}`, 'must not hold a NUL');
    out[k] = v;
  }
  return out;
}

function command(value: unknown, field: string): string | null {
  if (value === null) return null;
  if (typeof value !== 'string' || value.trim() === '') throw new ConfigError(field, 'must be a shell command (a non-empty string) or null');
  return value;
}

function schedule(value: unknown, field: string): Schedule {
  try {
    return parseSchedule(value, field);
  } catch (err) {
    if (!(err instanceof ScheduleError)) throw err;
    // parseSchedule's messages begin with the field they are about (maybe field.every).
    const m = /^([\w.-]+): (.*)$/s.exec(err.message);
    if (m && m[1]!.startsWith(field)) throw new ConfigError(m[1]!, m[2]!);
    throw new ConfigError(field, err.message);
  }
}

const COUNT_KEYS = { 'keep-last': 'last', 'keep-hourly': 'hourly', 'keep-daily': 'daily', 'keep-weekly': 'weekly', 'keep-monthly': 'monthly' } as const;
const RETENTION_KEYS = [...Object.keys(COUNT_KEYS), 'keep-within'];

/** `{ "keep-last": 24, "keep-daily": 7, "keep-within": "2d" }`, as `replfs prune` takes them. */
export function parseRetention(value: unknown, field: string): KeepPolicy | null {
  if (value === null) return null;
  const obj = object(value, field);
  onlyKeys(obj, field, RETENTION_KEYS);
  const out: KeepPolicy = {};
  for (const [key, v] of Object.entries(obj)) {
    const f = `${field}.${key}`;
    if (key === 'keep-within') {
      if (typeof v !== 'string') throw new ConfigError(f, 'must be a duration written as a string, as in "7d" or "1y2m" (m is months here, as in replfs prune)');
      try {
        out.withinMs = parseDuration(v);
      } catch (err) {
        if (err instanceof PolicyError) throw new ConfigError(f, err.message);
        throw err;
      }
    } else {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new ConfigError(f, 'must be a whole number of at least 1');
      out[COUNT_KEYS[key as keyof typeof COUNT_KEYS]] = v;
    }
  }
  if (Object.keys(out).length === 0) throw new ConfigError(field, 'say what to keep (keep-last, keep-hourly, keep-daily, keep-weekly, keep-monthly, keep-within), or write null to keep everything');
  return out;
}

function parseSnapshots(value: unknown): SnapshotPolicy {
  const out: SnapshotPolicy = { schedule: null, quiesce: false, label: 'scheduled' };
  if (value === undefined || value === null) return out;
  const obj = object(value, 'snapshots');
  onlyKeys(obj, 'snapshots', ['schedule', 'quiesce', 'label']);
  if (obj.schedule !== undefined && obj.schedule !== null) out.schedule = schedule(obj.schedule, 'snapshots.schedule');
  if (obj.quiesce !== undefined) out.quiesce = bool(obj.quiesce, 'snapshots.quiesce');
  if (obj.label !== undefined) {
    out.label = text(obj.label, 'snapshots.label');
    if (out.label.length > 200) throw new ConfigError('snapshots.label', 'must be at most 200 characters');
  }
  return out;
}

const DESTINATION_KEYS = ['url', 'schedule', 'bwlimit', 'compress', 'tokenFile', 'tlsCa', 'retention', 'rpo', 'enabled'];

function parseDestinations(value: unknown, opts: ParseOptions): DestinationPolicy[] {
  if (value === undefined || value === null) return [];
  const obj = object(value, 'destinations');
  const out: DestinationPolicy[] = [];
  const urls = new Map<string, string>();
  for (const [name, raw] of Object.entries(obj)) {
    const field = `destinations.${name}`;
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) throw new ConfigError(field, 'a destination name is 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit');
    const d = object(raw, field);
    onlyKeys(d, field, DESTINATION_KEYS);
    if (d.url === undefined) throw new ConfigError(`${field}.url`, 'is required: where to sync to, as replfs sync takes it');
    const url = text(d.url, `${field}.url`);
    const urlProblem = opts.probeUrl?.(url);
    if (urlProblem) throw new ConfigError(`${field}.url`, urlProblem);
    const same = urls.get(url);
    if (same !== undefined) throw new ConfigError(`${field}.url`, `is also the url of destinations.${same}`);
    urls.set(url, name);
    let bwlimit: number | null = null;
    if (d.bwlimit !== undefined && d.bwlimit !== null) {
      bwlimit = size(d.bwlimit, `${field}.bwlimit`, 1024);
    }
    out.push({
      name,
      url,
      schedule: d.schedule === undefined || d.schedule === null ? null : schedule(d.schedule, `${field}.schedule`),
      bwlimit,
      compress: d.compress === undefined ? false : bool(d.compress, `${field}.compress`),
      tokenFile: d.tokenFile === undefined || d.tokenFile === null ? null : text(d.tokenFile, `${field}.tokenFile`),
      tlsCa: d.tlsCa === undefined || d.tlsCa === null ? null : text(d.tlsCa, `${field}.tlsCa`),
      retention: d.retention === undefined ? null : parseRetention(d.retention, `${field}.retention`),
      rpoMs: d.rpo === undefined || d.rpo === null ? null : interval(d.rpo, `${field}.rpo`),
      enabled: d.enabled === undefined ? true : bool(d.enabled, `${field}.enabled`),
    });
  }
  return out;
}

function parseAlerts(value: unknown): AlertPolicy {
  const out: AlertPolicy = { ...ALERT_DEFAULTS, env: {} };
  if (value === undefined || value === null) return out;
  const obj = object(value, 'alerts');
  onlyKeys(obj, 'alerts', ['onAlert', 'timeoutMs', 'env', 'unreachableAfter', 'minFree', 'repeatAfter']);
  if (obj.onAlert !== undefined) out.onAlert = command(obj.onAlert, 'alerts.onAlert');
  if (obj.timeoutMs !== undefined) out.timeoutMs = wholeMs(obj.timeoutMs, 'alerts.timeoutMs', 3_600_000);
  if (obj.env !== undefined) out.env = env(obj.env, 'alerts.env');
  if (obj.unreachableAfter !== undefined) out.unreachableAfterMs = interval(obj.unreachableAfter, 'alerts.unreachableAfter');
  if (obj.repeatAfter !== undefined) out.repeatAfterMs = obj.repeatAfter === null ? null : interval(obj.repeatAfter, 'alerts.repeatAfter');
  if (obj.minFree !== undefined) {
    const v = obj.minFree;
    const pct = typeof v === 'string' ? /^(\d+(?:\.\d+)?)%$/.exec(v) : null;
    if (pct) {
      const percent = Number(pct[1]);
      if (percent <= 0 || percent >= 100) throw new ConfigError('alerts.minFree', 'a share of the destination\'s size must be between 0% and 100%, as in "5%"');
      out.minFree = { percent };
    } else {
      if (typeof v !== 'string' || parseSize(v) === undefined) throw new ConfigError('alerts.minFree', 'must be a size such as "10G", or a share of the destination\'s size such as "5%"');
      out.minFree = { bytes: parseSize(v)! };
    }
  }
  return out;
}

/** The `journal` object of the volume's own config.json. */
export function parseJournal(value: unknown): JournalPolicy {
  const out: JournalPolicy = { ...JOURNAL_DEFAULTS };
  if (value === undefined || value === null) return out;
  const obj = object(value, 'journal');
  onlyKeys(obj, 'journal', ['durability', 'flushIntervalMs', 'maxBytes']);
  if (obj.durability !== undefined) {
    if (obj.durability !== 'default' && obj.durability !== 'strict') throw new ConfigError('journal.durability', 'must be "default" or "strict"');
    out.durability = obj.durability;
  }
  if (obj.flushIntervalMs !== undefined) out.flushIntervalMs = wholeMs(obj.flushIntervalMs, 'journal.flushIntervalMs', 60_000);
  if (obj.maxBytes !== undefined) out.maxBytes = size(obj.maxBytes, 'journal.maxBytes', 64 * 1024);
  return out;
}

/** Checks that the hook commands can run (parsePolicy only checks their shape): a ConfigError names the first that cannot. */
export async function checkCommands(p: Policy, probe: CommandProbe): Promise<void> {
  const hooks: Array<[string, string | null]> = [['quiesce.pre', p.quiesce.pre], ['quiesce.post', p.quiesce.post], ['alerts.onAlert', p.alerts.onAlert]];
  for (const [field, cmd] of hooks) {
    if (cmd === null) continue;
    const problem = await probe(cmd);
    if (problem) throw new ConfigError(field, problem);
  }
}

/**
 * Parses a whole config file's JSON value. Throws ConfigError naming the first bad field.
 * A missing key takes its default; `replfs config` shows every default filled in.
 */
export function parsePolicy(raw: unknown, opts: ParseOptions): Policy {
  const obj = object(raw, '(the file)');
  const known: readonly string[] = opts.origin === 'volume' ? [...ENGINE_KEYS, ...POLICY_KEYS] : opts.origin === 'load' ? ['journal', ...POLICY_KEYS] : POLICY_KEYS;
  for (const key of Object.keys(obj)) {
    if (known.includes(key)) continue;
    if ((ENGINE_KEYS as readonly string[]).includes(key)) {
      throw new ConfigError(key, opts.origin === 'load'
        ? 'is the volume\'s own and is never loaded: leave it out'
        : 'belongs to the volume itself (its .replfs/config.json), not to a policy file given with --config');
    }
    throw new ConfigError(key, `unknown key (known: ${known.join(', ')})`);
  }
  const policy: Policy = {
    snapshots: parseSnapshots(obj.snapshots),
    quiesce: parseQuiesce(obj.quiesce),
    retention: obj.retention === undefined ? null : parseRetention(obj.retention, 'retention'),
    destinations: parseDestinations(obj.destinations, opts),
    alerts: parseAlerts(obj.alerts),
    journal: parseJournal(opts.origin === 'outside' ? undefined : obj.journal),
  };
  return policy;
}

/** Parses a config file's text; JSON syntax errors name the line and column. */
export function parsePolicyText(source: string, opts: ParseOptions): Policy {
  let raw: unknown;
  try {
    raw = JSON.parse(source);
  } catch (err) {
    throw new ConfigError('(the file)', `is not valid JSON: ${jsonWhere(source, err)}`);
  }
  return parsePolicy(raw, opts);
}

function jsonWhere(source: string, err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const m = /position (\d+)/.exec(message);
  if (!m) return message;
  const pos = Number(m[1]);
  const before = source.slice(0, pos);
  const line = before.split('\n').length;
  const column = pos - before.lastIndexOf('\n');
  return `${message.replace(/ in JSON at position \d+.*$/, '')} at line ${line}, column ${column}`;
}

/** The policy as a config file would write it, every default filled in (`replfs config --json`). */
export function policyToJson(p: Policy): Record<string, unknown> {
  const retention = (k: KeepPolicy | null) => k === null ? null : {
    ...(k.last ? { 'keep-last': k.last } : {}),
    ...(k.hourly ? { 'keep-hourly': k.hourly } : {}),
    ...(k.daily ? { 'keep-daily': k.daily } : {}),
    ...(k.weekly ? { 'keep-weekly': k.weekly } : {}),
    ...(k.monthly ? { 'keep-monthly': k.monthly } : {}),
    ...(k.withinMs ? { 'keep-within': `${Math.round(k.withinMs / 3_600_000)}h` } : {}),
  };
  const sched = (s: Schedule | null) => s === null ? null : s.kind === 'every' ? { every: s.text } : { cron: s.text };
  return {
    snapshots: { schedule: sched(p.snapshots.schedule), quiesce: p.snapshots.quiesce, label: p.snapshots.label },
    quiesce: { ...p.quiesce },
    retention: retention(p.retention),
    destinations: Object.fromEntries(p.destinations.map((d) => [d.name, {
      url: d.url, schedule: sched(d.schedule), bwlimit: d.bwlimit === null ? null : sizeText(d.bwlimit), compress: d.compress,
      tokenFile: d.tokenFile, tlsCa: d.tlsCa, retention: retention(d.retention), rpo: d.rpoMs === null ? null : msText(d.rpoMs), enabled: d.enabled,
    }])),
    alerts: {
      onAlert: p.alerts.onAlert, timeoutMs: p.alerts.timeoutMs, env: p.alerts.env, unreachableAfter: msText(p.alerts.unreachableAfterMs),
      minFree: 'percent' in p.alerts.minFree ? `${p.alerts.minFree.percent}%` : sizeText(p.alerts.minFree.bytes),
      repeatAfter: p.alerts.repeatAfterMs === null ? null : msText(p.alerts.repeatAfterMs),
    },
    journal: { durability: p.journal.durability, flushIntervalMs: p.journal.flushIntervalMs, maxBytes: sizeText(p.journal.maxBytes) },
  };
}

/** A size as the config writes it, in the largest unit that divides it: "256M", "1536K". */
export function sizeText(n: number): string {
  for (const [unit, k] of [['T', 1024 ** 4], ['G', 1024 ** 3], ['M', 1024 ** 2], ['K', 1024]] as const) {
    if (n >= k && n % k === 0) return `${n / k}${unit}`;
  }
  return String(n);
}

/** An interval as the config writes it: "1d2h", "15m", "30s". */
export function msText(ms: number): string {
  const parts: string[] = [];
  let rest = Math.round(ms / 1000);
  for (const [unit, s] of [['d', 86_400], ['h', 3600], ['m', 60], ['s', 1]] as const) {
    if (rest >= s) { parts.push(`${Math.floor(rest / s)}${unit}`); rest %= s; }
  }
  return parts.join('') || '0s';
}

export const DEFAULT_POLICY: Policy = parsePolicy({}, { origin: 'outside' });
export { QUIESCE_DEFAULTS };
