// Resolves a plan's copy job against the catalog into the CopyMapping the SQL builders need.
import type { ApplicationFailure } from '@temporalio/common';
import { F, failure } from '../../migration/failures';
import type { Pool, PoolClient } from 'pg';
import { hasUniqueIndexOn, tableColumns, type ColumnInfo } from '../../db/catalog';
import { syncIdFor } from '../../db/names';
import { parseTableRef, quoteIdent } from '../../db/quote';
import type { CopyMapping, ReverseColumn } from '../copy/sql';
import type { ResolvedCopyJob } from '../../plan/types';

type Queryable = Pool | PoolClient;

function planError(job: string, message: string): ApplicationFailure {
  return failure(F.PlanRuntimeError, `copy job "${job}": ${message}`);
}

/** The column an expression names when it is nothing but a column reference, as PostgreSQL would fold it. */
export function bareColumn(expr: string): string | undefined {
  const e = expr.trim();
  const quoted = /^"((?:[^"]|"")+)"$/.exec(e);
  if (quoted) return quoted[1].replace(/""/g, '"');
  if (/^[A-Za-z_][A-Za-z0-9_$]*$/.test(e)) return e.toLowerCase();
  return undefined;
}

/** `run`: the migration run whose sync objects the mapping names (needed to build triggers, not to read). */
export async function resolveMapping(
  db: Queryable,
  job: ResolvedCopyJob,
  run?: { runKey: string },
): Promise<CopyMapping> {
  const target = parseTableRef(job.to);
  const tcols = await tableColumns(db, target);
  if (!tcols.length) throw planError(job.name, `target table ${job.to} does not exist (create it in a schema step)`);
  const tByName = new Map(tcols.map((c) => [c.name, c]));

  let scols: ColumnInfo[] = [];
  if (job.from) {
    scols = await tableColumns(db, parseTableRef(job.from));
    if (!scols.length) throw planError(job.name, `source table ${job.from} does not exist`);
  }
  const sByName = new Map(scols.map((c) => [c.name, c]));

  const columnMap: Record<string, string> =
    job.columns ??
    Object.fromEntries(
      tcols.filter((c) => !c.generated && sByName.has(c.name)).map((c) => [c.name, quoteIdent(c.name)]),
    );
  if (!(job.key in columnMap)) throw planError(job.name, `the mapping does not include the key column "${job.key}"`);
  if (bareColumn(columnMap[job.key]) !== job.key) {
    throw planError(
      job.name,
      `the key column must map to itself (columns.${job.key}: ${job.key}), got "${columnMap[job.key]}"`,
    );
  }

  const columns = Object.entries(columnMap).map(([name, expr]) => {
    const col = tByName.get(name);
    if (!col) throw planError(job.name, `target ${job.to} has no column "${name}"`);
    if (col.generated) throw planError(job.name, `target column "${name}" is generated and cannot be written`);
    return { target: name, expr, type: col.type };
  });

  if (job.from && !sByName.has(job.key)) throw planError(job.name, `source ${job.from} has no key column "${job.key}"`);
  if (!(await hasUniqueIndexOn(db, target, job.key))) {
    throw planError(job.name, `target ${job.to} needs a unique index or primary key on "${job.key}"`);
  }

  let reverse: ReverseColumn[] = [];
  if (job.sync === 'bidirectional') {
    if (!(await hasUniqueIndexOn(db, parseTableRef(job.from!), job.key))) {
      throw planError(job.name, `bidirectional sync needs a unique index or primary key on ${job.from}("${job.key}")`);
    }
    const bySource = new Map<string, string>();
    for (const c of columns) {
      const src = bareColumn(c.expr);
      if (src && sByName.has(src)) bySource.set(src, quoteIdent(c.target));
    }
    for (const [src, expr] of Object.entries(job.reverse ?? {})) {
      if (!sByName.has(src)) throw planError(job.name, `reverse: source ${job.from} has no column "${src}"`);
      bySource.set(src, expr);
    }
    reverse = [...bySource].map(([source, expr]) => ({ source, expr }));
  }

  const keyType = (job.from ? sByName.get(job.key)! : tByName.get(job.key)!).type;
  return {
    job: job.name,
    syncId: run ? syncIdFor(run.runKey, job.name) : undefined,
    source: job.from ? { kind: 'table', table: parseTableRef(job.from) } : { kind: 'query', sql: job.query! },
    target,
    key: job.key,
    keyType,
    columns,
    reverse,
    syncing: job.sync !== 'none',
    lockRows: job.sync !== 'none' && !job.from,
    syncFrom: (job.syncFrom ?? []).map((s) => ({ table: parseTableRef(s.table), keyExpr: s.key })),
  };
}
