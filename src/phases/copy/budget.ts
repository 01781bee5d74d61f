// The latency budget: how much of the time the copy may work while the application shares the server. It compares what
// a tiny committing probe costs while the copy runs with what it costs while the copy holds still (short quiet windows
// the throttler takes now and then), and moves the copy's share of the time to keep the difference within the plan's
// `impact.maxLatencyIncrease`: down fast when over (×0.6), up when well under, unchanged in between. Up gently (×1.25)
// while the application is at work, because the probe under-reads what a busier transaction feels: doubling the share
// whenever the probe read under a quarter of the budget took a 10M-row copy to 86 % of the time and the load's p99 to
// 5.7× its own. Up boldly (×2) while the other sessions are light (the throttler rarely catches one at work: a
// monitoring poller, a trickle of requests): their transactions are as short as the probe, so it reads what they
// feel, and a copy ramping gently beside them spent most of its run at a small share (0.08× its idle speed).
// Pure bookkeeping, no I/O: the throttler feeds it samples and acts on `duty`.

export interface BudgetOptions {
  /** The allowed increase of the probe's latency while copying, as a fraction (0.25: 25 % slower at most). */
  maxIncrease: number;
  /** The copy's share of the time before anything is measured. */
  startDuty: number;
  /** Never less: a copy that cannot fit the budget still moves, slowly, and says so. */
  minDuty: number;
  maxDuty: number;
  /** Samples taken while copying that one decision looks at. */
  decideEvery: number;
  /**
   * The shortest application transaction the increase is counted against. The probe is one round trip and one commit;
   * an application's transaction is several statements, so the same added milliseconds are a smaller share of it. On a
   * server that answers the probe in 0.6 ms, 0.1 ms more would otherwise read as +17 % and hold the copy at its floor
   * (measured: 3.2k rows/s under a load whose p99 had room to spare).
   */
  floorMs: number;
  /** Quiet windows kept for the baseline (the latest ones). */
  quietKept: number;
}

/** The budget when the plan sets none: the application's commits at most 25 % slower while the copy runs. */
export const DEFAULT_MAX_LATENCY_INCREASE = 0.25;

/** A copy job's budget as a fraction: the default when the plan sets none, Infinity when it says `unlimited`. */
export function maxLatencyIncreaseOf(job: { impact?: { maxLatencyIncrease: number | 'unlimited' } }): number {
  return budgetFraction(job.impact?.maxLatencyIncrease ?? DEFAULT_MAX_LATENCY_INCREASE);
}

/** A budget as the plan or an operator gives it, as a fraction: Infinity for `unlimited`. */
export function budgetFraction(v: number | 'unlimited'): number {
  return v === 'unlimited' ? Infinity : v;
}

/** The budget in words, for `plan check` and `status`: `+25%`, or `unlimited`. */
export function budgetText(maxIncrease: number): string {
  return Number.isFinite(maxIncrease) ? `+${Math.round(maxIncrease * 100)}%` : 'unlimited';
}

export const BUDGET_DEFAULTS: Omit<BudgetOptions, 'maxIncrease'> = {
  startDuty: 0.1,
  minDuty: 0.02,
  maxDuty: 1,
  decideEvery: 16,
  floorMs: 2,
  quietKept: 3,
};

/** The share of the probes that must be within the budget: the 90th percentile, not the median, so stalls count. */
const PERCENTILE = 0.9;

export interface BudgetReading {
  duty: number;
  /**
   * The probe's latency while copying less its latency while quiet, as a share of the quiet latency (at least floorMs):
   * 0.12 is 12 % slower. Undefined until measured.
   */
  increase?: number;
  quietMs?: number;
  busyMs?: number;
}

export function percentile(samples: readonly number[], p: number): number {
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
}

export class LatencyBudget {
  private readonly opts: BudgetOptions;
  /** The 90th percentile of each recent quiet window. */
  private readonly quiet: number[] = [];
  private busy: number[] = [];
  private last: BudgetReading;
  private light = false;

  constructor(opts: Partial<BudgetOptions> & { maxIncrease: number }) {
    this.opts = { ...BUDGET_DEFAULTS, ...opts };
    this.last = { duty: this.opts.startDuty };
  }

  get maxIncrease(): number {
    return this.opts.maxIncrease;
  }

  get reading(): BudgetReading {
    return this.last;
  }

  get duty(): number {
    return this.last.duty;
  }

  /** Whether a baseline exists; until then the copy stays at its starting share. */
  get calibrated(): boolean {
    return this.quiet.length > 0;
  }

  /**
   * The probes of one quiet window. The baseline is the lowest of the recent windows' 90th percentiles: a window that
   * met a checkpoint or the tail of the copy's own WAL would otherwise make the copy bolder than the server allows.
   */
  addQuietWindow(samples: readonly number[]): void {
    if (!samples.length) return;
    this.quiet.push(percentile(samples, PERCENTILE));
    if (this.quiet.length > this.opts.quietKept) this.quiet.shift();
  }

  /** A probe taken while the copy ran at the current duty; every `decideEvery` of them, the duty is decided again. */
  addBusy(ms: number): void {
    this.busy.push(ms);
    if (this.busy.length >= this.opts.decideEvery) this.decide();
  }

  /** The budget changed (another job with a tighter one joined): judge the next samples against it. */
  setMaxIncrease(maxIncrease: number): void {
    this.opts.maxIncrease = maxIncrease;
  }

  /** Whether the other sessions are light (see the top of this file): the share then grows twice as fast. */
  setLight(light: boolean): void {
    this.light = light;
  }

  /** Forgets samples taken at an earlier state (the copy stopped sharing, then shares again). */
  resetBusy(): void {
    this.busy = [];
  }

  private decide(): void {
    const samples = this.busy;
    this.busy = [];
    if (!this.calibrated) return;
    const quietMs = Math.min(...this.quiet);
    const busyMs = percentile(samples, PERCENTILE);
    const { maxIncrease, minDuty, maxDuty, floorMs } = this.opts;
    const increase = (busyMs - quietMs) / Math.max(quietMs, floorMs);
    let duty = this.last.duty;
    if (increase > maxIncrease) duty = Math.max(minDuty, duty * 0.6);
    else if (increase < maxIncrease / 2) duty = Math.min(maxDuty, duty * (this.light ? 2 : 1.25) + 0.01);
    this.last = { duty, increase, quietMs, busyMs };
  }
}

/** What the budget says, for `status` and the logs. */
export function describeBudget(r: BudgetReading, maxIncrease: number): string {
  const pct = (x: number) => `${Math.round(x * 100)}%`;
  if (r.increase === undefined) return `copying ${pct(r.duty)} of the time until the probe's quiet latency is measured`;
  const over = r.increase > maxIncrease;
  return (
    `copying ${pct(r.duty)} of the time: probe p90 ${r.busyMs!.toFixed(1)}ms vs ${r.quietMs!.toFixed(1)}ms quiet ` +
    `(${r.increase >= 0 ? '+' : ''}${pct(r.increase)}, budget ${budgetText(maxIncrease)}${over ? ', over: slowing down' : ''})`
  );
}
