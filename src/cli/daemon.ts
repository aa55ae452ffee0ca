// The mount daemon: opens the volume, serves it over FUSE and answers the control
// socket until it is told to stop (replfs unmount, SIGTERM, SIGINT) or the mount
// disappears underneath it.
import fs from 'node:fs';
import { ReplfsError, messageOf } from '../errors/index.js';
import { readdir, readlink, stat } from 'node:fs/promises';
import { Volume, STATE_DIR, CONTROL_SOCKET, replyShimStats, configureReplyShim, type OpenReport } from '../volume/index.js';
import { VolumeFuse, type MountOptions } from '../fuse/adapter.js';
import { mountState, unmountPath } from '../fuse/mountpoint.js';
import { ControlServer } from '../control/server.js';
import { register, unregister } from '../control/registry.js';
import { VERSION } from './version.js';
import { ACTIONS } from './actions.js';

export interface DaemonOptions {
  root: string;
  mountpoint: string;
  mount: Omit<MountOptions, 'inPlace'>;
  log: (line: string) => void;
}

export class Daemon {
  private detaching: Promise<void> | null = null;
  private watch: NodeJS.Timeout | null = null;
  private control: ControlServer | null = null;
  /** This process's descriptor of /dev/fuse for the mount. */
  private fuseFd: number | null = null;
  private fuse: VolumeFuse | null = null;
  private resolveStopped!: () => void;
  /** Resolves once the daemon has unmounted and closed everything. */
  readonly stopped = new Promise<void>((r) => { this.resolveStopped = r; });

  private constructor(readonly opts: DaemonOptions, readonly volume: Volume, readonly report: OpenReport, private readonly rootFd: number) {}

  static async start(opts: DaemonOptions): Promise<Daemon> {
    process.umask(0);
    // Opened before mounting: after an in-place mount this is the only way to the files.
    const rootFd = fs.openSync(opts.root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    let volume: Volume | undefined;
    try {
      const opened = await Volume.open(opts.root, { rootFd, writable: true });
      volume = opened.volume;
      const d = new Daemon(opts, volume, opened.report, rootFd);
      await d.serve();
      return d;
    } catch (err) {
      if (volume) await volume.close().catch(() => undefined);
      fs.closeSync(rootFd);
      throw err;
    }
  }

  get inPlace(): boolean {
    return this.opts.mountpoint === this.opts.root;
  }

  private async serve(): Promise<void> {
    const { opts, volume } = this;
    const socketFromHere = `${volume.backing.stateDir()}/${CONTROL_SOCKET}`;
    this.control = await ControlServer.listen(socketFromHere, {
      ping: async () => ({ pid: process.pid }),
      status: async () => volume.status({ mountpoint: opts.mountpoint, pid: process.pid }),
      journal: async () => volume.journalReport(),
      flush: async () => { await volume.flush(true); return { flushed: true }; },
      ...Object.fromEntries(Object.entries(ACTIONS).map(([name, action]) =>
        [name, (args: Record<string, unknown>) => action(volume, args, { mountpoint: opts.mountpoint })])),
      unmount: async (args) => {
        await this.detach(args.lazy === true);
        setTimeout(() => void this.finish(), 20);
        return { unmounted: opts.mountpoint };
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
    const fuse = new VolumeFuse(this.opts.mountpoint, this.volume, { ...mount, inPlace: this.inPlace });
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
   * Unmounts and closes the volume (flushing the journal). Without `lazy`, refuses while
   * files are open; with it, detaches the mount and waits for the last file to close.
   */
  detach(lazy: boolean): Promise<void> {
    if (this.detaching) return this.detaching;
    const run = async () => {
      const mnt = this.opts.mountpoint;
      let result = await unmountPath(mnt, false);
      if (result === 'busy') {
        if (!lazy) {
          throw new ReplfsError('busy', `${mnt} is busy: files or directories in it are in use`,
            `close them (see: fuser -vm ${mnt}), or detach now and finish when they close: replfs unmount --lazy ${mnt}`);
        }
        this.opts.log(`${mnt} is busy; detached it, waiting for open files to close`);
        result = await unmountPath(mnt, true);
        // The kernel drops the connection once the last user lets go, sometimes before the
        // final RELEASE reaches us: the end of the connection counts as the last close.
        while (this.volume.openHandles > 0 && (await this.connected())) await new Promise((r) => setTimeout(r, 200));
      }
      if (this.watch) clearInterval(this.watch);
      this.fuse?.dispose();
      await this.volume.close();
      this.opts.log(`unmounted ${mnt}; journal flushed`);
    };
    this.detaching = run();
    this.detaching.catch(() => { this.detaching = null; });
    return this.detaching;
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
    process.on('SIGHUP', () => undefined);
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
