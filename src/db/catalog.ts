// Reads what the database says about tables (columns, types, keys, size); the inspector never writes.
import type { Pool, PoolClient } from 'pg';
import { parseTableRef, type TableRef } from './quote';

type Queryable = Pool | PoolClient;

export interface ColumnInfo {
  name: string;
  /** format_type() of the column, e.g. `numeric(12,2)`, usable in a cast. */
  type: string;
  notNull: boolean;
  hasDefault: boolean;
  generated: boolean;
}

export async function tableExists(db: Queryable, ref: TableRef | string): Promise<boolean> {
  const t = typeof ref === 'string' ? parseTableRef(ref) : ref;
  const r = await db.query(
    `SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r','p')`,
    [t.schema, t.name],
  );
  return r.rowCount! > 0;
}

export async function tableColumns(db: Queryable, ref: TableRef | string): Promise<ColumnInfo[]> {
  const t = typeof ref === 'string' ? parseTableRef(ref) : ref;
  const r = await db.query(
    `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS "notNull",
            a.atthasdef AS "hasDefault", a.attgenerated <> '' AS generated
       FROM pg_attribute a
       JOIN pg_class c ON c.oid = a.attrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum`,
    [t.schema, t.name],
  );
  return r.rows as ColumnInfo[];
}

/** True when a unique index (or primary key) of the table has exactly `columns` as its key (in any order). */
export async function hasUniqueIndexOn(
  db: Queryable,
  ref: TableRef | string,
  columns: string | string[],
  { immediate = false }: { immediate?: boolean } = {},
): Promise<boolean> {
  const t = typeof ref === 'string' ? parseTableRef(ref) : ref;
  const cols = Array.isArray(columns) ? columns : [columns];
  const r = await db.query(
    `SELECT 1
       FROM pg_index i
       JOIN pg_class c ON c.oid = i.indrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique AND i.indisvalid AND (i.indimmediate OR NOT $4)
        AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = cardinality($3::text[])
        AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
               FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) AS k(attnum)
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum)
            = (SELECT array_agg(x ORDER BY x) FROM unnest($3::text[]) AS x)`,
    [t.schema, t.name, cols, immediate],
  );
  return r.rowCount! > 0;
}

/**
 * How writes can reach a table's rows without firing its own statement triggers: it is partitioned (a write straight
 * to a partition fires only the partition's), a partition, or in a legacy inheritance tree. Undefined when none.
 */
export async function inheritanceOf(db: Queryable, ref: TableRef | string): Promise<string | undefined> {
  const t = typeof ref === 'string' ? parseTableRef(ref) : ref;
  const r = await db.query(
    `SELECT c.relkind = 'p' AS partitioned, c.relispartition AS partition,
            EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid) AS parent,
            EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid) AS child
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2`,
    [t.schema, t.name],
  );
  const x = r.rows[0] as { partitioned: boolean; partition: boolean; parent: boolean; child: boolean } | undefined;
  if (!x) return undefined;
  if (x.partitioned) return 'is partitioned';
  if (x.partition) return 'is a partition';
  if (x.parent) return 'has inheriting tables';
  if (x.child) return 'inherits from another table';
  return undefined;
}

/**
 * The collation each of `columns` sorts by, in terms that compare across databases (provider and locale; the
 * database's own for its default), null for a type without one. Keyed by column name.
 */
export async function columnCollations(
  db: Queryable,
  ref: TableRef | string,
  columns: string[],
): Promise<Map<string, string | null>> {
  const t = typeof ref === 'string' ? parseTableRef(ref) : ref;
  // Read through to_jsonb: the locale columns are named differently across server versions.
  const r = await db.query(
    `SELECT a.attname AS name,
            CASE WHEN a.attcollation = 0 THEN NULL
                 WHEN co.collname = 'default' THEN
                   (SELECT coalesce(d.j->>'datlocprovider', 'c') || ':' ||
                           coalesce(d.j->>'datlocale', d.j->>'daticulocale', d.j->>'datcollate')
                      FROM (SELECT to_jsonb(x) AS j FROM pg_database x WHERE x.datname = current_database()) d)
                 ELSE co.j->>'collprovider' || ':' ||
                      coalesce(co.j->>'colllocale', co.j->>'colliculocale', co.j->>'collcollate')
            END AS collation
       FROM pg_attribute a
       JOIN pg_class c ON c.oid = a.attrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN LATERAL (SELECT x.collname, to_jsonb(x) AS j FROM pg_collation x WHERE x.oid = a.attcollation) co
         ON true
      WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = ANY ($3::text[])`,
    [t.schema, t.name, columns],
  );
  return new Map(r.rows.map((x: { name: string; collation: string | null }) => [x.name, x.collation]));
}

/** The planner's row estimate (cheap; refreshed by ANALYZE/autovacuum), never negative. */
export async function estimatedRows(db: Queryable, ref: TableRef | string): Promise<number> {
  const t = typeof ref === 'string' ? parseTableRef(ref) : ref;
  const r = await db.query(
    `SELECT c.reltuples::float8 AS n, pg_relation_size(c.oid)::float8 AS bytes, c.relpages::float8 AS pages
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
    [t.schema, t.name],
  );
  if (!r.rowCount) return 0;
  const { n, bytes, pages } = r.rows[0] as { n: number; bytes: number; pages: number };
  // Scale the last estimate by how much the table grew since it was taken, as the planner does.
  if (n < 0 || pages <= 0) return n < 0 ? Math.round(bytes / 100) : Math.max(0, Math.round(n));
  return Math.max(0, Math.round((n / pages) * (bytes / 8192)));
}

export async function serverVersionNum(db: Queryable): Promise<number> {
  const r = await db.query(`SELECT current_setting('server_version_num')::int AS v`);
  return r.rows[0].v as number;
}

/**
 * How tidemark's trigger functions run in a database (see copy/sql.ts functionClauses): the schemas the plan's
 * expressions resolve in and the TimeZone, as tidemark's own sessions see them (the database's), and whether they may
 * run as their owner. They may not when a schema of that path is open to creation by a login role other than the
 * owner (and superusers): that role could put a function there that the path would pick before the one the plan
 * meant, and run it with the owner's rights. They then run as the writing role, which needs privileges in the
 * tidemark schema and on the other table; `untrusted` says which schema and role.
 */
export interface FunctionContext {
  searchPath: string[];
  timeZone: string;
  definer: boolean;
  untrusted?: string;
}

export async function functionContext(q: Queryable): Promise<FunctionContext> {
  const r = await q.query<{ path: string[]; tz: string; untrusted: string | null }>(
    `SELECT current_schemas(false)::text[] AS path, current_setting('TimeZone') AS tz,
       (SELECT string_agg(x, ', ') FROM (
          SELECT DISTINCT format('schema %I (role %I)', n.nspname, r.rolname) AS x
            FROM pg_namespace n CROSS JOIN pg_roles r
           WHERE n.nspname = ANY (current_schemas(false)) AND r.rolcanlogin AND NOT r.rolsuper
             AND r.rolname <> current_user AND has_schema_privilege(r.oid, n.oid, 'CREATE')
           ORDER BY 1 LIMIT 3) s) AS untrusted`,
  );
  const { path, tz, untrusted } = r.rows[0];
  return { searchPath: path, timeZone: tz, definer: !untrusted, ...(untrusted ? { untrusted } : {}) };
}
