// Batches by key interval (a single integer key, both copies: within one database and across two) on keys that are
// anything but evenly spread: negative keys, a dense run, a sparse stretch over millions of keys, then a dense run
// past a gap of a trillion. Every row must land in exactly one batch, and no batch may swallow a dense run whole
// because the stretch before it was sparse.
import { Pool } from 'pg';
import { KeyIntervalBatcher, MAX_SPAN_PER_ROW } from '../../src/phases/copy/batcher';
import { resolveMapping } from '../../src/phases/copy/mapping';
import { loadPlan } from '../../src/plan/load';
import { Harness } from '../helpers/env';
import { writePlan } from '../helpers/plans';

const h = new Harness();
afterAll(() => h.stop());

const SIZE = 1000;
const FAR = 1_000_000_000_000;

test('key intervals cover every row once, and a dense run after a sparse stretch keeps to the batch size', async () => {
  const db = await h.db('intervals');
  await db.query(`CREATE TABLE src (id bigint PRIMARY KEY, v integer NOT NULL);
    CREATE TABLE dst (id bigint PRIMARY KEY, v integer NOT NULL);
    INSERT INTO src SELECT i, 0 FROM generate_series(-3000, 5000) i WHERE i <> 0;
    INSERT INTO src SELECT i * 1000000, 1 FROM generate_series(1, 20) i;
    INSERT INTO src SELECT ${FAR}::bigint + i, 2 FROM generate_series(1, 20000) i;`);
  const [{ total }] = await db.query<{ total: number }>(`SELECT count(*)::int AS total FROM src`);
  const plan = loadPlan(
    writePlan(
      {
        name: 'key-intervals',
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
        copy: [{ name: 'j', from: 'src', to: 'dst', key: 'id' }],
        cleanup: {},
      },
      { 'up.sql': 'SELECT 1', 'down.sql': 'SELECT 1' },
    ),
  );
  const pool = new Pool({ connectionString: db.url });
  const c = await pool.connect();
  try {
    const m = await resolveMapping(pool, plan.copy[0], { runKey: 'r' });
    const batcher = new KeyIntervalBatcher(m, { after: null, upTo: null });
    const sizes: number[] = [];
    let cursor: string | null = null;
    for (;;) {
      const batch = await batcher.next(c, cursor, SIZE);
      if (!batch) break;
      const [{ n }] = (
        await c.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM src WHERE ($1::bigint IS NULL OR id > $1) AND id <= $2`,
          [batch.after, batch.upTo],
        )
      ).rows;
      batcher.result(batch, { rowCount: n });
      sizes.push(n);
      // Only the first interval is open below; each later one starts where the one before ended.
      expect(batch.after).toBe(cursor);
      if (batch.after !== null) expect(BigInt(batch.upTo!)).toBeGreaterThan(BigInt(batch.after));
      cursor = batch.upTo;
    }
    // Intervals follow one another from below the lowest key to the highest: every row is in exactly one of them.
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(total);
    expect(BigInt(cursor!)).toBe(BigInt(FAR + 20000));
    // The dense run of 20,000 keys past the gap comes in batches near the size asked for, not in one.
    expect(Math.max(...sizes)).toBeLessThanOrEqual(MAX_SPAN_PER_ROW * SIZE);
    // The gaps are leapt in a batch or two each, not crossed interval by interval (about 30 batches in all).
    expect(sizes.length).toBeLessThan(60);
  } finally {
    c.release();
    await pool.end();
  }
});
