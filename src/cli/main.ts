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

export const COMMANDS: Command[] = [init, mount, unmount, status, journal, demo];

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
    'Run `replfs <command> --help` for a command\'s options. Exit codes are listed in docs/cli.md.',
    '  --version  print the version',
    '',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(mainHelp());
    return name === undefined ? ExitCode.usage : 0;
  }
  if (name === '--version' || name === '-V') {
    console.log(VERSION);
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    process.stderr.write(`replfs: unknown command ${JSON.stringify(name)}\n\n${mainHelp()}`);
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
