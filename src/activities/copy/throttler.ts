// The throttler only decides: it watches the database from its own connection and says whether the copy should
// slow down, and why. The copy loop acts on the decision.
import type { Pool } from 'pg';

export interface ThrottleDecision {
  throttle: boolean;
  reason: string | null;
}

export interface ThrottlerOptions {
  /** Sessions waiting this long on a lock count as struggling. */
  lockWaitMs: number;
  /** How often to look. */
  intervalMs: number;
  /** A probe slower than this many times its best seen latency (and above probeFloorMs) means the server is saturated. */
  probeFactor: number;
  probeFloorMs: number;
}

const DEFAULTS: ThrottlerOptions = { lockWaitMs: 200, intervalMs: 1000, probeFactor: 8, probeFloorMs: 50 };

export class Throttler {
  private timer?: NodeJS.Timeout;
  private bestProbeMs = Infinity;
  private current: ThrottleDecision = { throttle: false, reason: null };
  private readonly opts: ThrottlerOptions;

  constructor(
    private readonly pool: Pool,
    /** Backend pids of the copy's own sessions (their waits do not count; sessions they block do). */
    private readonly ownPids: () => number[],
    opts: Partial<ThrottlerOptions> = {},
  ) {
    this.opts = { ...DEFAULTS, ...opts };
  }

  get decision(): ThrottleDecision {
    return this.current;
  }

  start(): void {
    const tick = async () => {
      try {
        this.current = await this.look();
      } catch {
        // A failed look says nothing about the database's load; keep the last decision.
      }
      if (this.timer) this.timer = setTimeout(tick, this.opts.intervalMs);
    };
    this.timer = setTimeout(tick, 0);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async look(): Promise<ThrottleDecision> {
    const t0 = performance.now();
    const r = await this.pool.query(
      `SELECT count(*) FILTER (WHERE wait_event_type = 'Lock' AND now() - state_change > make_interval(secs => $2::float8 / 1000))::int AS waiters,
              count(*) FILTER (WHERE wait_event_type = 'Lock' AND pg_blocking_pids(pid) && $1::int[])::int AS blocked_by_copy
         FROM pg_stat_activity
        WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND datname = current_database()
          AND NOT (pid = ANY($1::int[]))`,
      [this.ownPids(), this.opts.lockWaitMs],
    );
    const probeMs = performance.now() - t0;
    this.bestProbeMs = Math.min(this.bestProbeMs, probeMs);
    const { waiters, blocked_by_copy: blocked } = r.rows[0] as { waiters: number; blocked_by_copy: number };
    if (blocked > 0) return { throttle: true, reason: `${blocked} session(s) waiting on rows the copy has locked` };
    if (waiters > 0) return { throttle: true, reason: `${waiters} session(s) waiting on locks for over ${this.opts.lockWaitMs}ms` };
    if (probeMs > this.opts.probeFloorMs && probeMs > this.bestProbeMs * this.opts.probeFactor) {
      return { throttle: true, reason: `database slow to answer: ${Math.round(probeMs)}ms vs ${Math.round(this.bestProbeMs)}ms at best` };
    }
    return { throttle: false, reason: null };
  }
}
