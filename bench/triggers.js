#!/usr/bin/env node
// Sync-trigger cost: what the application's writes to a table pay while tidemark syncs it, with no sync, forward sync
// and bidirectional sync installed, in the same database in the same run. The triggers are installed by a real
// migration held at its validate approval (copy done, sync live), which is aborted afterwards.
//   single-row OLTP: pgbench, one UPDATE of a random row per transaction, TPS
//   bulk statements of 10,000 rows: UPDATE, INSERT, DELETE, statements/s
// Usage: node bench/triggers.js [--rows 1000000] [--seconds 15] [--statements 10]
// bench/copy.js runs the same measurement (triggerCost) for its trigger-cost figures.
const { spawn } = require('node:child_process');
const { mkdtempSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { Client } = require('pg');
const b = require('./lib');

const BULK = 10_000;

const TARGET_DDL = `CREATE TABLE bench_v2 (
  id bigint PRIMARY KEY, account_id bigint NOT NULL, amount numeric(12,2) NOT NULL, status text NOT NULL,
  note text, created_at timestamptz NOT NULL)`;

function planFor(sync) {
  return b.makePlan(
    {
      name: `bench-triggers-${sync}`,
      database: { urlEnv: 'BENCH_DATABASE_URL' },
      approvals: ['validate'],
      backup: { enabled: false },
      schema: [{ id: '001_bench_v2', up: 'up.sql', down: 'down.sql' }],
      copy: [
        {
          name: 'bench',
          from: 'bench_source',
          to: 'bench_v2',
          key: 'id',
          columns: {
            id: 'id',
            account_id: 'account_id',
            amount: 'amount_cents / 100.0',
            status: 'status',
            note: 'note',
            created_at: 'created_at',
          },
          ...(sync === 'bidirectional' ? { reverse: { amount_cents: '(amount * 100)::bigint' } } : {}),
          sync,
          batchSize: 5000,
          maxBatchSize: 100000,
          parallel: 2,
        },
      ],
      validate: [{ rowCount: { copy: 'bench' } }],
    },
    { 'up.sql': TARGET_DDL, 'down.sql': 'DROP TABLE IF EXISTS bench_v2' },
  );
}

/** pgbench running one single-row UPDATE per transaction for `seconds`; its TPS. */
function singleRowTps(url, { rows, seconds }) {
  const dir = mkdtempSync(join(tmpdir(), 'tidemark-bench-oltp-'));
  const script = join(dir, 'update.sql');
  writeFileSync(
    script,
    `\\set id random(1, ${rows})\nUPDATE bench_source SET amount_cents = amount_cents + 1 WHERE id = :id;\n`,
  );
  const pgbenchBin = b.dist('db/pgtools').findPgTool('pgbench') ?? 'pgbench';
  const env = { ...process.env, ...b.dist('db/pgtools').libpqEnv(url), PGAPPNAME: 'pgbench' };
  return new Promise((resolve, reject) => {
    const child = spawn(pgbenchBin, ['-n', '-c', '4', '-j', '2', '-T', String(seconds), '-f', script], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve(Number(/tps = ([\d.]+)/.exec(out)?.[1])) : reject(new Error(`pgbench: ${out.slice(-400)}`)),
    );
  });
}

/** Statements/s of 10,000-row UPDATEs, INSERTs (of new keys) and DELETEs (of those keys), one after another. */
async function bulk(url, { rows, statements }) {
  const c = new Client({ connectionString: url, application_name: 'bench-app' });
  await c.connect();
  const rate = async (sqlFor) => {
    await c.query(sqlFor(0)); // warm-up, not counted
    const t0 = performance.now();
    for (let i = 1; i <= statements; i++) await c.query(sqlFor(i));
    return statements / ((performance.now() - t0) / 1000);
  };
  try {
    const base = rows + 1;
    const range = (i) => [base + i * BULK, base + (i + 1) * BULK - 1];
    const update = await rate(
      (i) =>
        `UPDATE bench_source SET amount_cents = amount_cents + 1 WHERE id BETWEEN ${1 + i * BULK} AND ${(i + 1) * BULK}`,
    );
    const insert = await rate((i) => {
      const [lo, hi] = range(i);
      return `INSERT INTO bench_source SELECT g, g % 9973, g % 100000, 'open', 'bulk ' || g, now() FROM generate_series(${lo}, ${hi}) g`;
    });
    const del = await rate((i) => {
      const [lo, hi] = range(i);
      return `DELETE FROM bench_source WHERE id BETWEEN ${lo} AND ${hi}`;
    });
    return { update, insert, delete: del };
  } finally {
    await c.end();
  }
}

async function measure(url, label, opts) {
  await b.sql(url, 'VACUUM ANALYZE bench_source');
  await b.sql(url, 'CHECKPOINT');
  const tps = await singleRowTps(url, opts);
  const statementsPerSecond = await bulk(url, opts);
  console.error(`${label}: ${b.fmt(tps)} TPS, bulk ${JSON.stringify(statementsPerSecond)}`);
  return { tps, ...statementsPerSecond };
}

/**
 * The figures, each `{ line, met }`: single-row TPS and bulk statements/s with forward and with bidirectional sync
 * against none, on a generated table of `rows` rows.
 */
async function triggerCost(opts) {
  const url = await b.generatedTable('tidemark_bench_triggers', 'bench_source', opts.rows);
  const results = { none: await measure(url, 'no sync', opts) };
  await b.withStack('tidemark-bench-triggers', { BENCH_DATABASE_URL: url }, async ({ client }) => {
    for (const sync of ['forward', 'bidirectional']) {
      const { workflowId } = await client.start(planFor(sync), { autoApprove: false, startedBy: 'bench' });
      // Held at the validate approval: the copy is done and the sync triggers are live.
      for (;;) {
        const s = await client.status(workflowId);
        if (['rolled-back', 'failed', 'completed'].includes(s.state))
          throw new Error(`${sync}: ${s.state}: ${s.error}`);
        if (s.pendingApproval?.gate === 'validate') break;
        if (s.pendingApproval) await client.approve(workflowId, { gate: s.pendingApproval.gate });
        await new Promise((r) => setTimeout(r, 250));
      }
      results[sync] = await measure(url, `${sync} sync`, opts);
      await client.abort(workflowId, { reason: 'benchmark done' });
      const final = await client.waitForEnd(workflowId, undefined, 250);
      if (final.state !== 'rolled-back') throw new Error(`${sync}: the abort ended ${final.state}: ${final.error}`);
    }
  });

  const figures = [];
  const figure = (what, value, base, target) => {
    const ratio = value / base;
    figures.push({
      line: `${what}: ${b.fmt(value, 1)} vs ${b.fmt(base, 1)} without sync → ${ratio.toFixed(2)}× (target ≥ ${target})`,
      met: ratio >= target,
    });
  };
  for (const sync of ['forward', 'bidirectional']) {
    const r = results[sync];
    const n = results.none;
    figure(`${sync} sync, single-row UPDATE TPS (pgbench, 4 clients)`, r.tps, n.tps, 0.95);
    for (const op of ['update', 'insert', 'delete'])
      figure(`${sync} sync, ${op.toUpperCase()} of ${b.fmt(BULK)} rows, statements/s`, r[op], n[op], 0.6);
  }
  return figures;
}

module.exports = { triggerCost };

if (require.main === module)
  b.runBench('bench/triggers', async () => {
    const figures = await triggerCost({
      rows: Number(b.arg('rows', '1000000')),
      seconds: Number(b.arg('seconds', '15')),
      statements: Number(b.arg('statements', '10')),
    });
    for (const f of figures) console.log(f.line);
    console.log(`targets met: ${figures.filter((f) => f.met).length} of ${figures.length}`);
  });
