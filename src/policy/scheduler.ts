// Runs the policy's jobs on time: scheduled snapshots, syncs to each destination, prunes.
//
// - A job never overlaps itself, and jobs sharing a lane (the volume's own snapshots and
//   prunes) run one at a time; a job that comes due while its lane is busy runs when the
//   lane frees. A run missed while the daemon was down, or while busy, is taken at the
//   next chance, once however many were missed.
// - A transient failure is retried with exponential backoff (10 s doubling up to 10 min,
//   never later than the next scheduled run); a permanent one waits for the schedule.
// - Jobs can trigger others when they succeed (a snapshot triggers the prune and the
//   destinations that follow the snapshot schedule).
// - The clock is given, so tests drive time by hand.
import { nextRun, type Schedule } from './schedule.js';

export interface Clock {
  now(): number;
  setTimer(fn: () => void, ms: number): unknown;
  clearTimer(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer: (fn, ms) => { const t = setTimeout(fn, ms); t.unref(); return t; },
  clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** Why a job runs now. */
export type RunReason = 'schedule' | 'retry' | 'trigger' | 'missed';

/** Thrown by a job to say whether trying again soon may help. */
export class JobFailure extends Error {
  constructor(message: string, readonly transient: boolean) {
    super(message);
  }
}

export interface JobDef {
  id: string;
  /** Jobs with the same lane never run at once. */
  lane: string;
  /** When it runs by itself; null: only when triggered. */
  schedule: Schedule | null;
  /** Jobs started when this one succeeds. */
  triggers: string[];
  run(reason: RunReason, signal: AbortSignal): Promise<void>;
}

/** What the scheduler remembers of a job, across restarts. */
export interface JobRecord {
  /** The last time the schedule made it run (the anchor of the next run). */
  lastScheduled: number | null;
  lastStart: number | null;
  lastEnd: number | null;
  lastSuccess: number | null;
  lastDurationMs: number | null;
  lastError: { at: number; message: string; transient: boolean } | null;
  /** Consecutive failures. */
  failures: number;
  /** When the current run of failures began. */
  failingSince: number | null;
  retryAt: number | null;
}

export const EMPTY_RECORD: JobRecord = {
  lastScheduled: null, lastStart: null, lastEnd: null, lastSuccess: null, lastDurationMs: null, lastError: null, failures: 0, failingSince: null, retryAt: null,
};

export interface JobStatus extends JobRecord {
  id: string;
  running: boolean;
  /** When it runs next by itself (the schedule or a retry), or null. */
  nextRun: number | null;
}

export interface SchedulerEvents {
  /** A job's record changed: persist it. */
  saved(id: string, rec: JobRecord): void;
  log(line: string): void;
}

export const BACKOFF_BASE_MS = 10_000;
export const BACKOFF_MAX_MS = 10 * 60_000;

/** The wait before retry number `failures` (1 = the first retry). */
export function backoffMs(failures: number): number {
  return Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, failures - 1));
}

interface Job {
  def: JobDef;
  rec: JobRecord;
  running: Promise<void> | null;
  /** Triggered and not yet started. */
  triggered: boolean;
  abort: AbortController | null;
}

export class Scheduler {
  private readonly jobs = new Map<string, Job>();
  private readonly busyLanes = new Set<string>();
  private timer: unknown = null;
  private stopped = false;
  /** hold(): nothing starts, but what runs finishes as usual (and may be retried). */
  private held = false;

  constructor(private readonly clock: Clock, private readonly events: SchedulerEvents) {}

  /**
   * Sets the jobs (at start, and when the policy changes). A job keeps its record by id;
   * `records` gives the remembered ones for jobs the scheduler does not hold yet.
   */
  setJobs(defs: JobDef[], records: Record<string, JobRecord> = {}): void {
    const wanted = new Set(defs.map((d) => d.id));
    for (const id of [...this.jobs.keys()]) {
      if (!wanted.has(id)) this.jobs.delete(id);
    }
    const now = this.clock.now();
    for (const def of defs) {
      let job = this.jobs.get(def.id);
      if (job) job.def = def;
      else {
        job = { def, rec: { ...EMPTY_RECORD, ...(records[def.id] ?? {}) }, running: null, triggered: false, abort: null };
        this.jobs.set(def.id, job);
      }
      // A cron job never run counts from when it was first seen: its first time after that
      // is due then (asked later with no anchor, the schedule would always answer "later").
      if (def.schedule?.kind === 'cron' && job.rec.lastScheduled === null) {
        job.rec.lastScheduled = now;
        this.events.saved(def.id, { ...job.rec });
      }
    }
    this.wake();
  }

  /** Starts `id` at the next chance, as if its schedule said so now. */
  trigger(id: string): void {
    const job = this.jobs.get(id);
    if (!job) return;
    job.triggered = true;
    this.wake();
  }

  status(): JobStatus[] {
    return [...this.jobs.values()].map((j) => ({ id: j.def.id, ...j.rec, running: j.running !== null, nextRun: j.running ? null : this.dueAt(j) }));
  }

  /** Starts jobs again after stop() or hold(), as their records say. */
  resume(): void {
    this.stopped = false;
    this.held = false;
    this.wake();
  }

  /**
   * Starts nothing more until resume(), and waits for the running jobs to end by
   * themselves: for work that must not race with a job (mounting a replica a sync writes).
   * Runs that came due meanwhile start at resume().
   */
  async hold(): Promise<void> {
    this.held = true;
    this.cancelTimer();
    await Promise.all([...this.jobs.values()].filter((j) => j.running).map((j) => j.running));
  }

  /** Stops starting jobs; aborts the running ones and waits for them to end. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.cancelTimer();
    const running = [...this.jobs.values()].filter((j) => j.running);
    for (const j of running) j.abort?.abort();
    await Promise.all(running.map((j) => j.running));
  }

  private cancelTimer(): void {
    if (this.timer !== null) this.clock.clearTimer(this.timer);
    this.timer = null;
  }

  /** When the job is due by itself: its retry, or its schedule (maybe in the past: missed). */
  private dueAt(job: Job): number | null {
    const { def, rec } = job;
    let due: number | null = def.schedule ? nextRun(def.schedule, rec.lastScheduled, this.clock.now()) : null;
    if (rec.retryAt !== null && (due === null || rec.retryAt < due)) due = rec.retryAt;
    return due;
  }

  private wake(): void {
    if (this.stopped || this.held) return;
    this.cancelTimer();
    const now = this.clock.now();
    let soonest = Infinity;
    for (const job of this.jobs.values()) {
      if (job.running) continue;
      const due = job.triggered ? now : this.dueAt(job);
      if (due === null) continue;
      if (due <= now) {
        if (!this.busyLanes.has(job.def.lane)) this.start(job, now, due);
        continue;
      }
      soonest = Math.min(soonest, due);
    }
    // At most a day at a time: timers cannot wait for years, and the clock may be set.
    if (soonest !== Infinity) this.timer = this.clock.setTimer(() => { this.timer = null; this.wake(); }, Math.min(86_400_000, Math.max(0, soonest - now)));
  }

  private start(job: Job, now: number, due: number): void {
    const { def, rec } = job;
    let reason: RunReason;
    if (job.triggered) reason = 'trigger';
    else if (rec.retryAt !== null && rec.retryAt <= now) reason = 'retry';
    else reason = now - due > 1000 ? 'missed' : 'schedule';
    // A triggered or retried run that falls when the schedule is due counts as its run too;
    // the next is counted from now, so runs missed by hours are taken once.
    if (def.schedule && nextRun(def.schedule, rec.lastScheduled, now) <= now) rec.lastScheduled = now;
    job.triggered = false;
    rec.retryAt = null;
    rec.lastStart = now;
    this.busyLanes.add(def.lane);
    const abort = new AbortController();
    job.abort = abort;
    this.events.saved(def.id, { ...rec });
    job.running = (async () => {
      let failure: JobFailure | null = null;
      try {
        await def.run(reason, abort.signal);
      } catch (err) {
        failure = err instanceof JobFailure ? err : new JobFailure(err instanceof Error ? err.message : String(err), false);
      }
      const end = this.clock.now();
      rec.lastEnd = end;
      rec.lastDurationMs = end - now;
      if (failure === null) {
        rec.lastSuccess = end;
        rec.failures = 0;
        rec.failingSince = null;
        rec.lastError = null;
      } else {
        rec.failures++;
        rec.failingSince ??= now;
        rec.lastError = { at: end, message: failure.message, transient: failure.transient };
        // Stopping aborts runs: that is no failure worth a retry from here.
        if (failure.transient && !this.stopped) rec.retryAt = end + backoffMs(rec.failures);
        this.events.log(`${def.id}: ${failure.transient ? 'failed, will retry' : 'failed'}: ${failure.message}`);
      }
      this.events.saved(def.id, { ...rec });
      job.running = null;
      job.abort = null;
      this.busyLanes.delete(def.lane);
      if (failure === null && !this.stopped) for (const t of def.triggers) { const other = this.jobs.get(t); if (other) other.triggered = true; }
    })();
    void job.running.then(() => this.wake());
  }
}
