// The scheduler under a fake clock: time moves only when a test says so.
import test from '../helpers/ava.js';
import { BACKOFF_BASE_MS, BACKOFF_MAX_MS, JobFailure, Scheduler, backoffMs, type Clock, type JobDef, type JobRecord, type RunReason } from '../../src/policy/scheduler.js';
import { parseSchedule } from '../../src/policy/schedule.js';

class FakeClock implements Clock {
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private nextId = 1;
  constructor(public t: number) {}
  now(): number { return this.t; }
  setTimer(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  }
  clearTimer(h: unknown): void { this.timers = this.timers.filter((x) => x.id !== h); }
  get pending(): number { return this.timers.length; }
  /** Moves time forward by `ms`, firing timers in order and letting the jobs they start run. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    await settle();
    for (;;) {
      const next = [...this.timers].sort((a, b) => a.at - b.at)[0];
      if (!next || next.at > end) break;
      this.timers = this.timers.filter((x) => x !== next);
      this.t = Math.max(this.t, next.at);
      next.fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

interface Harness {
  clock: FakeClock;
  sched: Scheduler;
  runs: Array<{ id: string; at: number; reason: RunReason }>;
  saved: Map<string, JobRecord>;
  logs: string[];
}

const T0 = Date.UTC(2026, 0, 5, 10, 0, 0);

function harness(t0 = T0): Harness {
  const clock = new FakeClock(t0);
  const saved = new Map<string, JobRecord>();
  const logs: string[] = [];
  const sched = new Scheduler(clock, { saved: (id, rec) => saved.set(id, rec), log: (l) => logs.push(l) });
  return { clock, sched, runs: [], saved, logs };
}

type Behaviour = (n: number) => Promise<void> | void;

function job(h: Harness, id: string, opts: { every?: string; cron?: string; lane?: string; triggers?: string[]; behave?: Behaviour } = {}): JobDef {
  let n = 0;
  return {
    id, lane: opts.lane ?? id, triggers: opts.triggers ?? [],
    schedule: opts.every ? parseSchedule({ every: opts.every }, 'x') : opts.cron ? parseSchedule({ cron: opts.cron }, 'x') : null,
    run: async (reason) => {
      h.runs.push({ id, at: h.clock.now(), reason });
      await opts.behave?.(n++);
    },
  };
}

const S = 1000;
const M = 60 * S;

test('an interval job runs at once, then every interval', async (t) => {
  const h = harness();
  h.sched.setJobs([job(h, 'snap', { every: '5m' })]);
  await h.clock.advance(0);
  await h.clock.advance(16 * M);
  t.deepEqual(h.runs.map((r) => (r.at - T0) / M), [0, 5, 10, 15]);
  t.deepEqual(h.runs.map((r) => r.reason), ['schedule', 'schedule', 'schedule', 'schedule']);
  t.is(h.saved.get('snap')!.lastSuccess, T0 + 15 * M);
});

test('a job never overlaps itself: a run that outlasts its interval delays the next, which then runs once', async (t) => {
  const h = harness();
  let release!: () => void;
  const slow = new Promise<void>((r) => { release = r; });
  h.sched.setJobs([job(h, 'sync', { every: '1m', behave: (n) => (n === 0 ? slow : undefined) })]);
  await h.clock.advance(5 * M + 30 * S);
  t.is(h.runs.length, 1, 'still running: no second start');
  release();
  await h.clock.advance(0);
  t.is(h.runs.length, 2, 'the missed runs are taken once, at the next chance');
  t.is(h.runs[1]!.at, T0 + 5 * M + 30 * S);
  t.is(h.runs[1]!.reason, 'missed');
  await h.clock.advance(1 * M);
  t.is(h.runs.length, 3);
  t.is(h.runs[2]!.at, T0 + 6 * M + 30 * S, 'counted from the late run');
});

test('jobs in one lane take turns; jobs in different lanes run together', async (t) => {
  const h = harness();
  let release!: () => void;
  const slow = new Promise<void>((r) => { release = r; });
  let inLane = 0;
  let most = 0;
  const track = (wait?: Promise<void>) => async () => { inLane++; most = Math.max(most, inLane); await wait; inLane--; };
  h.sched.setJobs([
    job(h, 'snapshot', { every: '1m', lane: 'local', behave: track(slow) }),
    job(h, 'prune', { every: '1m', lane: 'local', behave: track() }),
    job(h, 'sync:a', { every: '1m', lane: 'sync:a' }),
  ]);
  await h.clock.advance(0);
  t.deepEqual(h.runs.map((r) => r.id).sort(), ['snapshot', 'sync:a'], 'prune waits for the snapshot');
  release();
  await h.clock.advance(0);
  t.deepEqual(h.runs.map((r) => r.id), ['snapshot', 'sync:a', 'prune']);
  t.is(most, 1, 'never two in the local lane');
});

test('a transient failure is retried with backoff, never later than the next scheduled run', async (t) => {
  const h = harness();
  h.sched.setJobs([job(h, 'sync', { every: '1h', behave: (n) => { if (n < 4) throw new JobFailure('unreachable', true); } })]);
  await h.clock.advance(0);
  await h.clock.advance(10 * M);
  const offsets = h.runs.map((r) => (r.at - T0) / S);
  t.deepEqual(offsets, [0, 10, 30, 70, 150], 'retries after 10 s, 20 s, 40 s, 80 s');
  t.deepEqual(h.runs.slice(1).map((r) => r.reason), ['retry', 'retry', 'retry', 'retry']);
  const rec = h.saved.get('sync')!;
  t.is(rec.failures, 0, 'the fifth run worked');
  t.is(rec.failingSince, null);
  t.is(rec.lastError, null);
  t.true(h.logs.some((l) => /sync: failed, will retry: unreachable/.test(l)));
  t.is(backoffMs(1), BACKOFF_BASE_MS);
  t.is(backoffMs(30), BACKOFF_MAX_MS);
  // A schedule shorter than the backoff: the schedule wins.
  const g = harness();
  g.sched.setJobs([job(g, 'sync', { every: '15s', behave: () => { throw new JobFailure('down', true); } })]);
  await g.clock.advance(0);
  await g.clock.advance(15 * 60 * S);
  const gaps = g.runs.slice(1).map((r, i) => r.at - g.runs[i]!.at);
  t.true(gaps.every((d) => d <= 15 * S), `never more than the interval apart: ${gaps.join(', ')}`);
  t.is(g.saved.get('sync')!.failingSince, T0, 'failing since the first failure');
});

test('a permanent failure is not retried: the job waits for its schedule', async (t) => {
  const h = harness();
  h.sched.setJobs([job(h, 'sync', { every: '10m', behave: () => { throw new JobFailure('the replica diverged', false); } })]);
  await h.clock.advance(25 * M);
  t.deepEqual(h.runs.map((r) => (r.at - T0) / M), [0, 10, 20]);
  const rec = h.saved.get('sync')!;
  t.is(rec.failures, 3);
  t.deepEqual(rec.lastError, { at: T0 + 20 * M, message: 'the replica diverged', transient: false });
  t.is(rec.retryAt, null);
  // An error that is not a JobFailure is a bug: permanent.
  const g = harness();
  g.sched.setJobs([job(g, 'x', { every: '10m', behave: () => { throw new Error('boom'); } })]);
  await g.clock.advance(1 * M);
  t.is(g.runs.length, 1);
  t.false(g.saved.get('x')!.lastError!.transient);
});

test('a job that succeeds triggers the jobs it names; a failed one does not', async (t) => {
  const h = harness();
  let fail = false;
  h.sched.setJobs([
    job(h, 'snapshot', { every: '10m', lane: 'local', triggers: ['prune', 'sync:b'], behave: () => { if (fail) throw new JobFailure('no', false); } }),
    job(h, 'prune', { lane: 'local' }),
    job(h, 'sync:b', {}),
  ]);
  await h.clock.advance(0);
  t.deepEqual(h.runs.map((r) => `${r.id}@${(r.at - T0) / M}:${r.reason}`), ['snapshot@0:schedule', 'prune@0:trigger', 'sync:b@0:trigger']);
  fail = true;
  await h.clock.advance(10 * M);
  t.deepEqual(h.runs.slice(3).map((r) => r.id), ['snapshot'], 'nothing follows a failed snapshot');
  t.is(h.sched.status().find((j) => j.id === 'prune')!.nextRun, null, 'a job without schedule has no next run');
});

test('a run missed while the daemon was down is taken once, at start', async (t) => {
  const h = harness();
  const records: Record<string, JobRecord> = {
    snap: { lastScheduled: T0 - 5 * 3_600_000, lastStart: T0 - 5 * 3_600_000, lastEnd: null, lastSuccess: null, lastDurationMs: null, lastError: null, failures: 0, failingSince: null, retryAt: null },
  };
  h.sched.setJobs([job(h, 'snap', { every: '15m' })], records);
  await h.clock.advance(14 * M);
  t.deepEqual(h.runs.map((r) => [(r.at - T0) / M, r.reason]), [[0, 'missed']], 'five hours of runs missed, one taken');
  await h.clock.advance(1 * M);
  t.is(h.runs.length, 2);
});

test('a cron job runs at its times; one never run before waits for its first time', async (t) => {
  const start = new Date(2026, 0, 5, 10, 7, 0).getTime(); // local time, as cron reads it
  const h = harness(start);
  h.sched.setJobs([job(h, 'nightly', { cron: '*/15 * * * *' })]);
  await h.clock.advance(0);
  t.is(h.runs.length, 0, 'not at once');
  await h.clock.advance(40 * M);
  t.deepEqual(h.runs.map((r) => new Date(r.at).getMinutes()), [15, 30, 45]);
  t.true(h.runs.every((r) => r.reason === 'schedule'));
  // Down for three hours: the missed times make one run when it comes back.
  const records = { nightly: h.saved.get('nightly')! };
  const g = harness(h.clock.now() + 3 * 3_600_000);
  g.sched.setJobs([job(g, 'nightly', { cron: '*/15 * * * *' })], records);
  await g.clock.advance(0);
  t.deepEqual(g.runs.map((r) => r.reason), ['missed']);
  await g.clock.advance(15 * M);
  t.is(g.runs.length, 2, 'then the schedule again');
});

test('setJobs keeps a job\'s record and applies a new schedule at once; removed jobs stop', async (t) => {
  const h = harness();
  h.sched.setJobs([job(h, 'snap', { every: '1h' }), job(h, 'sync:old', { every: '1h' })]);
  await h.clock.advance(10 * M);
  t.is(h.runs.length, 2);
  h.sched.setJobs([job(h, 'snap', { every: '5m' })]);
  await h.clock.advance(0);
  t.is(h.runs.length, 3, 'the shorter interval, counted from the last run, is already due');
  t.is(h.runs[2]!.at, T0 + 10 * M);
  await h.clock.advance(60 * M);
  t.false(h.runs.slice(3).some((r) => r.id === 'sync:old'));
  t.deepEqual(h.sched.status().map((j) => j.id), ['snap']);
  t.is(h.sched.status()[0]!.lastSuccess, T0 + 70 * M);
});

test('stop aborts the running jobs, waits for them, and starts nothing more', async (t) => {
  const h = harness();
  let aborted = false;
  const def: JobDef = {
    id: 'sync', lane: 'sync', triggers: [], schedule: parseSchedule({ every: '1m' }, 'x'),
    run: (_reason, signal) => new Promise<void>((_resolve, reject) => {
      h.runs.push({ id: 'sync', at: h.clock.now(), reason: 'schedule' });
      signal.addEventListener('abort', () => { aborted = true; reject(new JobFailure('stopped', true)); });
    }),
  };
  h.sched.setJobs([def]);
  await h.clock.advance(0);
  t.is(h.runs.length, 1);
  await h.sched.stop();
  t.true(aborted);
  t.is(h.saved.get('sync')!.retryAt, null, 'no retry scheduled by a stop');
  await h.clock.advance(10 * M);
  t.is(h.runs.length, 1);
  t.is(h.clock.pending, 0, 'no timer left');
});

test('hold waits for the running job to end by itself and starts nothing until resume, which runs what came due once', async (t) => {
  const h = harness();
  let finish: () => void = () => undefined;
  const def: JobDef = {
    id: 'sync', lane: 'sync', triggers: [], schedule: parseSchedule({ every: '1m' }, 'x'),
    run: (_reason, signal) => new Promise<void>((resolve, reject) => {
      h.runs.push({ id: 'sync', at: h.clock.now(), reason: 'schedule' });
      finish = resolve;
      signal.addEventListener('abort', () => reject(new JobFailure('aborted', true)));
    }),
  };
  h.sched.setJobs([def]);
  await h.clock.advance(0);
  t.is(h.runs.length, 1);
  let held = false;
  const holding = h.sched.hold().then(() => { held = true; });
  await h.clock.advance(0);
  t.false(held, 'still waiting for the running job');
  finish();
  await holding;
  t.true(held);
  t.is(h.saved.get('sync')!.lastError, null, 'it ended by itself, not aborted');
  await h.clock.advance(5 * M);
  t.is(h.runs.length, 1, 'nothing started while held');
  h.sched.resume();
  await h.clock.advance(0);
  t.deepEqual(h.runs.map((r) => (r.at - T0) / M), [0, 5], 'the run that came due meanwhile, once, at resume');
  finish();
});

test('trigger runs a job at once; triggers while it runs make one more run after it, not one each', async (t) => {
  const h = harness();
  let release!: () => void;
  const slow = new Promise<void>((r) => { release = r; });
  h.sched.setJobs([job(h, 'sync:x', { behave: (n) => (n === 0 ? slow : undefined) })]);
  await h.clock.advance(5 * M);
  t.is(h.runs.length, 0, 'no schedule: never by itself');
  h.sched.trigger('sync:x');
  await h.clock.advance(0);
  t.is(h.runs.length, 1);
  // Snapshots taken while it sends an older one: it sends again once, afterwards.
  h.sched.trigger('sync:x');
  h.sched.trigger('sync:x');
  h.sched.trigger('sync:x');
  await h.clock.advance(1 * M);
  t.is(h.runs.length, 1, 'not while it runs');
  release();
  await h.clock.advance(0);
  t.is(h.runs.length, 2);
  await h.clock.advance(10 * M);
  t.is(h.runs.length, 2);
  h.sched.trigger('nobody');
  await h.clock.advance(1 * M);
  t.is(h.runs.length, 2);
});
