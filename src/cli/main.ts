// Entry point of the `replfs` command.
import { ExitCode, ReplfsError, messageOf } from '../errors/index.js';
import { helpText, parse, type Command } from './command.js';
import { VERSION } from './version.js';
/**
 * Every command, loaded when it is asked for: a command's module brings in what it runs
 * with (the engine and LevelDB, FUSE), which most commands run through a mount daemon never
 * touch. Listed in the order the usage shows them.
 */
const LOADERS: Array<[string, () => Promise<Command>]> = [
  ['init', async () => (await import('./init.js')).init],
  ['mount', async () => (await import('./mount.js')).mount],
  ['unmount', async () => (await import('./unmount.js')).unmount],
  ['status', async () => (await import('./status.js')).status],
  ['config', async () => (await import('./config.js')).config],
  ['journal', async () => (await import('./journal.js')).journal],
  ['snapshot', async () => (await import('./snapshot.js')).snapshot],
  ['snapshots', async () => (await import('./snapshot.js')).snapshots],
  ['diff', async () => (await import('./diff.js')).diff],
  ['find', async () => (await import('./find.js')).find],
  ['export', async () => (await import('./export.js')).exportCommand],
  ['restore', async () => (await import('./restore.js')).restore],
  ['prune', async () => (await import('./prune.js')).prune],
  ['sync', async () => (await import('./sync.js')).sync],
  ['verify', async () => (await import('./verify.js')).verify],
  ['forget', async () => (await import('./forget.js')).forget],
  ['serve', async () => (await import('./serve.js')).serve],
  ['promote', async () => (await import('./promote.js')).promote],
  ['demo', async () => (await import('./demo.js')).demo],
];

async function commandNamed(name: string): Promise<Command | undefined> {
  const loader = LOADERS.find(([n]) => n === name);
  return loader ? loader[1]() : undefined;
}

/** Every command, loaded (for the usage, which lists them all). */
export async function loadCommands(): Promise<Command[]> {
  return (await import('./commands.js')).COMMANDS;
}

/** The names a command can be run by, in the order of the usage. */
export const COMMAND_NAMES: readonly string[] = LOADERS.map(([name]) => name);

export function mainHelp(commands: Command[]): string {
  const width = Math.max(...commands.map((c) => c.name.length)) + 2;
  return [
    'Usage: replfs <command> [arguments] [options]',
    '',
    'replfs protects a directory: a FUSE mount journals every change to it.',
    '',
    'Commands:',
    ...commands.filter((c) => !c.hidden).map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
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
    process.stderr.write(`replfs: missing command\n\n${mainHelp(await loadCommands())}`);
    return ExitCode.usage;
  }
  if (name === '--help' || name === '-h') {
    process.stdout.write(mainHelp(await loadCommands()));
    return 0;
  }
  if (name === 'help') {
    // `replfs help [<command>]`
    if (rest.length === 0) {
      process.stdout.write(mainHelp(await loadCommands()));
      return 0;
    }
    const target = await commandNamed(rest[0]!);
    if (!target || rest.length > 1) {
      process.stderr.write(target ? `replfs help: unexpected argument ${JSON.stringify(rest[1])}\n` : `replfs help: unknown command ${JSON.stringify(rest[0])}\n\n${mainHelp(await loadCommands())}`);
      return ExitCode.usage;
    }
    process.stdout.write(helpText(target));
    return 0;
  }
  if (name === '--version' || name === '-V') {
    console.log(VERSION);
    return 0;
  }
  const cmd = await commandNamed(name);
  if (!cmd) {
    const what = name.startsWith('-') ? 'option' : 'command';
    process.stderr.write(`replfs: unknown ${what} ${JSON.stringify(name)}\n\n${mainHelp(await loadCommands())}`);
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
