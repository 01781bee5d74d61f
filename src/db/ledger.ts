// Reads the ledger (tidemark.history) and what else a migration left in the database — archived tables, sync jobs
// still installed, its flag — for `tidemark history`, preflight and revert. Reads only.
import type { Client, Pool, PoolClient } from 'pg';
import type { LedgerRow } from '../plan/ledger';
import { TIDEMARK_SCHEMA } from './names';
import { quoteIdent } from './quote';

type Queryable = Pool | PoolClient | Client;
const S = quoteIdent(TIDEMARK_SCHEMA);

const iso = (v: unknown): string | null => (v === null || v === undefined ? null : new Date(v as string).toISOString());

async function exists(db: Queryable, table: string): Promise<boolean> {
  return (await db.query(`SELECT to_regclass($1) IS NOT NULL AS x`, [`${S}.${quoteIdent(table)}`])).rows[0].x;
}

/**
 * One plan's ledger rows (or every plan's), oldest first. Read through to_jsonb so a database bootstrapped by an
 * older tidemark (without the phase or rolled_back_by columns) reads the same.
 */
export async function readLedger(db: Queryable, migration?: string): Promise<LedgerRow[]> {
  if (!(await exists(db, 'history'))) return [];
  const r = await db.query(
    `SELECT to_jsonb(h) AS r FROM ${S}.history h WHERE $1::text IS NULL OR h.migration = $1 ORDER BY h.id`,
    [migration ?? null],
  );
  return r.rows.map(({ r: h }) => ({
    migration: h.migration,
    stepId: h.step_id,
    phase: h.phase === 'cleanup' ? 'cleanup' : 'schema',
    checksum: h.checksum,
    downChecksum: h.down_checksum,
    transactional: h.transactional,
    status: h.status,
    appliedAt: iso(h.applied_at)!,
    rolledBackAt: iso(h.rolled_back_at),
    rolledBackBy: h.rolled_back_by ?? null,
    workflowId: h.workflow_id,
    runId: h.run_id,
  }));
}

/** A run of a migration, as tidemark.runs knows it: what a revert's undos need to find the run's objects. */
export interface RecordedRun {
  runKey: string;
  migration: string;
  workflowId: string;
}

export interface ArchivedTable {
  table: string;
  archivedAs: string;
  run: RecordedRun;
  archivedAt: string;
  droppedAt: string | null;
  restoredAt: string | null;
}

export interface InstalledSync {
  job: string;
  syncId: string;
  sources: string[];
  target: string;
  run: RecordedRun;
}

/** What a migration still has in the database besides its steps: archived tables, sync jobs, scripts, its flag. */
export interface MigrationLeftovers {
  archived: ArchivedTable[];
  syncs: InstalledSync[];
  flag: { name: string; percent: number } | null;
  /** sha256 of every script tidemark.scripts holds, of those asked about. */
  scripts: string[];
}

export async function readLeftovers(
  db: Queryable,
  migration: string,
  flag: string | undefined,
  scripts: string[],
): Promise<MigrationLeftovers> {
  const runOf = (row: { run_key: string; workflow_id: string | null }): RecordedRun => ({
    runKey: row.run_key,
    migration,
    workflowId: row.workflow_id ?? `tidemark-${migration}`,
  });
  let archived: ArchivedTable[] = [];
  if (await exists(db, 'archive')) {
    const r = await db.query(
      `SELECT a.original_schema, a.table_name, a.archived_name, a.run_id AS run_key, r.workflow_id,
              a.archived_at, a.dropped_at, a.restored_at
         FROM ${S}.archive a LEFT JOIN ${S}.runs r ON r.run_key = a.run_id
        WHERE a.migration = $1 ORDER BY a.archived_at`,
      [migration],
    );
    archived = r.rows.map((a) => ({
      table: a.original_schema === 'public' ? a.table_name : `${a.original_schema}.${a.table_name}`,
      archivedAs: a.archived_name,
      run: runOf(a),
      archivedAt: iso(a.archived_at)!,
      droppedAt: iso(a.dropped_at),
      restoredAt: iso(a.restored_at),
    }));
  }
  let syncs: InstalledSync[] = [];
  if (await exists(db, 'sync_jobs')) {
    const r = await db.query(
      `SELECT s.job, s.sync_id, s.sources, s.target, s.run_key, r.workflow_id
         FROM ${S}.sync_jobs s JOIN ${S}.runs r USING (run_key)
        WHERE r.migration = $1 ORDER BY s.installed_at`,
      [migration],
    );
    syncs = r.rows.map((s) => ({ job: s.job, syncId: s.sync_id, sources: s.sources, target: s.target, run: runOf(s) }));
  }
  let flagRow: MigrationLeftovers['flag'] = null;
  if (flag && (await exists(db, 'flags'))) {
    const r = await db.query(`SELECT rollout_percentage FROM ${S}.flags WHERE name = $1`, [flag]);
    if (r.rowCount) flagRow = { name: flag, percent: r.rows[0].rollout_percentage };
  }
  let known: string[] = [];
  if (scripts.length && (await exists(db, 'scripts'))) {
    const r = await db.query(`SELECT sha256 FROM ${S}.scripts WHERE sha256 = ANY($1::text[])`, [scripts]);
    known = r.rows.map((x) => x.sha256);
  }
  return { archived, syncs, flag: flagRow, scripts: known };
}
