// Schema phase: each step's `up` recorded in tidemark.history with its checksum, and its compensation (`down`,
// history marked rolled back) side by side.
import type { PoolClient } from 'pg';
import { TIDEMARK_SCHEMA } from '../../db/names';
import { scriptText } from '../../db/scripts';
import { quoteIdent } from '../../db/quote';
import { parseStatements } from '../../plan/lint';
import { inTransaction, withClient } from '../../db/tx';
import type { SchemaStep } from '../../plan/types';
import {
  activityBody,
  forwardSession,
  forwardTransaction,
  targetPool,
  type ActivityDeps,
  type RunRef,
} from '../activity-kit';

const S = quoteIdent(TIDEMARK_SCHEMA);

export interface SchemaStepInput {
  urlEnv: string;
  run: RunRef;
  step: SchemaStep;
  lockTimeoutMs: number;
}

export interface SchemaStepResult {
  step: string;
  applied: boolean;
  /** True when an earlier attempt had already applied it (a retry after a crash). */
  alreadyDone: boolean;
  durationMs: number;
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

/** Runs an SQL script: in the current transaction as one multi-statement query, or statement by statement outside one. */
async function runScript(c: PoolClient, sql: string, transactional: boolean, lockTimeoutMs: number): Promise<void> {
  if (transactional) {
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
    return;
  }
  await c.query(`SELECT set_config('lock_timeout', $1, false)`, [`${lockTimeoutMs}ms`]);
  try {
    // Split with PostgreSQL's own parser: CREATE INDEX CONCURRENTLY must be sent on its own.
    for (const stmt of await parseStatements(sql)) {
      try {
        await c.query(stmt.text);
      } catch (e) {
        locate(e, stmt.line, stmt.text);
      }
    }
  } finally {
    await c.query('RESET lock_timeout').catch(() => undefined);
  }
}

export function createSchemaActivities(deps: ActivityDeps) {
  return {
    /** Applies one step's `up` and records it; a retry after a crash finds the record and does nothing. */
    async applySchemaStep(input: SchemaStepInput): Promise<SchemaStepResult> {
      const { step, run } = input;
      return activityBody(`schema step ${step.id} (up)`, async () => {
        const pool = await targetPool(deps, input.urlEnv);
        const t0 = Date.now();
        const done = await pool.query(`SELECT status FROM ${S}.history WHERE run_id = $1 AND step_id = $2`, [
          run.runKey,
          step.id,
        ]);
        if (done.rowCount) return { step: step.id, applied: true, alreadyDone: true, durationMs: 0 };
        const record = (cl: PoolClient) =>
          cl.query(
            `INSERT INTO ${S}.history (migration, workflow_id, run_id, step_id, checksum, down_checksum, transactional, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
            [
              run.migration,
              run.workflowId,
              run.runKey,
              step.id,
              step.up.sha256,
              step.down.sha256,
              step.transactional,
              Date.now() - t0,
            ],
          );
        if (step.transactional) {
          // The step and its history row commit together: either both exist or neither does.
          await forwardTransaction(pool, run, { lockTimeoutMs: input.lockTimeoutMs }, async (tx) => {
            await runScript(tx, await scriptText(tx, step.up), true, input.lockTimeoutMs);
            await record(tx);
          });
        } else {
          await forwardSession(pool, run, async (c) => {
            await runScript(c, await scriptText(c, step.up), false, input.lockTimeoutMs);
            await record(c);
          });
        }
        deps.logger.info({ step: step.id, ms: Date.now() - t0 }, 'schema step applied');
        return { step: step.id, applied: true, alreadyDone: false, durationMs: Date.now() - t0 };
      });
    },

    /** Undo: runs the step's `down` and marks its history row rolled back; nothing when the step never committed. */
    async revertSchemaStep(input: SchemaStepInput): Promise<string> {
      const { step, run } = input;
      return activityBody(`schema step ${step.id} (down)`, async () => {
        const pool = await targetPool(deps, input.urlEnv);
        return withClient(pool, async (c) => {
          const h = await c.query(`SELECT status FROM ${S}.history WHERE run_id = $1 AND step_id = $2`, [
            run.runKey,
            step.id,
          ]);
          if (h.rowCount && h.rows[0].status === 'rolled-back') return `${step.id}: already rolled back`;
          // A transactional step without a history row never committed: there is nothing to undo.
          if (!h.rowCount && step.transactional) return `${step.id}: was not applied`;
          const mark = (cl: PoolClient) =>
            cl.query(
              `INSERT INTO ${S}.history (migration, workflow_id, run_id, step_id, checksum, down_checksum, transactional, status, rolled_back_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, 'rolled-back', now())
               ON CONFLICT (run_id, step_id) DO UPDATE SET status = 'rolled-back', rolled_back_at = now()`,
              [
                run.migration,
                run.workflowId,
                run.runKey,
                step.id,
                step.up.sha256,
                step.down.sha256,
                step.transactional,
              ],
            );
          if (step.transactional) {
            await inTransaction(c, { lockTimeoutMs: input.lockTimeoutMs }, async (tx) => {
              await runScript(tx, await scriptText(tx, step.down), true, input.lockTimeoutMs);
              await mark(tx);
            });
          } else {
            await runScript(c, await scriptText(c, step.down), false, input.lockTimeoutMs);
            await mark(c);
          }
          deps.logger.info({ step: step.id }, 'schema step rolled back');
          return `${step.id}: down applied`;
        });
      });
    },
  };
}
