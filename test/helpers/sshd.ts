// A real OpenSSH server on 127.0.0.1 for one test, so that tests can reach this machine
// through the system `ssh` the way a user (or rsync) does: `ssh <sshArgs> user@127.0.0.1 cmd`.
// Everything it needs (host key, client key, authorized_keys, sshd_config, known_hosts)
// lives in its own temp directory; the server and every process it started are stopped,
// and the directory removed, when the test ends, whatever its outcome.
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { ExecutionContext } from 'ava';

/** sshd refuses to start unless run by an absolute path (it re-executes itself per connection). */
export const SSHD = '/usr/sbin/sshd';
const INSTALL_HINT = 'apt-get install -y openssh-server openssh-client';

export interface SshdOptions {
  /** Extra variables for every command run through this server (sshd's `SetEnv`). */
  env?: Record<string, string>;
  /** How long to wait for the first successful `ssh ... true`; 15 s unless told. */
  readyTimeoutMs?: number;
  /**
   * Let bash read the user's ~/.bashrc for commands run through ssh, as it does for a
   * real ssh login (Debian's bash does when it sees SSH_CLIENT and SHLVL < 2). Off unless
   * told: the tests then do not depend on the dotfiles of the machine they run on, and a
   * slow ~/.bashrc (pyenv init, say) does not add a second or two to every command.
   */
  loadBashrc?: boolean;
}

export interface Sshd {
  host: '127.0.0.1';
  port: number;
  /** The account commands run as: the one running the tests (root here). */
  user: string;
  /** `user@127.0.0.1`, the destination argument for ssh. */
  target: string;
  /** The process id of the listening sshd. */
  pid: number;
  /** The temp directory holding the keys and configuration; removed at teardown. */
  dir: string;
  /** The private key that authorized_keys accepts. */
  identityFile: string;
  /** Holds the server's host key for `[127.0.0.1]:port`, so the client checks it strictly. */
  knownHostsFile: string;
  /**
   * Everything a client needs before the destination: port, key, the pinned host key,
   * batch mode, and `-F /dev/null` so that ~/.ssh/config and /etc/ssh/ssh_config do not
   * take part. Use as `ssh ...sshArgs target command`.
   */
  sshArgs: string[];
  /** `ssh` and sshArgs as one shell-quoted string, for an rsync-style `-e`/`--rsh` option. */
  rsh: string;
  /** The environment for client processes: no ssh agent to offer other keys. */
  env: NodeJS.ProcessEnv;
  /** The same client arguments with another private key in place of `identityFile`. */
  argsWithIdentity(identityFile: string): string[];
  /** What sshd logged so far (its stderr, -e), for failure messages. */
  log(): string;
  /** Stops sshd and every session it started (SIGTERM, then SIGKILL). Idempotent. */
  stop(): Promise<void>;
}

interface Exec {
  code: number;
  stdout: string;
  stderr: string;
  /** Set when the program could not be started at all. */
  spawnError?: NodeJS.ErrnoException;
}

function exec(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Exec> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { env: opts.env, timeout: opts.timeoutMs ?? 30_000, killSignal: 'SIGKILL', encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (!err) return resolve({ code: 0, stdout, stderr });
        const e = err as NodeJS.ErrnoException & { code?: unknown };
        if (typeof e.code === 'string') return resolve({ code: -1, stdout, stderr, spawnError: e });
        resolve({ code: typeof e.code === 'number' ? e.code : -1, stdout, stderr: stderr || e.message });
      });
    child.stdin?.end();
  });
}

/** Quotes an argument for /bin/sh when it needs it. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** A private key (and its .pub) made with ssh-keygen, without a passphrase. */
export async function generateKey(file: string, comment = 'replfs-test'): Promise<string> {
  const r = await exec('ssh-keygen', ['-t', 'ed25519', '-N', '', '-q', '-C', comment, '-f', file]);
  if (r.spawnError) throw new Error(`ssh-keygen is not installed (${r.spawnError.code}); install it with: ${INSTALL_HINT}`);
  if (r.code !== 0) throw new Error(`ssh-keygen failed (${r.code}) for ${file}: ${r.stderr}`);
  return file;
}

async function checkInstalled(): Promise<void> {
  try {
    await fsp.access(SSHD, fs.constants.X_OK);
  } catch {
    throw new Error(`${SSHD} not found: the OpenSSH server is needed for this test; install it with: ${INSTALL_HINT}`);
  }
  const r = await exec('ssh', ['-V']);
  if (r.spawnError) throw new Error(`the ssh client is not installed (${r.spawnError.code}); install it with: ${INSTALL_HINT}`);
}

/** An ephemeral port that was free a moment ago (sshd may still lose it to someone else). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    const done = (ok: boolean): void => { s.destroy(); resolve(ok); };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A process's parent, state and start time (to tell it from a later process reusing its id). */
function procStat(pid: number): { ppid: number; state: string; start: string } | null {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name, in parentheses, may itself hold spaces and parentheses.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    // After the name: state(3) ppid(4) ... starttime(22), counted from 1 over the whole line.
    return { state: fields[0] ?? '', ppid: Number(fields[1]), start: fields[19] ?? '' };
  } catch {
    return null;
  }
}

/** Every live descendant of `root` (sshd's per-connection children setsid, so no process group covers them). */
function descendants(root: number): Map<number, string> {
  const children = new Map<number, number[]>();
  const starts = new Map<number, string>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const st = procStat(pid);
    if (!st) continue;
    starts.set(pid, st.start);
    const list = children.get(st.ppid);
    if (list) list.push(pid);
    else children.set(st.ppid, [pid]);
  }
  const out = new Map<number, string>();
  const queue = [...(children.get(root) ?? [])];
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    if (out.has(pid)) continue;
    out.set(pid, starts.get(pid) ?? '');
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** Sends `sig` to each process still alive with the same start time as when it was found. */
function signalAll(procs: Map<number, string>, sig: NodeJS.Signals): void {
  for (const [pid, start] of procs) {
    if (procStat(pid)?.start !== start) continue;
    try { process.kill(pid, sig); } catch { /* already gone */ }
  }
}

function anyAlive(procs: Map<number, string>): boolean {
  for (const [pid, start] of procs) {
    const st = procStat(pid);
    // A zombie is gone for our purposes; its parent (often init) reaps it.
    if (st && st.start === start && st.state !== 'Z') return true;
  }
  return false;
}

/** A value for sshd_config's SetEnv: quoted, with the parser's escapes. */
function setEnvArg(name: string, value: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`bad environment variable name for sshd: ${name}`);
  if (/[\n\r]/.test(value)) throw new Error(`environment variable ${name} for sshd holds a line break`);
  return `"${`${name}=${value}`.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** A path for sshd_config, quoted in case the temp directory's name holds spaces. */
function configPath(p: string): string {
  if (/["\\\n%]/.test(p)) throw new Error(`sshd cannot be configured with this path: ${p}`);
  return `"${p}"`;
}

/**
 * Starts sshd on a free port of 127.0.0.1, accepting only a freshly made key for the
 * current user, and returns once a real `ssh ... true` has gone through. Teardown (stop,
 * then removal of the temp directory) is registered on `t` before anything is started.
 */
export async function startSshd(t: ExecutionContext, opts: SshdOptions = {}): Promise<Sshd> {
  await checkInstalled();
  const user = os.userInfo().username;
  const isRoot = process.getuid?.() === 0;
  // The privilege separation directory sshd insists on when run as root.
  if (isRoot) {
    try {
      fs.mkdirSync('/run/sshd', { mode: 0o755 });
      fs.chmodSync('/run/sshd', 0o755);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }

  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'replfs-sshd-'));
  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  let stopping: Promise<void> | null = null;
  let logText = '';

  const stopChild = async (): Promise<void> => {
    const c = child;
    if (!c || c.pid === undefined) return;
    const pid = c.pid;
    // Found before the listener dies: afterwards its children belong to init.
    const procs = descendants(pid);
    const listenerStart = procStat(pid)?.start;
    if (c.exitCode === null && c.signalCode === null && listenerStart !== undefined) procs.set(pid, listenerStart);
    signalAll(procs, 'SIGTERM');
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline && anyAlive(procs)) await sleep(25);
    // Anything that got through in the meantime (a connection accepted just before).
    for (const [p, start] of descendants(pid)) procs.set(p, start);
    signalAll(procs, 'SIGKILL');
    await Promise.race([exited, sleep(3000)]);
  };
  const stop = (): Promise<void> => {
    if (!stopping) stopping = stopChild();
    return stopping;
  };
  t.teardown(async () => {
    await stop();
    await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  });

  const hostKey = path.join(dir, 'ssh_host_ed25519_key');
  const identityFile = path.join(dir, 'id_ed25519');
  await Promise.all([generateKey(hostKey, 'replfs-test-host'), generateKey(identityFile, 'replfs-test-client')]);
  const authorizedKeys = path.join(dir, 'authorized_keys');
  await fsp.writeFile(authorizedKeys, await fsp.readFile(`${identityFile}.pub`), { mode: 0o600 });
  const hostPub = (await fsp.readFile(`${hostKey}.pub`, 'utf8')).trim().split(/\s+/).slice(0, 2).join(' ');
  const knownHostsFile = path.join(dir, 'known_hosts');
  const configFile = path.join(dir, 'sshd_config');

  // PATH for the commands run through ssh: this test's, with its node first, so that a
  // remote `node` (or `replfs`) is the one running the tests.
  const nodeDir = path.dirname(process.execPath);
  const pathDirs = [nodeDir, ...(process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':').filter((d) => d && d !== nodeDir)];
  const sessionEnv: Record<string, string> = {
    PATH: pathDirs.join(':'),
    // bash then counts itself at level 2, which is what keeps it from sourcing ~/.bashrc.
    ...(opts.loadBashrc ? {} : { SHLVL: '1' }),
    ...opts.env,
  };

  const clientEnv: NodeJS.ProcessEnv = { ...process.env };
  delete clientEnv.SSH_AUTH_SOCK;
  delete clientEnv.SSH_AGENT_PID;

  const clientArgs = (port: number, key: string): string[] => [
    '-F', '/dev/null',
    '-p', String(port),
    '-i', key,
    '-o', 'IdentitiesOnly=yes',
    '-o', 'IdentityAgent=none',
    '-o', 'PasswordAuthentication=no',
    '-o', 'KbdInteractiveAuthentication=no',
    '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', `UserKnownHostsFile=${knownHostsFile}`,
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'UpdateHostKeys=no',
    '-o', 'LogLevel=ERROR',
    '-o', 'ConnectTimeout=10',
  ];

  const target = `${user}@127.0.0.1`;
  const readyTimeoutMs = opts.readyTimeoutMs ?? 15_000;
  let lastProbe = '';

  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    await fsp.writeFile(knownHostsFile, `[127.0.0.1]:${port} ${hostPub}\n`);
    await fsp.writeFile(configFile, [
      `ListenAddress 127.0.0.1:${port}`,
      'AddressFamily inet',
      `HostKey ${configPath(hostKey)}`,
      `PidFile ${configPath(path.join(dir, 'sshd.pid'))}`,
      `AuthorizedKeysFile ${configPath(authorizedKeys)}`,
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'HostbasedAuthentication no',
      'PermitEmptyPasswords no',
      'PermitRootLogin prohibit-password',
      `AllowUsers ${user}`,
      'UsePAM no',
      // The temp directory and its files are not laid out the way StrictModes wants.
      'StrictModes no',
      'UseDNS no',
      'PrintMotd no',
      'PrintLastLog no',
      'X11Forwarding no',
      'AllowAgentForwarding no',
      'AllowTcpForwarding no',
      'PermitUserEnvironment no',
      'MaxStartups 64',
      'LoginGraceTime 30',
      'LogLevel VERBOSE',
      'Subsystem sftp internal-sftp',
      // One SetEnv line only: sshd keeps the first and ignores later ones.
      `SetEnv ${Object.entries(sessionEnv).map(([k, v]) => setEnvArg(k, v)).join(' ')}`,
      '',
    ].join('\n'));

    logText = '';
    const c = spawn(SSHD, ['-D', '-e', '-f', configFile], { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } });
    child = c;
    let hasExited = false;
    let spawnError: Error | null = null;
    exited = new Promise<void>((resolve) => {
      c.once('exit', () => { hasExited = true; resolve(); });
      c.once('error', (err) => { spawnError = err; hasExited = true; resolve(); });
    });
    c.stderr?.setEncoding('utf8');
    c.stderr?.on('data', (s: string) => {
      logText += s;
      if (logText.length > 256 * 1024) logText = logText.slice(-128 * 1024);
    });

    const deadline = Date.now() + readyTimeoutMs;
    let ready = false;
    while (!hasExited && Date.now() < deadline) {
      if (await canConnect(port)) {
        // Probe options first: for ssh, the first value given for an option wins.
        const probe = await exec('ssh', ['-n', '-o', 'ConnectTimeout=5', ...clientArgs(port, identityFile), target, 'true'], { env: clientEnv, timeoutMs: 10_000 });
        if (probe.code === 0) { ready = true; break; }
        lastProbe = `ssh exited ${probe.code}: ${probe.stderr.trim()}`;
      }
      await sleep(50);
    }
    if (ready) {
      const sshArgs = clientArgs(port, identityFile);
      return {
        host: '127.0.0.1',
        port,
        user,
        target,
        pid: c.pid as number,
        dir,
        identityFile,
        knownHostsFile,
        sshArgs,
        rsh: ['ssh', ...sshArgs].map(shellQuote).join(' '),
        env: clientEnv,
        argsWithIdentity: (key: string) => clientArgs(port, key),
        log: () => logText,
        stop,
      };
    }
    if (hasExited) {
      await exited;
      // Someone took the port between freePort() and sshd's bind: try another one.
      if (/Address already in use|Cannot bind any address/.test(logText) && attempt < 5) { child = null; continue; }
      const why = spawnError ? `could not be started: ${(spawnError as Error).message}` : `exited (${c.exitCode ?? c.signalCode})`;
      throw new Error(`sshd ${why}${attempt > 1 ? ` after ${attempt} attempts` : ''}:\n${logText}`);
    }
    throw new Error(`sshd on port ${port} did not accept \`ssh ${target} true\` within ${readyTimeoutMs} ms (${lastProbe || 'port never accepted a connection'}); sshd log:\n${logText}`);
  }
}
