// Activities over the ledger as a whole rather than one phase: reading it for `tidemark history`, and taking stock of
// what a completed migration left — steps, archived tables, sync triggers, its flag — for its revert, refusing up
// front what can no longer be reverted. Both only read (the revert's inventory stores the plan's scripts once it
// passes, as preflight does).
import type { PoolClient } from 'pg';
import { readLedger, readLeftovers, type MigrationLeftovers, type RecordedRun } from '../db/ledger';
import { ARCHIVE_SCHEMA } from '../db/names';
import { parseTableRef, quoteTable } from '../db/quote';
import { storeScripts } from '../db/scripts';
import { inTransaction, withClient } from '../db/tx';
import { F, failure } from '../migration/failures';
import type { RunRef } from '../migration/messages';
import { stepStates, type LedgerRow, type StepPhase, type StepState } from '../plan/ledger';
import { planScripts, planSteps, scriptRef } from '../plan/scripts';
import type { ResolvedCopyJob, ResolvedPlan, SchemaStep } from '../plan/types';
import { activityBody, targetPool, type ActivityDeps } from './activity-kit';
import type { Finding, FindingStatus } from './preflight/activities';

/** One undo a revert runs, in the order the migration made the changes (the revert runs them newest first). */
export type RevertItem = { run: RunRef; description: string } & (
  | { phase: 'schema'; action: { kind: 'revertSchemaStep'; step: SchemaStep } }
  | { phase: 'copy'; action: { kind: 'undoCopy'; job: ResolvedCopyJob } }
  | { phase: 'traffic'; action: { kind: 'resetFlag'; flag: string } }
  | {
      phase: 'cleanup';
      action:
        | { kind: 'restoreArchivedTables'; tables: string[]; followers: ResolvedCopyJob[] }
        | { kind: 'revertCleanupStep'; step: SchemaStep };
    }
);

export interface RevertInventory {
  ok: boolean;
  findings: Finding[];
  /** The ledger's view of the plan's steps before the revert. */
  steps: StepState[];
  /** What the revert undoes, in the order the migration did it. Empty: nothing to revert. */
  items: RevertItem[];
}

export interface RevertInventoryInput {
  plan: ResolvedPlan;
  /** Revert even though writes made on the new path since the sync was removed would be lost. */
  discardNewWrites?: boolean;
}

const toRun = (r: RecordedRun): RunRef => ({ runKey: r.runKey, migration: r.migration, workflowId: r.workflowId });

/** The step to revert, as the ledger recorded it: the plan's when it is the same, else rebuilt from the checksums. */
function stepToRevert(row: LedgerRow, plan: ResolvedPlan): SchemaStep {
  const inPlan = planSteps(plan).find((s) => s.id === row.stepId);
  if (inPlan && inPlan.up.sha256 === row.checksum && inPlan.down.sha256 === row.downChecksum) {
    return {
      id: inPlan.id,
      transactional: inPlan.transactional,
      up: scriptRef(inPlan.up),
      down: scriptRef(inPlan.down),
    };
  }
  return {
    id: row.stepId,
    transactional: row.transactional,
    up: { path: `${row.stepId} (up, as applied)`, sha256: row.checksum, sql: '' },
    down: { path: `${row.stepId} (down, as recorded)`, sha256: row.downChecksum, sql: '' },
  };
}

/** Takes stock of a migration for its revert; findings say what cannot be reverted and why. */
export async function revertInventory(c: PoolClient, input: RevertInventoryInput): Promise<RevertInventory> {
  const { plan } = input;
  const findings: Finding[] = [];
  const add = (check: string, status: FindingStatus, message: string) => findings.push({ check, status, message });
  const rows = await readLedger(c, plan.name);
  const steps = stepStates(rows, planSteps(plan));
  const applied = rows.filter((r) => r.status === 'applied');
  const downs = applied.map((r) => r.downChecksum);
  const left: MigrationLeftovers = await readLeftovers(c, plan.name, plan.traffic?.flag, downs);
  const items: RevertItem[] = [];

  for (const s of steps.filter((x) => x.state === 'drift')) {
    add(
      `step ${s.step}`,
      'fail',
      `drift: changed since ${s.appliedBy?.workflowId} applied it — ${s.drift}. Revert with the plan as it was applied (tidemark revert ${plan.name} takes it from the migration's own record)`,
    );
  }
  const planDowns = new Set(
    planSteps(plan)
      .filter((s) => s.down.sql)
      .map((s) => s.down.sha256),
  );
  for (const r of applied) {
    if (!planDowns.has(r.downChecksum) && !left.scripts.includes(r.downChecksum)) {
      add(
        `step ${r.stepId}`,
        'fail',
        `its down script (sha256 ${r.downChecksum}) is neither in the plan nor recorded in tidemark.scripts: it cannot be reverted`,
      );
    }
  }

  // Archived tables come back while they exist; once dropped, there is nothing to move back.
  const present = new Map<string, RecordedRun>();
  for (const a of left.archived.filter((x) => !x.restoredAt)) {
    if (a.droppedAt) {
      add(
        `archive ${a.table}`,
        'fail',
        `${a.archivedAs} was dropped at ${a.droppedAt}: the old table is gone and the revert cannot bring it back (${plan.backup.enabled ? 'restore it from a backup of the plan with pg_restore' : 'the plan takes no backups: restore it from one of your own'})`,
      );
      continue;
    }
    const there = await c.query(`SELECT to_regclass($1) IS NOT NULL AS x`, [
      quoteTable({ schema: ARCHIVE_SCHEMA, name: parseTableRef(a.table).name }),
    ]);
    if (!there.rows[0].x) {
      add(`archive ${a.table}`, 'fail', `${a.archivedAs} no longer exists: the old table cannot be moved back`);
      continue;
    }
    present.set(a.table, a.run);
  }

  // Writes made on the new path since the sync was removed are only in the new tables: moving back loses them.
  const flagUp = (left.flag?.percent ?? 0) > 0;
  const synced = new Set(left.syncs.map((s) => s.job));
  for (const job of plan.copy) {
    if (!plan.traffic || !flagUp || synced.has(job.name)) continue;
    if (job.discardNewPathWrites) {
      add(
        `copy ${job.name}`,
        'warn',
        `the plan accepts losing the new path's writes to ${job.to} (discardNewPathWrites)`,
      );
      continue;
    }
    const why = `${job.to} has taken the application's writes (flag ${plan.traffic.flag} at ${left.flag!.percent}%) and nothing copies them back to ${job.from ?? 'the old tables'} since cleanup removed the sync: the revert would lose every write made there since`;
    if (input.discardNewWrites) add(`copy ${job.name}`, 'warn', `${why} (accepted: --discard-new-writes)`);
    else add(`copy ${job.name}`, 'fail', `${why}; revert with --discard-new-writes to accept that`);
  }

  // In the order the migration made them: schema steps, copy syncs, the flag, the archive, cleanup steps.
  const step = (phase: StepPhase) =>
    applied
      .filter((r) => r.phase === phase)
      .forEach((r) => {
        const s = stepToRevert(r, plan);
        const run = { runKey: r.runId, migration: plan.name, workflowId: r.workflowId };
        const description = `run ${s.down.path} (undo ${s.id})`;
        if (phase === 'schema') items.push({ phase, run, description, action: { kind: 'revertSchemaStep', step: s } });
        else items.push({ phase, run, description, action: { kind: 'revertCleanupStep', step: s } });
      });
  step('schema');
  for (const sync of left.syncs) {
    const job = plan.copy.find((j) => j.name === sync.job);
    if (!job) {
      add(
        `copy ${sync.job}`,
        'fail',
        `its sync triggers are installed but the plan has no copy job ${sync.job}: revert with the plan that installed them`,
      );
      continue;
    }
    items.push({
      phase: 'copy',
      run: toRun(sync.run),
      description: `drop sync triggers of ${job.name}; empty ${job.to} if the copy filled it`,
      action: { kind: 'undoCopy', job },
    });
  }
  if (plan.traffic && flagUp) {
    const flag = plan.traffic.flag;
    items.push({
      phase: 'traffic',
      run: { runKey: '', migration: plan.name, workflowId: '' },
      description: `set flag ${flag} to 0%`,
      action: { kind: 'resetFlag', flag },
    });
  }
  const byRun = new Map<string, { run: RecordedRun; tables: string[] }>();
  for (const [table, run] of present) {
    const g = byRun.get(run.runKey) ?? { run, tables: [] };
    g.tables.push(table);
    byRun.set(run.runKey, g);
  }
  for (const { run, tables } of byRun.values()) {
    const followers = plan.copy.filter(
      (j) => j.sync === 'bidirectional' && j.from !== undefined && tables.includes(j.from) && synced.has(j.name),
    );
    items.push({
      phase: 'cleanup',
      run: toRun(run),
      description: `move ${tables.join(', ')} back from tidemark_archive`,
      action: { kind: 'restoreArchivedTables', tables, followers },
    });
  }
  step('cleanup');
  if (!items.length) add('revert', 'ok', `nothing of ${plan.name} is applied: there is nothing to revert`);
  return { ok: !findings.some((f) => f.status === 'fail'), findings, steps, items };
}

export function createLedgerActivities(deps: ActivityDeps) {
  return {
    /** One plan's ledger rows (or every plan's), oldest first: what `tidemark history` shows. */
    async readLedger(input: { urlEnv: string; migration?: string }): Promise<LedgerRow[]> {
      return activityBody('reading the ledger', async () => {
        const pool = deps.pools.get(input.urlEnv);
        return withClient(pool, (c) => readLedger(c, input.migration));
      });
    },

    /**
     * Takes stock of what a revert must undo, read in one snapshot. Refuses (non-retryable, every finding in the
     * details) what cannot be reverted; otherwise stores the plan's scripts, which the undos read by sha256.
     */
    async planRevert(input: RevertInventoryInput): Promise<RevertInventory> {
      return activityBody('taking stock for the revert', async () => {
        const pool = await targetPool(deps, input.plan.database.urlEnv);
        const inv = await withClient(pool, (c) =>
          inTransaction(c, { readOnly: true, isolation: 'repeatable read' }, (tx) => revertInventory(tx, input)),
        );
        if (!inv.ok) {
          const failed = inv.findings.filter((f) => f.status === 'fail').map((f) => `${f.check}: ${f.message}`);
          throw failure(F.PreflightFailed, `revert refused, nothing was changed: ${failed.join('; ')}`, inv);
        }
        // A plan taken from a continued run carries hashes only: its scripts were stored by that run's preflight.
        await storeScripts(
          pool,
          planScripts(input.plan).filter((s) => s.sql),
        );
        return inv;
      });
    },
  };
}
