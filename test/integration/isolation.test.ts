// Migrations never interfere: sync objects belong to one migration run (two plans whose jobs share a name get their
// own triggers and functions), one migration's cleanup removes only its own, and a migration refuses to start on a
// table another unfinished migration syncs, copies into or archives.
import { loadPlan } from '../../src/plan/load';
import { Harness, type TestDb } from '../helpers/env';
import { writePlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

/** A plan copying `table` into `<table>_v2` with a job named `job`, forward sync, optionally a cleanup. */
function planFor(db: TestDb, name: string, table: string, job: string, cleanup = false) {
  return loadPlan(
    writePlan(
      {
        name,
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        schema: [{ id: `001_${table}_v2`, up: 'up.sql', down: 'down.sql' }],
        copy: [{ name: job, from: table, to: `${table}_v2`, key: 'id', sync: 'forward' }],
        ...(cleanup ? { cleanup: { after: '0s' } } : {}),
      },
      {
        'up.sql': `CREATE TABLE ${table}_v2 (id bigint PRIMARY KEY, v text);`,
        'down.sql': `DROP TABLE ${table}_v2;`,
      },
    ),
  );
}

async function completed(plan: ReturnType<typeof loadPlan>) {
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  return h.client.waitForEnd(workflowId);
}

test('two migrations with a job of the same name each keep their own sync: writes never cross between them', async () => {
  const db = await h.db('isolation');
  await db.query(`
    CREATE TABLE t1 (id bigint PRIMARY KEY, v text); INSERT INTO t1 SELECT g, 't1 ' || g FROM generate_series(1, 100) g;
    CREATE TABLE t2 (id bigint PRIMARY KEY, v text); INSERT INTO t2 SELECT g, 't2 ' || g FROM generate_series(1, 100) g;`);
  // No cleanup: both leave their sync in place (the tables stay in step), as a plan without cleanup does.
  expect((await completed(planFor(db, 'first', 't1', 'orders'))).state).toBe('completed');
  expect((await completed(planFor(db, 'second', 't2', 'orders'))).state).toBe('completed');

  await db.query(`INSERT INTO t1 VALUES (101, 'new in t1')`);
  await db.query(`UPDATE t1 SET v = 'changed in t1' WHERE id = 1`);
  await db.query(`TRUNCATE t1`);
  expect(await db.query(`SELECT count(*)::int AS n FROM t1_v2`)).toEqual([{ n: 0 }]);
  // t2's copy saw none of it.
  expect(
    await db.query(`SELECT count(*)::int AS n, count(*) FILTER (WHERE v LIKE 't2 %')::int AS own FROM t2_v2`),
  ).toEqual([{ n: 100, own: 100 }]);
  await db.query(`UPDATE t2 SET v = 'changed in t2' WHERE id = 2`);
  expect(await db.query(`SELECT v FROM t2_v2 WHERE id = 2`)).toEqual([{ v: 'changed in t2' }]);
  const fns = await db.query<{ proname: string }>(
    `SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE nspname = 'tidemark' AND proname LIKE 'tidemark_sync_orders_%' ORDER BY 1`,
  );
  expect(fns).toHaveLength(2);
});

test("a migration's cleanup drops only its own sync; another migration on a held table is refused, naming the holder", async () => {
  const db = await h.db('claims');
  await db.query(`
    CREATE TABLE a (id bigint PRIMARY KEY, v text); INSERT INTO a SELECT g, 'a' FROM generate_series(1, 50) g;
    CREATE TABLE b (id bigint PRIMARY KEY, v text); INSERT INTO b SELECT g, 'b' FROM generate_series(1, 50) g;`);
  expect((await completed(planFor(db, 'keeps-sync', 'b', 'a-b'))).state).toBe('completed');
  // Same job name but for the '-': the two slug alike and still get their own objects.
  expect((await completed(planFor(db, 'cleans-up', 'a', 'a_b', true))).state).toBe('completed');
  // The cleanup of 'cleans-up' removed its triggers on a; those of 'keeps-sync' on b still work.
  await db.query(`INSERT INTO a VALUES (51, 'not synced any more'); INSERT INTO b VALUES (51, 'still synced')`);
  expect(await db.query(`SELECT count(*)::int AS n FROM a_v2 WHERE id = 51`)).toEqual([{ n: 0 }]);
  expect(await db.query(`SELECT v FROM b_v2 WHERE id = 51`)).toEqual([{ v: 'still synced' }]);

  // b is still synced by keeps-sync: a new migration of b is refused before it changes anything.
  const refused = await completed(planFor(db, 'another-b', 'b', 'b3'));
  expect(refused.state).toBe('rolled-back');
  expect(refused.error).toContain('preflight failed');
  expect(refused.error).toContain('migration keeps-sync (tidemark-keeps-sync) syncs b (copy job a-b)');
  expect(refused.events.at(-1)?.message).toBe('ended: nothing was changed');
  // a is free again: a new migration of it runs.
  await db.query(`DROP TABLE a_v2`);
  expect((await completed(planFor(db, 'again-a', 'a', 'a_b'))).state).toBe('completed');

  // The same plan started again is held back by its own earlier run, which cannot be aborted: the way out is named.
  const { workflowId } = await h.client.start(planFor(db, 'keeps-sync', 'b', 'a-b'), {
    autoApprove: true,
    rerun: true,
  });
  const rerun = await h.client.waitForEnd(workflowId);
  expect(rerun.state).toBe('rolled-back');
  expect(rerun.error).toContain(
    'migration keeps-sync (tidemark-keeps-sync) syncs b (copy job a-b): an earlier run of this plan still holds it',
  );
  expect(rerun.error).toContain('tidemark revert keeps-sync');
});

test('two migrations that both passed preflight on one table: the first to install its sync holds it, the other is refused at its install and rolls back', async () => {
  const db = await h.db('claims_race');
  await db.query(
    `CREATE TABLE c (id bigint PRIMARY KEY, v text); INSERT INTO c SELECT g, 'c' FROM generate_series(1, 50) g;`,
  );
  // The first waits for approval of its copy, its preflight passed: nothing holds c yet.
  const waiting = planFor(db, 'waits', 'c', 'c-w');
  const { workflowId } = await h.client.start({ ...waiting, approvals: ['copy'] }, { autoApprove: false });
  await h.approvalPending(workflowId, 'copy');
  // Meanwhile another migration of c runs to the end and keeps its sync (no cleanup).
  const other = loadPlan(
    writePlan(
      {
        name: 'gets-there-first',
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        schema: [{ id: '001_c_v3', up: 'up.sql', down: 'down.sql' }],
        copy: [{ name: 'c-f', from: 'c', to: 'c_v3', key: 'id', sync: 'forward' }],
      },
      { 'up.sql': 'CREATE TABLE c_v3 (id bigint PRIMARY KEY, v text);', 'down.sql': 'DROP TABLE c_v3;' },
    ),
  );
  expect((await completed(other)).state).toBe('completed');

  await h.client.approve(workflowId, { by: 'test' });
  const refused = await h.client.waitForEnd(workflowId);
  expect(refused.state).toBe('rolled-back');
  expect(refused.error).toContain('migration gets-there-first (tidemark-gets-there-first) syncs c (copy job c-f)');
  // Its schema step is undone, and the other migration's sync still works.
  expect(await db.query(`SELECT to_regclass('c_v2') AS t`)).toEqual([{ t: null }]);
  await db.query(`INSERT INTO c VALUES (51, 'after the refusal')`);
  expect(await db.query(`SELECT v FROM c_v3 WHERE id = 51`)).toEqual([{ v: 'after the refusal' }]);
  const triggers = await db.query<{ tgname: string }>(
    `SELECT tgname FROM pg_trigger WHERE tgrelid = 'c'::regclass AND NOT tgisinternal ORDER BY 1`,
  );
  // Only the first migration's triggers are on c.
  expect(triggers.length).toBeGreaterThan(0);
  expect(triggers.filter((t) => !/^tidemark_sync_c_f_/.test(t.tgname))).toEqual([]);
});

test('an archive whose table another migration started syncing after this one passed preflight is refused, and the table stays where it is', async () => {
  const db = await h.db('claims_archive');
  await db.query(
    `CREATE TABLE d (id bigint PRIMARY KEY, v text); INSERT INTO d SELECT g, 'd' FROM generate_series(1, 20) g;`,
  );
  const archiving = loadPlan(
    writePlan({
      name: 'archives-d',
      database: { urlEnv: db.urlEnv },
      backup: { enabled: false },
      approvals: ['cleanup'],
      cleanup: { archive: ['d'] },
    }),
  );
  const { workflowId } = await h.client.start(archiving, { autoApprove: false });
  await h.approvalPending(workflowId, 'cleanup');
  expect((await completed(planFor(db, 'syncs-d', 'd', 'd-s'))).state).toBe('completed');

  await h.client.approve(workflowId, { by: 'test' });
  const refused = await h.client.waitForEnd(workflowId);
  expect(refused.state).toBe('rolled-back');
  expect(refused.error).toContain('archive: migration syncs-d (tidemark-syncs-d) syncs d (copy job d-s)');
  expect(await db.query(`SELECT to_regclass('public.d')::text AS t`)).toEqual([{ t: 'd' }]);
  await db.query(`INSERT INTO d VALUES (21, 'still synced')`);
  expect(await db.query(`SELECT v FROM d_v2 WHERE id = 21`)).toEqual([{ v: 'still synced' }]);
});

test('a schema step on a table another migration holds is refused at preflight, naming the holder: its sync keeps working', async () => {
  const db = await h.db('claims_schema');
  await db.query(
    `CREATE TABLE e (id bigint PRIMARY KEY, v text); INSERT INTO e SELECT g, 'e' FROM generate_series(1, 20) g;`,
  );
  expect((await completed(planFor(db, 'holds-e', 'e', 'e-h'))).state).toBe('completed');
  // A rename of the synced column, and a CREATE TABLE IF NOT EXISTS of the holder's copy target (its down drops it).
  const scripts = {
    rename: ['ALTER TABLE e RENAME COLUMN v TO w;', 'ALTER TABLE e RENAME COLUMN w TO v;'],
    recreate: ['CREATE TABLE IF NOT EXISTS public.e_v2 (id bigint PRIMARY KEY, v text);', 'DROP TABLE e_v2;'],
  };
  for (const [name, [up, down]] of Object.entries(scripts)) {
    const plan = loadPlan(
      writePlan(
        {
          name: `${name}-e`,
          database: { urlEnv: db.urlEnv },
          backup: { enabled: false },
          schema: [{ id: `001_${name}`, up: 'up.sql', down: 'down.sql' }],
        },
        { 'up.sql': up, 'down.sql': down },
      ),
    );
    const refused = await completed(plan);
    expect(refused.state).toBe('rolled-back');
    expect(refused.error).toContain('preflight failed');
    expect(refused.error).toMatch(/migration holds-e \(tidemark-holds-e\) (syncs e|copies into e_v2) \(copy job e-h\)/);
  }
  await db.query(`INSERT INTO e VALUES (21, 'still synced')`);
  expect(await db.query(`SELECT v FROM e_v2 WHERE id = 21`)).toEqual([{ v: 'still synced' }]);
});

test("a schema step whose table another migration claimed after this one's preflight is refused before it runs, and its down leaves the table alone", async () => {
  const db = await h.db('claims_schema_race');
  await db.query(
    `CREATE TABLE f (id bigint PRIMARY KEY, v text); INSERT INTO f SELECT g, 'f' FROM generate_series(1, 20) g;`,
  );
  // Its preflight passes while nothing holds f_v2; it waits for the approval of its schema phase.
  const late = loadPlan(
    writePlan(
      {
        name: 'creates-f-v2',
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        approvals: ['schema'],
        schema: [
          { id: '001_f_v2', up: 'up.sql', down: 'down.sql', transactional: false },
          { id: '002_more', up: 'more.sql', down: 'less.sql' },
        ],
      },
      {
        'up.sql': 'CREATE TABLE IF NOT EXISTS f_v2 (id bigint PRIMARY KEY, v text);',
        'down.sql': 'DROP TABLE IF EXISTS f_v2;',
        'more.sql': 'CREATE TABLE f_more (id bigint);',
        'less.sql': 'DROP TABLE f_more;',
      },
    ),
  );
  const { workflowId } = await h.client.start(late, { autoApprove: false });
  await h.approvalPending(workflowId, 'schema');
  // Meanwhile another migration creates f_v2 and syncs f into it.
  expect((await completed(planFor(db, 'holds-f', 'f', 'f-h'))).state).toBe('completed');

  await h.client.approve(workflowId, { by: 'test' });
  const refused = await h.client.waitForEnd(workflowId);
  expect(refused.state).toBe('rolled-back');
  expect(refused.error).toContain('step 001_f_v2 (up) would change a table another migration holds');
  expect(refused.error).toContain('migration holds-f (tidemark-holds-f) copies into f_v2 (copy job f-h)');
  // The holder's table is still there and still synced; the refused step's later step never ran.
  await db.query(`INSERT INTO f VALUES (21, 'still synced')`);
  expect(await db.query(`SELECT v FROM f_v2 WHERE id = 21`)).toEqual([{ v: 'still synced' }]);
  expect(await db.query(`SELECT to_regclass('f_more') AS t`)).toEqual([{ t: null }]);
});
