// Pure SQL builders for the copy engine: batched keyset copy, sync triggers and their removal.
// Each returns text (and values where there are any); identifiers only ever pass through quoteIdent.
import { dollarQuote, quoteIdent, quoteLiteral, quoteTable, type TableRef } from '../../db/quote';
import {
  SYNC_GUARD_SETTING,
  TIDEMARK_SCHEMA,
  querySyncName,
  writeCountName,
  syncFunctionName,
  syncTriggerName,
  type SyncDirection,
} from '../../db/names';

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
  /** Key column: in the source row (table column or query output column) and in the target. */
  key: string;
  /** format_type() of the key, used to cast cursor values. */
  keyType: string;
  columns: MappedColumn[];
  /** Source columns written back from the target under bidirectional sync. */
  reverse: ReverseColumn[];
  /** Sync triggers run during the copy (sync is not none). */
  syncing: boolean;
  /** Lock the batch's source rows (FOR SHARE): synced query sources, whose rows cannot be reconciled by key. */
  lockRows: boolean;
  /** Query sources: the tables whose writes are replayed, each with the expression giving the target key. */
  syncFrom: { table: TableRef; keyExpr: string }[];
}

export interface Query {
  text: string;
  values: unknown[];
}

/*
 * The sync guard: a session setting holding the comma-separated sync ids (one per job and run) whose sync writes are
 * in progress. A trigger of job J skips when J is already in it (J's own write coming back: no ping-pong), adds J
 * while it writes, and puts the previous value back afterwards — so another job's triggers still see the write
 * (chained syncs stay in step) and an outer write's guard is not lost. The copy of J sets it to J for its own
 * transactions. Ids, not job names: two migrations' jobs may share a name and must not silence each other.
 */
const GUARD = quoteLiteral(SYNC_GUARD_SETTING);
const guardDeclare = 'guard_prev text := coalesce(current_setting(' + GUARD + ", true), '');";
const guardEnter = (job: string) =>
  `IF position(${quoteLiteral(`,${job},`)} in ',' || guard_prev || ',') > 0 THEN RETURN NULL; END IF;
  PERFORM set_config(${GUARD}, CASE WHEN guard_prev = '' THEN ${quoteLiteral(job)} ELSE guard_prev || ${quoteLiteral(`,${job}`)} END, true);`;
const guardLeave = `PERFORM set_config(${GUARD}, guard_prev, true);`;

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

function upsertTail(keyCols: string[], cols: string[]): string {
  const sets = cols.filter((c) => !keyCols.includes(c)).map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`);
  const target = `(${keyCols.map(quoteIdent).join(', ')})`;
  return sets.length ? `ON CONFLICT ${target} DO UPDATE SET ${sets.join(', ')}` : `ON CONFLICT ${target} DO NOTHING`;
}

/**
 * How a batch treats a key the target already holds (a sync trigger wrote it ahead of the cursor):
 * - `fail`: plain INSERT, the fast path — most batches meet no such key; on a unique violation the batch is redone
 * - `update`: upsert, so batch and trigger converge on the source's current row (table sources)
 * - `nothing`: keep the target's row (synced query sources: their triggers write from newer state than the batch read)
 */
export type ConflictMode = 'fail' | 'update' | 'nothing';

function conflictClause(m: CopyMapping, mode: ConflictMode): string {
  if (mode === 'fail') return '';
  if (mode === 'nothing') return ` ON CONFLICT (${quoteIdent(m.key)}) DO NOTHING`;
  return ` ${upsertTail(
    [m.key],
    m.columns.map((c) => c.target),
  )}`;
}

/** The mode to fall back to when the fast path meets a key the target already holds. */
export function slowConflictMode(m: CopyMapping): ConflictMode {
  // Synced sources never overwrite: a trigger-written row is at least as new as what the batch read.
  return m.syncing ? 'nothing' : 'update';
}

/** Whether the target already holds rows in the interval (written by triggers ahead of the cursor). */
export function targetHasRowsQuery(m: CopyMapping, after: string | null, upTo: string): Query {
  const values: unknown[] = [];
  const where = keyBounds(m, after, upTo, values).map((w) => w.replace(/^s\./, 't.'));
  return {
    text: `SELECT EXISTS (SELECT 1 FROM ${quoteTable(m.target)} AS t WHERE ${where.join(' AND ')}) AS x`,
    values,
  };
}

/** Source and target row counts over an interval, read in one fresh snapshot: equal means no stale target row. */
export function reconcileQuery(m: CopyMapping, after: string | null, upTo: string): Query {
  const values: unknown[] = [];
  const sWhere = keyBounds(m, after, upTo, values);
  const tWhere = sWhere.map((w) => w.replace(/^s\./, 't.'));
  return {
    text: `SELECT (SELECT count(*) FROM ${sourceFrom(m)} WHERE ${sWhere.join(' AND ')}) = (SELECT count(*) FROM ${quoteTable(m.target)} AS t WHERE ${tWhere.join(' AND ')}) AS same`,
    values,
  };
}

/** Deletes target rows of an interval whose source row no longer exists (deleted after the batch's snapshot). */
export function pruneQuery(m: CopyMapping, after: string | null, upTo: string): Query {
  const values: unknown[] = [];
  const tWhere = keyBounds(m, after, upTo, values).map((w) => w.replace(/^s\./, 't.'));
  const k = quoteIdent(m.key);
  return {
    text: `DELETE FROM ${quoteTable(m.target)} AS t WHERE ${tWhere.join(' AND ')} AND NOT EXISTS (SELECT 1 FROM ${sourceFrom(m)} WHERE s.${k} = t.${k})`,
    values,
  };
}

function keyBounds(m: CopyMapping, after: string | null, upTo: string | null, values: unknown[]): string[] {
  const k = `s.${quoteIdent(m.key)}`;
  const where: string[] = [];
  if (after !== null) {
    values.push(after);
    where.push(`${k} > $${values.length}::${m.keyType}`);
  }
  if (upTo !== null) {
    values.push(upTo);
    where.push(`${k} <= $${values.length}::${m.keyType}`);
  }
  return where;
}

/*
 * Why the copy is exact while the application writes (table sources). The sync triggers are installed and committed
 * before any batch runs, so every write from then on is replayed into the target in its own transaction; a batch
 * copies what its snapshot shows. Three races remain, and each is closed without locking source rows (row locks
 * would write a WAL record per copied row and cost a third of the copy's speed):
 *  - a newer version written by a trigger must not be overwritten by the batch's older one: the batch never
 *    overwrites (plain INSERT, or ON CONFLICT DO NOTHING when the interval already holds trigger-written rows), and
 *    a trigger whose key the batch has inserted but not committed waits on the unique index, then overwrites it;
 *  - a row deleted after the batch's snapshot must not be resurrected: after inserting, the batch compares source and
 *    target row counts over its interval in a fresh snapshot and deletes target rows whose source row is gone
 *    (reconcileQuery, pruneQuery);
 *  - a delete that commits between that check and the batch's commit: the delete trigger first upserts the old row,
 *    which waits on the batch's uncommitted index entry, then deletes it — so it always runs after the batch.
 * Query sources lock what they read instead (FOR SHARE), see querySyncTriggerDdl.
 */

/**
 * One batch over a key interval (integer keys): every source row with after < key <= upTo, written through the
 * mapping. No ORDER BY, LIMIT or CTE — as cheap as the database's own INSERT … SELECT. Rows written = rowCount.
 */
export function rangeBatchQuery(m: CopyMapping, after: string | null, upTo: string, mode: ConflictMode): Query {
  const values: unknown[] = [];
  const where = keyBounds(m, after, upTo, values);
  const text =
    `INSERT INTO ${quoteTable(m.target)} (${targetList(m)}) SELECT ${mappedSelectList(m)} FROM ${sourceFrom(m)} ` +
    `WHERE ${where.join(' AND ')}${m.lockRows ? ' FOR SHARE OF s' : ''}${conflictClause(m, mode)}`;
  return { text, values };
}

/**
 * One batch of the next `limit` rows in key order (any orderable key): returns how many rows it read and the last key.
 */
export function limitBatchQuery(
  m: CopyMapping,
  after: string | null,
  upTo: string | null,
  limit: number,
  mode: ConflictMode,
): Query {
  const values: unknown[] = [limit];
  const where = keyBounds(m, after, upTo, values);
  const k = `s.${quoteIdent(m.key)}`;
  const text =
    `WITH batch AS (SELECT ${k} AS __tidemark_key, ${mappedSelectList(m)} FROM ${sourceFrom(m)}` +
    `${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY ${k} LIMIT $1${m.lockRows ? ' FOR SHARE OF s' : ''}), ` +
    `ins AS (INSERT INTO ${quoteTable(m.target)} (${targetList(m)}) SELECT ${targetList(m)} FROM batch${conflictClause(m, mode)}) ` +
    `SELECT (SELECT count(*) FROM batch)::int AS rows, (SELECT b.__tidemark_key::text FROM batch AS b ORDER BY b.__tidemark_key DESC LIMIT 1) AS last_key`;
  return { text, values };
}

/**
 * Lowest and highest key of the source (as text), for range batching and range planning; null when the source is
 * empty. ORDER BY … LIMIT 1 rather than min()/max(): it works for every orderable key type (uuid has no max()) and
 * reads one end of the key's index either way.
 */
export function keyExtentQuery(m: CopyMapping, after: string | null, upTo: string | null): Query {
  const values: unknown[] = [];
  const where = keyBounds(m, after, upTo, values);
  const k = `s.${quoteIdent(m.key)}`;
  const scan = (dir: string) =>
    `(SELECT ${k}::text FROM ${sourceFrom(m)}${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY ${k} ${dir} LIMIT 1)`;
  return { text: `SELECT ${scan('ASC')} AS lo, ${scan('DESC')} AS hi`, values };
}

function functionRef(job: string, syncId: string, dir: SyncDirection): string {
  return `${quoteIdent(TIDEMARK_SCHEMA)}.${quoteIdent(syncFunctionName(job, syncId, dir))}`;
}

function syncIdOf(m: CopyMapping): string {
  if (!m.syncId) throw new Error(`copy job "${m.job}": sync objects need the mapping resolved for a migration run`);
  return m.syncId;
}

interface RowSync {
  job: string;
  syncId: string;
  direction: SyncDirection;
  /** Table whose writes are replayed, and the table they are replayed into. */
  from: string;
  to: string;
  key: string;
  /** Columns written on `to`, each an expression over the `from` row. */
  columns: { name: string; expr: string }[];
  /**
   * Before deleting a key, touch it with an upsert: if a copy batch has inserted it and not committed yet, this waits
   * for that batch, so the delete lands after it (see "Why the copy is exact"). Needed where batches write: forward.
   */
  waitForBatch: boolean;
}

/** A row trigger (and a TRUNCATE trigger) replaying every write on one table into another, in the same transaction. */
function rowSyncDdl(r: RowSync): string[] {
  const key = quoteIdent(r.key);
  const fn = functionRef(r.job, r.syncId, r.direction);
  const trg = quoteIdent(syncTriggerName(r.job, r.syncId, r.direction));
  const truncateTrg = quoteIdent(syncTriggerName(r.job, r.syncId, r.direction, 'truncate'));
  const cols = r.columns.map((c) => quoteIdent(c.name)).join(', ');
  const exprs = r.columns.map((c) => `(${c.expr}) AS ${quoteIdent(c.name)}`).join(', ');
  // The touch must never make the application's delete fail: should the old row collide with another unique index
  // of the target (a reused e-mail, say), it is skipped.
  const touch = r.waitForBatch
    ? `BEGIN
        INSERT INTO ${r.to} (${cols}) SELECT ${exprs} FROM (SELECT OLD.*) AS s ON CONFLICT (${key}) DO UPDATE SET ${key} = EXCLUDED.${key};
      EXCEPTION WHEN unique_violation OR not_null_violation OR check_violation OR foreign_key_violation THEN NULL;
      END;
      `
    : '';
  const body = `
DECLARE
  ${guardDeclare}
BEGIN
  ${guardEnter(r.syncId)}
  IF TG_OP = 'TRUNCATE' THEN
    DELETE FROM ${r.to};
  ELSE
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.${key} IS DISTINCT FROM NEW.${key}) THEN
      ${touch}DELETE FROM ${r.to} WHERE ${key} = OLD.${key};
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
      INSERT INTO ${r.to} (${cols}) SELECT ${exprs} FROM (SELECT NEW.*) AS s
      ${upsertTail(
        [r.key],
        r.columns.map((c) => c.name),
      )};
    END IF;
  END IF;
  ${guardLeave}
  RETURN NULL;
END`;
  return [
    `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS ${dollarQuote(body)}`,
    `DROP TRIGGER IF EXISTS ${trg} ON ${r.from}`,
    `CREATE TRIGGER ${trg} AFTER INSERT OR UPDATE OR DELETE ON ${r.from} FOR EACH ROW EXECUTE FUNCTION ${fn}()`,
    `DROP TRIGGER IF EXISTS ${truncateTrg} ON ${r.from}`,
    `CREATE TRIGGER ${truncateTrg} AFTER TRUNCATE ON ${r.from} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`,
  ];
}

/** Forward sync: every write to the source table is replayed into the target through the mapping. */
export function forwardTriggerDdl(m: CopyMapping): string[] {
  if (m.source.kind !== 'table') throw new Error('forward triggers need a table source');
  return rowSyncDdl({
    job: m.job,
    syncId: syncIdOf(m),
    direction: 'forward',
    from: quoteTable(m.source.table),
    to: quoteTable(m.target),
    key: m.key,
    columns: m.columns.map((c) => ({ name: c.target, expr: c.expr })),
    waitForBatch: true,
  });
}

/** Reverse sync (bidirectional): writes made on the target are replayed into the source through `reverse`. */
export function reverseTriggerDdl(m: CopyMapping): string[] {
  if (m.source.kind !== 'table') throw new Error('reverse triggers need a table source');
  return rowSyncDdl({
    job: m.job,
    syncId: syncIdOf(m),
    direction: 'reverse',
    from: quoteTable(m.target),
    to: quoteTable(m.source.table),
    key: m.key,
    columns: m.reverse.map((r) => ({ name: r.source, expr: r.expr })),
    waitForBatch: false,
  });
}

/**
 * Query sources: a write to any table the query reads recomputes the target rows of the keys it touches (old and
 * new): delete, then insert whatever the query now yields for that key. Exact when the batch can lock what it reads
 * (no aggregates or outer joins in the query): batches take FOR SHARE on what they read.
 */
export function querySyncTriggerDdl(m: CopyMapping): string[] {
  if (m.source.kind !== 'query') throw new Error('query sync triggers need a query source');
  const query = stripSemicolon(m.source.sql);
  const tgt = quoteTable(m.target);
  const key = quoteIdent(m.key);
  const syncId = syncIdOf(m);
  const out: string[] = [];
  m.syncFrom.forEach((src, i) => {
    const fn = `${quoteIdent(TIDEMARK_SCHEMA)}.${quoteIdent(querySyncName(m.job, syncId, i, 'function'))}`;
    const trg = quoteIdent(querySyncName(m.job, syncId, i, 'trigger'));
    const body = `
DECLARE
  ${guardDeclare}
  k_old ${m.keyType};
  k_new ${m.keyType};
  k ${m.keyType};
BEGIN
  ${guardEnter(syncId)}
  IF TG_OP IN ('UPDATE', 'DELETE') THEN SELECT (${src.keyExpr}) INTO k_old FROM (SELECT OLD.*) AS s; END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN SELECT (${src.keyExpr}) INTO k_new FROM (SELECT NEW.*) AS s; END IF;
  FOR k IN SELECT DISTINCT x FROM (VALUES (k_old), (k_new)) AS v(x) WHERE x IS NOT NULL LOOP
    DELETE FROM ${tgt} WHERE ${key} = k;
    INSERT INTO ${tgt} (${targetList(m)}) SELECT ${mappedSelectList(m)} FROM (${query}) AS s WHERE s.${key} = k
    ${upsertTail(
      [m.key],
      m.columns.map((c) => c.target),
    )};
  END LOOP;
  ${guardLeave}
  RETURN NULL;
END`;
    out.push(
      `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS ${dollarQuote(body)}`,
      `DROP TRIGGER IF EXISTS ${trg} ON ${quoteTable(src.table)}`,
      `CREATE TRIGGER ${trg} AFTER INSERT OR UPDATE OR DELETE ON ${quoteTable(src.table)} FOR EACH ROW EXECUTE FUNCTION ${fn}()`,
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
    `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS ${dollarQuote(body)}`,
    ...trigger('ins', 'INSERT', 'NEW TABLE AS new_rows'),
    ...trigger('upd', 'UPDATE', 'NEW TABLE AS new_rows'),
    ...trigger('del', 'DELETE', 'OLD TABLE AS old_rows'),
  ];
}

/** Removes every sync trigger and function of a job; safe to run twice and when a table is already gone. */
export function dropSyncDdl(job: string, syncId: string, querySources = 0): string[] {
  // DROP FUNCTION … CASCADE removes the triggers that use it, wherever their table now lives.
  const fns = [
    functionRef(job, syncId, 'forward'),
    functionRef(job, syncId, 'reverse'),
    `${quoteIdent(TIDEMARK_SCHEMA)}.${quoteIdent(writeCountName(job, syncId, 'function'))}`,
  ];
  for (let i = 0; i < querySources; i++)
    fns.push(`${quoteIdent(TIDEMARK_SCHEMA)}.${quoteIdent(querySyncName(job, syncId, i, 'function'))}`);
  return fns.map((fn) => `DROP FUNCTION IF EXISTS ${fn}() CASCADE`);
}

/**
 * Settings of a copy job's own transactions: the guard makes its reverse trigger ignore the copy's writes; asynchronous
 * commit is safe because each batch commits its rows and its cursor together — a server crash loses both, and the
 * copy redoes them — and it spares the application's commits from waiting behind the copy's WAL flushes.
 */
export function copySettings(syncId: string): Record<string, string> {
  return { [SYNC_GUARD_SETTING]: syncId, synchronous_commit: 'off' };
}
