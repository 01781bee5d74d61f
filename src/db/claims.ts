// Which migration holds a table: it syncs it (live sync triggers), copies into it, or has archived it and may still
// move it back. Two migrations working on one table would break each other. Preflight refuses a plan whose tables
// another migration holds; and since two migrations can both pass preflight before either installs anything (one
// waiting for an approval, or two started at once), the install of a sync checks again, under one lock per database,
// in the transaction that records the claim. The first to install holds the table; the other is refused.
import type { PoolClient } from 'pg';
import { TIDEMARK_SCHEMA } from './names';
import { parseTableRef, quoteIdent } from './quote';

const S = quoteIdent(TIDEMARK_SCHEMA);

/** `schema.table` of a table reference as a plan writes it. */
export function tableKey(t: string): string {
  const r = parseTableRef(t);
  return `${r.schema}.${r.name}`;
}

export interface TableHold {
  table: string;
  how: 'syncs' | 'copies into' | 'archives' | 'captures the changes of';
  migration: string | null;
  workflowId: string | null;
  job: string | null;
}

/** Every table some migration holds, leaving out the run `exceptRun`'s own holds. */
export async function tableHolds(c: PoolClient, exceptRun?: string): Promise<TableHold[]> {
  const exists = (await c.query(`SELECT to_regclass('${TIDEMARK_SCHEMA}.sync_jobs') IS NOT NULL AS x`)).rows[0].x;
  if (!exists) return [];
  // Blue-green: a capture (triggers or a slot logging a table's changes) holds its table on that side.
  const captures = (await c.query(`SELECT to_regclass('${TIDEMARK_SCHEMA}.captures') IS NOT NULL AS x`)).rows[0].x;
  const r = await c.query(
    `SELECT * FROM (
       SELECT s.sources AS tables, 'syncs' AS how, r.migration, r.workflow_id, s.job, s.run_key
         FROM ${S}.sync_jobs s LEFT JOIN ${S}.runs r USING (run_key)
       UNION ALL
       SELECT ARRAY[s.target], 'copies into', r.migration, r.workflow_id, s.job, s.run_key
         FROM ${S}.sync_jobs s LEFT JOIN ${S}.runs r USING (run_key)
       UNION ALL
       SELECT ARRAY[a.original_schema || '.' || a.table_name], 'archives', a.migration, r.workflow_id, NULL, a.run_id
         FROM ${S}.archive a LEFT JOIN ${S}.runs r ON r.run_key = a.run_id
        WHERE a.restored_at IS NULL AND a.dropped_at IS NULL
       ${
         captures
           ? `UNION ALL
       SELECT ARRAY[c.table_name], 'captures the changes of', r.migration, r.workflow_id, c.job, c.run_key
         FROM ${S}.captures c LEFT JOIN ${S}.runs r USING (run_key)`
           : ''
       }) h
      WHERE run_key IS DISTINCT FROM $1`,
    [exceptRun ?? null],
  );
  return (
    r.rows as {
      tables: string[];
      how: TableHold['how'];
      migration: string | null;
      workflow_id: string | null;
      job: string | null;
    }[]
  ).flatMap((row) =>
    row.tables.map((table) => ({
      table,
      how: row.how,
      migration: row.migration,
      workflowId: row.workflow_id,
      job: row.job,
    })),
  );
}

/** What a hold says to the operator: `migration orders-v2 (tidemark-orders-v2) syncs public.orders (copy job orders)`. */
export function describeHold(h: TableHold): string {
  const holder = `migration ${h.migration ?? 'unknown'}${h.workflowId ? ` (${h.workflowId})` : ''}`;
  return `${holder} ${h.how} ${h.table}${h.job ? ` (copy job ${h.job})` : ''}`;
}

/** The holds of other migrations on any of `tables`. */
export async function holdsOn(c: PoolClient, tables: string[], exceptRun?: string): Promise<TableHold[]> {
  const ours = new Set(tables.map(tableKey));
  return (await tableHolds(c, exceptRun)).filter((h) => ours.has(tableKey(h.table)));
}

/**
 * Inside the transaction that records `run`'s claim on `tables` (its sync_jobs row): waits for any other migration
 * claiming tables in this database right now, then returns the other migrations' holds on these tables. Empty: the
 * caller's transaction may record its claim; once it commits, every other claim sees it.
 */
export async function lockClaims(c: PoolClient, runKey: string, tables: string[]): Promise<TableHold[]> {
  await c.query(`SELECT pg_advisory_xact_lock(hashtextextended('tidemark:claims', 0))`);
  return holdsOn(c, tables, runKey);
}
