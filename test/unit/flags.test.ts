// Stable hashing of subjects into rollout buckets.
import { bucketOf, inRollout } from '../../src/flags';

const SUBJECTS = Array.from({ length: 100_000 }, (_, i) => `user-${i}`);

test('over 100 000 subjects each percentage enables that share of them, ±1 %', () => {
  for (const pct of [1, 5, 10, 25, 50, 75, 90, 99]) {
    const share = SUBJECTS.filter((s) => inRollout(pct, 'use_orders_v2', s)).length / SUBJECTS.length;
    expect(Math.abs(share * 100 - pct)).toBeLessThanOrEqual(1);
  }
  expect(SUBJECTS.every((s) => !inRollout(0, 'f', s))).toBe(true);
  expect(SUBJECTS.every((s) => inRollout(100, 'f', s))).toBe(true);
});

test('monotonic: a subject enabled at a percentage stays enabled at every higher one', () => {
  const steps = [10, 50, 100];
  for (const s of SUBJECTS) {
    const on = steps.map((p) => inRollout(p, 'use_orders_v2', s));
    // once true, always true
    expect(on.indexOf(true) === -1 || on.slice(on.indexOf(true)).every(Boolean)).toBe(true);
  }
});

test('stable across calls and processes, and independent between flags', () => {
  expect(bucketOf('use_orders_v2', 'user-42')).toBe(bucketOf('use_orders_v2', 'user-42'));
  expect(bucketOf('use_orders_v2', 42)).toBe(bucketOf('use_orders_v2', '42'));
  // A fixed point, so a change of algorithm (which would move users between paths mid-rollout) cannot go unnoticed.
  expect(SUBJECTS.slice(0, 5).map((s) => bucketOf('use_orders_v2', s))).toEqual([30, 65, 0, 80, 59]);
  const a = SUBJECTS.filter((s) => inRollout(10, 'flag_a', s));
  const both = a.filter((s) => inRollout(10, 'flag_b', s)).length;
  // Independent flags: about 10 % of flag_a's subjects also have flag_b.
  expect(both / a.length).toBeGreaterThan(0.08);
  expect(both / a.length).toBeLessThan(0.12);
});
