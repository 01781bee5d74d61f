// Metrics: `tidemark worker --metrics-port` serves Prometheus text at /metrics — the Temporal SDK's worker metrics and
// tidemark's own, labelled by migration — scraped while a migration copies and after it completed.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { eventually, Harness } from '../helpers/env';
import { meetingsPlan } from '../helpers/plans';

const BIN = join(__dirname, '..', '..', 'bin', 'tidemark');
const h = new Harness();
let worker: ChildProcess | undefined;
beforeAll(() => h.start({ worker: false }));
afterAll(async () => {
  if (worker && worker.exitCode === null) {
    const exited = new Promise((r) => worker!.once('exit', r));
    worker.kill('SIGTERM');
    await exited;
  }
  await h.stop();
});

/** The value of one sample (`name{labels} value`), or undefined. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.split(' ').at(-1));
  }
  return undefined;
}

test("the worker serves the SDK metrics and tidemark's own, labelled by migration, during and after a migration", async () => {
  const db = await h.db('metrics');
  const base = await meetingsPlan(db, { rows: 20_000, approvals: ['copy'], soakMs: 500 });
  const plan = {
    ...base,
    traffic: { ...base.traffic!, stages: base.traffic!.stages.map((s) => ({ ...s, approval: false })) },
  };
  worker = spawn(process.execPath, [BIN, 'worker', '--metrics-port', '0', '--log-format', 'json'], {
    env: { ...process.env, TEMPORAL_ADDRESS: h.client.address, TIDEMARK_TASK_QUEUE: h.taskQueue, [db.urlEnv]: db.url },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  worker.stderr!.on('data', (d) => (stderr += d));
  const url = await eventually(async () => /metrics at (http:\/\/\S+\/metrics)/.exec(stderr)?.[1], 'the metrics URL');
  // With --log-format json, every line is JSON, the worker's start-up line too.
  const lines = stderr
    .slice(0, stderr.lastIndexOf('\n'))
    .split('\n')
    .filter((l) => l.trim());
  expect(lines.map((l) => JSON.parse(l) as { msg?: string }).some((l) => /^worker running/.test(l.msg ?? ''))).toBe(
    true,
  );
  const scrape = async () => {
    const res = await fetch(url);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    return res.text();
  };

  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await h.approvalPending(workflowId, 'copy');
  await h.client.throttle(workflowId, { batchSize: 500, delayMs: 50 });
  await h.client.approve(workflowId, { by: 'test' });
  const m = { migration: plan.name };

  // While the copy runs: rows counted from its heartbeats, batch times, the throttle reason the operator set.
  const during = await eventually(
    async () => {
      const t = await scrape();
      return (sample(t, 'tidemark_copy_rows_total', { ...m, job: 'meetings' }) ?? 0) > 0 ? t : undefined;
    },
    'copied rows in the metrics',
    60_000,
  );
  expect(sample(during, 'tidemark_migration_state', { ...m, state: 'running' })).toBe(1);
  expect(sample(during, 'tidemark_migration_phase', { ...m, phase: 'copy' })).toBe(1);
  // One throttle reason at a time: the operator's delay, or the throttler's own when the server is busy.
  const reasons = ['none', 'paused', 'operator-delay', 'lock-conflict', 'lock-waits', 'server-slow', 'sharing'];
  const current = reasons.filter(
    (reason) => sample(during, 'tidemark_copy_throttle', { ...m, job: 'meetings', reason }) === 1,
  );
  expect(current).toHaveLength(1);
  expect(current[0]).not.toBe('none');
  // The share of the time the copy works: all of it, or while sharing what its latency budget allows.
  const duty = sample(during, 'tidemark_copy_duty', { ...m, job: 'meetings' })!;
  expect(duty).toBeGreaterThanOrEqual(0.02);
  expect(duty).toBeLessThanOrEqual(1);
  expect(during).toMatch(/^tidemark_copy_batch_seconds_count\{[^}]*job="meetings"[^}]*\} [1-9]/m);
  // The SDK's own worker metrics come through the same endpoint.
  expect(during).toMatch(/^temporal_\w+/m);

  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('completed');
  const after = await eventually(async () => {
    const t = await scrape();
    return sample(t, 'tidemark_migration_state', { ...m, state: 'completed' }) === 1 ? t : undefined;
  }, 'the completed state in the metrics');
  expect(sample(after, 'tidemark_copy_rows_total', { ...m, job: 'meetings' })).toBe(20_000);
  expect(sample(after, 'tidemark_flag_percent', { ...m, flag: 'use_room_types' })).toBe(100);
  for (const phase of ['preflight', 'backup', 'schema', 'copy', 'validate', 'traffic', 'cleanup']) {
    expect(sample(after, 'tidemark_phases_total', { ...m, phase, outcome: 'completed' })).toBe(1);
    expect(sample(after, 'tidemark_phase_duration_seconds', { ...m, phase })).toBeGreaterThanOrEqual(0);
  }
  expect(sample(after, 'tidemark_copy_throttle', { ...m, job: 'meetings', reason: 'none' })).toBe(1);
});
