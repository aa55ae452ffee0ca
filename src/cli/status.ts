import path from 'node:path';
import { ReplfsError, messageOf } from '../errors/index.js';
import type { VolumeStatus } from '../volume/index.js';
import { STATE_DIR, CONFIG_FILE } from '../volume/format.js';
import { DEFAULT_POLICY } from '../policy/config.js';
import { ago } from '../policy/alerts.js';
import { formatBytes } from '../policy/size.js';
import { call } from '../control/client.js';
import { locate } from './locate.js';
import type { OperationsStatus, DestinationStatus } from './operator.js';
import { loadPolicy } from './policy.js';
import { printJson, type Command } from './command.js';

export type FullStatus = VolumeStatus & { operations?: OperationsStatus };

/** Exit codes of `status --check`, as monitoring systems (Nagios plugins) read them. */
export const CheckExit = { ok: 0, warning: 1, critical: 2, unknown: 3 } as const;

/** The status of the volume at `p`: from its daemon, or from the volume opened read-only. */
export async function getStatus(p: string, outside: string | null = null): Promise<FullStatus> {
  const target = await locate(p);
  if (target.kind === 'daemon') return call<FullStatus>(target.record.socket, 'status');
  const [{ Volume, inlineSyscalls }, { operationsStatus }] = await Promise.all([import('../volume/index.js'), import('./operator.js')]);
  inlineSyscalls(true);
  const { volume } = await Volume.open(target.root, { writable: false });
  try {
    const base = await volume.status({ mountpoint: null, pid: null });
    if (await volume.replicaMeta()) return base;
    const file = path.join(target.root, STATE_DIR, CONFIG_FILE);
    let loaded: { policy: typeof DEFAULT_POLICY; source: string; error: string | null };
    try {
      const l = await loadPolicy({ volume: { read: file, shown: file }, outside, hookCwd: target.root }, false);
      loaded = { policy: l.policy, source: l.source, error: null };
    } catch (err) {
      // Status still answers: the error is what it has to say.
      loaded = { policy: DEFAULT_POLICY, source: outside ?? file, error: messageOf(err) };
    }
    return { ...base, operations: await operationsStatus(volume, loaded, { mounted: false, jobs: null }) };
  } finally {
    await volume.close();
  }
}

function when(t: number | null, now: number): string {
  if (t === null) return 'never';
  const d = t - now;
  const iso = new Date(t).toISOString().replace(/\.\d+Z$/, 'Z');
  if (Math.abs(d) < 1000) return `${iso} (now)`;
  return d > 0 ? `${iso} (in ${ago(d)})` : `${iso} (${ago(-d)} ago)`;
}

function destinationLines(d: DestinationStatus, now: number): string[] {
  const rows: Array<[string, string]> = [];
  rows.push(['schedule', d.enabled ? d.schedule ?? 'by hand' : 'disabled']);
  if (d.confirmed) {
    const rpo = d.rpoMs === null ? '' : `, RPO ${ago(d.rpoMs)}: ${d.lagMs! > d.rpoMs ? 'EXCEEDED' : 'ok'}`;
    rows.push(['confirmed', `${d.confirmed.snapshot} (source time ${d.confirmed.sourceTime}; lag ${ago(d.lagMs!)}${rpo})`]);
  } else {
    rows.push(['confirmed', `nothing yet${d.rpoMs === null ? '' : ` (RPO ${ago(d.rpoMs)})`}`]);
  }
  if (d.pending) rows.push(['pending', `${d.pending.files} files, ${formatBytes(d.pending.bytes)} changed since ${d.confirmed!.snapshot}`]);
  if (d.lastSync) {
    const s = d.lastSync;
    rows.push(['last sync', `${when(s.at, now)}: ${s.snapshot}, ${s.kind}, ${s.filesChanged} files, ${formatBytes(s.bytesSent)} sent (${formatBytes(s.bytesOnWire)} on the wire), ${(s.durationMs / 1000).toFixed(1)} s`]);
  }
  if (d.lastError) {
    rows.push(['last error', `${when(d.lastError.at, now)}: ${d.lastError.message}${d.failingSince !== null ? ` (failing since ${when(d.failingSince, now)})` : ''}`]);
  }
  if (d.running) rows.push(['next run', 'running now']);
  else if (d.nextRun !== null) rows.push(['next run', when(d.nextRun, now)]);
  if (d.space) rows.push(['space', `${formatBytes(d.space.free)} free of ${formatBytes(d.space.total)} (as of ${when(d.space.at, now)})`]);
  if (d.fullCompare) rows.push(['note', `the next sync compares every block: ${d.fullCompare.reason}`]);
  return [`destination ${d.name}${d.name !== d.url ? `  (${d.url})` : ''}${d.configured ? '' : '  (not in the policy: synced by hand)'}`, ...rows.map(([k, v]) => `  ${k.padEnd(11)}${v}`)];
}

/** The one line `--check` prints, with performance data after the bar. */
export function checkLine(s: FullStatus): { line: string; exit: number } {
  const ops = s.operations;
  if (!ops) return { line: `REPLFS OK - ${s.root} is a replica`, exit: CheckExit.ok };
  const perf = ops.destinations.filter((d) => d.lagMs !== null).map((d) => {
    const label = `'lag_${d.name.replace(/'/g, '')}'`;
    return `${label}=${Math.round(d.lagMs! / 1000)}s${d.rpoMs !== null ? `;${Math.round(d.rpoMs / 1000)};${Math.round(2 * d.rpoMs / 1000)}` : ''}`;
  });
  const tail = perf.length ? ` | ${perf.join(' ')}` : '';
  if (ops.severity === 'ok') {
    const n = ops.destinations.filter((d) => d.enabled).length;
    return { line: `REPLFS OK - ${s.root}: ${n === 0 ? 'no destinations' : `${n} destination${n === 1 ? '' : 's'} within policy`}${tail}`, exit: CheckExit.ok };
  }
  const word = ops.severity.toUpperCase();
  return { line: `REPLFS ${word} - ${s.root}: ${ops.alerts.map((a) => a.message).join('; ')}${tail}`, exit: CheckExit[ops.severity] };
}

export const status: Command = {
  name: 'status',
  summary: 'Show a volume: mount, journal, each destination (lag against its RPO, last sync) and alerts.',
  args: '[<path>]',
  description: [
    'The path may be the protected directory, its mountpoint, or anything inside them (default: the current directory).',
    'With --check, prints one line and exits 0 (OK), 1 (WARNING), 2 (CRITICAL) or 3 (UNKNOWN: the',
    'status could not be read), as monitoring systems (Nagios, Icinga, Zabbix agents) expect.',
  ].join('\n'),
  options: {
    json: { type: 'boolean', description: 'print the status as JSON (schema in docs/cli.md)' },
    check: { type: 'boolean', description: 'one line and the monitoring exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN' },
    config: { type: 'string', value: 'FILE', description: 'the policy file the volume is mounted with (mount --config), when it is not mounted' },
  },
  positionals: { min: 0, max: 1 },
  async run({ values, positionals }) {
    const outside = typeof values.config === 'string' ? path.resolve(values.config) : null;
    if (values.json && values.check) throw new ReplfsError('usage', '--json and --check do not go together');
    if (values.check) {
      let s: FullStatus;
      try {
        s = await getStatus(positionals[0] ?? '.', outside);
      } catch (err) {
        console.log(`REPLFS UNKNOWN - ${messageOf(err)}`);
        return CheckExit.unknown;
      }
      const { line, exit } = checkLine(s);
      console.log(line);
      return exit;
    }
    const s = await getStatus(positionals[0] ?? '.', outside);
    if (values.json) {
      printJson(s);
      return 0;
    }
    const rows: Array<[string, string]> = [
      ['volume', `${s.root}  (id ${s.volumeId}, format ${s.formatVersion}, block size ${formatBytes(s.blockSize)})`],
      ['mount', s.mounted ? `${s.mountpoint === s.root ? 'mounted in place' : `mounted at ${s.mountpoint}`} (daemon pid ${s.pid})` : 'not mounted'],
      ['epoch', String(s.epoch)],
      ['journal', `${s.journal.entries} entries, ${formatBytes(s.journal.bytes)} on disk, durability ${s.durability}`],
      ['changed', `${s.journal.dirtyFiles} files, ${formatBytes(s.journal.dirtyBytes)} dirty`],
      ['files', String(s.files)],
    ];
    if (!s.lastCleanShutdown && !s.mounted) rows.push(['warning', 'the last daemon did not shut down cleanly; recovery runs at the next mount']);
    const ops = s.operations;
    if (ops) {
      rows.push(['policy', `${ops.policy}${ops.configError ? `  (INVALID: ${ops.configError})` : ''}`]);
      const snap = ops.snapshots;
      rows.push(['snapshots', snap.schedule
        ? `${snap.schedule}; last ${when(snap.lastRun, ops.now)}${ops.scheduler ? `, next ${when(snap.nextRun, ops.now)}` : ' (the schedule runs while mounted)'}`
        : 'taken by hand (no schedule)']);
      if (ops.journal.overflowedNow) rows.push(['journal', 'overflowed in this epoch (journal.maxBytes): changed files are compared whole']);
      rows.push(['health', ops.severity === 'ok' ? 'OK' : `${ops.severity.toUpperCase()} (${ops.alerts.length} alert${ops.alerts.length === 1 ? '' : 's'})`]);
    }
    for (const [k, v] of rows) console.log(`${k.padEnd(10)}${v}`);
    if (ops) {
      for (const d of ops.destinations) console.log(['', ...destinationLines(d, ops.now)].join('\n'));
      if (ops.alerts.length) {
        console.log('\nalerts');
        for (const a of ops.alerts) console.log(`  ${a.severity.toUpperCase().padEnd(9)}${a.kind}${a.destination ? ` (${a.destination})` : ''}: ${a.message}`);
      }
    }
    return 0;
  },
};
