// The write barrier. Every mutating operation enters and exits it; raising it holds new
// mutating operations and waits until the ones in flight have finished, so a snapshot
// (or garbage collection) sees no change half applied. Readers never pass through it.
import { ReplfsError } from '../errors/index.js';

export class Barrier {
  private inFlight = 0;
  private held: Promise<void> | null = null;
  private release: (() => void) | null = null;
  private drained: Array<() => void> = [];
  /** Raisers queue behind each other: one snapshot at a time. */
  private queue: Promise<void> = Promise.resolve();

  /** Null when the caller may go ahead at once (the fast path), else a promise to wait for. */
  enter(): Promise<void> | null {
    if (!this.held) {
      this.inFlight++;
      return null;
    }
    return this.waitAndEnter();
  }

  private async waitAndEnter(): Promise<void> {
    while (this.held) await this.held;
    this.inFlight++;
  }

  exit(): void {
    if (--this.inFlight === 0 && this.drained.length) for (const d of this.drained.splice(0)) d();
  }

  get raised(): boolean {
    return this.held !== null;
  }

  /**
   * Holds new mutating operations and waits for those in flight, at most `timeoutMs`.
   * On timeout the barrier drops again and this throws (exit code: timeout).
   */
  async raise(timeoutMs: number): Promise<void> {
    const turn = this.queue;
    let done!: () => void;
    this.queue = new Promise<void>((r) => { done = r; });
    await turn;
    this.held = new Promise<void>((r) => { this.release = () => { done(); r(); }; });
    if (this.inFlight === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const drained = new Promise<boolean>((res) => this.drained.push(() => res(true)));
    const timedOut = new Promise<boolean>((res) => { timer = setTimeout(() => res(false), timeoutMs); });
    const ok = await Promise.race([drained, timedOut]);
    clearTimeout(timer);
    if (!ok) {
      const busy = this.inFlight;
      this.lower();
      throw new ReplfsError('timeout', `the write barrier timed out after ${timeoutMs} ms: ${busy} change(s) still in flight`);
    }
  }

  lower(): void {
    const release = this.release;
    this.held = null;
    this.release = null;
    this.drained = [];
    release?.();
  }
}
