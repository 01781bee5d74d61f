// Copy, activity side: sync triggers (forward) and their removal (undo) side by side, range planning, and the batched
// keyset copy that checkpoints its cursor in the same transaction as the rows it writes.
import { CancelledFailure } from '@temporalio/activity';
import type { Pool, PoolClient, QueryResult } from 'pg';
import { estimatedRows, tableExists } from '../../db/catalog';
import { breaksClient, isLockConflict } from '../../db/errors';
import { syncIdFor, TIDEMARK_SCHEMA } from '../../db/names';
import { quoteIdent, quoteTable } from '../../db/quote';
import {
  copySettings,
  dropSyncDdl,
  forwardTriggerDdl,
  hasIntegerKey,
  rollbackForwardFunctionDdl,
  keyAtOffsetQuery,
  keyExtentQuery,
  querySyncTriggerDdl,
  reverseTriggerDdl,
  writeCountDdl,
  slowConflictMode,
  slicePredicate,
  whereOf,
  settleLoggedQuery,
  settleQuery,
  settledFunctionsDdl,
  type Query,
  sourceFrom,
  targetHasRowsQuery,
  type ConflictMode,
  type CopyMapping,
} from './sql';
import { batcherFor, type BatchResult, type PlannedBatch } from './batcher';
import { chunkPlanner, walkChunks, type ChunkBounds } from './chunks';
import { enterRun } from '../../db/fence';
import { inTransaction, rolledBack, withClient, withTransaction } from '../../db/tx';
import { describeTransactions, openTransactions, transactionsEnded } from '../../db/transactions';
import { F, failure } from '../../migration/failures';
import { probeSync } from './probe';
import { advanceCheckpoint, finishCheckpoint, finishedRange, openCheckpoint, type CheckpointKey } from './checkpoint';
import type { ResolvedCopyJob } from '../../plan/types';
import {
  activityBody,
  cancellationSignal,
  forwardTransaction,
  heartbeat,
  previousHeartbeat,
  refuseHeld,
  sleepMs,
  targetPool,
  type ActivityDeps,
  type RunRef,
} from '../activity-kit';
import { resolveMapping } from './mapping';
import { BatchSizer, DEFAULT_MAX_BATCH, MIN_BATCH } from './sizer';
import type { CopyFormat } from './capture-sql';
import { budgetFraction, maxLatencyIncreaseOf } from './budget';
import { batchTargetMs, HardBackoff, SHARED_FIRST_BATCH, Throttler } from './throttler';

const S = quoteIdent(TIDEMARK_SCHEMA);

export interface CopyJobInput {
  urlEnv: string;
  /** Blue-green: the database the target table is in (urlEnv is then the source's). */
  targetEnv?: string;
  run: RunRef;
  job: ResolvedCopyJob;
  lockTimeoutMs: number;
}

export interface InstallSyncResult {
  job: string;
  triggers: string[];
  /** Whether the target held no rows before the copy; if so the compensation empties it again. */
  targetWasEmpty: boolean;
  /** A two-way sync whose reverse does not give rows back as they were (probe.ts reverseRoundTrip). */
  warning?: string;
}

export interface CopyRange {
  index: number;
  /** Exclusive lower bound; null = from the start. */
  after: string | null;
  /** Inclusive upper bound; null = to the end (rows inserted meanwhile included). */
  upTo: string | null;
}

export interface CopyRangeInput extends CopyJobInput {
  range: CopyRange;
  estimatedRows: number;
}

/** What a running copy reports in its heartbeat: the resume point and the progress shown by `status`. */
export interface CopyHeartbeat {
  job: string;
  rangeIndex: number;
  cursor: string | null;
  rowsCopied: number;
  estimatedRows: number;
  batches: number;
  batchSize: number;
  rowsPerSecond: number;
  throttleReason: string | null;
  /** While sharing the server: the share of the time the latency budget lets the copy work, and what it measured. */
  duty?: number;
  latencyIncrease?: number;
  /** Lock timeouts and deadlocks met so far (all attempts), and the last one: a count a reader can wait on. */
  lockConflicts: number;
  lastLockConflict: string | null;
  paused: boolean;
  updatedAt: string;
}

export interface CopyRangeResult {
  job: string;
  rangeIndex: number;
  rowsCopied: number;
  batches: number;
  durationMs: number;
  rowsPerSecond: number;
  /** Whether this attempt continued from a checkpoint left by an earlier attempt. */
  resumed: boolean;
  /** Across databases: the COPY format the batches travelled in. */
  format?: CopyFormat;
}

export interface SettleResult {
  /** Where the pass is (the resume point of a new attempt): a key of the whole-table pass. */
  cursor: string | null;
  /** Or the last seq of the logged keys looked at. */
  logCursor?: string;
  /** How many logged keys were looked at (absent for a whole-table pass). */
  keysLooked?: number;
  chunks: number;
  /** Target rows removed because their key had left the source. */
  removed: number;
}

/** The settle pass's heartbeat while it waits for transactions to end before it starts (shown by `status`). */
export interface SettleBeat extends SettleResult {
  job: string;
  waitingFor: string;
  waitingTransactions: number;
}

/** Rows of the source per chunk of the settle pass. */
const SETTLE_CHUNK_ROWS = 20_000;

export interface CopyControlInput {
  urlEnv: string;
  run: RunRef;
  paused: boolean;
  reason?: string;
  batchSize?: number;
  delayMs?: number;
  maxLatencyIncrease?: number | 'unlimited';
}

export interface Control {
  paused: boolean;
  pause_reason: string | null;
  batch_size: number | null;
  delay_ms: number | null;
  /** The operator's latency budget in place of the plan's (Infinity: unlimited); null: the plan's. */
  max_latency_increase: number | null;
}

const NO_CONTROL: Control = {
  paused: false,
  pause_reason: null,
  batch_size: null,
  delay_ms: null,
  max_latency_increase: null,
};

/** The operator's settings for a run's copy, as its ranges read them between batches. */
export async function readControl(db: Pool | PoolClient, runId: string): Promise<Control> {
  const r = await db.query(
    `SELECT paused, pause_reason, batch_size, delay_ms, max_latency_increase FROM ${S}.copy_control WHERE run_id = $1`,
    [runId],
  );
  return (r.rows[0] as Control | undefined) ?? NO_CONTROL;
}

/** What the rollback discards of the application's writes to the job's target (discardNewPathWrites), in words. */
async function discardedWrites(c: PoolClient, run: RunRef, job: ResolvedCopyJob): Promise<string> {
  const r = await c.query(
    `SELECT coalesce(sum(rows) FILTER (WHERE op = 'INSERT'), 0)::int AS ins,
            coalesce(sum(rows) FILTER (WHERE op = 'UPDATE'), 0)::int AS upd,
            coalesce(sum(rows) FILTER (WHERE op = 'DELETE'), 0)::int AS del
       FROM ${S}.new_path_writes WHERE run_key = $1 AND job = $2`,
    [run.runKey, job.name],
  );
  const { ins, upd, del } = r.rows[0] as { ins: number; upd: number; del: number };
  return `; discarded the new path's writes to ${job.to}: ${ins} row(s) inserted, ${upd} updated, ${del} deleted`;
}

/** The tables whose writes a job's sync replays: its source table, or the tables a query source lists in syncFrom. */
function syncedTables(job: ResolvedCopyJob): string[] {
  if (job.sync === 'none') return job.from ? [job.from] : [];
  return job.from ? [job.from] : (job.syncFrom ?? []).map((f) => f.table);
}

export function createCopyActivities(deps: ActivityDeps) {
  return {
    /**
     * Installs the job's sync triggers so every write from now on reaches the other side, and records what it
     * installed (and whether the target was empty) in the same transaction, for the undo to read.
     */
    async installSyncTriggers(input: CopyJobInput): Promise<InstallSyncResult> {
      const { job, run } = input;
      return activityBody(`installing sync triggers for copy job "${job.name}"`, async () => {
        const pool = await targetPool(deps, input.urlEnv);
        const mapping = await resolveMapping(pool, job, run);
        const ddl: string[] = [];
        // Until the copy settles, the triggers of a table source also log the keys that leave it (settleCopy).
        const settling = job.sync !== 'none' && mapping.source.kind === 'table';
        if (settling) ddl.push(...forwardTriggerDdl(mapping, true));
        if (job.sync !== 'none' && mapping.source.kind === 'query') ddl.push(...querySyncTriggerDdl(mapping));
        if (job.sync === 'bidirectional') ddl.push(...reverseTriggerDdl(mapping, true));
        if (job.discardNewPathWrites) ddl.push(...writeCountDdl(mapping, run.runKey));
        let warning: string | undefined;
        const targetWasEmpty = await forwardTransaction(
          pool,
          run,
          { lockTimeoutMs: input.lockTimeoutMs },
          async (c) => {
            await refuseHeld(c, run, `copy job "${job.name}"`, [...syncedTables(job), job.to]);
            // Its slice of the target, when jobs share one.
            const empty = !(
              await c.query(
                `SELECT EXISTS (SELECT 1 FROM ${quoteTable(mapping.target)} AS t${whereOf(slicePredicate(mapping))}) AS x`,
              )
            ).rows[0].x;
            for (const stmt of ddl) await c.query(stmt);
            if (settling) {
              await c.query(`INSERT INTO ${S}.sync_settling (sync_id) VALUES ($1) ON CONFLICT DO NOTHING`, [
                mapping.syncId,
              ]);
            }
            // A retry after a commit whose answer was lost keeps what the first attempt saw.
            const r = await c.query(
              `INSERT INTO ${S}.sync_jobs (run_key, job, sync_id, sources, target, target_was_empty)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (run_key, job) DO UPDATE SET target_was_empty = ${S}.sync_jobs.target_was_empty
               RETURNING target_was_empty`,
              [run.runKey, job.name, mapping.syncId, syncedTables(job), job.to, empty],
            );
            return r.rows[0].target_was_empty as boolean;
          },
        );
        deps.logger.info({ job: job.name, sync: job.sync }, 'sync triggers installed');
        if (job.sync !== 'none') {
          // Before a single row is copied (and long before traffic moves): one write through each trigger, undone.
          const probe = await withClient(pool, (c) =>
            rolledBack(c, { lockTimeoutMs: input.lockTimeoutMs }, (tx) => probeSync(tx, job, false)),
          );
          if (!probe.ok) throw failure(F.PlanRuntimeError, `copy job "${job.name}": ${probe.message}`);
          warning = probe.warning;
          if (warning) deps.logger.warn({ job: job.name }, warning);
        }
        return {
          job: job.name,
          triggers: job.sync === 'none' ? [] : job.sync === 'bidirectional' ? ['forward', 'reverse'] : ['forward'],
          targetWasEmpty,
          ...(warning ? { warning } : {}),
        };
      });
    },

    /**
     * Undo: removes the sync triggers and, if the target was empty before the copy, empties it again. Reads what the
     * install recorded: nothing recorded means the install never committed, and there is nothing to undo.
     *
     * A bidirectional job keeps its reverse sync, its record and the target's rows until the rollback is over
     * (dropReverseSync): the application may still write on the new path for a moment after the flag went back to 0,
     * and those writes must reach the old table until the new one is gone. An update or delete there finds its row
     * only while the row is there: emptied here, the target acknowledged them and the old table never saw them.
     */
    async undoCopy(input: CopyJobInput): Promise<string> {
      const { job, run } = input;
      return activityBody(`undoing copy job "${job.name}"`, async () => {
        const pool = await targetPool(deps, input.urlEnv);
        const syncId = syncIdFor(run.runKey, job.name);
        const keepReverse = job.sync === 'bidirectional';
        return withTransaction(pool, { lockTimeoutMs: input.lockTimeoutMs }, async (c) => {
          const rec = await c.query(
            keepReverse
              ? `SELECT target_was_empty FROM ${S}.sync_jobs WHERE run_key = $1 AND job = $2`
              : `DELETE FROM ${S}.sync_jobs WHERE run_key = $1 AND job = $2 RETURNING target_was_empty`,
            [run.runKey, job.name],
          );
          if (!rec.rowCount) return 'nothing was installed';
          // A table source's forward sync stays too, replaying only while the target exists: the old and the new
          // table stay in step while both take writes (rollbackForwardFunctionDdl).
          if (keepReverse && job.from && (await tableExists(c, job.to))) {
            await c.query(rollbackForwardFunctionDdl(await resolveMapping(c, job, run)));
            return `sync kept both ways until the end of the rollback, with ${job.to}'s rows (the forward sync only while ${job.to} exists)`;
          }
          for (const stmt of dropSyncDdl(job.name, syncId, job.syncFrom?.length ?? 0, keepReverse)) await c.query(stmt);
          if (keepReverse) {
            return `forward sync dropped; the reverse sync and ${job.to}'s rows stay until the end of the rollback`;
          }
          const discarded = job.discardNewPathWrites ? await discardedWrites(c, run, job) : '';
          if (discarded) deps.logger.warn({ job: job.name, target: job.to }, discarded.replace(/^; /, ''));
          if (rec.rows[0].target_was_empty && (await emptyTarget(c, job))) {
            return `sync triggers dropped, ${job.to} emptied${discarded}`;
          }
          return `sync triggers dropped${discarded}`;
        });
      });
    },

    /**
     * Splits the key space into `parallel` ranges so several activities (and workers) can share the copy. Runs after
     * the sync triggers are committed, and the last range ends at the highest key that exists now: any row with a
     * higher key is written after the triggers (installing them waited for every open write on the table), so the
     * triggers replay it. An open-ended last range would chase the application's inserts and, under a steady insert
     * load, never finish.
     */
    async planCopyRanges(input: CopyJobInput): Promise<{ ranges: CopyRange[]; estimatedRows: number }> {
      return activityBody(`planning copy ranges for "${input.job.name}"`, async () => {
        const pool = await targetPool(deps, input.urlEnv);
        const targetDb = input.targetEnv ? await targetPool(deps, input.targetEnv) : pool;
        const mapping = await resolveMapping(pool, input.job, undefined, targetDb);
        const estimate = await estimateSourceRows(pool, mapping);
        const q = keyExtentQuery(mapping, null, null);
        const extent = (await pool.query(q.text, q.values)).rows[0] as { lo: string | null; hi: string | null };
        if (extent.lo === null) return { ranges: [], estimatedRows: 0 };
        const parts = Math.max(1, input.job.parallel);
        const bounds =
          parts > 1 ? await splitPoints(pool, mapping, parts, estimate, extent as { lo: string; hi: string }) : [];
        const edges = [null, ...bounds, extent.hi];
        const ranges = edges.slice(0, -1).map((after, i) => ({ index: i, after, upTo: edges[i + 1] }));
        return { ranges, estimatedRows: estimate };
      });
    },

    /** Copies one key range in adaptive batches; resumable from its checkpoint, pausable, throttled. */
    async copyRange(input: CopyRangeInput): Promise<CopyRangeResult> {
      return activityBody(`copying "${input.job.name}" range ${input.range.index}`, () =>
        copyRangeImpl(deps, input, readControl),
      );
    },

    /**
     * The end of a rollback, once every undo has run (the new tables are dropped, unless they existed before): removes
     * the reverse sync that undoCopy kept for the application's late writes on the new path.
     */
    /**
     * The end of a bidirectional job's undo, once the new tables are gone: its reverse sync goes, then its record, and
     * the target (if it outlived the schema undos) is emptied when the copy filled it.
     */
    async dropReverseSync(input: { urlEnv: string; run: RunRef; jobs: ResolvedCopyJob[]; lockTimeoutMs: number }) {
      return activityBody('dropping the reverse sync', async () => {
        const pool = await targetPool(deps, input.urlEnv);
        await withTransaction(pool, { lockTimeoutMs: input.lockTimeoutMs }, async (c) => {
          for (const job of input.jobs) {
            for (const stmt of dropSyncDdl(
              job.name,
              syncIdFor(input.run.runKey, job.name),
              job.syncFrom?.length ?? 0,
            )) {
              await c.query(stmt);
            }
            const rec = await c.query(
              `DELETE FROM ${S}.sync_jobs WHERE run_key = $1 AND job = $2 RETURNING target_was_empty`,
              [input.run.runKey, job.name],
            );
            if (rec.rows[0]?.target_was_empty) await emptyTarget(c, job);
          }
        });
        return input.jobs.map((j) => j.name);
      });
    },

    /**
     * After every range is copied: deletes this job's target rows whose key the source no longer has — rows a batch
     * wrote after the write that removed them had found nothing to delete (see "Why the copy is exact" in sql.ts).
     * Chunk by chunk in REPEATABLE READ, retried on a serialization failure; resumable from its heartbeat.
     */
    async settleCopy(input: CopyJobInput): Promise<SettleResult> {
      const { job, run } = input;
      return activityBody(`settling the copy of "${job.name}"`, async () => {
        const pool = await targetPool(deps, input.urlEnv);
        const mapping = await resolveMapping(pool, job, run);
        const signal = cancellationSignal();
        // The pass's position only: an earlier attempt's heartbeat may have been a wait (SettleBeat), long over.
        const prev = previousHeartbeat<SettleResult>();
        const state: SettleResult = {
          cursor: prev?.cursor ?? null,
          chunks: prev?.chunks ?? 0,
          removed: prev?.removed ?? 0,
          ...(prev?.logCursor ? { logCursor: prev.logCursor, keysLooked: prev.keysLooked } : {}),
        };
        // Paced like the copy: while the application shares the server, a chunk runs only in the copy's share of the
        // time, one at a time (unpaced, the settle pass was one burst at full speed at the end of every copy). The
        // chunks keep their size: each is one anti-join, not sized toward the shared bursts.
        const throttler = await Throttler.acquire(pool, maxLatencyIncreaseOf(job), run.runKey);
        throttler.overrideBudget(run.runKey, (await readControl(pool, run.runKey)).max_latency_increase);
        return withClient(pool, async (c) => {
          // A write that removed a row (a DELETE, a key change) before the last batch read it, in a transaction still
          // open now, found nothing to delete in the target then, and the source still shows the row to every other
          // snapshot: the pass would keep the batch's copy, a row the application deleted. So it first waits for every
          // transaction open now to end, as CREATE INDEX CONCURRENTLY does; one that began later sees every batch.
          const open = await openTransactions(c);
          const waitStarted = Date.now();
          let warnedAt = 0;
          await transactionsEnded(
            c,
            open,
            (still) => {
              if (signal?.aborted) throw new CancelledFailure('cancelled');
              const waitingFor = `waiting for ${still.length} transaction(s) open since before the last batch to end: ${describeTransactions(still)}`;
              heartbeat({
                ...state,
                job: job.name,
                waitingFor,
                waitingTransactions: still.length,
              } satisfies SettleBeat);
              if (Date.now() - waitStarted > 10_000 && Date.now() - warnedAt > 60_000) {
                warnedAt = Date.now();
                deps.logger.warn({ job: job.name, waitingFor }, 'settle pass waiting for open transactions');
              }
            },
            () => sleepMs(100, signal),
          );
          if (warnedAt) deps.logger.info({ job: job.name }, 'settle pass no longer waiting for open transactions');
          if (open.length)
            heartbeat({ ...state, job: job.name, waitingFor: '', waitingTransactions: 0 } satisfies SettleBeat);
          const opts = {
            isolation: 'repeatable read' as const,
            lockTimeoutMs: input.lockTimeoutMs,
            settings: copySettings(mapping.syncId!),
          };
          // One statement in its own snapshot, paced; taken again when a write changed one of its rows meanwhile.
          const settleStep = async <T>(tx: PoolClient, q: Query, read: (r: QueryResult) => T): Promise<T> => {
            for (let attempt = 1; ; attempt++) {
              try {
                const { value } = await throttler.paced(() =>
                  inTransaction(tx, opts, async (t) => {
                    await enterRun(t, run);
                    return read(await t.query(q.text, q.values));
                  }),
                );
                return value;
              } catch (e) {
                if ((sqlState(e) === '40001' || isLockConflict(e)) && attempt < 30) {
                  await sleepMs(Math.min(2000, 20 * 2 ** attempt), signal);
                  continue;
                }
                throw e;
              }
            }
          };
          // Triggers installed with this version logged every key that left the source since (sync_removals): the
          // pass looks at those keys only, not at the whole table, which at 1M rows idle had been a fifth of the copy
          // phase. The whole table instead when they did not log (installed by an earlier version), or a TRUNCATE was
          // logged.
          const list = (
            await c.query(
              `SELECT EXISTS (SELECT 1 FROM ${S}.sync_settling WHERE sync_id = $1) AS logged,
                      EXISTS (SELECT 1 FROM ${S}.sync_removals WHERE sync_id = $1 AND key IS NULL) AS truncated`,
              [mapping.syncId],
            )
          ).rows[0] as { logged: boolean; truncated: boolean };
          if (list.logged && !list.truncated) {
            for (;;) {
              if (signal?.aborted) throw new CancelledFailure('cancelled');
              const q = settleLoggedQuery(mapping, state.logCursor ?? '0', SETTLE_CHUNK_ROWS);
              const r = await settleStep(
                c,
                q,
                (res) => res.rows[0] as { last: string | null; n: number; removed: number },
              );
              if (r.last === null) break;
              state.logCursor = r.last;
              state.keysLooked = (state.keysLooked ?? 0) + r.n;
              state.removed += r.removed;
              state.chunks++;
              heartbeat(state);
              if (r.n < SETTLE_CHUNK_ROWS) break;
            }
          } else {
            const planner = await chunkPlanner(c, mapping, SETTLE_CHUNK_ROWS, state.cursor);
            // Chunks are independent (each its own snapshot): with a single integer key two run at once. On an idle
            // 2M-row copy the pass took 0.86 s instead of 1.35 s, a third of the copy phase before.
            await walkChunks(
              pool,
              c,
              planner,
              state.cursor,
              (tx: PoolClient, chunk: ChunkBounds) =>
                settleStep(tx, settleQuery(mapping, chunk.after, chunk.upTo), (r) => r.rowCount ?? 0),
              (removed, cursor) => {
                state.removed += removed;
                state.chunks++;
                state.cursor = cursor;
                heartbeat(state);
              },
              () => {
                if (signal?.aborted) throw new CancelledFailure('cancelled');
              },
            );
          }
          if (list.logged) {
            // Settled: the triggers stop logging and the list goes. Every transaction open when the pass began has
            // ended, so a write from now on sees every batch, and its trigger finds the rows it removes. Only while the
            // mark is there: an undo that ran meanwhile dropped the functions, which must not come back.
            await inTransaction(c, { lockTimeoutMs: input.lockTimeoutMs, settings: opts.settings }, async (t) => {
              const mark = await t.query(`DELETE FROM ${S}.sync_settling WHERE sync_id = $1`, [mapping.syncId]);
              if (mark.rowCount) {
                for (const stmt of settledFunctionsDdl(mapping, job.sync === 'bidirectional')) await t.query(stmt);
              }
              await t.query(`DELETE FROM ${S}.sync_removals WHERE sync_id = $1`, [mapping.syncId]);
            });
          }
          if (state.removed) deps.logger.info({ job: job.name, removed: state.removed }, 'copy settled');
          return state;
        }).finally(() => throttler.release(run.runKey));
      });
    },

    /** Writes pause/throttle settings where running copies read them between batches. */
    async setCopyControl(input: CopyControlInput): Promise<void> {
      return activityBody('updating copy control', async () => {
        const pool = await targetPool(deps, input.urlEnv);
        await pool.query(
          `INSERT INTO ${S}.copy_control (run_id, paused, pause_reason, batch_size, delay_ms, max_latency_increase,
             updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, now())
           ON CONFLICT (run_id) DO UPDATE SET paused = EXCLUDED.paused, pause_reason = EXCLUDED.pause_reason,
             batch_size = EXCLUDED.batch_size, delay_ms = EXCLUDED.delay_ms,
             max_latency_increase = EXCLUDED.max_latency_increase, updated_at = now()`,
          [
            input.run.runKey,
            input.paused,
            input.reason ?? null,
            input.batchSize ?? null,
            input.delayMs ?? null,
            input.maxLatencyIncrease === undefined ? null : budgetFraction(input.maxLatencyIncrease),
          ],
        );
      });
    },
  };
}

async function estimateSourceRows(pool: Pool, m: CopyMapping): Promise<number> {
  if (m.source.kind === 'table') return estimatedRows(pool, m.source.table);
  const r = await pool.query(`EXPLAIN (FORMAT JSON) SELECT 1 FROM ${sourceFrom(m)}`);
  return Math.round(r.rows[0]['QUERY PLAN'][0].Plan['Plan Rows'] ?? 0);
}

/** parts-1 key values splitting the source into ranges of about equal size. */
async function splitPoints(
  pool: Pool,
  m: CopyMapping,
  parts: number,
  estimate: number,
  extent: { lo: string; hi: string },
): Promise<string[]> {
  if (hasIntegerKey(m)) {
    const lo = BigInt(extent.lo);
    const hi = BigInt(extent.hi);
    const span = hi - lo;
    if (span < BigInt(parts)) return [];
    return Array.from({ length: parts - 1 }, (_, i) => (lo + (span * BigInt(i + 1)) / BigInt(parts)).toString());
  }
  // Other keys: walk the key index to the quantiles (one ordered scan, done once per job).
  const points: string[] = [];
  const step = Math.max(1, Math.floor(estimate / parts));
  for (let i = 1; i < parts; i++) {
    const q = keyAtOffsetQuery(m, null, step * i);
    const r = await pool.query(q.text, q.values);
    if (!r.rowCount) break;
    if (points.length === 0 || points[points.length - 1] !== r.rows[0].k) points.push(r.rows[0].k);
  }
  return points;
}

const sqlState = (e: unknown) => (e as { code?: string }).code;

async function copyRangeImpl(
  deps: ActivityDeps,
  input: CopyRangeInput,
  readControl: (db: Pool | PoolClient, runId: string) => Promise<Control>,
): Promise<CopyRangeResult> {
  const { job, range, run } = input;
  const { workflowId, runKey: runId } = run;
  const pool = await targetPool(deps, input.urlEnv);
  const mapping = await resolveMapping(pool, job, run);
  const signal = cancellationSignal();
  const key: CheckpointKey = [runId, job.name, range.index];
  const checkCancelled = () => {
    if (signal?.aborted) throw new CancelledFailure(String(signal.reason ?? 'cancelled'));
  };

  // The checkpoint row is written in the same transaction as each batch, so it is never ahead of or behind the data.
  const cp = await openCheckpoint(pool, key, workflowId, range);
  const resumed = cp.batches > 0;
  const started = Date.now();
  if (cp.done) return finishedRange(job.name, range.index, cp);

  const previous = previousHeartbeat<CopyHeartbeat>();
  let cursor = cp.cursor;
  let rowsCopied = cp.rows;
  let batches = cp.batches;
  let rowsThisAttempt = 0;
  let adaptive = previous?.batchSize ?? job.batchSize;
  const maxBatch = job.maxBatchSize ?? Math.max(DEFAULT_MAX_BATCH, job.batchSize);
  const sizer = new BatchSizer(job.targetBatchMs, maxBatch);
  const slowMode = slowConflictMode(mapping);
  const backoff = new HardBackoff();
  let lockFailures = 0;

  const client = await pool.connect();
  const throttler = await Throttler.acquire(pool, maxLatencyIncreaseOf(job), runId);
  // Sharing the server from the start: the first batch is already a short burst, not the plan's batchSize (under
  // load, several batches of thousands of rows ran before the sizer had shrunk them).
  if (throttler.decision.duty && !previous) adaptive = Math.min(adaptive, SHARED_FIRST_BATCH);
  const batcher = batcherFor(mapping, range);
  let details: CopyHeartbeat = {
    job: job.name,
    rangeIndex: range.index,
    cursor,
    rowsCopied,
    estimatedRows: input.estimatedRows,
    batches,
    batchSize: adaptive,
    rowsPerSecond: 0,
    throttleReason: null,
    lockConflicts: previous?.lockConflicts ?? 0,
    lastLockConflict: previous?.lastLockConflict ?? null,
    paused: false,
    updatedAt: new Date().toISOString(),
  };
  // Heartbeat on a timer too, so a long batch or a pause never looks like a dead worker.
  const keepAlive = setInterval(() => heartbeat(details), 2000);
  let broken: Error | undefined;

  /** One batch and its checkpoint in one transaction; the fast path first, the conflict-aware statement if needed. */
  const runBatch = async (batch: PlannedBatch) => {
    let modes: ConflictMode[] = ['fail', slowMode];
    if (mapping.syncing && batch.upTo !== null) {
      const q = targetHasRowsQuery(mapping, batch.after, batch.upTo);
      if ((await client.query(q.text, q.values)).rows[0].x) modes = [slowMode];
    }
    for (const mode of modes) {
      try {
        return await inTransaction(
          client,
          { lockTimeoutMs: input.lockTimeoutMs, settings: copySettings(mapping.syncId!) },
          async (c) => {
            // Fenced: once the migration rolls back, no batch of it commits any more (db/fence.ts).
            await enterRun(c, run);
            const q = batch.query(mode);
            const res = batcher.result(batch, await c.query(q.text, q.values));
            await advanceCheckpoint(c, key, res.cursor, res.rows);
            return res;
          },
        );
      } catch (e) {
        // A sync trigger already wrote one of these keys: redo the batch in the mode that handles it.
        if (mode === 'fail' && sqlState(e) === '23505') continue;
        throw e;
      }
    }
    throw new Error('unreachable');
  };

  // Operator settings are read at most twice a second: a pause or throttle lands within one batch plus half a second.
  let control: Control | undefined;
  let controlReadAt = 0;
  const currentControl = async () => {
    if (!control || Date.now() - controlReadAt > 500) {
      control = await readControl(client, runId);
      controlReadAt = Date.now();
      throttler.overrideBudget(runId, control.max_latency_increase);
    }
    return control;
  };
  try {
    for (;;) {
      checkCancelled();
      let ctl = await currentControl();
      while (ctl.paused) {
        details = {
          ...details,
          paused: true,
          throttleReason: `paused${ctl.pause_reason ? `: ${ctl.pause_reason}` : ''}`,
        };
        heartbeat(details);
        await sleepMs(500, signal);
        checkCancelled();
        controlReadAt = 0;
        ctl = await currentControl();
      }
      const size = ctl.batch_size ?? adaptive;
      const batch = await batcher.next(client, cursor, size);
      if (!batch) break;
      let res: BatchResult;
      let elapsed: number;
      try {
        ({ value: res, ms: elapsed } = await throttler.paced(() => runBatch(batch)));
      } catch (e) {
        // Lock waits and deadlocks with the application: back off with a smaller batch instead of failing.
        // A lost connection is not one of them: it fails this attempt, which resumes on a fresh one from the checkpoint.
        if (isLockConflict(e) && ++lockFailures <= 30) {
          adaptive = Math.max(MIN_BATCH, Math.floor(size / 2));
          const why = `lock conflict (${sqlState(e)}); retrying with ${adaptive} rows`;
          details = {
            ...details,
            batchSize: adaptive,
            throttleReason: why,
            lockConflicts: details.lockConflicts + 1,
            lastLockConflict: why,
          };
          heartbeat(details);
          await sleepMs(Math.min(5000, 100 * 2 ** Math.min(lockFailures, 6)), signal);
          continue;
        }
        throw e;
      }
      lockFailures = 0;
      batches++;
      cursor = res.cursor;
      rowsCopied += res.rows;
      rowsThisAttempt += res.rows;

      const decision = throttler.decision;
      // Sharing the server: short bursts, so the application's queries never wait long behind a batch; longer ones
      // only when the latency budget lets the copy take a larger share of the time.
      if (res.rows > 0) adaptive = sizer.next(res.rows, elapsed, size, batchTargetMs(decision, job.targetBatchMs));
      const hard = backoff.next(decision, adaptive, MIN_BATCH);
      adaptive = hard.size;
      const delay = (ctl.delay_ms ?? 0) + hard.waitMs;

      const secs = (Date.now() - started) / 1000;
      details = {
        ...details,
        cursor,
        rowsCopied,
        batches,
        batchSize: ctl.batch_size ?? adaptive,
        rowsPerSecond: secs > 0 ? Math.round(rowsThisAttempt / secs) : 0,
        throttleReason: decision.throttle ? decision.reason : ctl.delay_ms ? `operator delay ${ctl.delay_ms}ms` : null,
        duty: decision.duty,
        latencyIncrease: decision.latencyIncrease,
        paused: false,
        updatedAt: new Date().toISOString(),
      };
      heartbeat(details);
      if (delay > 0) await sleepMs(delay, signal);
    }
    await finishCheckpoint(client, key);
  } catch (e) {
    if (breaksClient(e)) broken = e as Error;
    throw e;
  } finally {
    clearInterval(keepAlive);
    throttler.release(runId);
    client.release(broken);
  }
  const durationMs = Date.now() - started;
  deps.logger.info({ job: job.name, range: range.index, rows: rowsCopied, batches, durationMs }, 'copy range done');
  return {
    job: job.name,
    rangeIndex: range.index,
    rowsCopied,
    batches,
    durationMs,
    rowsPerSecond: durationMs > 0 ? Math.round((rowsThisAttempt * 1000) / durationMs) : 0,
    resumed,
  };
}

/**
 * Empties what the copy filled in `job`'s target, if the table is still there (false when it is not): a target shared
 * by several jobs loses this job's slice only, by DELETE, since a TRUNCATE would reach the other jobs' reverse syncs as
 * a truncate of their rows too. Run with this job's sync triggers gone.
 */
async function emptyTarget(c: PoolClient, job: ResolvedCopyJob): Promise<boolean> {
  if (!(await tableExists(c, job.to))) return false;
  const slice = Object.entries(job.slice ?? {}).map(
    ([col, value]) => `t.${quoteIdent(col)} IS NOT DISTINCT FROM (${value})`,
  );
  if (slice.length) await c.query(`DELETE FROM ${quoteTable(job.to)} AS t${whereOf(slice)}`);
  else await c.query(`TRUNCATE ${quoteTable(job.to)}`);
  return true;
}
