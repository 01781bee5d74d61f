// Validate phase: row counts, exact chunked checksums through the mapping, SQL assertions and orphan checks.
// Read-only, so no compensation; a failed check fails the phase and the workflow rolls back.
import type { Pool, PoolClient } from 'pg';
import { TIDEMARK_SCHEMA } from '../../db/names';
import { quoteIdent, quoteTable } from '../../db/quote';
import { chunkPlanner, walkChunks, type ChunkBounds } from '../copy/chunks';
import { chunkDiffQuery, chunkDigestQuery, nullKeyQuery, rowCountQuery } from './sql';
import { inTransaction, NotOneValueError, singleValue, withClient } from '../../db/tx';
import type { ResolvedCopyJob, ValidationCheck } from '../../plan/types';
import type { ValidationCheckResult, ValidationReport } from '../../migration/messages';
import { describeKey } from '../../plan/keys';
import { resolveMapping } from '../copy/mapping';
import {
  activityBody,
  cancellationSignal,
  heartbeat,
  previousHeartbeat,
  targetPool,
  type ActivityDeps,
  type RunRef,
} from '../activity-kit';
import { CancelledFailure } from '@temporalio/activity';
import { validateAcross } from './across';

export interface ValidationInput {
  urlEnv: string;
  /** Blue-green: the target database (urlEnv is the source's); counts and checksums compare across the two. */
  targetEnv?: string;
  /** The run whose row stamps a comparison across databases reads. */
  run?: RunRef;
  check: ValidationCheck;
  /** The copy job a rowCount/checksum check refers to. */
  job?: ResolvedCopyJob;
}

/** A differing row: its key and each side's values as PostgreSQL prints them (null: the row is missing there). */
export interface ChecksumDifference {
  key: string;
  source: Record<string, string | null> | null;
  target: Record<string, string | null> | null;
}

interface ChecksumHeartbeat {
  cursor: string | null;
  chunks: number;
  rowsChecked: number;
  mismatchedChunks: number;
  differences: ChecksumDifference[];
}

const MAX_REPORTED_DIFFERENCES = 100;
/** Columns shown per differing row (those that differ first); a wide table must not bloat the report. */
const MAX_REPORTED_COLUMNS = 8;

/**
 * Keeps a difference small enough to report: the columns that differ (or, for a missing row, the first ones), at most
 * MAX_REPORTED_COLUMNS, each value already cut by the query. A report must always fit in Temporal's payloads: one
 * that did not once made the checksum retry forever instead of failing the migration.
 */
export function boundDifference(d: ChecksumDifference): ChecksumDifference {
  const cols = Object.keys(d.source ?? d.target ?? {});
  const differing = d.source && d.target ? cols.filter((c) => d.source![c] !== d.target![c]) : cols;
  const keep = new Set((differing.length ? differing : cols).slice(0, MAX_REPORTED_COLUMNS));
  const pick = (row: ChecksumDifference['source']) =>
    row && Object.fromEntries(Object.entries(row).filter(([c]) => keep.has(c)));
  return { key: d.key, source: pick(d.source), target: pick(d.target) };
}

/** A short name for a check, used in reports and messages. */
export function checkName(check: ValidationCheck): string {
  if (check.rowCount) return `rowCount ${check.rowCount.copy}`;
  if (check.checksum) return `checksum ${check.checksum.copy}`;
  if (check.sql) return check.sql.name;
  if (check.orphans) return check.orphans.name ?? `orphans ${check.orphans.table}.${check.orphans.column}`;
  return 'unknown check';
}

function withinTolerance(
  source: number,
  target: number,
  tolerance: number | string | undefined,
): { ok: boolean; allowed: number } {
  let allowed = 0;
  if (typeof tolerance === 'number') allowed = tolerance;
  else if (typeof tolerance === 'string') allowed = (source * parseFloat(tolerance)) / 100;
  return { ok: Math.abs(source - target) <= allowed, allowed };
}

function compare(value: unknown, spec: { expect?: unknown; max?: number; min?: number }): { ok: boolean; why: string } {
  const shown = value === null || value === undefined ? 'NULL' : String(value);
  if (spec.expect !== undefined) {
    const equal =
      spec.expect === null
        ? value === null || value === undefined
        : typeof spec.expect === 'number'
          ? Number(value) === spec.expect
          : typeof spec.expect === 'boolean'
            ? value === spec.expect || String(value) === String(spec.expect)
            : String(value) === String(spec.expect);
    if (!equal) return { ok: false, why: `got ${shown}, expected ${String(spec.expect)}` };
  }
  const n = Number(value);
  if (spec.max !== undefined && !(n <= spec.max))
    return { ok: false, why: `got ${shown}, more than the maximum ${spec.max}` };
  if (spec.min !== undefined && !(n >= spec.min))
    return { ok: false, why: `got ${shown}, less than the minimum ${spec.min}` };
  return { ok: true, why: `got ${shown}` };
}

export function createValidateActivities(deps: ActivityDeps) {
  return {
    async runValidationCheck(input: ValidationInput): Promise<ValidationCheckResult> {
      const { check } = input;
      const name = checkName(check);
      return activityBody(`validation "${name}"`, async () => {
        if (input.targetEnv && (check.rowCount || check.checksum)) return validateAcross(deps, input, name);
        const pool = await targetPool(deps, input.urlEnv);
        return withClient(pool, async (c) => {
          if (check.rowCount) return rowCount(c, input, name);
          if (check.checksum) return checksum(c, input, name, pool);
          if (check.sql) return sqlAssertion(c, check.sql, name);
          if (check.orphans) return orphans(c, check.orphans, name);
          throw new Error('empty validation check');
        });
      });
    },

    /** Keeps a report (validation, preflight…) with the migration in the target database. */
    async recordReport(input: { urlEnv: string; run: RunRef; kind: string; report: unknown }): Promise<void> {
      return activityBody('recording report', async () => {
        const pool = await targetPool(deps, input.urlEnv);
        await pool.query(
          `INSERT INTO ${quoteIdent(TIDEMARK_SCHEMA)}.reports (migration, workflow_id, run_id, kind, report) VALUES ($1, $2, $3, $4, $5)`,
          [input.run.migration, input.run.workflowId, input.run.runKey, input.kind, JSON.stringify(input.report)],
        );
      });
    },
  };
}

async function rowCount(c: PoolClient, input: ValidationInput, name: string): Promise<ValidationCheckResult> {
  const m = await resolveMapping(c, input.job!);
  const { source, target } = await inTransaction(c, { isolation: 'repeatable read', readOnly: true }, async (tx) => {
    const q = rowCountQuery(m);
    return (await tx.query(q.text, q.values)).rows[0] as { source: number; target: number };
  });
  const tol = input.check.rowCount!.tolerance;
  const { ok, allowed } = withinTolerance(source, target, tol);
  const diff = target - source;
  return {
    check: name,
    kind: 'rowCount',
    ok,
    message: `source ${source} rows, target ${target} rows (difference ${diff >= 0 ? '+' : ''}${diff}${tol !== undefined ? `, tolerance ${tol} = ${Math.floor(allowed)} rows` : ''})`,
    details: { source, target, difference: diff, tolerance: tol ?? 0 },
  };
}

async function checksum(
  c: PoolClient,
  input: ValidationInput,
  name: string,
  pool: Pool,
): Promise<ValidationCheckResult> {
  const m = await resolveMapping(c, input.job!);
  const size = input.check.checksum!.chunkSize;
  const signal = cancellationSignal();
  const prev = previousHeartbeat<ChecksumHeartbeat>();
  // Resumes after the last chunk below which everything was compared (chunks finish out of order when parallel).
  const state: ChecksumHeartbeat = prev ?? {
    cursor: null,
    chunks: 0,
    rowsChecked: 0,
    mismatchedChunks: 0,
    differences: [],
  };
  const differences = new Map(state.differences.map((d) => [d.key, d]));
  const started = Date.now();
  let sourceRows = 0;
  let targetRows = 0;
  const planner = await chunkPlanner(c, m, size, state.cursor);
  const compare = async (tx: PoolClient, bounds: ChunkBounds) => {
    // One snapshot per chunk: sync triggers write both sides in the same transaction, so live writes cannot make a
    // chunk differ half-way.
    return inTransaction(tx, { isolation: 'repeatable read', readOnly: true }, async (t) => {
      const dq = chunkDigestQuery(m, bounds);
      const d = (await t.query(dq.text, dq.values)).rows[0] as {
        source_rows: number;
        source_digest: string;
        target_rows: number;
        target_digest: string;
      };
      let diffs: ChecksumDifference[] = [];
      if (d.source_digest !== d.target_digest || d.source_rows !== d.target_rows) {
        const q = chunkDiffQuery(m, bounds, Math.max(1, MAX_REPORTED_DIFFERENCES - differences.size));
        diffs = ((await t.query(q.text, q.values)).rows as ChecksumDifference[]).map(boundDifference);
      }
      return { d, diffs, differs: d.source_digest !== d.target_digest || d.source_rows !== d.target_rows };
    });
  };

  await walkChunks(
    pool,
    c,
    planner,
    state.cursor,
    compare,
    (r, cursor) => {
      state.cursor = cursor;
      state.chunks++;
      state.rowsChecked += r.d.source_rows;
      sourceRows += r.d.source_rows;
      targetRows += r.d.target_rows;
      if (r.differs) state.mismatchedChunks++;
      for (const diff of r.diffs) if (differences.size < MAX_REPORTED_DIFFERENCES) differences.set(diff.key, diff);
      heartbeat({
        ...state,
        differences: [...differences.values()],
        rowsPerSecond: Math.round((sourceRows * 1000) / Math.max(1, Date.now() - started)),
      });
    },
    () => {
      if (signal?.aborted) throw new CancelledFailure('cancelled');
    },
  );
  // Rows with a NULL key are in no chunk: any of them is a difference the chunks cannot show.
  const nq = nullKeyQuery(m);
  const nullKeys = (await c.query(nq.text, nq.values)).rows[0] as { source: number; target: number };
  const nullKeyProblem =
    nullKeys.source || nullKeys.target
      ? `rows with a NULL ${describeKey(input.job!)}: ${nullKeys.source} in the source, ${nullKeys.target} in the target (no key to compare them by)`
      : undefined;
  const ok = state.mismatchedChunks === 0 && !nullKeyProblem;
  const found = [...differences.values()].sort((a, b) => compareKeys(a.key, b.key));
  const keys = found.map((d) => d.key);
  return {
    check: name,
    kind: 'checksum',
    ok,
    message: ok
      ? `${state.rowsChecked} rows identical in ${state.chunks} chunks`
      : [
          state.mismatchedChunks
            ? `${state.mismatchedChunks} of ${state.chunks} chunks differ; differing keys: ${keys.slice(0, 20).join(', ')}${keys.length > 20 ? ` … (${keys.length} reported)` : ''}`
            : '',
          nullKeyProblem ?? '',
        ]
          .filter(Boolean)
          .join('; '),
    details: {
      chunks: state.chunks,
      rowsChecked: state.rowsChecked,
      sourceRows,
      targetRows,
      mismatchedChunks: state.mismatchedChunks,
      nullKeys,
      differences: found,
      durationMs: Date.now() - started,
    },
  };
}

/** Numeric keys in numeric order, anything else as text. */
function compareKeys(a: string, b: string): number {
  const x = Number(a);
  const y = Number(b);
  return Number.isFinite(x) && Number.isFinite(y) ? x - y : a < b ? -1 : a > b ? 1 : 0;
}

async function sqlAssertion(
  c: PoolClient,
  spec: NonNullable<ValidationCheck['sql']>,
  name: string,
): Promise<ValidationCheckResult> {
  let value: unknown;
  try {
    value = await inTransaction(c, { readOnly: true, statementTimeoutMs: 10 * 60_000 }, (tx) =>
      singleValue(tx, spec.query),
    );
  } catch (e) {
    if (e instanceof NotOneValueError) return { check: name, kind: 'sql', ok: false, message: e.message, details: {} };
    throw e;
  }
  const { ok, why } = compare(value, spec);
  return { check: name, kind: 'sql', ok, message: why, details: { value } };
}

async function orphans(
  c: PoolClient,
  spec: NonNullable<ValidationCheck['orphans']>,
  name: string,
): Promise<ValidationCheckResult> {
  const col = quoteIdent(spec.column);
  const ref = quoteIdent(spec.references.column);
  const r = await inTransaction(c, { readOnly: true }, (tx) =>
    tx.query(
      `SELECT count(*)::float8 AS n, (array_agg(c.${col}::text ORDER BY c.${col}))[1:5] AS examples
         FROM ${quoteTable(spec.table)} AS c
        WHERE c.${col} IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM ${quoteTable(spec.references.table)} AS p WHERE p.${ref} = c.${col})`,
    ),
  );
  const { n, examples } = r.rows[0] as { n: number; examples: string[] | null };
  const ok = n <= spec.max;
  return {
    check: name,
    kind: 'orphans',
    ok,
    message: `${n} row(s) of ${spec.table} reference a missing ${spec.references.table}.${spec.references.column}${n ? ` (e.g. ${(examples ?? []).join(', ')})` : ''}${spec.max ? `, at most ${spec.max} allowed` : ''}`,
    details: { orphans: n, examples: examples ?? [] },
  };
}

export function summarize(checks: ValidationCheckResult[]): ValidationReport {
  return { ok: checks.every((c) => c.ok), checks, at: new Date().toISOString() };
}
