// What every activity module shares: its dependencies, the run it belongs to, and how errors become failures.
import { ApplicationFailure, CancelledFailure, Context } from '@temporalio/activity';
import type { Pool, PoolClient } from 'pg';
import { ensureTidemarkSchema } from '../db/bootstrap';
import { formatPgError, isPgError, isRetryablePgError } from '../db/errors';
import { MissingDatabaseUrlError, type PoolRegistry } from '../db/pool';
import type { Logger } from '../logger';

export interface ActivityDeps {
  pools: PoolRegistry;
  logger: Logger;
  /** Paths of the PostgreSQL client programs (default: found on PATH). */
  binaries?: { pgDump?: string; pgRestore?: string };
}

/**
 * The migration this activity works for. `runId` is the first run of the workflow's chain when the workflow passes it
 * (bookkeeping rows must still be found after it continued as new); otherwise the current run.
 */
export function currentRun(runId?: string): { workflowId: string; runId: string } {
  try {
    const wf = Context.current().info.workflowExecution;
    if (wf) return { workflowId: wf.workflowId, runId: runId ?? wf.runId };
  } catch {
    // not inside an activity
  }
  return { workflowId: 'local', runId: 'local' };
}

export async function targetPool(deps: ActivityDeps, urlEnv: string): Promise<Pool> {
  const pool = deps.pools.get(urlEnv);
  await ensureTidemarkSchema(pool);
  return pool;
}

/** Turns any error from an activity body into a Temporal failure: retryable when a retry can fix it. */
export function toFailure(e: unknown, context: string): unknown {
  if (e instanceof ApplicationFailure) return e;
  if (e instanceof MissingDatabaseUrlError) return ApplicationFailure.nonRetryable(e.message, 'MissingDatabaseUrl');
  if ((e as Error)?.name === 'CancelledFailure' || (e as Error)?.name === 'AbortError') return e;
  const msg = `${context}: ${formatPgError(e)}`;
  // Programming errors do not heal on retry: fail at once with the message instead of retrying for hours.
  if (e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError)
    return ApplicationFailure.nonRetryable(msg, 'InternalError');
  if (isRetryablePgError(e)) return ApplicationFailure.retryable(msg, 'RetryableDbError');
  if (isPgError(e)) return ApplicationFailure.nonRetryable(msg, 'SqlError', { code: (e as { code?: string }).code });
  return ApplicationFailure.retryable(msg, 'ActivityError');
}

/** Runs an activity body, converting errors; `context` names what was being done for the message. */
export async function activityBody<T>(context: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw toFailure(e, context);
  }
}

export function heartbeat(details?: unknown): void {
  try {
    Context.current().heartbeat(details);
  } catch {
    // Outside an activity context (unit use): nothing to report to.
  }
}

export function cancellationSignal(): AbortSignal | undefined {
  try {
    return Context.current().cancellationSignal;
  } catch {
    return undefined;
  }
}

export function sleepMs(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (ms <= 0 || signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Runs `fn`, whose statements go through `c`, heartbeating so that a cancellation (an abort) reaches this activity
 * while a long statement runs. On cancellation the statement is cancelled in the server (pg_cancel_backend), so its
 * transaction rolls back rather than committing after the workflow has moved on to its rollback; the activity then
 * reports itself cancelled.
 */
export async function cancellable<T>(pool: Pool, c: PoolClient, fn: () => Promise<T>): Promise<T> {
  const signal = cancellationSignal();
  const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
  const beat = setInterval(() => heartbeat(), 2000);
  const cancel = () => void pool.query('SELECT pg_cancel_backend($1)', [pid]).catch(() => undefined);
  signal?.addEventListener('abort', cancel, { once: true });
  try {
    return await fn();
  } catch (e) {
    if (signal?.aborted) throw new CancelledFailure('cancelled: the running statement was cancelled and rolled back');
    throw e;
  } finally {
    clearInterval(beat);
    signal?.removeEventListener('abort', cancel);
  }
}
