// What a command is, how its arguments are parsed and how its help is printed.
import { parseArgs } from 'node:util';
import { ReplfsError } from '../errors/index.js';
import { isSnapshotName } from '../volume/snapshots.js';

export interface OptionDef {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** Shown in help as --name VALUE. */
  value?: string;
  description: string;
}

export interface Parsed {
  values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  positionals: string[];
}

export interface Command {
  name: string;
  summary: string;
  /** Positional synopsis, e.g. "<dir> [<mountpoint>]". */
  args: string;
  description: string;
  options: Record<string, OptionDef>;
  positionals: { min: number; max: number };
  /** Hidden commands are internal and left out of the command list. */
  hidden?: boolean;
  run(parsed: Parsed): Promise<number>;
}

export function helpText(cmd: Command): string {
  const lines = [`Usage: replfs ${cmd.name}${cmd.args ? ' ' + cmd.args : ''}${Object.keys(cmd.options).length ? ' [options]' : ''}`, '', cmd.summary];
  if (cmd.description) lines.push('', ...cmd.description.split('\n'));
  lines.push('', 'Options:');
  const rows: Array<[string, string]> = Object.entries(cmd.options).map(([name, o]) => [
    `${o.short ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : ''}`,
    o.description,
  ]);
  rows.push(['    --help', 'show this help']);
  const width = Math.max(...rows.map(([l]) => l.length)) + 2;
  for (const [l, r] of rows) lines.push(`  ${l.padEnd(width)}${r}`);
  return lines.join('\n') + '\n';
}

export function parse(cmd: Command, argv: string[]): Parsed {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const [name, o] of Object.entries(cmd.options)) {
    options[name] = { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    const msg = (err as Error).message.replace(/\. To specify a positional argument.*$/s, '');
    throw new ReplfsError('usage', msg, `see: replfs ${cmd.name} --help`);
  }
  const { positionals } = parsed;
  if (positionals.length < cmd.positionals.min) {
    throw new ReplfsError('usage', `missing argument (usage: replfs ${cmd.name} ${cmd.args})`, `see: replfs ${cmd.name} --help`);
  }
  if (positionals.length > cmd.positionals.max) {
    throw new ReplfsError('usage', `unexpected argument ${JSON.stringify(positionals[cmd.positionals.max])}`, `see: replfs ${cmd.name} --help`);
  }
  return { values: parsed.values as Parsed['values'], positionals };
}

/** Prints a value as JSON on stdout (the --json output of every command). */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export function checkSnapshotName(name: string): void {
  if (!isSnapshotName(name)) {
    throw new ReplfsError('usage', `${JSON.stringify(name)} is not a snapshot name`, 'names look like 2026-11-25T11-05-18Z (see `replfs snapshots`)');
  }
}
