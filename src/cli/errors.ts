// Exit codes (SPEC §3) and the one-line error messages the CLI prints.
import { MigrationNotFoundError, RejectedError } from '../client';
import { formatPgError, isPgError } from '../db/errors';
import { InvalidPlanError } from '../plan/load';

export const EXIT = { ok: 0, failed: 1, usage: 2, notFound: 3, rejected: 4 } as const;

/** An error the CLI reports with a specific exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    public readonly exitCode: number,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export function exitCodeFor(e: unknown): number {
  if (e instanceof CliError) return e.exitCode;
  if (e instanceof InvalidPlanError) return EXIT.usage;
  if (e instanceof MigrationNotFoundError) return EXIT.notFound;
  if (e instanceof RejectedError) return EXIT.rejected;
  return EXIT.failed;
}

/** The lines to print for an error: one per plan problem, otherwise one line. */
export function errorLines(e: unknown): string[] {
  // One line per problem, each naming the file and the path inside it.
  if (e instanceof InvalidPlanError) return e.errors.map((x) => `error: ${e.file}: ${x.path}: ${x.message}`);
  if (e instanceof RejectedError) return [`rejected: ${e.message}`];
  if (isPgError(e)) return [`error: ${formatPgError(e)}`];
  const msg = e instanceof Error ? e.message : String(e);
  return [`error: ${msg.split('\n')[0]}`];
}
