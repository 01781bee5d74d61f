#!/usr/bin/env node
// Copy benchmark, one line per figure, every ratio against a baseline measured in the same run:
//   - tidemark's copy of a generated table (idle server) against one INSERT … SELECT of the same mapping, and against
//     that statement split by key into --parallel parts run at once (what parallel ranges could reach here);
//   - history events per million rows; the worker's peak RSS;
//   - under a production-like load — pgbench on its own tables of the same database, rate-limited (-R) to half the
//     rate it reaches alone here — the load's p99 latency while the copy runs against the same load without it, its
//     failed transactions, and the copy's speed against its idle speed;
//   - two worker processes against one on the same copy (idle), and which worker ran how many ranges;
//   - the sync triggers' cost to the application's writes (bench/triggers.js, on its own table of --trigger-rows).
// Ends with `targets met: N of M`.
// Usage: node bench/copy.js [--rows 1000000] [--parallel 2] [--pgbench-seconds 20] [--trigger-rows 1000000]
//                           [--no-triggers]
const b = require('./lib');
const { triggerCost } = require('./triggers');

const rows = Number(b.arg('rows', '1000000'));
const parallel = Number(b.arg('parallel', '2'));
const targets = [];
/** Prints one figure and keeps whether it met its target. */
function figure(line, met) {
  targets.push(met);
  console.log(`${line} ${met ? '✓' : '✗'}`);
}

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

function planFor(name, urlEnv, target, ranges = parallel) {
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
          parallel: ranges,
        },
      ],
      validate: [{ rowCount: { copy: 'bench' } }],
      // Cleanup removes the sync triggers, so the next copy of the same source may start.
      cleanup: {},
    },
    { 'up.sql': TARGET_DDL(target), 'down.sql': `DROP TABLE IF EXISTS ${target}` },
  );
}

/** The copy's rows/s on an idle server with `workers` fresh worker processes sharing `ranges` ranges. */
async function copyWithWorkers(server, url, workers, ranges, target) {
  const taskQueue = `tidemark-bench-${target}`;
  const env = { BENCH_DATABASE_URL: url, TIDEMARK_MAX_ACTIVITIES: String(Math.ceil(ranges / workers)) };
  const procs = Array.from({ length: workers }, () => b.startWorkerProcess(server.address, taskQueue, env));
  const client = await b.dist('client').TidemarkClient.connect({ address: server.address, taskQueue });
  try {
    await Promise.all(procs.map((p) => p.ready));
    await b.sql(url, 'CHECKPOINT');
    const run = await b.runToEnd(
      client,
      planFor(`bench-copy-${target.replaceAll('_', '-')}`, 'BENCH_DATABASE_URL', target, ranges),
    );
    return { rps: rows / (b.phaseMs(run.final, 'copy') / 1000), split: Object.values(run.copyWorkers) };
  } finally {
    await client.close();
    for (const p of procs) await p.stop();
  }
}

async function main() {
  const url = await b.generatedTable('tidemark_bench', 'bench_source', rows);

  // Baseline: the database's own speed for this mapping.
  await b.sql(url, TARGET_DDL('bench_baseline'));
  await b.sql(url, 'CHECKPOINT');
  const base = await b.timed(() => b.sql(url, `INSERT INTO bench_baseline ${MAPPED_SELECT}`));
  const baseRps = rows / (base.ms / 1000);
  // The machine's own ceiling for parallel ranges: the same statement split by key into `parallel` parts run at once,
  // each on its own connection. On two cores shared with the server's WAL writer this is what any copy could reach.
  await b.sql(url, TARGET_DDL('bench_baseline_split'));
  await b.sql(url, 'CHECKPOINT');
  const part = Math.ceil(rows / parallel);
  const split = await b.timed(() =>
    Promise.all(
      Array.from({ length: parallel }, (_, i) =>
        b.sql(
          url,
          `INSERT INTO bench_baseline_split ${MAPPED_SELECT} WHERE id > ${i * part} AND id <= ${(i + 1) * part}`,
        ),
      ),
    ),
  );
  const splitRps = rows / (split.ms / 1000);

  await b.withStack('tidemark-bench', { BENCH_DATABASE_URL: url }, async ({ client, worker, server }) => {
    await b.sql(url, 'CHECKPOINT');
    const run = await b.runToEnd(client, planFor('bench-copy', 'BENCH_DATABASE_URL', 'bench_target'));
    const copyMs = b.phaseMs(run.final, 'copy');
    const copyRps = rows / (copyMs / 1000);
    const idleRatio = copyRps / baseRps;
    figure(
      `copy, idle: tidemark ${b.fmt(copyRps)} rows/s (${parallel} range(s)) vs one INSERT … SELECT ${b.fmt(baseRps)} rows/s → ${idleRatio.toFixed(2)}× (target ≥ 1.3)`,
      idleRatio >= 1.3,
    );
    console.log(
      `copy, idle, against the machine's ceiling: the same INSERT … SELECT split into ${parallel} at once ${b.fmt(splitRps)} rows/s (${(splitRps / baseRps).toFixed(2)}× one) → tidemark ${(copyRps / splitRps).toFixed(2)}× it`,
    );
    // Two workers against one, each copying 2 × parallel ranges into a fresh table: fresh worker processes on a task
    // queue of their own, the two each allowed only half of the ranges at once (TIDEMARK_MAX_ACTIVITIES), so both
    // copy. On two cores they share the same CPUs with the server: the figure says what scales here.
    const ranges = parallel * 2;
    const one = await copyWithWorkers(server, url, 1, ranges, 'bench_target_one');
    const two = await copyWithWorkers(server, url, 2, ranges, 'bench_target_two');
    console.log(
      `copy, idle, two workers vs one: ${b.fmt(two.rps)} vs ${b.fmt(one.rps)} rows/s → ${(two.rps / one.rps).toFixed(2)}× (${ranges} ranges; ranges run by each worker: ${two.split.join(' + ')})`,
    );
    const perMillion = (run.historyLength * 1e6) / rows;
    figure(
      `history: ${run.historyLength} events for ${b.fmt(rows)} rows → ${b.fmt(perMillion, 1)} events per million rows (target ≤ 100)`,
      perMillion <= 100,
    );

    // The production-like load: pgbench's own tables, the rate it reaches alone here, then half of it.
    const pgtools = b.dist('db/pgtools');
    require('node:child_process').execFileSync(pgtools.findPgTool('pgbench') ?? 'pgbench', ['-i', '-q', '-s', '10'], {
      env: { ...process.env, ...pgtools.libpqEnv(url) },
      stdio: 'ignore',
    });
    await b.sql(url, 'CHECKPOINT');
    const full = await b.pgbench(url, 10);
    const rate = Math.max(1, Math.round(full.tps / 2));
    console.log(`load: pgbench (4 clients) reaches ${b.fmt(full.tps)} TPS alone; the load runs at -R ${rate}`);
    const seconds = Number(b.arg('pgbench-seconds', String(Math.max(20, Math.ceil(copyMs / 1000)))));
    await b.sql(url, 'CHECKPOINT');
    const alone = await b.pgbench(url, seconds, 4, rate);

    await b.sql(url, 'CHECKPOINT');
    let window;
    const load = b.startPgbench(url, { seconds: 3600, rate, window: () => window });
    await new Promise((r) => setTimeout(r, 2000));
    let live;
    // What the latency budget did: the duties it chose while the copy shared the server with the load.
    const duties = [];
    let lastReason = null;
    const watch = (s) => {
      const c = s.copy?.[0];
      if (c?.duty !== undefined) duties.push(c.duty);
      if (c?.throttleReason) lastReason = c.throttleReason;
    };
    try {
      live = await b.runToEnd(client, planFor('bench-copy-live', 'BENCH_DATABASE_URL', 'bench_target_live'), watch);
    } finally {
      const p = live?.final.phases.find((x) => x.name === 'copy');
      if (p) window = { from: Date.parse(p.startedAt), to: Date.parse(p.endedAt) };
      await new Promise((r) => setTimeout(r, 1000));
      await load.stop();
    }
    const during = await load.done;
    const liveSecs = b.phaseMs(live.final, 'copy') / 1000;
    // The load alone once more, as long as the copy ran: one window's p99 can hold a spike of its own (a checkpoint,
    // an autovacuum), and a spike in the baseline would flatter the ratio. The lower of the two windows counts.
    await b.sql(url, 'CHECKPOINT');
    const afterwards = await b.pgbench(url, Math.max(seconds, Math.ceil(liveSecs)), 4, rate);
    const baseline = afterwards.p99 < alone.p99 ? afterwards : alone;
    const p99Ratio = during.p99 / baseline.p99;
    figure(
      `load p99: ${during.p99.toFixed(1)} ms during the copy vs ${baseline.p99.toFixed(1)} ms without (-R ${rate}; without: ${alone.p99.toFixed(1)} ms before the copy, ${afterwards.p99.toFixed(1)} ms after it, the lower counts; ${b.fmt(during.transactions)} vs ${b.fmt(baseline.transactions)} transactions) → ${p99Ratio.toFixed(2)}× (target ≤ 1.25)`,
      p99Ratio <= 1.25,
    );
    figure(
      `load failed transactions: ${during.failed} during the copy (${alone.failed + afterwards.failed} without) (target 0)`,
      during.failed === 0,
    );
    const liveRps = rows / liveSecs;
    const liveRatio = liveRps / copyRps;
    figure(
      `copy under load: ${b.fmt(liveRps)} rows/s over ${b.fmt(liveSecs, 1)}s vs ${b.fmt(copyRps)} rows/s idle → ${liveRatio.toFixed(2)}× (target ≥ 0.50)`,
      liveRatio >= 0.5,
    );
    if (duties.length) {
      const mean = duties.reduce((a, x) => a + x, 0) / duties.length;
      console.log(
        `latency budget: duty ${b.fmt(Math.min(...duties) * 100, 0)}–${b.fmt(Math.max(...duties) * 100, 0)} % (mean ${b.fmt(mean * 100, 0)} % over ${duties.length} readings); last: ${lastReason}`,
      );
    }
    const rss = worker.peakRssMb();
    figure(`worker peak RSS: ${b.fmt(rss, 0)} MB (target < 300 MB)`, rss < 300);
  });
  if (!process.argv.includes('--no-triggers')) {
    const figures = await triggerCost({
      rows: Number(b.arg('trigger-rows', '1000000')),
      seconds: Number(b.arg('trigger-seconds', '15')),
      statements: 10,
    });
    for (const f of figures) figure(f.line, f.met);
  }
  console.log(`targets met: ${targets.filter(Boolean).length} of ${targets.length}`);
}

b.runBench('bench/copy', main);
