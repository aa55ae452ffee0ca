// Every test file imports `test` from here instead of from ava. Besides ava's own
// bookkeeping, each declared test and its outcome are appended to a results file, so
// the summary line that CI prints is computed from the run itself, not parsed from
// ava's console output. A test declared but never reported (a crash, a timeout) counts
// as failed.
import anyTest from 'ava';
import type { TestFn, ExecutionContext } from 'ava';
import { appendFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';

const resultsDir = process.env.REPLFS_TEST_RESULTS ?? path.resolve('test-results');
mkdirSync(resultsDir, { recursive: true });
const resultsFile = path.join(resultsDir, `results-${process.pid}.jsonl`);
const testFile = path.relative(process.cwd(), anyTest.meta.file.replace(/^file:\/\//, ''));

function record(event: 'declared' | 'passed' | 'failed', title: string): void {
  appendFileSync(resultsFile, JSON.stringify({ file: testFile, title, event }) + '\n');
}

type Declare = (title: string, ...rest: unknown[]) => unknown;

function declaring(fn: Declare): Declare {
  return (title: string, ...rest: unknown[]) => {
    record('declared', title);
    return fn(title, ...rest);
  };
}

anyTest.afterEach.always((t: ExecutionContext) => {
  // t.title of an afterEach hook is "afterEach.always hook for <test title>"
  const title = t.title.replace(/^afterEach\.always hook for /, '');
  record(t.passed ? 'passed' : 'failed', title);
});

const base = anyTest as unknown as Declare & Record<string, unknown>;
const wrapped = Object.assign(declaring(base), anyTest, {
  serial: Object.assign(declaring((anyTest.serial as unknown) as Declare), anyTest.serial),
});

export const test = wrapped as unknown as TestFn;
export default test;
