// The plan's read-only SQL — preflight checks, validation assertions, gates — must be exactly one statement that only
// reads: several statements could end the read-only transaction they run in (`SELECT 0; COMMIT; CREATE TABLE …`).
// Checked with PostgreSQL's own parser when a plan is started or checked; at run time they also go through the
// extended protocol, which takes one statement only.
import { InvalidPlanError, loadPlan } from './load';
import { parseStatements } from './lint';
import type { ResolvedPlan } from './types';
import type { PlanError } from './validate';

/** Statement kinds that write, found anywhere in a tree (a data-modifying WITH). */
const WRITES = new Set(['InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

function writesSomewhere(node: unknown): string | undefined {
  if (!node || typeof node !== 'object') return undefined;
  if (Array.isArray(node)) {
    for (const n of node) {
      const w = writesSomewhere(n);
      if (w) return w;
    }
    return undefined;
  }
  for (const [k, v] of Object.entries(node)) {
    if (WRITES.has(k)) return k;
    const w = writesSomewhere(v);
    if (w) return w;
  }
  return undefined;
}

/** Why `sql` is not one read-only SELECT, or undefined when it is. */
export async function notOneSelect(sql: string): Promise<string | undefined> {
  let stmts;
  try {
    stmts = await parseStatements(sql);
  } catch (e) {
    return `does not parse: ${(e as Error).message}`;
  }
  if (stmts.length !== 1) return `must be exactly one SELECT statement, found ${stmts.length} statements`;
  const [s] = stmts;
  if (s.kind !== 'SelectStmt') return `must be a SELECT, found ${s.kind.replace(/Stmt$/, '').toUpperCase()}`;
  if (s.node.intoClause) return 'must not create a table (SELECT … INTO)';
  if (s.node.lockingClause) return 'must not lock rows (FOR UPDATE/SHARE)';
  const w = writesSomewhere(s.node);
  if (w) return `must only read, found a ${w.replace(/Stmt$/, '').toUpperCase()} inside it`;
  return undefined;
}

/** Every read-only query of the plan that is not one SELECT, with its path. */
export async function readOnlyQueryErrors(plan: ResolvedPlan): Promise<PlanError[]> {
  const queries: { path: string; sql: string }[] = [
    ...plan.preflight.checks.map((c, i) => ({ path: `preflight.checks[${i}].sql`, sql: c.sql })),
    ...plan.validate.flatMap((v, i) => (v.sql ? [{ path: `validate[${i}].sql.query`, sql: v.sql.query }] : [])),
    ...(plan.traffic?.gates ?? []).flatMap((g, i) => (g.sql ? [{ path: `traffic.gates[${i}].sql`, sql: g.sql }] : [])),
  ];
  const errors: PlanError[] = [];
  for (const q of queries) {
    const why = await notOneSelect(q.sql);
    if (why) errors.push({ path: q.path, message: why });
  }
  return errors;
}

/** loadPlan, then the checks that need PostgreSQL's parser; throws InvalidPlanError listing every problem. */
export async function loadCheckedPlan(file: string): Promise<ResolvedPlan> {
  const plan = loadPlan(file);
  const errors = await readOnlyQueryErrors(plan);
  if (errors.length) throw new InvalidPlanError(file, errors);
  return plan;
}
