// An abort landing while a short step is in flight — installing sync triggers, archiving, moving the flag — must not
// let that step commit after the rollback: the database ends exactly as before the migration and the application can
// write to its tables. Each step is held on a lock so the abort surely lands while it runs.
import { Client } from 'pg';
import type { ResolvedPlan } from '../../src/plan/types';
import { allTableContents, flagPercent, schemaDump, tableExists } from '../helpers/db-assert';
import { eventually, Harness, StopWaiting, type TestDb } from '../helpers/env';
import { meetingsPlan, writePlan } from '../helpers/plans';
import { loadPlan } from '../../src/plan/load';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

/** A session holding a lock until released. */
async function holdLock(db: TestDb, sql: string): Promise<{ release(): Promise<void> }> {
  const c = new Client({ connectionString: db.url });
  await c.connect();
  await c.query('BEGIN');
  await c.query(sql);
  return {
    async release() {
      await c.query('COMMIT');
      await c.end();
    },
  };
}

/** Resolves once one of tidemark's sessions waits for a lock in a statement matching `pattern`. */
function tidemarkWaitsOnLock(db: TestDb, pattern: string) {
  return eventually(
    async () => {
      const [{ n }] = await db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE datname = current_database() AND application_name LIKE 'tidemark%' AND wait_event_type = 'Lock'
            AND query ~* $1`,
        [pattern],
      );
      return n > 0;
    },
    `a tidemark session waiting on a lock in ${pattern}`,
    120_000,
    50,
  );
}

/** The application can still insert, update and delete on its table (no broken trigger left behind). */
async function applicationWritesWork(db: TestDb): Promise<void> {
  await db.query(`INSERT INTO meetings (id, title, meeting_type, status, host_id, max_participants, created_at, updated_at)
                  VALUES (999999, 'after rollback', 'lesson', 'active', gen_random_uuid(), 5, now(), now())`);
  await db.query(`UPDATE meetings SET title = 'updated after rollback' WHERE id = 999999`);
  await db.query(`DELETE FROM meetings WHERE id = 999999`);
  const triggers = await db.query(`SELECT tgname FROM pg_trigger WHERE tgname LIKE 'tidemark%'`);
  expect(triggers).toEqual([]);
}

async function abortAndCheck(
  db: TestDb,
  workflowId: string,
  before: { schema: string; contents: Record<string, string> },
) {
  await h.client.abort(workflowId, { by: 'test', reason: 'abort during a step' });
  return async (release: () => Promise<void>) => {
    await release();
    const final = await h.client.waitForEnd(workflowId);
    expect(final.state).toBe('rolled-back');
    expect(final.compensations.every((c) => c.status === 'done')).toBe(true);
    expect(schemaDump(db)).toBe(before.schema);
    expect(await allTableContents(db)).toEqual(before.contents);
    await applicationWritesWork(db);
    return final;
  };
}

async function snapshot(db: TestDb) {
  return { schema: schemaDump(db), contents: await allTableContents(db) };
}

test('an abort while the sync triggers wait for a lock: the triggers never land', async () => {
  const db = await h.db('raceinstall');
  const base = await meetingsPlan(db, { rows: 300, approvals: ['copy'] });
  const plan: ResolvedPlan = { ...base, copy: [base.copy[0]], traffic: undefined, cleanup: undefined };
  const before = await snapshot(db);
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await h.approvalPending(workflowId, 'copy');
  // An open write on meetings: creating a trigger on it must wait.
  const holder = await holdLock(db, `UPDATE meetings SET title = title WHERE id = 1`);
  await h.client.approve(workflowId);
  await tidemarkWaitsOnLock(db, 'trigger');
  const finish = await abortAndCheck(db, workflowId, before);
  const final = await finish(() => holder.release());
  expect(final.phases.find((p) => p.name === 'copy')?.status).toBe('cancelled');
});

test('an abort while the archive waits for a lock: the old table is where it was, and writes to it work', async () => {
  const db = await h.db('racearchive');
  const base = await meetingsPlan(db, { rows: 300, approvals: ['cleanup'] });
  const plan: ResolvedPlan = {
    ...base,
    copy: [{ ...base.copy[0], sync: 'bidirectional' }],
    validate: [{ rowCount: { copy: 'meetings' } }],
    traffic: { ...base.traffic!, stages: [{ percent: 100, soak: 0, approval: false }] },
    cleanup: { after: 0, archive: ['meetings'], dropAfter: 3_600_000 },
  };
  const before = await snapshot(db);
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await h.approvalPending(workflowId, 'cleanup');
  // A reader of the new table: the archive locks it first and must wait.
  const holder = await holdLock(db, `SELECT count(*) FROM meetings_v2`);
  await h.client.approve(workflowId);
  await tidemarkWaitsOnLock(db, 'lock table');
  const finish = await abortAndCheck(db, workflowId, before);
  await finish(() => holder.release());
  expect(await tableExists(db, 'tidemark_archive.meetings')).toBe(false);
  expect(await flagPercent(db, 'use_room_types')).toBe(0);
});

test('an abort while the flag change waits for a lock: the flag ends at 0 and no later change lands', async () => {
  const db = await h.db('raceflag');
  const base = await meetingsPlan(db, { rows: 300 });
  const plan: ResolvedPlan = {
    ...base,
    copy: [base.copy[0]],
    validate: [{ rowCount: { copy: 'meetings' } }],
    traffic: {
      ...base.traffic!,
      stages: [
        { percent: 10, soak: 600_000, approval: true },
        { percent: 100, soak: 0, approval: false },
      ],
    },
    approvals: [],
    cleanup: undefined,
  };
  const schemaBefore = schemaDump(db);
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await h.approvalPending(workflowId, 'traffic:10%');
  // Every change of the flag, in order, as the database saw it (kept outside the schemas compared below).
  await db.query(`CREATE SCHEMA audit; CREATE TABLE audit.flag_changes (seq bigserial, pct int);
    CREATE FUNCTION audit.log_flag() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO audit.flag_changes (pct) VALUES (NEW.rollout_percentage); RETURN NEW; END $$;
    CREATE TRIGGER log_flag AFTER INSERT OR UPDATE ON tidemark.flags FOR EACH ROW EXECUTE FUNCTION audit.log_flag();
    INSERT INTO tidemark.flags (name, rollout_percentage) VALUES ('use_room_types', 0);`);
  const holder = await holdLock(db, `SELECT * FROM tidemark.flags WHERE name = 'use_room_types' FOR UPDATE`);
  await h.client.approve(workflowId);
  await tidemarkWaitsOnLock(db, 'tidemark.*flags');
  await h.client.abort(workflowId, { by: 'test', reason: 'abort during the flag change' });
  await holder.release();
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  expect(final.compensations.every((c) => c.status === 'done')).toBe(true);
  expect(await flagPercent(db, 'use_room_types')).toBe(0);
  // The stage's change either committed before the rollback or never: whichever, the rollback's 0 is the last word.
  const changes = (await db.query<{ pct: number }>(`SELECT pct FROM audit.flag_changes ORDER BY seq`)).map(
    (c) => c.pct,
  );
  expect(changes.at(-1)).toBe(0);
  expect(changes.filter((p) => p === 10).length).toBeLessThanOrEqual(1);
  await db.query(`DROP SCHEMA audit CASCADE`);
  expect(schemaDump(db)).toBe(schemaBefore);
  await applicationWritesWork(db);
});

test('past the point of no return a drop of the archived tables that fails holds for the operator instead of rolling back', async () => {
  const db = await h.db('dropholds');
  await db.query(`
    CREATE TABLE legacy (id bigint PRIMARY KEY, v text);
    INSERT INTO legacy SELECT g, 'v' || g FROM generate_series(1, 50) g;
    -- Something that still reads the old table: the drop is refused while it is there.
    CREATE VIEW legacy_report AS SELECT count(*) AS n FROM legacy;`);
  const plan = loadPlan(
    writePlan(
      {
        name: `drop-holds-${db.name.slice(-6)}`,
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
        copy: [{ name: 'legacy', from: 'legacy', to: 'modern', key: 'id' }],
        cleanup: { after: '0s', archive: ['legacy'], dropAfter: '100ms' },
      },
      { 'up.sql': 'CREATE TABLE modern (id bigint PRIMARY KEY, v text);', 'down.sql': 'DROP TABLE modern;' },
    ),
  );
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  const held = await eventually(async () => {
    const s = await h.client.status(workflowId);
    if (s.state === 'rolling-back' || s.state === 'rolled-back') throw new StopWaiting(`rolled back: ${s.error}`);
    return s.state === 'paused' ? s : undefined;
  }, 'the failed drop to hold');
  expect(held.paused?.reason).toMatch(
    /^dropping the archived tables failed \(.*legacy_report.*\); there is no way back: fix the cause, then resume to drop them$/,
  );
  await expect(h.client.abort(workflowId, { reason: 'test' })).rejects.toThrow(/no way back/);
  expect(await tableExists(db, 'tidemark_archive.legacy')).toBe(true);

  await db.query(`DROP VIEW legacy_report`);
  await h.client.resume(workflowId, { by: 'test' });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('completed');
  expect(await tableExists(db, 'tidemark_archive.legacy')).toBe(false);
  expect(await db.query(`SELECT count(*)::int AS n FROM modern`)).toEqual([{ n: 50 }]);
});
