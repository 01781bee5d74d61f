// A schema step that cannot run in one transaction (`transactional: false`) runs statement by statement, and a retry
// (a lock timeout, a lost connection, a worker killed) must go on from where the last attempt stopped: run from the
// top again, its first statement fails with "already exists" and the whole migration rolls back. So:
// - each statement commits with a record of how far the script got (tidemark.step_progress), in one transaction where
//   PostgreSQL allows it; a statement that must run outside one (CREATE INDEX CONCURRENTLY) is recorded right after;
// - a concurrent index build that failed half-way leaves an INVALID index of its name: dropped before it is built
//   again. On a retry, one that exists and is valid was built by the attempt that died before recording it, and a
//   DROP INDEX CONCURRENTLY whose indexes are gone was run by it;
// - the attempt before may still run in the server (its worker was killed; its backend goes on building, or holds a
//   lock this attempt waits for): each attempt names its session after the step, and ends any other of that name
//   first.
import { createHash } from 'node:crypto';
import type { PoolClient } from 'pg';
import { TIDEMARK_SCHEMA } from '../../db/names';
import { quoteIdent, quoteTable } from '../../db/quote';
import type { ParsedStatement } from '../../plan/lint';

const S = quoteIdent(TIDEMARK_SCHEMA);

export interface ProgressKey {
  runKey: string;
  stepId: string;
  direction: 'up' | 'down';
}

/** The application_name of the sessions that run one step's script in one direction, for one run. */
export function stepSessionName(key: ProgressKey): string {
  const h = createHash('sha256').update(`${key.runKey}\0${key.stepId}\0${key.direction}`).digest('hex');
  return `tidemark step ${h.slice(0, 20)}`;
}

/**
 * Ends every other session named after the step in this database (an earlier attempt's, still running in the server),
 * waiting until they are gone. Returns how many it ended.
 */
export async function endStepSessions(c: PoolClient, key: ProgressKey): Promise<number> {
  const name = stepSessionName(key);
  const others = `SELECT pid FROM pg_stat_activity
                   WHERE application_name = $1 AND datname = current_database() AND pid <> pg_backend_pid()`;
  const ended = (await c.query(`SELECT count(pg_terminate_backend(pid))::int AS n FROM (${others}) o`, [name])).rows[0]
    .n as number;
  for (let waited = 0; ended && waited < 30_000; waited += 100) {
    if (!(await c.query(others, [name])).rowCount) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return ended;
}

/** How many statements of the script an earlier attempt committed. */
export async function statementsDone(c: PoolClient, key: ProgressKey): Promise<number> {
  const r = await c.query(
    `SELECT statements_done FROM ${S}.step_progress WHERE run_id = $1 AND step_id = $2 AND direction = $3`,
    [key.runKey, key.stepId, key.direction],
  );
  return (r.rows[0]?.statements_done as number | undefined) ?? 0;
}

function recordQuery(key: ProgressKey, done: number) {
  return {
    text: `INSERT INTO ${S}.step_progress (run_id, step_id, direction, statements_done) VALUES ($1, $2, $3, $4)
           ON CONFLICT (run_id, step_id, direction) DO UPDATE SET statements_done = EXCLUDED.statements_done`,
    values: [key.runKey, key.stepId, key.direction, done],
  };
}

/** Forgets the script's progress (it is done, or undone). */
export async function forgetProgress(c: PoolClient, key: Omit<ProgressKey, 'direction'>): Promise<void> {
  await c.query(`DELETE FROM ${S}.step_progress WHERE run_id = $1 AND step_id = $2`, [key.runKey, key.stepId]);
}

const IN_TRANSACTION_BLOCK = '25001';

/** "does not exist": a table, column, object (index, constraint, type…), schema or function. */
const MISSING = new Set(['42P01', '42703', '42704', '3F000', '42883']);

/**
 * Runs `stmts` from the first one not yet done, recording each. `retry`: an earlier attempt ran (and may have built an
 * index it did not live to record). `onError` names the statement an error came from (and throws). `afterHalfWay`:
 * this is the down of an up that stopped half-way, so what a statement undoes may never have been made; one that fails
 * on something that does not exist counts as done, and is returned.
 */
export async function runResumable(
  c: PoolClient,
  stmts: ParsedStatement[],
  key: ProgressKey,
  retry: boolean,
  onError: (e: unknown, stmt: ParsedStatement) => never,
  afterHalfWay = false,
): Promise<ParsedStatement[]> {
  const skipped: ParsedStatement[] = [];
  // A script with its own BEGIN/COMMIT keeps them: it is not wrapped, and each statement is recorded after it.
  const wrap = !stmts.some((s) => s.kind === 'TransactionStmt');
  const done = await statementsDone(c, key);
  for (let i = 0; i < stmts.length; i++) {
    const stmt = stmts[i];
    try {
      if (i < done) {
        // Done by an earlier attempt, in another session: its SET (search_path, maintenance_work_mem) is not in this
        // one, and the statements after it count on it.
        if (stmt.kind === 'VariableSetStmt') await c.query(stmt.text);
        continue;
      }
      if (
        (await indexLeftover(c, stmt, retry && i === done)) ||
        (retry && i === done && (await droppedBefore(c, stmt)))
      ) {
        await c.query(recordQuery(key, i + 1));
        continue;
      }
      if (!(wrap && (await inOwnTransaction(c, stmt.text, recordQuery(key, i + 1))))) {
        await c.query(stmt.text);
        await c.query(recordQuery(key, i + 1));
      }
    } catch (e) {
      // Not inside a script's own BEGIN … COMMIT: its transaction is aborted, and the script cannot go on.
      if (!(afterHalfWay && wrap && MISSING.has((e as { code?: string }).code ?? ''))) onError(e, stmt);
      await c.query(recordQuery(key, i + 1));
      skipped.push(stmt);
    }
  }
  return skipped;
}

/** The statement and its record in one transaction; false (nothing done) when it cannot run inside one. */
async function inOwnTransaction(c: PoolClient, text: string, record: ReturnType<typeof recordQuery>): Promise<boolean> {
  await c.query('BEGIN');
  try {
    await c.query(text);
  } catch (e) {
    await c.query('ROLLBACK').catch(() => undefined);
    if ((e as { code?: string }).code === IN_TRANSACTION_BLOCK) return false;
    throw e;
  }
  try {
    await c.query(record);
    await c.query('COMMIT');
  } catch (e) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
  return true;
}

/**
 * For CREATE INDEX CONCURRENTLY: drops an INVALID index of its name (a build that failed half-way), and says whether
 * a valid one counts as this statement done (`builtBefore`: only on a retry, at the statement the last attempt was in).
 */
async function indexLeftover(c: PoolClient, stmt: ParsedStatement, builtBefore: boolean): Promise<boolean> {
  const n = stmt.node as {
    concurrent?: boolean;
    idxname?: string;
    relation?: { schemaname?: string; relname?: string };
  };
  if (stmt.kind !== 'IndexStmt' || !n.concurrent || !n.idxname || !n.relation?.relname) return false;
  const { schemaname, relname } = n.relation;
  // Unqualified, as the statement names it: found through the same search path.
  const table = schemaname ? quoteTable({ schema: schemaname, name: relname }) : quoteIdent(relname);
  const r = await c.query(
    `SELECT i.indisvalid AS valid, ns.nspname AS schema, ic.relname AS name
       FROM pg_class ic JOIN pg_index i ON i.indexrelid = ic.oid JOIN pg_namespace ns ON ns.oid = ic.relnamespace
      WHERE ic.relname = $1 AND ic.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass($2))
        AND i.indrelid = to_regclass($2)`,
    [n.idxname, table],
  );
  const found = r.rows[0] as { valid: boolean; schema: string; name: string } | undefined;
  if (!found) return false;
  if (found.valid) return builtBefore;
  await c.query(`DROP INDEX CONCURRENTLY IF EXISTS ${quoteTable({ schema: found.schema, name: found.name })}`);
  return false;
}

/**
 * For DROP INDEX CONCURRENTLY (recorded only after it ends, as it cannot run in a transaction), on a retry at the
 * statement the last attempt was in: whether every index it names is gone already (that attempt dropped them).
 */
async function droppedBefore(c: PoolClient, stmt: ParsedStatement): Promise<boolean> {
  const n = stmt.node as {
    concurrent?: boolean;
    removeType?: string;
    objects?: { List?: { items: { String: { sval: string } }[] } }[];
  };
  if (stmt.kind !== 'DropStmt' || !n.concurrent || n.removeType !== 'OBJECT_INDEX') return false;
  const names = (n.objects ?? []).map((o) => (o.List?.items ?? []).map((i) => quoteIdent(i.String.sval)).join('.'));
  const r = await c.query(`SELECT bool_and(to_regclass(x) IS NULL) AS gone FROM unnest($1::text[]) AS x`, [names]);
  return r.rows[0].gone === true;
}
