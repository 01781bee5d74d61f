// The throttler only decides: it watches the server from its own connection and says whether the copy should slow
// down, and why; the copy loop acts on the decision. One throttler per database is shared by every copy range running
// in this worker, so watching costs the same however many ranges run. Signals, strongest first:
//   1. sessions waiting on locks for a while          → back off hard
//   2. the server slow to answer a trivial query      → back off hard
//   3. other sessions busy on the server (or just were) → share: all of this worker's ranges together copy only part of
//                                                       the time (duty cycle), one batch at a time, in short bursts
// It reads pg_stat_activity only, twice a second: pg_blocking_pids() and pg_locks take the lock manager's shared
// state, and polling them often measurably slows every other session.
import type { Pool } from 'pg';

export interface ThrottleDecision {
  throttle: boolean;
  reason: string | null;
  /** When set, this worker's copy should be busy at most this share of the time (the rest it sleeps). */
  duty?: number;
}

export interface ThrottlerOptions {
  /** Sessions waiting this long on a lock count as struggling. */
  lockWaitMs: number;
  /** How often to look. */
  intervalMs: number;
  /** Share of the time the copy may work while other sessions are busy. */
  sharedDuty: number;
  /** Average number of busy other sessions above which the server counts as shared. */
  busySessions: number;
  /** A probe slower than this many times its best (and above probeFloorMs) means the server is saturated. */
  probeFactor: number;
  probeFloorMs: number;
}

const DEFAULTS: ThrottlerOptions = {
  lockWaitMs: 200,
  intervalMs: 500,
  sharedDuty: 0.1,
  busySessions: 0.5,
  probeFactor: 10,
  probeFloorMs: 20,
};

export class Throttler {
  private static readonly shared = new Map<Pool, { throttler: Throttler; users: number }>();

  /** The throttler watching `pool`'s server, started on first use; call release() when done with it. */
  static async acquire(pool: Pool): Promise<Throttler> {
    let entry = Throttler.shared.get(pool);
    if (!entry) {
      entry = { throttler: new Throttler(pool), users: 0 };
      Throttler.shared.set(pool, entry);
      await entry.throttler.start();
    }
    entry.users++;
    return entry.throttler;
  }

  private timer?: NodeJS.Timeout;
  private bestProbeMs = Infinity;
  private busy: number | undefined;
  private current: ThrottleDecision = { throttle: false, reason: null };
  private readonly opts: ThrottlerOptions;
  /** While sharing, ranges take turns: one batch at a time for the whole worker. */
  private turn: Promise<void> = Promise.resolve();

  constructor(
    private readonly pool: Pool,
    opts: Partial<ThrottlerOptions> = {},
  ) {
    this.opts = { ...DEFAULTS, ...opts };
  }

  get decision(): ThrottleDecision {
    return this.current;
  }

  /**
   * Runs one batch. While the server is shared, batches of all ranges run one after another and each is followed by
   * the sleep that keeps the worker's busy share at `duty`; otherwise it just runs.
   */
  async paced<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
    if (!this.current.duty) {
      const t0 = performance.now();
      const value = await fn();
      return { value, ms: performance.now() - t0 };
    }
    const previous = this.turn;
    let done!: () => void;
    this.turn = new Promise((r) => (done = r));
    await previous;
    try {
      const t0 = performance.now();
      const value = await fn();
      const ms = performance.now() - t0;
      const duty = this.current.duty ?? 1;
      if (duty < 1) await new Promise((r) => setTimeout(r, ms * (1 / duty - 1)));
      return { value, ms };
    } finally {
      done();
    }
  }

  release(): void {
    const entry = Throttler.shared.get(this.pool);
    if (!entry || --entry.users > 0) return;
    Throttler.shared.delete(this.pool);
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Starts watching; resolves after the first look, so the very first batch already knows whether to hold back. */
  private async start(): Promise<void> {
    const tick = async () => {
      try {
        this.current = await this.look();
      } catch {
        // A failed look says nothing about the server's load; keep the last decision.
      }
    };
    const loop = async () => {
      await tick();
      if (this.timer) this.timer = setTimeout(loop, this.opts.intervalMs);
    };
    await tick();
    this.timer = setTimeout(loop, this.opts.intervalMs);
    this.timer.unref();
  }

  private async look(): Promise<ThrottleDecision> {
    const t0 = performance.now();
    // tidemark's own sessions (application_name tidemark: the copy ranges, the worker's pools) are not "others".
    // Busy: running a statement, inside a transaction between statements, or idle for less than a second (a client
    // between two transactions). Sampled twice a second, a steady workload of short transactions shows up even when
    // few of its statements happen to be running at the instant of the look.
    const r = await this.pool.query(
      `SELECT count(*) FILTER (WHERE coalesce(wait_event_type, '') <> 'Lock'
                                 AND (state IN ('active', 'idle in transaction')
                                      OR (state = 'idle' AND state_change > now() - interval '1 second')))::int AS busy,
              count(*) FILTER (WHERE wait_event_type = 'Lock' AND datname = current_database()
                               AND now() - state_change > make_interval(secs => $1::float8 / 1000))::int AS waiters
         FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name NOT LIKE 'tidemark%'`,
      [this.opts.lockWaitMs],
    );
    const probeMs = performance.now() - t0;
    this.bestProbeMs = Math.min(this.bestProbeMs, probeMs);
    const { busy, waiters } = r.rows[0] as { busy: number; waiters: number };
    this.busy = this.busy === undefined ? busy : 0.7 * this.busy + 0.3 * busy;
    if (waiters > 0)
      return { throttle: true, reason: `${waiters} session(s) waiting on locks for over ${this.opts.lockWaitMs}ms` };
    if (probeMs > this.opts.probeFloorMs && probeMs > this.bestProbeMs * this.opts.probeFactor) {
      return {
        throttle: true,
        reason: `server slow to answer: ${Math.round(probeMs)}ms vs ${this.bestProbeMs.toFixed(1)}ms at best`,
      };
    }
    if (this.busy >= this.opts.busySessions) {
      const duty = this.opts.sharedDuty;
      return {
        throttle: true,
        duty,
        reason: `sharing the server with ~${this.busy.toFixed(1)} busy session(s): copying ${Math.round(duty * 100)}% of the time`,
      };
    }
    return { throttle: false, reason: null };
  }
}
