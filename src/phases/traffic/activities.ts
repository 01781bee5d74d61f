// Traffic, activity side: moves the rollout flag (every change NOTIFYs readers) and, as the undo, puts it back to 0;
// reads metric gates.
import { TIDEMARK_SCHEMA } from '../../db/names';
import { quoteIdent } from '../../db/quote';
import { singleValue, withTransaction } from '../../db/tx';
import type { Gate } from '../../plan/types';
import type { Pool, PoolClient } from 'pg';
import { F, failure } from '../../migration/failures';
import { registerSecret, withoutCredentials } from '../../secrets';
import { activityBody, forwardTransaction, targetPool, type ActivityDeps, type RunRef } from '../activity-kit';

const S = quoteIdent(TIDEMARK_SCHEMA);

export interface SetFlagInput {
  urlEnv: string;
  run: RunRef;
  flag: string;
  percent: number;
  by: string;
}

/** Sets the flag (creating it if needed); returns the previous percentage. */
async function writeFlag(db: Pool | PoolClient, flag: string, percent: number, by: string) {
  const r = await db.query(
    `WITH prev AS (SELECT rollout_percentage FROM ${S}.flags WHERE name = $1)
     INSERT INTO ${S}.flags (name, rollout_percentage, updated_at, updated_by) VALUES ($1, $2, now(), $3)
     ON CONFLICT (name) DO UPDATE SET rollout_percentage = EXCLUDED.rollout_percentage, updated_at = now(), updated_by = EXCLUDED.updated_by
     RETURNING (SELECT rollout_percentage FROM prev) AS previous, updated_at`,
    [flag, percent, by],
  );
  return {
    previous: (r.rows[0].previous as number | null) ?? 0,
    percent,
    at: new Date(r.rows[0].updated_at).toISOString(),
  };
}

export interface GateValue {
  gate: string;
  value: number | null;
  error?: string;
}

/** Follows a dotted path (`data.errorRate`, `items.0.value`) into a parsed JSON body. */
export function pickField(body: unknown, field: string | undefined): unknown {
  if (!field) return body;
  let cur: unknown = body;
  for (const part of field.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

function toNumber(v: unknown, what: string): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  // JSON would print NaN and the infinities as null: say what came.
  const shown = typeof v === 'number' ? String(v) : JSON.stringify(v)?.slice(0, 80);
  if (!Number.isFinite(n)) throw new Error(`${what} did not give a number (got ${shown})`);
  return n;
}

export function createTrafficActivities(deps: ActivityDeps) {
  async function readGate(defaultUrlEnv: string, g: Gate): Promise<number> {
    if (g.sql) {
      const pool = g.database ? deps.pools.get(g.database.urlEnv) : await targetPool(deps, defaultUrlEnv);
      return withTransaction(pool, { readOnly: true, statementTimeoutMs: g.timeout }, async (c) =>
        toNumber(await singleValue(c, g.sql!), 'the gate query'),
      );
    }
    const src = g.prometheus ?? g.http!;
    const base = src.url ?? process.env[src.urlEnv!];
    if (!base) throw new Error(`environment variable ${src.urlEnv} (the gate's urlEnv) is not set on the worker`);
    registerSecret(base);
    const { url: endpoint, headers } = withoutCredentials(base);
    const url = g.prometheus
      ? `${endpoint.replace(/\/$/, '')}/api/v1/query?query=${encodeURIComponent(g.prometheus.query)}`
      : endpoint;
    const res = await fetch(url, {
      signal: AbortSignal.timeout(g.timeout),
      headers: { accept: 'application/json', ...headers },
    });
    if (!res.ok) throw new Error(`HTTP ${res.status} from the gate endpoint`);
    const body = (await res.json()) as unknown;
    if (g.prometheus) {
      const data = (body as { data?: { resultType?: string; result?: unknown } }).data;
      if (data?.resultType === 'scalar') return toNumber((data.result as [number, string])[1], 'the Prometheus query');
      const vec = data?.result as { value: [number, string] }[] | undefined;
      if (!vec?.length) throw new Error('the Prometheus query returned no series');
      // As with a gate query's rows: which series counts is the plan's to say, not the order they came in.
      if (vec.length > 1) {
        throw new Error(
          `the Prometheus query returned ${vec.length} series, where one value is read: aggregate them (max(…), sum(…), …)`,
        );
      }
      return toNumber(vec[0].value[1], 'the Prometheus query');
    }
    return toNumber(pickField(body, g.http!.field), `field ${g.http!.field ?? '(body)'}`);
  }

  return {
    /** Moves the flag to a stage's percentage; fenced, so it never lands after a rollback put it back to 0. */
    async setFlag(input: SetFlagInput): Promise<{ previous: number; percent: number; at: string }> {
      return activityBody(`setting flag ${input.flag} to ${input.percent}%`, async () => {
        if (!Number.isInteger(input.percent) || input.percent < 0 || input.percent > 100) {
          throw failure(F.PlanRuntimeError, `flag percentage must be 0..100, got ${input.percent}`);
        }
        const pool = await targetPool(deps, input.urlEnv);
        const r = await forwardTransaction(pool, input.run, {}, (c) =>
          writeFlag(c, input.flag, input.percent, input.by),
        );
        deps.logger.info({ flag: input.flag, percent: input.percent }, 'flag set');
        return r;
      });
    },

    /** Undo: the flag back to 0, so traffic returns to the old path. */
    async resetFlag(input: { urlEnv: string; flag: string; by: string }): Promise<{ previous: number }> {
      return activityBody(`setting flag ${input.flag} back to 0%`, async () => {
        const pool = await targetPool(deps, input.urlEnv);
        const r = await writeFlag(pool, input.flag, 0, input.by);
        deps.logger.info({ flag: input.flag, previous: r.previous }, 'flag back to 0');
        return { previous: r.previous };
      });
    },

    /** Reads every gate once. A gate that cannot be read gives value null and the error (the workflow treats it as inconclusive). */
    async readGates(input: { urlEnv: string; gates: Gate[] }): Promise<GateValue[]> {
      return Promise.all(
        input.gates.map(async (g) => {
          try {
            return { gate: g.name, value: await readGate(input.urlEnv, g) };
          } catch (e) {
            // fetch says only "fetch failed"; why is in its cause (a refused connection, a timeout).
            const err = e as Error & { cause?: { message?: string } };
            const why = err.cause?.message ? `${err.message}: ${err.cause.message}` : err.message;
            return { gate: g.name, value: null, error: why.slice(0, 300) };
          }
        }),
      );
    },
  };
}
