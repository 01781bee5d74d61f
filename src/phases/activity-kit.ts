// What every phase's activities share: their dependencies, the run they work for, how a forward step writes (fenced,
// cancellable, heartbeating) and how errors become Temporal failures.
import { ApplicationFailure, CancelledFailure, Context } from '@temporalio/activity';
import { isAbsolute, resolve } from 'node:path';
import type { Pool, PoolClient } from 'pg';
import { ensureTidemarkSchema } from '../db/bootstrap';
import { describeHold, lockClaims } from '../db/claims';
import { formatPgError, isConnectionLoss, isPgError, isRetryablePgError } from '../db/errors';
import { enterRun, enterRunForSession, RunFencedError, type RunRef } from '../db/fence';
import { MissingDatabaseUrlError, type PoolRegistry } from '../db/pool';
import { ScriptMissingError } from '../db/scripts';
import { inTransaction, withClient, type TxOptions } from '../db/tx';
import type { Logger } from '../logger';
import { F, failure } from '../migration/failures';

export type { RunRef } from '../db/fence';

export interface ActivityDeps {
  pools: PoolRegistry;
  logger: Logger;
  /** Where webhook URLs (notify targets) are read from (default: process.env). */
  env?: NodeJS.ProcessEnv;
  /** Paths of the PostgreSQL client programs (default: found on PATH). */
  binaries?: { pgDump?: string; pgRestore?: string };
}

/** The workflow this activity works for (for bookkeeping rows); 'local' outside an activity. */
export function currentWorkflowId(): string {
  try {
    return Context.current().info.workflowExecution?.workflowId ?? 'local';
  } catch {
    return 'local';
  }
}

/**
 * Where this worker keeps a plan's backups: an absolute backup.dir as it is, a relative one under $TIDEMARK_BACKUP_ROOT
 * or else the worker's working directory — the worker writes the dumps, so its file system is the one that counts
 * (a container's volume, not the directory `tidemark start` ran in).
 */
export function backupDir(dir: string, env: NodeJS.ProcessEnv = process.env): string {
  return isAbsolute(dir) ? dir : resolve(env.TIDEMARK_BACKUP_ROOT ?? process.cwd(), dir);
}

export async function targetPool(deps: ActivityDeps, urlEnv: string): Promise<Pool> {
  const pool = deps.pools.get(urlEnv);
  await ensureTidemarkSchema(pool);
  return pool;
}

/** Turns any error from an activity body into a Temporal failure: retryable when a retry can fix it. */
export function toFailure(e: unknown, context: string): unknown {
  if (e instanceof ApplicationFailure) return e;
  if (e instanceof MissingDatabaseUrlError) return failure(F.MissingDatabaseUrl, e.message);
  if (e instanceof RunFencedError) return failure(F.RunFenced, `${context}: ${e.message}`);
  if (e instanceof ScriptMissingError) return failure(F.PlanRuntimeError, `${context}: ${e.message}`);
  if ((e as Error)?.name === 'CancelledFailure' || (e as Error)?.name === 'AbortError') return e;
  const msg = `${context}: ${formatPgError(e)}`;
  // Programming errors do not heal on retry: fail at once with the message instead of retrying for hours.
  if (e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError) {
    return failure(F.InternalError, msg);
  }
  if (isRetryablePgError(e)) return failure(F.RetryableDbError, msg);
  if (isPgError(e)) return failure(F.SqlError, msg, { code: (e as { code?: string }).code });
  return failure(F.ActivityError, msg);
}

/** Runs an activity body, converting errors; `context` names what was being done for the message. */
export async function activityBody<T>(context: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (isConnectionLoss(e)) await waitOutOutage(context);
    throw toFailure(e, context);
  }
}

/** The worker's databases, for waiting out an outage (see waitOutOutage); set when the activities are created. */
let watched: { pools: PoolRegistry; logger: Logger } | undefined;

/** The databases each running attempt has asked for: an outage elsewhere is not one it waits out. */
const usedBy = new WeakMap<Context, Set<string>>();

export function watchOutages(deps: ActivityDeps): void {
  watched = { pools: deps.pools, logger: deps.logger };
  deps.pools.onUse = (envVar) => {
    let ctx: Context;
    try {
      ctx = Context.current();
    } catch {
      return;
    }
    const used = usedBy.get(ctx) ?? new Set<string>();
    used.add(envVar);
    usedBy.set(ctx, used);
  };
}

/** The longest an attempt waits for its databases to answer again before it fails. */
const OUTAGE_WAIT_MS = 30 * 60_000;

/**
 * After a lost connection, while a database this attempt uses does not answer (a restart, a failover, an outage): the
 * attempt waits, heartbeating its last checkpoint, until every one answers again, the attempt's own timeout comes near
 * or it is cancelled, and only then fails, to be retried at once. An outage of minutes then costs one attempt, not
 * every retry the activity has (about four minutes' worth), after which the migration would roll back — while the
 * database it would roll back is still down.
 */
async function waitOutOutage(context: string): Promise<void> {
  let ctx: Context;
  try {
    ctx = Context.current();
  } catch {
    return;
  }
  if (!watched || ctx.info.isLocal) return;
  const { info } = ctx;
  const deadline = Math.min(
    Date.now() + OUTAGE_WAIT_MS,
    info.currentAttemptScheduledTimestampMs + info.startToCloseTimeoutMs - 30_000,
  );
  let said = false;
  while (Date.now() < deadline && !ctx.cancellationSignal.aborted) {
    const down = await watched.pools.unreachable(undefined, usedBy.get(ctx));
    if (!down.length) return;
    if (!said) {
      watched.logger.warn({ activity: info.activityType, databases: down }, `${context}: waiting for the database`);
      said = true;
    }
    ctx.heartbeat(lastDetails.get(ctx) ?? info.heartbeatDetails);
    await sleepMs(2000, ctx.cancellationSignal);
  }
}

/** Activities that heartbeat their own progress, with details (keptAlive stops beating for them). */
const selfBeating = new WeakSet<Context>();
/** The details an activity last heartbeat: a beat while it waits must not erase its checkpoint. */
const lastDetails = new WeakMap<Context, unknown>();

export function heartbeat(details?: unknown): void {
  try {
    const ctx = Context.current();
    if (details !== undefined) {
      selfBeating.add(ctx);
      lastDetails.set(ctx, details);
    }
    ctx.heartbeat(details);
  } catch {
    // Outside an activity context (unit use): nothing to report to.
  }
}

/**
 * Runs `fn` heartbeating every few seconds, so that a heartbeat timeout notices a lost worker within seconds and
 * Temporal retries the activity on another, rather than at the end of its start-to-close timeout. The beats carry the
 * previous attempt's details (a checkpoint is never erased), and stop once the activity heartbeats its own progress
 * (with details): from then on its own beats say whether it moves.
 */
export async function keptAlive<T>(fn: () => Promise<T>, everyMs = 5000): Promise<T> {
  let ctx: Context;
  try {
    ctx = Context.current();
  } catch {
    return fn();
  }
  // A local activity has no heartbeat: the workflow's worker runs it and times it out itself.
  if (ctx.info.isLocal) return fn();
  const beat = setInterval(() => {
    if (selfBeating.has(ctx)) clearInterval(beat);
    else ctx.heartbeat(ctx.info.heartbeatDetails);
  }, everyMs);
  try {
    return await fn();
  } finally {
    clearInterval(beat);
  }
}

export function cancellationSignal(): AbortSignal | undefined {
  try {
    return Context.current().cancellationSignal;
  } catch {
    return undefined;
  }
}

/** The details the previous attempt of this activity heartbeat last, if any. */
export function previousHeartbeat<T>(): T | undefined {
  try {
    return Context.current().info.heartbeatDetails as T | undefined;
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
 * while a statement runs or waits for a lock. On cancellation the statement is cancelled in the server
 * (pg_cancel_backend), so its transaction rolls back rather than committing after the workflow has moved on to its
 * rollback; the activity then reports itself cancelled. The workflow waits for that report before it compensates.
 */
export async function cancellable<T>(pool: Pool, c: PoolClient, fn: () => Promise<T>): Promise<T> {
  const signal = cancellationSignal();
  const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
  const beat = setInterval(() => heartbeat(), 1000);
  const cancel = () => void pool.query('SELECT pg_cancel_backend($1)', [pid]).catch(() => undefined);
  signal?.addEventListener('abort', cancel, { once: true });
  try {
    if (signal?.aborted) throw new CancelledFailure('cancelled before it started');
    return await fn();
  } catch (e) {
    if (signal?.aborted) throw new CancelledFailure('cancelled: the running statement was cancelled and rolled back');
    throw e;
  } finally {
    clearInterval(beat);
    signal?.removeEventListener('abort', cancel);
  }
}

/**
 * A forward step's change: one transaction, fenced against the run's rollback (see fence.ts), cancelled in the server
 * when the activity is cancelled.
 */
export async function forwardTransaction<T>(
  pool: Pool,
  run: RunRef,
  opts: TxOptions,
  fn: (c: PoolClient) => Promise<T>,
): Promise<T> {
  return withClient(pool, (c) =>
    cancellable(pool, c, () =>
      inTransaction(c, opts, async (tx) => {
        await enterRun(tx, run);
        return fn(tx);
      }),
    ),
  );
}

/** A forward step that cannot run in one transaction (statements one by one): fenced for the session's duration. */
export async function forwardSession<T>(pool: Pool, run: RunRef, fn: (c: PoolClient) => Promise<T>): Promise<T> {
  return withClient(pool, (c) =>
    cancellable(pool, c, async () => {
      const release = await enterRunForSession(c, run);
      try {
        return await fn(c);
      } finally {
        await release();
      }
    }),
  );
}

/**
 * Inside the transaction that records a claim on `tables` (db/claims.ts), `what` making it (`copy job "orders"`): refuses,
 * changing nothing, if another
 * migration installed on any of them since this one's preflight (it waited for an approval, or both started at once).
 */
export async function refuseHeld(c: PoolClient, run: RunRef, what: string, tables: string[]): Promise<void> {
  const held = await lockClaims(c, run.runKey, tables);
  if (!held.length) return;
  throw failure(
    F.PlanRuntimeError,
    `${what}: ${held.map(describeHold).join('; ')} since this migration's preflight: two migrations on one table would break each other`,
  );
}
