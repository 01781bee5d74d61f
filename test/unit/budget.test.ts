// The copy's latency budget: against a simulated server whose commit latency grows with the copy's share of the time,
// the duty settles where the increase fits the budget — low when the server is sensitive, all the time when not.
import { describeBudget, LatencyBudget } from '../../src/phases/copy/budget';
import { batchTargetMs, HardBackoff, sharedBurstMs } from '../../src/phases/copy/throttler';

/** Latency of one probe while the copy works `duty` of the time: base × (1 + sensitivity × duty), with some jitter. */
function run(sensitivity: number, maxIncrease: number, rounds = 40, light = false): LatencyBudget {
  const base = 2;
  let seed = 7;
  const jitter = () => {
    seed = (seed * 16807) % 2147483647;
    return 1 + 0.05 * (seed / 2147483647);
  };
  const budget = new LatencyBudget({ maxIncrease });
  budget.setLight(light);
  for (let w = 0; w < 3; w++) budget.addQuietWindow(Array.from({ length: 10 }, () => base * jitter()));
  for (let i = 0; i < rounds * 16; i++) budget.addBusy(base * (1 + sensitivity * budget.duty) * jitter());
  return budget;
}

test('a server the copy barely affects: the copy takes all of the time', () => {
  const b = run(0.05, 0.25);
  expect(b.duty).toBe(1);
  expect(b.reading.increase!).toBeLessThan(0.25);
});

test('a sensitive server: the duty settles where the latency increase stays within the budget', () => {
  // Latency doubles at full duty: a 25 % budget fits a duty of about 0.25 at most.
  const b = run(1, 0.25);
  expect(b.duty).toBeLessThanOrEqual(0.25);
  expect(b.duty).toBeGreaterThan(0.1);
  expect(b.reading.increase!).toBeLessThanOrEqual(0.25);
  // A looser budget lets the copy work more of the time on the same server.
  expect(run(1, 0.75).duty).toBeGreaterThan(b.duty * 2);
});

test('beside light sessions the share grows twice as fast, and the budget still holds', () => {
  // Four decisions: from 10 % to all of the time beside light sessions, not half of it beside sessions at work.
  expect(run(0.05, 0.25, 4, true).duty).toBe(1);
  expect(run(0.05, 0.25, 4).duty).toBeLessThan(0.5);
  const b = run(1, 0.25, 40, true);
  expect(b.duty).toBeLessThanOrEqual(0.25);
  expect(b.reading.increase!).toBeLessThanOrEqual(0.25);
});

test('a server over budget even at the smallest share: the copy crawls at its floor and says so', () => {
  const b = run(100, 0.25);
  expect(b.duty).toBe(0.02);
  expect(describeBudget(b.reading, 0.25)).toMatch(
    /^copying 2% of the time: probe p90 .* budget \+25%, over: slowing down\)$/,
  );
});

test('one quiet window that met a stall does not make the copy bolder', () => {
  const b = new LatencyBudget({ maxIncrease: 0.25 });
  b.addQuietWindow(Array(10).fill(2));
  b.addQuietWindow([...Array(9).fill(2), 40, 40]);
  for (let i = 0; i < 16; i++) b.addBusy(3);
  expect(b.reading).toMatchObject({ quietMs: 2, busyMs: 3 });
  expect(b.duty).toBeLessThan(0.1);
});

test('a sub-millisecond probe: added time is counted against a short transaction, not the probe alone', () => {
  const b = new LatencyBudget({ maxIncrease: 0.25 });
  b.addQuietWindow(Array(10).fill(0.6));
  for (let i = 0; i < 16; i++) b.addBusy(0.7);
  expect(b.reading.increase).toBeCloseTo(0.05);
  expect(b.duty).toBeGreaterThan(0.1);
  for (let i = 0; i < 16; i++) b.addBusy(1.4);
  expect(b.reading.increase).toBeCloseTo(0.4);
  expect(b.duty).toBeLessThan(0.1);
});

test('until the quiet latency is measured the copy stays at its starting share', () => {
  const b = new LatencyBudget({ maxIncrease: 0.25 });
  for (let i = 0; i < 64; i++) b.addBusy(50);
  expect(b.duty).toBe(0.1);
  expect(describeBudget(b.reading, 0.25)).toBe("copying 10% of the time until the probe's quiet latency is measured");
});

test('the burst a batch aims at while sharing, and the hard back-off while the server struggles', () => {
  expect(batchTargetMs({ throttle: false, reason: null }, 200)).toBe(200);
  expect(batchTargetMs({ throttle: true, reason: 'sharing', duty: 0.1, burstMs: sharedBurstMs(0.1) }, 200)).toBe(15);
  expect(batchTargetMs({ throttle: true, reason: 'sharing', duty: 1, burstMs: sharedBurstMs(1) }, 100)).toBe(100);

  const backoff = new HardBackoff();
  const struggling = { throttle: true, reason: 'sessions waiting on locks' };
  expect(backoff.next(struggling, 1000, 50)).toEqual({ size: 500, waitMs: 200 });
  expect(backoff.next(struggling, 500, 50)).toEqual({ size: 250, waitMs: 400 });
  for (let i = 0; i < 10; i++) backoff.next(struggling, 100, 50);
  expect(backoff.next(struggling, 60, 50)).toEqual({ size: 50, waitMs: 5000 });
  // Sharing (a duty) is not struggling: the size stays the sizer's and the rounds start again.
  expect(backoff.next({ throttle: true, reason: 'sharing', duty: 0.1 }, 300, 50)).toEqual({ size: 300, waitMs: 0 });
  expect(backoff.next(struggling, 1000, 50)).toEqual({ size: 500, waitMs: 200 });
});
