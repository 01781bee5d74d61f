// Exit codes (SPEC §3) and the one-line error messages the CLI prints. Both come from the failure table
// (migration/failures.ts): an error's failure type decides its exit code.
import { ApplicationFailure } from '@temporalio/common';
import { MigrationNotFoundError, PlanTooLargeError, RejectedError } from '../client';
import { formatPgError, isPgError } from '../db/errors';
import { exitCodeOf, F, FAILURES, type FailureType } from '../migration/failures';
import { InvalidPlanError } from '../plan/load';
import { redact } from '../secrets';

export const EXIT = {
  ok: 0,
  failed: exitCodeOf(F.ActivityError),
  usage: FAILURES.Usage.exitCode,
  notFound: FAILURES.NotFound.exitCode,
  rejected: FAILURES.Rejected.exitCode,
} as const;

/** An error the CLI reports with the exit code of its failure type. */
export class CliError extends Error {
  constructor(
    message: string,
    public readonly type: FailureType,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** The failure type an error stands for, as far as the CLI can tell. */
export function failureTypeOf(e: unknown): string | undefined {
  if (e instanceof CliError) return e.type;
  if (e instanceof InvalidPlanError || e instanceof PlanTooLargeError) return F.InvalidPlan;
  if (e instanceof MigrationNotFoundError) return F.NotFound;
  if (e instanceof RejectedError) return F.Rejected;
  if (e instanceof ApplicationFailure) return e.type ?? undefined;
  return undefined;
}

export function exitCodeFor(e: unknown): number {
  return exitCodeOf(failureTypeOf(e));
}

/** The lines to print for an error: one per plan problem, otherwise one line. */
export function errorLines(e: unknown): string[] {
  return problemLines(e).map(redact);
}

function problemLines(e: unknown): string[] {
  // One line per problem, each naming the file and the path inside it.
  if (e instanceof InvalidPlanError) return e.errors.map((x) => `error: ${e.file}: ${x.path}: ${x.message}`);
  if (e instanceof RejectedError) return [`rejected: ${e.message}`];
  if (isPgError(e)) return [`error: ${formatPgError(e)}`];
  const msg = e instanceof Error ? e.message : String(e);
  return [`error: ${msg.split('\n')[0]}`];
}
