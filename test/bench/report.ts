// Turning samples into the printed tables: medians, ratios against the targets, and
// plain fixed-width text.
import type { ConfigName } from './targets.js';

export interface Sample {
  /** The workload's figure: MB/s, files/s or ops/s. Higher is better. */
  value: number;
  /** Wall-clock seconds of the measured part. */
  seconds: number;
  /** CPU seconds the serving daemon used during the run (all threads, and the JS thread). */
  cpu: number | null;
  mainCpu: number | null;
}

export type WorkloadId = 'seqwrite' | 'seqread' | 'small' | 'random';

export interface WorkloadInfo {
  id: WorkloadId;
  title: string;
  unit: string;
}

export type Results = Map<WorkloadId, Map<ConfigName, Sample[]>>;

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function medianOf(samples: Sample[] | undefined): number | null {
  return samples && samples.length ? median(samples.map((s) => s.value)) : null;
}

export function formatNumber(v: number): string {
  if (v >= 1000) return Math.round(v).toLocaleString('en-US');
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

export function table(header: string[], rows: string[][], rightAlign: boolean[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (rightAlign[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function absoluteTable(workloads: WorkloadInfo[], configs: ConfigName[], results: Results): string {
  const rows = workloads.map((w) => {
    const byConfig = results.get(w.id);
    return [w.title, w.unit, ...configs.map((c) => {
      const s = byConfig?.get(c);
      if (!s || !s.length) return 'n/a';
      const vals = s.map((x) => x.value);
      const med = formatNumber(median(vals));
      return s.length > 1 ? `${med} (${formatNumber(Math.min(...vals))}-${formatNumber(Math.max(...vals))})` : med;
    })];
  });
  return table(['workload', 'unit', ...configs], rows, [false, false, ...configs.map(() => true)]);
}

/** Daemon CPU use during each workload, as a share of one core: all threads / JS thread. */
export function cpuTable(workloads: WorkloadInfo[], configs: ConfigName[], results: Results): string {
  const served = configs.filter((c) => c !== 'direct');
  const rows = workloads.map((w) => [w.title, ...served.map((c) => {
    const s = results.get(w.id)?.get(c)?.filter((x) => x.cpu !== null);
    if (!s || !s.length) return 'n/a';
    const total = median(s.map((x) => (100 * x.cpu!) / x.seconds));
    if (c === 'bindfs') return `${total.toFixed(0)}%`;
    const js = median(s.map((x) => (100 * x.mainCpu!) / x.seconds));
    return `${total.toFixed(0)}% / ${js.toFixed(0)}%`;
  })]);
  return table(['daemon CPU, % of one core', ...served.map((c) => (c === 'bindfs' ? c : `${c} (all / JS thread)`))], rows,
    [false, ...served.map(() => true)]);
}

export interface Check {
  workload: WorkloadId;
  /** replfs against this configuration. */
  against: ConfigName;
  /** Minimum ratio replfs / against, or a maximum journal overhead in percent, or neither (report only). */
  minRatio?: number;
  maxOverheadPct?: number;
}

/** The targets. Journal overhead is the extra time per unit of work: nojournal/replfs - 1. */
export const CHECKS: Check[] = [
  { workload: 'seqwrite', against: 'direct', minRatio: 0.8 },
  { workload: 'seqwrite', against: 'bindfs', minRatio: 1.0 },
  { workload: 'seqwrite', against: 'replfs-nojournal', maxOverheadPct: 10 },
  { workload: 'seqread', against: 'direct', minRatio: 0.8 },
  { workload: 'seqread', against: 'bindfs', minRatio: 1.0 },
  { workload: 'seqread', against: 'replfs-nojournal' },
  { workload: 'small', against: 'direct' },
  { workload: 'small', against: 'bindfs', minRatio: 1.0 },
  { workload: 'small', against: 'replfs-nojournal', maxOverheadPct: 10 },
  { workload: 'random', against: 'direct' },
  { workload: 'random', against: 'bindfs' },
  { workload: 'random', against: 'replfs-nojournal', maxOverheadPct: 10 },
];

export interface CheckResult {
  check: Check;
  ratio: number | null;
  overheadPct: number | null;
  verdict: 'PASS' | 'MISS' | 'report' | 'n/a';
}

export function evaluate(results: Results): CheckResult[] {
  return CHECKS.map((check) => {
    const mine = medianOf(results.get(check.workload)?.get('replfs'));
    const other = medianOf(results.get(check.workload)?.get(check.against));
    if (mine === null || other === null || mine <= 0 || other <= 0) return { check, ratio: null, overheadPct: null, verdict: 'n/a' };
    const ratio = mine / other;
    const overheadPct = check.against === 'replfs-nojournal' ? (other / mine - 1) * 100 : null;
    let verdict: CheckResult['verdict'] = 'report';
    if (check.minRatio !== undefined) verdict = ratio >= check.minRatio ? 'PASS' : 'MISS';
    if (check.maxOverheadPct !== undefined) verdict = overheadPct! <= check.maxOverheadPct ? 'PASS' : 'MISS';
    return { check, ratio, overheadPct, verdict };
  });
}

export function ratioTable(workloads: WorkloadInfo[], checks: CheckResult[]): string {
  const title = (id: WorkloadId) => workloads.find((w) => w.id === id)?.title ?? id;
  const rows = checks.map(({ check, ratio, overheadPct, verdict }) => {
    let value = ratio === null ? 'n/a' : `${ratio.toFixed(2)}x`;
    if (overheadPct !== null) value += ` (overhead ${overheadPct >= 0 ? '+' : ''}${overheadPct.toFixed(1)}%)`;
    const target = check.minRatio !== undefined ? `>= ${check.minRatio.toFixed(2)}x`
      : check.maxOverheadPct !== undefined ? `overhead <= ${check.maxOverheadPct}%` : 'report only';
    return [title(check.workload), `replfs / ${check.against}`, value, target, verdict];
  });
  return table(['workload', 'ratio', 'value', 'target', 'result'], rows, [false, false, true, false, false]);
}
