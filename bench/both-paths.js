#!/usr/bin/env node
// Writes through both paths at once: during a split rollout, writers on the old table and on the new one update the
// same hot rows while the bidirectional sync carries each write to the other side. The two paths lock the two rows in
// opposite orders, so PostgreSQL now and then aborts one transaction as a deadlock (40P01), which the application
// retries. Prints how often, against the same workload on the old path alone (no deadlocks possible), and checks
// that both tables end identical. Usage: node bench/both-paths.js [--seconds 20] [--hot 200] [--writers 4]
const b = require('./lib');
const { Pool } = require('pg');

const seconds = Number(b.arg('seconds', '20'));
const hot = Number(b.arg('hot', '200'));
const writers = Number(b.arg('writers', '4'));

/** `n` loops updating random hot keys of `table` for `seconds`; counts commits and deadlocks. */
async function workload(url, tables) {
  const pool = new Pool({ connectionString: url, max: writers * tables.length, application_name: 'app' });
  const stats = { commits: 0, deadlocks: 0, retries: 0 };
  const end = Date.now() + seconds * 1000;
  let seed = 7;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const loops = tables.flatMap((t) =>
    Array.from({ length: writers }, async () => {
      while (Date.now() < end) {
        const id = 1 + Math.floor(rnd() * hot);
        for (;;) {
          try {
            await pool.query(`UPDATE ${t} SET n = n + 1, v = $2 WHERE id = $1`, [id, `w${rnd()}`]);
            stats.commits++;
            break;
          } catch (e) {
            if (e.code !== '40P01') throw e;
            stats.deadlocks++;
            stats.retries++;
          }
        }
      }
    }),
  );
  await Promise.all(loops);
  await pool.end();
  return stats;
}

async function main() {
  const { findPostgres, recreateDatabase } = b.dist('infra/postgres');
  const url = await recreateDatabase((await findPostgres()).adminUrl, 'tidemark_bench_both_paths');
  await b.sql(
    url,
    `CREATE TABLE items (id bigint PRIMARY KEY, n bigint NOT NULL, v text NOT NULL);
                    INSERT INTO items SELECT g, 0, 'v' FROM generate_series(1, 100000) g;`,
  );
  const [{ timeout }] = await b.sql(url, `SELECT current_setting('deadlock_timeout') AS timeout`);

  const alone = await workload(url, ['items', 'items']);
  const plan = b.makePlan(
    {
      name: 'bench-both-paths',
      database: { urlEnv: 'BENCH_DATABASE_URL' },
      backup: { enabled: false },
      schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
      copy: [{ name: 'items', from: 'items', to: 'items_v2', key: 'id', sync: 'bidirectional' }],
      validate: [{ rowCount: { copy: 'items' } }],
      traffic: {
        flag: 'use_items_v2',
        stages: [
          { percent: 50, soak: '1h' },
          { percent: 100, soak: '1s' },
        ],
      },
    },
    {
      'up.sql': 'CREATE TABLE items_v2 (id bigint PRIMARY KEY, n bigint NOT NULL, v text NOT NULL);',
      'down.sql': 'DROP TABLE items_v2;',
    },
  );
  await b.withStack('tidemark-bench-both-paths', { BENCH_DATABASE_URL: url }, async ({ client }) => {
    const { workflowId } = await client.start(plan, { autoApprove: true, startedBy: 'bench' });
    for (;;) {
      const s = await client.status(workflowId);
      if (s.traffic?.percent === 50) break;
      if (['rolled-back', 'failed', 'completed'].includes(s.state)) throw new Error(`migration ${s.state}: ${s.error}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    const both = await workload(url, ['items', 'items_v2']);
    const [diff] = await b.sql(
      url,
      `SELECT (SELECT count(*) FROM (TABLE items EXCEPT TABLE items_v2) a)::int + (SELECT count(*) FROM (TABLE items_v2 EXCEPT TABLE items) b)::int AS n`,
    );
    await client.abort(workflowId, { reason: 'bench over' });
    await client.waitForEnd(workflowId);
    const per1000 = (s) => (1000 * s.deadlocks) / Math.max(1, s.commits);
    console.log(`deadlock_timeout: ${timeout}; ${writers} writers per path on ${hot} hot rows for ${seconds}s`);
    console.log(`old path alone: ${b.fmt(alone.commits / seconds)} writes/s, ${alone.deadlocks} deadlocks`);
    console.log(
      `both paths, bidirectional sync: ${b.fmt(both.commits / seconds)} writes/s (${b.fmt(both.commits / Math.max(1, alone.commits), 2)}× alone), ` +
        `${both.deadlocks} deadlocks = ${b.fmt(per1000(both), 2)} per 1000 writes, each retried`,
    );
    console.log(`rows that differ between the tables afterwards: ${diff.n}`);
  });
}

b.runBench('both-paths', main);
