// Long gated soaks keep their history short: the workflow continues as new and carries its state (soak end, gate
// breaches, compensations) along, so the rollout finishes — or rolls back completely — across runs.
import { TidemarkClient } from '../../src/client';
import { startDevServer, type DevServer } from '../../src/infra/devserver';
import type { ResolvedPlan } from '../../src/plan/types';
import type { RunningWorker } from '../../src/worker';
import { flagPercent, tableExists } from '../helpers/db-assert';
import { eventOf, eventually, Harness, type TestDb } from '../helpers/env';
import { BLUE_CAMERAS_AS_GREEN, blueGreenPlan, exceptAcross, GREEN_CAMERAS, seedBlue } from '../helpers/blue-green';
import { meetingsPlan } from '../helpers/plans';

const h = new Harness();
let server: DevServer;
let worker: RunningWorker;
let client: TidemarkClient;

beforeAll(async () => {
  await h.start({ worker: false });
  // A server that suggests continuing as new after 150 events instead of thousands, so a short soak crosses runs.
  server = await startDevServer({ headless: true, dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': 150 } });
  worker = await h.startWorker({ address: server.address });
  client = await TidemarkClient.connect({ address: server.address, taskQueue: h.taskQueue });
});
afterAll(async () => {
  await client?.close();
  await worker?.shutdown();
  await server?.stop();
  await h.stop();
});

async function gatedSoak(db: TestDb, soakMs: number): Promise<ResolvedPlan> {
  await db.query(`CREATE TABLE app_error_rate (v float8); INSERT INTO app_error_rate VALUES (0.01);`);
  const base = await meetingsPlan(db, { rows: 500 });
  return {
    ...base,
    copy: [base.copy[0]],
    validate: [{ rowCount: { copy: 'meetings' } }],
    traffic: {
      flagIn: 'source',
      flag: 'use_room_types',
      stages: [
        { percent: 10, soak: soakMs, approval: false },
        { percent: 100, soak: 200, approval: false },
      ],
      gates: [
        {
          name: 'error rate',
          sql: 'SELECT v FROM app_error_rate',
          max: 0.05,
          interval: 50,
          timeout: 2000,
          failureLimit: 3,
        },
      ],
    },
    cleanup: undefined,
  };
}

async function runs(workflowId: string): Promise<number> {
  let n = 0;
  for await (const _ of client.client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) n++;
  return n;
}

test('a gated soak spanning several runs completes, with its readings and schedule carried along', async () => {
  const db = await h.db('canok');
  const plan = await gatedSoak(db, 8000);
  const { workflowId } = await client.start(plan, { autoApprove: true });
  const final = await client.waitForEnd(workflowId);
  expect(final.state).toBe('completed');
  expect(await runs(workflowId)).toBeGreaterThanOrEqual(2);
  expect(final.events.some((e) => e.message === 'continued as a new run (history kept short)')).toBe(true);
  expect(final.traffic).toMatchObject({
    percent: 100,
    gates: [expect.objectContaining({ gate: 'error rate', ok: true })],
  });
  // The soak was not restarted by the new run: the 100 % stage began when the 10 % soak was due to end.
  const at = (m: string) => Date.parse(final.events.find((e) => e.message === m)!.at);
  const soaked = at('flag use_room_types at 100%') - at('flag use_room_types at 10%');
  expect(soaked).toBeGreaterThanOrEqual(8000);
  expect(soaked).toBeLessThan(8000 + 5000);
  expect(await flagPercent(db, 'use_room_types')).toBe(100);
});

test('an abort after the workflow continued as new still runs every compensation registered before', async () => {
  const db = await h.db('canabort');
  const plan = await gatedSoak(db, 120_000);
  const { workflowId } = await client.start(plan, { autoApprove: true });
  await eventually(async () => (await runs(workflowId)) >= 2, 'a second run', 60_000, 250);
  expect(await tableExists(db, 'meetings_v2')).toBe(true);
  await client.abort(workflowId, { reason: 'after continue-as-new' });
  const final = await client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  expect(final.compensations.map((c) => [c.phase, c.status])).toEqual([
    ['schema', 'done'],
    ['schema', 'done'],
    ['copy', 'done'],
    ['traffic', 'done'],
  ]);
  expect(await tableExists(db, 'meetings_v2')).toBe(false);
  expect(await flagPercent(db, 'use_room_types')).toBe(0);
});

test('a blue-green applier stopped on an error before a continue-as-new runs again when the operator resumes', async () => {
  const blue = await h.db('canbg_blue');
  const green = await h.db('canbg_green');
  await seedBlue(blue, 300);
  const base = blueGreenPlan(blue, green, {
    stages: [
      { percent: 50, soak: 600_000 },
      { percent: 100, soak: 100 },
    ],
  });
  const gate = { name: 'error rate', sql: 'SELECT 0.01', max: 0.05, interval: 50, timeout: 2000, failureLimit: 3 };
  const plan = { ...base, traffic: { ...base.traffic!, gates: [gate] } };
  const { workflowId } = await client.start(plan, { autoApprove: true });
  await eventOf(client, workflowId, /^flag use_green_database at 50%/, 240_000);
  // Green refuses a change made on blue: the forward applier stops and the migration pauses; the soak's gate
  // readings go on, and the history grows until the workflow continues as new.
  await green.query(`ALTER TABLE cameras ADD CONSTRAINT not_yet CHECK (name <> 'refused on green')`);
  await blue.query(`UPDATE cameras SET name = 'refused on green' WHERE id = 3`);
  await eventOf(client, workflowId, /^applier of cameras \(source → target\) stopped: .*not_yet/, 120_000);
  const before = await runs(workflowId);
  await eventually(async () => (await runs(workflowId)) > before, 'a new run while paused', 120_000, 250);
  expect((await client.status(workflowId)).state).toBe('paused');

  await green.query(`ALTER TABLE cameras DROP CONSTRAINT not_yet`);
  await client.resume(workflowId, { by: 'operator' });
  await eventOf(client, workflowId, /^applier of cameras \(source → target\) started again/, 60_000);
  await eventually(
    async () =>
      (await green.query<{ name: string }>(`SELECT name FROM cameras WHERE id = 3`))[0]?.name === 'refused on green',
    'the change applied to green',
    120_000,
  );
  await client.promote(workflowId, { by: 'operator' });
  const final = await client.waitForEnd(workflowId);
  expect({ state: final.state, error: final.error ?? null }).toEqual({ state: 'completed', error: null });
  expect(await exceptAcross(blue, BLUE_CAMERAS_AS_GREEN, green, GREEN_CAMERAS)).toEqual({ onlyInA: [], onlyInB: [] });
});
