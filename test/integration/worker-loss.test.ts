// A worker lost in the middle of an activity that does not heartbeat on its own — a rollback's fence, a preflight —
// is noticed within the profile's heartbeat timeout and the activity retried on another worker, not after its
// 15-minute start-to-close timeout. Found by the chaos suite: npm run chaos -- --seed 1028 --runs 1 (an abort in
// validation, the worker SIGKILLed while the rollback ran) and --seed 2000 (the worker SIGKILLed in preflight), each
// with no end within 240 s.
import { Client } from 'pg';
import { quoteTable } from '../../src/db/quote';
import type { ResolvedPlan } from '../../src/plan/types';
import { allTableContents, schemaDump } from '../helpers/db-assert';
import { eventually, Harness } from '../helpers/env';
import { meetingsPlan } from '../helpers/plans';
import { killed, workerProcess } from '../helpers/worker-process';

const h = new Harness();
beforeAll(() => h.start({ worker: false }));
afterAll(() => h.stop());

test('a worker SIGKILLed while the rollback fences the run: another worker finishes the rollback within a minute', async () => {
  const db = await h.db('undoloss');
  const base = await meetingsPlan(db, { rows: 300 });
  const plan: ResolvedPlan = {
    ...base,
    copy: [base.copy[0]],
    validate: [{ rowCount: { copy: 'meetings' } }],
    traffic: { ...base.traffic!, stages: [{ percent: 10, soak: 600_000, approval: false }], gates: [] },
    approvals: [],
    cleanup: undefined,
  };
  const schemaBefore = schemaDump(db);
  const contentsBefore = await allTableContents(db);
  const env = { [db.urlEnv]: db.url };
  let worker = workerProcess(h.client.address, h.taskQueue, env);
  const holder = new Client({ connectionString: db.url });
  holder.on('error', () => undefined);
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: true });
    await eventually(
      async () => (await h.client.status(workflowId)).traffic?.percent === 10,
      'traffic at 10%',
      120_000,
    );
    // The fence writes tidemark.runs: hold it up there, so the rollback's first step is surely running when the worker dies.
    await holder.connect();
    await holder.query('BEGIN');
    await holder.query(`LOCK TABLE ${quoteTable({ schema: 'tidemark', name: 'runs' })} IN EXCLUSIVE MODE`);
    await h.client.abort(workflowId, { by: 'test', reason: 'worker lost mid-rollback' });
    await eventually(
      async () => {
        const [{ n }] = await db.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database()
              AND application_name LIKE 'tidemark%' AND wait_event_type = 'Lock' AND query ~* 'runs'`,
        );
        return n > 0;
      },
      'the fence waiting for its lock',
      60_000,
      50,
    );
    await killed(worker, 'SIGKILL');
    const killedAt = Date.now();
    worker = workerProcess(h.client.address, h.taskQueue, env);
    await holder.query('COMMIT');
    const final = await h.client.waitForEnd(workflowId, undefined, 500);
    expect(final.state).toBe('rolled-back');
    expect(Date.now() - killedAt).toBeLessThan(90_000);
    expect(schemaDump(db)).toBe(schemaBefore);
    expect(await allTableContents(db)).toEqual(contentsBefore);
  } finally {
    await holder.end().catch(() => undefined);
    await killed(worker, 'SIGTERM');
  }
}, 240_000);

test('a worker SIGKILLed during preflight: another worker runs it again and the migration goes on', async () => {
  const db = await h.db('preflightloss');
  const base = await meetingsPlan(db, { rows: 300 });
  const plan: ResolvedPlan = {
    ...base,
    // A check that takes a few seconds, so the worker surely dies while preflight runs it.
    preflight: {
      ...base.preflight,
      checks: [{ name: 'slow check', sql: 'SELECT count(*) FROM pg_sleep(3)', severity: 'warn' }],
    },
    copy: [base.copy[0]],
    validate: [{ rowCount: { copy: 'meetings' } }],
    traffic: undefined,
    approvals: [],
    cleanup: undefined,
  };
  const env = { [db.urlEnv]: db.url };
  let worker = workerProcess(h.client.address, h.taskQueue, env);
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: true });
    await eventually(
      async () => {
        const [{ n }] = await db.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database()
              AND application_name LIKE 'tidemark%' AND query ~ 'pg_sleep'`,
        );
        return n > 0;
      },
      'the slow preflight check running',
      60_000,
      50,
    );
    await killed(worker, 'SIGKILL');
    const killedAt = Date.now();
    worker = workerProcess(h.client.address, h.taskQueue, env);
    const final = await h.client.waitForEnd(workflowId, undefined, 500);
    expect(final.state).toBe('completed');
    expect(Date.now() - killedAt).toBeLessThan(120_000);
  } finally {
    await killed(worker, 'SIGTERM');
  }
}, 240_000);
