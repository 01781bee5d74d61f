// Every kind of failure tidemark reports, in one table: whether a retry can fix it, and the exit code a CLI command
// ends with when it meets one. Activity retry policies, the workflow and the CLI all read this table; nothing else
// spells a failure type. Pure data: imported by workflow code as well.
import { ApplicationFailure } from '@temporalio/common';

interface FailureSpec {
  /** A retry of the same activity can succeed (a lock timeout, a lost connection), so Temporal retries it. */
  retryable: boolean;
  /** The CLI's exit code when a command ends with this failure (SPEC §3: 1 failed, 2 usage/plan, 3 not found, 4 rejected). */
  exitCode: 1 | 2 | 3 | 4;
  /** What it means, for people reading the table. */
  means: string;
}

const TABLE = {
  // Raised by activities.
  PlanRuntimeError: {
    retryable: false,
    exitCode: 2,
    means: 'the plan does not fit the database (a missing table, a bad mapping)',
  },
  SqlError: { retryable: false, exitCode: 1, means: 'PostgreSQL refused a statement for a reason a retry cannot fix' },
  PreflightFailed: { retryable: false, exitCode: 1, means: 'a preflight check failed; nothing was changed' },
  ValidationFailed: { retryable: false, exitCode: 1, means: 'source and target differ, or an assertion failed' },
  MissingDatabaseUrl: { retryable: false, exitCode: 1, means: "the worker's environment lacks the plan's urlEnv" },
  BackupFailed: { retryable: false, exitCode: 1, means: 'the backup cannot be made or verified' },
  RunFenced: {
    retryable: false,
    exitCode: 1,
    means: 'the migration is rolling back: forward steps may no longer write',
  },
  InternalError: { retryable: false, exitCode: 1, means: 'a defect in tidemark (a TypeError and the like)' },
  RetryableDbError: {
    retryable: true,
    exitCode: 1,
    means: 'lock timeout, deadlock, serialization failure, lost connection or a catalog row changed concurrently',
  },
  BackupError: { retryable: true, exitCode: 1, means: 'pg_dump or pg_restore failed in a way a retry may fix' },
  ActivityError: { retryable: true, exitCode: 1, means: 'any other error of an activity' },
  NotificationFailed: { retryable: true, exitCode: 1, means: 'a notify target did not take a notice (retried)' },
  NotificationUnconfigured: {
    retryable: false,
    exitCode: 1,
    means: "the worker's environment lacks a notify target's urlEnv",
  },
  // How a migration ends when it does not complete.
  MigrationRolledBack: { retryable: false, exitCode: 1, means: 'the migration rolled back completely' },
  RollbackFailed: {
    retryable: false,
    exitCode: 1,
    means: 'a compensation failed: the rollback stopped and needs an operator',
  },
  RevertFailed: {
    retryable: false,
    exitCode: 1,
    means: 'a revert was refused or stopped; its status says what it reverted and what is left',
  },
  // Raised by the CLI and the client.
  InvalidPlan: { retryable: false, exitCode: 2, means: 'the plan file is invalid' },
  Usage: { retryable: false, exitCode: 2, means: 'the command line is wrong' },
  NotFound: { retryable: false, exitCode: 3, means: 'no such migration' },
  Rejected: { retryable: false, exitCode: 4, means: 'the workflow (or the server) refused the request' },
} as const satisfies Record<string, FailureSpec>;

export type FailureType = keyof typeof TABLE;

/** The failure types by name: `F.SqlError` rather than a string typed by hand. */
export const F = Object.fromEntries(Object.keys(TABLE).map((k) => [k, k])) as { readonly [K in FailureType]: K };

export const FAILURES: Readonly<Record<FailureType, FailureSpec>> = TABLE;

/** The types a retry policy must not retry. */
export const NON_RETRYABLE: FailureType[] = (Object.keys(TABLE) as FailureType[]).filter((k) => !TABLE[k].retryable);

export function isFailureType(t: unknown): t is FailureType {
  return typeof t === 'string' && Object.prototype.hasOwnProperty.call(TABLE, t);
}

/** An ApplicationFailure of `type`, retryable or not as the table says. */
export function failure(type: FailureType, message: string, ...details: unknown[]): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: !TABLE[type].retryable, details });
}

/** The exit code for a failure type (1 for anything the table does not know). */
export function exitCodeOf(type: string | undefined): number {
  return isFailureType(type) ? TABLE[type].exitCode : 1;
}
