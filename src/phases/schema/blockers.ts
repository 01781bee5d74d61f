// Who a schema step waited for: a step that times out on a lock says only "lock timeout", and the operator must catch
// the blocker in pg_stat_activity before the next attempt. While the step runs, its session's blockers are looked up
// now and then from another one; a lock timeout then names the last ones seen (pid, user, application, state, how
// long their transaction has been open), never their query's text (another session's SQL: values, perhaps secrets).
import type { Pool } from 'pg';
import { formatDuration } from '../../plan/durations';

const LOCK_NOT_AVAILABLE = '55P03';

interface Blocker {
  pid: number;
  usename: string | null;
  application_name: string | null;
  state: string | null;
  open_ms: number | null;
}

function describe(b: Blocker): string {
  const parts = [
    b.usename && `user ${b.usename}`,
    b.application_name && `application "${b.application_name}"`,
    b.state,
    b.open_ms !== null && `transaction open ${formatDuration(b.open_ms)}`,
  ].filter(Boolean);
  return `pid ${b.pid}${parts.length ? ` (${parts.join(', ')})` : ''}`;
}

/**
 * Runs `fn` on the session `pid` while looking up, every `everyMs`, the sessions it waits for; a lock timeout from it
 * names them.
 */
export async function namingBlockers<T>(pool: Pool, pid: number, fn: () => Promise<T>, everyMs = 250): Promise<T> {
  let seen: Blocker[] = [];
  let looking = false;
  const look = async () => {
    if (looking) return;
    looking = true;
    try {
      const r = await pool.query<Blocker>(
        `SELECT pid, usename, application_name, state,
                (extract(epoch FROM now() - xact_start) * 1000)::float8 AS open_ms
           FROM pg_stat_activity WHERE pid = ANY (pg_blocking_pids($1)) ORDER BY xact_start LIMIT 3`,
        [pid],
      );
      if (r.rows.length) seen = r.rows;
    } catch {
      // Only a hint: a lookup that fails says nothing, and the step goes on.
    } finally {
      looking = false;
    }
  };
  const timer = setInterval(() => void look(), everyMs);
  try {
    return await fn();
  } catch (e) {
    const err = e as Error & { code?: string };
    if (err.code === LOCK_NOT_AVAILABLE && seen.length && err instanceof Error) {
      err.message = `${err.message}; it waited for ${seen.map(describe).join(', ')}`;
    }
    throw e;
  } finally {
    clearInterval(timer);
  }
}
