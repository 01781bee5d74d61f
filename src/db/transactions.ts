// Other sessions' open transactions, and waiting for them to end: the settle pass of a copy must not look at the source
// before every transaction that was open when the last batch committed has ended (see "Why the copy is exact" in
// phases/copy/sql.ts). What identifies one is its session and its start, so a session that has moved on to another
// transaction no longer counts; a prepared transaction is its global id.
import type { Pool, PoolClient } from 'pg';

type Queryable = Pool | PoolClient;

export interface OpenTransaction {
  /** The session's process id, or null for a prepared transaction (no session holds it). */
  pid: number | null;
  /** When it began (prepared transactions: when they were prepared). */
  since: string;
  /** The session's state (`active`, `idle in transaction`, …), or `prepared`. */
  state: string;
  /** The session's application_name, or the prepared transaction's global id. */
  name: string;
}

/**
 * Transactions open now in this database, other than this session's, autovacuum's and replication senders' (neither
 * writes a table's rows): who they are and since when. Read-only ones count too: one in REPEATABLE READ may write
 * later, with a snapshot older than the last batch. No query text: it may hold values that must not reach a log.
 */
export async function openTransactions(db: Queryable): Promise<OpenTransaction[]> {
  const r = await db.query(
    `SELECT pid, xact_start::text AS since, coalesce(state, '') AS state, coalesce(application_name, '') AS name
       FROM pg_stat_activity
      WHERE datname = current_database() AND xact_start IS NOT NULL AND pid <> pg_backend_pid()
        AND backend_type NOT IN ('autovacuum worker', 'walsender')
     UNION ALL
     SELECT NULL, prepared::text, 'prepared', gid FROM pg_prepared_xacts WHERE database = current_database()`,
  );
  return r.rows as OpenTransaction[];
}

const same = (a: OpenTransaction, b: OpenTransaction) =>
  a.pid === b.pid && a.since === b.since && (a.pid !== null || a.name === b.name);

/**
 * Resolves once every transaction of `waitFor` has ended. After each look that finds some still open, `onWait` hears
 * which, then `pause` runs (the caller's sleep, which also ends the wait early on cancellation: `onWait` throws then).
 */
export async function transactionsEnded(
  db: Queryable,
  waitFor: OpenTransaction[],
  onWait: (open: OpenTransaction[]) => void,
  pause: () => Promise<void>,
): Promise<void> {
  let open = waitFor;
  while (open.length) {
    const now = await openTransactions(db);
    open = open.filter((t) => now.some((n) => same(t, n)));
    if (!open.length) return;
    onWait(open);
    await pause();
  }
}

/** `pid 123 (app, idle in transaction since …)`, for a status line or a log. */
export function describeTransactions(txs: OpenTransaction[]): string {
  return txs
    .slice(0, 5)
    .map((t) =>
      t.pid === null
        ? `prepared transaction ${t.name} (since ${t.since})`
        : `pid ${t.pid} (${t.name ? `${t.name}, ` : ''}${t.state} since ${t.since})`,
    )
    .concat(txs.length > 5 ? [`${txs.length - 5} more`] : [])
    .join(', ');
}
