#!/usr/bin/env node
// Rollback speed: from `abort` to the flag at 0, from there to an application's flag reader seeing it, and from `abort`
// to the whole compensation of a 1M-row migration done. Usage: node bench/rollback.js [--rows 1000000]
const b = require('./lib');
const { Pool } = require('pg');

const rows = Number(b.arg('rows', '1000000'));

async function main() {
  const { findPostgres, recreateDatabase } = b.dist('infra/postgres');
  const { FlagReader } = b.dist('flags');
  const { seedMeetings, meetingsExampleDir } = b.dist('demo/meetings');
  const { loadPlan } = b.dist('plan/load');
  const pg = await findPostgres();
  const url = await recreateDatabase(pg.adminUrl, 'tidemark_bench_rollback');
  console.error(`seeding ${b.fmt(rows)} meetings…`);
  await seedMeetings(url, rows);

  const example = loadPlan(require('node:path').join(meetingsExampleDir(), 'plan.yaml'));
  const plan = {
    ...example,
    name: 'bench-rollback',
    database: { urlEnv: 'BENCH_DATABASE_URL' },
    approvals: [],
    backup: { ...example.backup, enabled: false },
    copy: [{ ...example.copy[0], batchSize: 5000, maxBatchSize: 100000, parallel: 2 }],
    validate: [{ rowCount: { copy: 'meetings' } }],
    traffic: {
      ...example.traffic,
      stages: [
        { percent: 10, soak: 600_000, approval: false },
        { percent: 100, soak: 1000, approval: false },
      ],
    },
    cleanup: undefined,
  };

  const appPool = new Pool({ connectionString: url, max: 2 });
  const reader = await new FlagReader(appPool).start();
  await b.withStack('tidemark-bench-rollback', { BENCH_DATABASE_URL: url }, async ({ client }) => {
    const { workflowId } = await client.start(plan, { autoApprove: true });
    for (;;) {
      const s = await client.status(workflowId);
      if (s.traffic?.percent === 10) break;
      if (['rolled-back', 'failed'].includes(s.state)) throw new Error(`migration ${s.state}: ${s.error}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    while (reader.percentage('use_room_types') !== 10) await new Promise((r) => setTimeout(r, 10));
    const seen = new Promise((resolve) => reader.on('change', (c) => c.percentage === 0 && resolve(Date.now())));

    const t0 = Date.now();
    await client.abort(workflowId, { reason: 'benchmark' });
    let flagZeroAt;
    for (;;) {
      const [row] = await b.sql(
        url,
        `SELECT rollout_percentage AS p, extract(epoch FROM updated_at) * 1000 AS at FROM tidemark.flags WHERE name = 'use_room_types'`,
      );
      if (row.p === 0) {
        flagZeroAt = Number(row.at);
        break;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    const readerAt = await seen;
    const final = await client.waitForEnd(workflowId, undefined, 100);
    const doneAt = Date.parse(final.endedAt);
    console.log(`abort → flag at 0 in the database: ${b.fmt(flagZeroAt - t0)} ms (target ≤ 2000)`);
    console.log(
      `flag at 0 → the application's reader sees it (LISTEN/NOTIFY): ${b.fmt(readerAt - flagZeroAt)} ms (target ≤ 1000)`,
    );
    console.log(
      `abort → ${final.state}, every compensation done, ${b.fmt(rows)}-row migration: ${(Math.max(0, doneAt - t0) / 1000).toFixed(1)} s (target ≤ 60 s)`,
    );
  });
  await reader.close();
  await appPool.end();
}

b.runBench('bench/rollback', main);
