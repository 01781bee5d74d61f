// Pure SQL builders for the copy engine: keys, batched keyset copy, the settle pass, sync triggers and their removal.
// Each returns text (and values where there are any); identifiers only ever pass through quoteIdent.
import {
  querySyncName,
  SYNC_GUARD_SETTING,
  syncFunctionName,
  syncTriggerName,
  TIDEMARK_SCHEMA,
  writeCountName,
  type SyncDirection,
} from '../../db/names';
import type { FunctionContext } from '../../db/catalog';
import { dollarQuote, quoteIdent, quoteLiteral, quoteTable, type TableRef } from '../../db/quote';
import { PINNED_SETTINGS } from '../../db/settings';

export interface MappedColumn {
  /** Target column name. */
  target: string;
  /** SQL expression over the source row giving the target value. */
  expr: string;
  /** format_type() of the target column. */
  type: string;
}

export interface ReverseColumn {
  /** Source column name. */
  source: string;
  /** SQL expression over the target row giving the source value. */
  expr: string;
}

/** One old table a query job's target rows are written back to (sync: bidirectional); see the plan's writeBack. */
export interface WriteBackTable {
  table: TableRef;
  /** The old table's key columns (a unique index): what an upsert conflicts on. */
  key: string[];
  /** Old table column → expression over the target row `t` (and the unfold alias). */
  columns: { name: string; expr: string }[];
  /** Old table column → expression over the target row: the old rows one target row stands for. */
  owner: { name: string; expr: string }[];
  unfold?: string;
  where?: string;
}

/** One column of a copy key: its name in the source row and in the target, and its type. */
export interface KeyColumn {
  source: string;
  target: string;
  /** format_type() of the key, used to cast cursor values. */
  type: string;
}

export type CopySource = { kind: 'table'; table: TableRef } | { kind: 'query'; sql: string };

/** Everything the builders need to know about one copy job, resolved against the catalog. */
export interface CopyMapping {
  job: string;
  /**
   * Set when the mapping is resolved for a migration run: names the job's sync objects and is its token in the sync
   * guard (db/names.ts syncIdFor). The trigger builders need it; reads (batches, checksums) do not.
   */
  syncId?: string;
  source: CopySource;
  target: TableRef;
  /** The copy key, one column or several, in key order. */
  keys: KeyColumn[];
  /** Target columns and the expressions filling them (key columns and slice columns included). */
  columns: MappedColumn[];
  /** Source columns written back from the target under bidirectional sync (key columns included). */
  reverse: ReverseColumn[];
  /** Query sources under bidirectional sync: where the target's rows are written back, parents first. */
  writeBack: WriteBackTable[];
  /** Sync triggers keep the target in step (sync is not none). */
  syncing: boolean;
  /** Query sources: the tables whose writes are replayed, each with the expressions giving the target rows' keys. */
  syncFrom: { table: TableRef; keyExprs: string[] }[];
  /**
   * When several jobs fill one target, the target columns fixed to a value for this job's rows (its slice): they
   * pick its rows for truncates, settling and validation, and join the key in ON CONFLICT.
   */
  slice: { column: string; value: string }[];
  /** How the trigger functions run (functionClauses), read when the mapping was resolved. */
  functions?: FunctionContext;
}

/**
 * The settings tidemark's trigger functions run with, so that what they write does not depend on the session of the
 * application whose write fires them: the search path the plan's expressions resolve in (temporary schemas last), the
 * database's TimeZone and the value formats every tidemark session pins (db/pool.ts) — a date cast under the writer's
 * TimeZone would otherwise differ from the copy's. And, where the path is safe (FunctionContext.definer), as the role
 * that installed them (SECURITY DEFINER): the application's role then needs no privilege in the tidemark schema or on
 * the other table. Without a context (a mapping built by hand), as the writer, in its session.
 */
export function functionClauses(ctx: FunctionContext | undefined): string {
  if (!ctx) return '';
  const path = [...ctx.searchPath.map(quoteIdent), 'pg_temp'].join(', ');
  const pinned = Object.entries({ TimeZone: ctx.timeZone, ...PINNED_SETTINGS })
    .map(([k, v]) => ` SET ${k} = ${quoteLiteral(v)}`)
    .join('');
  return `${ctx.definer ? ' SECURITY DEFINER' : ''} SET search_path = ${path}${pinned}`;
}

/** Key types whose values are small and whose key space splits into intervals by arithmetic. */
export const INTEGER_KEY_TYPES = new Set(['smallint', 'integer', 'bigint']);

/** Whether the key is a single integer column (as the target has it). */
export function hasIntegerKey(m: CopyMapping): boolean {
  return m.keys.length === 1 && INTEGER_KEY_TYPES.has(m.keys[0].type);
}

export interface Query {
  text: string;
  values: unknown[];
}

// ---- keys -----------------------------------------------------------------------------------------------------

/**
 * A key value as text: one column's value as PostgreSQL prints it, or for a composite key a JSON array of them.
 * Cursors and range bounds are kept in this form (tidemark.copy_progress, heartbeats, workflow state).
 */
export type EncodedKey = string;

export function decodeKey(m: CopyMapping, k: EncodedKey): string[] {
  return m.keys.length === 1 ? [k] : (JSON.parse(k) as string[]);
}

/** SQL giving the encoded key of a row whose key columns are `cols`. */
export function encodedKeySql(m: CopyMapping, cols: string[]): string {
  return m.keys.length === 1
    ? `(${cols[0]})::text`
    : `json_build_array(${cols.map((c) => `(${c})::text`).join(', ')})::text`;
}

export const tuple = (cols: string[]) => (cols.length === 1 ? cols[0] : `(${cols.join(', ')})`);

/** The key columns of a row: `s."id"` (source side) or `t."legacy_id"` (target side). */
export function keyCols(m: CopyMapping, alias: string, side: 'source' | 'target'): string[] {
  return m.keys.map((k) => `${alias}.${quoteIdent(k[side])}`);
}

/** A key value as parameters cast to the key's types: `$1::bigint` or `($1::int, $2::text)`. */
function keyParams(m: CopyMapping, k: EncodedKey, values: unknown[]): string {
  const parts = decodeKey(m, k).map((v, i) => {
    values.push(v);
    return `$${values.length}::${m.keys[i].type}`;
  });
  return tuple(parts);
}

/** `key = value` over a row's key columns. */
export function keyEquals(
  m: CopyMapping,
  alias: string,
  side: 'source' | 'target',
  k: EncodedKey,
  values: unknown[],
): string {
  return `${tuple(keyCols(m, alias, side))} = ${keyParams(m, k, values)}`;
}

/** `key > after AND key <= upTo` over a row's key columns (row comparison: composite keys in index order). */
export function keyBounds(
  m: CopyMapping,
  alias: string,
  side: 'source' | 'target',
  after: EncodedKey | null,
  upTo: EncodedKey | null,
  values: unknown[],
): string[] {
  const k = tuple(keyCols(m, alias, side));
  const where: string[] = [];
  if (after !== null) where.push(`${k} > ${keyParams(m, after, values)}`);
  if (upTo !== null) where.push(`${k} <= ${keyParams(m, upTo, values)}`);
  return where;
}

export const whereOf = (parts: string[]) => (parts.length ? ` WHERE ${parts.join(' AND ')}` : '');

/** The job's rows of its target (alias t): its slice, or all of them. */
export function slicePredicate(m: CopyMapping, alias = 't'): string[] {
  return m.slice.map((s) => `${alias}.${quoteIdent(s.column)} IS NOT DISTINCT FROM (${s.value})`);
}

/** The target's conflict columns: the slice's columns, then the key's. */
function conflictColumns(m: CopyMapping): string[] {
  return [...m.slice.map((s) => s.column), ...m.keys.map((k) => k.target)];
}

export function sourceFrom(m: CopyMapping): string {
  return m.source.kind === 'table' ? `${quoteTable(m.source.table)} AS s` : `(${stripSemicolon(m.source.sql)}) AS s`;
}

function stripSemicolon(sql: string): string {
  return sql.trim().replace(/;\s*$/, '');
}

/** `col1, col2, …` of the target columns. */
function targetList(m: CopyMapping): string {
  return m.columns.map((c) => quoteIdent(c.target)).join(', ');
}

/** `expr1 AS "col1", …`: the mapping evaluated over a source row aliased `s`. */
export function mappedSelectList(m: CopyMapping, cast = false): string {
  return m.columns
    .map((c) => `${cast ? `(${c.expr})::${c.type}` : `(${c.expr})`} AS ${quoteIdent(c.target)}`)
    .join(', ');
}

function upsertTail(conflict: string[], cols: string[]): string {
  const sets = cols.filter((c) => !conflict.includes(c)).map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`);
  const target = `(${conflict.map(quoteIdent).join(', ')})`;
  return sets.length ? `ON CONFLICT ${target} DO UPDATE SET ${sets.join(', ')}` : `ON CONFLICT ${target} DO NOTHING`;
}

// ---- batches --------------------------------------------------------------------------------------------------

/**
 * How a batch treats a key the target already holds (a sync trigger wrote it ahead of the cursor):
 * - `fail`: plain INSERT, the fast path — most batches meet no such key; on a unique violation the batch is redone
 * - `update`: upsert, so batch and target converge on the source's current row (no sync)
 * - `nothing`: keep the target's row (synced jobs: a trigger wrote it from a state at least as new as the batch read)
 */
export type ConflictMode = 'fail' | 'update' | 'nothing';

function conflictClause(m: CopyMapping, mode: ConflictMode): string {
  if (mode === 'fail') return '';
  if (mode === 'nothing') return ` ON CONFLICT (${conflictColumns(m).map(quoteIdent).join(', ')}) DO NOTHING`;
  return ` ${upsertTail(
    conflictColumns(m),
    m.columns.map((c) => c.target),
  )}`;
}

/** The mode to fall back to when the fast path meets a key the target already holds. */
export function slowConflictMode(m: CopyMapping): ConflictMode {
  return m.syncing ? 'nothing' : 'update';
}

/** Whether the target already holds rows of this job in the interval (written by triggers ahead of the cursor). */
export function targetHasRowsQuery(m: CopyMapping, after: EncodedKey | null, upTo: EncodedKey): Query {
  const values: unknown[] = [];
  const where = [...keyBounds(m, 't', 'target', after, upTo, values), ...slicePredicate(m)];
  return { text: `SELECT EXISTS (SELECT 1 FROM ${quoteTable(m.target)} AS t${whereOf(where)}) AS x`, values };
}

/*
 * Why the copy is exact while the application writes. The sync triggers are installed and committed before any batch
 * runs, so every write from then on is replayed into the target in its own transaction; a batch copies what its
 * snapshot shows, without locking what it reads. Two races remain:
 *  - a newer version written by a trigger must not be overwritten by the batch's older one: the batch never
 *    overwrites (plain INSERT, or ON CONFLICT DO NOTHING), and a trigger whose key the batch has inserted but not
 *    committed waits on the unique index, then overwrites it;
 *  - a row that leaves the source after the batch's snapshot (deleted, its key changed, no longer yielded by a query
 *    source) can be written by the batch after its trigger found nothing to delete: once every range is copied, the
 *    settle pass (settleQuery) deletes the target rows of the job whose key the source no longer has. No batch runs
 *    then, so nothing can bring such a row back. The pass starts once every transaction open when it begins has ended:
 *    a write that removed a row before the last batch read it, in a transaction still open, is invisible to the pass
 *    until it commits. For a table source the pass looks only at the keys the triggers logged as leaving the source
 *    (settleLoggedQuery): every such write logs in its own transaction, so once those transactions have ended the log
 *    holds every key that can have such a row. A write after that sees every batch (its snapshot is newer), finds the
 *    rows it removes, and needs no log: the pass then installs the functions again without it.
 * Query sources recompute the target rows of the keys a write touches (querySyncTriggerDdl), under a per-key lock so
 * two transactions writing different tables of one target row recompute it one after the other.
 */

/**
 * One batch over a key interval (a single integer key): every source row with after < key <= upTo, written through the
 * mapping. No ORDER BY, LIMIT or CTE — as cheap as the database's own INSERT … SELECT. Rows written = rowCount.
 */
export function rangeBatchQuery(m: CopyMapping, after: EncodedKey | null, upTo: EncodedKey, mode: ConflictMode): Query {
  const values: unknown[] = [];
  const where = keyBounds(m, 's', 'source', after, upTo, values);
  const text =
    `INSERT INTO ${quoteTable(m.target)} (${targetList(m)}) SELECT ${mappedSelectList(m)} FROM ${sourceFrom(m)}` +
    `${whereOf(where)}${conflictClause(m, mode)}`;
  return { text, values };
}

/** One batch of the next `limit` rows in key order (any orderable key): how many rows it read and the last key. */
export function limitBatchQuery(
  m: CopyMapping,
  after: EncodedKey | null,
  upTo: EncodedKey | null,
  limit: number,
  mode: ConflictMode,
): Query {
  const values: unknown[] = [limit];
  const where = keyBounds(m, 's', 'source', after, upTo, values);
  const src = keyCols(m, 's', 'source');
  const order = src.join(', ');
  const hidden = src.map((c, i) => `${c} AS __tidemark_k${i}`).join(', ');
  const bk = m.keys.map((_, i) => `b.__tidemark_k${i}`);
  const text =
    `WITH batch AS (SELECT ${hidden}, ${mappedSelectList(m)} FROM ${sourceFrom(m)}${whereOf(where)} ORDER BY ${order} LIMIT $1), ` +
    `ins AS (INSERT INTO ${quoteTable(m.target)} (${targetList(m)}) SELECT ${targetList(m)} FROM batch${conflictClause(m, mode)}) ` +
    `SELECT (SELECT count(*) FROM batch)::int AS rows, ` +
    `(SELECT ${encodedKeySql(m, bk)} FROM batch AS b ORDER BY ${bk.map((c) => `${c} DESC`).join(', ')} LIMIT 1) AS last_key`;
  return { text, values };
}

/**
 * Lowest and highest key of the source (encoded), for range batching and range planning; null when the source is
 * empty. ORDER BY … LIMIT 1 rather than min()/max(): it works for every orderable key type (uuid has no max()) and
 * reads one end of the key's index either way.
 */
export function keyExtentQuery(m: CopyMapping, after: EncodedKey | null, upTo: EncodedKey | null): Query {
  const values: unknown[] = [];
  const src = keyCols(m, 's', 'source');
  const where = [...keyBounds(m, 's', 'source', after, upTo, values), ...src.map((c) => `${c} IS NOT NULL`)];
  const scan = (dir: string) =>
    `(SELECT ${encodedKeySql(m, src)} FROM ${sourceFrom(m)}${whereOf(where)} ORDER BY ${src.map((c) => `${c} ${dir}`).join(', ')} LIMIT 1)`;
  return { text: `SELECT ${scan('ASC')} AS lo, ${scan('DESC')} AS hi`, values };
}

/**
 * The key `offset` rows after `after` in key order, up to `upTo` (null when fewer rows remain): chunk, range and batch
 * boundaries.
 */
export function keyAtOffsetQuery(
  m: CopyMapping,
  after: EncodedKey | null,
  offset: number,
  upTo: EncodedKey | null = null,
): Query {
  const values: unknown[] = [offset];
  const src = keyCols(m, 's', 'source');
  const where = [...keyBounds(m, 's', 'source', after, upTo, values), ...src.map((c) => `${c} IS NOT NULL`)];
  return {
    text: `SELECT ${encodedKeySql(m, src)} AS k FROM ${sourceFrom(m)}${whereOf(where)} ORDER BY ${src.join(', ')} OFFSET $1 LIMIT 1`,
    values,
  };
}

/**
 * The settle pass, one key interval: deletes this job's target rows whose key the source no longer has (see "Why the
 * copy is exact"). Run in REPEATABLE READ: a row that a concurrent write changes meanwhile makes it fail with a
 * serialization error and retry, instead of deleting a row the write just brought back.
 */
export function settleQuery(m: CopyMapping, after: EncodedKey | null, upTo: EncodedKey | null): Query {
  const values: unknown[] = [];
  const tWhere = [...keyBounds(m, 't', 'target', after, upTo, values), ...slicePredicate(m)];
  const sWhere = keyBounds(m, 's', 'source', after, upTo, values);
  const match = m.keys.map((k) => `src.${quoteIdent(k.source)} = t.${quoteIdent(k.target)}`).join(' AND ');
  const srcKeys = keyCols(m, 's', 'source').join(', ');
  return {
    text:
      `DELETE FROM ${quoteTable(m.target)} AS t${whereOf(tWhere)}${tWhere.length ? ' AND' : ' WHERE'} NOT EXISTS ` +
      `(SELECT 1 FROM (SELECT ${srcKeys} FROM ${sourceFrom(m)}${whereOf(sWhere)}) AS src WHERE ${match})`,
    values,
  };
}

/**
 * One chunk of the settle pass's work list (sync_removals): the next `limit` keys logged after `afterSeq` as leaving
 * the source; the job's target rows of those keys that the source does not hold are deleted. Answers the chunk's last
 * seq (null when the list is done), how many keys it held and how many rows went. A one-column integer key is matched
 * `= ANY (ARRAY(…))`, an index scan however the planner guesses the chunk's size (see tableSyncDdl).
 */
export function settleLoggedQuery(m: CopyMapping, afterSeq: string, limit: number): Query {
  const typed = m.keys.map((k, i) => `(r.key${m.keys.length === 1 ? " #>> '{}'" : `->>${i}`})::${k.type}`);
  const logged = `SELECT ${typed.join(', ')} FROM chunk AS r`;
  const inLog = hasIntegerKey(m)
    ? `t.${quoteIdent(m.keys[0].target)} = ANY (ARRAY(${logged}))`
    : `${tuple(keyCols(m, 't', 'target'))} IN (${logged})`;
  const match = m.keys.map((k) => `s.${quoteIdent(k.source)} = t.${quoteIdent(k.target)}`).join(' AND ');
  return {
    text: `WITH chunk AS MATERIALIZED (
        SELECT seq, key FROM ${quoteIdent(TIDEMARK_SCHEMA)}.sync_removals
         WHERE sync_id = $1 AND seq > $2 ORDER BY seq LIMIT $3),
      gone AS (
        DELETE FROM ${quoteTable(m.target)} AS t
         WHERE ${[inLog, ...slicePredicate(m)].join(' AND ')}
           AND NOT EXISTS (SELECT 1 FROM ${sourceFrom(m)} WHERE ${match})
        RETURNING 1)
      SELECT (SELECT max(seq) FROM chunk)::text AS last, (SELECT count(*) FROM chunk)::int AS n,
        (SELECT count(*) FROM gone)::int AS removed`,
    values: [syncIdOf(m), afterSeq, limit],
  };
}

// ---- sync triggers --------------------------------------------------------------------------------------------

/*
 * The sync guard: a session setting holding the comma-separated sync ids (one per job and run) whose sync writes are
 * in progress. A trigger of job J skips when J is already in it (J's own write coming back: no ping-pong), adds J
 * while it writes, and puts the previous value back afterwards — so another job's triggers still see the write
 * (chained syncs stay in step) and an outer write's guard is not lost. The copy of J sets it to J for its own
 * transactions. Ids, not job names: two migrations' jobs may share a name and must not silence each other.
 */
const GUARD = quoteLiteral(SYNC_GUARD_SETTING);
const guardDeclare = 'guard_prev text := coalesce(current_setting(' + GUARD + ", true), '');";
const guardEnter = (id: string) =>
  `IF position(${quoteLiteral(`,${id},`)} in ',' || guard_prev || ',') > 0 THEN RETURN NULL; END IF;
  PERFORM set_config(${GUARD}, CASE WHEN guard_prev = '' THEN ${quoteLiteral(id)} ELSE guard_prev || ${quoteLiteral(`,${id}`)} END, true);`;
const guardLeave = `PERFORM set_config(${GUARD}, guard_prev, true);`;

function functionRef(job: string, syncId: string, dir: SyncDirection): string {
  return `${quoteIdent(TIDEMARK_SCHEMA)}.${quoteIdent(syncFunctionName(job, syncId, dir))}`;
}

function syncIdOf(m: CopyMapping): string {
  if (!m.syncId) throw new Error(`copy job "${m.job}": sync objects need the mapping resolved for a migration run`);
  return m.syncId;
}

/** A function body and the statement triggers (insert, update, delete, truncate) that run it on `table`. */
function statementTriggers(
  fn: string,
  name: (kind: 'ins' | 'upd' | 'del' | 'truncate') => string,
  table: string,
  body: string,
  functions: FunctionContext | undefined,
) {
  const trigger = (kind: 'ins' | 'upd' | 'del' | 'truncate', event: string, transition: string) => [
    `DROP TRIGGER IF EXISTS ${quoteIdent(name(kind))} ON ${table}`,
    `CREATE TRIGGER ${quoteIdent(name(kind))} AFTER ${event} ON ${table}${transition} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`,
  ];
  return [
    `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql${functionClauses(functions)} AS ${dollarQuote(body)}`,
    ...trigger('ins', 'INSERT', ' REFERENCING NEW TABLE AS new_rows'),
    ...trigger('upd', 'UPDATE', ' REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'),
    ...trigger('del', 'DELETE', ' REFERENCING OLD TABLE AS old_rows'),
    ...trigger('truncate', 'TRUNCATE', ''),
  ];
}

interface TableSync {
  job: string;
  syncId: string;
  direction: SyncDirection;
  /** Table whose writes are replayed, and the table they are replayed into (quoted). */
  from: string;
  to: string;
  /** Key columns: in `from` and in `to`. */
  keys: { from: string; to: string }[];
  /** The key is one integer column (see targetRowsIn). */
  integerKey: boolean;
  /** Columns written on `to`, each an expression over the `from` row (key columns included). */
  columns: { name: string; expr: string }[];
  /** Columns of `to` that pick this job's rows (truncate) and join the key in ON CONFLICT. */
  slice: { column: string; value: string }[];
  /**
   * Columns of `from` that pick this job's rows (the reverse sync of a job with a slice): rows of the other jobs
   * sharing the table are not replayed, and a row leaving the slice counts as deleted.
   */
  fromSlice?: { column: string; value: string }[];
  /**
   * Log the keys of the rows that leave the copy's source set (sync_removals, see settleCopy): set while the copy has
   * not settled yet; the settle pass installs the function again without it.
   */
  logRemovals: boolean;
  /** See CopyMapping.functions. */
  functions: FunctionContext | undefined;
  /**
   * Replay only while `to` exists (a rollback's forward sync, kept until its schema undo drops the target): a write to
   * `from` after the drop would otherwise fail on the missing table.
   */
  whileTargetExists?: boolean;
}

/**
 * Statement triggers replaying every write on one table into another, in the same transaction, set by set: an insert
 * of 10,000 rows is one INSERT … SELECT from its transition table, a delete one DELETE … USING — no per-row call, no
 * subtransaction.
 */
function tableSyncDdl(r: TableSync): string[] {
  const cols = r.columns.map((c) => quoteIdent(c.name)).join(', ');
  const exprs = r.columns.map((c) => `(${c.expr}) AS ${quoteIdent(c.name)}`).join(', ');
  const conflict = [...r.slice.map((s) => s.column), ...r.keys.map((k) => k.to)];
  const inSlice = (slice: { column: string; value: string }[], alias: string) =>
    slice.map((s) => ` AND ${alias}.${quoteIdent(s.column)} IS NOT DISTINCT FROM (${s.value})`).join('');
  const sliceOf = (alias: string) => inSlice(r.slice, alias);
  const fromSliceOf = (alias: string) => inSlice(r.fromSlice ?? [], alias);
  const upsert = `INSERT INTO ${r.to} (${cols}) SELECT ${exprs} FROM new_rows AS s WHERE true${fromSliceOf('s')} ${upsertTail(
    conflict,
    r.columns.map((c) => c.name),
  )};`;
  const match = (a: string, b: string, aSide: 'from' | 'to', bSide: 'from' | 'to') =>
    r.keys.map((k) => `${a}.${quoteIdent(k[aSide])} = ${b}.${quoteIdent(k[bSide])}`).join(' AND ');
  // The target's rows whose keys are among `keysOf`'s, found by probing the target's key index. Joined `USING` the
  // transition table, the planner merge-joined against a scan of the whole target index instead, so a 10,000-row
  // DELETE cost as much as reading the table. A one-column integer key is matched `= ANY (ARRAY(…))`: one index scan
  // over the sorted keys, half again as fast as `IN (…)`, which hashes the keys and probes in hash order
  // (bench/triggers.js). Only integers: the array is built whole in memory (at most 1 GB), which a statement of a
  // hundred million 8-byte keys still fits, and long text keys would not; `IN (…)` spills to disk instead.
  const targetRowsIn = (keysOf: string) => {
    const keys = `SELECT ${r.keys.map((k) => `o.${quoteIdent(k.from)}`).join(', ')} FROM ${keysOf}`;
    return r.integerKey
      ? `d.${quoteIdent(r.keys[0].to)} = ANY (ARRAY(${keys}))`
      : `${tuple(r.keys.map((k) => `d.${quoteIdent(k.to)}`))} IN (${keys})`;
  };
  // The keys leaving the copy's source set, logged for the settle pass as jsonb: dates and times in ISO form whatever
  // the writer's DateStyle, which their text form would follow. The key's values are the same on both sides, so `o`'s
  // key columns name it whichever way the sync runs.
  const removals = `${quoteIdent(TIDEMARK_SCHEMA)}.sync_removals`;
  const oKeys = r.keys.map((k) => `o.${quoteIdent(k.from)}`);
  const encoded = oKeys.length === 1 ? `to_jsonb(${oKeys[0]})` : `jsonb_build_array(${oKeys.join(', ')})`;
  const logged = (rows: string) =>
    r.logRemovals
      ? `INSERT INTO ${removals} (sync_id, key) SELECT ${quoteLiteral(r.syncId)}, ${encoded} FROM ${rows};`
      : '';
  const changed = `old_rows AS o WHERE NOT EXISTS (SELECT 1 FROM new_rows AS n WHERE ${match('n', 'o', 'from', 'from')}${fromSliceOf('n')})${fromSliceOf('o')}`;
  const deleted = `old_rows AS o WHERE true${fromSliceOf('o')}`;
  // A rollback's forward sync (whileTargetExists): a write that waited on the lock of the target's DROP meets a table
  // that is gone. The application's write goes through; only that replay is left out (in a subtransaction: one per
  // statement, and only while a rollback runs).
  const gone = `to_regclass(${quoteLiteral(r.to)}) IS NULL`;
  const [tryOpen, tryClose] = r.whileTargetExists
    ? [
        `IF ${gone} THEN ${guardLeave} RETURN NULL; END IF;
  BEGIN`,
        `EXCEPTION WHEN OTHERS THEN
    IF ${gone} THEN ${guardLeave} RETURN NULL; END IF;
    RAISE;
  END;`,
      ]
    : ['', ''];
  const body = `
DECLARE
  ${guardDeclare}
BEGIN
  ${guardEnter(r.syncId)}
  ${tryOpen}
  IF TG_OP = 'TRUNCATE' THEN
    ${r.logRemovals ? `INSERT INTO ${removals} (sync_id, key) VALUES (${quoteLiteral(r.syncId)}, NULL);` : ''}
    DELETE FROM ${r.to} AS d WHERE true${sliceOf('d')};
  ELSIF TG_OP = 'INSERT' THEN
    ${upsert}
  ELSIF TG_OP = 'UPDATE' THEN
    -- Keys that changed (or rows that left the slice): their old rows go.
    ${logged(changed)}
    DELETE FROM ${r.to} AS d WHERE ${targetRowsIn(changed)}${sliceOf('d')};
    ${upsert}
  ELSE
    ${logged(deleted)}
    DELETE FROM ${r.to} AS d WHERE ${targetRowsIn(deleted)}${sliceOf('d')};
  END IF;
  ${tryClose}
  ${guardLeave}
  RETURN NULL;
END`;
  const fn = functionRef(r.job, r.syncId, r.direction);
  return statementTriggers(
    fn,
    (kind) => syncTriggerName(r.job, r.syncId, r.direction, kind),
    r.from,
    body,
    r.functions,
  );
}

/**
 * The sync's trigger functions as they stay once the copy has settled: without logging removals. Only the functions
 * (CREATE OR REPLACE), not the triggers, so nothing waits for a lock on the tables.
 */
export function settledFunctionsDdl(m: CopyMapping, bidirectional: boolean): string[] {
  const fns = [forwardTriggerDdl(m)[0], ...(bidirectional ? [reverseTriggerDdl(m)[0]] : [])];
  for (const f of fns) if (!f.startsWith('CREATE OR REPLACE FUNCTION')) throw new Error(`not a function: ${f}`);
  return fns;
}

/**
 * A rollback's forward sync: the same triggers, their function replaced by one that replays only while the target
 * exists (its schema undo drops it). Kept with the reverse sync until the rollback's end, the old and the new table stay
 * in step while both take writes: dropped first, a write on the old table after it was overwritten by the next write
 * on the new path with the new table's stale row.
 */
export function rollbackForwardFunctionDdl(m: CopyMapping): string {
  const fn = forwardTriggerDdl(m, false, true)[0];
  if (!fn.startsWith('CREATE OR REPLACE FUNCTION')) throw new Error(`not a function: ${fn}`);
  return fn;
}

/** Whether a sync of `m` logs removals until its copy settles: a table source (a query source settles by a full pass). */
function logsRemovals(m: CopyMapping, settling: boolean): boolean {
  return settling && m.source.kind === 'table';
}

/**
 * Forward sync: every write to the source table is replayed into the target through the mapping. `settling`: the copy
 * has not settled yet, so the keys of the rows that leave the source are logged too.
 */
export function forwardTriggerDdl(m: CopyMapping, settling = false, whileTargetExists = false): string[] {
  if (m.source.kind !== 'table') throw new Error('forward triggers need a table source');
  return tableSyncDdl({
    whileTargetExists,
    job: m.job,
    syncId: syncIdOf(m),
    direction: 'forward',
    from: quoteTable(m.source.table),
    to: quoteTable(m.target),
    keys: m.keys.map((k) => ({ from: k.source, to: k.target })),
    integerKey: hasIntegerKey(m),
    columns: m.columns.map((c) => ({ name: c.target, expr: c.expr })),
    slice: m.slice,
    logRemovals: logsRemovals(m, settling),
    functions: m.functions,
  });
}

/**
 * Reverse sync (bidirectional): writes made on the target are replayed into the source through `reverse` (a table
 * source) or into the old tables through `writeBack` (a query source).
 */
export function reverseTriggerDdl(m: CopyMapping, settling = false): string[] {
  if (m.source.kind !== 'table') return writeBackTriggerDdl(m);
  return tableSyncDdl({
    job: m.job,
    syncId: syncIdOf(m),
    direction: 'reverse',
    from: quoteTable(m.target),
    to: quoteTable(m.source.table),
    keys: m.keys.map((k) => ({ from: k.target, to: k.source })),
    integerKey: hasIntegerKey(m),
    columns: m.reverse.map((r) => ({ name: r.source, expr: r.expr })),
    slice: [],
    fromSlice: m.slice,
    logRemovals: logsRemovals(m, settling),
    functions: m.functions,
  });
}

/** The advisory lock a sync takes per target key before recomputing or writing back its rows (see querySyncTriggerDdl). */
function keyLocks(syncId: string, keysJson: string): string {
  return `PERFORM pg_advisory_xact_lock(hashtextextended(${quoteLiteral(`${syncId}:`)} || x.k::text, 0))
       FROM jsonb_array_elements(${keysJson}) AS x(k) ORDER BY x.k::text;`;
}

/** A key as the jsonb array of its values as text: how the forward and the reverse sync name a key to lock it. */
const keyJson = (exprs: string[]) => `jsonb_build_array(${exprs.map((e) => `(${e})::text`).join(', ')})`;

/**
 * Reverse sync of a query source: a write to the target writes its rows back to each old table of `writeBack`, in the
 * same transaction. For each table, the old rows the touched target rows stand for (`owner`, before and after the
 * write) that the new rows no longer yield are deleted — children before parents, so newest entry first — and the rows
 * they yield are upserted on the old table's key, parents first. Updating in place (not delete and insert) keeps the
 * old rows that reference them. The target keys are locked as the forward sync locks them, so a write on each path to
 * one row is applied one after the other. The expressions see the target row's columns (alias `t`) and, with `unfold`,
 * that item's columns; they are evaluated in CTEs (named so that no plan's table is shadowed), where no outer row can
 * capture a name.
 */
function writeBackTriggerDdl(m: CopyMapping): string[] {
  const syncId = syncIdOf(m);
  const tgtKeys = m.keys.map((k) => `t.${quoteIdent(k.target)}`);
  const rowsOf = (w: WriteBackTable, rows: string) =>
    `${rows} AS t${w.unfold ? ` CROSS JOIN LATERAL ${w.unfold}` : ''}${w.where ? ` WHERE (${w.where})` : ''}`;
  // With `where` only those rows (the optional side of a join has a row for them), except where the target row is
  // gone (deleted, or its key changed): every old row it stood for goes then, or a parent's delete would meet its child.
  const ownersOf = (w: WriteBackTable, rows: string, filtered = true) =>
    `SELECT ${w.owner.map((o, i) => `(${o.expr}) AS o${i}`).join(', ')} FROM ${rows} AS t${filtered && w.where ? ` WHERE (${w.where})` : ''}`;
  const goneOwners = (w: WriteBackTable) =>
    `${ownersOf(w, 'old_rows', false)} WHERE NOT EXISTS (SELECT 1 FROM new_rows AS n WHERE ${m.keys
      .map((k) => `n.${quoteIdent(k.target)} = t.${quoteIdent(k.target)}`)
      .join(' AND ')})`;
  type Owners = (w: WriteBackTable) => string;
  const inserted: Owners = (w) => ownersOf(w, 'new_rows');
  const updated: Owners = (w) =>
    w.where
      ? [ownersOf(w, 'old_rows'), ownersOf(w, 'new_rows'), goneOwners(w)].join(' UNION ')
      : [ownersOf(w, 'old_rows'), ownersOf(w, 'new_rows')].join(' UNION ');
  const deleted: Owners = (w) => ownersOf(w, 'old_rows', false);
  const keyExpr = (w: WriteBackTable, k: string) => w.columns.find((c) => c.name === k)!.expr;
  const del = (w: WriteBackTable, ownersFor: Owners, yielded: boolean) => {
    const owners = ownersFor(w);
    const produced = `SELECT ${w.key.map((k, i) => `(${keyExpr(w, k)}) AS k${i}`).join(', ')} FROM ${rowsOf(w, 'new_rows')}`;
    const kept = yielded
      ? ` AND NOT EXISTS (SELECT 1 FROM tidemark_yield WHERE ${w.key.map((k, i) => `tidemark_yield.k${i} = d.${quoteIdent(k)}`).join(' AND ')})`
      : '';
    return (
      `WITH tidemark_owners AS (${owners})${yielded ? `, tidemark_yield AS (${produced})` : ''} DELETE FROM ${quoteTable(w.table)} AS d ` +
      `WHERE ${tuple(w.owner.map((c) => `d.${quoteIdent(c.name)}`))} IN (SELECT * FROM tidemark_owners)${kept};`
    );
  };
  const upsert = (w: WriteBackTable) =>
    `INSERT INTO ${quoteTable(w.table)} (${w.columns.map((c) => quoteIdent(c.name)).join(', ')}) ` +
    `SELECT ${w.columns.map((c) => `(${c.expr})`).join(', ')} FROM ${rowsOf(w, 'new_rows')} ${upsertTail(
      w.key,
      w.columns.map((c) => c.name),
    )};`;
  const newestFirst = [...m.writeBack].reverse();
  const apply = (ownersFor: Owners, yielded: boolean) =>
    [...newestFirst.map((w) => del(w, ownersFor, yielded)), ...(yielded ? m.writeBack.map((w) => upsert(w)) : [])].join(
      '\n    ',
    );
  // The target keys the write touched, locked in key order; then the old rows they stand for are written.
  const lockThenApply = (rows: string[], ownersFor: Owners, yielded: boolean) =>
    `SELECT jsonb_agg(DISTINCT k) INTO touched FROM (${rows
      .map((r) => `SELECT ${keyJson(tgtKeys)} AS k FROM ${r} AS t`)
      .join(' UNION ')}) AS c;
    ${keyLocks(syncId, 'touched')}
    ${apply(ownersFor, yielded)}`;
  const body = `
DECLARE
  ${guardDeclare}
  touched jsonb;
BEGIN
  ${guardEnter(syncId)}
  IF TG_OP = 'TRUNCATE' THEN
    ${newestFirst.map((w) => `DELETE FROM ${quoteTable(w.table)};`).join('\n    ')}
  ELSIF TG_OP = 'INSERT' THEN
    ${lockThenApply(['new_rows'], inserted, true)}
  ELSIF TG_OP = 'UPDATE' THEN
    ${lockThenApply(['old_rows', 'new_rows'], updated, true)}
  ELSE
    ${lockThenApply(['old_rows'], deleted, false)}
  END IF;
  ${guardLeave}
  RETURN NULL;
END`;
  const fn = functionRef(m.job, syncId, 'reverse');
  return statementTriggers(
    fn,
    (kind) => syncTriggerName(m.job, syncId, 'reverse', kind),
    quoteTable(m.target),
    body,
    m.functions,
  );
}

/**
 * Query sources: a write to any table the query reads recomputes the target rows of the keys it touches (before and
 * after): delete those the query no longer yields, upsert what it yields now. The keys are locked first (a
 * transaction-scoped advisory lock per key, in key order), and the recomputation runs in statements after the lock,
 * so each sees what the previous writer of the same target row committed: two transactions changing different tables
 * of one row recompute it one after the other instead of each from its own stale view. Aggregates, outer joins,
 * UNION and DISTINCT are fine: nothing is locked in the source.
 */
export function querySyncTriggerDdl(m: CopyMapping): string[] {
  if (m.source.kind !== 'query') throw new Error('query sync triggers need a query source');
  const syncId = syncIdOf(m);
  const query = stripSemicolon(m.source.sql);
  const tgt = quoteTable(m.target);
  const keysOf = (rows: string, exprs: string[]) => `SELECT ${keyJson(exprs)} AS k FROM ${rows} AS s`;
  // The touched keys as rows of typed values: joined to the target's and the query's key columns.
  const typed = `SELECT ${m.keys.map((k, i) => `(x.k->>${i})::${k.type} AS k${i}`).join(', ')} FROM jsonb_array_elements(touched) AS x(k)`;
  const inTouched = (cols: string[]) => `${tuple(cols)} IN (${typed})`;
  const out: string[] = [];
  m.syncFrom.forEach((src, i) => {
    const nonNull = src.keyExprs.map((e) => `(${e}) IS NOT NULL`).join(' AND ');
    const collect = (rows: string) => `${keysOf(rows, src.keyExprs)} WHERE ${nonNull}`;
    const body = `
DECLARE
  ${guardDeclare}
  touched jsonb;
BEGIN
  ${guardEnter(syncId)}
  IF TG_OP = 'TRUNCATE' THEN
    DELETE FROM ${tgt} AS t WHERE true${slicePredicate(m)
      .map((p) => ` AND ${p}`)
      .join('')};
    INSERT INTO ${tgt} (${targetList(m)}) SELECT ${mappedSelectList(m)} FROM (${query}) AS s
    ${upsertTail(
      conflictColumns(m),
      m.columns.map((c) => c.target),
    )};
    ${guardLeave}
    RETURN NULL;
  ELSIF TG_OP = 'INSERT' THEN
    SELECT jsonb_agg(DISTINCT k) INTO touched FROM (${collect('new_rows')}) AS c;
  ELSIF TG_OP = 'UPDATE' THEN
    SELECT jsonb_agg(DISTINCT k) INTO touched FROM (${collect('old_rows')} UNION ${collect('new_rows')}) AS c;
  ELSE
    SELECT jsonb_agg(DISTINCT k) INTO touched FROM (${collect('old_rows')}) AS c;
  END IF;
  IF touched IS NOT NULL THEN
    ${keyLocks(syncId, 'touched')}
    -- Rows the query no longer yields go; the others are updated in place, so an application's write to the same
    -- row on the new path waits for this one and then applies on top of it (a delete and insert would make it miss).
    DELETE FROM ${tgt} AS t WHERE ${inTouched(keyCols(m, 't', 'target'))}${slicePredicate(m)
      .map((p) => ` AND ${p}`)
      .join('')}
       AND ${tuple(keyCols(m, 't', 'target'))} NOT IN (SELECT ${keyCols(m, 's', 'source').join(', ')} FROM (${query}) AS s
                                 WHERE ${inTouched(keyCols(m, 's', 'source'))});
    INSERT INTO ${tgt} (${targetList(m)}) SELECT ${mappedSelectList(m)} FROM (${query}) AS s
     WHERE ${inTouched(keyCols(m, 's', 'source'))}
    ${upsertTail(
      conflictColumns(m),
      m.columns.map((c) => c.target),
    )};
  END IF;
  ${guardLeave}
  RETURN NULL;
END`;
    const fn = `${quoteIdent(TIDEMARK_SCHEMA)}.${quoteIdent(querySyncName(m.job, syncId, i, 'function'))}`;
    out.push(
      ...statementTriggers(
        fn,
        (kind) => querySyncName(m.job, syncId, i, 'trigger', kind),
        quoteTable(src.table),
        body,
        m.functions,
      ),
    );
  });
  return out;
}

/**
 * For a job whose plan accepts losing the new path's writes (discardNewPathWrites): statement triggers on the target
 * count the application's writes — not the job's own copy and sync, which carry its guard — so a rollback can say how
 * many rows it discarded. One row per statement, no shared counter to contend on.
 */
export function writeCountDdl(m: CopyMapping, runKey: string): string[] {
  const syncId = syncIdOf(m);
  const fn = `${quoteIdent(TIDEMARK_SCHEMA)}.${quoteIdent(writeCountName(m.job, syncId, 'function'))}`;
  const log = `${quoteIdent(TIDEMARK_SCHEMA)}.new_path_writes`;
  const body = `
DECLARE
  ${guardDeclare}
BEGIN
  IF position(${quoteLiteral(`,${syncId},`)} in ',' || guard_prev || ',') > 0 THEN RETURN NULL; END IF;
  IF TG_OP = 'DELETE' THEN
    INSERT INTO ${log} (run_key, job, op, rows) SELECT ${quoteLiteral(runKey)}, ${quoteLiteral(m.job)}, TG_OP, count(*) FROM old_rows;
  ELSE
    INSERT INTO ${log} (run_key, job, op, rows) SELECT ${quoteLiteral(runKey)}, ${quoteLiteral(m.job)}, TG_OP, count(*) FROM new_rows;
  END IF;
  RETURN NULL;
END`;
  const tgt = quoteTable(m.target);
  const trigger = (what: 'ins' | 'upd' | 'del', event: string, table: string) => [
    `DROP TRIGGER IF EXISTS ${quoteIdent(writeCountName(m.job, syncId, what))} ON ${tgt}`,
    `CREATE TRIGGER ${quoteIdent(writeCountName(m.job, syncId, what))} AFTER ${event} ON ${tgt} REFERENCING ${table} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`,
  ];
  return [
    `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql${functionClauses(m.functions)} AS ${dollarQuote(body)}`,
    ...trigger('ins', 'INSERT', 'NEW TABLE AS new_rows'),
    ...trigger('upd', 'UPDATE', 'NEW TABLE AS new_rows'),
    ...trigger('del', 'DELETE', 'OLD TABLE AS old_rows'),
  ];
}

/**
 * Removes every sync trigger and function of a job; safe to run twice and when a table is already gone.
 * `keepReverse`: all but the reverse sync (a rollback keeps it until the new table is gone: see copy/workflow.ts).
 */
export function dropSyncDdl(job: string, syncId: string, querySources = 0, keepReverse = false): string[] {
  // DROP FUNCTION … CASCADE removes the triggers that use it, wherever their table now lives.
  const fns = [
    functionRef(job, syncId, 'forward'),
    ...(keepReverse ? [] : [functionRef(job, syncId, 'reverse')]),
    `${quoteIdent(TIDEMARK_SCHEMA)}.${quoteIdent(writeCountName(job, syncId, 'function'))}`,
  ];
  for (let i = 0; i < querySources; i++)
    fns.push(`${quoteIdent(TIDEMARK_SCHEMA)}.${quoteIdent(querySyncName(job, syncId, i, 'function'))}`);
  return [
    ...fns.map((fn) => `DROP FUNCTION IF EXISTS ${fn}() CASCADE`),
    // The settle pass's work list, if the copy never settled (a reverse sync kept logs on until dropped with it).
    `DELETE FROM ${quoteIdent(TIDEMARK_SCHEMA)}.sync_settling WHERE sync_id = ${quoteLiteral(syncId)}`,
    ...(keepReverse
      ? []
      : [`DELETE FROM ${quoteIdent(TIDEMARK_SCHEMA)}.sync_removals WHERE sync_id = ${quoteLiteral(syncId)}`]),
  ];
}

/**
 * Settings of a copy job's own transactions: the guard makes its reverse trigger ignore the copy's writes; asynchronous
 * commit is safe because each batch commits its rows and its cursor together — a server crash loses both, and the
 * copy redoes them — and it spares the application's commits from waiting behind the copy's WAL flushes.
 */
export function copySettings(syncId: string): Record<string, string> {
  return { ...guardSetting(syncId), synchronous_commit: 'off' };
}

/** The session setting that makes the job's own triggers ignore what this transaction writes. */
export function guardSetting(syncId: string): Record<string, string> {
  return { [SYNC_GUARD_SETTING]: syncId };
}
