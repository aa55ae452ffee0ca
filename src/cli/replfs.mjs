#!/usr/bin/env node
// The `replfs` executable. Plain JavaScript so it can set up the process before any
// compiled module loads: file I/O and LevelDB share libuv's thread pool, 4 threads by default.
process.env.UV_THREADPOOL_SIZE ??= '32';
const { main } = await import('../../dist/src/cli/main.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND') {
    process.stderr.write('replfs: not built yet; run `npm install` (or `npx tsc -p .`) in the replfs checkout\n');
    process.exit(1);
  }
  throw err;
});
// main() returns when the command is over, including a foreground mount daemon after it
// unmounted; anything still holding the event loop then is of no use.
process.exit(await main(process.argv.slice(2)));
