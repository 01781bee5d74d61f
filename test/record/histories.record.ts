// Records workflow histories from real runs (real Temporal dev server, real PostgreSQL, real activities) into
// test/fixtures/histories/, for the replay test: a change to workflow code that would break a running migration
// then fails a test instead of a production migration. Run with `npm run record-histories` after a deliberate,
// patched change of the workflow (see README, "Changing workflow code").
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TidemarkClient } from '../../src/client';
import { startDevServer, type DevServer } from '../../src/infra/devserver';
import { temporalCli } from '../../src/infra/tools';
import type { ResolvedPlan } from '../../src/plan/types';
import type { RunningWorker } from '../../src/worker';
import { eventOf, eventually, Harness, type TestDb } from '../helpers/env';
import { meetingsPlan } from '../helpers/plans';
import { blueGreenPlan, seedBlue } from '../helpers/blue-green';

const OUT = join(__dirname, '..', 'fixtures', 'histories');
const h = new Harness();
let server: DevServer;
let worker: RunningWorker;
let client: TidemarkClient;

beforeAll(async () => {
  await h.start({ worker: false });
  // Continue-as-new suggested early, so a soak of a few seconds crosses runs.
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

/** Saves every run of the workflow (oldest first) as <name>[-runN].json. */
async function save(name: string, workflowId: string): Promise<void> {
  const runs: string[] = [];
  for await (const w of client.client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) runs.push(w.runId);
  runs.reverse();
  for (const [i, runId] of runs.entries()) {
    // The CLI's JSON is the format Temporal's replayers read.
    const json = execFileSync(
      temporalCli(),
      [
        'workflow',
        'show',
        '--address',
        server.address,
        '--workflow-id',
        workflowId,
        '--run-id',
        runId,
        '--output',
        'json',
      ],
      { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
    );
    const file = runs.length > 1 ? `${name}-run${i + 1}.json` : `${name}.json`;
    writeFileSync(join(OUT, file), json.trimEnd() + '\n');
  }
}

const soaks = (p: ResolvedPlan, ms: number): ResolvedPlan => ({
  ...p,
  traffic: p.traffic && { ...p.traffic, stages: p.traffic.stages.map((s) => ({ ...s, soak: ms })) },
});

async function gateTable(db: TestDb, value: number) {
  await db.query(`CREATE TABLE app_error_rate (v float8 NOT NULL); INSERT INTO app_error_rate VALUES (${value});`);
}

test('a migration through every phase, the archived tables dropped at the end', async () => {
  const db = await h.db('histdone');
  const base = await meetingsPlan(db, { rows: 2000 });
  const plan: ResolvedPlan = { ...soaks(base, 300), cleanup: { ...base.cleanup!, after: 100, dropAfter: 500 } };
  const { workflowId } = await client.start(plan, { autoApprove: true });
  expect((await client.waitForEnd(workflowId)).state).toBe('completed');
  await save('completed', workflowId);
});

test('an abort in the middle of the copy', async () => {
  const db = await h.db('histabort');
  const base = await meetingsPlan(db, { rows: 20_000, approvals: ['copy'] });
  const plan: ResolvedPlan = { ...base, copy: base.copy.map((j) => ({ ...j, parallel: 2 })) };
  const { workflowId } = await client.start(plan, { autoApprove: false });
  await eventually(async () => (await client.status(workflowId)).pendingApproval?.gate === 'copy', 'copy approval');
  await client.throttle(workflowId, { batchSize: 200, delayMs: 50 });
  await client.approve(workflowId, { by: 'recorder' });
  await eventually(async () => (await client.status(workflowId)).copy[0]?.rowsCopied > 1000, 'rows copied', 60_000, 50);
  await client.abort(workflowId, { by: 'recorder', reason: 'abort mid-copy' });
  expect((await client.waitForEnd(workflowId)).state).toBe('rolled-back');
  await save('abort-mid-copy', workflowId);
});

test('a gate breached twice in a row rolls back', async () => {
  const db = await h.db('histgate');
  await gateTable(db, 0.5);
  const base = await meetingsPlan(db, { rows: 1000 });
  const plan: ResolvedPlan = {
    ...soaks(base, 60_000),
    traffic: {
      ...base.traffic!,
      stages: [
        { percent: 10, soak: 60_000, approval: false },
        { percent: 100, soak: 0, approval: false },
      ],
      gates: [
        {
          name: 'error rate',
          sql: 'SELECT v FROM app_error_rate',
          max: 0.05,
          interval: 200,
          timeout: 2000,
          failureLimit: 2,
        },
      ],
    },
  };
  const { workflowId } = await client.start(plan, { autoApprove: true });
  expect((await client.waitForEnd(workflowId)).state).toBe('rolled-back');
  await save('gate-rollback', workflowId);
});

test('a gated soak that continues as new and completes', async () => {
  const db = await h.db('histcan');
  await gateTable(db, 0.01);
  const base = await meetingsPlan(db, { rows: 500 });
  const plan: ResolvedPlan = {
    ...base,
    copy: [base.copy[0]],
    validate: [{ rowCount: { copy: 'meetings' } }],
    traffic: {
      flagIn: 'source',
      flag: 'use_room_types',
      stages: [
        { percent: 10, soak: 15_000, approval: false },
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
  const { workflowId } = await client.start(plan, { autoApprove: true });
  expect((await client.waitForEnd(workflowId)).state).toBe('completed');
  await save('continued-soak', workflowId);
});

test('a migration waiting for approval', async () => {
  const db = await h.db('histwait');
  const base = await meetingsPlan(db, { rows: 200, approvals: ['schema'] });
  const { workflowId } = await client.start(base, { autoApprove: false });
  await eventually(async () => (await client.status(workflowId)).pendingApproval?.gate === 'schema', 'schema approval');
  await client.throttle(workflowId, { delayMs: 10 });
  await save('waiting-approval', workflowId);
  await client.abort(workflowId, { reason: 'recorded' });
  await client.waitForEnd(workflowId);
});

test('the revert of a completed migration, and a read of its ledger', async () => {
  const db = await h.db('histrevert');
  const plan = await meetingsPlan(db, { rows: 300 });
  const { workflowId } = await client.start(plan, { autoApprove: true });
  expect((await client.waitForEnd(workflowId)).state).toBe('completed');
  // The flag is at 100 % and cleanup removed the sync: the revert accepts losing the new path's writes since.
  const revert = await client.revert(plan, { autoApprove: true, discardNewWrites: true });
  expect((await client.waitForEnd(revert.workflowId)).state).toBe('completed');
  await save('revert-completed', revert.workflowId);

  expect((await client.readLedger({ urlEnv: db.urlEnv, migration: plan.name })).length).toBe(2);
  const ledger = await eventually(async () => {
    for await (const w of client.client.workflow.list({ query: `WorkflowType = 'ledgerWorkflow'` }))
      return w.workflowId;
    return undefined;
  }, 'the ledger read listed');
  await save('ledger-read', ledger);
});

test('a blue-green migration whose applier stops on an error, runs again on resume, and completes', async () => {
  const blue = await h.db('histbg_blue');
  const green = await h.db('histbg_green');
  await seedBlue(blue, 300);
  const plan = blueGreenPlan(blue, green, {
    stages: [
      { percent: 50, soak: 600_000 },
      { percent: 100, soak: 100 },
    ],
  });
  const { workflowId } = await client.start(plan, { autoApprove: true });
  await eventOf(client, workflowId, /^flag use_green_database at 50%/, 240_000);
  await green.query(`ALTER TABLE cameras ADD CONSTRAINT not_yet CHECK (name <> 'refused on green')`);
  await blue.query(`UPDATE cameras SET name = 'refused on green' WHERE id = 3`);
  await eventOf(client, workflowId, /^applier of cameras \(source → target\) stopped/, 120_000);
  await green.query(`ALTER TABLE cameras DROP CONSTRAINT not_yet`);
  await client.resume(workflowId, { by: 'recorder' });
  await eventOf(client, workflowId, /^applier of cameras \(source → target\) started again/, 60_000);
  await green.query(`UPDATE cameras SET name = 'written on green' WHERE id = 4`);
  await client.promote(workflowId, { by: 'recorder' });
  expect((await client.waitForEnd(workflowId)).state).toBe('completed');
  await save('blue-green-resumed', workflowId);
});

test('an approval that timed out into a pause, then given: taken, the pause lifted, the migration completes', async () => {
  const db = await h.db('histlate');
  const base = await meetingsPlan(db, { rows: 200, approvals: ['schema'] });
  const plan: ResolvedPlan = {
    ...base,
    approvalTimeout: 1_000,
    onApprovalTimeout: 'pause',
    traffic: base.traffic && { ...base.traffic, stages: base.traffic.stages.map((s) => ({ ...s, approval: false })) },
  };
  const { workflowId } = await client.start(plan, { autoApprove: false });
  await eventually(async () => (await client.status(workflowId)).state === 'paused' || undefined, 'the pause');
  await client.approve(workflowId, { by: 'recorder', gate: 'schema' });
  expect((await client.waitForEnd(workflowId)).state).toBe('completed');
  await save('approval-after-timeout', workflowId);
});

test('a blue-green migration aborted after cut-over, its rollback held on a failed drop, then resumed', async () => {
  const blue = await h.db('histbgheld_blue');
  const green = await h.db('histbgheld_green');
  await seedBlue(blue, 300);
  const plan = blueGreenPlan(blue, green, { stages: [{ percent: 100, soak: 600_000 }] });
  const { workflowId } = await client.start(plan, { autoApprove: true });
  await eventOf(client, workflowId, /^flag use_green_database at 100%/, 240_000);
  await green.query(`CREATE VIEW camera_names AS SELECT id, name FROM cameras`);
  await client.abort(workflowId, { reason: 'recorded' });
  await eventually(async () => (await client.status(workflowId)).paused?.rollbackHeld || undefined, 'the hold');
  await green.query(`UPDATE cameras SET name = 'late on green' WHERE id = 20`);
  await green.query(`DROP VIEW camera_names`);
  await client.resume(workflowId, { by: 'recorder' });
  expect((await client.waitForEnd(workflowId)).state).toBe('rolled-back');
  await save('blue-green-rollback-held', workflowId);
});
