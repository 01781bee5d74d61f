// The copy's batch sizer: proportional when the cost is per row, growing (not crawling) when a fixed cost per batch
// — a query source whose key has no index scans and sorts everything for each batch — dominates.
import { BatchSizer, MIN_BATCH } from '../../src/phases/copy/sizer';

/** Runs the sizer against a simulated cost model and returns the sizes it chose. */
function simulate(
  fixedMs: number,
  perRowMs: number,
  targetMs: number,
  start: number,
  max: number,
  batches = 30,
): number[] {
  const sizer = new BatchSizer(targetMs, max);
  const sizes = [start];
  let size = start;
  for (let i = 0; i < batches; i++) {
    size = sizer.next(size, fixedMs + perRowMs * size, size);
    sizes.push(size);
  }
  return sizes;
}

test('per-row cost: settles where a batch takes the target time', () => {
  const sizes = simulate(1, 0.01, 200, 1000, 100_000);
  const last = sizes.at(-1)!;
  expect(1 + 0.01 * last).toBeGreaterThan(180);
  expect(1 + 0.01 * last).toBeLessThan(220);
});

test('a fixed cost above the target: batches grow to amortise it instead of shrinking to the minimum', () => {
  const sizes = simulate(280, 0.002, 200, 2000, 50_000);
  expect(Math.min(...sizes)).toBeGreaterThan(MIN_BATCH);
  expect(sizes.at(-1)).toBe(50_000);
});

test('a short target while sharing the server keeps bursts short when the fixed cost is small', () => {
  const sizer = new BatchSizer(300, 100_000);
  let size = 5000;
  for (let i = 0; i < 30; i++) size = sizer.next(size, 2 + 0.0015 * size, size, 10);
  expect(2 + 0.0015 * size).toBeLessThan(12);
});
