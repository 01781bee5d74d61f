// Long gated soaks keep their history short: the workflow continues as new and carries its state (soak end, gate
// breaches, compensations) along, so the rollout finishes — or rolls back completely — across runs.
import { TidemarkClient } from '../../src/client';
import { startDevServer, type DevServer } from '../../src/infra/devserver';
import type { ResolvedPlan } from '../../src/plan/types';
import type { RunningWorker } from '../../src/worker';
import { flagPercent, tableExists } from '../helpers/db-assert';
import { eventually, Harness, type TestDb } from '../helpers/env';
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
