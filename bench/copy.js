#!/usr/bin/env node
// Copy benchmark: tidemark's copy of a generated table against one INSERT … SELECT of the same mapping, in the same
// database in the same run; the same copy while pgbench writes to other tables; history events per million rows;
// the worker's peak RSS. Usage: node bench/copy.js [--rows 1000000] [--parallel 2] [--pgbench-seconds 20]
const b = require('./lib');

const rows = Number(b.arg('rows', '1000000'));
const parallel = Number(b.arg('parallel', '2'));

const TARGET_DDL = (name) => `CREATE TABLE ${name} (
  id bigint PRIMARY KEY, account_id bigint NOT NULL, amount numeric(12,2) NOT NULL, status text NOT NULL,
  note text, created_at timestamptz NOT NULL)`;
const MAPPING = {
  id: 'id',
  account_id: 'account_id',
  amount: 'amount_cents / 100.0',
  status: 'upper(status)',
  note: 'note',
  created_at: 'created_at',
};
const MAPPED_SELECT = 'SELECT id, account_id, amount_cents / 100.0, upper(status), note, created_at FROM bench_source';

function planFor(name, urlEnv, target) {
  return b.makePlan(
    {
      name,
      database: { urlEnv },
      backup: { enabled: false },
      schema: [{ id: `001_${target}`, up: 'up.sql', down: 'down.sql' }],
      copy: [
        {
          name: 'bench',
          from: 'bench_source',
          to: target,
          key: 'id',
          columns: MAPPING,
          sync: b.arg('sync', 'forward'),
          batchSize: 5000,
          maxBatchSize: 100000,
          targetBatchMs: 300,
          parallel,
        },
      ],
      validate: [{ rowCount: { copy: 'bench' } }],
    },
    { 'up.sql': TARGET_DDL(target), 'down.sql': `DROP TABLE IF EXISTS ${target}` },
  );
}

async function main() {
  const url = await b.generatedTable('tidemark_bench', 'bench_source', rows);

  // Baseline: the database's own speed for this mapping.
  await b.sql(url, TARGET_DDL('bench_baseline'));
  await b.sql(url, 'CHECKPOINT');
  const base = await b.timed(() => b.sql(url, `INSERT INTO bench_baseline ${MAPPED_SELECT}`));
  const baseRps = rows / (base.ms / 1000);

  await b.withStack('tidemark-bench', { BENCH_DATABASE_URL: url }, async ({ client, worker }) => {
    await b.sql(url, 'CHECKPOINT');
    const run = await b.runToEnd(client, planFor('bench-copy', 'BENCH_DATABASE_URL', 'bench_target'));
    const copyMs = b.phaseMs(run.final, 'copy');
    const copyRps = rows / (copyMs / 1000);
    console.log(
      `copy: tidemark ${b.fmt(copyRps)} rows/s (${parallel} range(s)) vs single INSERT … SELECT ${b.fmt(baseRps)} rows/s → ratio ${(copyRps / baseRps).toFixed(2)} (target ≥ 0.80)`,
    );
    console.log(
      `history: ${run.historyLength} events for ${b.fmt(rows)} rows → ${b.fmt((run.historyLength * 1e6) / rows, 1)} events per million rows (target ≤ 100)`,
    );

    // A live write workload on other tables: its baseline, then the same while a copy runs.
    const seconds = Number(b.arg('pgbench-seconds', String(Math.max(10, Math.ceil(copyMs / 1000)))));
    const pgbenchBin = b.dist('db/pgtools').findPgTool('pgbench') ?? 'pgbench';
    require('node:child_process').execFileSync(pgbenchBin, ['-i', '-q', '-s', '10'], {
      env: { ...process.env, ...b.dist('db/pgtools').libpqEnv(url) },
      stdio: 'ignore',
    });
    await b.sql(url, 'CHECKPOINT');
    const alone = await b.pgbench(url, seconds);
    await b.sql(url, 'CHECKPOINT');
    const [during, live] = await Promise.all([
      b.pgbench(url, seconds),
      b.runToEnd(client, planFor('bench-copy-live', 'BENCH_DATABASE_URL', 'bench_target_live')),
    ]);
    console.log(
      `live workload (pgbench, 4 clients, ${seconds}s): TPS ${b.fmt(during.tps)} during the copy vs ${b.fmt(alone.tps)} alone → ${(during.tps / alone.tps).toFixed(2)} (target ≥ 0.80); ` +
        `p99 ${during.p99.toFixed(1)} ms vs ${alone.p99.toFixed(1)} ms → ${(during.p99 / alone.p99).toFixed(2)} (target ≤ 1.50)`,
    );
    const liveRps = rows / (b.phaseMs(live.final, 'copy') / 1000);
    const liveSecs = b.phaseMs(live.final, 'copy') / 1000;
    console.log(
      `copy in the live run: ${b.fmt(liveRps)} rows/s over ${b.fmt(liveSecs, 1)}s (${(liveRps / copyRps).toFixed(2)} of its speed alone; ` +
        `it yields while the workload runs, the first ${seconds}s, and speeds up after)`,
    );
    console.log(`worker peak RSS: ${b.fmt(worker.peakRssMb(), 0)} MB (target < 300 MB)`);
  });
}

b.runBench('bench/copy', main);
