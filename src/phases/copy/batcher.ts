// Plans the copy's batches. A single integer key is copied by key interval (no ORDER BY/LIMIT: as cheap as one INSERT …
// SELECT per batch), the interval sized from the key density seen so far; other keys (composite ones included) by LIMIT
// in key order.
import type { PoolClient } from 'pg';
import {
  keyAtOffsetQuery,
  keyExtentQuery,
  limitBatchQuery,
  rangeBatchQuery,
  type ConflictMode,
  type CopyMapping,
  hasIntegerKey,
  type Query,
} from '../copy/sql';

export interface PlannedBatch {
  after: string | null;
  /** Inclusive end of the interval (range batches). */
  upTo: string | null;
  limit: number;
  query(mode: ConflictMode): Query;
}

export interface BatchResult {
  rows: number;
  /** The cursor after this batch (the last key it covered). */
  cursor: string | null;
}

export interface Batcher {
  /** The next batch after `cursor` of about `size` rows, or null when the range is done. */
  next(c: PoolClient, cursor: string | null, size: number): Promise<PlannedBatch | null>;
  /** Reads a batch's outcome from its query result. */
  result(batch: PlannedBatch, r: { rowCount: number | null; rows: Record<string, unknown>[] }): BatchResult;
}

/** A single integer key: batches by key interval (the fast path); any other key by LIMIT in key order. */
export function batcherFor(m: CopyMapping, range: { after: string | null; upTo: string | null }): Batcher {
  return hasIntegerKey(m) ? new KeyIntervalBatcher(m, range) : new LimitBatcher(m, range);
}

class LimitBatcher implements Batcher {
  private finished = false;
  constructor(
    private readonly m: CopyMapping,
    private readonly range: { after: string | null; upTo: string | null },
  ) {}

  async next(_c: PoolClient, cursor: string | null, size: number): Promise<PlannedBatch | null> {
    if (this.finished) return null;
    const { m, range } = this;
    return {
      after: cursor,
      upTo: range.upTo,
      limit: size,
      query: (mode) => limitBatchQuery(m, cursor, range.upTo, size, mode),
    };
  }

  result(batch: PlannedBatch, r: { rows: Record<string, unknown>[] }): BatchResult {
    const row = r.rows[0] as { rows: number; last_key: string | null };
    if (row.rows === 0) this.finished = true;
    return { rows: row.rows, cursor: row.last_key ?? batch.after };
  }
}

/**
 * The widest interval, in keys per row asked for, that runs without a look at the index: a batch holds at most this
 * many times its size in rows (unique integer keys: one row per key at most), however the keys are spread.
 */
export const MAX_SPAN_PER_ROW = 4;

export class KeyIntervalBatcher implements Batcher {
  /** Last key this range must reach; extended if rows with higher keys arrive before the end (open ranges). */
  private upper: bigint | undefined;
  /**
   * Rows per key unit, learnt from the batches so far. It starts at 1, the most a unique integer key can have, so the
   * first interval holds at most the rows asked for.
   */
  private density = 1;
  /** The key just below the first interval, which starts open (`after` null): what its width is measured from. */
  private before = 0n;

  constructor(
    private readonly m: CopyMapping,
    private readonly range: { after: string | null; upTo: string | null },
  ) {}

  private async extent(c: PoolClient, after: string | null): Promise<{ lo: bigint; hi: bigint } | null> {
    const q = keyExtentQuery(this.m, after, this.range.upTo);
    const r = (await c.query(q.text, q.values)).rows[0] as { lo: string | null; hi: string | null };
    return r.lo === null ? null : { lo: BigInt(r.lo), hi: BigInt(r.hi!) };
  }

  async next(c: PoolClient, cursor: string | null, size: number): Promise<PlannedBatch | null> {
    if (this.upper === undefined || cursor === null || BigInt(cursor) >= this.upper) {
      // First batch, or the planned end is reached: look (again) for rows beyond it.
      const e = await this.extent(c, cursor);
      if (!e) return null;
      this.upper = e.hi;
      // The first interval is open below: the key before the lowest one may not exist in the key's type (a key at
      // its minimum, -2^63 for a bigint), so it only sizes the interval here and never reaches SQL.
      if (cursor === null) this.before = e.lo - 1n;
    }
    const start = cursor === null ? this.before : BigInt(cursor);
    const span = BigInt(Math.max(1, Math.ceil(size / this.density)));
    let end = start + span < this.upper ? start + span : this.upper;
    if (this.m.source.kind === 'table' && end - start > BigInt(size) * BigInt(MAX_SPAN_PER_ROW)) {
      // Sparse keys: an interval this wide could hold up to its width in rows, should the keys turn dense inside it
      // (a gap, then ids from a new generator). It ends at the size-th row instead, found along the table's index (at
      // most `size` entries read), which also leaps any gap in one batch. (A query source has no index to ask.)
      const q = keyAtOffsetQuery(this.m, cursor, size - 1, this.upper.toString());
      const k = (await c.query(q.text, q.values)).rows[0]?.k as string | undefined;
      end = k === undefined ? this.upper : BigInt(k);
    }
    const after = cursor;
    const upTo = end.toString();
    const m = this.m;
    return { after, upTo, limit: size, query: (mode) => rangeBatchQuery(m, after, upTo, mode) };
  }

  result(batch: PlannedBatch, r: { rowCount: number | null }): BatchResult {
    const rows = r.rowCount ?? 0;
    const span = Number(BigInt(batch.upTo!) - (batch.after === null ? this.before : BigInt(batch.after)));
    // Smooth the density so one sparse stretch does not blow the next interval up.
    const seen = Math.max(rows, 0.5) / Math.max(span, 1);
    this.density = Math.min(1e6, Math.max(1e-6, 0.5 * this.density + 0.5 * seen));
    return { rows, cursor: batch.upTo };
  }
}
