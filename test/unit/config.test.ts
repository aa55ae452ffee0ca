// The policy schema: every field with a wrong type, an unknown key, an impossible
// schedule, an unreachable hook. Each error names its field.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from '../helpers/ava.js';
import {
  ConfigError, DEFAULT_POLICY, JOURNAL_DEFAULTS, checkCommands, msText, parsePolicy, parsePolicyText, policyToJson, sizeText, type ParseOptions,
} from '../../src/policy/config.js';
import { commandProblem } from '../../src/policy/hooks.js';
import { DEFAULT_JOURNAL_MAX_BYTES } from '../../src/volume/format.js';
import { probeUrl } from '../../src/cli/policy.js';

const outside: ParseOptions = { origin: 'outside', probeUrl };
const volume: ParseOptions = { origin: 'volume', probeUrl };

const dest = (extra: Record<string, unknown> = {}) => ({ destinations: { offsite: { url: 'backup@host:/srv/replica', ...extra } } });

// [what, config, origin, the message: field, then the start of what is wrong]
const BAD: Array<[string, unknown, ParseOptions, string]> = [
  ['not an object', [], outside, '(the file): must be an object'],
  ['an unknown key', { snapshot: {} }, outside, 'snapshot: unknown key (known: snapshots, quiesce, retention, destinations, alerts)'],
  ['a volume key in a policy file', { volumeId: 'x' }, outside, 'volumeId: belongs to the volume itself'],
  ['the journal in a policy file', { journal: {} }, outside, 'journal: belongs to the volume itself'],
  ['a volume identity key in a loaded file', { blockSize: 4096 }, { origin: 'load', probeUrl }, 'blockSize: is the volume\'s own and is never loaded'],
  // snapshots
  ['snapshots not an object', { snapshots: 'often' }, outside, 'snapshots: must be an object'],
  ['snapshots: unknown key', { snapshots: { every: '1h' } }, outside, 'snapshots.every: unknown key (known: schedule, quiesce, label)'],
  ['snapshots.schedule: a bare string', { snapshots: { schedule: '15m' } }, outside, 'snapshots.schedule: '],
  ['snapshots.schedule: both keys', { snapshots: { schedule: { every: '1h', cron: '* * * * *' } } }, outside, 'snapshots.schedule'],
  ['snapshots.schedule.every: no unit', { snapshots: { schedule: { every: '15' } } }, outside, 'snapshots.schedule.every: "15" is not an interval'],
  ['snapshots.schedule.every: a number', { snapshots: { schedule: { every: 900 } } }, outside, 'snapshots.schedule.every: '],
  ['snapshots.schedule.cron: out of range', { snapshots: { schedule: { cron: '0 25 * * *' } } }, outside, 'snapshots.schedule.cron: "0 25 * * *": hour 25 is out of range 0-23'],
  ['snapshots.schedule.cron: impossible', { snapshots: { schedule: { cron: '0 0 30 2 *' } } }, outside, 'snapshots.schedule.cron: "0 0 30 2 *"'],
  ['snapshots.quiesce: a string', { snapshots: { quiesce: 'yes' } }, outside, 'snapshots.quiesce: must be true or false'],
  ['snapshots.label: empty', { snapshots: { label: '' } }, outside, 'snapshots.label: must be a non-empty string'],
  // quiesce
  ['quiesce.pre: a number', { quiesce: { pre: 1 } }, outside, 'quiesce.pre: must be a shell command'],
  ['quiesce.env: an array', { quiesce: { env: ['A=1'] } }, outside, 'quiesce.env: must be an object'],
  ['quiesce.env: a bad name', { quiesce: { env: { 'A-B': '1' } } }, outside, 'quiesce.env.A-B: is not an environment variable name'],
  ['quiesce.env: a number value', { quiesce: { env: { A: 1 } } }, outside, 'quiesce.env.A: must be a string'],
  ['quiesce: unknown key', { quiesce: { timeout: 5 } }, outside, 'quiesce.timeout: unknown key'],
  // retention
  ['retention: empty', { retention: {} }, outside, 'retention: say what to keep'],
  ['retention: restic spelling', { retention: { keepLast: 3 } }, outside, 'retention.keepLast: unknown key (known: keep-last, keep-hourly, keep-daily, keep-weekly, keep-monthly, keep-within)'],
  ['retention.keep-last: zero', { retention: { 'keep-last': 0 } }, outside, 'retention.keep-last: must be a whole number of at least 1'],
  ['retention.keep-daily: a string', { retention: { 'keep-daily': '7' } }, outside, 'retention.keep-daily: must be a whole number of at least 1'],
  ['retention.keep-within: a number', { retention: { 'keep-within': 7 } }, outside, 'retention.keep-within: must be a duration written as a string'],
  ['retention.keep-within: minutes', { retention: { 'keep-within': '15min' } }, outside, 'retention.keep-within: "15min" is not a duration'],
  // destinations
  ['destinations: an array', { destinations: [{ url: '/x' }] }, outside, 'destinations: must be an object'],
  ['destinations: a bad name', { destinations: { 'off site': { url: '/x' } } }, outside, 'destinations.off site: a destination name is 1 to 64 letters'],
  ['destinations: no url', { destinations: { a: {} } }, outside, 'destinations.a.url: is required'],
  ['destinations.url: not a destination', { destinations: { a: { url: 'ftp://host/x' } } }, outside, 'destinations.a.url: "ftp://host/x" is not a destination: unknown scheme'],
  ['destinations.url: the same twice', { destinations: { a: { url: '/x' }, b: { url: '/x' } } }, outside, 'destinations.b.url: is also the url of destinations.a'],
  ['destinations: unknown key', dest({ rpoTarget: '1h' }), outside, 'destinations.offsite.rpoTarget: unknown key'],
  ['destinations.schedule: impossible', dest({ schedule: { cron: '0 0 31 4 *' } }), outside, 'destinations.offsite.schedule.cron: '],
  ['destinations.bwlimit: a number', dest({ bwlimit: 1000 }), outside, 'destinations.offsite.bwlimit: must be a size written as a string'],
  ['destinations.bwlimit: too small', dest({ bwlimit: '100' }), outside, 'destinations.offsite.bwlimit: must be at least 1024 bytes'],
  ['destinations.compress: a string', dest({ compress: 'yes' }), outside, 'destinations.offsite.compress: must be true or false'],
  ['destinations.tokenFile: empty', dest({ tokenFile: '' }), outside, 'destinations.offsite.tokenFile: must be a non-empty string'],
  ['destinations.retention: a bad rule', dest({ retention: { 'keep-last': -1 } }), outside, 'destinations.offsite.retention.keep-last: must be a whole number of at least 1'],
  ['destinations.rpo: no unit', dest({ rpo: '60' }), outside, 'destinations.offsite.rpo: "60" is not an interval'],
  ['destinations.rpo: a number', dest({ rpo: 3600 }), outside, 'destinations.offsite.rpo: must be an interval written as a string'],
  ['destinations.enabled: a string', dest({ enabled: 'no' }), outside, 'destinations.offsite.enabled: must be true or false'],
  // alerts
  ['alerts: unknown key', { alerts: { on_alert: 'x' } }, outside, 'alerts.on_alert: unknown key (known: onAlert, timeoutMs, env, unreachableAfter, minFree, repeatAfter)'],
  ['alerts.onAlert: empty', { alerts: { onAlert: ' ' } }, outside, 'alerts.onAlert: must be a shell command'],
  ['alerts.timeoutMs: zero', { alerts: { timeoutMs: 0 } }, outside, 'alerts.timeoutMs: must be a whole number of milliseconds'],
  ['alerts.unreachableAfter: bad', { alerts: { unreachableAfter: 'soon' } }, outside, 'alerts.unreachableAfter: "soon" is not an interval'],
  ['alerts.minFree: 100%', { alerts: { minFree: '100%' } }, outside, 'alerts.minFree: a share of the destination\'s size must be between 0% and 100%'],
  ['alerts.minFree: a number', { alerts: { minFree: 5 } }, outside, 'alerts.minFree: must be a size such as "10G"'],
  ['alerts.repeatAfter: a number', { alerts: { repeatAfter: 60 } }, outside, 'alerts.repeatAfter: must be an interval'],
  ['alerts.env: bad', { alerts: { env: { '1X': 'a' } } }, outside, 'alerts.env.1X: is not an environment variable name'],
  // journal (the volume's own file)
  ['journal.durability', { journal: { durability: 'always' } }, volume, 'journal.durability: must be "default" or "strict"'],
  ['journal.maxBytes: too small', { journal: { maxBytes: '1K' } }, volume, 'journal.maxBytes: must be at least 65536 bytes'],
  ['journal.maxBytes: a number', { journal: { maxBytes: 1e9 } }, volume, 'journal.maxBytes: must be a size written as a string'],
  ['journal: unknown key', { journal: { size: '1G' } }, volume, 'journal.size: unknown key (known: durability, flushIntervalMs, maxBytes)'],
];

for (const [what, raw, opts, message] of BAD) {
  test(`refused, naming the field: ${what}`, (t) => {
    const err = t.throws(() => parsePolicy(raw, opts), { instanceOf: ConfigError });
    t.true(err!.message.startsWith(message), `got: ${err!.message}`);
  });
}

test('an empty config is every default; the defaults match the engine\'s', (t) => {
  const p = parsePolicy({}, outside);
  t.deepEqual(p, DEFAULT_POLICY);
  t.is(p.snapshots.schedule, null);
  t.is(p.retention, null);
  t.deepEqual(p.destinations, []);
  t.is(p.alerts.unreachableAfterMs, 15 * 60_000);
  t.deepEqual(p.alerts.minFree, { percent: 5 });
  t.is(JOURNAL_DEFAULTS.maxBytes, DEFAULT_JOURNAL_MAX_BYTES);
});

test('a full config parses, and what replfs config prints parses back to the same policy', (t) => {
  const raw = {
    formatVersion: 2, volumeId: 'v', blockSize: 65536, createdAt: '2026-01-01T00:00:00Z',
    journal: { durability: 'strict', flushIntervalMs: 500, maxBytes: '64M' },
    snapshots: { schedule: { every: '15m' }, quiesce: true, label: 'auto' },
    quiesce: { pre: 'true', post: 'true', preTimeoutMs: 5000, env: { DB: 'main' } },
    retention: { 'keep-last': 24, 'keep-daily': 7, 'keep-within': '2d' },
    destinations: {
      offsite: { url: 'backup@host:/srv/replica', bwlimit: '10M', compress: true, retention: { 'keep-daily': 30 }, rpo: '1h' },
      nightly: { url: 'replfs://10.0.0.2:7070/main', schedule: { cron: '30 2 * * *' }, tokenFile: '/etc/replfs/token', enabled: false },
    },
    alerts: { onAlert: 'logger -t replfs', unreachableAfter: '30m', minFree: '10G', repeatAfter: null, env: { TO: 'ops' } },
  };
  const p = parsePolicy(raw, volume);
  t.is(p.snapshots.schedule!.kind, 'every');
  t.true(p.snapshots.quiesce);
  t.deepEqual(p.quiesce.env, { DB: 'main' });
  t.deepEqual(p.retention, { last: 24, daily: 7, withinMs: 2 * 86_400_000 });
  t.is(p.destinations.length, 2);
  const [off, night] = p.destinations;
  t.is(off!.bwlimit, 10 * 1024 * 1024);
  t.is(off!.rpoMs, 3_600_000);
  t.is(off!.schedule, null, 'follows the snapshot schedule');
  t.is(night!.schedule!.kind, 'cron');
  t.false(night!.enabled);
  t.deepEqual(p.alerts.minFree, { bytes: 10 * 1024 ** 3 });
  t.is(p.alerts.repeatAfterMs, null);
  t.is(p.journal.maxBytes, 64 * 1024 * 1024);
  const printed = policyToJson(p);
  t.deepEqual(parsePolicy(JSON.parse(JSON.stringify(printed)), { origin: 'load', probeUrl }), p);
});

test('JSON syntax errors say where', (t) => {
  const err = t.throws(() => parsePolicyText('{\n  "snapshots": {,\n}', outside), { instanceOf: ConfigError });
  t.regex(err!.message, /^\(the file\): is not valid JSON: .* at line 2, column \d+/);
});

test('sizes and intervals print as a config writes them', (t) => {
  t.is(sizeText(256 * 1024 * 1024), '256M');
  t.is(sizeText(1536 * 1024), '1536K');
  t.is(sizeText(1000), '1000');
  t.is(msText(90 * 60_000), '1h30m');
  t.is(msText(2 * 86_400_000 + 1000), '2d1s');
});

test('hooks that cannot run are refused, naming the field: missing, not executable, a directory, not in PATH', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'replfs-hooks-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const script = path.join(dir, 'freeze.sh');
  fs.writeFileSync(script, '#!/bin/sh\nexit 0\n', { mode: 0o644 });
  const probe = (cmd: string) => commandProblem(cmd, dir);
  const check = (policy: unknown) => checkCommands(parsePolicy(policy, outside), probe);
  await t.throwsAsync(check({ quiesce: { pre: `${dir}/nothing.sh --now` } }), { instanceOf: ConfigError, message: `quiesce.pre: "${dir}/nothing.sh" does not exist` });
  await t.throwsAsync(check({ quiesce: { post: script } }), { instanceOf: ConfigError, message: `quiesce.post: "${script}" is not executable (chmod +x ${script})` });
  await t.throwsAsync(check({ alerts: { onAlert: dir } }), { instanceOf: ConfigError, message: `alerts.onAlert: "${dir}" is not a file` });
  await t.throwsAsync(check({ alerts: { onAlert: 'no-such-program-here --x' } }), { instanceOf: ConfigError, message: /^alerts\.onAlert: "no-such-program-here" is not a command found in PATH/ });
  await t.throwsAsync(check({ quiesce: { pre: './missing.sh' } }), { message: /quiesce\.pre: "\.\/missing\.sh" does not exist \(relative paths are taken from .*, where hooks run\)/ });
  fs.chmodSync(script, 0o755);
  // What runs: absolute and relative paths, PATH, builtins, assignments and quotes before the program.
  for (const ok of [script, './freeze.sh arg', 'sh -c "exit 0"', 'echo hi >&2', 'DB=main ./freeze.sh', `'${script}'`, 'cd /tmp && ls', '$HOME/bin/x', '(true)']) {
    t.is(await probe(ok), null, ok);
  }
  t.is(await commandProblem('./unknown.sh', null), null, 'no directory to look in: relative paths go unchecked');
});
