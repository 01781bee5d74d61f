// Copy across two databases (blue-green), activity side: change capture on either side with its undo next to it, the
// copy of a key range from the source database into the target, and the applier that writes each side's captured
// changes on the other (see capture-sql.ts for why the two converge).
import { CancelledFailure } from '@temporalio/activity';
import type { Pool, PoolClient } from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import type { Readable, Writable } from 'node:stream';
import { functionContext, tableExists } from '../../db/catalog';
import { isLockConflict } from '../../db/errors';
import { enterRun } from '../../db/fence';
import { ARCHIVE_SCHEMA, streamName, syncIdFor, TIDEMARK_SCHEMA, type SyncDirection } from '../../db/names';
import { parseTableRef, quoteIdent, quoteTable, type TableRef } from '../../db/quote';
import { inTransaction, withClient, withTransaction } from '../../db/tx';
import { F, failure } from '../../migration/failures';
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
import { readControl, type CopyHeartbeat, type CopyRange, type CopyRangeResult } from './activities';
import {
  copyInSql,
  copyOutSql,
  mappedTypesSql,
  type CopyFormat,
  createStageSql,
  stageName,
  unstageSql,
  applyDeletesQuery,
  applyLockSql,
  applySettings,
  applyTruncateQueries,
  applyUpsertsQuery,
  captureTriggerDdl,
  claimQuery,
  claimsOf,
  jsonArray,
  dropCaptureDdl,
  forgetChangesQuery,
  lagQuery,
  lastSeqQuery,
  readChangesQuery,
  readImagesQuery,
  segments,
  presentKeysQuery,
  type ApplySpec,
  type BatchKeys,
  type CaptureSpec,
  type Change,
} from './capture-sql';
import {
  createSlot,
  dropSlot,
  identityHoldsKey,
  logicalAllowed,
  pumpSlot,
  slotBacklogBytes,
  slotExists,
} from './logical';
import { advanceCheckpoint, finishCheckpoint, finishedRange, openCheckpoint, type CheckpointKey } from './checkpoint';
import { resolveMapping } from './mapping';
import { reverseRoundTrip } from './round-trip';
import { BatchSizer, MIN_BATCH } from './sizer';
import { maxLatencyIncreaseOf } from './budget';
import { batchTargetMs, HardBackoff, SHARED_FIRST_BATCH, Throttler } from './throttler';
import { KeyIntervalBatcher } from './batcher';
import { hasIntegerKey, keyAtOffsetQuery, slicePredicate, whereOf, type CopyMapping, type EncodedKey } from './sql';

const S = quoteIdent(TIDEMARK_SCHEMA);
/** Changes applied per transaction. */
const APPLY_BATCH = 5000;
/**
 * At most about this much row-image text in the worker at once: the images a batch applies are read in groups of
 * this size (a batch of distinct rows holding 1 MB values each would otherwise be 5 GB, more than a string may hold).
 */
const APPLY_BYTES = 32 * 1024 * 1024;
/** The first group of images, read before their size is known. */
const FIRST_GROUP = 20;
/** How long an idle applier waits before it looks at the log again (the lag it adds when writes are sparse). */
const IDLE_POLL_MS = 50;

export interface AcrossInput {
  /** Environment variables naming the source (blue) and target (green) databases. */
  sourceEnv: string;
  targetEnv: string;
  run: RunRef;
  job: ResolvedCopyJob;
  lockTimeoutMs: number;
}

export interface CaptureInput extends AcrossInput {
  direction: SyncDirection;
  /** The plan's target.capture (absent in migrations started before logical decoding: triggers). */
  capture?: 'auto' | 'logical' | 'trigger';
}

/** How a direction's changes are captured: triggers, or (forward, while only the source writes) a logical slot. */
export type CaptureMode = 'trigger' | 'logical';

export interface AcrossRangeInput extends AcrossInput {
  range: CopyRange;
  estimatedRows: number;
}

/** What a running applier reports in its heartbeat (shown by `status`). */
export interface ReplicationHeartbeat {
  kind: 'replication';
  job: string;
  direction: SyncDirection;
  /** Changes applied in this stream so far, by every applier and drain of it (tidemark.apply_progress). */
  applied: number;
  /** Changes that lost to a later write of the same row on the applying side, or were applied already. */
  skipped: number;
  lagRows: number;
  lagSeconds: number;
  /** Logical capture: WAL the slot still holds, not yet in the log (its age is part of lagSeconds). */
  slotBytes?: number;
  conflicts: number;
  /** Why the last batch waits to be applied again (a lock, a referenced row not there yet); absent once it went in. */
  waiting?: string;
  updatedAt: string;
}

export interface LagReading {
  job: string;
  direction: SyncDirection;
  rows: number;
  seconds: number;
  /** Logical capture: WAL the slot still holds, not yet in the log. */
  slotBytes?: number;
}

/** The job as a blue-green copy runs it: once traffic moves, writes flow back, so its mapping has a reverse. */
function twoWay(job: ResolvedCopyJob): ResolvedCopyJob {
  return job.sync === 'none' ? job : { ...job, sync: 'bidirectional' };
}

async function sidesOf(deps: ActivityDeps, input: AcrossInput): Promise<{ source: Pool; target: Pool }> {
  return { source: await targetPool(deps, input.sourceEnv), target: await targetPool(deps, input.targetEnv) };
}

export async function acrossMapping(deps: ActivityDeps, input: AcrossInput): Promise<CopyMapping> {
  const { source, target } = await sidesOf(deps, input);
  return resolveMapping(source, twoWay(input.job), input.run, target);
}

function sourceTable(m: CopyMapping): TableRef {
  if (m.source.kind !== 'table') throw failure(F.PlanRuntimeError, `copy job "${m.job}": needs a table source`);
  return m.source.table;
}

/** What one direction's triggers log: the captured table's keys and its rows as images of the other side's table. */
export function captureSpecOf(m: CopyMapping, direction: SyncDirection): CaptureSpec {
  const base = { job: m.job, syncId: m.syncId!, direction, stream: streamName(m.syncId!, direction) };
  return direction === 'forward'
    ? {
        ...base,
        origin: 'source',
        table: sourceTable(m),
        keys: m.keys.map((k) => k.source),
        image: m.columns.map((c) => ({ name: c.target, expr: c.expr })),
      }
    : {
        ...base,
        origin: 'target',
        table: m.target,
        keys: m.keys.map((k) => k.target),
        image: m.reverse.map((r) => ({ name: r.source, expr: r.expr })),
      };
}

/** How one direction's changes are written on the other side. */
export function applySpecOf(m: CopyMapping, direction: SyncDirection): ApplySpec {
  if (direction === 'forward') {
    const typeOf = new Map(m.columns.map((c) => [c.target, c.type]));
    return {
      syncId: m.syncId!,
      to: m.target,
      keys: m.keys.map((k) => ({ name: k.target, type: typeOf.get(k.target) ?? k.type })),
      columns: m.columns.map((c) => c.target),
      slice: m.slice,
    };
  }
  return {
    syncId: m.syncId!,
    to: sourceTable(m),
    keys: m.keys.map((k) => ({ name: k.source, type: k.type })),
    columns: m.reverse.map((r) => r.source),
    slice: [],
  };
}

/** The capturing and the applying database of a direction. */
function ends(sides: { source: Pool; target: Pool }, direction: SyncDirection) {
  return direction === 'forward'
    ? { capturing: sides.source, applying: sides.target }
    : { capturing: sides.target, applying: sides.source };
}

interface CaptureRecord {
  stream: string;
  apply: ApplySpec;
  /** Set while a logical slot feeds the log instead of triggers: how its changes are logged. */
  logical?: CaptureSpec;
}

/** What the install recorded for a direction (on its capturing side); undefined if it never committed. */
async function captureRecord(db: Pool | PoolClient, run: RunRef, job: string, direction: SyncDirection) {
  const r = await db.query(
    `SELECT stream, spec FROM ${S}.captures WHERE run_key = $1 AND job = $2 AND direction = $3`,
    [run.runKey, job, direction],
  );
  if (!r.rowCount) return undefined;
  const spec = r.rows[0].spec as { apply: ApplySpec; logical?: CaptureSpec };
  return { stream: r.rows[0].stream as string, apply: spec.apply, logical: spec.logical } satisfies CaptureRecord;
}

/**
 * Where a destination table is now: in place, or moved into tidemark_archive by cleanup (the reverse stream follows
 * the old tables there until they are dropped, so an abort still finds every write of the new side in them).
 */
async function whereNow(c: PoolClient, to: TableRef): Promise<TableRef | undefined> {
  if (await tableExists(c, to)) return to;
  const r = await c.query(
    `SELECT 1 FROM ${S}.archive WHERE original_schema = $1 AND table_name = $2
        AND dropped_at IS NULL AND restored_at IS NULL LIMIT 1`,
    [to.schema, to.name],
  );
  // Archiving moves the table (SET SCHEMA) under its own name; `archived_name` is that qualified name, for people.
  return r.rowCount ? { schema: ARCHIVE_SCHEMA, name: to.name } : undefined;
}

interface Applied {
  read: number;
  applied: number;
  skipped: number;
  /** The batch was full: the log may hold more now. */
  more?: boolean;
}

/**
 * Applies the next batch of a stream: the changes that win on the applying side (later stamp than the row's there)
 * are written in one transaction with their stamps, then the batch is removed from the log. A crash in between
 * leaves the batch in the log; applied again, every change of it loses to its own stamp, so nothing is written twice.
 */
async function applyBatch(
  cap: PoolClient,
  app: PoolClient,
  rec: CaptureRecord,
  lockTimeoutMs: number,
  through?: string,
) {
  // Without row images: only the ones applied (per key its last change) are read, in applyInTransaction.
  const batch = (await cap.query(readChangesQuery(rec.stream, APPLY_BATCH, through))).rows as Change[];
  const more = batch.length >= APPLY_BATCH;
  if (!batch.length) return { read: 0, applied: 0, skipped: 0, more };
  let done: { applied: number; skipped: number };
  try {
    done = await applyInTransaction(cap, app, rec, lockTimeoutMs, batch, false).catch((e) => {
      // The destination moved while this batch waited for its lock: cleanup archived it (ALTER TABLE … SET SCHEMA
      // commits, and the waiting statement no longer finds the name it was given). Looked up again, it is found in
      // tidemark_archive; a table really gone fails again, and says so.
      if (sqlState(e) !== UNDEFINED_TABLE) throw e;
      return applyInTransaction(cap, app, rec, lockTimeoutMs, batch, false);
    });
  } catch (e) {
    if (sqlState(e) === FOREIGN_KEY_VIOLATION) return applyAsFarAsReferencesAllow(cap, app, rec, lockTimeoutMs, batch);
    // Each key's last image, all at once, can collide on another unique index where the application's own
    // statements did not: two rows swapping a unique value through a third (a, b → tmp, a → b, b → a) in one
    // transaction. Replayed one change at a time, in the order they were logged, the batch goes through the same
    // steps the application's did.
    if (sqlState(e) !== UNIQUE_VIOLATION) throw e;
    done = await applyInTransaction(cap, app, rec, lockTimeoutMs, batch, true);
  }
  await cap.query(forgetChangesQuery(batch.map((c) => c.seq)));
  return { read: batch.length, ...done, more };
}

/**
 * A batch a foreign key refuses: one of its rows references a row another job's changes bring (not there yet), or a
 * row it deletes is still referenced by rows another job's changes delete. Its changes go in one at a time, in log
 * order, each in its own transaction and then forgotten, up to the first one still refused (which fails, once none
 * went in): each change then waits only for what it needs, and two jobs waiting on each other's batches both get on.
 */
async function applyAsFarAsReferencesAllow(
  cap: PoolClient,
  app: PoolClient,
  rec: CaptureRecord,
  lockTimeoutMs: number,
  batch: Change[],
): Promise<Applied> {
  const out: Applied = { read: 0, applied: 0, skipped: 0, more: true };
  for (const change of batch) {
    try {
      const done = await applyInTransaction(cap, app, rec, lockTimeoutMs, [change], true);
      out.applied += done.applied;
      out.skipped += done.skipped;
    } catch (e) {
      if (sqlState(e) !== FOREIGN_KEY_VIOLATION || !out.read) throw e;
      return out;
    }
    await cap.query(forgetChangesQuery([change.seq]));
    out.read++;
  }
  return out;
}

/**
 * The row images of `changes` (upserts) from the log, in groups of about APPLY_BYTES, the later groups sized by what
 * the first weighed. A change no longer in the log was applied and forgotten by another applier meanwhile: its image
 * is left out (that applier wrote it).
 */
async function* imagesOf(cap: PoolClient, changes: Change[]): AsyncGenerator<string[]> {
  let perImage: number | undefined;
  for (let i = 0; i < changes.length;) {
    const n = perImage ? Math.max(1, Math.floor(APPLY_BYTES / perImage)) : FIRST_GROUP;
    const group = changes.slice(i, i + n);
    i += group.length;
    const images = (await cap.query(readImagesQuery(group.map((c) => c.seq)))).rows.map((r) => r.row as string);
    if (!images.length) continue;
    perImage = Math.max(1, images.reduce((a, r) => a + r.length, 0) / images.length);
    yield images;
  }
}

/**
 * Applies `batch` on the applying side in one transaction: per key its last change, set by set, or (`oneByOne`) each
 * change on its own in log order, each still only where its stamp wins.
 */
async function applyInTransaction(
  cap: PoolClient,
  app: PoolClient,
  rec: CaptureRecord,
  lockTimeoutMs: number,
  batch: Change[],
  oneByOne: boolean,
): Promise<{ applied: number; skipped: number }> {
  const out = { applied: 0, skipped: 0 };
  await inTransaction(app, { lockTimeoutMs, settings: applySettings(rec.apply.syncId) }, async (tx) => {
    // Never beside a batch of the copy (see "Why the copy is exact" in capture-sql.ts).
    await tx.query(applyLockSql(false), [rec.apply.syncId]);
    const to = await whereNow(tx, rec.apply.to);
    if (!to) {
      throw failure(F.PlanRuntimeError, `cannot apply changes: ${quoteTable(rec.apply.to)} no longer exists`);
    }
    const spec = { ...rec.apply, to };
    const runs = oneByOne
      ? batch.map((c) => ({ truncateFirst: c.op === 'T', changes: c.op === 'T' ? [] : [c] }))
      : segments(batch);
    for (const seg of runs) {
      if (seg.truncateFirst) for (const q of applyTruncateQueries(spec)) await tx.query(q);
      if (!seg.changes.length) continue;
      const won = new Set((await tx.query(claimQuery(spec), [claimsOf(seg.changes)])).rows.map((r) => r.key as string));
      const winners = seg.changes.filter((c) => won.has(c.key!));
      out.skipped += seg.changes.length - winners.length;
      const deletes = winners.filter((c) => c.op === 'D').map((c) => c.key!);
      const upserts = winners.filter((c) => c.op === 'U');
      if (deletes.length) await tx.query(applyDeletesQuery(spec), [jsonArray(deletes)]);
      for await (const images of imagesOf(cap, upserts)) {
        await tx.query(applyUpsertsQuery(spec), [jsonArray(images)]);
      }
      out.applied += winners.length;
    }
    await tx.query(
      `INSERT INTO ${S}.apply_progress (stream, applied, skipped, batches) VALUES ($1, $2, $3, 1)
       ON CONFLICT (stream) DO UPDATE SET applied = ${S}.apply_progress.applied + EXCLUDED.applied,
         skipped = ${S}.apply_progress.skipped + EXCLUDED.skipped, batches = ${S}.apply_progress.batches + 1,
         updated_at = now()`,
      [rec.stream, out.applied, out.skipped],
    );
  });
  return out;
}

/**
 * Applies everything logged in a stream up to now; later changes are left to the applier or a later drain (with the
 * capture still on, an application writing fast would otherwise keep a drain going for ever). Stops early when
 * `signal` aborts.
 */
async function drain(
  cap: PoolClient,
  app: PoolClient,
  rec: CaptureRecord,
  lockTimeoutMs: number,
  signal?: AbortSignal,
) {
  const total: Applied = { read: 0, applied: 0, skipped: 0 };
  if (rec.logical) await pumpAll(cap, rec.logical);
  const through = (await cap.query(lastSeqQuery(rec.stream))).rows[0].seq as string | null;
  if (through === null) return total;
  let missingSince: number | undefined;
  for (let conflicts = 0; ;) {
    if (signal?.aborted) throw new CancelledFailure('cancelled');
    let r: Applied;
    try {
      r = await applyBatch(cap, app, rec, lockTimeoutMs, through);
    } catch (e) {
      // A referenced row another job's applier (still running) is to bring: a short wait; past it, the workflow
      // drains the other jobs and comes back to this one (drainInRounds).
      const waits = sqlState(e) === FOREIGN_KEY_VIOLATION ? (missingSince ??= Date.now()) > Date.now() - 10_000 : false;
      if ((isLockConflict(e) || waits) && ++conflicts < 50) {
        await sleepMs(Math.min(2000, 20 * 2 ** Math.min(conflicts, 7)), signal);
        continue;
      }
      throw e;
    }
    missingSince = undefined;
    total.read += r.read;
    total.applied += r.applied;
    total.skipped += r.skipped;
    heartbeat();
    if (!r.read) return total;
  }
}

/** Installs a capture's triggers in `c`'s transaction, their function run as this session would (functionClauses). */
async function installCaptureTriggers(c: PoolClient, spec: CaptureSpec): Promise<void> {
  for (const stmt of captureTriggerDdl(spec, await functionContext(c))) await c.query(stmt);
}

/** Moves everything the slot decoded up to now into the log (nothing when the slot is gone). */
async function pumpAll(cap: PoolClient, spec: CaptureSpec): Promise<number> {
  if (!(await slotExists(cap, spec.syncId))) return 0;
  const upTo = (await cap.query(`SELECT pg_current_wal_lsn()::text AS l`)).rows[0].l as string;
  let logged = 0;
  for (;;) {
    const r = await pumpSlot(cap, spec, APPLY_BATCH, upTo, () => heartbeat());
    logged += r.logged;
    heartbeat();
    if (!r.more) return logged;
  }
}

/** Which capture a job's forward direction uses on this source: the plan's choice, or for auto what the server allows. */
async function forwardMode(c: PoolClient, capture: CaptureInput['capture'], spec: CaptureSpec): Promise<CaptureMode> {
  if (!capture || capture === 'trigger') return 'trigger';
  let allowed = await logicalAllowed(c);
  if (allowed.ok) allowed = await identityHoldsKey(c, spec.table, spec.keys);
  if (allowed.ok) return 'logical';
  if (capture === 'logical') throw failure(F.PlanRuntimeError, `capture: logical is not possible here: ${allowed.why}`);
  return 'trigger';
}

/** The log's backlog of a capture, and with a logical slot, the WAL the slot still holds. */
async function lagOf(
  db: Pool | PoolClient,
  rec: CaptureRecord,
): Promise<{ rows: number; seconds: number; slotBytes?: number }> {
  const q = lagQuery(rec.stream);
  const lag = (await db.query(q.text, q.values)).rows[0] as { rows: number; seconds: number };
  const bytes = rec.logical ? await slotBacklogBytes(db, rec.logical.syncId) : null;
  return bytes === null ? lag : { ...lag, slotBytes: bytes };
}

/** Drops one direction's capture on its capturing side: slot, triggers, logged changes and record. Idempotent. */
async function dropCapture(capturing: Pool, input: CaptureInput, syncId: string, direction: SyncDirection) {
  const { run, job } = input;
  await withClient(capturing, (c) => dropSlot(c, syncId));
  await withTransaction(capturing, { lockTimeoutMs: input.lockTimeoutMs }, async (c) => {
    for (const stmt of dropCaptureDdl(job.name, syncId, direction)) await c.query(stmt);
    await c.query(`DELETE FROM ${S}.changes WHERE stream = $1`, [streamName(syncId, direction)]);
    await c.query(`DELETE FROM ${S}.captures WHERE run_key = $1 AND job = $2 AND direction = $3`, [
      run.runKey,
      job.name,
      direction,
    ]);
  });
}

export function createAcrossActivities(deps: ActivityDeps) {
  return {
    /**
     * Installs one direction's capture: its triggers on the captured table and the record of how its changes apply,
     * in one transaction on the capturing side. The forward install first records on the target whether it held any
     * of the job's rows, for the undo.
     */
    async installCapture(
      input: CaptureInput,
    ): Promise<{ job: string; direction: SyncDirection; stream: string; mode?: CaptureMode; warning?: string }> {
      const { job, run, direction } = input;
      return activityBody(`installing ${direction} change capture for copy job "${job.name}"`, async () => {
        const sides = await sidesOf(deps, input);
        const m = await acrossMapping(deps, input);
        const { capturing } = ends(sides, direction);
        const tx = { lockTimeoutMs: input.lockTimeoutMs };
        if (direction === 'forward') {
          await forwardTransaction(sides.target, run, tx, async (c) => {
            await refuseHeld(c, run, `copy job "${job.name}"`, [job.to]);
            const slice = whereOf(slicePredicate(m));
            const empty = !(await c.query(`SELECT EXISTS (SELECT 1 FROM ${quoteTable(m.target)} AS t${slice}) AS x`))
              .rows[0].x;
            await c.query(
              `INSERT INTO ${S}.sync_jobs (run_key, job, sync_id, sources, target, target_was_empty)
               VALUES ($1, $2, $3, '{}', $4, $5) ON CONFLICT (run_key, job) DO NOTHING`,
              [run.runKey, job.name, m.syncId, job.to, empty],
            );
          });
        }
        if (!m.syncing) return { job: job.name, direction, stream: '' };
        const spec = captureSpecOf(m, direction);
        const mode =
          direction === 'forward' ? await withClient(capturing, (c) => forwardMode(c, input.capture, spec)) : 'trigger';
        // The slot first, in a session that has written nothing (which creating one needs): every transaction that
        // commits after it is decoded, and the copy's snapshots come later.
        if (mode === 'logical') await withClient(capturing, (c) => createSlot(c, m.syncId!));
        await forwardTransaction(capturing, run, tx, async (c) => {
          await refuseHeld(c, run, `copy job "${job.name}"`, [`${spec.table.schema}.${spec.table.name}`]);
          if (mode === 'trigger') await installCaptureTriggers(c, spec);
          await c.query(
            `INSERT INTO ${S}.captures (run_key, job, sync_id, direction, stream, table_name, spec)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (run_key, job, direction) DO UPDATE SET spec = EXCLUDED.spec`,
            [
              run.runKey,
              job.name,
              m.syncId,
              direction,
              spec.stream,
              `${spec.table.schema}.${spec.table.name}`,
              JSON.stringify({ apply: applySpecOf(m, direction), logical: mode === 'logical' ? spec : undefined }),
            ],
          );
        });
        deps.logger.info({ job: job.name, direction, mode }, 'change capture installed');
        // Changes come back from the target once it takes writes: a reverse that does not give rows back as they were
        // would rewrite the source's rows (round-trip.ts). Said before a row is copied.
        const warning =
          direction === 'forward'
            ? await withClient(sides.source, (src) =>
                withClient(sides.target, (tgt) =>
                  reverseRoundTrip(m, { c: src, inTransaction: false }, { c: tgt, inTransaction: false }),
                ),
              )
            : undefined;
        if (warning) deps.logger.warn({ job: job.name }, warning);
        return { job: job.name, direction, stream: spec.stream, mode, ...(warning ? { warning } : {}) };
      });
    },

    /**
     * Undo of a capture. Forward: its triggers and logged changes go (the target is being abandoned), and the target is
     * emptied again if the copy filled it. Reverse: every change written on the target so far is applied to the
     * source, and the capture stays — the application may still write on the target for a moment after the flag went
     * back, until the rollback's end (finishCapture) — so nothing written on the new side is lost.
     */
    async undoCapture(input: CaptureInput): Promise<string> {
      const { job, run, direction } = input;
      return activityBody(`undoing the ${direction} change capture of "${job.name}"`, async () => {
        const sides = await sidesOf(deps, input);
        const syncId = syncIdFor(run.runKey, job.name);
        const { capturing, applying } = ends(sides, direction);
        if (direction === 'reverse') {
          const rec = await captureRecord(capturing, run, job.name, direction);
          if (!rec) return 'nothing was installed';
          const done = await withClient(capturing, (cap) =>
            withClient(applying, (app) => drain(cap, app, rec, input.lockTimeoutMs)),
          );
          return `${done.applied} change(s) made on the target applied to the source; capture kept until the end of the rollback`;
        }
        // Once the target takes writes (its reverse capture is installed), the forward capture stays until the
        // rollback's end (finishCapture), and so do the target's rows: a late update or delete on the new side finds
        // its row only while the row is there (emptied here, the target acknowledged it and the source never saw
        // it); and the source's writes meanwhile keep their stamps, so the new side's late writes, applied to the
        // source at the end, do not overwrite a later write made there.
        if (await captureRecord(sides.target, run, job.name, 'reverse')) {
          return `capture kept until the end of the rollback, and ${job.to}'s rows on the target`;
        }
        await dropCapture(capturing, input, syncId, direction);
        // The guard: emptying the target must not be logged by its reverse capture (it would empty the source).
        const tx = { lockTimeoutMs: input.lockTimeoutMs, settings: applySettings(syncId) };
        return withTransaction(sides.target, tx, async (c) => {
          const rec = await c.query(
            `DELETE FROM ${S}.sync_jobs WHERE run_key = $1 AND job = $2 RETURNING target_was_empty`,
            [run.runKey, job.name],
          );
          if (rec.rows[0]?.target_was_empty && (await emptyAcross(c, job))) {
            return `capture dropped, ${job.to} emptied on the target`;
          }
          return 'capture dropped';
        });
      });
    },

    /**
     * Ends one direction's capture for good: drops its triggers (which waits for the writes in flight, whose changes
     * are then in the log), applies everything left in the log, and forgets its record. With `last`, the job's row
     * stamps go too, on both sides. Idempotent.
     */
    async finishCapture(input: CaptureInput & { last: boolean; rollback?: boolean }): Promise<{ applied: number }> {
      const { job, run, direction } = input;
      return activityBody(`ending the ${direction} change capture of "${job.name}"`, async () => {
        const sides = await sidesOf(deps, input);
        const syncId = syncIdFor(run.runKey, job.name);
        const { capturing, applying } = ends(sides, direction);
        await withTransaction(capturing, { lockTimeoutMs: input.lockTimeoutMs }, async (c) => {
          for (const stmt of dropCaptureDdl(job.name, syncId, direction)) await c.query(stmt);
        });
        const rec = await captureRecord(capturing, run, job.name, direction);
        let applied = 0;
        if (rec) {
          const done = await withClient(capturing, (cap) =>
            withClient(applying, (app) => drain(cap, app, rec, input.lockTimeoutMs, cancellationSignal())),
          );
          applied = done.applied;
          await withClient(capturing, (c) => dropSlot(c, syncId));
          await capturing.query(`DELETE FROM ${S}.captures WHERE run_key = $1 AND job = $2 AND direction = $3`, [
            run.runKey,
            job.name,
            direction,
          ]);
        }
        // The end of a rollback after cut-over: the forward capture, kept to stamp the source's writes while the
        // target's last changes came back (undoCapture), goes now; its log was never to be applied.
        if (input.rollback && direction === 'reverse') await dropCapture(sides.source, input, syncId, 'forward');
        if (input.last) {
          for (const db of [sides.source, sides.target]) {
            await db.query(`DELETE FROM ${S}.row_clock WHERE sync_id = $1`, [syncId]);
          }
          // The end of a rollback: the target, if it outlived the schema undos, is emptied when the copy filled it
          // (kept until now for the new side's late writes: undoCapture). No capture is left to log it.
          const rec = await sides.target.query(
            `DELETE FROM ${S}.sync_jobs WHERE run_key = $1 AND job = $2 RETURNING target_was_empty`,
            [run.runKey, job.name],
          );
          if (input.rollback && rec.rows[0]?.target_was_empty) {
            await withClient(sides.target, (c) => emptyAcross(c, job));
          }
        }
        deps.logger.info({ job: job.name, direction, applied }, 'change capture ended');
        return { applied };
      });
    },

    /**
     * Switches a forward capture fed by a logical slot to triggers (before the target may take writes): installs the
     * triggers, then pumps the slot up to a position after they were committed and drops it (see logical.ts).
     * Idempotent; its applier must not run meanwhile.
     */
    async switchCaptureToTriggers(input: CaptureInput): Promise<{ logged: number }> {
      const { job, run } = input;
      return activityBody(`switching the change capture of "${job.name}" to triggers`, async () => {
        const sides = await sidesOf(deps, input);
        const rec = await captureRecord(sides.source, run, job.name, 'forward');
        if (!rec?.logical) return { logged: 0 };
        const spec = rec.logical;
        await forwardTransaction(sides.source, run, { lockTimeoutMs: input.lockTimeoutMs }, async (c) => {
          await installCaptureTriggers(c, spec);
        });
        // Every write committed after this position went through the triggers. The slot's changes are applied before
        // the switch ends: they carry no stamp on the source, so validation could not tell one of them still on its
        // way from a real difference.
        const logged = await withClient(sides.source, (c) => pumpAll(c, spec));
        await withClient(sides.source, (cap) =>
          withClient(sides.target, (app) =>
            drain(cap, app, { ...rec, logical: undefined }, input.lockTimeoutMs, cancellationSignal()),
          ),
        );
        await withClient(sides.source, (c) => dropSlot(c, spec.syncId));
        await sides.source.query(
          `UPDATE ${S}.captures SET spec = spec - 'logical' WHERE run_key = $1 AND job = $2 AND direction = 'forward'`,
          [run.runKey, job.name],
        );
        deps.logger.info({ job: job.name, logged }, 'change capture switched from the logical slot to triggers');
        return { logged };
      });
    },

    /**
     * The applier of one direction: applies its changes as they are logged, until cancelled. Heartbeats its progress
     * and lag; a new attempt (another worker) simply continues from the log.
     */
    async replicate(input: CaptureInput): Promise<void> {
      const { job, run, direction } = input;
      return activityBody(`applying the ${direction} changes of "${job.name}"`, async () => {
        const sides = await sidesOf(deps, input);
        const { capturing, applying } = ends(sides, direction);
        const found = await captureRecord(capturing, run, job.name, direction);
        if (!found) throw failure(F.PlanRuntimeError, `no ${direction} capture of "${job.name}" is installed`);
        let rec: CaptureRecord = found;
        const signal = cancellationSignal();
        const prev = previousHeartbeat<ReplicationHeartbeat>();
        const state: ReplicationHeartbeat = {
          kind: 'replication',
          job: job.name,
          direction,
          applied: prev?.applied ?? 0,
          skipped: prev?.skipped ?? 0,
          lagRows: 0,
          lagSeconds: 0,
          conflicts: prev?.conflicts ?? 0,
          updatedAt: new Date().toISOString(),
        };
        await withClient(capturing, (cap) =>
          withClient(applying, async (app) => {
            let lastBeat = 0;
            let failures = 0;
            let missingSince: number | undefined;
            let slotSeconds = 0;
            for (;;) {
              if (signal?.aborted) throw new CancelledFailure('cancelled');
              let r: Applied = { read: 0, applied: 0, skipped: 0 };
              let pumped = 0;
              if (rec.logical) {
                // The slot feeds the log until the capture switches to triggers (then the slot is gone).
                try {
                  const p = await pumpSlot(cap, rec.logical, APPLY_BATCH, undefined, () => heartbeat(state));
                  pumped = p.logged;
                  // Caught up, or behind by at most the age of the newest transaction just pumped.
                  slotSeconds =
                    p.more && p.lastCommitAt ? Math.max(0, (Date.now() - Date.parse(p.lastCommitAt)) / 1000) : 0;
                } catch (e) {
                  if (sqlState(e) !== UNDEFINED_OBJECT) throw e;
                  rec = (await captureRecord(cap, run, job.name, direction)) ?? rec;
                  slotSeconds = 0;
                }
              }
              try {
                r = await applyBatch(cap, app, rec, input.lockTimeoutMs);
                failures = 0;
                missingSince = undefined;
                delete state.waiting;
              } catch (e) {
                // A row the application holds (or a deadlock with it): this batch waits and is applied again. So does
                // one whose row references (or is still referenced by) a row of another table whose changes come
                // through another job's applier, not there yet: each job's changes are applied on their own.
                if (!isLockConflict(e)) {
                  if (sqlState(e) !== FOREIGN_KEY_VIOLATION) throw e;
                  missingSince ??= Date.now();
                  if (Date.now() - missingSince > FOREIGN_KEY_PATIENCE_MS) {
                    (e as Error).message +=
                      ` (still after ${FOREIGN_KEY_PATIENCE_MS / 60_000} min of waiting for the referenced table's changes)`;
                    throw e;
                  }
                }
                state.conflicts++;
                state.waiting = isLockConflict(e) ? `a lock: ${(e as Error).message}` : (e as Error).message;
                await sleepMs(Math.min(2000, 20 * 2 ** Math.min(++failures, 7)), signal);
              }
              state.applied += r.applied;
              state.skipped += r.skipped;
              if (Date.now() - lastBeat >= 1000) {
                const l = await lagOf(cap, rec);
                Object.assign(state, {
                  lagRows: l.rows,
                  lagSeconds: Math.max(l.seconds, rec.logical ? slotSeconds : 0),
                  slotBytes: l.slotBytes,
                });
                // The stream's own totals, committed with each batch: they count what earlier appliers of the stream
                // (before a resume or a continue-as-new, on another worker) and drains applied too.
                const totals = (
                  await app.query(
                    `SELECT applied::float8, skipped::float8 FROM ${S}.apply_progress WHERE stream = $1`,
                    [rec.stream],
                  )
                ).rows[0] as { applied: number; skipped: number } | undefined;
                if (totals) Object.assign(state, totals);
                state.updatedAt = new Date().toISOString();
                heartbeat(state);
                lastBeat = Date.now();
              }
              if (!r.more && !pumped) await sleepMs(IDLE_POLL_MS, signal);
            }
          }),
        );
      });
    },

    /** The backlog of each installed capture of these jobs (for stages that wait for the lag, and for status). */
    async replicationLag(input: Omit<AcrossInput, 'job'> & { jobs: ResolvedCopyJob[] }): Promise<LagReading[]> {
      return activityBody('reading the replication lag', async () => {
        const sides = await sidesOf(deps, { ...input, job: input.jobs[0] });
        const out: LagReading[] = [];
        for (const job of input.jobs) {
          for (const direction of ['forward', 'reverse'] as const) {
            const { capturing } = ends(sides, direction);
            const rec = await captureRecord(capturing, input.run, job.name, direction);
            if (!rec) continue;
            out.push({ job: job.name, direction, ...(await lagOf(capturing, rec)) });
          }
        }
        return out;
      });
    },

    /** Copies one key range from the source database into the target, batch by batch; resumable from its heartbeat. */
    async copyRangeAcross(input: AcrossRangeInput): Promise<CopyRangeResult> {
      const { job, run, range } = input;
      return activityBody(`copying "${job.name}" range ${range.index} across databases`, async () => {
        const sides = await sidesOf(deps, input);
        const m = await acrossMapping(deps, input);
        const signal = cancellationSignal();
        const prev = previousHeartbeat<CopyHeartbeat>();
        const started = Date.now();
        // The checkpoint is committed on the target with each batch (a heartbeat may be seconds behind the data when
        // a worker dies): a new attempt re-does at most the batch that was in flight.
        const key: CheckpointKey = [run.runKey, job.name, range.index];
        const cp = await openCheckpoint(sides.target, key, run.workflowId, range);
        if (cp.done) return finishedRange(job.name, range.index, cp);
        const details: CopyHeartbeat = {
          job: job.name,
          rangeIndex: range.index,
          cursor: cp.batches > 0 ? cp.cursor : range.after,
          rowsCopied: cp.rows,
          estimatedRows: input.estimatedRows,
          batches: cp.batches,
          batchSize: job.batchSize,
          rowsPerSecond: 0,
          throttleReason: null,
          lockConflicts: prev?.lockConflicts ?? 0,
          lastLockConflict: prev?.lastLockConflict ?? null,
          paused: false,
          updatedAt: new Date().toISOString(),
        };
        let rowsThisAttempt = 0;
        let format: CopyFormat = 'text';
        // Batches sized toward the job's target duration, like the copy within one database: a batch costs a fixed
        // part (its bounds, two transactions, about 12 ms) that small batches would pay over and over.
        let adaptive = prev?.batchSize ?? job.batchSize;
        const sizer = new BatchSizer(job.targetBatchMs, job.maxBatchSize ?? Math.max(ACROSS_MAX_BATCH, job.batchSize));
        // The application lives on the source until traffic moves: the copy holds the latency budget there, as the
        // copy within one database does (throttler.ts).
        const throttler = await Throttler.acquire(sides.source, maxLatencyIncreaseOf(job), run.runKey);
        if (throttler.decision.duty && !prev) adaptive = Math.min(adaptive, SHARED_FIRST_BATCH);
        const backoff = new HardBackoff();
        await withClient(sides.source, (src) =>
          withClient(sides.target, async (tgt) => {
            format = await copyFormat(src, tgt, m);
            if (!prev) deps.logger.info({ job: job.name, range: range.index, format }, 'copy across databases');
            let staged = false;
            const intervals = hasIntegerKey(m) ? new KeyIntervalBatcher(m, range) : undefined;
            for (;;) {
              if (signal?.aborted) throw new CancelledFailure('cancelled');
              const control = await readControl(src, run.runKey);
              throttler.overrideBudget(run.runKey, control.max_latency_increase);
              details.paused = control.paused;
              if (control.paused) {
                heartbeat({ ...details, updatedAt: new Date().toISOString() });
                await sleepMs(1000, signal);
                continue;
              }
              if (control.delay_ms) await sleepMs(control.delay_ms, signal);
              const size = control.batch_size ?? adaptive;
              details.batchSize = size;
              let b: { n: number; end: string | null; last: boolean };
              let ms: number;
              try {
                // A single integer key: the batch's interval sized from the key density seen so far, as the copy
                // within one database does; otherwise the key `size` rows on, found along the key's index.
                const planned = intervals && (await intervals.next(src, details.cursor, size));
                if (planned === null) break;
                const bounds = planned ? { after: planned.after, end: planned.upTo } : { after: details.cursor, size };
                ({ value: b, ms } = await throttler.paced(() =>
                  streamBatch(src, tgt, m, run, bounds, range.upTo, input.lockTimeoutMs, {
                    staged,
                    format,
                    checkpoint: (t, end, n) => advanceCheckpoint(t, key, end, n),
                  }),
                ));
                if (planned) intervals!.result(planned, { rowCount: b.n });
              } catch (e) {
                // The applier wrote a key of the batch meanwhile: the batch goes through the staging table.
                if (sqlState(e) === '23505' && !staged) {
                  staged = true;
                  continue;
                }
                if (!isLockConflict(e) || details.lockConflicts > 1000) throw e;
                details.lockConflicts++;
                details.lastLockConflict = new Date().toISOString();
                await sleepMs(200, signal);
                continue;
              }
              staged = false;
              const decision = throttler.decision;
              if (b.n > 0) adaptive = sizer.next(b.n, ms, size, batchTargetMs(decision, job.targetBatchMs));
              const hard = backoff.next(decision, adaptive, MIN_BATCH);
              adaptive = hard.size;
              details.cursor = b.end;
              details.rowsCopied += b.n;
              rowsThisAttempt += b.n;
              details.batches++;
              details.rowsPerSecond = Math.round((rowsThisAttempt * 1000) / Math.max(1, Date.now() - started));
              details.throttleReason = decision.throttle ? decision.reason : null;
              details.duty = decision.duty;
              details.latencyIncrease = decision.latencyIncrease;
              heartbeat({ ...details, updatedAt: new Date().toISOString() });
              if (b.last) break;
              if (hard.waitMs) await sleepMs(hard.waitMs, signal);
            }
          }),
        ).finally(() => throttler.release(run.runKey));
        await finishCheckpoint(sides.target, key);
        const durationMs = Date.now() - started;
        return {
          job: job.name,
          rangeIndex: range.index,
          rowsCopied: details.rowsCopied,
          batches: details.batches,
          durationMs,
          rowsPerSecond: Math.round((rowsThisAttempt * 1000) / Math.max(1, durationMs)),
          resumed: cp.batches > 0,
          format,
        };
      });
    },
  };
}

const sqlState = (e: unknown) => (e as { code?: string }).code;
const UNIQUE_VIOLATION = '23505';
const UNDEFINED_TABLE = '42P01';
const FOREIGN_KEY_VIOLATION = '23503';
/** How long an applier waits for a referenced row that another job's applier is to bring (see replicate). */
const FOREIGN_KEY_PATIENCE_MS = 5 * 60_000;
/** SQLSTATE of a missing object (here: a slot dropped by the switch to triggers). */
const UNDEFINED_OBJECT = '42704';

/**
 * Streams a COPY out of one session into a COPY in of another, leaving both sessions usable whatever fails: when the
 * write fails (a key the applier wrote meanwhile), the rest of the read is drained so its COPY ends normally; when the
 * read fails, the write is abandoned (CopyFail), so the server ends it with an error.
 */
function pump(out: Readable, into: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    let failed: unknown;
    let outDone = false;
    let intoDone = false;
    const settle = () => {
      if (!outDone || !intoDone) return;
      if (failed) reject(failed);
      else resolve();
    };
    out.once('error', (e) => {
      failed ??= e;
      outDone = true;
      into.destroy(e);
      settle();
    });
    out.once('end', () => {
      outDone = true;
      settle();
    });
    into.once('error', (e) => {
      failed ??= e;
      intoDone = true;
      out.unpipe(into);
      out.resume();
      settle();
    });
    into.once('finish', () => {
      intoDone = true;
      settle();
    });
    into.once('close', () => {
      intoDone = true;
      settle();
    });
    out.pipe(into);
  });
}

/** Types PostgreSQL creates at initdb have OIDs below this: the same type on every server. */
const FIRST_NON_BUILTIN_OID = 10_000;

/**
 * The format batches travel in (see CopyFormat). Binary only where nothing can differ between how the source writes a
 * value and how the target column reads it: both servers of one major version and one encoding (binary text is not
 * converted), and each mapped column's type on the source the very type of its target column, a built-in one (a
 * domain, an enum or a composite has an OID of its own on each server). Otherwise text, which is what it always was.
 */
export async function copyFormat(src: PoolClient, tgt: PoolClient, m: CopyMapping): Promise<CopyFormat> {
  const serverSql = `SELECT current_setting('server_version_num')::int / 10000 AS major, current_setting('server_encoding') AS enc`;
  const [a, b] = [(await src.query(serverSql)).rows[0], (await tgt.query(serverSql)).rows[0]];
  if (a.major !== b.major || a.enc !== b.enc) return 'text';
  const fields = (await src.query(mappedTypesSql(m))).fields;
  const target = new Map(
    (
      await tgt.query(
        `SELECT attname, atttypid::int AS type FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`,
        [quoteTable(m.target)],
      )
    ).rows.map((r) => [r.attname as string, r.type as number]),
  );
  const same = m.columns.every((c, i) => {
    const type = fields[i]?.dataTypeID;
    return type !== undefined && type < FIRST_NON_BUILTIN_OID && target.get(c.target) === type;
  });
  return same ? 'binary' : 'text';
}

/**
 * The largest batch across databases when the plan sets no maxBatchSize. Larger than within one database: a batch
 * streams (nothing of it is held in the worker), and what it holds meanwhile, the job's apply lock shared and a
 * snapshot on the source, only delays the applier for the batch's target duration. At 50,000 rows a 1M-row copy
 * spent 15 % of its time in the batches' fixed part.
 */
const ACROSS_MAX_BATCH = 200_000;

/** Keys a batch leaves out of its COPY by name; with more than this in its range, it goes through the staging table. */
const MAX_LISTED_KEYS = 1000;

/** Where a batch ends: a key given (an interval, see batcher.ts), or `size` rows on, found by the batch itself. */
type BatchBounds = { after: EncodedKey | null; end: EncodedKey | null } | { after: EncodedKey | null; size: number };

/**
 * Copies one batch: the rows after `after`, up to the end given or `size` of them, streamed with COPY from the source
 * into the target under the job's apply lock, taken before the source is read (see "Why the copy is exact" in
 * capture-sql.ts). Rows go straight into the table, less the keys the target holds already, which are overwritten
 * through the session's staging table. With many such keys in the range (or `staged`), the whole batch goes through
 * the staging table. Both streams run at once; the target commits first, then the source lets go.
 */
async function streamBatch(
  src: PoolClient,
  tgt: PoolClient,
  m: CopyMapping,
  run: RunRef,
  bounds: BatchBounds,
  upTo: string | null,
  lockTimeoutMs: number,
  {
    staged,
    format,
    checkpoint,
  }: {
    staged: boolean;
    format: CopyFormat;
    /** Records the batch's end and row count in the target's transaction, committed with the rows. */
    checkpoint: (t: PoolClient, end: string | null, n: number) => Promise<void>;
  },
): Promise<{ n: number; end: string | null; last: boolean }> {
  const { after } = bounds;
  return inTransaction(src, { lockTimeoutMs }, async (s) => {
    let found: string | undefined;
    if ('end' in bounds) found = bounds.end ?? undefined;
    else {
      const endQ = keyAtOffsetQuery(m, after, bounds.size - 1, upTo);
      found = (await s.query(endQ.text, endQ.values)).rows[0]?.k as string | undefined;
    }
    const end = found ?? upTo;
    const n = await inTransaction(tgt, { lockTimeoutMs, settings: applySettings(m.syncId!) }, async (t) => {
      await enterRun(t, run);
      await t.query(applyLockSql(true), [m.syncId]);
      const q = presentKeysQuery(m, after, end, MAX_LISTED_KEYS + 1);
      const present = (await t.query(q.text, q.values)).rows.map((r) => r.k as string);
      const viaStage = async (keys?: BatchKeys) => {
        await t.query(createStageSql(m));
        const into = t.query(copyFrom(copyInSql(stageName(m), m, format)));
        await pump(s.query(copyTo(copyOutSql(m, after, end, keys, format))), into);
        await t.query(unstageSql(m));
        return into.rowCount;
      };
      let n: number;
      if (staged || present.length > MAX_LISTED_KEYS) n = await viaStage();
      else {
        const into = t.query(copyFrom(copyInSql(quoteTable(m.target), m, format)));
        await pump(s.query(copyTo(copyOutSql(m, after, end, { except: present }, format))), into);
        n = into.rowCount + (present.length ? await viaStage({ only: present }) : 0);
      }
      await checkpoint(t, end, n);
      return n;
    });
    return { n, end, last: found === undefined };
  });
}

/** Empties `job`'s target table on the target side, if it is still there (false when it is not). */
async function emptyAcross(c: PoolClient, job: ResolvedCopyJob): Promise<boolean> {
  if (!(await tableExists(c, job.to))) return false;
  await c.query(`TRUNCATE ${quoteTable(parseTableRef(job.to))}`);
  return true;
}
