// Schema phase: each step's `up` recorded in tidemark.history with its checksum, and its compensation (`down`,
// history marked rolled back) side by side.
import type { Pool, PoolClient } from 'pg';
import { TIDEMARK_SCHEMA } from '../../db/names';
import { scriptText } from '../../db/scripts';
import { quoteIdent } from '../../db/quote';
import { Context } from '@temporalio/activity';
import { parseStatements, type ParsedStatement } from '../../plan/lint';
import { inTransaction, withClient } from '../../db/tx';
import type { SchemaStep } from '../../plan/types';
import { driftOf, type StepPhase } from '../../plan/ledger';
import { F, failure } from '../../migration/failures';
import {
  activityBody,
  forwardSession,
  forwardTransaction,
  targetPool,
  type ActivityDeps,
  type RunRef,
} from '../activity-kit';
import { namingBlockers } from './blockers';
import { holdsOnStep, refuseStepOnHeld } from './claims';
import {
  endStepSessions,
  forgetProgress,
  runResumable,
  statementsDone,
  stepSessionName,
  type ProgressKey,
} from './resumable';

const S = quoteIdent(TIDEMARK_SCHEMA);

export interface SchemaStepInput {
  urlEnv: string;
  run: RunRef;
  step: SchemaStep;
  lockTimeoutMs: number;
  /** The phase that runs the step (cleanup steps run after the archive); recorded in the ledger. Default schema. */
  phase?: StepPhase;
  /** Who rolls it back (the migration's own rollback, or a revert): recorded in the ledger. Default: the run. */
  by?: string;
}

export interface SchemaStepResult {
  step: string;
  applied: boolean;
  /** True when an earlier attempt had already applied it (a retry after a crash). */
  alreadyDone: boolean;
  /** Set when an earlier run of the same plan applied it: it is not applied again (and not this run's to undo). */
  appliedEarlier?: { workflowId: string; runId: string; at: string };
  durationMs: number;
}

interface LedgerEntry {
  run_id: string;
  workflow_id: string;
  checksum: string;
  down_checksum: string;
  applied_at: Date;
  status: 'applied' | 'rolled-back';
}

/** The plan's row for the step that is applied now (whichever run applied it), and this run's row. */
async function ledgerEntries(db: Pool | PoolClient, run: RunRef, stepId: string) {
  const r = await db.query(
    `SELECT run_id, workflow_id, checksum, down_checksum, applied_at, status FROM ${S}.history
      WHERE migration = $1 AND step_id = $2 AND (status = 'applied' OR run_id = $3)`,
    [run.migration, stepId, run.runKey],
  );
  const rows = r.rows as LedgerEntry[];
  return { applied: rows.find((x) => x.status === 'applied'), mine: rows.find((x) => x.run_id === run.runKey) };
}

/** Names the line and the statement of a script an error came from (the error stays PostgreSQL's, code and all). */
function locate(e: unknown, line: number, statement: string): never {
  if (e instanceof Error) {
    const first = statement.replace(/\s+/g, ' ').trim();
    e.message = `${e.message} (line ${line}: ${first.length > 60 ? `${first.slice(0, 57)}…` : first})`;
    delete (e as { position?: string }).position;
  }
  throw e;
}

/**
 * Runs an SQL script: in the current transaction as one multi-statement query, or (with `progress`) statement by
 * statement outside one, going on from where an earlier attempt stopped (resumable.ts).
 */
async function runScript(
  c: PoolClient,
  sql: string,
  lockTimeoutMs: number,
  progress?: { key: ProgressKey; retry: boolean; afterHalfWay?: boolean },
): Promise<ParsedStatement[]> {
  if (!progress) {
    try {
      await c.query(sql);
    } catch (e) {
      // PostgreSQL reports where in the whole script it failed; say which statement that is.
      const pos = Number((e as { position?: string }).position);
      if (!pos) throw e;
      const stmts = await parseStatements(sql).catch(() => []);
      const before = sql.slice(0, pos - 1);
      const line = before.split('\n').length;
      const stmt = [...stmts].reverse().find((st) => st.line <= line);
      locate(e, line, stmt?.text ?? sql.split('\n')[line - 1] ?? '');
    }
    return [];
  }
  await c.query(`SELECT set_config('lock_timeout', $1, false)`, [`${lockTimeoutMs}ms`]);
  try {
    // Split with PostgreSQL's own parser: CREATE INDEX CONCURRENTLY must be sent on its own.
    const stmts = await parseStatements(sql);
    return await runResumable(
      c,
      stmts,
      progress.key,
      progress.retry,
      (e, stmt) => locate(e, stmt.line, stmt.text),
      progress.afterHalfWay,
    );
  } finally {
    await c.query('RESET lock_timeout').catch(() => undefined);
  }
}

/**
 * Ends what an earlier attempt of the step left running in the server (its worker was killed: its backend goes on, and
 * its lock or half-built index would be waited for), each of `keys` (resumable.ts endStepSessions).
 */
async function endEarlierAttempts(c: PoolClient, logger: ActivityDeps['logger'], ...keys: ProgressKey[]) {
  for (const key of keys) {
    const ended = await endStepSessions(c, key);
    if (ended) logger.warn({ step: key.stepId, direction: key.direction, ended }, "ended an earlier attempt's session");
  }
}

/**
 * Runs `fn` with the session named after the step (a later attempt finds it by that name). Then every setting goes
 * back to the pool's (its startup options): the name, and whatever the script SET for itself, which would otherwise
 * stay with the pooled session into other work.
 */
async function asStep<T>(c: PoolClient, key: ProgressKey, fn: () => Promise<T>): Promise<T> {
  await c.query(`SELECT set_config('application_name', $1, false)`, [stepSessionName(key)]);
  try {
    return await fn();
  } finally {
    await c.query('RESET ALL').catch(() => undefined);
  }
}

const retrying = () => Context.current().info.attempt > 1;

/** Runs a step's script on `c`, a lock timeout naming the sessions it waited for (blockers.ts). */
async function watched<T>(pool: Pool, c: PoolClient, lockTimeoutMs: number, fn: () => Promise<T>): Promise<T> {
  const pid = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  // Several looks within one lock timeout, at most four a second.
  return namingBlockers(pool, pid, fn, Math.max(20, Math.min(250, lockTimeoutMs / 4)));
}

export function createSchemaActivities(deps: ActivityDeps) {
  return {
    /** Applies one step's `up` and records it; a retry after a crash finds the record and does nothing. */
    async applySchemaStep(input: SchemaStepInput): Promise<SchemaStepResult> {
      const { step, run } = input;
      return activityBody(`schema step ${step.id} (up)`, async () => {
        const pool = await targetPool(deps, input.urlEnv);
        const t0 = Date.now();
        // Before the ledger is read: an earlier attempt's transaction, ended, cannot commit after this reads it.
        const key: ProgressKey = { runKey: run.runKey, stepId: step.id, direction: 'up' };
        await withClient(pool, (c) => endEarlierAttempts(c, deps.logger, key));
        const { applied, mine } = await ledgerEntries(pool, run, step.id);
        if (mine) return { step: step.id, applied: true, alreadyDone: true, durationMs: 0 };
        if (applied) {
          // Preflight refuses drift; this catches a ledger changed since (and keeps a step from running twice).
          const drift = driftOf(step, { checksum: applied.checksum, downChecksum: applied.down_checksum });
          if (drift) {
            throw failure(
              F.PlanRuntimeError,
              `step ${step.id} was applied by ${applied.workflow_id} and has changed since: ${drift}`,
            );
          }
          const at = new Date(applied.applied_at).toISOString();
          return {
            step: step.id,
            applied: false,
            alreadyDone: false,
            appliedEarlier: { workflowId: applied.workflow_id, runId: applied.run_id, at },
            durationMs: 0,
          };
        }
        const record = (cl: PoolClient) =>
          cl.query(
            `INSERT INTO ${S}.history (migration, workflow_id, run_id, step_id, checksum, down_checksum, transactional, duration_ms, phase)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
            [
              run.migration,
              run.workflowId,
              run.runKey,
              step.id,
              step.up.sha256,
              step.down.sha256,
              step.transactional,
              Date.now() - t0,
              input.phase ?? 'schema',
            ],
          );
        if (step.transactional) {
          // The step and its history row commit together: either both exist or neither does.
          const named = { application_name: stepSessionName(key) };
          await forwardTransaction(pool, run, { lockTimeoutMs: input.lockTimeoutMs, settings: named }, async (tx) => {
            const sql = await scriptText(tx, step.up);
            // Under the claims lock: no other migration claims these tables until the step commits.
            refuseStepOnHeld(step.id, 'up', await holdsOnStep(tx, run.runKey, sql, true, run.migration));
            await watched(pool, tx, input.lockTimeoutMs, async () => runScript(tx, sql, input.lockTimeoutMs));
            await record(tx);
          });
        } else {
          await forwardSession(pool, run, (c) =>
            asStep(c, key, async () => {
              const progress = { key, retry: retrying() };
              const sql = await scriptText(c, step.up);
              if (!(await statementsDone(c, key))) {
                refuseStepOnHeld(step.id, 'up', await holdsOnStep(c, run.runKey, sql, false, run.migration));
              }
              await watched(pool, c, input.lockTimeoutMs, async () => runScript(c, sql, input.lockTimeoutMs, progress));
              await record(c);
              await forgetProgress(c, key);
            }),
          );
        }
        deps.logger.info({ step: step.id, ms: Date.now() - t0 }, 'schema step applied');
        return { step: step.id, applied: true, alreadyDone: false, durationMs: Date.now() - t0 };
      });
    },

    /**
     * Undo: runs the step's `down` and marks its ledger row rolled back; nothing when the step never committed, and
     * nothing when another run of the plan applied it (an earlier run's step is not this run's to undo).
     */
    async revertSchemaStep(input: SchemaStepInput): Promise<string> {
      const { step, run } = input;
      return activityBody(`schema step ${step.id} (down)`, async () => {
        const pool = await targetPool(deps, input.urlEnv);
        return withClient(pool, async (c) => {
          // The up's session too, if it still runs (its worker was killed mid-step): ended before the ledger is read,
          // it cannot commit after this decides the step was not applied, and its locks do not hold the down.
          const key: ProgressKey = { runKey: run.runKey, stepId: step.id, direction: 'down' };
          await endEarlierAttempts(c, deps.logger, { ...key, direction: 'up' }, key);
          const { applied, mine } = await ledgerEntries(c, run, step.id);
          if (applied && applied.run_id !== run.runKey)
            return `${step.id}: applied by ${applied.workflow_id}, left alone`;
          if (mine?.status === 'rolled-back') return `${step.id}: already rolled back`;
          // A transactional step without a history row never committed: there is nothing to undo.
          if (!mine && step.transactional) return `${step.id}: was not applied`;
          // The down would change tables another migration holds now (it claimed them after this step ran): the
          // rollback holds until that migration is finished or aborted. An up refused for the same reason before it
          // ran a statement left nothing to undo, and the down (dropping what the up would have created) must not run.
          const downSql = await scriptText(c, step.down);
          const held = await holdsOnStep(c, run.runKey, downSql, false, run.migration);
          if (held.length && !mine && !(await statementsDone(c, { ...key, direction: 'up' }))) {
            return `${step.id}: its up ran no statement (another migration holds its tables): nothing to undo`;
          }
          refuseStepOnHeld(step.id, 'down', held);
          const mark = (cl: PoolClient) =>
            cl.query(
              `INSERT INTO ${S}.history (migration, workflow_id, run_id, step_id, checksum, down_checksum, transactional, status, rolled_back_at, phase, rolled_back_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, 'rolled-back', now(), $8, $9)
               ON CONFLICT (run_id, step_id) DO UPDATE SET status = 'rolled-back', rolled_back_at = now(), rolled_back_by = EXCLUDED.rolled_back_by`,
              [
                run.migration,
                run.workflowId,
                run.runKey,
                step.id,
                step.up.sha256,
                step.down.sha256,
                step.transactional,
                input.phase ?? 'schema',
                input.by ?? run.workflowId,
              ],
            );
          const skipped = await asStep(c, key, async () => {
            if (step.transactional) {
              await inTransaction(c, { lockTimeoutMs: input.lockTimeoutMs }, async (tx) => {
                await watched(pool, tx, input.lockTimeoutMs, async () => runScript(tx, downSql, input.lockTimeoutMs));
                await mark(tx);
              });
              return [];
            }
            // Without its history row, the up stopped half-way: the down's drops may find nothing to drop.
            const progress = { key, retry: retrying(), afterHalfWay: !mine };
            const missing = await watched(pool, c, input.lockTimeoutMs, async () =>
              runScript(c, downSql, input.lockTimeoutMs, progress),
            );
            await mark(c);
            await forgetProgress(c, key);
            return missing;
          });
          deps.logger.info({ step: step.id, skipped: skipped.length }, 'schema step rolled back');
          if (!skipped.length) return `${step.id}: down applied`;
          const lines = skipped.map((st) => `line ${st.line}`).join(', ');
          return `${step.id}: down applied after an up that stopped half-way; ${skipped.length} statement(s) found nothing to undo (${lines})`;
        });
      });
    },
  };
}
