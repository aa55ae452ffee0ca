// Error types and the exit-code table. Domain code throws these; only the FUSE adapter
// turns FsError into an errno, and only the CLI turns ReplfsError into an exit code.
import { constants } from 'node:os';

/** Exit codes of the `replfs` command. Documented in docs/cli.md; never renumber. */
export const ExitCode = {
  ok: 0,
  /** An unexpected internal error; the message says what happened. */
  internal: 1,
  /** Bad command line: unknown command or option, missing or malformed argument. */
  usage: 2,
  /** The path does not exist, or is not a protected directory. */
  notFound: 3,
  /** The request is refused given the current state (already protected, nested, not empty...). */
  refused: 4,
  /** The volume or mount is busy: locked by another process, already mounted, files open. */
  busy: 5,
  /** The volume's state directory is damaged or of an unsupported format version. */
  damaged: 6,
  /** The FUSE runtime is missing or unusable. */
  fuseUnavailable: 7,
  /** Permission denied. */
  permission: 8,
  /** A timeout expired while waiting for the daemon. */
  timeout: 9,
  /** A transient failure: the destination could not be reached, or the connection broke. Retrying may succeed. */
  unavailable: 10,
  /** `replfs verify` found differences between the source and the replica. */
  different: 11,
} as const;

export type ExitCodeName = keyof typeof ExitCode;

/** A user-facing failure: a message for stderr and the exit code it maps to. */
export class ReplfsError extends Error {
  readonly exit: ExitCodeName;
  readonly hint: string | undefined;
  constructor(exit: ExitCodeName, message: string, hint?: string) {
    super(message);
    this.name = 'ReplfsError';
    this.exit = exit;
    this.hint = hint;
  }
  get exitCode(): number {
    return ExitCode[this.exit];
  }
}

const errnoTable = constants.errno as Record<string, number>;

/** A filesystem error with a POSIX errno name, thrown by the engine for the FUSE adapter. */
export class FsError extends Error {
  readonly code: string;
  constructor(code: string, message?: string) {
    super(message ?? code);
    this.name = 'FsError';
    this.code = code;
  }
}

/** True when `err` carries an errno name that the kernel would understand. */
export function errnoOf(err: unknown): number | undefined {
  if (err && typeof err === 'object' && 'code' in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === 'string' && code in errnoTable) return errnoTable[code];
  }
  return undefined;
}

export function hasCode(err: unknown, ...codes: string[]): boolean {
  return !!err && typeof err === 'object' && 'code' in err &&
    codes.includes((err as { code: unknown }).code as string);
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
