// Tables a copy cannot keep exact are refused when the job's mapping is resolved (before any trigger is installed),
// each with what to do instead: a partitioned source (a write straight to a partition skips the parent's statement
// triggers), a key unique only at commit (a transaction swapping two keys gives two rows one key for a while), and a
// key that sorts differently on the two sides (key ranges would pick different rows).
import { Pool } from 'pg';
import { resolveMapping } from '../../src/phases/copy/mapping';
import { loadPlan } from '../../src/plan/load';
import { Harness } from '../helpers/env';
import { writePlan } from '../helpers/plans';

const h = new Harness();
afterAll(() => h.stop());

function job(from: string, to: string, key: string, sync: 'forward' | 'none' = 'forward') {
  const plan = loadPlan(
    writePlan(
      {
        name: 'refusals',
        database: { urlEnv: 'TM_UNUSED' },
        backup: { enabled: false },
        schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
        copy: [{ name: 'j', from, to, key, sync }],
      },
      { 'up.sql': 'SELECT 1', 'down.sql': 'SELECT 1' },
    ),
  );
  return plan.copy[0];
}

test('partitioned, deferrable-key and differently sorted sources are refused with what to do; plain ones resolve', async () => {
  const db = await h.db('refusals');
  await db.query(`
    CREATE TABLE parts (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
    CREATE TABLE parts_p1 PARTITION OF parts FOR VALUES FROM (0) TO (1000);
    CREATE TABLE deferred (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, v text);
    CREATE TABLE coded (code text COLLATE "en-x-icu" PRIMARY KEY, v text);
    CREATE TABLE plain (id int PRIMARY KEY, v text);
    CREATE TABLE new_int (id int PRIMARY KEY, v text);
    CREATE TABLE new_deferred (id int PRIMARY KEY DEFERRABLE, v text);
    CREATE TABLE new_code (code text PRIMARY KEY, v text);
    CREATE TABLE new_code_icu (code text COLLATE "en-x-icu" PRIMARY KEY, v text);`);
  const pool = new Pool({ connectionString: db.url });
  try {
    const resolve = (j: ReturnType<typeof job>) => resolveMapping(pool, j, { runKey: 'r' });
    await expect(resolve(job('parts', 'new_int', 'id'))).rejects.toThrow(
      /source "public"\."parts" is partitioned: a write to its rows through another table of the tree would not fire the sync triggers/,
    );
    await expect(resolve(job('parts_p1', 'new_int', 'id'))).rejects.toThrow(/"parts_p1" is a partition/);
    // Copied once without sync, a partitioned table is fine: its SELECT reads every partition.
    await expect(resolve(job('parts', 'new_int', 'id', 'none'))).resolves.toBeDefined();
    await expect(resolve(job('deferred', 'new_int', 'id'))).rejects.toThrow(
      /the key \("id"\) of deferred is unique only at commit \(DEFERRABLE\)/,
    );
    await expect(resolve(job('plain', 'new_deferred', 'id'))).rejects.toThrow(
      /its constraint is DEFERRABLE, which ON CONFLICT cannot use/,
    );
    await expect(resolve(job('coded', 'new_code', 'code'))).rejects.toThrow(
      /key column "code" sorts by libc locale C in new_code but "code" by ICU locale en in coded/,
    );
    await expect(resolve(job('coded', 'new_code_icu', 'code'))).resolves.toBeDefined();
    await expect(resolve(job('plain', 'new_int', 'id'))).resolves.toBeDefined();
  } finally {
    await pool.end();
  }
});
