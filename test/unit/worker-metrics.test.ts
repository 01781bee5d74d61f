// The worker's metrics from the workflow's status snapshots: each gate reading, phase end, compensation and rollback
// is counted once however often the same status is published, and gauges follow the latest state.
import { WorkerMetrics, throttleKind } from '../../src/metrics/worker-metrics';
import type { StatusSnapshot } from '../../src/migration/telemetry';

const snap = (over: Partial<StatusSnapshot>): StatusSnapshot => ({
  migration: 'orders-v2',
  workflowId: 'tidemark-orders-v2',
  state: 'running',
  phase: 'traffic',
  phases: [
    { name: 'copy', status: 'completed', startedAt: '2026-01-01T00:00:00.000Z', endedAt: '2026-01-01T00:01:30.000Z' },
    { name: 'traffic', status: 'running', startedAt: '2026-01-01T00:01:30.000Z' },
  ],
  traffic: { flag: 'use_v2', percent: 10, gates: [] },
  compensations: [],
  ...over,
});

const value = async (m: WorkerMetrics, name: string, labels: Record<string, string>) => {
  const metric = (await m.registry.getMetricsAsJSON()).find((x) => x.name === name);
  return metric?.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value;
};

test('readings, phase ends, compensations and rollbacks are counted once; gauges follow the latest status', async () => {
  const m = new WorkerMetrics();
  const breach = { gate: 'errors', value: 0.5, ok: false, at: '2026-01-01T00:02:00.000Z' };
  m.observe(snap({ traffic: { flag: 'use_v2', percent: 10, gates: [breach] } }));
  m.observe(snap({ traffic: { flag: 'use_v2', percent: 10, gates: [breach] } }));
  m.observe(snap({ traffic: { flag: 'use_v2', percent: 10, gates: [{ ...breach, at: '2026-01-01T00:02:30.000Z' }] } }));
  const rolling = snap({
    state: 'rolling-back',
    traffic: { flag: 'use_v2', percent: 0, gates: [{ ...breach, at: '2026-01-01T00:02:30.000Z' }] },
    compensations: [{ id: 'traffic-3', phase: 'traffic', status: 'done' }],
  });
  m.observe(rolling);
  m.observe(rolling);
  m.observe({ ...rolling, state: 'rolled-back' });

  const labels = { migration: 'orders-v2' };
  expect(await value(m, 'tidemark_gate_readings_total', { ...labels, gate: 'errors', result: 'breach' })).toBe(2);
  expect(await value(m, 'tidemark_gate_value', { ...labels, gate: 'errors' })).toBe(0.5);
  expect(await value(m, 'tidemark_phases_total', { ...labels, phase: 'copy', outcome: 'completed' })).toBe(1);
  expect(await value(m, 'tidemark_phase_duration_seconds', { ...labels, phase: 'copy' })).toBe(90);
  expect(await value(m, 'tidemark_compensations_total', { ...labels, phase: 'traffic', outcome: 'done' })).toBe(1);
  expect(await value(m, 'tidemark_rollbacks_total', labels)).toBe(1);
  expect(await value(m, 'tidemark_flag_percent', { ...labels, flag: 'use_v2' })).toBe(0);
  expect(await value(m, 'tidemark_migration_state', { ...labels, state: 'rolled-back' })).toBe(1);
  expect(await value(m, 'tidemark_migration_state', { ...labels, state: 'rolling-back' })).toBe(0);
});

test('throttle reasons become a handful of label values', () => {
  expect(throttleKind(null)).toBe('none');
  expect(throttleKind('paused: maintenance')).toBe('paused');
  expect(throttleKind('operator delay 30ms')).toBe('operator-delay');
  expect(throttleKind('lock conflict (55P03); retrying with 500 rows')).toBe('lock-conflict');
  expect(throttleKind('3 session(s) waiting on locks for over 200ms')).toBe('lock-waits');
  expect(throttleKind('server slow to answer: 40ms vs 2.0ms at best')).toBe('server-slow');
  expect(throttleKind('sharing the server with ~2.0 busy session(s): copying 10% of the time')).toBe('sharing');
});

/** Runs `activityType` through the metrics interceptor; the activity sends `beats` as its heartbeats. */
async function runIntercepted(m: WorkerMetrics, activityType: string, beats: unknown[], during?: () => Promise<void>) {
  const ctx = { info: { activityType, heartbeatDetails: undefined }, heartbeat: () => undefined };
  const inbound = m.interceptor()(ctx as never).inbound!;
  await inbound.execute!({ args: [{ run: { migration: 'orders-v2' } }], headers: {} } as never, async () => {
    for (const b of beats) (ctx as { heartbeat: (d: unknown) => void }).heartbeat(b);
    await during?.();
    return undefined;
  });
}

test('copies across databases are counted like copies within one; the settle wait is a gauge back at 0 when over', async () => {
  const m = new WorkerMetrics();
  const beat = (rowsCopied: number, batches: number) => ({
    job: 'items',
    rowsCopied,
    batches,
    batchSize: 1000,
    throttleReason: null,
  });
  await runIntercepted(m, 'copyRangeAcross', [beat(1000, 1), beat(3000, 3)]);
  const labels = { migration: 'orders-v2', job: 'items' };
  expect(await value(m, 'tidemark_copy_rows_total', labels)).toBe(3000);

  const waiting = { cursor: null, chunks: 0, removed: 0, job: 'items', waitingFor: 'waiting for 2 …' };
  await runIntercepted(m, 'settleCopy', [{ ...waiting, waitingTransactions: 2 }], async () => {
    expect(await value(m, 'tidemark_copy_settle_waiting_transactions', labels)).toBe(2);
  });
  expect(await value(m, 'tidemark_copy_settle_waiting_transactions', labels)).toBe(0);
});

test("a revert's series carry revert-<plan>: the migration's phase and state stay as the migration left them", async () => {
  const m = new WorkerMetrics();
  m.observe(snap({ state: 'completed', phase: 'cleanup', phases: [{ name: 'cleanup', status: 'completed' }] }));
  m.observe(
    snap({
      workflowId: 'tidemark-revert-orders-v2',
      state: 'failed',
      phase: 'preflight',
      phases: [{ name: 'preflight', status: 'failed' }],
      traffic: null,
    }),
  );
  expect(await value(m, 'tidemark_migration_state', { migration: 'orders-v2', state: 'completed' })).toBe(1);
  expect(await value(m, 'tidemark_migration_phase', { migration: 'orders-v2', phase: 'cleanup' })).toBe(1);
  expect(await value(m, 'tidemark_migration_state', { migration: 'orders-v2', state: 'failed' })).toBe(0);
  expect(await value(m, 'tidemark_migration_state', { migration: 'revert-orders-v2', state: 'failed' })).toBe(1);
  expect(await value(m, 'tidemark_migration_phase', { migration: 'revert-orders-v2', phase: 'preflight' })).toBe(1);
});

test("a revert's traffic undo puts the migration's flag gauge back to 0", async () => {
  const m = new WorkerMetrics();
  m.observe(snap({ state: 'completed', traffic: { flag: 'use_v2', percent: 100, gates: [] } }));
  const flag = { migration: 'orders-v2', flag: 'use_v2' };
  expect(await value(m, 'tidemark_flag_percent', flag)).toBe(100);
  const reverting = snap({
    workflowId: 'tidemark-revert-orders-v2',
    state: 'running',
    phase: 'traffic',
    traffic: null,
  });
  m.observe({ ...reverting, compensations: [{ id: 'traffic-1', phase: 'traffic', status: 'running' }] });
  expect(await value(m, 'tidemark_flag_percent', flag)).toBe(100);
  m.observe({ ...reverting, compensations: [{ id: 'traffic-1', phase: 'traffic', status: 'done' }] });
  expect(await value(m, 'tidemark_flag_percent', flag)).toBe(0);
});

test("once the copy phase is over its batch size, duty and latency reading go back to 0, not the last batch's", async () => {
  const m = new WorkerMetrics();
  const beat = {
    job: 'orders',
    rangeIndex: 0,
    cursor: '100',
    rowsCopied: 100,
    estimatedRows: 1000,
    batches: 1,
    batchSize: 5000,
    rowsPerSecond: 50,
    throttleReason: 'sharing the server with ~2.0 busy session(s): copying 30% of the time',
    duty: 0.3,
    latencyIncrease: 0.2,
    lockConflicts: 0,
    lastLockConflict: null,
    paused: false,
    updatedAt: '2026-01-01T00:00:10.000Z',
  };
  (m as unknown as { copyBeat: (m: string, b: typeof beat, l: object) => void }).copyBeat('orders-v2', beat, {
    rows: 0,
    batches: 0,
    at: Date.now(),
  });
  const labels = { migration: 'orders-v2', job: 'orders' };
  const copying = snap({
    phase: 'copy',
    phases: [{ name: 'copy', status: 'running', startedAt: '2026-01-01T00:00:00.000Z' }],
    traffic: null,
  });
  m.observe(copying);
  expect(await value(m, 'tidemark_copy_duty', labels)).toBe(0.3);
  expect(await value(m, 'tidemark_copy_throttle', { ...labels, reason: 'sharing' })).toBe(1);
  m.observe(snap({}));
  expect(await value(m, 'tidemark_copy_duty', labels)).toBe(0);
  expect(await value(m, 'tidemark_copy_batch_size', labels)).toBe(0);
  expect(await value(m, 'tidemark_copy_latency_increase', labels)).toBe(0);
  expect(await value(m, 'tidemark_copy_throttle', { ...labels, reason: 'sharing' })).toBe(0);
});
