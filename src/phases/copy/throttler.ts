// The throttler only decides: it watches the server from its own connection and says whether the copy should slow
// down, and why; the copy loop acts on the decision. One throttler per database is shared by every copy range running
// in this worker, so watching costs the same however many ranges run. Signals, strongest first:
//   1. sessions waiting on locks for a while          → back off hard
//   2. the server slow to answer a trivial query      → back off hard
//   3. other sessions busy on the server (or just were) → share: all of this worker's ranges together copy only part of
//                                                       the time (duty cycle), one batch at a time, in short bursts;
//                                                       how large a part, the latency budget decides (budget.ts),
//                                                       faster while the others are light (rarely caught at work)
// It reads pg_stat_activity only, twice a second: pg_blocking_pids() and pg_locks take the lock manager's shared
// state, and polling them often measurably slows every other session.
//
// While sharing, it also measures what the application feels: four times a second a probe that commits (it takes a
// transaction id, so its commit waits for the WAL flush like an application's write does), and every 20 s a quiet
// window of about 1.3 s in which no batch runs and ten probes give the latency without the copy. The budget moves
// the duty to keep the one within `impact.maxLatencyIncrease` of the other.
import type { Pool } from 'pg';
import { BUDGET_DEFAULTS, DEFAULT_MAX_LATENCY_INCREASE, describeBudget, LatencyBudget } from './budget';

export interface ThrottleDecision {
  throttle: boolean;
  reason: string | null;
  /** When set, this worker's copy should be busy at most this share of the time (the rest it sleeps). */
  duty?: number;
  /** While sharing: how long one batch should take (longer when the budget allows a larger share). */
  burstMs?: number;
  /** While sharing and measured: the time the probe's p90 gains while copying, as a share of the quiet p90 (at least 2 ms). */
  latencyIncrease?: number;
}

export interface ThrottlerOptions {
  /** Sessions waiting this long on a lock count as struggling. */
  lockWaitMs: number;
  /** How often to look. */
  intervalMs: number;
  /** How often to probe the latency while sharing, and how often to take a quiet window. */
  probeMs: number;
  quietEveryMs: number;
  /** Average number of busy other sessions above which the server counts as shared. */
  busySessions: number;
  /**
   * Average number of other sessions of this database caught at work (running a statement or inside a transaction)
   * below which they count as light: the budget then grows the copy's share faster (budget.ts). Measured here: one
   * client at 50 transactions/s reads about 0.05, four at 1,000 (pgbench's TPC-B-like script) about 1.4.
   */
  lightWorking: number;
  /** A probe slower than this many times its best (and above probeFloorMs) means the server is saturated. */
  probeFactor: number;
  probeFloorMs: number;
}

/** A batch's duration while sharing at the starting duty; it grows with the duty (up to the job's own target). */
export const SHARED_BATCH_MS = 15;

/** How long one batch should take while sharing at `duty`: 15 ms at the starting 10 %, ten times that at 100 %. */
export function sharedBurstMs(duty: number): number {
  return Math.round(SHARED_BATCH_MS * Math.max(1, duty / BUDGET_DEFAULTS.startDuty));
}

/** The first batch's size when the server is shared from the start; the sizer takes it from there. */
export const SHARED_FIRST_BATCH = 200;

/** The duration a batch should aim at under `decision`: the job's own, or the shorter burst while sharing. */
export function batchTargetMs(decision: ThrottleDecision, jobTargetMs: number): number {
  return decision.burstMs ? Math.min(jobTargetMs, decision.burstMs) : jobTargetMs;
}

/**
 * Hard back-off while the server struggles (a throttle without a duty: lock waits, a slow probe): each batch after
 * one is half as large and followed by a longer wait (100 ms doubling up to 5 s); the first batch without it resets.
 */
export class HardBackoff {
  private rounds = 0;

  /** After a batch: the size for the next one and the wait before it. */
  next(decision: ThrottleDecision, size: number, minSize: number): { size: number; waitMs: number } {
    if (!decision.throttle || decision.duty) {
      this.rounds = 0;
      return { size, waitMs: 0 };
    }
    this.rounds++;
    return {
      size: Math.max(minSize, Math.floor(size / 2)),
      waitMs: Math.min(5000, 100 * 2 ** Math.min(this.rounds, 6)),
    };
  }
}

const DEFAULTS: ThrottlerOptions = {
  lockWaitMs: 200,
  intervalMs: 500,
  probeMs: 250,
  quietEveryMs: 20_000,
  busySessions: 0.5,
  lightWorking: 0.25,
  probeFactor: 10,
  probeFloorMs: 20,
};

export class Throttler {
  private static readonly shared = new Map<Pool, { throttler: Throttler; users: number }>();

  /**
   * The throttler watching `pool`'s server, started on first use; call release() when done with it. One budget holds
   * for everything it paces: the tightest of the runs using it, each run's being its operator's (overrideBudget) or
   * else the tightest its jobs asked for. `maxLatencyIncrease` is a fraction, Infinity for none (maxLatencyIncreaseOf
   * reads it from a job); `run` the migration run it copies for.
   */
  static async acquire(pool: Pool, maxLatencyIncrease: number, run: string): Promise<Throttler> {
    let entry = Throttler.shared.get(pool);
    if (!entry) {
      entry = { throttler: new Throttler(pool, { maxLatencyIncrease }), users: 0 };
      Throttler.shared.set(pool, entry);
      await entry.throttler.start();
    }
    const t = entry.throttler;
    t.planBudgets.set(run, Math.min(t.planBudgets.get(run) ?? Infinity, maxLatencyIncrease));
    t.runUsers.set(run, (t.runUsers.get(run) ?? 0) + 1);
    t.applyBudgets();
    entry.users++;
    return t;
  }

  /** Per migration run: the tightest budget its jobs asked for. */
  private readonly planBudgets = new Map<string, number>();
  /** Per migration run: its operator's budget (tidemark throttle --max-latency-increase), while set. */
  private readonly operatorBudgets = new Map<string, number>();
  /** Per migration run: how many of its copies use this throttler now. */
  private readonly runUsers = new Map<string, number>();

  /**
   * A run's operator budget, read with its other throttle settings between batches: a fraction, Infinity for none,
   * null to go back to its plan's. Another run sharing this throttler with a tighter budget still holds it back.
   */
  overrideBudget(run: string, maxLatencyIncrease: number | null): void {
    if (maxLatencyIncrease === null) this.operatorBudgets.delete(run);
    else this.operatorBudgets.set(run, maxLatencyIncrease);
    this.applyBudgets();
  }

  private applyBudgets(): void {
    let tightest = Infinity;
    for (const [run, planned] of this.planBudgets)
      tightest = Math.min(tightest, this.operatorBudgets.get(run) ?? planned);
    if (this.planBudgets.size && tightest !== this.budget.maxIncrease) this.budget.setMaxIncrease(tightest);
  }

  private timer?: NodeJS.Timeout;
  private probeTimer?: NodeJS.Timeout;
  private readonly budget: LatencyBudget;
  private probeSql = 'SELECT txid_current()';
  private quieting = false;
  private lastQuietAt = 0;
  /** Until when a probe measures the copy at work: during a batch, and its pause plus a second after it. */
  private copyingUntil = 0;
  private bestProbeMs = Infinity;
  private busy: number | undefined;
  private working: number | undefined;
  private current: ThrottleDecision = { throttle: false, reason: null };
  private readonly opts: ThrottlerOptions;
  /** While sharing, ranges take turns: one batch at a time for the whole worker. */
  private turn: Promise<void> = Promise.resolve();

  constructor(
    private readonly pool: Pool,
    opts: Partial<ThrottlerOptions> & { maxLatencyIncrease?: number } = {},
  ) {
    this.opts = { ...DEFAULTS, ...opts };
    this.budget = new LatencyBudget({ maxIncrease: opts.maxLatencyIncrease ?? DEFAULT_MAX_LATENCY_INCREASE });
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
      this.copyingUntil = Infinity;
      const value = await fn().finally(() => (this.copyingUntil = Date.now() + 1000));
      const ms = performance.now() - t0;
      const duty = this.current.duty ?? 1;
      const pause = duty < 1 ? ms * (1 / duty - 1) : 0;
      this.copyingUntil = Date.now() + pause + 1000;
      if (pause) await new Promise((r) => setTimeout(r, pause));
      return { value, ms };
    } finally {
      done();
    }
  }

  /** Done with it, for `run`: once a run's last user has gone, its budgets no longer count. */
  release(run: string): void {
    const left = (this.runUsers.get(run) ?? 1) - 1;
    if (left > 0) this.runUsers.set(run, left);
    else {
      this.runUsers.delete(run);
      this.planBudgets.delete(run);
      this.operatorBudgets.delete(run);
      this.applyBudgets();
    }
    const entry = Throttler.shared.get(this.pool);
    if (!entry || --entry.users > 0) return;
    Throttler.shared.delete(this.pool);
    if (this.timer) clearTimeout(this.timer);
    if (this.probeTimer) clearInterval(this.probeTimer);
    this.timer = undefined;
    this.probeTimer = undefined;
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
    let probing = false;
    this.probeTimer = setInterval(() => {
      if (probing || !this.current.duty) return;
      probing = true;
      this.sample()
        .catch(() => undefined)
        .finally(() => (probing = false));
    }, this.opts.probeMs);
    this.probeTimer.unref();
  }

  /** One probe while sharing: a quiet window when one is due, else a sample of the latency with the copy running. */
  private async sample(): Promise<void> {
    if (this.quieting) return;
    if (!this.budget.calibrated || Date.now() - this.lastQuietAt > this.opts.quietEveryMs) return this.quietWindow();
    // Only while the copy works: with every range paused (the operator's pause, a lock back-off) the probe would
    // measure no copy at all and talk the budget into a larger share than the server allows.
    if (Date.now() > this.copyingUntil) return;
    const ms = await this.probe();
    if (!this.quieting && this.current.duty) this.budget.addBusy(ms);
  }

  /**
   * Takes the turn like a batch does, so it starts once the batch in flight (and its pause) is over and no batch of
   * this worker runs until it ends; waits a little for the batch's writes to settle, then probes ten times.
   */
  private async quietWindow(): Promise<void> {
    this.quieting = true;
    const previous = this.turn;
    let done!: () => void;
    this.turn = new Promise((r) => (done = r));
    try {
      await previous;
      // Copy batches commit asynchronously: the WAL writer flushes their last records within wal_writer_delay (200 ms
      // by default), and a probe before that would pay for them.
      await new Promise((r) => setTimeout(r, 400));
      const samples: number[] = [];
      for (let i = 0; i < 10; i++) {
        samples.push(await this.probe());
        await new Promise((r) => setTimeout(r, 80));
      }
      this.budget.addQuietWindow(samples);
    } finally {
      this.lastQuietAt = Date.now();
      this.quieting = false;
      this.budget.resetBusy();
      done();
    }
  }

  /** The time a committing transaction takes, connection from the pool not counted. */
  private async probe(): Promise<number> {
    const c = await this.pool.connect();
    try {
      for (;;) {
        const t0 = performance.now();
        try {
          await c.query(this.probeSql);
          return performance.now() - t0;
        } catch (e) {
          // A standby (in recovery) gives no transaction id: time a round trip instead.
          if ((e as { code?: string }).code !== '25006' || this.probeSql === 'SELECT 1') throw e;
          this.probeSql = 'SELECT 1';
        }
      }
    } finally {
      c.release();
    }
  }

  private async look(): Promise<ThrottleDecision> {
    const t0 = performance.now();
    // tidemark's own sessions (application_name tidemark: the copy ranges, the worker's pools) are not "others".
    // Busy: running a statement, inside a transaction between statements, or idle for less than a second (a client
    // between two transactions). Sampled twice a second, a steady workload of short transactions shows up even when
    // few of its statements happen to be running at the instant of the look.
    // At work: running a statement or inside a transaction (not waiting on a lock), which tells a light workload (a
    // poller, a trickle of requests: busy by the definition above, rarely caught at work) from a heavy one. Counted in
    // this database only: other databases' sessions weigh on the copy through the probe's latency, as they do on the
    // application, not by how they look.
    const r = await this.pool.query(
      `SELECT count(*) FILTER (WHERE coalesce(wait_event_type, '') <> 'Lock'
                                 AND (state IN ('active', 'idle in transaction')
                                      OR (state = 'idle' AND state_change > now() - interval '1 second')))::int AS busy,
              count(*) FILTER (WHERE datname = current_database() AND coalesce(wait_event_type, '') <> 'Lock'
                                 AND state IN ('active', 'idle in transaction'))::int AS working,
              count(*) FILTER (WHERE wait_event_type = 'Lock' AND datname = current_database()
                               AND now() - state_change > make_interval(secs => $1::float8 / 1000))::int AS waiters
         FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name NOT LIKE 'tidemark%'`,
      [this.opts.lockWaitMs],
    );
    const probeMs = performance.now() - t0;
    this.bestProbeMs = Math.min(this.bestProbeMs, probeMs);
    const { busy, working, waiters } = r.rows[0] as { busy: number; working: number; waiters: number };
    this.busy = this.busy === undefined ? busy : 0.7 * this.busy + 0.3 * busy;
    this.working = this.working === undefined ? working : 0.7 * this.working + 0.3 * working;
    const light = this.working < this.opts.lightWorking;
    this.budget.setLight(light);
    if (waiters > 0)
      return { throttle: true, reason: `${waiters} session(s) waiting on locks for over ${this.opts.lockWaitMs}ms` };
    if (probeMs > this.opts.probeFloorMs && probeMs > this.bestProbeMs * this.opts.probeFactor) {
      return {
        throttle: true,
        reason: `server slow to answer: ${Math.round(probeMs)}ms vs ${this.bestProbeMs.toFixed(1)}ms at best`,
      };
    }
    // An unlimited budget (`impact: { maxLatencyIncrease: unlimited }`): busy sessions alone never hold the copy back.
    if (this.busy >= this.opts.busySessions && Number.isFinite(this.budget.maxIncrease)) {
      const reading = this.budget.reading;
      return {
        throttle: true,
        duty: reading.duty,
        burstMs: sharedBurstMs(reading.duty),
        latencyIncrease: reading.increase,
        reason: `sharing the server with ~${this.busy.toFixed(1)} busy session(s)${light ? ', light' : ''}: ${describeBudget(reading, this.budget.maxIncrease)}`,
      };
    }
    if (this.current.duty) this.budget.resetBusy();
    return { throttle: false, reason: null };
  }
}
