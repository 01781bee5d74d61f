// After the flag goes back to 0 an application still has requests in flight on the new path: every write they get
// acknowledged while the rollback runs must be in the old table afterwards. The reverse sync stays until the new
// table itself is dropped, so a late write either reaches the old table or fails — it is never acknowledged and lost.
// A revert of a completed migration undoes the same way, and drops that reverse sync at its end too.
import { Pool } from 'pg';
import type { MigrationStatus } from '../../src/migration/messages';
import type { ResolvedPlan } from '../../src/plan/types';
import { eventually, Harness, type TestDb } from '../helpers/env';
import { meetingsPlan, writePlan } from '../helpers/plans';
import { loadPlan } from '../../src/plan/load';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

/** The meetings plan with its one bidirectional job, the flag straight to 100 %, and no cleanup (the sync stays). */
async function stragglerPlan(db: TestDb, soak: number): Promise<ResolvedPlan> {
  const base = await meetingsPlan(db, { rows: 2000 });
  return {
    ...base,
    copy: [base.copy[0]],
    validate: [{ rowCount: { copy: 'meetings' } }],
    traffic: { flagIn: 'source', flag: 'use_room_types', stages: [{ percent: 100, soak, approval: false }], gates: [] },
    cleanup: undefined,
  };
}

/** Four writers inserting into `table` without looking at the flag, until it is gone; the ids acknowledged. */
function startStragglers(db: TestDb, table = 'meetings_v2') {
  const pool = new Pool({ connectionString: db.url, max: 4 });
  pool.on('error', () => undefined);
  const acknowledged: number[] = [];
  let running = true;
  let next = 500_000;
  const writers = Array.from({ length: 4 }, async () => {
    while (running) {
      const id = next++;
      try {
        await pool.query(
          table === 'meetings_v2'
            ? `INSERT INTO meetings_v2 (id, title, meeting_type, room_type, status, host_id, max_participants, created_at, updated_at)
               VALUES ($1, 'straggler', 'lesson', 'lesson', 'active', gen_random_uuid(), 5, now(), now())`
            : `INSERT INTO ${table} (id, title, meeting_type, host_id) VALUES ($1, 'straggler', 'lesson', gen_random_uuid())`,
          [id],
        );
        acknowledged.push(id);
      } catch {
        // The table is gone (or locked away): this write was never acknowledged.
      }
    }
  });
  return {
    acknowledged,
    async stop() {
      running = false;
      await Promise.all(writers);
      await pool.end();
    },
  };
}

/** Every acknowledged write is in the old table, and no sync trigger or function of tidemark is left. */
async function expectNothingLost(db: TestDb, acknowledged: number[]): Promise<void> {
  expect(acknowledged.length).toBeGreaterThan(20);
  const present = new Set(
    (await db.query<{ id: string }>(`SELECT id FROM meetings WHERE id >= 500000`)).map((r) => Number(r.id)),
  );
  expect(acknowledged.filter((id) => !present.has(id))).toEqual([]);
  await expectNoSyncLeft(db);
}

/** No sync trigger or function of tidemark is left. */
async function expectNoSyncLeft(db: TestDb): Promise<void> {
  const triggers = await db.query(`SELECT tgname FROM pg_trigger WHERE tgname LIKE 'tidemark%'`);
  expect(triggers).toEqual([]);
  const functions = await db.query(
    `SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE nspname = 'tidemark' AND proname LIKE 'tidemark_sync%'`,
  );
  expect(functions).toEqual([]);
}

test('writes that keep landing on the new table during the whole rollback are all in the old table afterwards', async () => {
  const db = await h.db('stragglers');
  const plan = await stragglerPlan(db, 600_000);
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await eventually(
    async () => (await h.client.status(workflowId)).traffic?.percent === 100,
    'traffic at 100%',
    120_000,
  );

  const stragglers = startStragglers(db);
  await eventually(async () => stragglers.acknowledged.length > 20, 'some writes on the new path');
  await h.client.abort(workflowId, { reason: 'back to the old path' });
  const final = await h.client.waitForEnd(workflowId);
  await stragglers.stop();

  expect(final.state).toBe('rolled-back');
  await expectNothingLost(db, stragglers.acknowledged);
});

test('updates and deletes on the new table after its copy is undone still reach the old table: its rows stay until it is dropped', async () => {
  const db = await h.db('stragglerupdates');
  const plan = await stragglerPlan(db, 600_000);
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await eventually(
    async () => (await h.client.status(workflowId)).traffic?.percent === 100,
    'traffic at 100%',
    120_000,
  );
  // A view on the new table makes its schema undo (DROP TABLE) fail: the rollback holds right after the copy's undo,
  // the moment an application's late requests on the new path meet.
  await db.query(`CREATE VIEW meetings_v2_titles AS SELECT id, title FROM meetings_v2`);
  await h.client.abort(workflowId, { reason: 'back to the old path' });
  const held = await eventually(async () => {
    const s = await h.client.status(workflowId);
    return s.paused?.rollbackHeld ? s : undefined;
  }, 'the rollback held on the failed drop');
  expect(
    held.compensations.find((c) => c.phase === 'copy' && c.description.startsWith('drop sync triggers of meetings;')),
  ).toMatchObject({ status: 'done' });

  // Late requests on the new path: an update, a delete and a key change, each acknowledged with one row.
  expect(await db.query(`UPDATE meetings_v2 SET title = 'late update' WHERE id = 10 RETURNING id`)).toHaveLength(1);
  expect(await db.query(`DELETE FROM meetings_v2 WHERE id = 11 RETURNING id`)).toHaveLength(1);
  expect(await db.query(`UPDATE meetings_v2 SET id = 900012 WHERE id = 12 RETURNING id`)).toHaveLength(1);

  // The old path, where the application is back: its write reaches the new table too, so a later write on the new
  // path (to another column) does not carry the row back as it was.
  await db.query(`UPDATE meetings SET title = 'old path during the hold' WHERE id = 30`);
  expect(await db.query(`SELECT title FROM meetings_v2 WHERE id = 30`)).toEqual([
    { title: 'old path during the hold' },
  ]);
  await db.query(`UPDATE meetings_v2 SET max_participants = 99 WHERE id = 30`);

  await db.query(`DROP VIEW meetings_v2_titles`);
  await h.client.resume(workflowId, { by: 'test' });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  const rows = await db.query<{ id: string; title: string }>(
    `SELECT id::text, title FROM meetings WHERE id IN (10, 11, 12, 900012) ORDER BY id`,
  );
  expect(rows).toEqual([
    { id: '10', title: 'late update' },
    { id: '900012', title: expect.any(String) },
  ]);
  expect(await db.query(`SELECT title, max_participants FROM meetings WHERE id = 30`)).toEqual([
    { title: 'old path during the hold', max_participants: 99 },
  ]);
  // Old-path writes after the new table is gone go through (the forward sync replays only while it exists).
  await db.query(`UPDATE meetings SET title = 'after the rollback' WHERE id = 31`);
  await expectNoSyncLeft(db);
});

test('a revert of a completed migration keeps the reverse sync until the new table is gone, then drops it', async () => {
  const db = await h.db('revertstragglers');
  const plan = await stragglerPlan(db, 200);
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  expect((await h.client.waitForEnd(workflowId)).state).toBe('completed');

  const stragglers = startStragglers(db);
  await eventually(async () => stragglers.acknowledged.length > 20, 'some writes on the new path');
  const revert = await h.client.revert(plan, { autoApprove: true });
  let final: MigrationStatus;
  try {
    final = await h.client.waitForEnd(revert.workflowId);
  } finally {
    await stragglers.stop();
  }

  expect(final.error).toBeNull();
  expect(final.state).toBe('completed');
  expect(final.events.map((e) => e.message)).toContain(
    'reverse sync of meetings dropped (kept until the new tables were gone)',
  );
  await expectNothingLost(db, stragglers.acknowledged);
});

test('writes that keep landing on the old table through the cleanup reach the new one or fail: none is left behind in the archive', async () => {
  const db = await h.db('cleanupstragglers');
  const base = await stragglerPlan(db, 200);
  const plan: ResolvedPlan = {
    ...base,
    approvals: ['cleanup'],
    cleanup: { after: 0, archive: ['meetings'], steps: [] },
  };
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await h.approvalPending(workflowId, 'cleanup');

  // A client still on the old path (an old deploy, a cron job) writes to the old table while the cleanup runs.
  const stragglers = startStragglers(db, 'meetings');
  await eventually(async () => stragglers.acknowledged.length > 20, 'some writes on the old path');
  await h.client.approve(workflowId, { by: 'test' });
  let final: MigrationStatus;
  try {
    final = await h.client.waitForEnd(workflowId);
  } finally {
    await stragglers.stop();
  }

  expect(final.state).toBe('completed');
  const present = new Set(
    (await db.query<{ id: string }>(`SELECT id FROM meetings_v2 WHERE id >= 500000`)).map((r) => Number(r.id)),
  );
  expect(stragglers.acknowledged.filter((id) => !present.has(id))).toEqual([]);
  expect(await db.query(`SELECT to_regclass('public.meetings') AS t`)).toEqual([{ t: null }]);
});

test('a target that was there before the migration, empty, is emptied again at the end of the rollback', async () => {
  const db = await h.db('keptarget');
  await db.query(`
    CREATE TABLE orders (id bigint PRIMARY KEY, total numeric NOT NULL);
    INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 500) g;
    CREATE TABLE orders_v2 (id bigint PRIMARY KEY, total numeric NOT NULL);`);
  const plan = loadPlan(
    writePlan(
      {
        name: `kept-target-${db.name.slice(-6)}`,
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        approvals: ['validate'],
        schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
        copy: [{ name: 'orders', from: 'orders', to: 'orders_v2', key: 'id', sync: 'bidirectional' }],
        validate: [{ rowCount: { copy: 'orders' } }],
      },
      { 'up.sql': 'CREATE INDEX orders_v2_total ON orders_v2 (total);', 'down.sql': 'DROP INDEX orders_v2_total;' },
    ),
  );
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await h.approvalPending(workflowId, 'validate');
  expect(await db.query(`SELECT count(*)::int AS n FROM orders_v2`)).toEqual([{ n: 500 }]);
  await h.client.abort(workflowId, { reason: 'test' });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  expect(await db.query(`SELECT count(*)::int AS n FROM orders_v2`)).toEqual([{ n: 0 }]);
  expect(await db.query(`SELECT count(*)::int AS n, sum(total)::text AS t FROM orders`)).toEqual([
    { n: 500, t: '187875.0' },
  ]);
  await expectNoSyncLeft(db);
});
