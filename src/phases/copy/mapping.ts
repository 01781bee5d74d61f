// Resolves a plan's copy job against the catalog into the CopyMapping the SQL builders need.
import type { ApplicationFailure } from '@temporalio/common';
import type { Pool, PoolClient } from 'pg';
import {
  columnCollations,
  functionContext,
  hasUniqueIndexOn,
  inheritanceOf,
  tableColumns,
  type ColumnInfo,
} from '../../db/catalog';
import { syncIdFor } from '../../db/names';
import { parseTableRef, quoteIdent, quoteTable, type TableRef } from '../../db/quote';
import { F, failure } from '../../migration/failures';
import { jobKeys, syncKeyExprs } from '../../plan/keys';
import type { ResolvedCopyJob } from '../../plan/types';
import type { CopyMapping, KeyColumn, ReverseColumn, WriteBackTable } from './sql';

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

const listed = (cols: string[]) => cols.map((c) => `"${c}"`).join(', ');

/** A collation as it sorts: the C locales (C, POSIX, C.UTF-8) sort by code point alike. */
function sortOrder(collation: string | null | undefined): string | null | undefined {
  return collation && /^c:(c|posix|c\.utf-?8)$/i.test(collation) ? 'c:C' : collation;
}

/** `i:en` as people say it: `ICU locale en`. */
function named(collation: string): string {
  const [provider, ...locale] = collation.split(':');
  return `${{ c: 'libc', i: 'ICU', b: 'builtin' }[provider] ?? provider} locale ${locale.join(':')}`;
}

const treeRefusal = (side: string, t: TableRef, how: string) =>
  `${side} ${quoteTable(t)} ${how}: a write to its rows through another table of the tree would not fire the ` +
  `sync triggers, and the other side would miss it. Sync a plain table, or copy with sync: none`;

/**
 * Why a job's table source cannot be synced exactly, or undefined; preflight asks too, before anything changes. Its
 * sync triggers must see every write of its rows: not a partitioned table, a partition or part of an inheritance
 * tree, whose rows a statement on another table of the tree writes without firing them. Its key must be unique at
 * every statement, not only at commit (DEFERRABLE): two rows sharing a key for a while cannot be replayed by key.
 */
export async function sourceSyncRefusal(
  db: Queryable,
  job: ResolvedCopyJob,
  keyNames: { source: string[] } = jobKeys(job),
): Promise<string | undefined> {
  if (job.sync === 'none' || !job.from) return undefined;
  const source = parseTableRef(job.from);
  const how = await inheritanceOf(db, source);
  if (how) return treeRefusal('source', source, how);
  const keyed = await hasUniqueIndexOn(db, source, keyNames.source);
  if (keyed && !(await hasUniqueIndexOn(db, source, keyNames.source, { immediate: true }))) {
    return (
      `the key (${listed(keyNames.source)}) of ${job.from} is unique only at commit (DEFERRABLE): a transaction may ` +
      `give two rows one key for a while, which the sync triggers cannot replay by key. Make its constraint NOT ` +
      `DEFERRABLE, or add a unique index on the key`
    );
  }
  return undefined;
}

/**
 * A key column of the target must be filled from the matching key column of the source, as it is (ranges, the
 * triggers and validation match rows by it): the problem with `columns`, the mapping given, or undefined.
 */
export function keyFillRefusal(
  columns: Record<string, string>,
  keyNames: { source: string[]; target: string[] },
): string | undefined {
  for (const [i, t] of keyNames.target.entries()) {
    const given = columns[t];
    if (given !== undefined && bareColumn(given) !== keyNames.source[i])
      return `key column "${t}" must be filled from source key "${keyNames.source[i]}", got "${given}"`;
  }
  return undefined;
}

/**
 * What a table source must be for its copy to be exact (besides sourceSyncRefusal): with a reverse sync, the target
 * must not be in an inheritance tree either. And each key column must sort alike on both sides: ranges and chunks
 * bound the key on both, and bounds that sort differently pick different rows (validation would report false
 * differences; a whole-table settle pass would delete rows).
 */
async function checkSyncable(
  db: Queryable,
  targetDb: Queryable,
  job: ResolvedCopyJob,
  keyNames: { source: string[]; target: string[] },
): Promise<void> {
  const source = parseTableRef(job.from!);
  const target = parseTableRef(job.to);
  const refusal = await sourceSyncRefusal(db, job, keyNames);
  if (refusal) throw planError(job.name, refusal);
  if (job.sync === 'bidirectional') {
    const how = await inheritanceOf(targetDb, target);
    if (how) throw planError(job.name, treeRefusal('target', target, how));
  }
  const sc = await columnCollations(db, source, keyNames.source);
  const tc = await columnCollations(targetDb, target, keyNames.target);
  keyNames.source.forEach((k, i) => {
    const a = sortOrder(sc.get(k));
    const b = sortOrder(tc.get(keyNames.target[i]));
    if (a && b && a !== b) {
      throw planError(
        job.name,
        `key column "${keyNames.target[i]}" sorts by ${named(b)} in ${job.to} but "${k}" by ${named(a)} in ` +
          `${job.from}: key ranges ` +
          `would pick different rows on the two sides. Declare the target's key column with the source's collation ` +
          `(COLLATE)`,
      );
    }
  });
}

/**
 * `run`: the migration run whose sync objects the mapping names (needed to build triggers, not to read).
 * `targetDb`: where the target table is, when it is in another database than the source (blue-green).
 */
export async function resolveMapping(
  db: Queryable,
  job: ResolvedCopyJob,
  run?: { runKey: string },
  targetDb: Queryable = db,
): Promise<CopyMapping> {
  const target = parseTableRef(job.to);
  const tcols = await tableColumns(targetDb, target);
  if (!tcols.length) throw planError(job.name, `target table ${job.to} does not exist (create it in a schema step)`);
  const tByName = new Map(tcols.map((c) => [c.name, c]));

  let scols: ColumnInfo[] = [];
  if (job.from) {
    scols = await tableColumns(db, parseTableRef(job.from));
    if (!scols.length) throw planError(job.name, `source table ${job.from} does not exist`);
  }
  const sByName = new Map(scols.map((c) => [c.name, c]));
  const keyNames = jobKeys(job);
  if (keyNames.source.length !== keyNames.target.length) {
    throw planError(job.name, 'the key has a different number of columns in the source and in the target');
  }
  const slice = Object.entries(job.slice ?? {}).map(([column, value]) => ({ column, value }));

  // Target column → expression over the source row: the plan's, or every same-named column. Key columns are filled
  // from the source's key columns (also when they have other names in the target), slice columns with their values.
  const columnMap: Record<string, string> =
    job.columns ??
    Object.fromEntries(
      tcols.filter((c) => !c.generated && sByName.has(c.name)).map((c) => [c.name, quoteIdent(c.name)]),
    );
  const keyFill = keyFillRefusal(columnMap, keyNames);
  if (keyFill) throw planError(job.name, keyFill);
  keyNames.target.forEach((t, i) => (columnMap[t] ??= quoteIdent(keyNames.source[i])));
  for (const s of slice) columnMap[s.column] = s.value;

  const columns = Object.entries(columnMap).map(([name, expr]) => {
    const col = tByName.get(name);
    if (!col) throw planError(job.name, `target ${job.to} has no column "${name}"`);
    if (col.generated) throw planError(job.name, `target column "${name}" is generated and cannot be written`);
    return { target: name, expr, type: col.type };
  });

  if (job.from) {
    const missing = keyNames.source.filter((k) => !sByName.has(k));
    if (missing.length) throw planError(job.name, `source ${job.from} has no key column ${listed(missing)}`);
  }
  const conflict = [...slice.map((s) => s.column), ...keyNames.target];
  if (!(await hasUniqueIndexOn(targetDb, target, conflict, { immediate: true }))) {
    const deferrable = await hasUniqueIndexOn(targetDb, target, conflict);
    throw planError(
      job.name,
      `target ${job.to} needs a unique index or primary key on exactly (${listed(conflict)})` +
        (deferrable ? ', checked at once: its constraint is DEFERRABLE, which ON CONFLICT cannot use' : ''),
    );
  }
  if (job.from) await checkSyncable(db, targetDb, job, keyNames);

  const keys: KeyColumn[] = keyNames.source.map((source, i) => ({
    source,
    target: keyNames.target[i],
    // Cursor values are cast to the source's key type (for a query source, the target's).
    type: (job.from ? sByName.get(source)! : tByName.get(keyNames.target[i])!).type,
  }));

  let reverse: ReverseColumn[] = [];
  if (job.sync === 'bidirectional' && job.from) {
    if (!(await hasUniqueIndexOn(db, parseTableRef(job.from), keyNames.source))) {
      throw planError(
        job.name,
        `bidirectional sync needs a unique index or primary key on ${job.from}(${listed(keyNames.source)})`,
      );
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

  const writeBack: WriteBackTable[] = [];
  for (const w of job.sync === 'bidirectional' ? (job.writeBack ?? []) : []) {
    const table = parseTableRef(w.table);
    const cols = await tableColumns(db, table);
    if (!cols.length) throw planError(job.name, `writeBack: table ${w.table} does not exist`);
    const names = new Set(cols.map((c) => c.name));
    const key = Array.isArray(w.key) ? w.key : [w.key];
    const unknown = [...Object.keys(w.columns), ...Object.keys(w.owner ?? {}), ...key].filter((c) => !names.has(c));
    if (unknown.length)
      throw planError(job.name, `writeBack: ${w.table} has no column ${listed([...new Set(unknown)])}`);
    if (!(await hasUniqueIndexOn(db, table, key))) {
      throw planError(job.name, `writeBack needs a unique index or primary key on ${w.table}(${listed(key)})`);
    }
    const pairs = (r: Record<string, string>) => Object.entries(r).map(([name, expr]) => ({ name, expr }));
    writeBack.push({
      table,
      key,
      columns: pairs(w.columns),
      owner: w.owner ? pairs(w.owner) : key.map((k) => ({ name: k, expr: w.columns[k] })),
      unfold: w.unfold,
      where: w.where,
    });
  }

  return {
    job: job.name,
    syncId: run ? syncIdFor(run.runKey, job.name) : undefined,
    // The trigger functions run with what the expressions resolve in here (sql.ts functionClauses).
    functions: await functionContext(db),
    source: job.from ? { kind: 'table', table: parseTableRef(job.from) } : { kind: 'query', sql: job.query! },
    target,
    keys,
    columns,
    reverse,
    writeBack,
    syncing: job.sync !== 'none',
    syncFrom: (job.syncFrom ?? []).map((s) => ({ table: parseTableRef(s.table), keyExprs: syncKeyExprs(s.key) })),
    slice,
  };
}
