// A schema step retried after a lock timeout, or after its worker died mid-step, goes on from where the last attempt
// stopped: a non-transactional script does not run its committed statements again (its CREATE INDEX CONCURRENTLY
// would fail with "already exists" and roll the migration back), a concurrent index build that failed half-way is
// built again, and a session an earlier attempt left running in the server is ended instead of waited for.
import { Client } from 'pg';
import { stepSessionName } from '../../src/phases/schema/resumable';
import { loadPlan } from '../../src/plan/load';
import { eventually, Harness, StopWaiting, type TestDb } from '../helpers/env';
import { writePlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());
jest.setTimeout(300_000);

async function itemsDb(tag: string): Promise<TestDb> {
  const db = await h.db(tag);
  await db.query(`
    CREATE TABLE items (id bigint PRIMARY KEY, val int NOT NULL);
    INSERT INTO items SELECT g, g % 97 FROM generate_series(1, 20000) g;
    CREATE TABLE other (id int PRIMARY KEY); INSERT INTO other VALUES (1);
    CREATE SCHEMA app; CREATE TABLE app.widgets (id bigint PRIMARY KEY, val int NOT NULL);
    INSERT INTO app.widgets SELECT g, g % 89 FROM generate_series(1, 20000) g;`);
  return db;
}

function stepPlan(db: TestDb, up: string, down: string, transactional: boolean, approvals: string[] = []) {
  return loadPlan(
    writePlan(
      {
        name: `retry-${db.name.slice(-6)}`,
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        lockTimeout: '300ms',
        approvals,
        schema: [{ id: '001_items', up: 'up.sql', down: 'down.sql', transactional }],
      },
      { 'up.sql': up, 'down.sql': down },
    ),
  );
}

/** A session of its own, left open by the caller. */
async function session(db: TestDb, sql: string, applicationName?: string): Promise<Client> {
  const c = new Client({ connectionString: db.url, application_name: applicationName });
  c.on('error', () => undefined);
  await c.connect();
  await c.query(sql);
  return c;
}

/** Waits until the step's latest failed attempt failed as `pattern` says. */
const failedAs = (workflowId: string, pattern: RegExp) =>
  eventually(
    async () => {
      const s = await h.client.status(workflowId);
      const live = s.live.find((a) => a.activity === 'applySchemaStep');
      if (s.state === 'rolled-back' || s.state === 'rolling-back') throw new StopWaiting(`rolled back: ${s.error}`);
      return live?.lastFailure && pattern.test(live.lastFailure) ? live : undefined;
    },
    `a failed attempt: ${pattern}`,
    120_000,
  );

/** The attempt each run of activity `type` ended on, from the history. */
async function attemptsOf(workflowId: string, type: string): Promise<number[]> {
  const events = (await (await h.client.handle(workflowId)).fetchHistory()).events ?? [];
  const scheduled = new Set(
    events
      .filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === type)
      .map((e) => String(e.eventId)),
  );
  return events
    .filter((e) => scheduled.has(String(e.activityTaskStartedEventAttributes?.scheduledEventId)))
    .map((e) => e.activityTaskStartedEventAttributes!.attempt!);
}

test('a non-transactional step retried after a lock timeout does not repeat what it committed (its SET again), and builds a half-built index again', async () => {
  const db = await itemsDb('schemaretry');
  const plan = stepPlan(
    db,
    // The SET is the script's own session state: a retry, in another session, needs it again for what follows.
    'SET search_path = app, public;\nALTER TABLE widgets ADD COLUMN note text;\nCREATE INDEX CONCURRENTLY widgets_val_idx ON widgets (val);',
    'DROP INDEX CONCURRENTLY IF EXISTS app.widgets_val_idx;\nALTER TABLE app.widgets DROP COLUMN IF EXISTS note;',
    false,
  );
  // A snapshot older than the build: CREATE INDEX CONCURRENTLY waits for it, times out, and leaves an INVALID index.
  const snapshot = await session(db, 'BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT * FROM other');
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await failedAs(workflowId, /lock timeout.*line 3: CREATE INDEX CONCURRENTLY/);
  await snapshot.end();

  const final = await h.client.waitForEnd(workflowId);
  expect(final.error).toBeNull();
  expect(final.state).toBe('completed');
  expect(
    await db.query(
      `SELECT i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'widgets_val_idx'`,
    ),
  ).toEqual([{ valid: true }]);
  expect(
    await db.query(
      `SELECT table_name FROM information_schema.columns WHERE table_schema = 'app' AND column_name = 'note'`,
    ),
  ).toEqual([{ table_name: 'widgets' }]);
  expect(await db.query(`SELECT count(*)::int AS n FROM tidemark.step_progress`)).toEqual([{ n: 0 }]);
});

test("a session an earlier attempt of the step left running is ended, not waited for: the step's lock is free at once", async () => {
  const db = await itemsDb('schemaorphan');
  const plan = stepPlan(db, 'ALTER TABLE items ADD COLUMN note text;', 'ALTER TABLE items DROP COLUMN note;', true, [
    'schema',
  ]);
  const { workflowId, runId } = await h.client.start(plan, { autoApprove: false });
  await h.approvalPending(workflowId, 'schema');
  // As a killed worker's backend would: named after the step's up, holding the table the step alters.
  const name = stepSessionName({ runKey: runId, stepId: '001_items', direction: 'up' });
  const orphan = await session(db, 'BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE', name);
  const gone = new Promise<void>((resolve) => orphan.on('end', () => resolve()));
  await h.client.approve(workflowId, { by: 'test' });

  const final = await h.client.waitForEnd(workflowId);
  await gone;
  expect(final.error).toBeNull();
  expect(final.state).toBe('completed');
  // On its first attempt: no lock timeout was waited out.
  expect(await attemptsOf(workflowId, 'applySchemaStep')).toEqual([1]);
  expect(
    await db.query(`SELECT count(*)::int AS n FROM information_schema.columns WHERE column_name = 'note'`),
  ).toEqual([{ n: 1 }]);
});

test('a step that times out on a lock names the session it waited for, without its query', async () => {
  const db = await itemsDb('schemablocker');
  const plan = stepPlan(db, 'ALTER TABLE items ADD COLUMN note text;', 'ALTER TABLE items DROP COLUMN note;', true);
  const holder = await session(
    db,
    "BEGIN; SELECT * FROM items WHERE val <> -1 AND 'secret' <> 'x' LIMIT 1",
    'reporting',
  );
  const holderPid = (await holder.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  const failed = await failedAs(
    workflowId,
    new RegExp(
      `lock timeout.*it waited for pid ${holderPid} \\(user \\w+, application "reporting", idle in transaction, transaction open `,
    ),
  );
  expect(failed.lastFailure).not.toContain('secret');
  await holder.end();
  expect((await h.client.waitForEnd(workflowId)).state).toBe('completed');
});

test('a non-transactional step that stopped half-way rolls back with its whole down: drops of what the up never made find nothing, and the rest is undone', async () => {
  const db = await itemsDb('schemahalf');
  // The second index names a column that does not exist: the up stops after the first one.
  const plan = stepPlan(
    db,
    `CREATE INDEX CONCURRENTLY items_val ON items (val);
     CREATE INDEX CONCURRENTLY items_nope ON items (nope);`,
    `DROP INDEX CONCURRENTLY items_nope;
     DROP INDEX CONCURRENTLY items_val;`,
    false,
  );
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  expect(final.error).toMatch(/column "nope" does not exist/);
  const undo = final.compensations.find((c) => c.phase === 'schema');
  expect(undo).toMatchObject({ status: 'done' });
  expect(undo?.description).toMatch(/stopped half-way; 1 statement\(s\) found nothing to undo \(line 1\)/);
  const indexes = await db.query(`SELECT indexname FROM pg_indexes WHERE tablename = 'items' ORDER BY 1`);
  expect(indexes).toEqual([{ indexname: 'items_pkey' }]);
});
