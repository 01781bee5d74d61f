#!/usr/bin/env node
// Blue-green across two databases: how fast the copy moves rows from one database into the other, against
// `pg_dump | pg_restore` of the same table in the same run, and how far behind the applier is (source write → row on
// the target) at a fixed write rate, while the copy runs and after it. One line per figure.
// Usage: node bench/blue-green.js [--rows 300000] [--rate 500] [--after 20] [--parallel 1] [--budget 25%]
//   --rate: application writes per second on the source (updates of random rows, plus probe inserts).
//   --after: seconds of writes measured once the copy is done.
//   --parallel: key ranges of the table copied at once (the copy job's \`parallel\`).
const b = require('./lib');
const { spawn } = require('node:child_process');
const { Pool } = require('pg');

const rows = Number(b.arg('rows', '300000'));
const rate = Number(b.arg('rate', '500'));
const afterSeconds = Number(b.arg('after', '20'));
const parallel = Number(b.arg('parallel', '1'));
// The copy's latency budget on the source (copy[].impact.maxLatencyIncrease); by default the plan's default (25%).
const budget = b.arg('budget', undefined);
/** One write in PROBE_EVERY is a probe: an insert whose arrival on the target is timed. */
const PROBE_EVERY = 5;

const pct = (xs, p) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length ? s[Math.min(s.length - 1, Math.floor(s.length * p))] : NaN;
};

/** Writes at `rate` per second on the source until stopped: updates of random items and timed probe inserts. */
function writer(url) {
  const pool = new Pool({ connectionString: url, max: 4, application_name: 'app' });
  let running = true;
  let seed = 11;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  let n = 0;
  const started = Date.now();
  /** [when it was acknowledged (epoch ms), how long it took (ms)] of every write. */
  const latencies = [];
  const loops = Array.from({ length: 4 }, async () => {
    while (running) {
      const i = n++;
      // Paced: write i is due at started + i / rate.
      const due = started + (i * 1000) / rate - Date.now();
      if (due > 0) await new Promise((r) => setTimeout(r, due));
      const t0 = performance.now();
      if (i % PROBE_EVERY === 0) await pool.query(`INSERT INTO probes DEFAULT VALUES`);
      else await pool.query(`UPDATE items SET note = $2 WHERE id = $1`, [1 + Math.floor(rnd() * rows), `w${i}`]);
      latencies.push([Date.now(), performance.now() - t0]);
    }
  });
  return {
    latencies,
    async stop() {
      running = false;
      await Promise.all(loops);
      await pool.end();
      return n;
    },
  };
}

/** pg_dump of one table piped into pg_restore on another database; returns the wall time in ms. */
function dumpRestore(fromUrl, toUrl, table) {
  const { findPgTool, libpqEnv } = b.dist('db/pgtools');
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const dump = spawn(findPgTool('pg_dump') ?? 'pg_dump', ['-Fc', '-Z0', '-t', table], {
      env: { ...process.env, ...libpqEnv(fromUrl) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const restore = spawn(
      findPgTool('pg_restore') ?? 'pg_restore',
      ['--no-owner', '-d', new URL(toUrl).pathname.slice(1)],
      {
        env: { ...process.env, ...libpqEnv(toUrl) },
        stdio: ['pipe', 'inherit', 'inherit'],
      },
    );
    dump.stdout.pipe(restore.stdin);
    restore.on('exit', (code) =>
      code === 0 ? resolve(performance.now() - t0) : reject(new Error(`pg_restore ${code}`)),
    );
  });
}

async function main() {
  const { findPostgres, recreateDatabase } = b.dist('infra/postgres');
  const admin = (await findPostgres()).adminUrl;
  const blue = await b.generatedTable('tidemark_bench_bg_blue', 'items', rows);
  const green = await recreateDatabase(admin, 'tidemark_bench_bg_green');
  const baseline = await recreateDatabase(admin, 'tidemark_bench_bg_baseline');
  await b.sql(
    blue,
    `CREATE TABLE probes (id bigserial PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT clock_timestamp())`,
  );

  // The baseline on an idle source, and under the same writes the copy meets (the copy's ratio is against the
  // latter; both printed). Each the faster of two runs: one dump-restore swings by a fifth from run to run here, and
  // the faster baseline gives the lower, safer ratio.
  const fastest = async () => {
    let best = Infinity;
    for (let i = 0; i < 2; i++) {
      best = Math.min(best, await dumpRestore(blue, baseline, 'items'));
      await b.sql(baseline, 'DROP TABLE items');
    }
    return (rows * 1000) / best;
  };
  const idleRate = await fastest();
  console.log(`pg_dump | pg_restore of items, idle source: ${b.fmt(rows)} rows, ${b.fmt(idleRate)} rows/s`);
  const loading = writer(blue);
  const dumpRate = await fastest();
  await loading.stop();
  console.log(
    `pg_dump | pg_restore of items at ${rate} writes/s on the source: ${b.fmt(rows)} rows, ${b.fmt(dumpRate)} rows/s`,
  );

  const tableDdl = `CREATE TABLE items (id bigint PRIMARY KEY, account_id bigint NOT NULL, amount_cents bigint NOT NULL, status text NOT NULL, note text, created_at timestamptz NOT NULL);
    CREATE TABLE probes (id bigint PRIMARY KEY, written_at timestamptz NOT NULL);
    CREATE TABLE probe_arrivals (id bigint PRIMARY KEY, written_at timestamptz NOT NULL, arrived_at timestamptz NOT NULL);
    CREATE FUNCTION probe_arrived() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO probe_arrivals SELECT id, written_at, clock_timestamp() FROM new_rows ON CONFLICT DO NOTHING; RETURN NULL; END $$;
    CREATE TRIGGER probe_arrived AFTER INSERT ON probes REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION probe_arrived();`;
  const plan = b.makePlan(
    {
      name: 'bench-blue-green',
      database: { urlEnv: 'BENCH_BLUE_URL' },
      target: { urlEnv: 'BENCH_GREEN_URL', maxLag: '30s' },
      backup: { enabled: false },
      schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
      copy: [
        {
          name: 'items',
          from: 'items',
          to: 'items',
          key: 'id',
          sync: 'bidirectional',
          batchSize: 10000,
          parallel,
          ...(budget ? { impact: { maxLatencyIncrease: budget } } : {}),
        },
        { name: 'probes', from: 'probes', to: 'probes', key: 'id', sync: 'bidirectional' },
      ],
      validate: [{ rowCount: { copy: 'probes' } }],
      traffic: { flag: 'use_green', stages: [{ percent: 100, soak: '1h' }] },
      cleanup: {},
    },
    {
      'up.sql': tableDdl,
      'down.sql': 'DROP TABLE items; DROP TABLE probes; DROP TABLE probe_arrivals; DROP FUNCTION probe_arrived();',
    },
  );
  await b.withStack(
    'tidemark-bench-blue-green',
    { BENCH_BLUE_URL: blue, BENCH_GREEN_URL: green },
    async ({ client }) => {
      const w = writer(blue);
      const { workflowId } = await client.start(plan, { autoApprove: true, startedBy: 'bench' });
      let s;
      for (;;) {
        s = await client.status(workflowId);
        if (['rolled-back', 'failed', 'completed'].includes(s.state))
          throw new Error(`migration ${s.state}: ${s.error}`);
        if (s.phases.find((p) => p.name === 'copy').status === 'completed') break;
        await new Promise((r) => setTimeout(r, 200));
      }
      const copy = s.phases.find((p) => p.name === 'copy');
      const copyEnd = Date.parse(copy.endedAt);
      const items = s.copy.find((c) => c.job === 'items');
      await new Promise((r) => setTimeout(r, afterSeconds * 1000));
      const written = await w.stop();
      // Every probe written has arrived once the log is empty.
      for (;;) {
        const [{ n }] = await b.sql(blue, `SELECT count(*)::int AS n FROM tidemark.changes`);
        if (n === 0) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      // Probes written before the capture was installed reached the target through the copy, not the applier.
      const [{ since }] = await b.sql(
        blue,
        `SELECT min(installed_at) AS since FROM tidemark.captures WHERE job = 'probes' AND direction = 'forward'`,
      );
      const arrivals = await b.sql(
        green,
        `SELECT (extract(epoch FROM written_at) * 1000)::float8 AS w, (extract(epoch FROM arrived_at - written_at) * 1000)::float8 AS lag
         FROM probe_arrivals WHERE written_at >= $1`,
        [since],
      );
      const during = arrivals.filter((a) => a.w <= copyEnd).map((a) => a.lag);
      const after = arrivals.filter((a) => a.w > copyEnd).map((a) => a.lag);
      const copyRate = items.rowsPerSecond || (rows * 1000) / (copyEnd - Date.parse(copy.startedAt));
      console.log(
        `tidemark copy of items across databases at ${rate} writes/s, latency budget +${budget ?? '25% (default)'}: ${b.fmt(items.rowsCopied)} rows, ${b.fmt(copyRate)} rows/s, ${b.fmt(copyRate / dumpRate, 2)}x pg_dump | pg_restore under the same writes (${b.fmt(copyRate / idleRate, 2)}x on an idle source)`,
      );
      const copyStart = Date.parse(copy.startedAt);
      const writesIn = (from, to) => w.latencies.filter(([at]) => at >= from && at <= to).map(([, ms]) => ms);
      const [wDuring, wAfter] = [writesIn(copyStart, copyEnd), writesIn(copyEnd + 1000, Infinity)];
      console.log(
        `application write latency on the source: p99 ${b.fmt(pct(wDuring, 0.99), 1)} ms during the copy vs ${b.fmt(pct(wAfter, 0.99), 1)} ms after it (${b.fmt(pct(wDuring, 0.99) / pct(wAfter, 0.99), 2)}x; ${wDuring.length} and ${wAfter.length} writes)`,
      );
      console.log(
        `apply lag during the copy at ${rate} writes/s: p50 ${b.fmt(pct(during, 0.5))} ms, p99 ${b.fmt(pct(during, 0.99))} ms (${during.length} probes)`,
      );
      console.log(
        `apply lag after the copy at ${rate} writes/s: p50 ${b.fmt(pct(after, 0.5))} ms, p99 ${b.fmt(pct(after, 0.99))} ms (${after.length} probes)`,
      );
      console.log(
        `writes made on the source: ${b.fmt(written)} in ${b.fmt((Date.now() - copyEnd) / 1000 + (copyEnd - Date.parse(copy.startedAt)) / 1000, 1)} s`,
      );
      await client.abort(workflowId, { reason: 'benchmark done' });
      await client.waitForEnd(workflowId);
    },
  );
}

b.runBench('blue-green', main);
