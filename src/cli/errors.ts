// Exit codes (SPEC §3) and the one-line error messages the CLI prints. Both come from the failure table
// (migration/failures.ts): an error's failure type decides its exit code. Errors are recognised by name, so this
// module loads neither the Temporal client nor the plan parser.
import { formatPgError, isPgError } from '../db/errors';
import { exitCodeOf, F, FAILURES, isFailureType, type FailureType } from '../migration/failures';
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

const BY_NAME: Record<string, FailureType> = {
  InvalidPlanError: F.InvalidPlan,
  PlanTooLargeError: F.InvalidPlan,
  MigrationNotFoundError: F.NotFound,
  RejectedError: F.Rejected,
};

/** The failure type an error stands for, as far as the CLI can tell. */
export function failureTypeOf(e: unknown): string | undefined {
  if (e instanceof CliError) return e.type;
  const err = e as { name?: string; type?: unknown } | undefined;
  if (err?.name && BY_NAME[err.name]) return BY_NAME[err.name];
  if (err?.name === 'ApplicationFailure' && isFailureType(err.type)) return err.type;
  return undefined;
}

export function exitCodeFor(e: unknown): number {
  return exitCodeOf(failureTypeOf(e));
}

interface PlanProblems {
  file: string;
  errors: { path: string; message: string }[];
}

/** The lines to print for an error: one per plan problem, otherwise one line. */
export function errorLines(e: unknown): string[] {
  return problemLines(e).map(redact);
}

function problemLines(e: unknown): string[] {
  const err = e as { name?: string; message?: string };
  // One line per problem, each naming the file and the path inside it.
  if (err?.name === 'InvalidPlanError') {
    const p = e as PlanProblems;
    return p.errors.map((x) => `error: ${p.file}: ${x.path}: ${x.message}`);
  }
  if (err?.name === 'RejectedError') return [`rejected: ${err.message}`];
  if (isPgError(e)) return [`error: ${formatPgError(e)}`];
  const msg = e instanceof Error ? e.message : String(e);
  return [`error: ${msg.split('\n')[0]}`];
}

/** An error as one JSON object, for commands run with --json. */
export function errorJson(e: unknown, code: number): Record<string, unknown> {
  const type = failureTypeOf(e);
  const out: Record<string, unknown> = {
    error: errorLines(e)
      .map((l) => l.replace(/^(error|rejected): /, ''))
      .join('\n'),
    code,
  };
  // Always a type: a database's error is a SqlError, anything else without a failure type of its own an Error.
  out.type = type ?? (isPgError(e) ? F.SqlError : 'Error');
  if ((e as { name?: string })?.name === 'InvalidPlanError') out.problems = (e as PlanProblems).errors;
  return out;
}
