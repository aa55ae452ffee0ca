// The control protocol between the CLI and a mount daemon: one JSON object per line
// over a Unix socket, request then response (long commands send progress lines first).
// Documented in docs/architecture.md.
// A streaming command (`receive`) is the exception: after its `ok` response line the
// connection stops carrying lines and carries raw bytes both ways until either side closes.

export interface ControlRequest {
  id: number;
  cmd: string;
  args?: Record<string, unknown>;
}

export interface ControlErrorBody {
  /** An exit-code name from errors/ExitCode. */
  exit: string;
  message: string;
  hint?: string;
}

export type ControlResponse =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: ControlErrorBody };

/**
 * Before its response, a long command (sync, verify) may send any number of these lines:
 * how far it got. A client that waits resets its timeout on each.
 */
export interface ControlProgress {
  id: number;
  progress: unknown;
}

/** Requests larger than this are refused; the protocol carries small commands only. */
export const MAX_LINE = 1024 * 1024;
