#!/usr/bin/env node
// Validation benchmark: the exact chunked checksum of a copied table against the copy's own speed and against a plain
// SELECT count(*) over the same table, in the same database in the same run.
// Usage: node bench/validate.js [--rows 1000000] [--chunk 10000]
const b = require('./lib');

const rows = Number(b.arg('rows', '1000000'));
const chunk = Number(b.arg('chunk', '10000'));

async function main() {
  const url = await b.generatedTable('tidemark_bench_validate', 'src', rows);
  await b.withStack('tidemark-bench-validate', { BENCH_DATABASE_URL: url }, async ({ client }) => {
    const plan = b.makePlan(
      {
        name: 'bench-validate',
        database: { urlEnv: 'BENCH_DATABASE_URL' },
        backup: { enabled: false },
        schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
        copy: [
          {
            name: 'bench',
            from: 'src',
            to: 'dst',
            key: 'id',
            columns: {
              id: 'id',
              account_id: 'account_id',
              amount: 'amount_cents / 100.0',
              status: 'upper(status)',
              note: 'note',
              created_at: 'created_at',
            },
            batchSize: 5000,
            maxBatchSize: 100000,
            targetBatchMs: 300,
            parallel: 2,
          },
        ],
        validate: [{ checksum: { copy: 'bench', chunkSize: chunk } }],
      },
      {
        'up.sql':
          'CREATE TABLE dst (id bigint PRIMARY KEY, account_id bigint NOT NULL, amount numeric(12,2) NOT NULL, status text NOT NULL, note text, created_at timestamptz NOT NULL)',
        'down.sql': 'DROP TABLE dst',
      },
    );
    const run = await b.runToEnd(client, plan);
    const copyRps = rows / (b.phaseMs(run.final, 'copy') / 1000);
    const checkRps = rows / (b.phaseMs(run.final, 'validate') / 1000);
    const count = await b.timed(() => b.sql(url, 'SELECT count(*) FROM dst'));
    const countRps = rows / (count.ms / 1000);
    console.log(
      `checksum (exact, ${b.fmt(chunk)}-row chunks, source through the mapping vs target): ${b.fmt(checkRps)} rows/s`,
    );
    console.log(`  vs the copy: ${b.fmt(copyRps)} rows/s → ratio ${(checkRps / copyRps).toFixed(2)} (target ≥ 0.50)`);
    console.log(`  vs SELECT count(*): ${b.fmt(countRps)} rows/s → ratio ${(checkRps / countRps).toFixed(3)}`);
  });
}

b.runBench('bench/validate', main);
