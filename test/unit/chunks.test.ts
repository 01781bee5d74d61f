// The walk of a key space in chunks (settle pass, checksum): two lanes at once where the chunks are independent, and
// a resume cursor that never passes a chunk still running, however the chunks finish.
import type { Pool, PoolClient } from 'pg';
import { walkChunks, type ChunkBounds, type ChunkPlanner } from '../../src/phases/copy/chunks';

/** Ten chunks of ten keys, the last one open above, as the planner hands out for an integer key. */
function planner(parallel: number): ChunkPlanner {
  let i = 0;
  return {
    parallel,
    next: async () => {
      if (i >= 10) return null;
      const after = i === 0 ? null : String(i * 10);
      const upTo = i === 9 ? null : String((i + 1) * 10);
      i++;
      return { after, upTo };
    },
  };
}

const lane = (name: string) => ({ name, release: () => undefined }) as unknown as PoolClient;

async function walk(parallel: number) {
  const pool = { connect: async () => lane('extra') } as unknown as Pool;
  const running = new Set<string | null>();
  const lanes = new Set<string>();
  const visited: ChunkBounds[] = [];
  const cursors: (string | null)[] = [];
  // Chunks take 1–5 ms in a fixed scrambled order, so with two lanes they finish out of order.
  const delays = [5, 1, 4, 1, 3, 5, 1, 2, 1, 1];
  let n = 0;
  await walkChunks(
    pool,
    lane('main'),
    planner(parallel),
    null,
    async (tx, bounds) => {
      lanes.add((tx as unknown as { name: string }).name);
      running.add(bounds.after);
      await new Promise((r) => setTimeout(r, delays[n++ % delays.length]));
      running.delete(bounds.after);
      visited.push(bounds);
      return Number(bounds.upTo ?? 100) - Number(bounds.after ?? 0);
    },
    (keys, cursor) => {
      expect(keys).toBe(10);
      cursors.push(cursor);
      // Nothing at or below the cursor is still running: resuming after it skips no key.
      for (const after of running) expect(Number(after ?? -1)).toBeGreaterThanOrEqual(Number(cursor ?? -1));
    },
  );
  return { visited, cursors, lanes };
}

test('two lanes: every chunk once, both lanes used, the cursor only over chunks done', async () => {
  const { visited, cursors, lanes } = await walk(2);
  expect(visited.map((b) => b.after).sort((a, b) => Number(a ?? -1) - Number(b ?? -1))).toEqual([
    null,
    '10',
    '20',
    '30',
    '40',
    '50',
    '60',
    '70',
    '80',
    '90',
  ]);
  expect([...lanes].sort()).toEqual(['extra', 'main']);
  expect(cursors).toHaveLength(10);
  // The cursor never goes back, and ends after the last closed chunk (the open one has no end to resume after).
  for (let i = 1; i < cursors.length; i++)
    expect(Number(cursors[i] ?? 0)).toBeGreaterThanOrEqual(Number(cursors[i - 1] ?? 0));
  expect(cursors.at(-1)).toBe('90');
});

test('one lane where the chunks are sequential: the chunks in key order', async () => {
  const { visited, cursors, lanes } = await walk(1);
  expect(visited.map((b) => b.after)).toEqual([null, '10', '20', '30', '40', '50', '60', '70', '80', '90']);
  expect([...lanes]).toEqual(['main']);
  expect(cursors).toEqual(['10', '20', '30', '40', '50', '60', '70', '80', '90', '90']);
});

test('a chunk that fails: the walk fails with its error once the other lane has finished its chunk, and stops', async () => {
  const pool = { connect: async () => lane('extra') } as unknown as Pool;
  let running = 0;
  let started = 0;
  const walking = walkChunks(
    pool,
    lane('main'),
    planner(2),
    null,
    async (_tx, bounds) => {
      started++;
      running++;
      try {
        // The second chunk (the extra lane's first) takes 50 ms; the main lane's second, the third chunk, fails at
        // once, while the second is still running.
        if (bounds.after === '20') throw new Error('chunk 20 failed');
        await new Promise((r) => setTimeout(r, bounds.after === '10' ? 50 : 5));
      } finally {
        running--;
      }
    },
    () => undefined,
  );
  await expect(walking).rejects.toThrow('chunk 20 failed');
  expect(running).toBe(0);
  expect(started).toBeLessThan(10);
});
