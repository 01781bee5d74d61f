// Plan rehearsal (`tidemark plan check --rehearse`): preflight, then each schema step up → down → up inside one
// transaction that is rolled back, checking that down restores exactly the schema up started from; cleanup steps the
// same way, after the archive is simulated (the old tables moved aside, as cleanup does before its steps).
import type { Pool, PoolClient } from 'pg';
import { resolveMapping } from '../phases/copy/mapping';
import { probeSync, type SyncProbe } from '../phases/copy/probe';
import { reverseRoundTrip } from '../phases/copy/round-trip';
import type { CopyMapping } from '../phases/copy/sql';
import { checkTargetDatabase, runPreflightChecks, type PreflightReport } from '../phases/preflight/activities';
import { formatPgError } from '../db/errors';
import { ARCHIVE_SCHEMA } from '../db/names';
import { quoteIdent, quoteTable } from '../db/quote';
import { fingerprintDiff, schemaFingerprint } from '../db/fingerprint';
import { inSavepoint, singleValue } from '../db/tx';
import { lintPlan, type LintFinding } from '../plan/lint';
import { stepUrlEnv } from '../plan/databases';
import type { ResolvedCopyJob, ResolvedPlan } from '../plan/types';

export type StepOutcome = 'ok' | 'failed' | 'not-rehearsable' | 'not-reached' | 'applied-earlier';

export interface RehearsalStep {
  id: string;
  outcome: StepOutcome;
  message: string;
  /** Schema lines the step left behind or lost, when down does not undo up. */
  difference?: { gone: string[]; added: string[] };
}

/** A gate's or an assertion's SQL, tried once after the steps (so it may read the tables they create). */
export interface RehearsalQuery {
  kind: 'gate' | 'assertion';
  name: string;
  outcome: 'ok' | 'unreadable' | 'not-tried';
  message: string;
}

export interface RehearsalReport {
  ok: boolean;
  lint: LintFinding[];
  preflight: PreflightReport;
  steps: RehearsalStep[];
  /** Unreadable queries are warnings: a gate's table may only appear once the application runs. */
  queries: RehearsalQuery[];
  /** Each synced copy job's triggers, installed after the steps and written through once in each direction. */
  syncs: SyncProbe[];
  /** The database's schema is the same after the rehearsal as before it. */
  unchanged: boolean;
}

/**
 * Rehearses `plan` against its database (`pool`); a blue-green plan also against its target (`target`): the target's
 * preflight checks, and each step in a rolled-back transaction on the database it runs on.
 */
export async function rehearsePlan(pool: Pool, plan: ResolvedPlan, target?: Pool): Promise<RehearsalReport> {
  if (plan.target && !target) throw new Error('a blue-green plan is rehearsed against both of its databases');
  const lint = await lintPlan(plan);
  const preflight = await runPreflightChecks(pool, plan);
  if (plan.target && target) {
    preflight.findings.push(...(await checkTargetDatabase(pool, target, plan)));
    preflight.ok = !preflight.findings.some((f) => f.status === 'fail');
  }
  const steps: RehearsalStep[] = [];
  let queries: RehearsalQuery[] | undefined;
  const syncs: SyncProbe[] = [];
  const c = await pool.connect();
  const tc = plan.target && target ? await target.connect() : undefined;
  const sides = tc ? [c, tc] : [c];
  const clientFor = (step: ResolvedPlan['schema'][number]) =>
    tc && stepUrlEnv(plan, step) === plan.target!.urlEnv ? tc : c;
  let unchanged: boolean;
  try {
    const before = await Promise.all(sides.map((x) => schemaFingerprint(x)));
    for (const x of sides) {
      await x.query('BEGIN');
      await x.query(`SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', '300s', true)`, [
        `${plan.lockTimeout}ms`,
      ]);
    }
    try {
      let stopped = false;
      const rehearse = async (step: ResolvedPlan['schema'][number]) => {
        const earlier = preflight.steps?.find(
          (x) => x.step === step.id && x.state !== 'pending' && x.state !== 'reverted',
        );
        if (earlier) {
          steps.push({
            id: step.id,
            outcome: 'applied-earlier',
            message: `applied by ${earlier.appliedBy?.workflowId ?? 'an earlier run'}: not applied again, not rehearsed`,
          });
          return;
        }
        if (stopped) {
          steps.push({ id: step.id, outcome: 'not-reached', message: 'not rehearsed: an earlier step failed' });
          return;
        }
        if (!step.transactional) {
          steps.push({
            id: step.id,
            outcome: 'not-rehearsable',
            message:
              'runs outside a transaction (transactional: false), so it cannot be rolled back; later steps are rehearsed without it',
          });
          return;
        }
        const result = await rehearseStep(clientFor(step), step.id, step.up.sql, step.down.sql);
        steps.push(result);
        if (result.outcome === 'failed') stopped = true;
      };
      for (const step of plan.schema) await rehearse(step);
      queries = await rehearseQueries(c, plan);
      // Same-database sync only: a blue-green plan's capture and its mapping are checked by the target's preflight.
      if (!plan.target) for (const job of plan.copy) if (job.sync !== 'none') syncs.push(await probeSync(c, job, true));
      // Across databases: changes come back once the target takes writes, through each job's reverse.
      if (tc) {
        for (const job of plan.copy) {
          const tried = job.sync !== 'none' ? await roundTripAcross(c, tc, job) : undefined;
          if (tried) syncs.push(tried);
        }
      }
      const cleanupSteps = plan.cleanup?.steps ?? [];
      if (cleanupSteps.length) {
        // Cleanup steps run after the archive: the old names are free by then (a view may take one).
        const moved = await attempt(c, simulateArchiveSql(plan.cleanup!.archive));
        if (moved) {
          stopped = true;
          steps.push({
            id: cleanupSteps[0].id,
            outcome: 'failed',
            message: `the archive cannot be simulated: ${moved}`,
          });
        }
        for (const step of cleanupSteps) await rehearse(step);
      }
    } finally {
      for (const x of sides) await x.query('ROLLBACK');
    }
    const after = await Promise.all(sides.map((x) => schemaFingerprint(x)));
    unchanged = after.every((a, i) => {
      const diff = fingerprintDiff(before[i], a);
      return diff.gone.length === 0 && diff.added.length === 0;
    });
  } finally {
    c.release();
    tc?.release();
  }
  const ok =
    preflight.ok &&
    steps.every((s) => s.outcome !== 'failed') &&
    syncs.every((s) => s.ok) &&
    !lint.some((f) => f.severity === 'error');
  return { ok, lint, preflight, steps, queries: queries ?? [], syncs, unchanged };
}

/**
 * A blue-green job's mapping tried on a sample of rows, to the target and back (round-trip.ts); undefined when its
 * mapping does not resolve here (a target table a step outside a transaction creates): preflight speaks for it.
 */
async function roundTripAcross(c: PoolClient, tc: PoolClient, job: ResolvedCopyJob): Promise<SyncProbe | undefined> {
  let m: CopyMapping;
  try {
    m = await resolveMapping(c, { ...job, sync: 'bidirectional' }, undefined, tc);
  } catch {
    return undefined;
  }
  const warning = await reverseRoundTrip(m, { c, inTransaction: true }, { c: tc, inTransaction: true });
  return {
    job: job.name,
    ok: true,
    message: 'a sample of rows mapped to the target and back',
    ...(warning ? { warning } : {}),
  };
}

/** What cleanup does before its steps: the archived tables moved into tidemark_archive (inside the rehearsal only). */
function simulateArchiveSql(tables: string[]): string {
  if (!tables.length) return 'SELECT 1';
  return [
    `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(ARCHIVE_SCHEMA)}`,
    ...tables.map((t) => `ALTER TABLE ${quoteTable(t)} SET SCHEMA ${quoteIdent(ARCHIVE_SCHEMA)}`),
  ].join(';\n');
}

async function attempt(c: PoolClient, sql: string): Promise<string | null> {
  try {
    await inSavepoint(c, () => c.query(sql));
    return null;
  } catch (e) {
    return formatPgError(e);
  }
}

async function rehearseStep(c: PoolClient, id: string, up: string, down: string): Promise<RehearsalStep> {
  const s0 = await schemaFingerprint(c);
  const upErr = await attempt(c, up);
  if (upErr) return { id, outcome: 'failed', message: `up fails: ${upErr}` };
  const s1 = await schemaFingerprint(c);
  const downErr = await attempt(c, down);
  if (downErr) return { id, outcome: 'failed', message: `down fails after up: ${downErr}` };
  const afterDown = fingerprintDiff(s0, await schemaFingerprint(c));
  if (afterDown.gone.length || afterDown.added.length) {
    return { id, outcome: 'failed', message: 'down does not undo up', difference: afterDown };
  }
  const againErr = await attempt(c, up);
  if (againErr) return { id, outcome: 'failed', message: `up fails when applied again after down: ${againErr}` };
  const again = fingerprintDiff(s1, await schemaFingerprint(c));
  if (again.gone.length || again.added.length) {
    return {
      id,
      outcome: 'failed',
      message: 'up after down gives a different schema than the first up',
      difference: again,
    };
  }
  return { id, outcome: 'ok', message: 'up, down (schema restored exactly), up again' };
}

async function rehearseQueries(c: PoolClient, plan: ResolvedPlan): Promise<RehearsalQuery[]> {
  const out: RehearsalQuery[] = [];
  const run = async (kind: RehearsalQuery['kind'], name: string, sql: string) => {
    try {
      // One statement only, as when the migration runs it (db/tx.ts singleValue).
      const value = await inSavepoint(c, () => singleValue(c, sql, undefined), { undo: true });
      const shown =
        value === undefined
          ? 'no row'
          : value === null || typeof value !== 'object'
            ? String(value)
            : JSON.stringify(value);
      out.push({ kind, name, outcome: 'ok', message: `reads ${shown} now` });
    } catch (e) {
      out.push({ kind, name, outcome: 'unreadable', message: formatPgError(e) });
    }
  };
  for (const g of plan.traffic?.gates ?? []) {
    if (!g.sql)
      out.push({
        kind: 'gate',
        name: g.name,
        outcome: 'not-tried',
        message: 'reads Prometheus or HTTP, not this database',
      });
    else if (g.database)
      out.push({
        kind: 'gate',
        name: g.name,
        outcome: 'not-tried',
        message: `reads the database in $${g.database.urlEnv}`,
      });
    else await run('gate', g.name, g.sql);
  }
  for (const v of plan.validate) if (v.sql) await run('assertion', v.sql.name, v.sql.query);
  return out;
}
