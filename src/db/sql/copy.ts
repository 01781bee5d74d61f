// Pure SQL builders for the copy engine: batched keyset copy, sync triggers and their removal.
// Each returns text (and values where there are any); identifiers only ever pass through quoteIdent.
import { quoteIdent, quoteLiteral, quoteTable, type TableRef } from '../quote';
import { SYNC_GUARD_SETTING, TIDEMARK_SCHEMA, querySyncName, syncFunctionName, syncTriggerName, type SyncDirection } from '../names';

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
  source: CopySource;
  target: TableRef;
  /** Key column: in the source row (table column or query output column) and in the target. */
  key: string;
  /** format_type() of the key, used to cast cursor values. */
  keyType: string;
  columns: MappedColumn[];
  /** Source columns written back from the target under bidirectional sync. */
  reverse: ReverseColumn[];
  /** Lock the batch's source rows (FOR SHARE); needed whenever sync triggers run during the copy. */
  lockRows: boolean;
  /** Query sources: the tables whose writes are replayed, each with the expression giving the target key. */
  syncFrom: { table: TableRef; keyExpr: string }[];
}

export interface Query {
  text: string;
  values: unknown[];
}

const GUARD_ACTIVE = `coalesce(current_setting(${quoteLiteral(SYNC_GUARD_SETTING)}, true), '') <> ''`;
const setGuard = (value: string) => `PERFORM set_config(${quoteLiteral(SYNC_GUARD_SETTING)}, ${quoteLiteral(value)}, true);`;

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
  return m.columns.map((c) => `${cast ? `(${c.expr})::${c.type}` : `(${c.expr})`} AS ${quoteIdent(c.target)}`).join(', ');
}

function upsertTail(keyCols: string[], cols: string[]): string {
  const sets = cols.filter((c) => !keyCols.includes(c)).map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`);
  const target = `(${keyCols.map(quoteIdent).join(', ')})`;
  return sets.length ? `ON CONFLICT ${target} DO UPDATE SET ${sets.join(', ')}` : `ON CONFLICT ${target} DO NOTHING`;
}

export interface BatchBounds {
  /** Exclusive lower bound (the cursor); null for the start of the key space. */
  after: string | null;
  /** Inclusive upper bound of the range; null for the end of the key space. */
  upTo: string | null;
  limit: number;
}

/**
 * One batch: reads the next `limit` source rows after the cursor in key order, writes them through the mapping into
 * the target (upsert), and returns how many it read and the last key.
 *
 * Why a concurrent write cannot be lost or undone (the sync triggers are installed and committed before any batch):
 * with `lockRows` the batch takes FOR SHARE on the rows it reads. A DELETE or UPDATE of one of those rows therefore
 * waits until the batch has committed, and its sync trigger then deletes or rewrites the freshly copied target row:
 * the batch cannot resurrect a row deleted while it ran, nor write an older version over a newer one. A write that
 * committed before the lock was taken is seen by the batch (READ COMMITTED re-reads the locked row's latest version;
 * a deleted row is skipped). Rows inserted after the batch's snapshot reach the target through the trigger, and the
 * upsert makes a batch and a trigger writing the same key converge on the source's current row.
 */
export function copyBatchQuery(m: CopyMapping, b: BatchBounds): Query {
  const values: unknown[] = [b.limit];
  const where: string[] = [];
  const k = `s.${quoteIdent(m.key)}`;
  if (b.after !== null) {
    values.push(b.after);
    where.push(`${k} > $${values.length}::${m.keyType}`);
  }
  if (b.upTo !== null) {
    values.push(b.upTo);
    where.push(`${k} <= $${values.length}::${m.keyType}`);
  }
  // A synced query source never overwrites: its triggers recompute a key from the committed state, which is newer
  // than anything this batch read (rows that join in after the batch's snapshot are not locked by it).
  const conflict = m.source.kind === 'query' && m.lockRows ? `ON CONFLICT (${quoteIdent(m.key)}) DO NOTHING` : upsertTail([m.key], m.columns.map((c) => c.target));
  const text =
    `WITH batch AS (SELECT ${k} AS __tidemark_key, ${mappedSelectList(m)} FROM ${sourceFrom(m)}` +
    `${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY ${k} LIMIT $1${m.lockRows ? ' FOR SHARE OF s' : ''}), ` +
    `ins AS (INSERT INTO ${quoteTable(m.target)} (${targetList(m)}) SELECT ${targetList(m)} FROM batch ${conflict}) ` +
    `SELECT (SELECT count(*) FROM batch)::int AS rows, (SELECT b.__tidemark_key::text FROM batch AS b ORDER BY b.__tidemark_key DESC LIMIT 1) AS last_key`;
  return { text, values };
}

function functionRef(job: string, dir: SyncDirection): string {
  return `${quoteIdent(TIDEMARK_SCHEMA)}.${quoteIdent(syncFunctionName(job, dir))}`;
}

/**
 * Forward sync: every write to the source table is replayed into the target through the mapping, in the same
 * transaction. The guard setting stops the target's reverse trigger from echoing it back (no ping-pong), and lets
 * the copy's own writes pass without firing anything.
 */
export function forwardTriggerDdl(m: CopyMapping): string[] {
  if (m.source.kind !== 'table') throw new Error('forward triggers need a table source');
  const src = quoteTable(m.source.table);
  const tgt = quoteTable(m.target);
  const key = quoteIdent(m.key);
  const fn = functionRef(m.job, 'forward');
  const trg = quoteIdent(syncTriggerName(m.job, 'forward'));
  const body = `
BEGIN
  IF ${GUARD_ACTIVE} THEN RETURN NULL; END IF;
  ${setGuard(m.job)}
  IF TG_OP = 'TRUNCATE' THEN
    DELETE FROM ${tgt};
  ELSE
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.${key} IS DISTINCT FROM NEW.${key}) THEN
      DELETE FROM ${tgt} WHERE ${key} = OLD.${key};
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
      INSERT INTO ${tgt} (${targetList(m)}) SELECT ${mappedSelectList(m)} FROM (SELECT NEW.*) AS s
      ${upsertTail([m.key], m.columns.map((c) => c.target))};
    END IF;
  END IF;
  ${setGuard('')}
  RETURN NULL;
END`;
  return [
    `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $tidemark$${body}$tidemark$`,
    `DROP TRIGGER IF EXISTS ${trg} ON ${src}`,
    `CREATE TRIGGER ${trg} AFTER INSERT OR UPDATE OR DELETE ON ${src} FOR EACH ROW EXECUTE FUNCTION ${fn}()`,
    `DROP TRIGGER IF EXISTS ${quoteIdent(syncTriggerName(m.job, 'forward', 'truncate'))} ON ${src}`,
    `CREATE TRIGGER ${quoteIdent(syncTriggerName(m.job, 'forward', 'truncate'))} AFTER TRUNCATE ON ${src} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`,
  ];
}

/** Reverse sync (bidirectional): writes made on the target are replayed into the source through `reverse`. */
export function reverseTriggerDdl(m: CopyMapping): string[] {
  if (m.source.kind !== 'table') throw new Error('reverse triggers need a table source');
  const src = quoteTable(m.source.table);
  const tgt = quoteTable(m.target);
  const key = quoteIdent(m.key);
  const fn = functionRef(m.job, 'reverse');
  const trg = quoteIdent(syncTriggerName(m.job, 'reverse'));
  const cols = m.reverse.map((r) => quoteIdent(r.source)).join(', ');
  const exprs = m.reverse.map((r) => `(${r.expr}) AS ${quoteIdent(r.source)}`).join(', ');
  const body = `
BEGIN
  IF ${GUARD_ACTIVE} THEN RETURN NULL; END IF;
  ${setGuard(m.job)}
  IF TG_OP = 'TRUNCATE' THEN
    DELETE FROM ${src};
  ELSE
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.${key} IS DISTINCT FROM NEW.${key}) THEN
      DELETE FROM ${src} WHERE ${key} = OLD.${key};
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
      INSERT INTO ${src} (${cols}) SELECT ${exprs} FROM (SELECT NEW.*) AS t
      ${upsertTail([m.key], m.reverse.map((r) => r.source))};
    END IF;
  END IF;
  ${setGuard('')}
  RETURN NULL;
END`;
  return [
    `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $tidemark$${body}$tidemark$`,
    `DROP TRIGGER IF EXISTS ${trg} ON ${tgt}`,
    `CREATE TRIGGER ${trg} AFTER INSERT OR UPDATE OR DELETE ON ${tgt} FOR EACH ROW EXECUTE FUNCTION ${fn}()`,
    `DROP TRIGGER IF EXISTS ${quoteIdent(syncTriggerName(m.job, 'reverse', 'truncate'))} ON ${tgt}`,
    `CREATE TRIGGER ${quoteIdent(syncTriggerName(m.job, 'reverse', 'truncate'))} AFTER TRUNCATE ON ${tgt} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`,
  ];
}

/**
 * Query sources: a write to any table the query reads recomputes the target rows of the keys it touches (old and
 * new): delete, then insert whatever the query now yields for that key. Exact when the batch can lock what it reads
 * (no aggregates or outer joins in the query) — see copyBatchQuery.
 */
export function querySyncTriggerDdl(m: CopyMapping): string[] {
  if (m.source.kind !== 'query') throw new Error('query sync triggers need a query source');
  const query = stripSemicolon(m.source.sql);
  const tgt = quoteTable(m.target);
  const key = quoteIdent(m.key);
  const out: string[] = [];
  m.syncFrom.forEach((src, i) => {
    const fn = `${quoteIdent(TIDEMARK_SCHEMA)}.${quoteIdent(querySyncName(m.job, i, 'function'))}`;
    const trg = quoteIdent(querySyncName(m.job, i, 'trigger'));
    const body = `
DECLARE
  k_old ${m.keyType};
  k_new ${m.keyType};
  k ${m.keyType};
BEGIN
  IF ${GUARD_ACTIVE} THEN RETURN NULL; END IF;
  ${setGuard(m.job)}
  IF TG_OP IN ('UPDATE', 'DELETE') THEN SELECT (${src.keyExpr}) INTO k_old FROM (SELECT OLD.*) AS s; END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN SELECT (${src.keyExpr}) INTO k_new FROM (SELECT NEW.*) AS s; END IF;
  FOR k IN SELECT DISTINCT x FROM (VALUES (k_old), (k_new)) AS v(x) WHERE x IS NOT NULL LOOP
    DELETE FROM ${tgt} WHERE ${key} = k;
    INSERT INTO ${tgt} (${targetList(m)}) SELECT ${mappedSelectList(m)} FROM (${query}) AS s WHERE s.${key} = k
    ${upsertTail([m.key], m.columns.map((c) => c.target))};
  END LOOP;
  ${setGuard('')}
  RETURN NULL;
END`;
    out.push(
      `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $tidemark$${body}$tidemark$`,
      `DROP TRIGGER IF EXISTS ${trg} ON ${quoteTable(src.table)}`,
      `CREATE TRIGGER ${trg} AFTER INSERT OR UPDATE OR DELETE ON ${quoteTable(src.table)} FOR EACH ROW EXECUTE FUNCTION ${fn}()`,
    );
  });
  return out;
}

/** Removes every sync trigger and function of a job; safe to run twice and when a table is already gone. */
export function dropSyncDdl(job: string, querySources = 0): string[] {
  // DROP FUNCTION … CASCADE removes the triggers that use it, wherever their table now lives.
  const fns = [functionRef(job, 'forward'), functionRef(job, 'reverse')];
  for (let i = 0; i < querySources; i++) fns.push(`${quoteIdent(TIDEMARK_SCHEMA)}.${quoteIdent(querySyncName(job, i, 'function'))}`);
  return fns.map((fn) => `DROP FUNCTION IF EXISTS ${fn}() CASCADE`);
}

/** Guard value the copy sets for its own transactions, so reverse triggers ignore the copy's writes. */
export const COPY_GUARD = { [SYNC_GUARD_SETTING]: 'copy' } as const;
