// Rollback: an abort mid-copy (running or paused), an abort mid-traffic and a failed validation all return the
// database to exactly where it started.
import { runCli } from '../helpers/cli';
import { allTableContents, flagPercent, schemaDump, tableExists } from '../helpers/db-assert';
import { eventually, Harness } from '../helpers/env';
import { meetingsPlan, writePlan } from '../helpers/plans';
import { loadPlan } from '../../src/plan/load';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

test('an abort during the traffic phase restores the schema and every table, and puts the flag back to 0', async () => {
  const db = await h.db('abort');
  const plan = await meetingsPlan(db, { rows: 2000, soakMs: 60_000 });
  const schemaBefore = schemaDump(db);
  const contentsBefore = await allTableContents(db);

  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await eventually(async () => (await h.client.status(workflowId)).traffic?.percent === 10, 'flag at 10%');
  expect(await flagPercent(db, 'use_room_types')).toBe(10);
  // Writes keep arriving on the old table while the new path is live; rollback must keep them.
  await db.query(`UPDATE meetings SET title = 'renamed during rollout' WHERE id = 7`);
  contentsBefore['public.meetings'] = JSON.stringify(await db.query(`SELECT * FROM meetings ORDER BY 1`));

  const ack = await h.client.abort(workflowId, { by: 'test', reason: 'error rate too high' });
  expect(ack.accepted).toBe(true);
  const final = await h.client.waitForEnd(workflowId);

  expect(final.state).toBe('rolled-back');
  expect(final.error).toBe('aborted by test: error rate too high');
  expect(final.compensations.map((c) => [c.phase, c.status])).toEqual([
    ['schema', 'done'],
    ['schema', 'done'],
    ['copy', 'done'],
    ['copy', 'done'],
    ['traffic', 'done'],
  ]);
  expect(await flagPercent(db, 'use_room_types')).toBe(0);
  expect(schemaDump(db)).toBe(schemaBefore);
  expect(await allTableContents(db)).toEqual(contentsBefore);
  const history = await db.query<{ status: string }>(`SELECT status FROM tidemark.history WHERE workflow_id = $1`, [
    workflowId,
  ]);
  expect(history.map((r) => r.status)).toEqual(['rolled-back', 'rolled-back']);
});

test('a failing validation assertion rolls the migration back on its own', async () => {
  const db = await h.db('badcheck');
  const base = await meetingsPlan(db, { rows: 500 });
  const plan = {
    ...base,
    validate: [
      { rowCount: { copy: 'meetings' } },
      {
        sql: { name: 'no ended meetings', query: `SELECT count(*) FROM meetings_v2 WHERE status = 'ended'`, expect: 0 },
      },
    ],
  };
  const schemaBefore = schemaDump(db);
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  const final = await h.client.waitForEnd(workflowId);

  expect(final.state).toBe('rolled-back');
  expect(final.phases.find((p) => p.name === 'validate')?.status).toBe('failed');
  expect(final.phases.find((p) => p.name === 'traffic')?.status).toBe('pending');
  expect(final.error).toMatch(/validation failed — no ended meetings: got 125, expected 0/);
  expect(final.validation?.checks.map((c) => [c.check, c.ok])).toEqual([
    ['rowCount meetings', true],
    ['no ended meetings', false],
  ]);
  expect(await tableExists(db, 'meetings_v2')).toBe(false);
  expect(await tableExists(db, 'room_states')).toBe(false);
  expect(schemaDump(db)).toBe(schemaBefore);
});

describe.each([
  ['running', false],
  ['paused', true],
])('an abort while the copy is %s', (_label, pauseFirst) => {
  test('stops every copy range and restores the schema and every table', async () => {
    const db = await h.db(pauseFirst ? 'abortpausedcopy' : 'abortcopy');
    const base = await meetingsPlan(db, { rows: 30_000, approvals: ['copy'] });
    const plan = { ...base, copy: base.copy.map((j) => ({ ...j, parallel: 2 })) };
    const schemaBefore = schemaDump(db);
    const contentsBefore = await allTableContents(db);

    const { workflowId } = await h.client.start(plan, { autoApprove: false });
    await eventually(async () => (await h.client.status(workflowId)).pendingApproval?.gate === 'copy', 'copy approval');
    // Slow enough (2 ranges × 75 batches × 100 ms) that the copy is still running when the abort arrives.
    await h.client.throttle(workflowId, { batchSize: 200, delayMs: 100 });
    await h.client.approve(workflowId, { by: 'test' });
    await eventually(
      async () => (await h.client.status(workflowId)).copy[0]?.rowsCopied > 1000,
      'some rows copied',
      60_000,
      50,
    );
    if (pauseFirst) {
      await h.client.pause(workflowId, { reason: 'look first' });
      await eventually(async () => (await h.client.status(workflowId)).copy[0]?.paused, 'the copy to pause');
    }

    // Through the CLI, as an operator would: accepted, exit 0, and the migration ends rolled back.
    const abort = await runCli(['abort', plan.name, '--reason', 'wrong mapping'], { TIDEMARK_TASK_QUEUE: h.taskQueue });
    expect(abort.stderr).toBe('');
    expect(abort.code).toBe(0);
    expect(abort.stdout).toContain('abort accepted; rolling back');
    expect(abort.stdout).toContain('ROLLED-BACK, phase copy');
    const final = await h.client.waitForEnd(workflowId);
    expect(final.state).toBe('rolled-back');
    expect(final.error).toMatch(/wrong mapping/);
    expect(final.phases.find((p) => p.name === 'copy')?.status).toBe('cancelled');
    expect(final.phases.find((p) => p.name === 'validate')?.status).toBe('pending');
    expect(final.compensations.every((c) => c.status === 'done')).toBe(true);
    expect(schemaDump(db)).toBe(schemaBefore);
    expect(await allTableContents(db)).toEqual(contentsBefore);
    // No range is still writing after the rollback reported done.
    await new Promise((r) => setTimeout(r, 1000));
    expect(await tableExists(db, 'meetings_v2')).toBe(false);
  });
});

test('an abort while a schema step is running leaves nothing of that step behind', async () => {
  const db = await h.db('abortschema');
  await db.query(
    `CREATE TABLE orders (id bigint PRIMARY KEY, total numeric NOT NULL); INSERT INTO orders VALUES (1, 10);`,
  );
  const plan = loadPlan(
    writePlan(
      {
        name: 'orders-slow-step',
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        schema: [{ id: '001_slow', up: 'up.sql', down: 'down.sql' }],
      },
      // A step that takes a while after its DDL: the abort lands while its transaction is open.
      {
        'up.sql': 'CREATE TABLE orders_v2 (id bigint PRIMARY KEY, total numeric NOT NULL);\nSELECT pg_sleep(6);',
        'down.sql': 'DROP TABLE orders_v2;',
      },
    ),
  );
  const schemaBefore = schemaDump(db);
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await eventually(
    async () => {
      const [{ n }] = await db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%pg_sleep(6)%' AND state = 'active' AND pid <> pg_backend_pid()`,
      );
      return n > 0;
    },
    'the step to be running',
    60_000,
    50,
  );
  await h.client.abort(workflowId, { reason: 'not now' });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  // The step was cancelled in the server before it could commit, so its undo found nothing to undo.
  expect(final.compensations.map((c) => [c.description, c.status])).toEqual([
    ['run down.sql (undo 001_slow) — 001_slow: was not applied', 'done'],
  ]);
  // The step's session no longer runs it (cancelled in the server, not left to commit in the background).
  await eventually(async () => {
    const [{ n }] = await db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%pg_sleep(6)%' AND state <> 'idle' AND pid <> pg_backend_pid()`,
    );
    return n === 0;
  }, 'the step to stop running');
  expect(await tableExists(db, 'orders_v2')).toBe(false);
  const history = await db.query<{ status: string }>(`SELECT status FROM tidemark.history WHERE workflow_id = $1`, [
    workflowId,
  ]);
  expect(history.map((r) => r.status)).not.toContain('applied');
  expect(schemaDump(db)).toBe(schemaBefore);
});

test('a schema step failing half-way rolls back, and the error names the step, the line and the statement', async () => {
  const db = await h.db('badstep');
  await db.query(`CREATE TABLE orders (id bigint PRIMARY KEY, total numeric NOT NULL);`);
  const plan = loadPlan(
    writePlan(
      {
        name: 'orders-bad-step',
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        schema: [
          { id: '001_ok', up: 'ok.up.sql', down: 'ok.down.sql' },
          { id: '002_bad', up: 'bad.up.sql', down: 'bad.down.sql' },
        ],
      },
      {
        'ok.up.sql': 'ALTER TABLE orders ADD COLUMN note text;',
        'ok.down.sql': 'ALTER TABLE orders DROP COLUMN note;',
        'bad.up.sql':
          'CREATE TABLE orders_v2 (id bigint PRIMARY KEY);\n\nINSERT INTO orders_v2 SELECT id FROM orders_old;\n',
        'bad.down.sql': 'DROP TABLE IF EXISTS orders_v2;',
      },
    ),
  );
  const schemaBefore = schemaDump(db);
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  expect(final.error).toBe(
    'schema step 002_bad (up): relation "orders_old" does not exist (line 3: INSERT INTO orders_v2 SELECT id FROM orders_old) | code 42P01',
  );
  expect(schemaDump(db)).toBe(schemaBefore);
});
