// docs/cli.md must say what the code does: every command's --help verbatim, the usage of
// `replfs` itself, every exit code, and every journal change kind. Change the command or
// the table and this fails until the reference is updated too.
import fs from 'node:fs';
import path from 'node:path';
import test from '../helpers/ava.js';
import { ROOT } from '../helpers/env.js';
import { COMMAND_NAMES, mainHelp as usage } from '../../src/cli/main.js';
import { COMMANDS } from '../../src/cli/commands.js';
import { helpText } from '../../src/cli/command.js';
import { ExitCode } from '../../src/errors/index.js';
import { ChangeKind } from '../../src/core/types.js';

const mainHelp = () => usage(COMMANDS);

const DOC = path.join(ROOT, 'docs', 'cli.md');
const doc = fs.readFileSync(DOC, 'utf8');

/** The text of the section under `heading` (up to the next heading of the same level). */
function section(heading: string): string {
  const level = heading.match(/^#+/)![0];
  const start = doc.indexOf(`\n${heading}\n`);
  if (start < 0) return '';
  const rest = doc.slice(start + heading.length + 2);
  const end = rest.search(new RegExp(`^${level} `, 'm'));
  return end < 0 ? rest : rest.slice(0, end);
}

for (const cmd of COMMANDS) {
  test(`docs/cli.md has the help of replfs ${cmd.name} verbatim`, (t) => {
    const body = section(`## replfs ${cmd.name}`);
    t.not(body, '', `docs/cli.md needs a "## replfs ${cmd.name}" section`);
    t.true(body.includes('```text\n' + helpText(cmd) + '```\n'),
      `the "## replfs ${cmd.name}" section must hold the output of \`replfs ${cmd.name} --help\` in a text block; it reads now:\n${helpText(cmd)}`);
  });
}

test('docs/cli.md has the usage of replfs verbatim', (t) => {
  t.true(section('## replfs').includes('```text\n' + mainHelp() + '```\n'),
    `the "## replfs" section must hold the output of \`replfs --help\`; it reads now:\n${mainHelp()}`);
});

test('the command line knows every command, by the names the reference lists', (t) => {
  t.deepEqual(COMMAND_NAMES, COMMANDS.map((c) => c.name));
});

test('docs/cli.md has every command and no command that is gone', (t) => {
  const documented = [...doc.matchAll(/^## replfs (\S+)$/gm)].map((m) => m[1]);
  t.deepEqual(documented.sort(), COMMANDS.map((c) => c.name).sort());
});

test('the exit-code table of docs/cli.md lists every exit code, and only those', (t) => {
  const table = section('## Exit codes');
  t.not(table, '', 'docs/cli.md needs a "## Exit codes" section');
  const rows = [...table.matchAll(/^\|\s*(\d+)\s*\|\s*`?(\w+)`?\s*\|\s*(.*?)\s*\|\s*$/gm)]
    .map((m) => ({ code: Number(m[1]), name: m[2]!, meaning: m[3]! }));
  for (const [name, code] of Object.entries(ExitCode)) {
    const row = rows.find((r) => r.name === name);
    t.truthy(row, `no row for exit code ${code} ${name}`);
    t.is(row?.code, code, `exit code ${name} is ${code}`);
    t.true((row?.meaning.length ?? 0) > 0, `exit code ${name} has a meaning`);
  }
  t.is(rows.length, Object.keys(ExitCode).length, `the table has a row per exit code and no other: ${rows.map((r) => r.name).join(', ')}`);
});

test('docs/cli.md names every journal change kind', (t) => {
  const kinds = section('### `replfs journal --json`');
  t.not(kinds, '', 'docs/cli.md needs a "### `replfs journal --json`" section');
  for (const name of Object.keys(ChangeKind)) t.regex(kinds, new RegExp(`^\\| \`${name}\` \\|`, 'm'), `kind ${name}`);
});
