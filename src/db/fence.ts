// The run fence: once a migration starts rolling back, no forward step of it may change the database any more — not
// even one whose activity is still running on a worker that lost touch with Temporal (a zombie attempt).
//
// Every forward transaction holds a shared advisory lock on its run and checks the run's `fenced_at` under it; the
// rollback takes the same lock exclusively before it fences the run. So a forward write either commits before the
// fence (and the compensations, which run after the fence, see and undo it) or sees the fence and changes nothing.
// Advisory locks live in memory: unlike a row lock they add no WAL to every batch.
import type { PoolClient } from 'pg';
import { TIDEMARK_SCHEMA } from './names';
import { quoteIdent } from './quote';
import type { RunRef } from '../migration/messages';

export type { RunRef };

const RUNS = `${quoteIdent(TIDEMARK_SCHEMA)}.runs`;
const lockKey = (runKey: string) => `tidemark:run:${runKey}`;

export class RunFencedError extends Error {
  constructor(readonly runKey: string) {
    super('the migration is rolling back: its forward steps may no longer change the database');
    this.name = 'RunFencedError';
  }
}

/**
 * Inside the caller's transaction: registers the run if it is new, waits for no rollback in progress and throws
 * RunFencedError if the run is fenced. The shared lock is held until the transaction ends.
 */
export async function enterRun(c: PoolClient, run: RunRef): Promise<void> {
  await c.query('SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))', [lockKey(run.runKey)]);
  await checkFence(c, run);
}

/** Registers the run if it is new (writing nothing when it exists) and throws if it is fenced. */
async function checkFence(c: PoolClient, run: RunRef): Promise<void> {
  // One statement: the insert's row and the existing one cannot both show up (same snapshot), so one row comes back.
  const r = await c.query(
    `WITH ins AS (INSERT INTO ${RUNS} (run_key, migration, workflow_id) VALUES ($1, $2, $3)
                  ON CONFLICT (run_key) DO NOTHING RETURNING fenced_at)
     SELECT fenced_at FROM ins UNION ALL SELECT fenced_at FROM ${RUNS} WHERE run_key = $1`,
    [run.runKey, run.migration, run.workflowId],
  );
  if (r.rows[0]?.fenced_at) throw new RunFencedError(run.runKey);
}

/**
 * Session-level variant for work that cannot run inside one transaction (a non-transactional schema step): checks the
 * fence and holds the shared lock until `release` is called.
 */
export async function enterRunForSession(c: PoolClient, run: RunRef): Promise<() => Promise<void>> {
  await c.query('SELECT pg_advisory_lock_shared(hashtextextended($1, 0))', [lockKey(run.runKey)]);
  const release = async () => {
    await c
      .query('SELECT pg_advisory_unlock_shared(hashtextextended($1, 0))', [lockKey(run.runKey)])
      .catch(() => undefined);
  };
  try {
    await checkFence(c, run);
  } catch (e) {
    await release();
    throw e;
  }
  return release;
}

/** Fences the run: waits for every forward transaction in flight to end, then forbids new ones. Idempotent. */
export async function fenceRun(c: PoolClient, run: RunRef): Promise<void> {
  await c.query('BEGIN');
  try {
    await c.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [lockKey(run.runKey)]);
    await c.query(
      `INSERT INTO ${RUNS} (run_key, migration, workflow_id, fenced_at) VALUES ($1, $2, $3, now())
       ON CONFLICT (run_key) DO UPDATE SET fenced_at = coalesce(${RUNS}.fenced_at, now())`,
      [run.runKey, run.migration, run.workflowId],
    );
    await c.query('COMMIT');
  } catch (e) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
}
