// A one-line progress display for long commands on a terminal (stderr): files, bytes, rate
// and time left, redrawn at most a few times a second and wiped when the command ends.
import { formatBytes } from '../policy/size.js';
import type { SyncProgress } from '../replicate/sender.js';

export interface ProgressLine {
  update(p: SyncProgress): void;
  /** Wipes the line (before the command's own output). */
  done(): void;
}

const WIDTH = 24;

function clock(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const mmss = `${String(m).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
  return h > 0 ? `${h}:${mmss}` : mmss;
}

/** The line for `p`, `elapsed` seconds after the data phase began (pure, for tests). */
export function progressText(p: SyncProgress, elapsed: number): string {
  if (p.phase === 'plan') return 'finding what changed...';
  if (p.phase === 'names') return `applying names of ${p.filesTotal} files...`;
  if (p.phase === 'finish') return 'setting attributes and taking the replica snapshot...';
  const frac = p.bytesTotal > 0 ? Math.min(1, p.bytesDone / p.bytesTotal) : 1;
  const filled = Math.round(frac * WIDTH);
  const rate = elapsed > 0 ? p.bytesDone / elapsed : 0;
  const eta = rate > 0 ? (p.bytesTotal - p.bytesDone) / rate : NaN;
  return `[${'#'.repeat(filled)}${'.'.repeat(WIDTH - filled)}] ${String(Math.floor(frac * 100)).padStart(3)}%`
    + `  ${p.filesDone}/${p.filesTotal} files  ${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)}`
    + `  ${formatBytes(Math.round(rate))}/s  ${formatBytes(p.bytesSent)} sent  ETA ${clock(eta)}`;
}

/** A progress line on `stream` if it is a terminal; otherwise one that prints nothing. */
export function progressLine(stream: NodeJS.WriteStream = process.stderr): ProgressLine {
  if (!stream.isTTY) return { update() {}, done() {} };
  let dataStart = 0;
  let shown = false;
  return {
    update(p) {
      if (p.phase === 'data' && dataStart === 0) dataStart = Date.now();
      const text = progressText(p, dataStart ? (Date.now() - dataStart) / 1000 : 0);
      const cols = stream.columns ?? 100;
      stream.write(`\r${text.slice(0, cols - 1)}\x1b[K`);
      shown = true;
    },
    done() {
      if (shown) stream.write('\r\x1b[K');
      shown = false;
    },
  };
}
