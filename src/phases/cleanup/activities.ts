// Cleanup, activity side: drops sync triggers, moves old tables into tidemark_archive and (undo) back out of it, runs
// the plan's cleanup SQL, and after dropAfter drops the archived tables (the one step with no way back). Every change
// here locks the new tables before the old ones (lockInAppOrder).
import { ARCHIVE_SCHEMA, syncIdFor, TIDEMARK_SCHEMA } from '../../db/names';
import { parseTableRef, quoteIdent, quoteTable } from '../../db/quote';
import { dropSyncDdl, reverseTriggerDdl, type CopyMapping } from '../copy/sql';
import type { PoolClient } from 'pg';
import type { TableRef } from '../../db/quote';
import { resolveMapping } from '../copy/mapping';
import { scriptText } from '../../db/scripts';
import { withTransaction } from '../../db/tx';
import type { ResolvedCopyJob, SqlSource } from '../../plan/types';
import { F, failure } from '../../migration/failures';
import {
  activityBody,
  forwardTransaction,
  refuseHeld,
  targetPool,
  type ActivityDeps,
  type RunRef,
} from '../activity-kit';

const S = quoteIdent(TIDEMARK_SCHEMA);
const A = quoteIdent(ARCHIVE_SCHEMA);

export interface ArchiveInput {
  urlEnv: string;
  run: RunRef;
  tables: string[];
  lockTimeoutMs: number;
  dropAfterMs?: number;
  /**
   * Bidirectional copy jobs whose source is among the tables: their reverse sync follows the table into (and out of)
   * the archive, so writes on the new path keep reaching the old table until it is dropped.
   */
  followers: ResolvedCopyJob[];
  /**
   * Jobs whose sync ends with the move, in its transaction: a write on an old table either reaches the new one or
   * fails once the table has moved, never lands unsynced in a table about to be archived.
   */
  dropping?: ResolvedCopyJob[];
}

/** Where a table lives while archived. */
function archived(table: string): TableRef {
  return { schema: ARCHIVE_SCHEMA, name: parseTableRef(table).name };
}

/** The tables a job's sync writes on the old side: its source table, or the tables a query source reads. */
function oldSide(job: ResolvedCopyJob): string[] {
  if (job.from) return [job.from];
  return [...new Set([...(job.syncFrom ?? []).map((f) => f.table), ...(job.writeBack ?? []).map((w) => w.table)])];
}

interface KeptSequence {
  schema: string;
  name: string;
  column: string;
}

/**
 * Sequences the table owns (serial columns). ALTER TABLE … SET SCHEMA would carry them into the archive and the final
 * DROP TABLE would drop them, yet the new table usually takes its ids from the same sequence (a default, or the
 * application's nextval('…_seq')). So they are released (OWNED BY NONE) and stay where they are; a restore owns them
 * again.
 */
async function releaseOwnedSequences(c: PoolClient, table: TableRef): Promise<KeptSequence[]> {
  const r = await c.query(
    `SELECT sn.nspname AS schema, s.relname AS name, a.attname AS column
       FROM pg_depend d
       JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
       JOIN pg_namespace sn ON sn.oid = s.relnamespace
       JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
        AND d.refobjid = $1::regclass AND d.deptype = 'a'`,
    [quoteTable(table)],
  );
  const kept = r.rows as KeptSequence[];
  for (const q of kept) await c.query(`ALTER SEQUENCE ${quoteTable(q)} OWNED BY NONE`);
  return kept;
}

/**
 * Takes the locks a trigger change or a move needs in the order the application's own writes take them after
 * cut-over: a write on the new table fires the reverse sync, which writes the old one. Locking the new tables first
 * means such a write either finishes before us or waits for us whole; locking the old table first (as DROP TRIGGER
 * or SET SCHEMA alone would) lets the two wait on each other until PostgreSQL kills one as a deadlock — often the
 * application's.
 */
async function lockInAppOrder(c: PoolClient, tables: (string | TableRef)[]): Promise<void> {
  for (const t of tables) {
    const ref = quoteTable(t);
    if ((await c.query(`SELECT to_regclass($1) IS NOT NULL AS x`, [ref])).rows[0].x)
      await c.query(`LOCK TABLE ${ref} IN ACCESS EXCLUSIVE MODE`);
  }
}

/**
 * Re-points a job's reverse sync at wherever the old tables it writes now are (same transaction as the move): `at`
 * gives a table's current place.
 */
async function repointReverseSync(c: PoolClient, mapping: CopyMapping, at: (t: TableRef) => TableRef): Promise<void> {
  const moved: CopyMapping = {
    ...mapping,
    source: mapping.source.kind === 'table' ? { kind: 'table', table: at(mapping.source.table) } : mapping.source,
    writeBack: mapping.writeBack.map((w) => ({ ...w, table: at(w.table) })),
  };
  for (const stmt of reverseTriggerDdl(moved)) await c.query(stmt);
}

/** Where a table is once `tables` are archived. */
function placeAfterArchive(tables: string[]): (t: TableRef) => TableRef {
  const moving = new Set(tables.map((t) => quoteTable(t)));
  return (t) => (moving.has(quoteTable(t)) ? { schema: ARCHIVE_SCHEMA, name: t.name } : t);
}

/** Whether a job put triggers on its tables: a sync, or the counter of writes a rollback would discard. */
function hasTriggers(job: ResolvedCopyJob): boolean {
  return job.sync !== 'none' || !!job.discardNewPathWrites;
}

/** The job's sync objects are gone: its tables are no longer held by this run's sync (see preflight's claims). */
async function forgetSync(c: PoolClient, run: RunRef, job: ResolvedCopyJob): Promise<void> {
  await c.query(`DELETE FROM ${S}.sync_jobs WHERE run_key = $1 AND job = $2`, [run.runKey, job.name]);
}

/** The tables of the jobs that put triggers on them, new tables before old ones (lockInAppOrder's order). */
function syncedTables(jobs: ResolvedCopyJob[]): string[] {
  const withTriggers = jobs.filter(hasTriggers);
  return [...withTriggers.map((j) => j.to), ...withTriggers.flatMap(oldSide)];
}

/** In the caller's transaction, its tables locked: drops the jobs' sync triggers and releases their hold. */
async function dropSyncs(c: PoolClient, run: RunRef, jobs: ResolvedCopyJob[]): Promise<void> {
  for (const job of jobs) {
    for (const stmt of dropSyncDdl(job.name, syncIdFor(run.runKey, job.name), job.syncFrom?.length ?? 0)) {
      await c.query(stmt);
    }
    await forgetSync(c, run, job);
  }
}

export function createCleanupActivities(deps: ActivityDeps) {
  return {
    /**
     * Drops the jobs' sync triggers (and write counters), their new tables locked before their old ones, and releases
     * the jobs' hold on their tables.
     */
    async dropSyncTriggers(input: {
      urlEnv: string;
      run: RunRef;
      jobs: ResolvedCopyJob[];
      lockTimeoutMs: number;
    }): Promise<string[]> {
      return activityBody('dropping sync triggers', async () => {
        const pool = await targetPool(deps, input.urlEnv);
        await forwardTransaction(pool, input.run, { lockTimeoutMs: input.lockTimeoutMs }, async (c) => {
          await lockInAppOrder(c, syncedTables(input.jobs));
          await dropSyncs(c, input.run, input.jobs);
        });
        return input.jobs.map((j) => j.name);
      });
    },

    /** Moves the tables into tidemark_archive in one transaction; they stay restorable until dropped. */
    async archiveTables(input: ArchiveInput): Promise<{ archived: string[] }> {
      const { run } = input;
      return activityBody('archiving old tables', async () => {
        const pool = await targetPool(deps, input.urlEnv);
        const done: string[] = [];
        await forwardTransaction(pool, run, { lockTimeoutMs: input.lockTimeoutMs }, async (c) => {
          // Mappings are resolved while the sources are still in place.
          const followers = await Promise.all(
            input.followers.map(async (j) => ({ job: j, mapping: await resolveMapping(c, j, run) })),
          );
          await refuseHeld(c, run, 'archive', input.tables);
          const dropping = input.dropping ?? [];
          await lockInAppOrder(c, [...followers.map((f) => f.job.to), ...syncedTables(dropping), ...input.tables]);
          await dropSyncs(c, run, dropping);
          await c.query(`CREATE SCHEMA IF NOT EXISTS ${A}`);
          for (const t of input.tables) {
            const ref = parseTableRef(t);
            const already = await c.query(`SELECT to_regclass($1) IS NOT NULL AS x`, [quoteTable(archived(t))]);
            const present = await c.query(`SELECT to_regclass($1) IS NOT NULL AS x`, [quoteTable(ref)]);
            if (!present.rows[0].x && already.rows[0].x) continue; // archived by an earlier attempt
            if (!present.rows[0].x) throw failure(F.PlanRuntimeError, `cannot archive ${t}: it does not exist`);
            if (already.rows[0].x) {
              throw failure(F.PlanRuntimeError, `cannot archive ${t}: ${ARCHIVE_SCHEMA}.${ref.name} already exists`);
            }
            const kept = await releaseOwnedSequences(c, ref);
            await c.query(`ALTER TABLE ${quoteTable(ref)} SET SCHEMA ${A}`);
            await c.query(
              `INSERT INTO ${S}.archive (original_schema, table_name, archived_name, migration, run_id, drop_after, kept_sequences)
               VALUES ($1, $2, $3, $4, $5, CASE WHEN $6::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $6::float8 / 1000) END, $7)
               ON CONFLICT (run_id, original_schema, table_name) DO UPDATE SET archived_at = now(), restored_at = NULL, kept_sequences = EXCLUDED.kept_sequences`,
              [
                ref.schema,
                ref.name,
                `${ARCHIVE_SCHEMA}.${ref.name}`,
                run.migration,
                run.runKey,
                input.dropAfterMs ?? null,
                JSON.stringify(kept),
              ],
            );
            if (kept.length) {
              deps.logger.info(
                { table: t, sequences: kept.map((q) => `${q.schema}.${q.name}`) },
                'sequences kept in place',
              );
            }
            done.push(t);
          }
          for (const f of followers) await repointReverseSync(c, f.mapping, placeAfterArchive(input.tables));
        });
        deps.logger.info({ archived: done }, 'tables archived');
        return { archived: done };
      });
    },

    /** Undo of the archive: moves archived tables back where they were; nothing when none is archived. */
    async restoreArchivedTables(input: ArchiveInput): Promise<string> {
      const { run } = input;
      return activityBody('restoring archived tables', async () => {
        const pool = await targetPool(deps, input.urlEnv);
        const restored: string[] = [];
        await withTransaction(pool, { lockTimeoutMs: input.lockTimeoutMs }, async (c) => {
          await lockInAppOrder(c, [...input.followers.map((j) => j.to), ...input.tables.map(archived)]);
          for (const t of input.tables) {
            const ref = parseTableRef(t);
            if (!(await c.query(`SELECT to_regclass($1) IS NOT NULL AS x`, [quoteTable(archived(t))])).rows[0].x)
              continue;
            await c.query(`ALTER TABLE ${quoteTable(archived(t))} SET SCHEMA ${quoteIdent(ref.schema)}`);
            const rec = await c.query(
              `UPDATE ${S}.archive SET restored_at = now() WHERE run_id = $1 AND original_schema = $2 AND table_name = $3 RETURNING kept_sequences`,
              [run.runKey, ref.schema, ref.name],
            );
            // The sequences released at the archive belong to the table again, as before the migration.
            for (const q of (rec.rows[0]?.kept_sequences ?? []) as KeptSequence[]) {
              if ((await c.query(`SELECT to_regclass($1) IS NOT NULL AS x`, [quoteTable(q)])).rows[0].x) {
                await c.query(`ALTER SEQUENCE ${quoteTable(q)} OWNED BY ${quoteTable(ref)}.${quoteIdent(q.column)}`);
              }
            }
            restored.push(t);
          }
          for (const job of input.followers) {
            // Back in place: the reverse sync writes to the original table again.
            await repointReverseSync(c, await resolveMapping(c, job, run), (t) => t);
          }
        });
        return restored.length ? `moved back: ${restored.join(', ')}` : 'nothing archived';
      });
    },

    /** Drops archived tables for good (after dropAfter), with the sync of the jobs that followed them there. */
    async dropArchivedTables(input: ArchiveInput): Promise<{ dropped: string[] }> {
      const { run } = input;
      return activityBody('dropping archived tables', async () => {
        const pool = await targetPool(deps, input.urlEnv);
        const dropped: string[] = [];
        await forwardTransaction(pool, run, { lockTimeoutMs: input.lockTimeoutMs }, async (c) => {
          await lockInAppOrder(c, [...input.followers.map((j) => j.to), ...input.tables.map(archived)]);
          for (const job of input.followers) {
            for (const stmt of dropSyncDdl(job.name, syncIdFor(run.runKey, job.name))) await c.query(stmt);
            await forgetSync(c, run, job);
          }
          for (const t of input.tables) {
            const ref = parseTableRef(t);
            await c.query(`DROP TABLE IF EXISTS ${quoteTable(archived(t))}`);
            await c.query(
              `UPDATE ${S}.archive SET dropped_at = now() WHERE run_id = $1 AND original_schema = $2 AND table_name = $3`,
              [run.runKey, ref.schema, ref.name],
            );
            dropped.push(t);
          }
        });
        return { dropped };
      });
    },

    async runCleanupSql(input: {
      urlEnv: string;
      run: RunRef;
      sql: SqlSource;
      lockTimeoutMs: number;
    }): Promise<string> {
      return activityBody(`cleanup SQL ${input.sql.path}`, async () => {
        const pool = await targetPool(deps, input.urlEnv);
        await forwardTransaction(pool, input.run, { lockTimeoutMs: input.lockTimeoutMs }, async (c) =>
          c.query(await scriptText(c, input.sql)),
        );
        return `${input.sql.path} (sha256 ${input.sql.sha256.slice(0, 12)})`;
      });
    },
  };
}
