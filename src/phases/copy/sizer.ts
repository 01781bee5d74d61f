// Sizes the copy's batches toward a target duration. A batch costs roughly a fixed part (finding where it starts:
// for a table an index probe, for a query without an index on its key a whole scan and sort) plus a part per row.
// Scaling the size by target/elapsed alone assumes the fixed part is nothing; when it is most of the time, shrinking
// the batch saves no time and the copy crawls in tiny batches. So the sizer fits time = fixed + perRow × rows over the
// last batches and, when the fixed part dominates, grows the batches to amortise it instead.

export const MIN_BATCH = 50;
/** The largest batch when the plan sets no maxBatchSize (and its batchSize is smaller). */
export const DEFAULT_MAX_BATCH = 50_000;
const WINDOW = 8;

export class BatchSizer {
  private readonly samples: { rows: number; ms: number }[] = [];

  constructor(
    private readonly targetMs: number,
    private readonly max: number,
  ) {}

  /** The size for the next batch after one of `rows` rows took `ms`, aiming at `targetMs` (default: the job's). */
  next(rows: number, ms: number, current: number, targetMs = this.targetMs): number {
    this.samples.push({ rows, ms });
    if (this.samples.length > WINDOW) this.samples.shift();
    let ideal = (current * targetMs) / Math.max(ms, 1);
    const fit = this.fit();
    // Judged against the job's own target, not a shorter one asked for while sharing the server: a few milliseconds
    // of round trips must not turn the short bursts back into long ones.
    if (fit && fit.fixedMs >= this.targetMs / 2) {
      // Fixed cost dominates: make each batch big enough that it is at most a fifth of the batch's time.
      ideal = fit.perRowMs > 0 ? (4 * fit.fixedMs) / fit.perRowMs : this.max;
    } else if (fit && fit.perRowMs > 0 && fit.fixedMs < targetMs) {
      ideal = (targetMs - fit.fixedMs) / fit.perRowMs;
    }
    const bounded = Math.min(current * 2, Math.max(current / 2, ideal));
    return Math.round(Math.min(this.max, Math.max(MIN_BATCH, bounded)));
  }

  /** Least squares over the recent batches, once their sizes differ enough to tell fixed from per-row cost. */
  private fit(): { fixedMs: number; perRowMs: number } | undefined {
    const s = this.samples.filter((x) => x.rows > 0);
    if (s.length < 2) return undefined;
    const rows = s.map((x) => x.rows);
    if (Math.max(...rows) < 1.5 * Math.min(...rows)) return undefined;
    const n = s.length;
    const mr = rows.reduce((a, b) => a + b, 0) / n;
    const mt = s.reduce((a, x) => a + x.ms, 0) / n;
    let cov = 0;
    let varR = 0;
    for (const x of s) {
      cov += (x.rows - mr) * (x.ms - mt);
      varR += (x.rows - mr) ** 2;
    }
    const perRowMs = cov / varR;
    const fixedMs = Math.max(0, mt - perRowMs * mr);
    return { fixedMs, perRowMs };
  }
}
