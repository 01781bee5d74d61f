// A copy range's checkpoint (tidemark.copy_progress, in the database the rows are written to): its cursor and counts,
// committed in the same transaction as each batch, so it is never ahead of or behind the data. A new attempt of the
// range starts from it and re-does at most the batch that was in flight.
import type { Pool, PoolClient } from 'pg';
import { TIDEMARK_SCHEMA } from '../../db/names';
import { quoteIdent } from '../../db/quote';

const S = quoteIdent(TIDEMARK_SCHEMA);
const WHERE = `WHERE run_id = $1 AND job = $2 AND range_index = $3`;

/** Which range: the run, the copy job and the range's index. */
export type CheckpointKey = [runKey: string, job: string, rangeIndex: number];

export interface Checkpoint {
  cursor: string | null;
  rows: number;
  batches: number;
  done: boolean;
}

/** The range's checkpoint, created at its start (`after`) by the first attempt. */
export async function openCheckpoint(
  db: Pool | PoolClient,
  key: CheckpointKey,
  workflowId: string,
  range: { after: string | null; upTo: string | null },
): Promise<Checkpoint> {
  await db.query(
    `INSERT INTO ${S}.copy_progress (run_id, workflow_id, job, range_index, range_after, range_up_to, cursor)
     VALUES ($1, $4, $2, $3, $5, $6, $5) ON CONFLICT DO NOTHING`,
    [...key, workflowId, range.after, range.upTo],
  );
  const r = await db.query(
    `SELECT cursor, rows_copied::float8 AS rows, batches::int AS batches, done FROM ${S}.copy_progress ${WHERE}`,
    key,
  );
  return r.rows[0] as Checkpoint;
}

/** In a batch's transaction: the batch ends at `cursor` and wrote `rows`. */
export async function advanceCheckpoint(
  c: PoolClient,
  key: CheckpointKey,
  cursor: string | null,
  rows: number,
): Promise<void> {
  await c.query(
    `UPDATE ${S}.copy_progress SET cursor = $4, rows_copied = rows_copied + $5, batches = batches + 1, updated_at = now()
     ${WHERE}`,
    [...key, cursor, rows],
  );
}

/** The range is copied. */
export async function finishCheckpoint(db: Pool | PoolClient, key: CheckpointKey): Promise<void> {
  await db.query(`UPDATE ${S}.copy_progress SET done = true, updated_at = now() ${WHERE}`, key);
}

/** What a range already copied reports to a new attempt: its counts, nothing done now. */
export function finishedRange(job: string, rangeIndex: number, cp: Checkpoint) {
  return {
    job,
    rangeIndex,
    rowsCopied: cp.rows,
    batches: cp.batches,
    durationMs: 0,
    rowsPerSecond: 0,
    resumed: true,
  };
}
