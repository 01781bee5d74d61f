// Schema steps and the tables other migrations hold. A step that alters, renames, drops, truncates or writes a table
// another migration syncs, copies into, captures or has archived breaks that migration (its triggers name columns the
// step renames; its rollback moves back a table the step dropped), and so does a step that creates one of them (IF
// NOT EXISTS passes, and the step's down drops the other's table). Preflight refuses such a plan; the step itself
// checks again before it runs, since the other migration may have claimed the table since.
import type { PoolClient } from 'pg';
import { holdsOn, lockClaims, describeHold, type TableHold } from '../../db/claims';
import { changedTables, createdTableRefs, parseStatements } from '../../plan/lint';
import { F, failure } from '../../migration/failures';

/** The tables a script changes or creates, as it names them; [] when it does not parse (preflight says so). */
export async function stepTables(sql: string): Promise<string[]> {
  try {
    const stmts = await parseStatements(sql);
    return [...new Set([...changedTables(stmts), ...createdTableRefs(stmts)])];
  } catch {
    return [];
  }
}

/** Other migrations' holds on the tables of `sql`, read under the claims lock when `locked` (inside a transaction). */
export async function holdsOnStep(
  c: PoolClient,
  runKey: string,
  sql: string,
  locked: boolean,
  migration: string,
): Promise<TableHold[]> {
  const tables = await stepTables(sql);
  if (!tables.length) return [];
  const held = locked ? await lockClaims(c, runKey, tables) : await holdsOn(c, tables, runKey);
  // Another run of this same plan is not another migration (a revert undoes the run whose sync still holds them).
  return held.filter((h) => h.migration !== migration);
}

/** Refuses a step whose tables another migration holds, changing nothing. */
export function refuseStepOnHeld(stepId: string, direction: 'up' | 'down', held: TableHold[]): void {
  if (!held.length) return;
  throw failure(
    F.PlanRuntimeError,
    `step ${stepId} (${direction}) would change a table another migration holds: ${held.map(describeHold).join('; ')}; ` +
      `two migrations on one table would break each other: finish or abort that migration first`,
  );
}
