// Entry point of the `replfs` command.
import { ExitCode, ReplfsError, messageOf } from '../errors/index.js';
import { helpText, parse, type Command } from './command.js';
import { VERSION } from './version.js';
import { init } from './init.js';
import { mount } from './mount.js';
import { unmount } from './unmount.js';
import { status } from './status.js';
import { journal } from './journal.js';
import { demo } from './demo.js';
import { snapshot, snapshots } from './snapshot.js';
import { prune } from './prune.js';
import { diff } from './diff.js';
import { restore } from './restore.js';
import { sync } from './sync.js';
import { serve } from './serve.js';
import { verify } from './verify.js';

export const COMMANDS: Command[] = [init, mount, unmount, status, journal, snapshot, snapshots, diff, restore, prune, sync, verify, serve, demo];

export function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    'Usage: replfs <command> [arguments] [options]',
    '',
    'replfs protects a directory: a FUSE mount journals every change to it.',
    '',
    'Commands:',
    ...COMMANDS.filter((c) => !c.hidden).map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    'Options:',
    '  -h, --help     show this help (`replfs <command> --help` shows a command\'s options)',
    '  -V, --version  print the version',
    '',
    'Exit codes are listed in docs/cli.md.',
    '',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    // A bare `replfs` is a usage error: the help goes to stderr, stdout stays empty.
    process.stderr.write(`replfs: missing command\n\n${mainHelp()}`);
    return ExitCode.usage;
  }
  if (name === '--help' || name === '-h') {
    process.stdout.write(mainHelp());
    return 0;
  }
  if (name === 'help') {
    // `replfs help [<command>]`
    if (rest.length === 0) {
      process.stdout.write(mainHelp());
      return 0;
    }
    const target = COMMANDS.find((c) => c.name === rest[0]);
    if (!target || rest.length > 1) {
      process.stderr.write(target ? `replfs help: unexpected argument ${JSON.stringify(rest[1])}\n` : `replfs help: unknown command ${JSON.stringify(rest[0])}\n\n${mainHelp()}`);
      return ExitCode.usage;
    }
    process.stdout.write(helpText(target));
    return 0;
  }
  if (name === '--version' || name === '-V') {
    console.log(VERSION);
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    const what = name.startsWith('-') ? 'option' : 'command';
    process.stderr.write(`replfs: unknown ${what} ${JSON.stringify(name)}\n\n${mainHelp()}`);
    return ExitCode.usage;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(helpText(cmd));
    return 0;
  }
  try {
    return await cmd.run(parse(cmd, rest));
  } catch (err) {
    if (err instanceof ReplfsError) {
      process.stderr.write(`replfs ${cmd.name}: ${err.message}\n${err.hint ? `  hint: ${err.hint}\n` : ''}`);
      return err.exitCode;
    }
    process.stderr.write(`replfs ${cmd.name}: internal error: ${messageOf(err)}\n${err instanceof Error && process.env.REPLFS_DEBUG ? err.stack + '\n' : ''}`);
    return ExitCode.internal;
  }
}
