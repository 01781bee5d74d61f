// Small helpers that give out a client, a transaction or an advisory lock and always give it back.
import type { Pool, PoolClient } from 'pg';
import { breaksClient } from './errors';

export async function withClient<T>(pool: Pool, fn: (c: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    return await fn(client);
  } catch (e) {
    // A client whose connection failed must not go back into the pool.
    if (breaksClient(e)) broken = e as Error;
    throw e;
  } finally {
    client.release(broken);
  }
}

export interface TxOptions {
  isolation?: 'read committed' | 'repeatable read' | 'serializable';
  readOnly?: boolean;
  /** SET LOCAL lock_timeout for this transaction only (never on the pool). */
  lockTimeoutMs?: number;
  statementTimeoutMs?: number;
  /** SET LOCAL settings applied at the start of the transaction. */
  settings?: Record<string, string>;
}

export async function inTransaction<T>(
  client: PoolClient,
  opts: TxOptions,
  fn: (c: PoolClient) => Promise<T>,
): Promise<T> {
  const mode = [
    opts.isolation ? `ISOLATION LEVEL ${opts.isolation.toUpperCase()}` : '',
    opts.readOnly ? 'READ ONLY' : '',
  ]
    .filter(Boolean)
    .join(' ');
  await client.query(`BEGIN ${mode}`);
  try {
    if (opts.lockTimeoutMs !== undefined) {
      await client.query(`SELECT set_config('lock_timeout', $1, true)`, [
        `${Math.max(0, Math.round(opts.lockTimeoutMs))}ms`,
      ]);
    }
    if (opts.statementTimeoutMs !== undefined) {
      await client.query(`SELECT set_config('statement_timeout', $1, true)`, [
        `${Math.round(opts.statementTimeoutMs)}ms`,
      ]);
    }
    for (const [k, v] of Object.entries(opts.settings ?? {})) {
      await client.query(`SELECT set_config($1, $2, true)`, [k, v]);
    }
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (e) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
}

/** Runs `fn` in a transaction that is always rolled back: to try something and keep none of it. */
export async function rolledBack<T>(
  client: PoolClient,
  opts: TxOptions,
  fn: (c: PoolClient) => Promise<T>,
): Promise<T> {
  const marker = new Error('roll back');
  let result: T | undefined;
  try {
    await inTransaction(client, opts, async (c) => {
      result = await fn(c);
      throw marker;
    });
  } catch (e) {
    if (e !== marker) throw e;
  }
  return result as T;
}

export async function withTransaction<T>(pool: Pool, opts: TxOptions, fn: (c: PoolClient) => Promise<T>): Promise<T> {
  return withClient(pool, (c) => inTransaction(c, opts, fn));
}

/** Session-level advisory lock keyed by a text name; released even when fn throws. */
export async function withAdvisoryLock<T>(pool: Pool, key: string, fn: (c: PoolClient) => Promise<T>): Promise<T> {
  return withClient(pool, async (c) => {
    await c.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [key]);
    try {
      return await fn(c);
    } finally {
      await c.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [key]).catch(() => undefined);
    }
  });
}

/** A plan-given query that was to give one value gave several: which one counts is the author's to say. */
export class NotOneValueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotOneValueError';
  }
}

/**
 * Runs one plan-given read-only query (a check, a gate, an assertion) and returns its one value: `noRow` (null) when
 * it returns no row; NotOneValueError when it returns several rows or columns, since reading the first alone could
 * pass a gate that one of the other rows breaches. The extended protocol takes exactly one statement, so
 * `SELECT 0; COMMIT; …` cannot end the caller's read-only transaction.
 */
export async function singleValue(c: PoolClient, sql: string, noRow: unknown = null): Promise<unknown> {
  const config = { text: sql, rowMode: 'array' as const, queryMode: 'extended' };
  const r = await c.query<unknown[]>(config as { text: string; rowMode: 'array' });
  const many = (n: number, what: string) => `the query returned ${n} ${what}, where one value is read`;
  if (r.rows.length > 1) {
    throw new NotOneValueError(`${many(r.rows.length, 'rows')}: aggregate them (count(*), max(…), …)`);
  }
  if (r.fields.length > 1) throw new NotOneValueError(`${many(r.fields.length, 'columns')}: select one`);
  return r.rows.length ? (r.rows[0][0] ?? null) : noRow;
}

let savepoints = 0;

/**
 * Runs `fn` inside a savepoint of the caller's transaction, so that a failing statement does not abort it: kept when
 * `fn` returns (rolled back all the same with `undo`), rolled back when it throws, and the error passed on.
 */
export async function inSavepoint<T>(c: PoolClient, fn: () => Promise<T>, opts: { undo?: boolean } = {}): Promise<T> {
  const name = `tidemark_sp_${++savepoints}`;
  await c.query(`SAVEPOINT ${name}`);
  let result: T;
  try {
    result = await fn();
  } catch (e) {
    // A lost connection fails this too; the caller wants the first error.
    await c.query(`ROLLBACK TO SAVEPOINT ${name}; RELEASE SAVEPOINT ${name}`).catch(() => undefined);
    throw e;
  }
  await c.query(opts.undo ? `ROLLBACK TO SAVEPOINT ${name}; RELEASE SAVEPOINT ${name}` : `RELEASE SAVEPOINT ${name}`);
  return result;
}
