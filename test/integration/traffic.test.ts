// Traffic: metric gates that roll back by themselves or pause when unreadable, the demo service rolling out and back
// with no write lost, rollback after cut-over (even once the old table is archived), and multi-day soaks on the
// time-skipping test server.
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, DefaultLogger, Worker } from '@temporalio/worker';
import { join } from 'node:path';
import { Pool } from 'pg';
import { createActivities } from '../../src/phases/activities';
import { PoolRegistry } from '../../src/db/pool';
import { temporalTestServer } from '../../src/infra/tools';
import { createLogger } from '../../src/logger';
import { loadPlan } from '../../src/plan/load';
import type { Gate, ResolvedPlan } from '../../src/plan/types';
import { WORKFLOW_TYPE } from '../../src/migration/messages';
import { SEARCH_ATTRIBUTES } from '../../src/migration/search-attributes';
import { exceptBothWays, flagPercent, schemaDump, tableExists } from '../helpers/db-assert';
import { eventually, Harness, type TestDb } from '../helpers/env';
import { meetingsPlan } from '../helpers/plans';
import { driveService } from '../helpers/service-load';
import { WorkerMetrics } from '../../src/metrics/worker-metrics';
import { MEETINGS_AS_V2, V2_COLUMNS } from '../helpers/writers';

const { createDemoService, errorRateSql } = require('../../examples/demo-service/server.js');

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

const gate = (g: Partial<Gate> & { name: string }): Gate =>
  ({ interval: 300, timeout: 2000, failureLimit: 2, ...g }) as Gate;

/** The meetings migration with gates and stages of our choosing; room_states left out (a cache, not under test). */
async function gatedPlan(
  db: TestDb,
  stages: { percent: number; soak: number }[],
  gates: Gate[],
  cleanup?: ResolvedPlan['cleanup'],
): Promise<ResolvedPlan> {
  const base = await meetingsPlan(db, { rows: 3000 });
  return {
    ...base,
    copy: [base.copy[0]],
    validate: [{ rowCount: { copy: 'meetings' } }, { checksum: { copy: 'meetings', chunkSize: 1000 } }],
    traffic: {
      flag: 'use_room_types',
      flagIn: 'source',
      stages: stages.map((s) => ({ ...s, approval: false })),
      gates,
    },
    cleanup,
  };
}

test('a gate breached failureLimit times in a row rolls back on its own, with the reading in status and history', async () => {
  const db = await h.db('gatebreach');
  await db.query(`CREATE TABLE app_error_rate (v float8 NOT NULL); INSERT INTO app_error_rate VALUES (0.01);`);
  const plan = await gatedPlan(
    db,
    [
      { percent: 10, soak: 120_000 },
      { percent: 100, soak: 1000 },
    ],
    [gate({ name: 'error rate', sql: 'SELECT v FROM app_error_rate', max: 0.05 })],
  );
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await eventually(
    async () => (await h.client.status(workflowId)).traffic?.gates[0]?.ok === true,
    'a good gate reading',
  );
  await db.query(`UPDATE app_error_rate SET v = 0.5`);
  const final = await h.client.waitForEnd(workflowId);

  expect(final.state).toBe('rolled-back');
  expect(final.error).toBe('gate "error rate" breached 2 time(s) in a row: read 0.5, max 0.05, at 10%');
  expect(final.traffic?.gates[0]).toMatchObject({ gate: 'error rate', value: 0.5, ok: false, consecutiveBreaches: 2 });
  expect(await flagPercent(db, 'use_room_types')).toBe(0);
  expect(await tableExists(db, 'meetings_v2')).toBe(false);
  const history = await (await h.client.handle(workflowId)).fetchHistory();
  const failure = history.events!.find((e) => e.workflowExecutionFailedEventAttributes)!
    .workflowExecutionFailedEventAttributes!.failure!;
  expect(failure.message).toContain('read 0.5, max 0.05');
});

test('a gate that cannot be read pauses the rollout at its percentage and waits for a human', async () => {
  const db = await h.db('gateunread');
  const plan = await gatedPlan(
    db,
    [
      { percent: 10, soak: 1500 },
      { percent: 100, soak: 500 },
    ],
    [gate({ name: 'latency', sql: 'SELECT p99 FROM app_latency', max: 250 })],
  );
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  const paused = await eventually(async () => {
    const s = await h.client.status(workflowId);
    return s.state === 'paused' ? s : undefined;
  }, 'the rollout to pause');
  expect(paused.paused?.reason).toMatch(/^gate "latency" could not be read: .*relation "app_latency" does not exist/);
  expect(paused.traffic).toMatchObject({ percent: 10 });
  expect(paused.traffic?.gates[0]).toMatchObject({ gate: 'latency', value: null, ok: null });
  // It stays there: the soak runs out (its end no longer shown) and the flag does not move on.
  const held = await eventually(async () => {
    const s = await h.client.status(workflowId);
    return s.traffic?.soakEndsAt === null ? s : undefined;
  }, 'the soak to run out');
  expect(held).toMatchObject({ state: 'paused', traffic: { percent: 10 } });
  expect(await flagPercent(db, 'use_room_types')).toBe(10);

  await db.query(`CREATE TABLE app_latency (p99 float8); INSERT INTO app_latency VALUES (120);`);
  await h.client.resume(workflowId, { by: 'oncall' });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('completed');
  expect(await flagPercent(db, 'use_room_types')).toBe(100);
});

test('a gate breaching at every reading rolls back though no soak reads it twice: the reading before the move counts, and the flag never leaves 10 %', async () => {
  const db = await h.db('gatespan');
  // Each stage's soak holds one reading of the gate (the first comes 500 ms in, the next would come after the soak);
  // the reading every gate gets before the flag moves up is the second breach in a row.
  const plan = await gatedPlan(
    db,
    [
      { percent: 10, soak: 700 },
      { percent: 50, soak: 700 },
      { percent: 100, soak: 700 },
    ],
    [gate({ name: 'error rate', sql: 'SELECT 0.5::float8', max: 0.05, interval: 500 })],
  );
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  expect(final.error).toBe('gate "error rate" breached 2 time(s) in a row: read 0.5, max 0.05, at 10%');
  const flags = final.events.map((e) => e.message).filter((m) => /^flag use_room_types at/.test(m));
  expect(flags).toEqual(['flag use_room_types at 10%']);
  expect(await flagPercent(db, 'use_room_types')).toBe(0);
});

test('a gate that cannot be read pauses the rollout, and the other gates are still read: a breach meanwhile rolls back', async () => {
  const db = await h.db('gateunreadother');
  await db.query(`CREATE TABLE app_error_rate (v float8 NOT NULL); INSERT INTO app_error_rate VALUES (0.01);`);
  const plan = await gatedPlan(
    db,
    [
      { percent: 10, soak: 600_000 },
      { percent: 100, soak: 500 },
    ],
    [
      gate({ name: 'latency', sql: 'SELECT p99 FROM app_latency', max: 250 }),
      gate({ name: 'error rate', sql: 'SELECT v FROM app_error_rate', max: 0.05 }),
    ],
  );
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  const paused = await eventually(async () => {
    const s = await h.client.status(workflowId);
    return s.state === 'paused' ? s : undefined;
  }, 'the rollout to pause');
  expect(paused.paused?.reason).toMatch(/^gate "latency" could not be read/);
  // The error rate is read again after the pause began…
  await eventually(async () => {
    const r = (await h.client.status(workflowId)).traffic?.gates.find((g) => g.gate === 'error rate');
    return r?.ok === true && r.at > paused.paused!.at;
  }, 'a reading of the other gate while paused');
  // …so its breach rolls back, with nobody there to resume.
  await db.query(`UPDATE app_error_rate SET v = 0.5`);
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  expect(final.error).toBe('gate "error rate" breached 2 time(s) in a row: read 0.5, max 0.05, at 10%');
  expect(await flagPercent(db, 'use_room_types')).toBe(0);
});

test('a pause given while a stage waits for approval holds the stage once it is approved, until resume', async () => {
  const db = await h.db('gateapprovepause');
  const base = await gatedPlan(
    db,
    [
      { percent: 10, soak: 200 },
      { percent: 50, soak: 200 },
    ],
    [],
  );
  const plan: ResolvedPlan = {
    ...base,
    approvals: [],
    traffic: { ...base.traffic!, stages: base.traffic!.stages.map((s, i) => ({ ...s, approval: i === 1 })) },
  };
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await h.approvalPending(workflowId, 'traffic:50%');
  // A throttle now is accepted, and says it has nothing left to slow down.
  expect((await h.client.throttle(workflowId, { delayMs: 10 })).message).toBe(
    'batch size adaptive, delay 10ms (the copy is over: this changes nothing now)',
  );
  await h.client.pause(workflowId, { by: 'oncall', reason: 'hold on' });
  await h.client.approve(workflowId, { by: 'lead' });
  // The approval's workflow task is complete once approve answers: what it scheduled is in the history by then.
  const flagWrites = async () =>
    ((await (await h.client.handle(workflowId)).fetchHistory()).events ?? []).filter(
      (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'setFlag',
    ).length;
  expect(await flagWrites()).toBe(1);
  expect(await h.client.status(workflowId)).toMatchObject({ state: 'paused', traffic: { percent: 10 } });
  expect(await flagPercent(db, 'use_room_types')).toBe(10);
  await h.client.resume(workflowId, { by: 'oncall' });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('completed');
  expect(await flagWrites()).toBe(2);
  expect(await flagPercent(db, 'use_room_types')).toBe(50);
});

test('the demo service: writers on both paths at 50 % keep the tables identical; injected errors roll back by themselves; no write is lost', async () => {
  const db = await h.db('demosvc');
  const plan = await gatedPlan(
    db,
    [
      { percent: 10, soak: 1500 },
      { percent: 50, soak: 120_000 },
      { percent: 100, soak: 60_000 },
    ],
    [gate({ name: 'new-path error rate', sql: errorRateSql(3), max: 0.05, interval: 500, failureLimit: 2 })],
  );
  const pool = new Pool({ connectionString: db.url, max: 8 });
  const service = await createDemoService({ pool });
  const flagChanges: { percentage: number; at: number }[] = [];
  service.flags.on('change', (c: { percentage: number }) =>
    flagChanges.push({ percentage: c.percentage, at: Date.now() }),
  );
  const load = driveService(service.port, { maxId: () => 3000 });
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: true });
    await eventually(
      async () => (await h.client.status(workflowId)).traffic?.percent === 50,
      'the rollout at 50%',
      120_000,
    );
    await eventually(async () => service.flags.percentage('use_room_types') === 50, 'the service to see 50%');
    await eventually(
      async () => (load.stats.byPath.new ?? 0) > 20 && (load.stats.byPath.old ?? 0) > 20,
      'writes on both paths',
      60_000,
      50,
    );
    // Both paths take writes; both tables hold the same rows.
    expect(await exceptBothWays(db, MEETINGS_AS_V2, V2_COLUMNS)).toEqual({ onlyInA: 0, onlyInB: 0 });

    await fetch(`http://127.0.0.1:${service.port}/admin/failures`, {
      method: 'POST',
      body: JSON.stringify({ rate: 0.5 }),
    });
    const final = await h.client.waitForEnd(workflowId);
    expect(final.state).toBe('rolled-back');
    expect(final.error).toMatch(
      /^gate "new-path error rate" breached 2 time\(s\) in a row: read 0\.\d+, max 0\.05, at 50%$/,
    );
    // The service's reader followed the flag back to 0 (how fast: bench/rollback).
    await eventually(async () => service.flags.percentage('use_room_types') === 0, 'the reader to see 0%', 30_000, 20);
    expect(flagChanges.map((c) => c.percentage)).toEqual([10, 50, 0]);
    // A few more writes once the application is back on the old path.
    const okBefore = load.stats.ok;
    await eventually(async () => load.stats.ok >= okBefore + 5, 'writes on the old path again', 60_000, 20);
  } finally {
    await load.stop();
    await service.close();
  }
  // Every write the service acknowledged, on either path, is in the old table the application is back on.
  expect(load.acknowledged.size).toBeGreaterThan(50);
  const titles = new Map(
    (await db.query<{ id: string; title: string }>(`SELECT id, title FROM meetings`)).map((r) => [
      Number(r.id),
      r.title,
    ]),
  );
  const lost = [...load.acknowledged].filter(([id, title]) => titles.get(id) !== title);
  expect(lost).toEqual([]);
  await pool.end();
});

test('abort after cut-over, with the old table already archived: traffic goes back and keeps every write made on the new path', async () => {
  const db = await h.db('cutover');
  const plan = await gatedPlan(db, [{ percent: 100, soak: 1000 }], [], {
    after: 0,
    archive: ['meetings'],
    dropAfter: 3_600_000,
  });
  const pool = new Pool({ connectionString: db.url, max: 8 });
  const service = await createDemoService({ pool });
  const schemaBefore = schemaDump(db);
  const load = driveService(service.port, { maxId: () => 3000, pauseMs: 5 });
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: true });
    const waiting = await eventually(
      async () => {
        const s = await h.client.status(workflowId);
        return s.waitingUntil?.what === 'drop of archived tables' ? s : undefined;
      },
      'the archive drop wait',
      120_000,
    );
    expect(waiting.phases.find((p) => p.name === 'cleanup')?.status).toBe('running');
    expect(await tableExists(db, 'tidemark_archive.meetings')).toBe(true);
    await eventually(async () => service.flags.percentage('use_room_types') === 100, 'the service at 100%');
    // The new path keeps creating meetings from meetings_id_seq: archiving the old table left its sequence in place.
    const [{ seq }] = await db.query<{ seq: string }>(`SELECT to_regclass('public.meetings_id_seq')::text AS seq`);
    expect(seq).toBe('meetings_id_seq');
    const failedBefore = load.stats.failed;
    const newBefore = load.stats.byPath.new ?? 0;
    await eventually(
      async () => (load.stats.byPath.new ?? 0) - newBefore > 50,
      '50 more writes on the new path',
      60_000,
      50,
    );
    expect(load.stats.failed - failedBefore).toBe(0);

    await h.client.abort(workflowId, { reason: 'new path misbehaves after cut-over' });
    const final = await h.client.waitForEnd(workflowId);
    expect(final.state).toBe('rolled-back');
    expect(await tableExists(db, 'meetings')).toBe(true);
    expect(await tableExists(db, 'meetings_v2')).toBe(false);
    await eventually(async () => service.flags.percentage('use_room_types') === 0, 'the reader to see 0%', 30_000, 20);
    // The schema is as before, the sequence owned by meetings.id again included.
    expect(schemaDump(db)).toBe(schemaBefore);
  } finally {
    await load.stop();
    await service.close();
  }
  const titles = new Map(
    (await db.query<{ id: string; title: string }>(`SELECT id, title FROM meetings`)).map((r) => [
      Number(r.id),
      r.title,
    ]),
  );
  const lost = [...load.acknowledged].filter(([id, title]) => titles.get(id) !== title);
  expect(load.acknowledged.size).toBeGreaterThan(50);
  expect(lost).toEqual([]);
  // Archive, trigger changes and the move back take their locks in the application's order: no request failed.
  expect(load.stats.failed).toBe(0);
  await pool.end();
});

test('the demo service example plan, as shipped (soaks shortened), completes while the service takes reads and writes', async () => {
  const db = await h.db('demoplan');
  const base = await meetingsPlan(db, { rows: 3000 });
  const example = loadPlan(join(__dirname, '..', '..', 'examples', 'demo-service', 'plan.yaml'));
  const plan: ResolvedPlan = {
    ...example,
    name: `demo-plan-${db.name.replace(/_/g, '-')}`,
    database: { urlEnv: db.urlEnv },
    approvals: [],
    backup: base.backup,
    traffic: {
      ...example.traffic!,
      stages: example.traffic!.stages.map((st) => ({ ...st, soak: 700 })),
      gates: example.traffic!.gates.map((g) => ({ ...g, interval: 300 })),
    },
    cleanup: { ...example.cleanup!, after: 100, dropAfter: undefined },
  };
  const pool = new Pool({ connectionString: db.url, max: 8 });
  const service = await createDemoService({ pool });
  const load = driveService(service.port, { maxId: () => 3000, pauseMs: 2 });
  let final;
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: true });
    final = await h.client.waitForEnd(workflowId);
  } finally {
    await load.stop();
    await service.close();
    await pool.end();
  }
  expect(final.error).toBeNull();
  expect(final.state).toBe('completed');
  expect(final.validation?.checks.every((c) => c.ok)).toBe(true);
  expect(load.stats.ok).toBeGreaterThan(100);
  // room_states followed every meeting the service created or changed while it was copied.
  expect(
    await exceptBothWays(
      db,
      `SELECT id::text FROM tidemark_archive.meetings WHERE status = 'active'`,
      `SELECT room_id FROM room_states`,
    ),
  ).toEqual({ onlyInA: 0, onlyInB: 0 });
  // A whole plan, copy to cleanup, beside a service driven flat out: with both cores busy it took over 3 minutes.
}, 420_000);

test('multi-day soaks, a two-day retention delay and a week before the drop run in seconds on the time-skipping server', async () => {
  const db = await h.db('timeskip');
  const DAY = 86_400_000;
  const plan = await gatedPlan(
    db,
    [
      { percent: 10, soak: 2 * DAY },
      { percent: 50, soak: 3 * DAY },
      { percent: 100, soak: 5 * DAY },
    ],
    [],
    { after: 2 * DAY, archive: ['meetings'], dropAfter: 7 * DAY },
  );
  const env = await TestWorkflowEnvironment.createTimeSkipping({
    server: { executable: { type: 'existing-path', path: temporalTestServer() } },
  });
  try {
    await env.connection.operatorService.addSearchAttributes({
      namespace: 'default',
      searchAttributes: Object.fromEntries(SEARCH_ATTRIBUTES.map((s) => [s.name, 2])),
    });
    const worker = await Worker.create({
      connection: env.nativeConnection,
      taskQueue: 'timeskip',
      workflowBundle: await bundleWorkflowCode({
        workflowsPath: require.resolve('../../src/migration'),
        logger: new DefaultLogger('WARN'),
      }),
      activities: createActivities({ pools: new PoolRegistry(h.env), logger: createLogger({ level: 'warn' }) }),
      sinks: new WorkerMetrics().sinks(),
    });
    const t0 = Date.now();
    const final = await worker.runUntil(async () => {
      const handle = await env.client.workflow.start(WORKFLOW_TYPE, {
        taskQueue: 'timeskip',
        workflowId: `tidemark-${plan.name}`,
        args: [{ plan, options: { autoApprove: true } }],
      });
      return handle.result();
    });
    const wallMs = Date.now() - t0;
    expect(final.state).toBe('completed');
    // 19 days of workflow time…
    expect(Date.parse(final.endedAt!) - Date.parse(final.startedAt)).toBeGreaterThanOrEqual(19 * DAY);
    // …in a few seconds of wall time.
    expect(wallMs).toBeLessThan(60_000);
    expect(await tableExists(db, 'tidemark_archive.meetings')).toBe(false);
    expect(await flagPercent(db, 'use_room_types')).toBe(100);
  } finally {
    await env.teardown();
  }
});
