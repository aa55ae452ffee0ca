// The mount daemon: opens the volume, serves it over FUSE and answers the control
// socket until it is told to stop (replfs unmount, SIGTERM, SIGINT) or the mount
// disappears underneath it. A replica's daemon (mount --read-only) also receives the
// syncs into it: it holds the replica's database, and LevelDB admits one process.
import fs from 'node:fs';
import type net from 'node:net';
import { ReplfsError, messageOf } from '../errors/index.js';
import { readdir, readlink, stat } from 'node:fs/promises';
import { Volume, STATE_DIR, CONFIG_FILE, CONTROL_SOCKET, replyShimStats, configureReplyShim, type OpenReport } from '../volume/index.js';
import { VolumeFuse, type MountOptions } from '../fuse/adapter.js';
import { ReplicaFuse } from '../fuse/replica.js';
import { mountState, unmountPath } from '../fuse/mountpoint.js';
import { ControlServer, type Handler } from '../control/server.js';
import { register, unregister } from '../control/registry.js';
import { VERSION } from './version.js';
import { ACTIONS } from './actions.js';
import { receiveInto } from './receive.js';
import { Operator } from './operator.js';
import { setHookUmask } from '../policy/hooks.js';
import path from 'node:path';

export interface DaemonOptions {
  root: string;
  mountpoint: string;
  mount: Omit<MountOptions, 'inPlace'>;
  log: (line: string) => void;
  /** Mount a replica (mount --read-only): its snapshots only, nothing writable. */
  replica?: boolean;
  /** A policy file given with --config (absolute), instead of the volume's config.json. */
  configFile?: string | null;
}

/** A sync being received by this daemon. */
interface Receiving {
  done: Promise<void>;
}

export class Daemon {
  private detaching: Promise<void> | null = null;
  private watch: NodeJS.Timeout | null = null;
  private control: ControlServer | null = null;
  /** This process's descriptor of /dev/fuse for the mount. */
  private fuseFd: number | null = null;
  private fuse: VolumeFuse | null = null;
  /** The sync being applied to this replica, if one is. */
  private receiving: Receiving | null = null;
  private resolveStopped!: () => void;
  /** Resolves once the daemon has unmounted and closed everything. */
  readonly stopped = new Promise<void>((r) => { this.resolveStopped = r; });

  /** The policy, schedule and alerts of a source volume (none for a replica). */
  private operator: Operator | null = null;

  private constructor(readonly opts: DaemonOptions, readonly volume: Volume, readonly report: OpenReport, private readonly rootFd: number) {}

  static async start(opts: DaemonOptions): Promise<Daemon> {
    // Hooks get back the mask the daemon was started with.
    setHookUmask(process.umask(0));
    // Opened before mounting: after an in-place mount this is the only way to the files.
    const rootFd = fs.openSync(opts.root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    let volume: Volume | undefined;
    let operator: Operator | null = null;
    try {
      const opened = await Volume.open(opts.root, { rootFd, writable: true });
      volume = opened.volume;
      await checkMode(volume, opts.root, opts.replica === true, opts.mountpoint);
      const d = new Daemon(opts, volume, opened.report, rootFd);
      if (!opts.replica) {
        // A policy nobody could read runs nothing: the mount is refused, naming the field.
        operator = await Operator.prepare({
          volume, mountpoint: opts.mountpoint, log: opts.log,
          files: {
            volume: { read: `${volume.backing.stateDir()}/${CONFIG_FILE}`, shown: path.join(opts.root, STATE_DIR, CONFIG_FILE) },
            outside: opts.configFile ?? null, hookCwd: opts.mountpoint,
          },
        });
        d.operator = operator;
      }
      await d.serve();
      await operator?.begin();
      return d;
    } catch (err) {
      await operator?.stop().catch(() => undefined);
      if (volume) await volume.close().catch(() => undefined);
      fs.closeSync(rootFd);
      throw err;
    }
  }

  /** Runs `fn` while none of the policy's jobs runs (the running ones end first). */
  whileIdle<T>(fn: () => Promise<T>): Promise<T> {
    return this.operator ? this.operator.whileIdle(fn) : fn();
  }

  get inPlace(): boolean {
    return this.opts.mountpoint === this.opts.root;
  }

  private async serve(): Promise<void> {
    const { opts, volume } = this;
    const socketFromHere = `${volume.backing.stateDir()}/${CONTROL_SOCKET}`;
    const operator = this.operator;
    const actions: Record<string, Handler> = Object.fromEntries(Object.entries(ACTIONS).map(([name, action]) =>
      [name, (args: Record<string, unknown>, progress: (p: unknown) => void) => action(volume, args,
        operator ? operator.commandContext({ progress }) : { mountpoint: opts.mountpoint, progress })]));
    this.control = await ControlServer.listen(socketFromHere, {
      ping: async () => ({ pid: process.pid }),
      status: async () => ({
        ...(await volume.status({ mountpoint: opts.mountpoint, pid: process.pid })),
        ...(operator ? { operations: await operator.status() } : {}),
      }),
      config: async () => {
        if (!operator) throw new ReplfsError('refused', `${opts.root} is a replica: it runs no policy of its own`, 'its retention is set on the source, in the destination\'s "retention"');
        return operator.refresh();
      },
      'config-load': async (args) => {
        if (!operator) throw new ReplfsError('refused', `${opts.root} is a replica: it runs no policy of its own`);
        if (typeof args.text !== 'string' || typeof args.shown !== 'string') throw new ReplfsError('usage', 'config-load needs the text of the file');
        return operator.load(args.text, args.shown);
      },
      reload: async () => (operator ? operator.reload('asked to reload') : { ok: true, error: null }),

      journal: async () => volume.journalReport(),
      flush: async () => { await volume.flush(true); return { flushed: true }; },
      ...actions,
      unmount: async (args) => {
        await this.detach(args.lazy === true);
        setTimeout(() => void this.finish(), 20);
        return { unmounted: opts.mountpoint };
      },
    }, {
      receive: async (args) => {
        const token = args.token;
        if (token !== undefined && token !== null && typeof token !== 'string') throw new ReplfsError('usage', 'the token of receive must be a string');
        return (sock) => this.receive(sock, typeof token === 'string' ? token : undefined);
      },
    });
    await this.mountFuse(opts.mount);
    if (opts.mount.attrTimeout > 0 && !(await this.attrShimActive())) {
      // Without the shim, hard-link aliases would show stale attributes: cache nothing.
      opts.log('attribute cache shim is not in effect; remounting with attr_timeout=0');
      await unmountPath(opts.mountpoint, false);
      this.fuse?.dispose();
      await this.mountFuse({ ...opts.mount, attrTimeout: 0 });
    }
    await register({
      pid: process.pid,
      root: opts.root,
      mountpoint: opts.mountpoint,
      inPlace: this.inPlace,
      ...(opts.replica ? { replica: true } : {}),
      socket: `/proc/${process.pid}/fd/${this.rootFd}/${STATE_DIR}/${CONTROL_SOCKET}`,
      volumeId: volume.config.volumeId,
      startedAt: new Date().toISOString(),
      version: VERSION,
    });
    // Someone may unmount us by hand (fusermount -u); then there is nothing left to serve.
    this.watch = setInterval(() => {
      mountState(opts.mountpoint).then((s) => {
        if (s === 'none' && !this.detaching) {
          opts.log(`mount at ${opts.mountpoint} disappeared; shutting down`);
          this.detach(true).then(() => this.finish(), (err) => this.fail(err));
        }
      }, () => undefined);
    }, 2000);
    this.watch.unref();
  }

  private async mountFuse(mount: DaemonOptions['mount']): Promise<void> {
    configureReplyShim(mount.attrTimeout);
    const before = new Set(await fuseDeviceFds());
    const options = { ...mount, inPlace: this.inPlace };
    const fuse = this.opts.replica ? new ReplicaFuse(this.opts.mountpoint, this.volume, options) : new VolumeFuse(this.opts.mountpoint, this.volume, options);
    this.fuse = fuse;
    await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(mountError(err, this.opts.mountpoint)) : resolve())));
    this.fuseFd = (await fuseDeviceFds()).find((fd) => !before.has(fd)) ?? null;
  }

  /** Whether the kernel still serves this mount: libfuse closes /dev/fuse when it ends. */
  private async connected(): Promise<boolean> {
    if (this.fuseFd === null) return true;
    return (await fuseDeviceFds()).includes(this.fuseFd);
  }

  /** Whether libfuse's LOOKUP/GETATTR replies go through src/native/fuse_reply_shim.c. */
  private async attrShimActive(): Promise<boolean> {
    const before = replyShimStats().calls;
    await stat(this.opts.mountpoint);
    return replyShimStats().calls > before;
  }

  /**
   * Serves one sync arriving on a `receive` control connection, forwarded by a
   * `replfs serve` process (receive.ts): the handshake (and the token, if any) is checked
   * here, once. Refused, after the handshake, when this is not a replica mount, while
   * another sync is being applied, or once the mount is being taken down.
   */
  private async receive(sock: net.Socket, token: string | undefined): Promise<void> {
    let mine: Receiving | null = null;
    let ended!: () => void;
    const result = await receiveInto(sock, this.volume, {
      token,
      admit: () => {
        if (!this.opts.replica) {
          throw new ReplfsError('refused', `${this.opts.root} is mounted as a protected directory, not as a replica`,
            'a replica is a directory that replfs sync made; sync into a new or empty directory (a failback to a former source: unmount it first)');
        }
        if (this.detaching) throw new ReplfsError('busy', 'the replica is being unmounted; try again once it is');
        if (this.receiving) throw new ReplfsError('busy', 'another sync into this replica is being applied; try again when it is done');
        mine = { done: new Promise<void>((r) => { ended = r; }) };
        this.receiving = mine;
      },
    }).finally(() => {
      if (mine && this.receiving === mine) this.receiving = null;
      if (mine) ended();
    }).catch((err: unknown) => {
      this.opts.log(`a sync into this replica failed: ${messageOf(err)}`);
      return null;
    });
    if (result?.replicaSnapshot) this.opts.log(`received a sync: the root now shows snapshot ${result.replicaSnapshot}`);
  }

  /**
   * Unmounts and closes the volume (flushing the journal). Without `lazy`, refuses while
   * files are open or a sync is being applied; with it, detaches the mount and waits for
   * the last file to close and for the sync to end.
   */
  detach(lazy: boolean): Promise<void> {
    if (this.detaching) return this.detaching;
    const run = async () => {
      const mnt = this.opts.mountpoint;
      if (this.receiving && !lazy) {
        throw new ReplfsError('busy', `${mnt} is busy: a sync into this replica is being applied`,
          `unmount when it is done, or detach now and finish after it: replfs unmount --lazy ${mnt}`);
      }
      // Scheduled work first: a hook under way holds files in the mount, and none may start
      // in the directory underneath once the mount is gone.
      await this.operator?.pause();
      let result = await unmountPath(mnt, false).catch((err: unknown) => { this.operator?.resume(); throw err; });
      if (result === 'busy') {
        if (!lazy) {
          this.operator?.resume();
          throw new ReplfsError('busy', `${mnt} is busy: files or directories in it are in use`,
            `close them (see: fuser -vm ${mnt}), or detach now and finish when they close: replfs unmount --lazy ${mnt}`);
        }
        this.opts.log(`${mnt} is busy; detached it, waiting for open files to close`);
        result = await unmountPath(mnt, true);
        // The kernel drops the connection once the last user lets go, sometimes before the
        // final RELEASE reaches us: the end of the connection counts as the last close.
        while (this.openFiles() > 0 && (await this.connected())) await new Promise((r) => setTimeout(r, 200));
      }
      if (this.receiving) {
        this.opts.log('waiting for the sync being applied to end');
        while (this.receiving) await this.receiving.done;
      }
      if (this.watch) clearInterval(this.watch);
      // Scheduled work stops first: a sync under way is cut (the next one resumes it).
      await this.operator?.stop();
      this.fuse?.dispose();
      await this.volume.close();
      this.opts.log(`unmounted ${mnt}; journal flushed`);
    };
    this.detaching = run();
    this.detaching.catch(() => { this.detaching = null; });
    return this.detaching;
  }

  /** Files open through the mount: in the live tree, and in snapshot views. */
  private openFiles(): number {
    return this.volume.openHandles + (this.fuse?.openViewFiles ?? 0);
  }

  /** After detach: closes the control socket and the directory, and leaves the registry. */
  async finish(): Promise<void> {
    await this.control?.close().catch(() => undefined);
    await unregister(this.opts.mountpoint);
    try { fs.closeSync(this.rootFd); } catch { /* already closed */ }
    this.resolveStopped();
  }

  private fail(err: unknown): void {
    this.opts.log(`shutdown failed: ${messageOf(err)}`);
    void this.finish();
  }

  /** SIGTERM / SIGINT: the same as `replfs unmount --lazy`. */
  installSignalHandlers(): void {
    // A promise nobody waited for failed (a bug): the mount goes on serving, and the log says so.
    process.on('unhandledRejection', (err) => {
      this.opts.log(`internal error, not handled where it arose (the mount goes on): ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    });
    const onSignal = (sig: NodeJS.Signals) => {
      if (this.detaching) {
        // A second signal while files still hold a detached mount: stop serving them now.
        this.opts.log(`${sig} again: closing the volume with files still open`);
        this.volume.close().then(() => this.finish(), (err) => this.fail(err));
        return;
      }
      this.opts.log(`${sig}: unmounting ${this.opts.mountpoint}`);
      this.detach(true).then(() => this.finish(), (err) => this.fail(err));
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    // SIGHUP rereads the policy, as daemons do.
    process.on('SIGHUP', () => { void this.operator?.reload('SIGHUP'); });
  }
}

/**
 * A replica is mounted read-only, and only a replica is: writing to a replica would make
 * it diverge from its source, and an ordinary volume's root is its live tree.
 */
export async function checkMode(volume: Volume, root: string, readOnly: boolean, mountpoint = root): Promise<void> {
  const isReplica = (await volume.replicaMeta()) !== undefined;
  const at = mountpoint === root ? '' : ` ${mountpoint}`;
  if (readOnly && !isReplica) {
    throw new ReplfsError('refused', `${root} is not a replica: --read-only mounts a replica that replfs sync made`,
      `to mount this protected directory without allowing writes, use: replfs mount ${root}${at} -o ro`);
  }
  if (!readOnly && isReplica) {
    throw new ReplfsError('refused', `${root} is a replica: mounting it writable would make it diverge from its source`,
      `mount it read-only: replfs mount --read-only ${root}${at}  (promoting a replica to a writable volume, replfs promote, is not in this version yet)`);
  }
}

/** Descriptors of this process that are open on /dev/fuse. */
async function fuseDeviceFds(): Promise<number[]> {
  const fds = await readdir('/proc/self/fd').catch(() => [] as string[]);
  const out: number[] = [];
  for (const fd of fds) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target === '/dev/fuse') out.push(Number(fd));
  }
  return out;
}

function mountError(err: Error, mountpoint: string): ReplfsError {
  if (/Mountpoint in use/.test(err.message)) {
    return new ReplfsError('refused', `${mountpoint} is the root of another filesystem; replfs cannot mount over it`);
  }
  return new ReplfsError('fuseUnavailable', `mounting ${mountpoint} failed: ${err.message}`,
    'check that /dev/fuse exists and that libfuse2 is installed (sudo apt-get install -y fuse libfuse2)');
}
