#!/usr/bin/env node
// `tidemark status` latency as a user feels it: the whole command (process start, connect, query, describe, print),
// run N times against a migration soaking in its traffic phase (the richest status), on its own Temporal dev server
// and worker. Prints the median and the 90th percentile, and `--help` for the cost of starting node and the CLI alone.
// Usage: node bench/status.js [--runs 21]
const { execFileSync } = require('node:child_process');
const { join } = require('node:path');
const b = require('./lib');

const runs = Number(b.arg('runs', '21'));
const bin = join(b.root, 'bin', 'tidemark');

function timeCommand(args, env) {
  const t0 = performance.now();
  execFileSync(process.execPath, [bin, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return performance.now() - t0;
}

const pct = (xs, p) => [...xs].sort((a, c) => a - c)[Math.min(xs.length - 1, Math.floor(xs.length * p))];

async function main() {
  const { findPostgres, recreateDatabase } = b.dist('infra/postgres');
  const { seedMeetings, meetingsExampleDir } = b.dist('demo/meetings');
  const { loadPlan } = b.dist('plan/load');
  const pg = await findPostgres();
  const url = await recreateDatabase(pg.adminUrl, 'tidemark_bench_status');
  await seedMeetings(url, 2000);
  const example = loadPlan(join(meetingsExampleDir(), 'plan.yaml'));
  const plan = {
    ...example,
    name: 'bench-status',
    database: { urlEnv: 'BENCH_DATABASE_URL' },
    approvals: [],
    backup: { ...example.backup, enabled: false },
    traffic: { ...example.traffic, stages: [{ percent: 10, soak: 3_600_000, approval: false }] },
    cleanup: undefined,
  };
  await b.withStack('tidemark-bench-status', { BENCH_DATABASE_URL: url }, async ({ client }) => {
    const { workflowId } = await client.start(plan, { autoApprove: true, startedBy: 'bench' });
    for (;;) {
      const s = await client.status(workflowId);
      if (s.traffic?.soakEndsAt) break;
      if (['rolled-back', 'failed', 'completed'].includes(s.state)) throw new Error(`migration ${s.state}: ${s.error}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const env = { TEMPORAL_ADDRESS: client.address, TIDEMARK_TASK_QUEUE: 'tidemark-bench-status' };
    timeCommand(['status', plan.name], env); // warm the file cache
    const status = Array.from({ length: runs }, () => timeCommand(['status', plan.name], env));
    const help = Array.from({ length: Math.min(runs, 11) }, () => timeCommand(['--help'], env));
    console.log(
      `tidemark status: median ${b.fmt(pct(status, 0.5))} ms, p90 ${b.fmt(pct(status, 0.9))} ms (${runs} runs)`,
    );
    console.log(`tidemark --help: median ${b.fmt(pct(help, 0.5))} ms`);
    await client.abort(workflowId, { reason: 'bench over' });
    await client.waitForEnd(workflowId, undefined, 250);
  });
}

b.runBench('bench/status', main);
