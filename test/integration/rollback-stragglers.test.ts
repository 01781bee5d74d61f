// After the flag goes back to 0 an application still has requests in flight on the new path: every write they get
// acknowledged while the rollback runs must be in the old table afterwards. The reverse sync stays until the new
// table itself is dropped, so a late write either reaches the old table or fails — it is never acknowledged and lost.
import { Pool } from 'pg';
import type { ResolvedPlan } from '../../src/plan/types';
import { eventually, Harness } from '../helpers/env';
import { meetingsPlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

test('writes that keep landing on the new table during the whole rollback are all in the old table afterwards', async () => {
  const db = await h.db('stragglers');
  const base = await meetingsPlan(db, { rows: 2000 });
  const plan: ResolvedPlan = {
    ...base,
    copy: [base.copy[0]],
    validate: [{ rowCount: { copy: 'meetings' } }],
    traffic: { flag: 'use_room_types', stages: [{ percent: 100, soak: 600_000, approval: false }], gates: [] },
    cleanup: undefined,
  };
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await eventually(
    async () => (await h.client.status(workflowId)).traffic?.percent === 100,
    'traffic at 100%',
    120_000,
  );

  // Stragglers: four writers inserting on the new table without looking at the flag, until it is gone.
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
          `INSERT INTO meetings_v2 (id, title, meeting_type, room_type, status, host_id, max_participants, created_at, updated_at)
           VALUES ($1, 'straggler', 'lesson', 'lesson', 'active', gen_random_uuid(), 5, now(), now())`,
          [id],
        );
        acknowledged.push(id);
      } catch {
        // The table is gone (or locked away): this write was never acknowledged.
      }
    }
  });
  await eventually(async () => acknowledged.length > 20, 'some writes on the new path');
  await h.client.abort(workflowId, { reason: 'back to the old path' });
  const final = await h.client.waitForEnd(workflowId);
  running = false;
  await Promise.all(writers);
  await pool.end();

  expect(final.state).toBe('rolled-back');
  expect(acknowledged.length).toBeGreaterThan(20);
  const present = new Set(
    (await db.query<{ id: string }>(`SELECT id FROM meetings WHERE id >= 500000`)).map((r) => Number(r.id)),
  );
  expect(acknowledged.filter((id) => !present.has(id))).toEqual([]);
  const triggers = await db.query(`SELECT tgname FROM pg_trigger WHERE tgname LIKE 'tidemark%'`);
  expect(triggers).toEqual([]);
  const functions = await db.query(
    `SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE nspname = 'tidemark' AND proname LIKE 'tidemark_sync%'`,
  );
  expect(functions).toEqual([]);
});
