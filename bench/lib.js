// Shared pieces of the benchmarks: a scratch database, a Temporal dev server, a worker child process whose peak RSS
// is read from /proc, running a plan to the end, and pgbench as a live workload. Requires `npm run build` first.
const { spawn, execFileSync } = require('node:child_process');
const { readFileSync, mkdtempSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { Client } = require('pg');

const root = join(__dirname, '..');
const dist = (p) => require(join(root, 'dist', p));

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

async function sql(url, text, values) {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(text, values)).rows;
  } finally {
    await c.end();
  }
}

async function timed(fn) {
  const t0 = performance.now();
  const r = await fn();
  return { ms: performance.now() - t0, r };
}

/** A worker in its own process, so its memory can be measured alone. */
function startWorkerProcess(address, taskQueue, env) {
  const child = spawn(process.execPath, [join(root, 'bin', 'tidemark'), 'worker'], {
    env: { ...process.env, ...env, TEMPORAL_ADDRESS: address, TIDEMARK_TASK_QUEUE: taskQueue, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // Its stderr passes through; the line saying it polls its task queue is when it is ready for work.
  const ready = new Promise((resolve, reject) => {
    let seen = '';
    child.stderr.on('data', (d) => {
      process.stderr.write(d);
      if (seen !== null && (seen += d).includes('worker running on task queue')) {
        seen = null;
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`the worker exited (${code}) before it was ready`)));
  });
  ready.catch(() => undefined);
  return {
    child,
    ready,
    /** Peak resident set size so far (VmHWM), in MB. */
    peakRssMb() {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      return m ? Number(m[1]) / 1024 : NaN;
    },
    stop() {
      return new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', resolve);
        child.kill('SIGTERM');
      });
    },
  };
}

/** Writes a plan and its SQL files into a temporary folder and loads it. */
function makePlan(doc, files) {
  const dir = mkdtempSync(join(tmpdir(), 'tidemark-bench-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  writeFileSync(join(dir, 'plan.json'), JSON.stringify(doc));
  return dist('plan/load').loadPlan(join(dir, 'plan.json'));
}

async function runToEnd(client, plan, onStatus) {
  const { workflowId } = await client.start(plan, { autoApprove: true, startedBy: 'bench' });
  // Polled every 2 s: figures come from the phases' own timestamps, and `status` every 250 ms was itself a load. On two
  // cores it took pgbench's p99 from 4.5 to 9.5 ms with the copy paused, more than the copy added when running.
  const final = await client.waitForEnd(workflowId, onStatus, 2000);
  if (final.state !== 'completed') throw new Error(`${plan.name} ended ${final.state}: ${final.error}`);
  const handle = await client.handle(workflowId);
  const desc = await handle.describe();
  return { final, historyLength: desc.historyLength, copyWorkers: await copyWorkers(handle) };
}

/** The identity (pid@host) of the worker that ran each copy range, from the history: { identity: ranges }. */
async function copyWorkers(handle) {
  const events = (await handle.fetchHistory()).events ?? [];
  const copy = new Set(
    events
      .filter((e) => /^copyRange/.test(e.activityTaskScheduledEventAttributes?.activityType?.name ?? ''))
      .map((e) => String(e.eventId)),
  );
  const ranges = {};
  for (const e of events) {
    const s = e.activityTaskStartedEventAttributes;
    if (s && copy.has(String(s.scheduledEventId))) ranges[s.identity] = (ranges[s.identity] ?? 0) + 1;
  }
  return ranges;
}

function phaseMs(status, name) {
  const p = status.phases.find((x) => x.name === name);
  return Date.parse(p.endedAt) - Date.parse(p.startedAt);
}

/**
 * pgbench against `url`: `seconds` long (or until stop()), `clients` clients, at most `rate` transactions per second
 * when given (-R: latencies then count from each transaction's scheduled start, as a client of a rate-limited
 * application would feel them). Returns { done, stop }: done resolves to TPS, latency percentiles (ms) — over the whole
 * run, or over the transactions that started inside `window()` ({ from, to } in ms since the epoch) when given — and
 * the failed transactions (errors, failures, clients aborted).
 */
function startPgbench(url, { seconds, clients = 4, rate, window } = {}) {
  const pgbenchBin = dist('db/pgtools').findPgTool('pgbench') ?? 'pgbench';
  const dir = mkdtempSync(join(tmpdir(), 'tidemark-pgbench-'));
  // The workload is an application, not tidemark: its sessions must not carry tidemark's application_name (which
  // libpqEnv sets), or the copy's throttler would take them for its own and ignore them.
  const env = { ...process.env, ...dist('db/pgtools').libpqEnv(url), PGAPPNAME: 'pgbench' };
  const args = ['-n', '-c', String(clients), '-j', '2', '-T', String(seconds), '-l', '--log-prefix', join(dir, 'log')];
  if (rate) args.push('-R', String(Math.max(1, Math.round(rate))));
  const child = spawn(pgbenchBin, args, { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let stopped = false;
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const done = new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0 && !stopped) return reject(new Error(`pgbench exited ${code}: ${out.slice(-400)}`));
      // Log lines: client transaction time(us)|failed|skipped script epoch(s) us [lag]
      const lines = execFileSync('sh', ['-c', `cat ${join(dir, 'log')}.* 2>/dev/null || true`], {
        encoding: 'utf8',
        maxBuffer: 1 << 29,
      })
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(' '));
      const w = window?.();
      const inWindow = lines.filter((f) => {
        if (!w) return true;
        const endMs = Number(f[4]) * 1000 + Number(f[5]) / 1000;
        const startMs = f[2] === 'failed' || f[2] === 'skipped' ? endMs : endMs - Number(f[2]) / 1000;
        return startMs >= w.from && startMs <= w.to;
      });
      const lat = inWindow
        .filter((f) => /^\d+$/.test(f[2]))
        .map((f) => Number(f[2]))
        .sort((a, b) => a - b);
      const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] / 1000 : NaN);
      const aborted = (out.match(/client \d+ aborted/g) ?? []).length;
      const failedLogged = inWindow.filter((f) => f[2] === 'failed').length;
      const failedReported = Number(/number of failed transactions: (\d+)/.exec(out)?.[1] ?? 0);
      const tps = w
        ? lat.length / Math.max((w.to - w.from) / 1000, 1e-3)
        : Number(/tps = ([\d.]+)/.exec(out)?.[1] ?? NaN);
      resolve({
        tps,
        p50: pct(0.5),
        p90: pct(0.9),
        p99: pct(0.99),
        transactions: lat.length,
        failed: Math.max(failedLogged, w ? 0 : failedReported) + aborted,
      });
    });
  });
  return {
    done,
    /** Ends the run early; what it logged so far is what counts. */
    stop() {
      stopped = true;
      if (child.exitCode === null) child.kill('SIGINT');
      return done;
    },
  };
}

/** pgbench against `url` for `seconds` (see startPgbench). */
function pgbench(url, seconds, clients = 4, rate) {
  return startPgbench(url, { seconds, clients, rate }).done;
}

/** A fresh scratch database holding `table` with `rows` generated rows (integer key, numbers, text, timestamps). */
async function generatedTable(database, table, rows) {
  const { findPostgres, recreateDatabase } = dist('infra/postgres');
  const url = await recreateDatabase((await findPostgres()).adminUrl, database);
  console.error(`generating ${fmt(rows)} rows…`);
  await sql(
    url,
    `CREATE TABLE ${table} (id bigint PRIMARY KEY, account_id bigint NOT NULL, amount_cents bigint NOT NULL, status text NOT NULL, note text, created_at timestamptz NOT NULL);
     INSERT INTO ${table} SELECT g, g % 9973, (g * 37) % 100000, (ARRAY['open','paid','void'])[1 + g % 3], 'note ' || g, timestamptz '2025-01-01' + g * interval '1 second' FROM generate_series(1, ${Math.floor(Number(rows))}) g;`,
  );
  await sql(url, `VACUUM ANALYZE ${table}`);
  return url;
}

/** A Temporal dev server, a worker process and a client for the time of `fn`; everything stopped afterwards. */
async function withStack(taskQueue, env, fn) {
  const server = await dist('infra/devserver').startDevServer({ headless: true });
  const worker = startWorkerProcess(server.address, taskQueue, env);
  const client = await dist('client').TidemarkClient.connect({ address: server.address, taskQueue });
  try {
    return await fn({ client, worker, server });
  } finally {
    await client.close();
    await worker.stop();
    await server.stop();
  }
}

/** Runs a benchmark's main: exit 0 on success, a one-line error and exit 1 otherwise. */
function runBench(name, main) {
  main().then(
    () => process.exit(0),
    (e) => {
      console.error(`${name} failed: ${e.message}`);
      process.exit(1);
    },
  );
}

const fmt = (n, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

module.exports = {
  root,
  dist,
  arg,
  sql,
  timed,
  generatedTable,
  startWorkerProcess,
  withStack,
  runBench,
  makePlan,
  runToEnd,
  phaseMs,
  pgbench,
  startPgbench,
  fmt,
};
