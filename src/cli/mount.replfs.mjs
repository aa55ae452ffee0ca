#!/usr/bin/env node
// The `mount.replfs` executable: the helper mount(8) runs for file systems of type replfs
// (`mount -t replfs <dir> <mountpoint>`, or an fstab line). Install it as /sbin/mount.replfs
// (a symlink to this file will do); examples/systemd/README.md says how.
const { helperMain } = await import('../../dist/src/cli/mount-helper.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND') {
    process.stderr.write('mount.replfs: replfs is not built yet; run `npm install` (or `npx tsc -p .`) in the replfs checkout\n');
    process.exit(32);
  }
  throw err;
});
process.exit(helperMain(process.argv.slice(2)));
