#!/usr/bin/env node
// `npm test`: runs ava, then prints the summary line computed from the results each test
// recorded (test/helpers/ava.ts), and fails if any mount was left behind.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
// Per run, so that two runs at once (a developer and an editor plugin, say) do not mix.
const resultsDir = path.join(root, 'test-results', `run-${process.pid}`);
const testTmp = path.join(os.tmpdir(), 'replfs-test', `run-${process.pid}`);
fs.rmSync(resultsDir, { recursive: true, force: true });
fs.mkdirSync(resultsDir, { recursive: true });

const ava = spawnSync(process.execPath, [path.join(root, 'node_modules/ava/entrypoints/cli.mjs'), ...process.argv.slice(2)], {
  cwd: root, stdio: 'inherit', env: { ...process.env, REPLFS_TEST_RESULTS: resultsDir, REPLFS_TEST_TMP: testTmp },
});

const outcome = new Map();
for (const file of fs.readdirSync(resultsDir)) {
  if (!file.endsWith('.jsonl')) continue;
  for (const line of fs.readFileSync(path.join(resultsDir, file), 'utf8').split('\n')) {
    if (!line) continue;
    const { file: f, title, event } = JSON.parse(line);
    const key = `${f} > ${title}`;
    if (event === 'declared') { if (!outcome.has(key)) outcome.set(key, 'missing'); }
    else if (outcome.get(key) !== 'failed') outcome.set(key, event);
  }
}
let passed = 0;
let failed = 0;
const missing = [];
for (const [key, state] of outcome) {
  if (state === 'passed') passed++;
  else { failed++; if (state === 'missing') missing.push(key); }
}
for (const m of missing) console.log(`no result (crashed or timed out): ${m}`);

const leftover = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
  .map((l) => l.split(' ')[4] ?? '').filter((p) => p.startsWith(testTmp + '/'));
if (leftover.length > 0) {
  console.log(`mounts left behind by the tests: ${leftover.join(', ')}`);
  failed++;
}
if (ava.status !== 0 && failed === 0) {
  console.log(`ava exited with ${ava.status ?? ava.signal} although every recorded test passed`);
  failed++;
}
fs.rmSync(testTmp, { recursive: true, force: true });
fs.writeFileSync(path.join(root, 'test-results', 'summary.txt'), `${passed} passed, ${failed} failed\n`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
