// Exit codes and the errors a command ends with. Light on purpose: the CLI entry point imports
// it before any command is chosen.

export const EXIT = { ok: 0, failed: 1, usage: 2, busy: 75 } as const;

/** A usage or config error: one line, exit 2. */
export class UsageError extends Error {}

/** A failure the message fully explains (no stack trace is useful): one line, exit `code`. */
export class FatalError extends Error {
  constructor(
    message: string,
    readonly code: number = EXIT.failed,
  ) {
    super(message);
    this.name = 'FatalError';
  }
}
