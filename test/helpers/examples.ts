// Plumbing for the tests of examples/: a `replfs` executable on a PATH of the test's own,
// and a port chosen beforehand for a server started later (helpers/server.ts starts it).
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { BIN, type Scratch } from './env.js';

/**
 * A directory holding a `replfs` that runs this checkout, as `npm install -g` would put one
 * on the PATH. Returns the directory; `path.join(dir, 'replfs')` is the executable.
 */
export function replfsOnPath(s: Scratch): string {
  const dir = path.join(s.dir, 'bin');
  fs.mkdirSync(dir, { recursive: true });
  const exe = path.join(dir, 'replfs');
  fs.writeFileSync(exe, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} "$@"\n`, { mode: 0o755 });
  return dir;
}

/** The environment of the scratch, with `dir` first on the PATH. */
export function withPath(s: Scratch, dir: string, more: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...s.env, PATH: `${dir}:${s.env.PATH ?? '/usr/bin:/bin'}`, ...more };
}

/** A TCP port of 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}
