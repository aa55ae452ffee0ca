#!/usr/bin/env node
// replfs native setup. Runs as the package's postinstall and, with --check, before
// `npm start`, `npm test` and `npm run bench`.
//
//   a. FUSE 2 runtime: libfuse.so.2, fusermount, /dev/fuse (installed with apt-get
//      when running as root).
//   b. fuse-native: patch fuse-native.c (from a pristine copy) and rebuild it into
//      node_modules/fuse-native/build/Release/fuse.node.
//   c. Build the replfs_sys addon in src/native.
//   d. Compile the TypeScript when this is a development checkout.
//
// Every step is idempotent and does nothing when already done. --check only runs
// step a and verifies that the native builds are present and current; it prints
// nothing when all is fine.
//
// Exit codes: 0 ok, 1 setup failure, 2 (--check) native builds missing or stale,
// 7 (--check) FUSE runtime missing.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const PREFIX = 'replfs setup: ';
const RUNTIME_MISSING_MESSAGE =
  'replfs needs the FUSE 2 runtime. Install it with: sudo apt-get install -y fuse libfuse2';
const PATCH_MARKER = '/* replfs-patch v2 */';
// Any version of the marker: a file carrying one is patched, never pristine.
const ANY_PATCH_MARKER = '/* replfs-patch v';

const CHECK = process.argv.includes('--check');
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const NATIVE_DIR = path.join(ROOT, 'src', 'native');
const SYS_ADDON = path.join(NATIVE_DIR, 'build', 'Release', 'replfs_sys.node');
const SYS_SOURCES = ['replfs_sys.c', 'fuse_reply_shim.c', 'binding.gyp'].map((f) => path.join(NATIVE_DIR, f));

const log = (msg) => process.stdout.write(PREFIX + msg + '\n');
const warn = (msg) => process.stderr.write(PREFIX + msg + '\n');

class SetupError extends Error {
  constructor(message, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

function mtime(file) {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return -1;
  }
}

function readIfExists(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (err.code === 'ENOENT') return null;
    throw err;
  }
}

function writeAtomic(file, text) {
  const tmp = `${file}.replfs-tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

function isRoot() {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

function onPath(cmd) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    try {
      fs.accessSync(path.join(dir, cmd), fs.constants.X_OK);
      return path.join(dir, cmd);
    } catch {
      // keep looking
    }
  }
  return null;
}

// ---------------------------------------------------------------------------
// a. FUSE runtime

const LIBFUSE_DIRS = [
  '/lib/x86_64-linux-gnu',
  '/usr/lib/x86_64-linux-gnu',
  '/lib/aarch64-linux-gnu',
  '/usr/lib/aarch64-linux-gnu',
  '/lib/arm-linux-gnueabihf',
  '/usr/lib/arm-linux-gnueabihf',
  '/lib64',
  '/usr/lib64',
  '/lib',
  '/usr/lib',
  '/usr/local/lib',
];

function findSystemLibfuse() {
  for (const dir of LIBFUSE_DIRS) {
    const file = path.join(dir, 'libfuse.so.2');
    if (fs.existsSync(file)) return file;
  }
  for (const ldconfig of ['/sbin/ldconfig', '/usr/sbin/ldconfig', 'ldconfig']) {
    const res = spawnSync(ldconfig, ['-p'], { encoding: 'utf8' });
    if (res.error || res.status !== 0) continue;
    const m = /^\s*libfuse\.so\.2 \([^)]*\) => (\S+)\s*$/m.exec(res.stdout);
    return m ? m[1] : null;
  }
  return null;
}

function missingRuntime() {
  const missing = [];
  if (!findSystemLibfuse()) missing.push('libfuse.so.2');
  if (!onPath('fusermount')) missing.push('fusermount');
  if (!fs.existsSync('/dev/fuse')) missing.push('/dev/fuse');
  return missing;
}

function fuse3Installed() {
  const res = spawnSync('dpkg-query', ['-W', '-f=${Status}', 'fuse3'], { encoding: 'utf8' });
  return !res.error && res.status === 0 && /install ok installed/.test(res.stdout);
}

function aptGet(args) {
  const res = spawnSync('apt-get', args, {
    stdio: ['ignore', process.stderr, process.stderr],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  return !res.error && res.status === 0;
}

function ensureFuseRuntime() {
  let missing = missingRuntime();
  if (missing.length === 0) return true;

  warn(`FUSE runtime incomplete, missing: ${missing.join(', ')}`);
  const packageFixable = missing.some((m) => m !== '/dev/fuse');
  if (packageFixable && isRoot() && onPath('apt-get')) {
    if (fuse3Installed()) {
      // Debian's fuse3 package Breaks/Replaces fuse: installing fuse would remove it.
      warn('not installing "fuse": the installed fuse3 package conflicts with it');
    } else {
      warn('installing: apt-get install -y fuse libfuse2');
      if (!aptGet(['install', '-y', 'fuse', 'libfuse2'])) {
        warn('apt-get install failed; running apt-get update and retrying');
        aptGet(['update']);
        aptGet(['install', '-y', 'fuse', 'libfuse2']);
      }
      missing = missingRuntime();
      if (missing.length === 0) {
        log('FUSE runtime installed');
        return true;
      }
      warn(`still missing after apt-get: ${missing.join(', ')}`);
    }
  }
  if (missing.includes('/dev/fuse')) {
    warn('/dev/fuse does not exist: load the fuse kernel module (modprobe fuse), or pass --device /dev/fuse to the container');
  }
  process.stderr.write(RUNTIME_MISSING_MESSAGE + '\n');
  return false;
}

// ---------------------------------------------------------------------------
// b. fuse-native patch

function replaceOnce(text, anchor, replacement, label) {
  const first = text.indexOf(anchor);
  if (first < 0) {
    throw new SetupError(`fuse-native patch: anchor "${label}" not found in fuse-native.c (unexpected fuse-native version?)`);
  }
  if (text.indexOf(anchor, first + 1) >= 0) {
    throw new SetupError(`fuse-native patch: anchor "${label}" found more than once in fuse-native.c`);
  }
  return text.slice(0, first) + replacement + text.slice(first + anchor.length);
}

// Each entry: [label, anchor text in pristine fuse-native.c 2.2.6, replacement].
const FUSE_NATIVE_PATCHES = [
  [
    'marker',
    '#define FUSE_USE_VERSION 29\n',
    `${PATCH_MARKER}\n` +
      '/* Patched by replfs (src/native/setup.mjs): nanosecond timestamps, separate utimens\n' +
      ' * atime/mtime with UTIME_NOW/UTIME_OMIT, create flags, caller uid/gid/pid. */\n' +
      '#define FUSE_USE_VERSION 29\n',
  ],
  [
    'FUSE_NATIVE_HANDLER caller context',
    '  fuse_thread_locals_t *l = get_thread_locals();\\\n' +
      '  l->op = op_##name;\\\n' +
      '  l->op_fn = fuse_native_dispatch_##name;\\\n',
    '  fuse_thread_locals_t *l = get_thread_locals();\\\n' +
      '  l->op = op_##name;\\\n' +
      '  l->op_fn = fuse_native_dispatch_##name;\\\n' +
      '  {\\\n' +
      '    struct fuse_context *replfs_fctx = fuse_get_context();\\\n' +
      '    l->caller_uid = replfs_fctx != NULL ? (uint32_t) replfs_fctx->uid : 0;\\\n' +
      '    l->caller_gid = replfs_fctx != NULL ? (uint32_t) replfs_fctx->gid : 0;\\\n' +
      '    l->caller_pid = replfs_fctx != NULL ? (uint32_t) replfs_fctx->pid : 0;\\\n' +
      '  }\\\n',
  ],
  [
    'FUSE_METHOD dispatch arguments',
    '      napi_value argv[callbackArgs + 2];\\\n' +
      '      napi_get_reference_value(env, l->self, &(argv[0]));\\\n' +
      '      napi_create_uint32(env, l->op, &(argv[1]));\\\n' +
      '      callbackBlk\\\n' +
      '      NAPI_MAKE_CALLBACK(env, NULL, ctx, callback, callbackArgs + 2, argv, NULL)\\\n',
    '      napi_value argv[callbackArgs + 5];\\\n' +
      '      napi_get_reference_value(env, l->self, &(argv[0]));\\\n' +
      '      napi_create_uint32(env, l->op, &(argv[1]));\\\n' +
      '      callbackBlk\\\n' +
      '      napi_create_uint32(env, l->caller_uid, &(argv[callbackArgs + 2]));\\\n' +
      '      napi_create_uint32(env, l->caller_gid, &(argv[callbackArgs + 3]));\\\n' +
      '      napi_create_uint32(env, l->caller_pid, &(argv[callbackArgs + 4]));\\\n' +
      '      NAPI_MAKE_CALLBACK(env, NULL, ctx, callback, callbackArgs + 5, argv, NULL)\\\n',
  ],
  [
    'thread locals fields',
    '  uid_t uid;\n  gid_t gid;\n  size_t atime;\n  size_t mtime;\n',
    '  uid_t uid;\n  gid_t gid;\n  size_t atime;\n  size_t mtime;\n' +
      '  uint32_t caller_uid;\n  uint32_t caller_gid;\n  uint32_t caller_pid;\n' +
      '  struct timespec utimens_tv[2];\n',
  ],
  [
    'uint32s_to_timespec',
    'static void uint32s_to_timespec (struct timespec* ts, uint32_t** ints) {\n' +
      '  uint64_t ms = uint32s_to_uint64(ints);\n' +
      '  ts->tv_sec = ms / 1000;\n' +
      '  ts->tv_nsec = (ms % 1000) * 1000000;\n' +
      '}\n',
    '// Two uint32 per timestamp: seconds (unsigned 32-bit), then nanoseconds.\n' +
      'static void uint32s_to_timespec (struct timespec* ts, uint32_t** ints) {\n' +
      '  uint32_t sec = *((*ints)++);\n' +
      '  uint32_t nsec = *((*ints)++);\n' +
      '  ts->tv_sec = (time_t) sec;\n' +
      '  ts->tv_nsec = nsec < 1000000000 ? (long) nsec : 999999999;\n' +
      '}\n',
  ],
  [
    'create passes flags',
    'FUSE_METHOD(create, 2, 1, (const char *path, mode_t mode, struct fuse_file_info *info), {\n' +
      '  l->path = path;\n' +
      '  l->mode = mode;\n' +
      '  l->info = info;\n' +
      '}, {\n' +
      '  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));\n' +
      '  napi_create_uint32(env, l->mode, &(argv[3]));\n' +
      '}, {\n',
    'FUSE_METHOD(create, 3, 1, (const char *path, mode_t mode, struct fuse_file_info *info), {\n' +
      '  l->path = path;\n' +
      '  l->mode = mode;\n' +
      '  l->info = info;\n' +
      '}, {\n' +
      '  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));\n' +
      '  napi_create_uint32(env, l->mode, &(argv[3]));\n' +
      '  napi_create_uint32(env, l->info != NULL ? (uint32_t) l->info->flags : 0, &(argv[4]));\n' +
      '}, {\n',
  ],
  [
    'utimens atime/mtime seconds + nanoseconds',
    'FUSE_METHOD_VOID(utimens, 5, 0, (const char *path, const struct timespec tv[2]), {\n' +
      '  l->path = path;\n' +
      '  l->atime = timespec_to_uint64(&tv[0]);\n' +
      '  l->mtime = timespec_to_uint64(&tv[1]);\n' +
      '}, {\n' +
      '  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));\n' +
      '  FUSE_UINT64_TO_INTS_ARGV(l->atime, 3)\n' +
      '  FUSE_UINT64_TO_INTS_ARGV(l->atime, 5)\n' +
      '})\n',
    '// utimens(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec): nanoseconds may be\n' +
      '// UTIME_NOW or UTIME_OMIT (flag_utime_omit_ok), passed through unchanged.\n' +
      'FUSE_METHOD_VOID(utimens, 5, 0, (const char *path, const struct timespec tv[2]), {\n' +
      '  l->path = path;\n' +
      '  l->utimens_tv[0] = tv[0];\n' +
      '  l->utimens_tv[1] = tv[1];\n' +
      '}, {\n' +
      '  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));\n' +
      '  napi_create_uint32(env, (uint32_t) l->utimens_tv[0].tv_sec, &(argv[3]));\n' +
      '  napi_create_uint32(env, (uint32_t) l->utimens_tv[0].tv_nsec, &(argv[4]));\n' +
      '  napi_create_uint32(env, (uint32_t) l->utimens_tv[1].tv_sec, &(argv[5]));\n' +
      '  napi_create_uint32(env, (uint32_t) l->utimens_tv[1].tv_nsec, &(argv[6]));\n' +
      '})\n',
  ],
  [
    'flag_utime_omit_ok',
    '  struct fuse_operations ops = { };\n',
    // nullpath_ok: with hard_remove, I/O on a file unlinked while open arrives without a
    // path; replfs serves it through the file handle.
    '  struct fuse_operations ops = { };\n' + '  ops.flag_utime_omit_ok = 1;\n' + '  ops.flag_nullpath_ok = 1;\n',
  ],
];

// Applied to every occurrence: a NULL path (see flag_nullpath_ok) becomes "" for JS.
const NULL_PATH_FROM = 'napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH';
const NULL_PATH_TO = 'napi_create_string_utf8(env, l->path ? l->path : "", NAPI_AUTO_LENGTH';

function patchFuseNative(pristine) {
  if (pristine.includes(ANY_PATCH_MARKER)) {
    throw new SetupError('fuse-native.c.orig already contains the replfs patch marker; reinstall fuse-native (rm -rf node_modules/fuse-native && npm ci)');
  }
  let text = pristine;
  for (const [label, anchor, replacement] of FUSE_NATIVE_PATCHES) {
    text = replaceOnce(text, anchor, replacement, label);
  }
  if (!text.includes(NULL_PATH_FROM)) {
    throw new SetupError('fuse-native patch: no path argument conversions found in fuse-native.c (unexpected fuse-native version?)');
  }
  return text.split(NULL_PATH_FROM).join(NULL_PATH_TO);
}

// Fallback when the bundled libfuse.so would not resolve to the system libfuse.so.2:
// link the system library by its file name (no libfuse.so dev symlink needed).
const GYP_LIBRARIES_ANCHOR =
  '    "libraries": [\n' + '      "<!(node -e \\"require(\'fuse-shared-library/lib\')\\")",\n' + '    ],\n';
const GYP_LIBRARIES_SYSTEM = '    "libraries": [\n      "-l:libfuse.so.2",\n    ],\n';

function fuseNativePaths() {
  const req = createRequire(path.join(ROOT, 'package.json'));
  let pkg;
  try {
    pkg = req.resolve('fuse-native/package.json');
  } catch {
    throw new SetupError('fuse-native is not installed (run npm ci)');
  }
  const dir = path.dirname(pkg);
  return {
    dir,
    version: JSON.parse(fs.readFileSync(pkg, 'utf8')).version,
    source: path.join(dir, 'fuse-native.c'),
    pristine: path.join(dir, 'fuse-native.c.orig'),
    gyp: path.join(dir, 'binding.gyp'),
    gypPristine: path.join(dir, 'binding.gyp.orig'),
    addon: path.join(dir, 'build', 'Release', 'fuse.node'),
  };
}

// Returns null when fuse-native is patched and built, else a reason.
function fuseNativeStale(p) {
  const current = readIfExists(p.source);
  if (current === null) return 'fuse-native.c is missing';
  const pristine = readIfExists(p.pristine);
  if (!current.includes(PATCH_MARKER) || pristine === null) return 'fuse-native is not patched';
  let expected;
  try {
    expected = patchFuseNative(pristine);
  } catch (err) {
    return err.message;
  }
  if (current !== expected) return 'fuse-native patch is out of date';
  const built = mtime(p.addon);
  if (built < 0) return 'fuse-native is not built (build/Release/fuse.node missing)';
  if (built < mtime(p.source) || built < mtime(p.gyp)) return 'fuse-native build is older than its patched source';
  return null;
}

function nodeGypCommand() {
  const req = createRequire(path.join(ROOT, 'package.json'));
  const candidates = [];
  try {
    candidates.push(req.resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not a dev install
  }
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  const execDir = path.dirname(process.execPath);
  candidates.push(path.resolve(execDir, '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  candidates.push(path.resolve(execDir, 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found) throw new SetupError('node-gyp not found (install the devDependencies or npm)');
  return found;
}

function nodeGypArgs() {
  const args = ['rebuild'];
  if (!process.env.npm_config_nodedir) {
    // Use the headers installed next to this node binary so that the build works offline.
    const prefix = path.resolve(path.dirname(process.execPath), '..');
    const inc = path.join(prefix, 'include', 'node');
    if (fs.existsSync(path.join(inc, 'node_api.h')) && fs.existsSync(path.join(inc, 'common.gypi'))) {
      args.push(`--nodedir=${prefix}`);
    }
  }
  return args;
}

function runNodeGyp(cwd, what) {
  log(`building ${what} (node-gyp rebuild in ${path.relative(ROOT, cwd) || '.'})`);
  const env = { ...process.env };
  // binding.gyp files shell out to `node`; make sure it is this one.
  env.PATH = path.dirname(process.execPath) + path.delimiter + (env.PATH || '');
  const res = spawnSync(process.execPath, [nodeGypCommand(), ...nodeGypArgs()], {
    cwd,
    env,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  if (res.error || res.status !== 0) {
    process.stderr.write(res.stdout || '');
    process.stderr.write(res.stderr || '');
    throw new SetupError(`node-gyp failed for ${what}${res.error ? ': ' + res.error.message : ''}`);
  }
}

function assertLoads(file, what) {
  const res = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(file)})`], { encoding: 'utf8' });
  if (res.status !== 0) {
    process.stderr.write(res.stderr || '');
    throw new SetupError(`${what} was built but does not load: ${file}`);
  }
}

// Returns { ok, detail } describing how fuse.node resolves libfuse.
function checkLibfuseLink(addon) {
  const res = spawnSync('ldd', [addon], { encoding: 'utf8' });
  if (res.error || res.status !== 0) return { ok: true, detail: 'ldd unavailable, link not verified' };
  const line = res.stdout.split('\n').find((l) => /libfuse/.test(l));
  if (!line) return { ok: false, detail: 'fuse.node does not link libfuse at all' };
  const m = /^\s*(\S+)\s+=>\s+(.*?)\s*(\(0x[0-9a-f]+\))?$/.exec(line);
  if (!m) return { ok: false, detail: line.trim() };
  const [, soname, target] = m;
  const ok = soname === 'libfuse.so.2' && target.startsWith('/') && !target.includes('node_modules');
  return { ok, detail: `${soname} => ${target}` };
}

function ensureFuseNative(runtimeOk) {
  const p = fuseNativePaths();
  if (p.version !== '2.2.6') warn(`fuse-native ${p.version} found; the patch was written for 2.2.6`);

  const current = readIfExists(p.source);
  if (current === null) throw new SetupError(`missing ${p.source}`);
  if (!current.includes(ANY_PATCH_MARKER)) {
    // An unmarked fuse-native.c is pristine (first run, or fuse-native was reinstalled).
    fs.writeFileSync(p.pristine, current);
  } else if (!fs.existsSync(p.pristine)) {
    throw new SetupError('fuse-native.c is patched but fuse-native.c.orig is missing; reinstall fuse-native (rm -rf node_modules/fuse-native && npm ci)');
  }
  const patched = patchFuseNative(fs.readFileSync(p.pristine, 'utf8'));
  if (current !== patched) {
    log('patching node_modules/fuse-native/fuse-native.c');
    writeAtomic(p.source, patched);
  }
  if (process.env.REPLFS_FUSE_LINK === 'system') linkSystemLibfuse(p);

  if (fuseNativeStale(p) === null) return;

  runNodeGyp(p.dir, 'fuse-native');
  let link = checkLibfuseLink(p.addon);
  if (!link.ok && runtimeOk && !readIfExists(p.gyp).includes(GYP_LIBRARIES_SYSTEM)) {
    warn(`fuse.node links ${link.detail}; relinking against the system libfuse.so.2`);
    linkSystemLibfuse(p);
    runNodeGyp(p.dir, 'fuse-native');
    link = checkLibfuseLink(p.addon);
  }
  if (!link.ok) {
    if (runtimeOk) throw new SetupError(`fuse.node does not resolve the system libfuse.so.2: ${link.detail}`);
    warn(`fuse.node: ${link.detail} (install the FUSE 2 runtime before mounting)`);
  } else {
    log(`fuse-native built: ${link.detail}`);
    assertLoads(p.addon, 'fuse-native');
  }
}

function linkSystemLibfuse(p) {
  const gyp = fs.readFileSync(p.gyp, 'utf8');
  if (gyp.includes(GYP_LIBRARIES_SYSTEM)) return;
  if (!fs.existsSync(p.gypPristine)) fs.writeFileSync(p.gypPristine, gyp);
  writeAtomic(p.gyp, replaceOnce(gyp, GYP_LIBRARIES_ANCHOR, GYP_LIBRARIES_SYSTEM, 'binding.gyp libraries'));
  log('fuse-native binding.gyp now links -l:libfuse.so.2');
}

// ---------------------------------------------------------------------------
// c. replfs_sys addon

function sysAddonStale() {
  const built = mtime(SYS_ADDON);
  if (built < 0) return 'replfs_sys addon is not built';
  if (SYS_SOURCES.some((s) => mtime(s) > built)) return 'replfs_sys addon is older than its sources';
  return null;
}

function ensureSysAddon() {
  if (sysAddonStale() === null) return;
  runNodeGyp(NATIVE_DIR, 'replfs_sys');
  assertLoads(SYS_ADDON, 'replfs_sys');
  log('replfs_sys built');
}

// ---------------------------------------------------------------------------
// d. TypeScript

const TSC_STAMP = path.join(ROOT, 'dist', '.replfs-tsc-stamp');

// The compiler inputs: the .ts files under src/ and test/ plus the configuration.
function compilerInputs() {
  const files = [path.join(ROOT, 'tsconfig.json'), path.join(ROOT, 'package-lock.json')];
  const walk = (dir) => {
    let entries;
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.name === 'node_modules' || e.name === 'build' || e.name.startsWith('.')) continue;
      const full = path.join(dir, e.name);
      if (e.isDirectory()) walk(full);
      else if (/\.(c|m)?ts$/.test(e.name)) files.push(full);
    }
  };
  walk(path.join(ROOT, 'src'));
  walk(path.join(ROOT, 'test'));
  return files.sort();
}

// The stamp lists the inputs of the last successful compile, so that added, deleted
// or renamed files count as changes as well as newer ones.
function ensureTypeScript() {
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  if (!fs.existsSync(tsc)) return;
  const inputs = compilerInputs();
  const listing = inputs.map((f) => path.relative(ROOT, f)).join('\n') + '\n';
  const stamp = mtime(TSC_STAMP);
  if (stamp >= 0 && readIfExists(TSC_STAMP) === listing && inputs.every((f) => mtime(f) <= stamp)) return;
  log('compiling TypeScript (tsc -p .)');
  const res = spawnSync(process.execPath, [tsc, '-p', '.'], { cwd: ROOT, stdio: 'inherit' });
  if (res.error || res.status !== 0) {
    throw new SetupError(`tsc failed${res.error ? ': ' + res.error.message : ` (exit ${res.status})`}`);
  }
  fs.mkdirSync(path.dirname(TSC_STAMP), { recursive: true });
  fs.writeFileSync(TSC_STAMP, listing);
}

// ---------------------------------------------------------------------------

function check() {
  if (!ensureFuseRuntime()) return 7;
  const problems = [];
  try {
    const reason = fuseNativeStale(fuseNativePaths());
    if (reason) problems.push(reason);
  } catch (err) {
    problems.push(err.message);
  }
  const sys = sysAddonStale();
  if (sys) problems.push(sys);
  if (problems.length > 0) {
    warn(`native builds missing or out of date: ${problems.join('; ')}`);
    warn('run: node src/native/setup.mjs');
    return 2;
  }
  return 0;
}

function setup() {
  const runtimeOk = ensureFuseRuntime();
  if (!runtimeOk) warn('continuing without the FUSE runtime; mounting will fail until it is installed');
  ensureFuseNative(runtimeOk);
  ensureSysAddon();
  ensureTypeScript();
  return 0;
}

try {
  process.exitCode = CHECK ? check() : setup();
} catch (err) {
  if (err instanceof SetupError) {
    warn(err.message);
    process.exitCode = err.exitCode;
  } else {
    throw err;
  }
}
