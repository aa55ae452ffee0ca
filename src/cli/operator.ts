// What a source volume's mount daemon does by itself: it holds the policy (rereading it
// when its file changes), runs the schedule (snapshots, syncs, prunes), and raises and
// resolves alerts. Also the facts and the status report `replfs status` shows, computed
// the same way whether a daemon runs or not.
import { ReplfsError, messageOf } from '../errors/index.js';
import { evaluate, transition, worst, type Alert, type AlertEvent, type DestinationFacts, type Severity, type VolumeFacts } from '../policy/alerts.js';
import { policyToJson, type DestinationPolicy, type Policy } from '../policy/config.js';
import { runHook } from '../policy/hooks.js';
import { describeSchedule } from '../policy/schedule.js';
import { JobFailure, Scheduler, systemClock, type Clock, type JobDef, type JobStatus } from '../policy/scheduler.js';
import type { SyncSummary } from '../replicate/sender.js';
import { formatBytes } from '../policy/size.js';
import type { Volume } from '../volume/index.js';
import { ACTIONS, type ActionContext, type PruneResult, type SnapshotResult } from './actions.js';
import { OpsBook, isTransient, type DestinationOps, type SyncOutcome } from './operations.js';
import { checkReplacement, loadPolicy, replacePolicy, stamp, writeAtomically, type LoadedPolicy, type PolicyFiles } from './policy.js';
import fsp from 'node:fs/promises';

/** How often the daemon looks at the config files and at the alert conditions. */
const CONFIG_POLL_MS = 2000;
const ALERT_POLL_MS = 15_000;

export interface DestinationStatus {
  name: string;
  url: string;
  /** Named in the policy (else only synced by hand). */
  configured: boolean;
  enabled: boolean;
  schedule: string | null;
  rpoMs: number | null;
  confirmed: { snapshot: string; sourceTime: string } | null;
  /** How old the newest state the destination holds is. */
  lagMs: number | null;
  /** Changes since the confirmed snapshot, up to now (journal): what the next sync would look at. */
  pending: { files: number; bytes: number } | null;
  lastSync: SyncOutcome | null;
  lastError: DestinationOps['lastError'];
  failingSince: number | null;
  space: DestinationOps['space'];
  running: boolean;
  nextRun: number | null;
  /** Why the next sync will compare every block, if it will. */
  fullCompare: { kind: 'overflow' | 'inconsistent' | 'base-gone'; reason: string } | null;
}

export interface OperationsStatus {
  /** The file the policy comes from. */
  policy: string;
  /** The config on disk is invalid (the daemon keeps its previous one). */
  configError: string | null;
  /** Whether a daemon runs the schedule. */
  scheduler: boolean;
  snapshots: { schedule: string | null; lastRun: number | null; nextRun: number | null; lastError: string | null };
  destinations: DestinationStatus[];
  journal: { overflowed: Array<{ epoch: number; at: string }>; inconsistent: Array<{ epoch: number; at: string; detail: string }>; overflowedNow: boolean };
  alerts: Alert[];
  severity: Severity;
  now: number;
}

/** A destination's state: its policy (if named there) merged with what the volume recorded. */
interface DestinationRow {
  d: DestinationPolicy | null;
  url: string;
  name: string;
  ops: DestinationOps | null;
  confirmed: { snapshot: string; sourceTime: string } | null;
}

async function destinationFacts(volume: Volume, policy: Policy, book: OpsBook): Promise<DestinationRow[]> {
  const records = await volume.destinations();
  const confirmedOf = (url: string) => {
    const mine = records.filter((r) => r.destination === url).sort((a, b) => Date.parse(b.sourceTime) - Date.parse(a.sourceTime))[0];
    return mine ? { snapshot: mine.base, sourceTime: mine.sourceTime } : null;
  };
  const out: DestinationRow[] = policy.destinations.map((d) => ({ d, url: d.url, name: d.name, ops: book.current.destinations[d.url] ?? null, confirmed: confirmedOf(d.url) }));
  const named = new Set(policy.destinations.map((d) => d.url));
  const unnamed = new Set([...records.map((r) => r.destination), ...Object.keys(book.current.destinations)].filter((u) => !named.has(u)));
  for (const url of unnamed) out.push({ d: null, url, name: url, ops: book.current.destinations[url] ?? null, confirmed: confirmedOf(url) });
  return out;
}

/**
 * Everything `replfs status` says of the volume's operations, and the alerts that follow.
 * `jobs` is the scheduler's view when a daemon runs one.
 */
export async function operationsStatus(volume: Volume, loaded: { policy: Policy; source: string; error: string | null }, opts: { mounted: boolean; jobs: JobStatus[] | null; now?: number }): Promise<OperationsStatus> {
  const now = opts.now ?? Date.now();
  const { policy } = loaded;
  const book = await OpsBook.for(volume);
  const jobs = new Map((opts.jobs ?? []).map((j) => [j.id, j]));
  const health = volume.health;
  const rows = await destinationFacts(volume, policy, book);
  const snapEpoch = (name: string) => volume.snapshots().find((s) => s.name === name)?.epoch;
  const destinations: DestinationStatus[] = [];
  for (const r of rows) {
    const job = jobs.get(`sync:${r.name}`);
    const enabled = r.d ? r.d.enabled : true;
    let pending: DestinationStatus['pending'] = null;
    let fullCompare: DestinationStatus['fullCompare'] = null;
    if (r.confirmed && snapEpoch(r.confirmed.snapshot) !== undefined) {
      const diff = await volume.diff(r.confirmed.snapshot, 'live').catch(() => null);
      if (diff) pending = { files: diff.files.length, bytes: diff.totals.changedBytes };
      fullCompare = volume.fullCompareReason(r.confirmed.snapshot, null);
    } else if (r.confirmed) {
      fullCompare = { kind: 'base-gone', reason: `its base ${r.confirmed.snapshot} is no longer on the source` };
    }
    destinations.push({
      name: r.name, url: r.url, configured: r.d !== null, enabled,
      schedule: r.d ? (r.d.schedule ? describeSchedule(r.d.schedule) : policy.snapshots.schedule ? `after each scheduled snapshot (${describeSchedule(policy.snapshots.schedule)})` : 'by hand') : 'by hand',
      rpoMs: r.d?.rpoMs ?? null,
      confirmed: r.confirmed,
      lagMs: r.confirmed ? now - Date.parse(r.confirmed.sourceTime) : null,
      pending, lastSync: r.ops?.lastSync ?? null, lastError: r.ops?.lastError ?? null, failingSince: r.ops?.failingSince ?? null,
      space: r.ops?.space ?? null, running: job?.running ?? false, nextRun: job?.nextRun ?? null, fullCompare,
    });
  }
  const snapJob = jobs.get('snapshot');
  const snapRecord = snapJob ?? book.current.jobs.snapshot ?? null;
  const facts: VolumeFacts = {
    now,
    mounted: opts.mounted,
    scheduled: policy.snapshots.schedule !== null || policy.destinations.some((d) => d.enabled),
    journal: {
      // Only what a destination still has to sync through is worth an alert.
      overflowed: destinations.some((d) => d.enabled && d.fullCompare?.kind === 'overflow'),
      inconsistent: destinations.find((d) => d.enabled && d.fullCompare?.kind === 'inconsistent')?.fullCompare?.reason ?? null,
    },
    configError: loaded.error,
    snapshotError: snapRecord && snapRecord.failures > 0 && snapRecord.lastError ? snapRecord.lastError.message : null,
    destinations: rows.filter((r) => r.d?.enabled).map((r): DestinationFacts => ({
      name: r.name, url: r.url, rpoMs: r.d!.rpoMs,
      confirmedSourceTime: r.confirmed ? Date.parse(r.confirmed.sourceTime) : null,
      watchedSince: r.ops?.firstSeen ?? Date.parse(volume.config.createdAt),
      failingSince: r.ops?.failingSince ?? null,
      lastError: r.ops?.lastError ? { message: r.ops.lastError.message, transient: r.ops.lastError.transient } : null,
      space: r.ops?.space ? { free: r.ops.space.free, total: r.ops.space.total } : null,
    })),
  };
  const alerts = evaluate(facts, policy.alerts);
  return {
    policy: loaded.source,
    configError: loaded.error,
    scheduler: opts.jobs !== null,
    snapshots: {
      schedule: policy.snapshots.schedule ? describeSchedule(policy.snapshots.schedule) : null,
      lastRun: snapRecord?.lastStart ?? null,
      nextRun: snapJob?.nextRun ?? null,
      lastError: facts.snapshotError,
    },
    destinations,
    journal: { overflowed: health.overflowed, inconsistent: health.inconsistent, overflowedNow: volume.journal.overflowed },
    alerts,
    severity: worst(alerts),
    now,
  };
}

export interface ConfigDescription {
  /** The file the policy in effect came from. */
  source: string;
  /** The --config file, if the daemon was given one. */
  outside: string | null;
  /** The file on disk is invalid now: the policy shown is the previous one. */
  error: string | null;
  ignored: string[];
  policy: Record<string, unknown>;
}

export interface OperatorOptions {
  volume: Volume;
  mountpoint: string;
  files: PolicyFiles;
  log: (line: string) => void;
  clock?: Clock;
}

/** The daemon's policy, schedule and alerts. */
export class Operator {
  private loaded: LoadedPolicy;
  private configError: string | null = null;
  private stamps = '';
  private readonly scheduler: Scheduler;
  private poll: NodeJS.Timeout | null = null;
  private alertPoll: NodeJS.Timeout | null = null;
  private evaluating: Promise<void> = Promise.resolve();
  private hooks: Promise<void> = Promise.resolve();
  private stopped = false;
  private alertSoon: NodeJS.Timeout | null = null;

  private constructor(private readonly opts: OperatorOptions, loaded: LoadedPolicy, private readonly book: OpsBook) {
    this.loaded = loaded;
    const clock = opts.clock ?? systemClock;
    this.scheduler = new Scheduler(clock, {
      saved: (id, rec) => {
        void this.book.update((r) => { r.jobs[id] = rec; }).catch(() => undefined);
        // A job started or ended: what the alerts say may have changed.
        if (!this.alertSoon) this.alertSoon = setTimeout(() => { this.alertSoon = null; void this.checkAlerts(); }, 200);
      },
      log: (line) => opts.log(line),
    });
  }

  /** Reads the policy: a bad one refuses the mount, since nothing should run on a policy nobody checked. */
  static async prepare(opts: OperatorOptions): Promise<Operator> {
    const loaded = await loadPolicy(opts.files);
    const book = await OpsBook.for(opts.volume);
    const op = new Operator(opts, loaded, book);
    op.stamps = await op.currentStamps();
    return op;
  }

  /** Starts the schedule and the watches (once the volume is mounted: hooks run in the mount). */
  async begin(): Promise<void> {
    await this.apply(this.loaded, true);
    this.watch();
    void this.checkAlerts();
  }

  private watch(): void {
    this.poll = setInterval(() => void this.reloadIfChanged(), CONFIG_POLL_MS);
    this.poll.unref();
    this.alertPoll = setInterval(() => void this.checkAlerts(), ALERT_POLL_MS);
    this.alertPoll.unref();
  }

  /**
   * Before an unmount: no job starts, a running sync is cut (the next one resumes it), and
   * a snapshot under way (its hooks run in the mount) is waited for.
   */
  async pause(): Promise<void> {
    this.stopped = true;
    if (this.poll) clearInterval(this.poll);
    if (this.alertPoll) clearInterval(this.alertPoll);
    if (this.alertSoon) clearTimeout(this.alertSoon);
    await this.scheduler.stop();
    await this.evaluating;
  }

  /** Runs `fn` while no scheduled job runs (running ones end first, by themselves). */
  async whileIdle<T>(fn: () => Promise<T>): Promise<T> {
    await this.scheduler.hold();
    try {
      return await fn();
    } finally {
      if (!this.stopped) this.scheduler.resume();
    }
  }

  /** The unmount was refused: everything goes on. */
  resume(): void {
    this.stopped = false;
    this.scheduler.resume();
    this.watch();
  }

  policy(): Policy {
    return this.loaded.policy;
  }

  get source(): string {
    return this.loaded.source;
  }

  get error(): string | null {
    return this.configError;
  }

  /** Context for the daemon's own jobs: the policy in effect, even when an edit broke the file. */
  context(extra: Partial<ActionContext> = {}): ActionContext {
    return { mountpoint: this.opts.mountpoint, policy: async () => this.loaded.policy, ...extra };
  }

  /**
   * Context for a command someone runs: the config is looked at first, and a broken one is
   * that command's error (naming the field), so an edit is never silently ignored.
   */
  commandContext(extra: Partial<ActionContext> = {}): ActionContext {
    return {
      mountpoint: this.opts.mountpoint,
      policy: async () => {
        await this.reloadIfChanged();
        if (this.configError) throw new ReplfsError('usage', this.configError, 'the daemon goes on with the previous policy until the file is fixed');
        return this.loaded.policy;
      },
      ...extra,
    };
  }

  private async currentStamps(): Promise<string> {
    const { files } = this.opts;
    return `${await stamp(files.volume.read)}|${files.outside ? await stamp(files.outside) : ''}`;
  }

  private reloading: Promise<void> | null = null;

  /** Rereads the policy if a file changed (one look at a time: callers wait for the same). */
  private reloadIfChanged(): Promise<void> {
    this.reloading ??= (async () => {
      if (this.stopped) return;
      const now = await this.currentStamps();
      if (now === this.stamps) return;
      this.stamps = now;
      await this.reload('the config changed');
    })().finally(() => { this.reloading = null; });
    return this.reloading;
  }

  /** Rereads the policy; a bad one is logged, alerted, and changes nothing. */
  async reload(why: string): Promise<{ ok: boolean; error: string | null }> {
    try {
      const loaded = await loadPolicy(this.opts.files);
      this.configError = null;
      await this.apply(loaded, false);
      this.opts.log(`${why}: policy reloaded from ${loaded.source}`);
      void this.checkAlerts();
      return { ok: true, error: null };
    } catch (err) {
      this.configError = messageOf(err);
      this.opts.log(`${why}, but it is invalid; the previous policy stays in effect: ${this.configError}`);
      void this.checkAlerts();
      return { ok: false, error: this.configError };
    }
  }

  private async apply(loaded: LoadedPolicy, first: boolean): Promise<void> {
    this.loaded = loaded;
    const { policy } = loaded;
    const { volume } = this.opts;
    volume.setJournalBudget(policy.journal.maxBytes);
    for (const key of loaded.ignored) this.opts.log(`note: ${key} in the volume's config.json is ignored: the policy comes from ${loaded.source}`);
    const now = Date.now();
    const fresh = policy.destinations.filter((d) => !this.book.current.destinations[d.url]);
    if (fresh.length) await this.book.update(() => { for (const d of fresh) this.book.destination(d.url, now); });
    this.scheduler.setJobs(this.jobs(policy), first ? this.book.current.jobs : {});
  }

  private jobs(policy: Policy): JobDef[] {
    const jobs: JobDef[] = [];
    const followers = policy.destinations.filter((d) => d.enabled && d.schedule === null).map((d) => `sync:${d.name}`);
    const prune = policy.retention ? ['prune'] : [];
    if (policy.snapshots.schedule) {
      jobs.push({
        id: 'snapshot', lane: 'local', schedule: policy.snapshots.schedule, triggers: [...prune, ...followers],
        run: async () => {
          const p = this.loaded.policy;
          const res = await this.act<SnapshotResult>('snapshot', { quiesce: p.snapshots.quiesce, label: p.snapshots.label });
          this.opts.log(`snapshot ${res.snapshot.name} taken (${res.snapshot.consistency === 'app' ? 'application-consistent' : 'crash-consistent'})`);
        },
      });
    }
    if (policy.retention) {
      jobs.push({
        id: 'prune', lane: 'local', schedule: null, triggers: [],
        run: async () => {
          const rules = this.loaded.policy.retention;
          if (!rules) return;
          const res = await this.act<PruneResult>('prune', { policy: rules });
          if (res.removed.length) this.opts.log(`pruned ${res.removed.length} snapshots (${res.removed.join(', ')}); freed ${formatBytes(res.gc?.bytesFreed ?? 0)}`);
        },
      });
    }
    for (const d of policy.destinations) {
      if (!d.enabled) continue;
      jobs.push({
        id: `sync:${d.name}`, lane: `sync:${d.name}`, schedule: d.schedule, triggers: prune,
        run: (_reason, signal) => this.syncTo(d.name, signal),
      });
    }
    return jobs;
  }

  private async syncTo(name: string, signal: AbortSignal): Promise<void> {
    const p = this.loaded.policy;
    const d = p.destinations.find((x) => x.name === name);
    if (!d) return;
    // Its own schedule: a snapshot of now. Following the snapshot schedule: the newest one.
    const newest = this.opts.volume.snapshots().at(-1)?.name;
    if (d.schedule === null && newest === undefined) return;
    const args = {
      destination: d.url, snapshot: d.schedule === null ? newest : null, quiesce: d.schedule !== null && p.snapshots.quiesce, label: p.snapshots.label,
      bwlimit: d.bwlimit, compress: d.compress, tokenFile: d.tokenFile ?? undefined, tlsCa: d.tlsCa ?? undefined, retention: d.retention ?? undefined,
    };
    let res: SyncSummary;
    try {
      res = await this.act<SyncSummary>('sync', args, signal);
    } catch (err) {
      throw new JobFailure(messageOf(err), isTransient(err));
    }
    if (res.replicaSnapshot === null) return;
    const pruned = res.pruned && 'removed' in res.pruned && res.pruned.removed.length ? `; the replica pruned ${res.pruned.removed.length} snapshots` : '';
    const failedPrune = res.pruned && 'error' in res.pruned ? `; the replica could not prune: ${res.pruned.error}` : '';
    this.opts.log(`synced ${res.snapshot} to ${d.name} (${res.kind}${res.completeReason ? `: ${res.completeReason}` : ''}): ${res.filesChanged} files, `
      + `${formatBytes(res.bytesSent)} sent, ${formatBytes(res.bytesOnWire)} on the wire, ${(res.durationMs / 1000).toFixed(1)} s${pruned}${failedPrune}`);
  }

  private act<T>(name: string, args: Record<string, unknown>, signal?: AbortSignal): Promise<T> {
    return ACTIONS[name]!(this.opts.volume, args, this.context(signal ? { signal } : {})) as Promise<T>;
  }

  /** What `replfs status` shows of the operations. */
  status(): Promise<OperationsStatus> {
    return operationsStatus(this.opts.volume, { policy: this.loaded.policy, source: this.loaded.source, error: this.configError }, { mounted: true, jobs: this.scheduler.status() });
  }

  /** Evaluates the alert conditions and announces what changed (one evaluation at a time). */
  checkAlerts(): Promise<void> {
    const run = this.evaluating.then(async () => {
      if (this.stopped) return;
      const status = await this.status();
      const { events, active } = transition(this.book.current.alerts, status.alerts, status.now, this.loaded.policy.alerts.repeatAfterMs);
      if (events.length === 0) return;
      await this.book.update((r) => { r.alerts = active; });
      for (const e of events) this.announce(e);
    }).catch((err) => this.opts.log(`checking alerts failed: ${messageOf(err)}`));
    this.evaluating = run;
    return run;
  }

  private announce(e: AlertEvent): void {
    const a = e.alert;
    this.opts.log(`alert ${e.state}: ${a.severity.toUpperCase()} ${a.kind}${a.destination ? ` (${a.destination})` : ''}: ${a.message}`);
    const hook = this.loaded.policy.alerts.onAlert;
    if (!hook) return;
    const { alerts } = this.loaded.policy;
    const env: Record<string, string> = {
      ...alerts.env,
      REPLFS_ALERT_STATE: e.state, REPLFS_ALERT_KIND: a.kind, REPLFS_ALERT_SEVERITY: a.severity.toUpperCase(),
      REPLFS_ALERT_DESTINATION: a.destination ?? '', REPLFS_ALERT_MESSAGE: a.message, REPLFS_ALERT_SINCE: new Date(e.since).toISOString(),
      REPLFS_VOLUME: this.opts.volume.root, REPLFS_MOUNTPOINT: this.opts.mountpoint,
    };
    // One hook at a time, in order: a slow one must not reorder raised and resolved.
    this.hooks = this.hooks.then(async () => {
      const out = await runHook(hook, env, alerts.timeoutMs, '/');
      if (out.status !== 'ok') this.opts.log(`the alert hook ${out.status === 'timeout' ? 'timed out' : `failed (exit ${out.exitCode ?? out.signal})`}${out.stderr ? `: ${out.stderr.slice(-300)}` : ''}`);
    });
  }

  /** `replfs config --load`: the volume's policy replaced by `text` (checked first), in effect at once. */
  async load(text: string, shown: string): Promise<ConfigDescription> {
    const { files } = this.opts;
    if (files.outside !== null) {
      throw new ReplfsError('refused', `this mount takes its policy from ${files.outside} (mount --config): edit that file instead`, 'the daemon rereads it within seconds of a change');
    }
    const current = await fsp.readFile(files.volume.read, 'utf8');
    const next = replacePolicy(current, text, { volume: files.volume.shown, load: shown });
    await checkReplacement(next, shown, files.hookCwd);
    await writeAtomically(files.volume.read, next);
    await this.reloadIfChanged();
    return this.describe();
  }

  /** What `replfs config` shows of a mounted volume, after a look at the files. */
  async refresh(): Promise<ConfigDescription> {
    await this.reloadIfChanged();
    return this.describe();
  }

  /** What `replfs config` shows of a mounted volume: the policy in effect and where it came from. */
  describe(): ConfigDescription {
    return {
      source: this.loaded.source, outside: this.opts.files.outside, error: this.configError, ignored: this.loaded.ignored,
      policy: policyToJson(this.loaded.policy),
    };
  }

  jobStatus(): JobStatus[] {
    return this.scheduler.status();
  }

  async stop(): Promise<void> {
    await this.pause();
    await this.hooks;
  }
}
