// Creates tidemark's own bookkeeping objects (SPEC §5) in a target database, idempotently and once per pool.
import type { Pool } from 'pg';
import { FLAGS_CHANNEL, TIDEMARK_SCHEMA } from './names';
import { quoteIdent, quoteLiteral } from './quote';
import { withAdvisoryLock } from './tx';

const S = quoteIdent(TIDEMARK_SCHEMA);

export const BOOTSTRAP_DDL: string[] = [
  `CREATE SCHEMA IF NOT EXISTS ${S}`,
  `CREATE TABLE IF NOT EXISTS ${S}.history (
     id bigserial PRIMARY KEY,
     migration text NOT NULL,
     workflow_id text NOT NULL,
     run_id text NOT NULL,
     step_id text NOT NULL,
     checksum text NOT NULL,
     down_checksum text NOT NULL,
     transactional boolean NOT NULL,
     applied_at timestamptz NOT NULL DEFAULT now(),
     duration_ms integer,
     status text NOT NULL DEFAULT 'applied' CHECK (status IN ('applied', 'rolled-back')),
     rolled_back_at timestamptz,
     UNIQUE (run_id, step_id)
   )`,
  // The ledger across runs: a step of a plan is applied once, whichever run applied it; schema and cleanup steps alike.
  `ALTER TABLE ${S}.history ADD COLUMN IF NOT EXISTS phase text NOT NULL DEFAULT 'schema'`,
  `ALTER TABLE ${S}.history ADD COLUMN IF NOT EXISTS rolled_back_by text`,
  // A database whose history already holds a step applied twice by one plan keeps working (the ledger reads the
  // first); it only goes without the index, and says so.
  `DO $tidemark$ BEGIN
     CREATE UNIQUE INDEX IF NOT EXISTS history_applied_once ON ${S}.history (migration, step_id) WHERE status = 'applied';
   EXCEPTION WHEN unique_violation THEN
     RAISE WARNING 'tidemark.history holds a step applied twice by one plan: its ledger is not enforced by an index';
   END $tidemark$`,
  `CREATE TABLE IF NOT EXISTS ${S}.flags (
     name text PRIMARY KEY,
     rollout_percentage integer NOT NULL DEFAULT 0 CHECK (rollout_percentage BETWEEN 0 AND 100),
     updated_at timestamptz NOT NULL DEFAULT now(),
     updated_by text
   )`,
  `CREATE OR REPLACE FUNCTION ${S}.notify_flag_change() RETURNS trigger LANGUAGE plpgsql AS $tidemark$
   BEGIN
     PERFORM pg_notify(${quoteLiteral(FLAGS_CHANNEL)},
       json_build_object('name', NEW.name, 'rollout_percentage', NEW.rollout_percentage, 'updated_at', NEW.updated_at)::text);
     RETURN NULL;
   END $tidemark$`,
  `DROP TRIGGER IF EXISTS flags_notify ON ${S}.flags`,
  `CREATE TRIGGER flags_notify AFTER INSERT OR UPDATE ON ${S}.flags FOR EACH ROW EXECUTE FUNCTION ${S}.notify_flag_change()`,
  `CREATE TABLE IF NOT EXISTS ${S}.copy_progress (
     run_id text NOT NULL,
     workflow_id text NOT NULL,
     job text NOT NULL,
     range_index integer NOT NULL,
     range_after text,
     range_up_to text,
     cursor text,
     rows_copied bigint NOT NULL DEFAULT 0,
     batches bigint NOT NULL DEFAULT 0,
     done boolean NOT NULL DEFAULT false,
     updated_at timestamptz NOT NULL DEFAULT now(),
     PRIMARY KEY (run_id, job, range_index)
   )`,
  `CREATE TABLE IF NOT EXISTS ${S}.copy_control (
     run_id text PRIMARY KEY,
     paused boolean NOT NULL DEFAULT false,
     pause_reason text,
     batch_size integer,
     delay_ms integer,
     updated_at timestamptz NOT NULL DEFAULT now()
   )`,
  // The operator's latency budget for the copy (tidemark throttle --max-latency-increase): a fraction, or Infinity.
  `ALTER TABLE ${S}.copy_control ADD COLUMN IF NOT EXISTS max_latency_increase double precision`,
  `CREATE TABLE IF NOT EXISTS ${S}.reports (
     id bigserial PRIMARY KEY,
     migration text NOT NULL,
     workflow_id text NOT NULL,
     run_id text NOT NULL,
     kind text NOT NULL,
     report jsonb NOT NULL,
     created_at timestamptz NOT NULL DEFAULT now()
   )`,
  `CREATE TABLE IF NOT EXISTS ${S}.archive (
     original_schema text NOT NULL,
     table_name text NOT NULL,
     archived_name text NOT NULL,
     migration text NOT NULL,
     run_id text NOT NULL,
     archived_at timestamptz NOT NULL DEFAULT now(),
     drop_after timestamptz,
     dropped_at timestamptz,
     restored_at timestamptz,
     PRIMARY KEY (run_id, original_schema, table_name)
   )`,
  // Sequences the table owned, released so they stay in place while it is archived (see cleanup.ts).
  `ALTER TABLE ${S}.archive ADD COLUMN IF NOT EXISTS kept_sequences jsonb NOT NULL DEFAULT '[]'`,
  // One row per migration run; fenced_at set when it starts rolling back (see fence.ts).
  `CREATE TABLE IF NOT EXISTS ${S}.runs (
     run_key text PRIMARY KEY,
     migration text NOT NULL,
     workflow_id text NOT NULL,
     started_at timestamptz NOT NULL DEFAULT now(),
     fenced_at timestamptz
   )`,
  // What each copy job's sync installed, so its undo knows what to remove (registered before the install runs).
  `CREATE TABLE IF NOT EXISTS ${S}.sync_jobs (
     run_key text NOT NULL,
     job text NOT NULL,
     sync_id text NOT NULL,
     sources text[] NOT NULL,
     target text NOT NULL,
     target_was_empty boolean NOT NULL,
     installed_at timestamptz NOT NULL DEFAULT now(),
     PRIMARY KEY (run_key, job)
   )`,
  // Each run's SQL scripts by sha256, stored once at preflight (see plan/scripts.ts).
  `CREATE TABLE IF NOT EXISTS ${S}.scripts (
     sha256 text PRIMARY KEY,
     path text NOT NULL,
     sql text NOT NULL,
     stored_at timestamptz NOT NULL DEFAULT now()
   )`,
  // The application's writes to a target whose plan accepts losing them on rollback (see copy/sql.ts writeCountDdl).
  `CREATE TABLE IF NOT EXISTS ${S}.new_path_writes (
     run_key text NOT NULL,
     job text NOT NULL,
     op text NOT NULL,
     rows bigint NOT NULL,
     at timestamptz NOT NULL DEFAULT now()
   )`,
  // Blue-green change capture (phases/copy/capture-sql.ts): every write to a captured table, logged in the writer's
  // own transaction, until the other database has applied it.
  `CREATE TABLE IF NOT EXISTS ${S}.changes (
     seq bigserial PRIMARY KEY,
     stream text NOT NULL,
     op char(1) NOT NULL,
     key jsonb,
     row jsonb,
     stamp timestamptz NOT NULL DEFAULT clock_timestamp(),
     origin text NOT NULL DEFAULT ''
   )`,
  `CREATE INDEX IF NOT EXISTS changes_stream_seq ON ${S}.changes (stream, seq)`,
  // Per row of a captured table: the stamp of the last write this database holds of it, its own or one applied from
  // the other side. Both databases keep the write with the highest stamp (last writer wins), so they converge even when
  // a row is written on both at once.
  `CREATE TABLE IF NOT EXISTS ${S}.row_clock (
     sync_id text NOT NULL,
     key jsonb NOT NULL,
     stamp timestamptz NOT NULL,
     origin text NOT NULL,
     PRIMARY KEY (sync_id, key)
   )`,
  // What each capture logs and how its row images read (their columns and types, taken when it was installed): the
  // applier needs them even after the captured table is gone (a rollback drops the new tables before the last drain).
  `CREATE TABLE IF NOT EXISTS ${S}.captures (
     run_key text NOT NULL,
     job text NOT NULL,
     sync_id text NOT NULL,
     direction text NOT NULL,
     stream text NOT NULL,
     table_name text NOT NULL,
     spec jsonb NOT NULL,
     installed_at timestamptz NOT NULL DEFAULT now(),
     PRIMARY KEY (run_key, job, direction)
   )`,
  // On the applying side: what each stream's applier has applied (for status and the benchmarks).
  `CREATE TABLE IF NOT EXISTS ${S}.apply_progress (
     stream text PRIMARY KEY,
     applied bigint NOT NULL DEFAULT 0,
     skipped bigint NOT NULL DEFAULT 0,
     batches bigint NOT NULL DEFAULT 0,
     updated_at timestamptz NOT NULL DEFAULT now()
   )`,
  // The settle pass's work list (phases/copy/activities.ts settleCopy): while a copy within one database runs, its sync
  // triggers log the key of every row that leaves the source (a delete, a key change, a row leaving a reverse sync's
  // slice; a null key for a truncate), in the writer's transaction. The settle pass then looks at those keys only,
  // not at the whole table. `sync_settling` says that a sync's triggers log (installed with it, in one transaction).
  `CREATE TABLE IF NOT EXISTS ${S}.sync_removals (
     sync_id text NOT NULL,
     seq bigserial,
     key jsonb,
     PRIMARY KEY (sync_id, seq)
   )`,
  // The triggers run as the application's role, which may have no privilege in this schema: it may add to the list,
  // nothing else (a key added by anyone only makes the settle pass look at one more key).
  `DO $tidemark$ BEGIN
     GRANT USAGE ON SCHEMA ${S} TO PUBLIC;
     GRANT INSERT ON ${S}.sync_removals TO PUBLIC;
     EXECUTE format('GRANT USAGE ON SEQUENCE %s TO PUBLIC', pg_get_serial_sequence(${quoteLiteral(`${S}.sync_removals`)}, 'seq'));
   EXCEPTION WHEN insufficient_privilege THEN
     RAISE WARNING 'tidemark: cannot grant INSERT on tidemark.sync_removals to PUBLIC: an application role without it cannot delete from a table tidemark copies';
   END $tidemark$`,
  `CREATE TABLE IF NOT EXISTS ${S}.sync_settling (
     sync_id text PRIMARY KEY,
     since timestamptz NOT NULL DEFAULT now()
   )`,
  // How far a non-transactional step's script got, so a retry goes on from there (phases/schema/resumable.ts).
  `CREATE TABLE IF NOT EXISTS ${S}.step_progress (
     run_id text NOT NULL,
     step_id text NOT NULL,
     direction text NOT NULL,
     statements_done int NOT NULL,
     PRIMARY KEY (run_id, step_id, direction)
   )`,
];

const TABLES = [
  'history',
  'flags',
  'copy_progress',
  'copy_control',
  'reports',
  'archive',
  'runs',
  'sync_jobs',
  'new_path_writes',
  'changes',
  'row_clock',
  'captures',
  'apply_progress',
  'sync_removals',
  'sync_settling',
  'step_progress',
];

const done = new WeakMap<Pool, Promise<void>>();

/**
 * Ensures the tidemark schema exists; concurrent workers serialize on an advisory lock. After the first bootstrap
 * through a pool, each call costs one catalog lookup, so a database dropped and re-created under a running worker
 * (a test environment reset, a restore) is bootstrapped again instead of failing on a missing table.
 */
export async function ensureTidemarkSchema(pool: Pool): Promise<void> {
  const previous = done.get(pool);
  if (previous) {
    await previous;
    const r = await pool.query(
      `SELECT bool_and(to_regclass($1 || '.' || t) IS NOT NULL) AS ok FROM unnest($2::text[]) t`,
      [quoteIdent(TIDEMARK_SCHEMA), TABLES],
    );
    if (r.rows[0].ok) return;
    if (done.get(pool) === previous) done.delete(pool);
  }
  let p = done.get(pool);
  if (!p) {
    p = withAdvisoryLock(pool, 'tidemark:bootstrap', async (c) => {
      for (const ddl of BOOTSTRAP_DDL) await c.query(ddl);
    });
    p.catch(() => done.delete(pool));
    done.set(pool, p);
  }
  return p;
}
