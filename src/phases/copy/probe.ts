// Tries a copy job's sync before anything depends on it: inside the caller's transaction (rolled back by the caller,
// or here to a savepoint), installs the triggers and writes through each one once — a no-op update of one source
// row (forward), then an update and a delete of that row on the target (reverse). A mapping that cannot be written
// (a NOT NULL column of the old table that `reverse` leaves empty, a target column that does not exist) fails here
// instead of failing every application write once traffic moves.
import type { PoolClient } from 'pg';
import { formatPgError, isConnectionLoss, isLockConflict } from '../../db/errors';
import { TIDEMARK_SCHEMA } from '../../db/names';
import { quoteIdent, quoteTable } from '../../db/quote';
import { inSavepoint } from '../../db/tx';
import type { ResolvedCopyJob } from '../../plan/types';
import { resolveMapping } from './mapping';
import { reverseRoundTrip } from './round-trip';
import {
  encodedKeySql,
  forwardTriggerDdl,
  keyCols,
  keyEquals,
  querySyncTriggerDdl,
  reverseTriggerDdl,
  slicePredicate,
  whereOf,
  type CopyMapping,
} from './sql';

export interface SyncProbe {
  job: string;
  ok: boolean;
  message: string;
  /** Written back, rows do not come back as they were (see reverseRoundTrip): what the sync would change. */
  warning?: string;
}

const PROBE_RUN = { runKey: 'tidemark-probe' };

/**
 * Writes through the sync of `job`, all undone before returning. `install`: put its triggers in first (a rehearsal);
 * otherwise they are in place already (the copy phase, right after installing them).
 */
export async function probeSync(c: PoolClient, job: ResolvedCopyJob, install: boolean): Promise<SyncProbe> {
  let step = 'resolving the mapping';
  const tryAll = async (): Promise<SyncProbe> => {
    const m = await resolveMapping(c, job, PROBE_RUN);
    if (install) {
      step = 'installing the sync triggers';
      // Trigger functions live in tidemark's schema, which a database never migrated before lacks (rolled back too).
      await c.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(TIDEMARK_SCHEMA)}`);
      const ddl = [
        ...(m.source.kind === 'table' ? forwardTriggerDdl(m) : querySyncTriggerDdl(m)),
        ...(job.sync === 'bidirectional' ? reverseTriggerDdl(m) : []),
      ];
      for (const stmt of ddl) await c.query(stmt);
    }
    // Read before the writes below, which write the first row back (see round-trip.ts).
    const warning = job.sync === 'bidirectional' ? await reverseRoundTrip(m, { c, inTransaction: true }) : undefined;
    const tried = await writeThrough(c, m, job, (s) => (step = s));
    return { job: job.name, ok: true, message: tried, ...(warning ? { warning } : {}) };
  };
  try {
    return await inSavepoint(c, tryAll, { undo: true });
  } catch (e) {
    // A deadlock or lock timeout with the application's writes (the probe writes both paths in one transaction) or a
    // lost connection says nothing about the mapping: the caller's attempt fails and is retried.
    if (isLockConflict(e) || isConnectionLoss(e)) throw e;
    return { job: job.name, ok: false, message: `${step} fails: ${formatPgError(e)}` };
  }
}

async function writeThrough(
  c: PoolClient,
  m: CopyMapping,
  job: ResolvedCopyJob,
  at: (s: string) => void,
): Promise<string> {
  if (m.source.kind === 'query') {
    const src = m.syncFrom[0];
    if (!src) return 'nothing to write through';
    at(`an update of ${quoteTable(src.table)} (forward sync)`);
    const col = (
      await c.query(
        `SELECT quote_ident(attname) AS c FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum LIMIT 1`,
        [quoteTable(src.table)],
      )
    ).rows[0].c as string;
    const r = await c.query(
      `UPDATE ${quoteTable(src.table)} SET ${col} = ${col} WHERE ctid = (SELECT ctid FROM ${quoteTable(src.table)} LIMIT 1)`,
    );
    if (!r.rowCount) return 'its source is empty: nothing to write through';
    if (job.sync !== 'bidirectional') return 'a write to its source reaches the target';
    // The write back: a no-op update of one of the job's target rows, then its delete.
    const target = quoteTable(m.target);
    const one = `ctid = (SELECT ctid FROM ${target} AS t${whereOf(slicePredicate(m))} LIMIT 1)`;
    const k = quoteIdent(m.keys[0].target);
    at(`an update on ${target} (written back to ${m.writeBack.map((w) => quoteTable(w.table)).join(', ')})`);
    await c.query(`UPDATE ${target} SET ${k} = ${k} WHERE ${one}`);
    at(`a delete on ${target} (written back)`);
    await deleteThrough(c, `DELETE FROM ${target} WHERE ${one}`, []);
    return 'writes on either side reach the other';
  }
  const table = quoteTable(m.source.table);
  const src = keyCols(m, 's', 'source');
  const first = await c.query(
    `SELECT ${encodedKeySql(m, src)} AS k FROM ${table} AS s WHERE ${src.map((k) => `${k} IS NOT NULL`).join(' AND ')} ORDER BY ${src.join(', ')} LIMIT 1`,
  );
  if (!first.rowCount) return 'the source is empty: nothing to write through';
  const k = first.rows[0].k as string;
  const noop = (side: 'source' | 'target') => `${quoteIdent(m.keys[0][side])} = ${quoteIdent(m.keys[0][side])}`;
  const where = (alias: string, side: 'source' | 'target') => {
    const values: unknown[] = [];
    return { text: keyEquals(m, alias, side, k, values), values };
  };
  at('an update on the old table (forward sync)');
  const ws = where('s', 'source');
  await c.query(`UPDATE ${table} AS s SET ${noop('source')} WHERE ${ws.text}`, ws.values);
  if (job.sync !== 'bidirectional') return 'a write on the old table reaches the new one';
  const target = quoteTable(m.target);
  const wt = where('t', 'target');
  at('an update on the new table (reverse sync)');
  await c.query(`UPDATE ${target} AS t SET ${noop('target')} WHERE ${wt.text}`, wt.values);
  at('a delete on the new table (reverse sync)');
  await deleteThrough(c, `DELETE FROM ${target} AS t WHERE ${wt.text}`, wt.values);
  return 'writes on either table reach the other';
}

/**
 * A delete through the reverse sync. The old tables' foreign keys may refuse it (the row is still referenced there):
 * the application's own delete of that row would be refused on the old path too, so that is not a faulty mapping.
 */
async function deleteThrough(c: PoolClient, sql: string, values: unknown[]): Promise<void> {
  try {
    await inSavepoint(c, () => c.query(sql, values), { undo: true });
  } catch (e) {
    if ((e as { code?: string }).code !== '23503') throw e;
  }
}
