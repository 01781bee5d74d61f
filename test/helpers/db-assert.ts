// Assertions about databases that read like what a user checks: schema as pg_dump sees it, table contents, mappings.
import { execFileSync } from 'node:child_process';
import { findPgTool, libpqEnv } from '../../src/db/pgtools';
import { quoteIdent, quoteTable } from '../../src/db/quote';
import type { TestDb } from './env';

/** `pg_dump --schema-only` without tidemark's own schemas and without lines that differ between dumps. */
export function schemaDump(db: TestDb): string {
  const out = execFileSync(
    findPgTool('pg_dump')!,
    ['--schema-only', '--no-owner', '--exclude-schema=tidemark', '--exclude-schema=tidemark_archive'],
    {
      env: { ...process.env, ...libpqEnv(db.url) },
      encoding: 'utf8',
    },
  );
  return out
    .split('\n')
    .filter((l) => !/^\\(un)?restrict /.test(l) && !/^-- Dumped (from|by)/.test(l))
    .join('\n');
}

/** Every user table (outside tidemark's schemas) with its rows, ordered, as JSON text. */
export async function allTableContents(db: TestDb): Promise<Record<string, string>> {
  const tables = await db.query<{ s: string; t: string }>(
    `SELECT table_schema AS s, table_name AS t FROM information_schema.tables
      WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema', 'tidemark', 'tidemark_archive')
      ORDER BY 1, 2`,
  );
  const out: Record<string, string> = {};
  for (const { s, t } of tables) {
    const rows = await db.query(`SELECT * FROM ${quoteTable({ schema: s, name: t })} ORDER BY 1`);
    out[`${s}.${t}`] = JSON.stringify(rows);
  }
  return out;
}

/** Rows in one query's result that the other lacks, both ways (0 and 0 means identical as sets). */
export async function exceptBothWays(db: TestDb, a: string, b: string): Promise<{ onlyInA: number; onlyInB: number }> {
  const [r] = await db.query<{ a: number; b: number }>(
    `SELECT (SELECT count(*) FROM ((${a}) EXCEPT ALL (${b})) x)::int AS a, (SELECT count(*) FROM ((${b}) EXCEPT ALL (${a})) y)::int AS b`,
  );
  return { onlyInA: r.a, onlyInB: r.b };
}

export async function flagPercent(db: TestDb, flag: string): Promise<number | null> {
  const r = await db
    .query<{ p: number }>(`SELECT rollout_percentage AS p FROM tidemark.flags WHERE name = $1`, [flag])
    .catch(() => []);
  return r[0]?.p ?? null;
}

export async function tableExists(db: TestDb, table: string): Promise<boolean> {
  const [r] = await db.query<{ x: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS x`, [
    table.includes('.') ? table : quoteIdent(table),
  ]);
  return r.x;
}

/**
 * Counts every row write `table` commits (inserts and updates, by statement triggers), so work done twice shows up;
 * `rowWrites` reads the count.
 */
export async function countRowWrites(db: TestDb, table: string): Promise<void> {
  await db.query(`
    CREATE TABLE copy_writes (n bigint NOT NULL);
    CREATE FUNCTION count_writes() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO copy_writes SELECT count(*) FROM new_rows; RETURN NULL; END $$;
    CREATE TRIGGER count_inserts AFTER INSERT ON ${table} REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_writes();
    CREATE TRIGGER count_updates AFTER UPDATE ON ${table} REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_writes();`);
}

export async function rowWrites(db: TestDb): Promise<number> {
  const [{ writes }] = await db.query<{ writes: number }>(`SELECT coalesce(sum(n), 0)::int AS writes FROM copy_writes`);
  return writes;
}
