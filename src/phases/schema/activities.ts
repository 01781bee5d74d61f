// Schema phase: each step's `up` recorded in tidemark.history with its checksum, and its compensation (`down`,
// history marked rolled back) side by side.
import type { Pool, PoolClient } from 'pg';
import { TIDEMARK_SCHEMA } from '../../db/names';
import { scriptText } from '../../db/scripts';
import { quoteIdent } from '../../db/quote';
import { parseStatements } from '../../plan/lint';
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

    /**
     * Undo: runs the step's `down` and marks its ledger row rolled back; nothing when the step never committed, and
     * nothing when another run of the plan applied it (an earlier run's step is not this run's to undo).
     */
    async revertSchemaStep(input: SchemaStepInput): Promise<string> {
      const { step, run } = input;
      return activityBody(`schema step ${step.id} (down)`, async () => {
        const pool = await targetPool(deps, input.urlEnv);
        return withClient(pool, async (c) => {
          const { applied, mine } = await ledgerEntries(c, run, step.id);
          if (applied && applied.run_id !== run.runKey)
            return `${step.id}: applied by ${applied.workflow_id}, left alone`;
          if (mine?.status === 'rolled-back') return `${step.id}: already rolled back`;
          // A transactional step without a history row never committed: there is nothing to undo.
          if (!mine && step.transactional) return `${step.id}: was not applied`;
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
